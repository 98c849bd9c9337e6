"""Timing statistics: run a call repeatedly within a time budget and summarize the samples.

`time_runs` does the warm-up and the timed repeats of one latency cell; `summarize` turns the
samples (seconds) into the figures every report shows (mean, std, p50/p90/p99 in milliseconds and
the sample count); `percentiles` uses numpy's 'linear' interpolation, made explicit.
"""

from __future__ import annotations

import time

import numpy as np

WARMUP_RUNS = 3
MIN_RUNS = 3
MAX_RUNS = 10_000


def percentiles(samples, qs=(50, 90, 99)) -> dict[str, float]:
    """`{"p50": .., "p90": .., "p99": ..}` with numpy's 'linear' interpolation (the default, made explicit)."""
    arr = np.asarray(list(samples), dtype=float)
    if arr.size == 0:
        raise ValueError("percentiles of an empty sample")
    values = np.percentile(arr, qs, method="linear")
    return {f"p{q:g}": float(v) for q, v in zip(qs, values, strict=True)}


def summarize(seconds: list[float]) -> dict[str, float]:
    """Mean, std, p50/p90/p99 in milliseconds, plus the number of samples."""
    ms = np.asarray(seconds, dtype=float) * 1000.0
    out = {"n": int(ms.size), "mean_ms": float(ms.mean()), "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0}
    out.update({f"{k}_ms": v for k, v in percentiles(ms).items()})
    return out


def time_runs(fn, budget: float, warmup: int = WARMUP_RUNS, min_runs: int = MIN_RUNS, max_runs: int = MAX_RUNS):
    """Call `fn` `warmup` times untimed, then repeatedly until `budget` seconds or `max_runs` samples.

    Warm-up stops early (after at least one call) once it has used the whole budget: a cell whose
    single call takes seconds (batch 32 x 512 tokens on one core) is warm after one call, and three
    would triple its cost without changing the timed samples.
    """
    started = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - started > budget:
            break
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def one_text_p50_ms(path, preprocessor, text: str, seq: int = 128, budget: float = 3.0) -> float:
    """p50 (ms) of one ONNX file on one thread for one text repeated to fill `seq` tokens (truncated
    the artifact's way): the single-review latency the bench scripts report beside accuracy."""
    from edgesent.bench.inputs import text_batch
    from edgesent.session import OnnxSession

    sess = OnnxSession(path, threads=1)
    batch = text_batch(preprocessor, [text * 50], 1, seq)
    return summarize(time_runs(lambda: sess.logits(batch), budget))["p50_ms"]
