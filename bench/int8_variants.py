"""Every INT8 variant the export gate can choose, scored against fp32 on a whole labelled test set.

    .venv/bin/python -m bench.int8_variants ARTIFACT [--data ../shared/data/imdb/test.parquet] [--limit N]
        [--variants dynamic,dynamic_per_channel,dynamic_per_channel_keep_head_last_block,static_qdq]
        [--calibration 256] [--train ../shared/data/imdb/train.parquet] [--threads 2] [--out variants.json]

The export gate (`edgesent export --int8`) decides on the run's validation split, which is small
(1,250 reviews for the IMDB recipe: one review is 0.08 points). This script builds each variant of
`edgesent.export.quantize.INT8_VARIANTS` (the gate's table, plus the per-tensor `dynamic` baseline
the gate does not try) from the artifact's fp32 model with the very code the gate uses
(`Int8Variant.write`, settings from `quant_settings()`) and scores them on a large set: accuracy,
drop against fp32 in points, texts on which the variant and fp32 disagree, McNemar's exact p-value
on the discordant pairs, file size, and p50 latency at batch 1 x 128 tokens on one thread. Static
QDQ calibrates on `--calibration` texts sampled (seed 0) from `--train` (the gate uses training
texts too).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from edgesent.bench.timing import one_text_p50_ms
from edgesent.errors import EdgesentError, run_main
from edgesent.export.quantize import INT8_VARIANTS

ROOT = Path(__file__).resolve().parents[1]
ALL = ",".join(v.name for v in INT8_VARIANTS)


def chosen_variants(names: str) -> list:
    """The table's variants named in `names` (comma-separated), in table order."""
    wanted = {v.strip() for v in names.split(",") if v.strip()}
    unknown = wanted - {v.name for v in INT8_VARIANTS}
    if unknown:
        raise EdgesentError(f"--variants: unknown {', '.join(sorted(unknown))} (known: {ALL})")
    return [v for v in INT8_VARIANTS if v.name in wanted]


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
    variants = chosen_variants(args.variants)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from edgesent.artifact import file_for, load_manifest
    from edgesent.export.parity import onnx_predictions
    from edgesent.export.quantize import quant_settings
    from edgesent.metrics import paired_comparison
    from edgesent.textproc import Preprocessor

    manifest = load_manifest(args.artifact)
    pre = Preprocessor.from_manifest(Tokenizer.from_file(str(args.artifact / "tokenizer.json")), manifest["preprocessing"])
    model_type = json.loads((args.artifact / "config.json").read_text())["model_type"]
    table = pq.read_table(args.data, columns=["text", "label"]).to_pydict()
    texts, labels = table["text"][: args.limit], np.asarray(table["label"][: args.limit])
    fp32 = args.artifact / file_for("fp32")
    settings = quant_settings()
    print(f"{args.data} ({len(texts):,} texts); INT8 settings: {settings}")

    calib: list[str] = []
    if any(v.scheme == "static" for v in variants):
        calib = pq.read_table(args.train, columns=["text"]).column("text").to_pylist()
        rng = np.random.default_rng(0)
        calib = [calib[i] for i in rng.choice(len(calib), args.calibration, replace=False)]

    started = time.perf_counter()
    ref = onnx_predictions(fp32, pre, texts)
    rows = [{"variant": "fp32", "accuracy": float((ref == labels).mean()), "bytes": fp32.stat().st_size,
             "p50_ms_b1_s128_1t": one_text_p50_ms(fp32, pre, texts[0]), "score_s": time.perf_counter() - started}]
    with tempfile.TemporaryDirectory(prefix="edgesent-int8-") as tmp:
        for variant in variants:
            out = Path(tmp) / f"{variant.name}.onnx"
            variant.write(fp32, out, settings=settings, config_or_type=model_type, preprocessor=pre, calibration=calib)
            started = time.perf_counter()
            preds = onnx_predictions(out, pre, texts)
            score_s = time.perf_counter() - started
            pair = paired_comparison(ref, preds, labels)
            acc = float((preds == labels).mean())
            rows.append({"variant": variant.name, "accuracy": acc, "drop_pts": 100 * (rows[0]["accuracy"] - acc),
                         "disagree": int((preds != ref).sum()), "only_fp32_right": pair["only_a_right"],
                         "only_int8_right": pair["only_b_right"], "mcnemar_p": pair["mcnemar_p"],
                         "bytes": out.stat().st_size, "p50_ms_b1_s128_1t": one_text_p50_ms(out, pre, texts[0]),
                         "score_s": score_s})
            r = rows[-1]
            print(f"{variant.name:<44} acc {acc:.4f}  drop {r['drop_pts']:+.2f} pts  disagree {r['disagree']}  "
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
    run_main(main)  # a missing or bad artifact: one line, no traceback
