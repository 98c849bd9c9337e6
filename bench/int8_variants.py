"""Every INT8 variant the export gate can choose, scored against fp32 on a whole labelled test set.

    .venv/bin/python bench/int8_variants.py ARTIFACT [--data ../shared/data/imdb/test.parquet] [--limit N]
        [--variants dynamic,dynamic_per_channel,dynamic_per_channel_keep_head_last_block,static_qdq]
        [--calibration 256] [--train ../shared/data/imdb/train.parquet] [--threads 2] [--out variants.json]

The export gate (`edgesent export --int8`) decides on the run's validation split, which is small
(1,250 reviews for the IMDB recipe: one review is 0.08 points). This script builds each candidate
from the artifact's `model.onnx` with the very functions the gate uses
(`edgesent.export.quantize_dynamic_int8` / `quantize_static_int8`, settings from `quant_settings()`)
and scores them on a large set: accuracy, drop against fp32 in points, texts on which the variant
and fp32 disagree, McNemar's exact p-value on the discordant pairs, file size, and p50 latency at
batch 1 x 128 tokens on one thread. Static QDQ calibrates on `--calibration` texts sampled (seed 0)
from `--train` (the gate uses training texts too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = "dynamic,dynamic_per_channel,dynamic_per_channel_keep_head_last_block,static_qdq"


def p50_ms(path: Path, preprocessor, text: str, seq: int = 128, budget: float = 3.0) -> float:
    """p50 of one text (repeated to fill `seq` tokens, truncated the artifact's way) on one thread."""
    import onnxruntime as ort

    from edgesent.bench import summarize, text_batch, time_runs
    from edgesent.export import ort_logits

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    batch = text_batch(preprocessor, [text * 50], 1, seq)
    return summarize(time_runs(lambda: ort_logits(sess, batch), budget))["p50_ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imdb" / "test.parquet")
    parser.add_argument("--train", type=Path, default=ROOT.parent / "shared" / "data" / "imdb" / "train.parquet")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--variants", default=ALL)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads for scoring")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    import pyarrow.parquet as pq
    from real_accuracy import mcnemar_p
    from tokenizers import Tokenizer

    from edgesent import export as E
    from edgesent.artifact import load_manifest
    from edgesent.textproc import Preprocessor

    manifest = load_manifest(args.artifact)
    pre = Preprocessor.from_manifest(Tokenizer.from_file(str(args.artifact / "tokenizer.json")), manifest["preprocessing"])
    table = pq.read_table(args.data, columns=["text", "label"]).to_pydict()
    texts, labels = table["text"][: args.limit], np.asarray(table["label"][: args.limit])
    fp32 = args.artifact / "model.onnx"
    settings = E.quant_settings()
    print(f"{args.data} ({len(texts):,} texts); INT8 settings: {settings}")

    started = time.perf_counter()
    ref = E.onnx_predictions(fp32, pre, texts)
    rows = [{"variant": "fp32", "accuracy": float((ref == labels).mean()), "bytes": fp32.stat().st_size,
             "p50_ms_b1_s128_1t": p50_ms(fp32, pre, texts[0]), "score_s": time.perf_counter() - started}]
    input_names = manifest["inputs"]
    with tempfile.TemporaryDirectory(prefix="edgesent-int8-") as tmp:
        for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
            out = Path(tmp) / f"{name}.onnx"
            if name == "static_qdq":
                calib = pq.read_table(args.train, columns=["text"]).column("text").to_pylist()
                rng = np.random.default_rng(0)
                calib = [calib[i] for i in rng.choice(len(calib), args.calibration, replace=False)]
                E.quantize_static_int8(fp32, out, texts=calib, preprocessor=pre, input_names=input_names, settings=settings)
            else:
                exclude = E.sensitive_nodes(fp32) if name.endswith("keep_head_last_block") else None
                E.quantize_dynamic_int8(fp32, out, per_channel="per_channel" in name, exclude=exclude, settings=settings)
            started = time.perf_counter()
            preds = E.onnx_predictions(out, pre, texts)
            score_s = time.perf_counter() - started
            only_fp32 = int(((ref == labels) & (preds != labels)).sum())
            only_int8 = int(((ref != labels) & (preds == labels)).sum())
            acc = float((preds == labels).mean())
            rows.append({"variant": name, "accuracy": acc, "drop_pts": 100 * (rows[0]["accuracy"] - acc),
                         "disagree": int((preds != ref).sum()), "only_fp32_right": only_fp32,
                         "only_int8_right": only_int8, "mcnemar_p": mcnemar_p(only_fp32, only_int8),
                         "bytes": out.stat().st_size, "p50_ms_b1_s128_1t": p50_ms(out, pre, texts[0]),
                         "score_s": score_s})
            r = rows[-1]
            print(f"{name:<44} acc {acc:.4f}  drop {r['drop_pts']:+.2f} pts  disagree {r['disagree']}  "
                  f"McNemar p {r['mcnemar_p']:.3g}  {r['bytes'] / 1e6:.2f} MB  p50 {r['p50_ms_b1_s128_1t']:.2f} ms")
    print("\n| variant | accuracy | drop vs fp32 (pts) | disagree with fp32 | McNemar p | MB | p50 ms (b1, s128, 1T) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['accuracy']:.4f} | {r.get('drop_pts', 0):+.2f} | {r.get('disagree', 0)} | "
              f"{r.get('mcnemar_p', float('nan')):.3g} | {r['bytes'] / 1e6:.2f} | {r['p50_ms_b1_s128_1t']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"data": str(args.data), "n": len(texts), "settings": settings, "rows": rows},
                                       indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from edgesent.errors import run_main

    run_main(main)  # a missing or bad artifact: one line, no traceback
