"""CPU latency grid, file sizes, cold start and RSS of the exact architectures, fp32 vs INT8.

    .venv/bin/python -m bench.arch_latency [--artifact exports/<run>/artifact] [--models pythia,distilroberta]
        [--batch-sizes 1,8,32] [--seq-lens 128,512] [--threads 1,2] [--budget 1] [--work /tmp/edgesent-arch]

For `pythia-14m-arch` and `distilroberta-base-arch` (../shared/models: exact configs and real
tokenizers, no weights) it builds random-weight classifiers and exports them with
`edgesent.export.export(int8=True)` (the builders of `bench.latency_targets`); `--artifact`
adds a trained artifact (the real MiniLM one). Each is then measured with `edgesent.bench.bench`
-- PyTorch fp32 eager, ORT fp32 and ORT INT8, each in its own process, random non-special token
ids of exactly seq_len tokens with a full mask -- and with `bench.cold_start` (`edgesent
predict` in fresh processes: time to first answer and peak RSS of the torch-free runtime).

Random weights do not change these numbers: latency, memory and file size follow the shapes and the
operator graph (identical to the real models'), not the values of the weights; only accuracy needs
real weights. The output is markdown (one latency table per model, p50 ms) plus a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.latency_targets import build_run, export_run
from edgesent.artifact import FILES, load_manifest
from edgesent.bench.report import save_numbers
from edgesent.errors import run_main
from edgesent.machine import machine_facts

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (("torch-fp32", "PyTorch fp32"), ("ort-fp32", "ORT fp32"), ("ort-int8", "ORT INT8"))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def latency_table(results: dict, threads: list[int]) -> str:
    """Markdown: rows batch x seq_len, columns variant x threads, cells p50 ms."""
    by = {}
    for v in results["variants"]:
        for c in v.get("cells", []):
            if c.get("status") == "ok":
                by[(v["name"], c["batch_size"], c["seq_len"], c["threads"])] = c["p50_ms"]
    cols = [(name, label, t) for name, label in VARIANTS for t in threads]
    head = "| batch x seq | " + " | ".join(f"{label} {t}T" for _, label, t in cols) + f" | INT8 vs fp32 ORT ({threads[0]}T) |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    cfg = results["config"]
    for b in cfg["batch_sizes"]:
        for s in cfg["seq_lens"]:
            cells = [by.get((name, b, s, t)) for name, _, t in cols]
            fp32, int8 = by.get(("ort-fp32", b, s, threads[0])), by.get(("ort-int8", b, s, threads[0]))
            ratio = f"{fp32 / int8:.2f}x" if fp32 and int8 else "-"
            lines.append(f"| {b} x {s} | " + " | ".join(f"{x:,.1f}" if x else "-" for x in cells) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pythia,distilroberta", help="random-weight architectures to build")
    parser.add_argument("--artifact", type=Path, action="append", default=[], help="also measure this artifact")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--seq-lens", default="128,512")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per cell (at least 3 runs)")
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh processes per cold-start measurement")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgesent-arch"))
    parser.add_argument("--out", type=Path, default=None, help="JSON with every number (default: <work>/arch_latency.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edgesent.bench import bench

    batch_sizes, seq_lens, threads = _ints(args.batch_sizes), _ints(args.seq_lens), _ints(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    targets = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run = build_run(name, args.work)
            artifact = export_run(run)
        print(f"{name}: random-weight run + artifact ready in {time.perf_counter() - started:.0f} s ({artifact})")
        targets.append((f"{name} (random weights)", artifact))
    targets += [(f"{a} (trained)", a) for a in args.artifact]

    summary = {"machine": machine_facts(), "batch_sizes": batch_sizes, "seq_lens": seq_lens, "threads": threads,
               "budget_s": args.budget, "models": {}}
    report = []
    for label, artifact in targets:
        manifest = load_manifest(artifact)
        sizes = {f: (artifact / f).stat().st_size for f in (FILES["fp32"], FILES["int8"]) if (artifact / f).is_file()}
        started = time.perf_counter()
        folder = bench(artifact, batch_sizes=batch_sizes, seq_lens=seq_lens, threads=threads, budget=args.budget,
                       out=args.work / f"bench-{artifact.parent.name}-{time.strftime('%Y%m%d-%H%M%S')}", show=False)
        results = json.loads((folder / "results.json").read_text())
        print(f"{label}: latency grid in {time.perf_counter() - started:.0f} s ({folder})")
        cold = {}
        for model in ("int8", "fp32"):
            # its own small process: a child's ru_maxrss includes its parent's RSS at fork (torch here)
            report_file = args.work / f"cold-{artifact.parent.name}-{model}.json"
            subprocess.run([sys.executable, "-m", "bench.cold_start", str(artifact), "--runs", str(args.cold_runs),
                            "--model", model, "--json", str(report_file)], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            r = json.loads(report_file.read_text())
            cold[model] = {"first_answer_s": r["first_answer_s"]["median"], "rss_mb": r["rss_mb"]["median"]}
        rss = {v["name"]: v.get("peak_rss_mb") for v in results["variants"] if v.get("status") == "ok"}
        load = {v["name"]: v.get("load_s") for v in results["variants"] if v.get("status") == "ok"}
        summary["models"][label] = {"artifact": str(artifact), "base_model": (manifest.get("source") or {}).get("base_model"),
                                    "sizes": sizes, "cold_start": cold, "bench_peak_rss_mb": rss, "load_s": load,
                                    "bench_folder": str(folder), "cells": [
                                        {"variant": v["name"], **c} for v in results["variants"]
                                        for c in v.get("cells", []) if c.get("status") == "ok"]}
        fp32_mb, int8_mb = sizes.get(FILES["fp32"], 0) / 1e6, sizes.get(FILES["int8"], 0) / 1e6
        report.append(f"### {label}\n\nfp32 {fp32_mb:.2f} MB -> INT8 {int8_mb:.2f} MB "
                      f"({int8_mb / fp32_mb:.1%}); p50 ms, {args.budget:g} s per cell\n\n"
                      + latency_table(results, threads)
                      + f"\n\ncold start (`edgesent predict`, median of {args.cold_runs}): INT8 "
                      f"{cold['int8']['first_answer_s']:.2f} s / {cold['int8']['rss_mb']:.0f} MB RSS, fp32 "
                      f"{cold['fp32']['first_answer_s']:.2f} s / {cold['fp32']['rss_mb']:.0f} MB RSS; peak RSS in the "
                      "grid (batch 32 x 512 included): "
                      + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items() if v) + "\n")
    print("\n" + "\n".join(report))
    save_numbers(args.out or args.work / "arch_latency.json", summary)
    return 0


if __name__ == "__main__":
    run_main(main)  # a missing or bad artifact: one line, no traceback
