"""Accuracy of an artifact's ONNX files on whole labelled test sets, with the INT8-vs-fp32 comparison.

    .venv/bin/python bench/real_accuracy.py ARTIFACT [--sets imdb,sst2,rotten_tomatoes] [--models fp32,int8]
        [--threads 2] [--limit N] [--baseline] [--out results.json]

For each set `<shared>/data/<set>/test.parquet` (columns text, label) and each ONNX file of the
artifact, texts go through `edgesent.runtime.Classifier` -- the torch-free serving path, with the
artifact's own preprocessing (truncation, max length) and length bucketing -- and the script
prints accuracy with a 95 % binomial interval, positive-class F1, wall time and texts/s. For INT8
it also prints the drop against fp32 on the same texts, the number of texts on which the two
disagree, and McNemar's exact two-sided p-value on the discordant pairs (is the drop more than
noise?). fp32 ONNX stands in for PyTorch: `edgesent export` refuses an fp32 file whose logits differ
from PyTorch's by more than 1e-4, and ONNX Runtime is several times faster on 25,000 reviews.

`--baseline` adds TF-IDF (word 1-2 grams, sublinear tf) + logistic regression fitted on
`<shared>/data/imdb/train.parquet` -- the same model `edgesent bench` uses -- scored on every set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b, c = discordant pairs (only A right, only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


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
    from edgesent.train import classification_metrics

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
    parser.add_argument("--baseline", action="store_true", help="also TF-IDF + logistic regression fit on IMDB train")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from edgesent.runtime import Classifier

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    classifiers = {m: Classifier(args.artifact, model=m, threads=args.threads) for m in models}
    baseline = None
    if args.baseline:
        import pyarrow.parquet as pq

        from edgesent.bench import tfidf_baseline

        train = pq.read_table(args.shared / "data" / "imdb" / "train.parquet", columns=["text", "label"]).to_pydict()
        started = time.perf_counter()
        baseline = tfidf_baseline()
        baseline.fit(train["text"], train["label"])
        print(f"TF-IDF + LR fitted on {len(train['text']):,} IMDB train reviews in {time.perf_counter() - started:.0f} s")

    results = {"artifact": str(args.artifact), "threads": args.threads, "batch_size": args.batch_size,
               "preprocessing": classifiers[models[0]].manifest.get("preprocessing"), "sets": {}}
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
        if "fp32" in preds:
            ref = np.asarray(preds["fp32"])
            gold = np.asarray(labels)
            for m in preds:
                if m == "fp32":
                    continue
                other = np.asarray(preds[m])
                only_fp32 = int(((ref == gold) & (other != gold)).sum())
                only_other = int(((ref != gold) & (other == gold)).sum())
                rows[m].update(drop_vs_fp32_pts=100 * (rows["fp32"]["accuracy"] - rows[m]["accuracy"]),
                               disagree_with_fp32=int((ref != other).sum()),
                               only_fp32_right=only_fp32, only_this_right=only_other,
                               mcnemar_p=mcnemar_p(only_fp32, only_other))
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".partial")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(args.out)
        print(f"numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from edgesent.errors import run_main

    run_main(main)  # a missing or bad artifact: one line, no traceback
