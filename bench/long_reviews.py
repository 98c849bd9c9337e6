"""Long reviews: truncation vs windows with pooled logits on a trained artifact, and the tuned TF-IDF baseline.

    .venv/bin/python -m bench.long_reviews ARTIFACT [--stage tune|test|short|baseline|report|all]
        [--shared ../shared] [--threads 2] [--batch-size 32] [--cache DIR] [--out bench/results/long_reviews.json]

Stages (each saves its per-review logits under --cache, so a later stage or a rerun never rescores):

- `tune`: the run's own validation split (the recipe's seeded carve of IMDB train, never the test
  split), scored once per window/stride candidate; every window's logits are kept, so pooling
  variants (mean of logits, mean of probabilities) cost nothing more. Picks the best setting.
- `test`: all IMDB test reviews through `edgesent.runtime.Classifier` (the serving path, its
  `textproc.pooled_logits`), fp32 and INT8, truncated (the artifact's head+tail) and with the
  chosen windows; wall time -> texts/s at --threads.
- `short`: SST-2 and Rotten Tomatoes test sets with the windows setting (every text fits one window:
  the logits must equal truncation's exactly).
- `baseline`: `edgesent.bench.baseline.tuned_tfidf` (C, min_df, feature cap picked on the same
  validation split as the model), fitted on all IMDB train reviews, scored on the test reviews.
- `report`: accuracy overall, on the > 3,000-character slice and per token-length bucket, McNemar
  windows vs truncation, texts/s; printed and written to --out as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from edgesent.bench.report import save_numbers
from edgesent.errors import run_main
from edgesent.metrics import paired_comparison, wilson

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [  # (window, stride): tokens per window incl. special tokens, content tokens between starts
    (256, 127), (256, 191), (384, 191), (512, 255),
]
SLICE_CHARS = 3000


def read_set(shared: Path, name: str, split: str = "test") -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    table = pq.read_table(shared / "data" / name / f"{split}.parquet", columns=["text", "label"]).to_pydict()
    return table["text"], [int(y) for y in table["label"]]


def run_splits(artifact: Path, shared: Path):
    """The run's train and validation splits, exactly as training carved them (recipe from the manifest)."""
    from edgesent.artifact import load_manifest
    from edgesent.config import load_recipe, validate_recipe
    from edgesent.data import load_splits

    run_recipe = artifact.parent / "recipe.yaml"  # ARTIFACT inside its run folder; else the manifest's copy
    if run_recipe.is_file():
        recipe = load_recipe(run_recipe).model_dump(mode="json")
    else:
        recipe = dict(load_manifest(artifact, verify=False)["source"]["recipe"])
    recipe["data"] = {**recipe["data"], "dataset": str(shared / "data" / "imdb")}
    splits = load_splits(validate_recipe(recipe, "run recipe"))
    return splits["train"], splits["validation"]


def windowed(clf, window: int | None, stride: int | None, max_windows: int | None = None):
    """`clf` scoring with windows (None window: truncation, the artifact's own setting)."""
    pre = clf.preprocessor
    if window is None:
        clf.preprocessor = dataclasses.replace(pre, long_text="truncate")
    else:
        clf.preprocessor = dataclasses.replace(pre, long_text="windows", window=window, stride=stride,
                                               max_windows=max_windows)
    return clf


def window_logits(clf, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits of every window, owner text of each window), through the shared pooled_logits loop."""
    from edgesent.textproc import pooled_logits

    windows, _ = clf.encode_windows(texts)
    flat = [[w] for ws in windows for w in ws]
    owner = np.repeat(np.arange(len(texts)), [len(ws) for ws in windows])
    return pooled_logits(flat, clf._run, batch_size), owner


def pool(logits: np.ndarray, owner: np.ndarray, n: int, how: str) -> np.ndarray:
    from edgesent.session import softmax

    values = logits if how == "mean" else softmax(logits)
    total = np.zeros((n, logits.shape[1]))
    np.add.at(total, owner, values)
    return total / np.bincount(owner, minlength=n)[:, None]


def cached(cache: Path, name: str, compute):
    path = cache / f"{name}.npz"
    if path.is_file():
        return dict(np.load(path))
    result = compute()
    tmp = cache / f".{name}.tmp.npz"
    np.savez(tmp, **result)
    os.replace(tmp, path)
    return result


def timed_logits(clf, texts: list[str], batch_size: int) -> dict:
    start = time.perf_counter()
    logits = clf.logits(texts, batch_size)
    return {"logits": logits, "seconds": np.array(time.perf_counter() - start)}


def stage_tune(args, cache: Path) -> dict:
    from edgesent.runtime import Classifier

    _, val = run_splits(args.artifact, args.shared)
    clf = Classifier(args.artifact, model=args.tune_model, threads=args.threads)
    truth = np.array(val.labels)
    rows = []
    trunc = cached(cache, f"val_{args.tune_model}_truncate", lambda: timed_logits(windowed(clf, None, None), val.texts,
                                                                                   args.batch_size))
    rows.append({"setting": "truncate", "pool": "-", "accuracy": float((trunc["logits"].argmax(-1) == truth).mean()),
                 "seconds": float(trunc["seconds"])})
    for window, stride in CANDIDATES:
        def compute(w=window, s=stride):
            start = time.perf_counter()
            logits, owner = window_logits(windowed(clf, w, s), val.texts, args.batch_size)
            return {"logits": logits, "owner": owner, "seconds": np.array(time.perf_counter() - start)}

        got = cached(cache, f"val_{args.tune_model}_w{window}_s{stride}", compute)
        for how in ("mean", "mean-prob"):
            pred = pool(got["logits"], got["owner"], len(truth), how).argmax(-1)
            rows.append({"setting": f"window {window} stride {stride}", "window": window, "stride": stride, "pool": how,
                         "accuracy": float((pred == truth).mean()), "seconds": float(got["seconds"]),
                         "windows": int(len(got["owner"]))})
    best = max((r for r in rows if r["pool"] == "mean"), key=lambda r: (r["accuracy"], -r["seconds"]))
    print(f"validation ({len(truth):,} reviews, {args.tune_model}):")
    for r in rows:
        print(f"  {r['setting']:<28} pool {r['pool']:<10} acc {r['accuracy']:.4f}  {r['seconds']:.0f} s")
    print(f"chosen: window {best['window']} stride {best['stride']}")
    return {"model": args.tune_model, "n": len(truth), "rows": rows, "chosen": {"window": best["window"],
                                                                                   "stride": best["stride"]}}


def chosen(args, results: dict) -> tuple[int, int]:
    if args.window:
        return args.window, args.stride
    tune = results.get("tune") or {}
    if not tune:
        raise SystemExit("error: no tuned setting yet: run --stage tune first or pass --window and --stride")
    return tune["chosen"]["window"], tune["chosen"]["stride"]


def stage_test(args, cache: Path, results: dict) -> None:
    from edgesent.runtime import Classifier

    window, stride = chosen(args, results)
    texts, _ = read_set(args.shared, "imdb")
    texts = texts[:args.limit] if args.limit else texts
    for model in args.models:
        clf = Classifier(args.artifact, model=model, threads=args.threads)
        for mode, (w, s) in (("windows", (window, stride)), ("truncate", (None, None))):
            if mode not in args.modes:
                continue
            name = f"test_{model}_{mode}" + (f"_w{w}_s{s}" if w else "") + (f"_n{len(texts)}" if args.limit else "")
            got = cached(cache, name, lambda c=clf, w=w, s=s: timed_logits(windowed(c, w, s), texts, args.batch_size))
            print(f"imdb test {model:<5} {mode:<9} {len(texts) / float(got['seconds']):.1f} texts/s")


def stage_short(args, cache: Path, results: dict) -> None:
    from edgesent.runtime import Classifier

    window, stride = chosen(args, results)
    out = {}
    for name in ("sst2", "rotten_tomatoes"):
        texts, labels = read_set(args.shared, name)
        for model in args.models:
            clf = Classifier(args.artifact, model=model, threads=args.threads)
            a = clf.logits(texts, args.batch_size)
            windowed(clf, window, stride)
            n_windows = sum(len(ws) for ws in clf.encode_windows(texts)[0])
            b = clf.logits(texts, args.batch_size)
            acc = float((b.argmax(-1) == np.array(labels)).mean())
            out[f"{name}/{model}"] = {"n": len(texts), "windows": n_windows, "accuracy": acc,
                                      "identical_to_truncation": bool(np.array_equal(a, b))}
            print(f"{name:<16} {model:<5} n {len(texts)} windows {n_windows} acc {acc:.4f} identical {np.array_equal(a, b)}")
    results["short"] = out


def stage_baseline(args, cache: Path, results: dict) -> None:
    from edgesent.bench.baseline import describe, tuned_tfidf

    def compute():
        train, val = run_splits(args.artifact, args.shared)
        start = time.perf_counter()
        model, record = tuned_tfidf(train.texts, train.labels, validation=(val.texts, val.labels))
        fit_s = time.perf_counter() - start
        texts, _ = read_set(args.shared, "imdb")
        start = time.perf_counter()
        proba = model.predict_proba(texts)
        return {"proba": proba, "record": np.array(json.dumps(record)), "fit_s": np.array(fit_s),
                "seconds": np.array(time.perf_counter() - start)}

    got = cached(cache, "test_tfidf_tuned", compute)
    record = json.loads(str(got["record"]))
    results["baseline"] = {**record, "fit_s": float(got["fit_s"])}
    print(f"{describe(record)}; fitted in {float(got['fit_s']):.0f} s")


def accuracy_slices(pred: np.ndarray, truth: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    out = {}
    for name, mask in masks.items():
        correct, n = int((pred[mask] == truth[mask]).sum()), int(mask.sum())
        out[name] = {"n": n, "accuracy": correct / n if n else None, "ci95": list(wilson(correct, n)) if n else None}
    return out


def stage_report(args, cache: Path, results: dict) -> None:
    from edgesent.bench.inputs import LENGTH_BUCKETS, length_bucket, token_lengths
    from edgesent.runtime import Classifier

    window, stride = chosen(args, results)
    texts, labels = read_set(args.shared, "imdb")
    truth = np.array(labels)
    clf = Classifier(args.artifact, model=args.models[0], threads=args.threads)
    lengths = np.array(token_lengths(clf.preprocessor, texts))
    buckets = np.array([length_bucket(int(n)) for n in lengths])
    masks = {"all": np.ones(len(texts), bool), f">{SLICE_CHARS} chars": np.array([len(t) > SLICE_CHARS for t in texts])}
    masks.update({f"tokens {name}": buckets == name for _, name in LENGTH_BUCKETS})
    table, preds = {}, {}
    for model in args.models:
        for mode, suffix in (("truncate", ""), ("windows", f"_w{window}_s{stride}")):
            path = cache / f"test_{model}_{mode}{suffix}.npz"
            if not path.is_file():
                continue
            got = np.load(path)
            preds[f"{model} {mode}"] = got["logits"].argmax(-1)
            table[f"{model} {mode}"] = {**accuracy_slices(preds[f"{model} {mode}"], truth, masks),
                                        "texts_per_s": len(texts) / float(got["seconds"]), "seconds": float(got["seconds"])}
    base = cache / "test_tfidf_tuned.npz"
    if base.is_file():
        preds["tfidf tuned"] = np.load(base)["proba"].argmax(-1)
        table["tfidf tuned"] = accuracy_slices(preds["tfidf tuned"], truth, masks)
    for model in args.models:
        a, b = preds.get(f"{model} truncate"), preds.get(f"{model} windows")
        if a is not None and b is not None:
            table[f"{model} windows"]["vs_truncate"] = paired_comparison(a, b, labels)
    pre = windowed(clf, window, stride).preprocessor
    specials = len(pre.prefix) + len(pre.suffix)
    n_windows = np.array([len(pre.window_starts(int(n) - specials)) for n in lengths])
    windows = {"mean": float(n_windows.mean()), "max": int(n_windows.max()), "p99": float(np.percentile(n_windows, 99)),
               "share_multi": float((n_windows > 1).mean()), "tokens_p50": float(np.median(lengths)),
               "tokens_max": int(lengths.max())}
    print(f"windows per review: mean {windows['mean']:.2f}, p99 {windows['p99']:.0f}, max {windows['max']}; "
          f"{windows['share_multi'] * 100:.1f} % of reviews need more than one; tokens p50 {windows['tokens_p50']:.0f}, "
          f"max {windows['tokens_max']}")
    results["test"] = {"window": window, "stride": stride, "n": len(texts), "threads": args.threads,
                       "batch_size": args.batch_size, "windows_per_review": windows, "rows": table}
    names = list(masks)
    print(f"{'':<18}" + "".join(f"{n:>22}" for n in names) + f"{'texts/s':>10}")
    for row, r in table.items():
        cells = "".join(f"{r[n]['accuracy'] * 100:>16.2f} ({r[n]['n']:>4})" if r[n]["n"] else f"{'-':>22}" for n in names)
        print(f"{row:<18}{cells}{r.get('texts_per_s', float('nan')):>10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--stage", default="all", choices=["tune", "test", "short", "baseline", "report", "all"])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="int8,fp32", help="ONNX files to score, in this order")
    parser.add_argument("--modes", default="windows,truncate", help="what --stage test scores")
    parser.add_argument("--tune-model", default="int8", help="the ONNX file the window/stride choice is made with")
    parser.add_argument("--window", type=int, default=None, help="skip the choice: use this window (with --stride)")
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N test reviews (a smoke run; default: all)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="per-review logits (default: exports/long_reviews-RUN in this checkout)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "long_reviews.json")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = args.cache or ROOT / "exports" / f"long_reviews-{args.artifact.resolve().parent.name}"
    cache.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    from edgesent.machine import machine_facts

    facts = machine_facts()
    results.update(artifact=str(args.artifact), threads=args.threads, batch_size=args.batch_size,
                   machine={k: facts[k] for k in ("cpu", "usable_cores", "logical_cores", "date") if k in facts})
    stages = ["tune", "test", "short", "baseline", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "tune":
            results["tune"] = stage_tune(args, cache)
        else:
            {"test": stage_test, "short": stage_short, "baseline": stage_baseline, "report": stage_report}[stage](
                args, cache, results)
        save_numbers(args.out, results)
    return 0


if __name__ == "__main__":
    run_main(main)
