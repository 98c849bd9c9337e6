"""fp32 vs INT8 artifact sizes of real architectures (random weights), as a markdown table.

    .venv/bin/python -m bench.export_sizes [--shared ../shared] [--models pythia-14m-arch,distilroberta-base-arch]

Builds each `<shared>/models/<name>` architecture with random weights (the folders hold only
config + tokenizer), exports it with `edgesent.export.export(..., int8=True)` and prints the file
sizes. Sizes depend on the architecture, not on the weights' values, so random weights give the
real ratios. Architectures that are absent are skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from edgesent.artifact import FILES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "pythia-14m-arch,distilroberta-base-arch"


def build_random_model(arch: Path, out: Path) -> int:
    """Save a random-weight 2-label classifier of `arch` with its tokenizer; return its parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(arch)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = AutoConfig.from_pretrained(arch, num_labels=2, pad_token_id=tok.pad_token_id,
                                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder holding models/")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated folder names under models/")
    parser.add_argument("--threads", type=int, default=2, help="torch/onnxruntime threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from edgesent.export import export

    torch.set_num_threads(args.threads)
    rows, skipped = [], []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        arch = args.shared / "models" / name
        if not (arch / "config.json").is_file():
            skipped.append(f"{name} (not found in {arch.parent})")
            continue
        with tempfile.TemporaryDirectory(prefix="edgesent-sizes-") as tmp:
            params = build_random_model(arch, Path(tmp) / "model")
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                art = export(Path(tmp) / "model", Path(tmp) / "artifact", int8=True)
            seconds = time.perf_counter() - start
            fp32 = (art / FILES["fp32"]).stat().st_size
            int8 = (art / FILES["int8"]).stat().st_size
            rows.append(f"| {name} | {params / 1e6:.1f}M | {fp32 / 1e6:.2f} | {int8 / 1e6:.2f} | {int8 / fp32:.1%} | {seconds:.0f} |")
    if rows:
        print("| model | parameters | fp32 MB | INT8 MB | INT8 / fp32 | export s |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
    for note in skipped:
        print(f"skipped: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
