"""Accuracy of an artifact's ONNX files on whole labelled test sets, with the INT8-vs-fp32 comparison.

    .venv/bin/python -m bench.real_accuracy ARTIFACT [--sets imdb,sst2,rotten_tomatoes] [--models fp32,int8]
        [--threads 2] [--limit N] [--baseline] [--out results.json]

For each set `<shared>/data/<set>/test.parquet` (columns text, label) and each ONNX file of the
artifact, texts go through `edgesent.runtime.Classifier` -- the torch-free serving path, with the
artifact's own preprocessing (truncation, max length) and length bucketing -- and the script
prints accuracy with a 95 % binomial interval, positive-class F1, wall time and texts/s. For INT8
it also prints the drop against fp32 on the same texts, the number of texts on which the two
disagree, and McNemar's exact two-sided p-value on the discordant pairs (is the drop more than
noise?). fp32 ONNX stands in for PyTorch: `edgesent export` refuses an fp32 file whose logits differ
from PyTorch's by more than 1e-4, and ONNX Runtime is several times faster on 25,000 reviews.

`--baseline` adds TF-IDF (word 1-2 grams, sublinear tf) + logistic regression with C, min_df and the
feature cap picked on a validation share of `<shared>/data/imdb/train.parquet`, then fitted on all of
it -- `edgesent.bench.baseline.tuned_tfidf`, the same model `edgesent bench` uses -- scored on every set.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from edgesent.bench.report import save_numbers
from edgesent.errors import run_main
from edgesent.metrics import classification_metrics, paired_comparison, wilson

ROOT = Path(__file__).resolve().parents[1]


def load_set(shared: Path, name: str, limit: int | None):
    import pyarrow.parquet as pq

    path = shared / "data" / name / "test.parquet"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (is ../shared beside the checkout? --shared names it)")
    table = pq.read_table(path, columns=["text", "label"]).to_pydict()
    texts, labels = table["text"], table["label"]
    if limit:
        texts, labels = texts[:limit], labels[:limit]
    return texts, labels


def score(pred, labels, names: list[str]) -> dict:
    """edgesent's own metrics (accuracy, F1 of the positive class, ...) plus n, correct and a 95 % interval."""
    n = len(labels)
    correct = sum(int(p == y) for p, y in zip(pred, labels, strict=True))
    return {"n": n, "correct": correct, **classification_metrics(labels, pred, names), "ci95": list(wilson(correct, n))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--sets", default="imdb,sst2,rotten_tomatoes")
    parser.add_argument("--models", default="fp32,int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each test set (default: all)")
    parser.add_argument("--baseline", action="store_true",
                        help="also TF-IDF + logistic regression tuned on and fit to IMDB train")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from edgesent.runtime import Classifier

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    classifiers = {m: Classifier(args.artifact, model=m, threads=args.threads) for m in models}
    baseline = fit = None
    if args.baseline:
        import pyarrow.parquet as pq

        from edgesent.bench.baseline import describe, tuned_tfidf

        train = pq.read_table(args.shared / "data" / "imdb" / "train.parquet", columns=["text", "label"]).to_pydict()
        started = time.perf_counter()
        baseline, fit = tuned_tfidf(train["text"], train["label"])
        print(f"{describe(fit)}, fitted on {len(train['text']):,} IMDB train reviews in "
              f"{time.perf_counter() - started:.0f} s")

    results = {"artifact": str(args.artifact), "threads": args.threads, "batch_size": args.batch_size,
               "preprocessing": classifiers[models[0]].manifest.get("preprocessing"), "baseline_fit": fit, "sets": {}}
    print(f"{'set':<16}{'model':<18}{'n':>7}{'accuracy':>10}{'95% CI':>18}{'F1':>8}{'s':>8}{'texts/s':>9}")
    for name in sets:
        texts, labels = load_set(args.shared, name, args.limit)
        rows, preds = {}, {}
        for m, clf in classifiers.items():
            started = time.perf_counter()
            logits = clf.logits(texts, batch_size=args.batch_size)
            seconds = time.perf_counter() - started
            preds[m] = logits.argmax(-1).tolist()
            rows[m] = {**score(preds[m], labels, clf.labels), "seconds": seconds, "texts_per_s": len(texts) / seconds,
                       "file": clf.model_file}
        if baseline is not None:
            started = time.perf_counter()
            preds["tfidf-lr"] = [int(p) for p in baseline.predict(texts)]
            seconds = time.perf_counter() - started
            rows["tfidf-lr"] = {**score(preds["tfidf-lr"], labels, classifiers[models[0]].labels), "seconds": seconds,
                                "texts_per_s": len(texts) / seconds}
        for m in preds if "fp32" in preds else []:
            if m == "fp32":
                continue
            paired = paired_comparison(preds["fp32"], preds[m], labels)
            rows[m].update(drop_vs_fp32_pts=100 * (rows["fp32"]["accuracy"] - rows[m]["accuracy"]),
                           disagree_with_fp32=sum(a != b for a, b in zip(preds["fp32"], preds[m], strict=True)),
                           only_fp32_right=paired["only_a_right"], only_this_right=paired["only_b_right"],
                           mcnemar_p=paired["mcnemar_p"])
        for m, r in rows.items():
            ci = f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]"
            print(f"{name:<16}{m:<18}{r['n']:>7}{r['accuracy']:>10.4f}{ci:>18}{r['f1']:>8.4f}"
                  f"{r['seconds']:>8.1f}{r['texts_per_s']:>9.1f}")
            if "drop_vs_fp32_pts" in r:
                print(f"{'':<16}  drop vs fp32 {r['drop_vs_fp32_pts']:+.2f} pts; disagree on {r['disagree_with_fp32']} "
                      f"texts ({r['only_fp32_right']} only fp32 right, {r['only_this_right']} only {m} right); "
                      f"McNemar p = {r['mcnemar_p']:.3g}")
        results["sets"][name] = rows
    if args.out:
        save_numbers(args.out, results)
    return 0


if __name__ == "__main__":
    run_main(main)  # a missing or bad artifact: one line, no traceback
