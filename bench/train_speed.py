"""Training throughput on CPU: fp32 vs bf16 mixed precision (autocast, fp32 master weights).

    .venv/bin/python -m bench.train_speed [--model ../shared/models/all-MiniLM-L6-v2] [--batch 16]
        [--seq-lens 128,256,512] [--threads 2] [--steps 4]

One AdamW training step (forward, backward, optimizer) of a sequence classifier on random token
ids with a full mask, timed `--steps` times after one warm-up step; prints train tokens/s (best
step) per precision and sequence length. This is what `training.precision: bf16` buys on a CPU
with native bf16 (avx512_bf16 or AMX); on CPUs without it, bf16 is emulated and slower than fp32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgesent.machine import cpu_flags

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-lens", default="128,256,512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    print(f"{args.model}: batch {args.batch}, {args.threads} threads, torch {torch.__version__}, "
          f"native bf16: {', '.join(native) or 'none'}")
    print(f"{'seq_len':>8}{'precision':>11}{'s/step':>9}{'tokens/s':>10}")
    for seq in [int(s) for s in args.seq_lens.split(",")]:
        speeds = {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2).train()
            opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
            ids = torch.randint(1000, 20000, (args.batch, seq))
            labels = torch.randint(0, 2, (args.batch,))
            times = []
            for _ in range(args.steps + 1):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
                times.append(time.perf_counter() - start)
            best = min(times[1:])
            speeds[precision] = args.batch * seq / best
            print(f"{seq:>8}{precision:>11}{best:>9.2f}{speeds[precision]:>10,.0f}")
        print(f"{'':>8}{'bf16/fp32':>11}{'':>9}{speeds['bf16'] / speeds['fp32']:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
