"""Which teacher blocks to keep: accuracy of layer-dropped copies of a fine-tuned run, before any training.

    .venv/bin/python -m bench.distill_layers RUN [--candidates "0,2,4;1,3,5;0,1,2;3,4,5"] [--limit 1000]
        [--threads 2] [--out bench/results/distill_layers.json]

For each candidate `model.keep_layers`, the run's model is cut with `edgesent.model.keep_layers`
(embeddings and head kept) and scored, without any training, on the first `--limit` texts of the
run's own validation split (carved from train by the run's recipe: no test text is looked at) with
the run's preprocessing, in PyTorch fp32. Printed: accuracy and agreement with the uncut model. A
cut that already keeps much of the teacher's behaviour is the better start for distillation.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from edgesent.errors import atomic_write_text, run_main

DEFAULT = "0,2,4;1,3,5;0,1,2;3,4,5;0,2,5;0,3,5;0,5;2,5;4,5;0,3"


def predict(model, pre, texts: list[str], batch_size: int = 32):
    import numpy as np
    import torch

    from edgesent.textproc import length_buckets

    ids = pre.encode(texts)
    out = np.zeros(len(texts), dtype=np.int64)
    with torch.inference_mode():
        for bucket in length_buckets([len(x) for x in ids], batch_size):
            feed = {k: torch.from_numpy(v) for k, v in pre.pad([ids[i] for i in bucket]).items()}
            out[bucket] = model(**feed).logits.argmax(-1).numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--candidates", default=DEFAULT, help="';'-separated lists of block indices")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    from edgesent.data import load_splits
    from edgesent.export.source import resolve_source
    from edgesent.model import keep_layers

    torch.set_num_threads(args.threads)
    src = resolve_source(args.run)
    val = load_splits(src.recipe)["validation"]
    texts, labels = val.texts[: args.limit], val.labels[: args.limit]
    import numpy as np

    labels = np.asarray(labels)
    full = predict(src.model, src.preprocessor, texts)
    rows = [{"keep_layers": "all", "accuracy": float((full == labels).mean()), "agreement": 1.0}]
    print(f"{len(texts)} validation texts of {args.run}; teacher accuracy {rows[0]['accuracy']:.4f}")
    for spec in args.candidates.split(";"):
        keep = [int(i) for i in spec.split(",") if i.strip()]
        started = time.perf_counter()
        student = keep_layers(copy.deepcopy(src.model), keep).eval()
        pred = predict(student, src.preprocessor, texts)
        row = {"keep_layers": keep, "accuracy": float((pred == labels).mean()), "agreement": float((pred == full).mean())}
        rows.append(row)
        print(f"keep {str(keep):<12} accuracy {row['accuracy']:.4f}  agrees with teacher {row['agreement']:.4f}  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps({"run": str(args.run), "n": len(texts), "threads": args.threads,
                                                "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
