"""Teacher, distilled students and the TF-IDF baseline side by side: accuracy, agreement, latency, size.

    .venv/bin/python -m bench.distill_results teacher=ARTIFACT l3=ARTIFACT [l2=ARTIFACT ...]
        [--sets imdb,sst2,rotten_tomatoes] [--models int8,fp32] [--threads 2] [--limit N]
        [--seqs 128,256] [--budget 5] [--baseline] [--out bench/results/distill.json]

All artifacts are scored in one process on the same texts. The first one is the reference (the
teacher): every other model's predictions are compared with its predictions of the same precision
(agreement, McNemar's exact p-value on the discordant pairs). Per model file:

- accuracy on each `<shared>/data/<set>/test.parquet` with a 95 % Wilson interval, through
  `edgesent.runtime.Classifier` (the serving path: the artifact's preprocessing, length bucketing,
  batch `--batch-size`) on `--threads` threads, and texts/s of that pass;
- p50 latency at batch 1 x each of `--seqs` tokens on ONE thread (a real review truncated the
  artifact's way and padded to exactly that length, `edgesent.bench.inputs.text_batch`), timed with
  `edgesent.bench.timing` for `--budget` seconds after warm-up;
- file size, transformer blocks, and, when the artifact sits in a run folder, the run's training wall time.

`--baseline` adds TF-IDF + logistic regression (`edgesent.bench.baseline`) fitted on IMDB train.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.real_accuracy import load_set, score
from edgesent.bench.report import save_numbers
from edgesent.bench.timing import one_text_p50_ms
from edgesent.errors import EdgesentError, run_main

ROOT = Path(__file__).resolve().parents[1]


def parse_targets(items: list[str]) -> dict[str, Path]:
    targets = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EdgesentError(f"expected NAME=ARTIFACT, got {item!r}")
        if not (Path(path) / "edgesent.json").is_file():
            raise EdgesentError(f"{name}: {path} is not an edgesent artifact (no edgesent.json)")
        targets[name] = Path(path)
    return targets


def facts(artifact: Path) -> dict:
    from edgesent.archs import arch_for

    config = json.loads((artifact / "config.json").read_text())
    arch = arch_for(config["model_type"])
    out = {"blocks": config.get(arch.depth_key)}
    metrics = artifact.parent / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        out.update(train_wall_s=m.get("wall_time_s"), total_params=m.get("total_params"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="NAME=ARTIFACT; the first is the teacher (reference)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--sets", default="imdb,sst2,rotten_tomatoes")
    parser.add_argument("--models", default="int8,fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each set (default: all)")
    parser.add_argument("--seqs", default="128,256", help="sequence lengths of the 1-thread latency cells")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per latency cell")
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="accuracy vs p50 b1x128 (first set) as a PNG")
    args = parser.parse_args(argv)
    targets = parse_targets(args.targets)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from edgesent.artifact import file_for
    from edgesent.machine import machine_facts
    from edgesent.metrics import paired_comparison
    from edgesent.runtime import Classifier

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    seqs = [int(s) for s in args.seqs.split(",") if s.strip()]
    data = {name: load_set(args.shared, name, args.limit) for name in sets}
    probe = data[sets[0]][0][0]
    teacher = next(iter(targets))
    results = {"machine": machine_facts(), "threads_scoring": args.threads, "threads_latency": 1,
               "batch_size": args.batch_size, "seqs": seqs, "reference": teacher, "rows": []}
    preds: dict[tuple, list] = {}
    for name, artifact in targets.items():
        for m in models:
            if not (artifact / file_for(m)).is_file():
                continue
            clf = Classifier(artifact, model=m, threads=args.threads)
            row = {"name": name, "model": m, "artifact": str(artifact),
                   "mb": round((artifact / file_for(m)).stat().st_size / 1e6, 1), **facts(artifact), "sets": {}}
            for s, (texts, labels) in data.items():
                started = time.perf_counter()
                pred = clf.logits(texts, batch_size=args.batch_size).argmax(-1).tolist()
                seconds = time.perf_counter() - started
                preds[(name, m, s)] = pred
                cell = {**score(pred, labels, clf.labels), "texts_per_s": round(len(texts) / seconds, 1)}
                ref = preds.get((teacher, m, s))
                if name != teacher and ref is not None:
                    paired = paired_comparison(ref, pred, labels)
                    cell.update(agree_with_teacher=paired["agreement"], change_pts_vs_teacher=paired["change_points"],
                                mcnemar_p_vs_teacher=paired["mcnemar_p"])
                row["sets"][s] = cell
            for seq in seqs:
                row[f"p50_ms_b1x{seq}"] = round(one_text_p50_ms(artifact / file_for(m), clf.preprocessor, probe, seq, args.budget), 2)
            results["rows"].append(row)
            print(json.dumps(row, default=str), flush=True)
    if args.baseline:
        import pyarrow.parquet as pq

        from edgesent.bench.baseline import tfidf_baseline
        from edgesent.bench.timing import summarize, time_runs

        train = pq.read_table(args.shared / "data" / "imdb" / "train.parquet", columns=["text", "label"]).to_pydict()
        pipe = tfidf_baseline().fit(train["text"], train["label"])
        row = {"name": "tfidf-lr", "model": "sklearn", "sets": {},
               "p50_ms_b1": round(summarize(time_runs(lambda: pipe.predict([probe]), args.budget))["p50_ms"], 2)}
        for s, (texts, labels) in data.items():
            started = time.perf_counter()
            pred = [int(p) for p in pipe.predict(texts)]
            row["sets"][s] = {**score(pred, labels, ["negative", "positive"]),
                              "texts_per_s": round(len(texts) / (time.perf_counter() - started), 1)}
        results["rows"].append(row)
        print(json.dumps(row, default=str), flush=True)
    print(markdown(results, sets, seqs))
    if args.out:
        save_numbers(args.out, results)
    if args.plot:
        plot(results, sets[0], args.plot)
        print(f"plot: {args.plot}")
    return 0


def plot(results: dict, first_set: str, path: Path) -> None:
    """edgesent bench's Pareto plot (accuracy vs batch-1 latency, marker size = file size) of these rows."""
    from edgesent.bench.report import plot_pareto

    variants = []
    for r in results["rows"]:
        p50 = r.get("p50_ms_b1x128", r.get("p50_ms_b1"))
        acc = r["sets"].get(first_set, {}).get("accuracy")
        if p50 is None or acc is None:
            continue
        variants.append({"name": f"{r['name']} {r['model']}", "accuracy": acc, "file_bytes": (r.get("mb") or 0) * 1e6,
                         "cells": [{"status": "ok", "batch_size": 1, "threads": 1, "seq_len": 128, "p50_ms": p50}]})
    plot_pareto({"variants": variants}, path)


def markdown(results: dict, sets: list[str], seqs: list[int]) -> str:
    head = ["model", "file", "blocks", "MB", *(f"p50 b1x{q} 1 thr (ms)" for q in seqs)]
    for s in sets:
        head += [f"{s} acc [95% CI]", f"{s} agree w/ teacher"]
    head += [f"texts/s ({sets[0]}, {results['threads_scoring']} thr)", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        cells = [r["name"], r["model"], str(r.get("blocks", "–")), str(r.get("mb", "–"))]
        cells += [str(r.get(f"p50_ms_b1x{q}", r.get("p50_ms_b1", "–"))) for q in seqs]
        for s in sets:
            c = r["sets"].get(s, {})
            ci = c.get("ci95")
            cells.append(f"{100 * c['accuracy']:.2f} % [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "–")
            agree = c.get("agree_with_teacher")
            cells.append("–" if agree is None else f"{100 * agree:.1f} %")
        cells.append(str(r["sets"].get(sets[0], {}).get("texts_per_s", "–")))
        wall = r.get("train_wall_s")
        cells.append("–" if wall is None else f"{wall / 60:.0f} min")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
