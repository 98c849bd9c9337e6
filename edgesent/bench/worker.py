"""Measure one variant, by default in a fresh process: `python -m edgesent.bench.worker SPEC RESULT`.

The driver writes a `WorkerSpec` (what to load, the grid, the budget, where the texts are) as JSON,
starts the worker and reads back the result JSON: load time, every latency cell with its raw
samples, throughput per thread count, predictions, peak RSS before and after loading, GPU memory
and whether torch was imported. A fresh process makes the load time a real cold start, the peak RSS
(VmHWM) that variant's alone, and keeps torch out of an onnxruntime variant's address space.

Progress: the worker prints `cell N` on stdout after each latency cell. A failure of the whole
variant becomes `{"status": "error", "reason": ...}`; one failing cell (e.g. a seq_len beyond the
model's positions) is a cell with status "error", and the others are still measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.bench.inputs import length_bucket, synthetic_batch, text_batch, token_lengths
from edgesent.bench.runners import RUNNERS, Runner
from edgesent.bench.timing import summarize, time_runs
from edgesent.errors import first_line
from edgesent.machine import peak_rss_mb

THROUGHPUT_BATCH = 32
PER_REVIEW_TEXTS = 200  # reviews timed one at a time for the per-review latency


@dataclass
class WorkerSpec:
    """Everything a worker needs to measure one variant (JSON-serializable)."""

    name: str
    engine: str  # a key of RUNNERS
    device: str  # cpu | cuda
    precision: str
    file: str | None  # the ONNX file, for the ORT engine
    artifact: str | None
    run: str | None
    tokenizer_file: str
    preprocessing: dict
    labels: list[str]
    batch_sizes: list[int]
    seq_lens: list[int]
    threads: list[int]
    budget: float
    throughput_batch: int = THROUGHPUT_BATCH
    data_file: str | None = None  # JSON: texts, labels (+ train_texts, train_labels for the baseline)
    options: dict | None = None  # engine settings (the LLM's endpoint, model, key variable *name*...)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> WorkerSpec:
        return cls(**json.loads(Path(path).read_text()))


def describe(exc: BaseException) -> str:
    """A failure as one line for the report: `IndexError: index out of range in self`."""
    return f"{type(exc).__name__}: {first_line(exc)}"[:300]


def measure_variant(spec: WorkerSpec, progress=None) -> dict[str, Any]:
    """All figures of one variant (runs inside the worker process)."""
    runner = RUNNERS[spec.engine](spec)
    threads = spec.threads if spec.device == "cpu" else spec.threads[:1]
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    runner.load(threads[0])  # cold start: engine imports + model/session construction
    result: dict[str, Any] = {"load_s": time.perf_counter() - start, "rss_before_load_mb": rss_before, "cells": [],
                              "throughput": []}
    texts = json.loads(Path(spec.data_file).read_text())["texts"] if spec.data_file else None
    rng = np.random.default_rng(0)
    for t in threads:
        runner.set_threads(t)
        result["cells"] += latency_cells(runner, spec, t, texts, rng, progress)
    for i, t in enumerate(threads if texts else []):
        runner.set_threads(t)
        row, logits = throughput(runner, texts, spec.throughput_batch)
        result["throughput"].append({"threads": t, **row})
        if i == 0:
            logits = np.asarray(logits)
            result["predictions"] = np.where(np.isnan(logits).any(-1), -1, logits.argmax(-1)).tolist()  # NaN: no answer
            if runner.warmup:  # not for an API baseline: every call is a paid request, and it has no tokenizer
                result["per_review"] = per_review(runner, texts, t)
    if getattr(runner, "fit_record", None) is not None:
        result["baseline_fit"] = runner.fit_record
    result.update(peak_rss_mb=peak_rss_mb(), torch_imported="torch" in sys.modules, gpu_mem_mb=runner.gpu_mem_mb(),
                  status="ok", **runner.extras())
    return result


def latency_cells(runner: Runner, spec: WorkerSpec, threads: int, texts: list[str] | None, rng, progress=None):
    """The latency cells of one thread count: batch x seq_len token grids, or one text (see Runner.latency)."""
    cells = []
    if runner.latency == "tokens":
        for seq in spec.seq_lens:
            for bs in spec.batch_sizes:
                cell: dict[str, Any] = {"batch_size": bs, "seq_len": seq, "threads": threads}
                try:
                    batch = text_batch(runner.pre, texts, bs, seq) if texts else synthetic_batch(runner.pre, bs, seq, rng)
                    cell.update(status="ok", **_figures(time_runs(lambda b=batch: runner.run(b), spec.budget)))
                except Exception as exc:  # one bad cell (e.g. seq_len beyond the model's positions) is a row
                    cell.update(status="error", reason=describe(exc))
                cells.append(cell)
                if progress:
                    progress()
    elif runner.latency == "text" and texts:
        samples = time_runs(lambda: runner.classify(texts[:1], 1), spec.budget)
        cells.append({"batch_size": 1, "seq_len": None, "threads": threads, "status": "ok", **_figures(samples)})
    return cells


def _figures(samples: list[float]) -> dict[str, Any]:
    return {**summarize(samples), "samples_ms": [s * 1000 for s in samples]}


def throughput(runner: Runner, texts: list[str], batch_size: int) -> tuple[dict[str, Any], np.ndarray]:
    """Texts per second over all `texts` (after one warm-up batch, where the runner wants one), and their logits."""
    if runner.warmup:
        runner.classify(texts[:batch_size], batch_size)
    start = time.perf_counter()
    logits = runner.classify(texts, batch_size)
    seconds = time.perf_counter() - start
    return {"batch_size": batch_size, "n_texts": len(texts), "seconds": seconds,
            "texts_per_s": len(texts) / seconds}, logits


def per_review(runner: Runner, texts: list[str], threads: int, n: int = PER_REVIEW_TEXTS) -> dict[str, Any]:
    """Latency of one review at a time (batch 1, windows and all) on up to `n` texts spread over the data:
    p50/p90 overall and p50 per length bucket, since the cost of a review now grows with its length."""
    picks = sorted({int(i) for i in np.linspace(0, len(texts) - 1, min(n, len(texts)))})
    runner.classify(texts[picks[0]:picks[0] + 1], 1)  # warm-up
    seconds = []
    for i in picks:
        start = time.perf_counter()
        runner.classify([texts[i]], 1)
        seconds.append(time.perf_counter() - start)
    buckets: dict[str, list[float]] = {}
    for i, s in zip(picks, seconds, strict=True):
        buckets.setdefault(length_bucket(token_lengths(runner.pre, [texts[i]])[0]), []).append(s)
    return {"threads": threads, **summarize(seconds),
            "by_length": {name: {"n": len(v), "p50_ms": float(np.median(v) * 1000)} for name, v in buckets.items()}}


def _measure_or_error(spec: WorkerSpec, progress=None) -> dict[str, Any]:
    try:
        return measure_variant(spec, progress)
    except Exception as exc:
        return {"status": "error", "reason": describe(exc)}


def run_worker(spec: WorkerSpec, workdir: Path, isolate: bool = True, progress=None) -> dict[str, Any]:
    """Measure one variant, by default in a fresh `python -m edgesent.bench.worker` process."""
    if not isolate:
        return _measure_or_error(spec, progress)
    spec_path = spec.save(workdir / f"{spec.name}.spec.json")
    result_path, log_path = workdir / f"{spec.name}.result.json", workdir / f"{spec.name}.stderr"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(max(spec.threads)))
    cmd = [sys.executable, "-m", "edgesent.bench.worker", str(spec_path), str(result_path)]
    with open(log_path, "w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                                      env=env) as proc:
        for line in proc.stdout:
            if line.startswith("cell ") and progress:
                progress()
    if proc.returncode != 0 or not result_path.is_file():
        last = [x for x in log_path.read_text(errors="replace").strip().splitlines() if x.strip()]
        return {"status": "error", "reason": f"worker exited with {proc.returncode}: {last[-1] if last else 'no output'}"[:300]}
    return json.loads(result_path.read_text())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m edgesent.bench.worker SPEC.json RESULT.json (internal; use `edgesent bench`)",
              file=sys.stderr)
        return 2
    done = [0]

    def progress():
        done[0] += 1
        print(f"cell {done[0]}", flush=True)

    result = _measure_or_error(WorkerSpec.load(args[0]), progress)
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
