"""`edgesent bench`: latency, throughput, size, memory and accuracy of every variant of a model.

What is measured, and how:

- Variants. CPU: PyTorch fp32 eager (the run's checkpoint), every ONNX file of the artifact on
  onnxruntime's CPU provider (fp32, dynamic INT8, static INT8 when present), a transformers
  `pipeline` on the fp32 PyTorch model (throughput only) and, with `--data`, a TF-IDF + logistic
  regression baseline. CUDA: PyTorch fp32/fp16/bf16, bitsandbytes LLM.int8 and nf4, onnxruntime's
  CUDA provider fp32/fp16. A variant that cannot run here becomes a row with the reason
  ("skipped: onnxruntime-gpu not installed"), never a crash.
- Isolation. Each variant is measured in a fresh `python -m edgesent.bench _worker` process: the
  load time is a real cold start, the peak RSS (`ru_maxrss`) belongs to that variant alone, and an
  onnxruntime variant never has torch in its address space.
- Latency grid (batch x seq_len x threads). Inputs have exactly `seq_len` tokens: random
  non-special token ids with a full attention mask, or with `--data` real texts truncated/padded
  to that length. Each cell runs a few warm-up calls, then repeats until `budget` seconds (or
  `MAX_RUNS`) and keeps every sample; the summary holds mean, std, p50, p90, p99 and the count.
- Throughput (texts/s) over the `--data` texts, length-bucketed like the runtime serves them, and
  accuracy / macro F1 / agreement with onnxruntime fp32 (the reference) on the same texts.
- Machine facts: CPU model, ISA flags that matter for INT8 (avx2, avx512f, avx512_vnni, avx_vnni,
  amx), cores, library versions, GPU name, date.

Outputs (written to a temporary folder, moved into place when complete): results.json,
results.csv (one row per variant x batch x seq_len x threads), report.md, latency.png and, with
accuracy figures, pareto.png.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.errors import DataError, EdgesentError, ModelError, atomic_dir

WARMUP_RUNS = 3
MIN_RUNS = 3
MAX_RUNS = 10_000
THROUGHPUT_BATCH = 32
BASELINE_TRAIN_CAP = 25_000
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
CSV_COLUMNS = [
    "variant", "device", "engine", "precision", "measure", "batch_size", "seq_len", "threads", "status", "reason",
    "n", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p99_ms", "texts_per_s", "file_bytes", "load_s", "peak_rss_mb",
    "gpu_mem_mb", "accuracy", "f1", "agreement",
]


# --------------------------------------------------------------------------------------------
# Statistics


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


# --------------------------------------------------------------------------------------------
# Machine facts


def machine_facts() -> dict[str, Any]:
    """Where the numbers were taken: CPU, ISA flags that matter for INT8 GEMMs, GPU, library versions."""
    from importlib import metadata

    cpu_model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu_model:
                cpu_model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    versions = {}
    for pkg in ("edgesent", "torch", "transformers", "onnxruntime", "onnxruntime-gpu", "optimum", "onnx",
                "numpy", "scikit-learn", "bitsandbytes"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    facts = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model or platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": {f: f in flags for f in ISA_FLAGS},
        "versions": versions,
        "gpu": None,
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip():
            facts["gpu"] = proc.stdout.strip().splitlines()[0]
    return facts


# --------------------------------------------------------------------------------------------
# What to benchmark


@dataclass
class Target:
    """The artifact (ONNX side) and the run (PyTorch side) found from the user's argument."""

    artifact: Path | None
    run: Path | None
    manifest: dict | None
    run_note: str = ""


def newest_artifact(root: str | os.PathLike = "exports") -> Path:
    from edgesent.artifact import MANIFEST

    root = Path(root)
    found = [p.parent for p in root.rglob(MANIFEST) if not any(part.startswith(".") for part in p.parent.parts)]
    if not found:
        raise ModelError(f"no artifact found under {root}/; pass an artifact or run folder (export one with `edgesent export`)")
    return max(found, key=lambda p: (p / MANIFEST).stat().st_mtime)


def resolve_target(target: str | os.PathLike | None) -> Target:
    """Artifact folder, run folder (its `artifact/` + checkpoint) or None (newest artifact under exports/)."""
    from edgesent.artifact import is_artifact, load_manifest

    path = newest_artifact() if target is None else Path(target)
    if not path.exists():
        raise ModelError(f"bench target not found: {path}")
    if not path.is_dir():
        raise ModelError(f"bench target {path} is not a folder (expected an artifact or a run folder)")
    if is_artifact(path):
        manifest = load_manifest(path)
        source_run = (manifest.get("source") or {}).get("run")
        run, note = None, "the artifact names no training run (source.run)"
        if source_run:
            candidate = Path(source_run)
            if (candidate / "recipe.yaml").is_file():
                run, note = candidate, ""
            else:
                note = f"the artifact's training run {source_run} is not here"
        return Target(path, run, manifest, note)
    if (path / "recipe.yaml").is_file():
        artifact = path / "artifact"
        if is_artifact(artifact):
            return Target(artifact, path, load_manifest(artifact))
        return Target(None, path, None)
    raise ModelError(f"{path} is neither an edgesent artifact (no edgesent.json) nor a run folder (no recipe.yaml)")


@dataclass
class Variant:
    """One way of running the model; `skip` holds the reason when it cannot run here."""

    name: str
    device: str  # cpu | cuda
    engine: str  # torch | ort | pipeline | sklearn
    precision: str
    file: str | None = None
    skip: str | None = None
    extra: dict = field(default_factory=dict)


def _onnx_variants(target: Target) -> list[tuple[str, str, str]]:
    """(variant suffix, precision, file) for every ONNX file of the artifact."""
    if target.manifest is None:
        return []
    models = target.manifest.get("models") or {}
    out = []
    order = {"model.onnx": 0, "model.int8.onnx": 1, "model.fp16.onnx": 2}
    for name in sorted((n for n in target.manifest["files"] if n.endswith(".onnx")), key=lambda n: (order.get(n, 3), n)):
        info = models.get(name) or {}
        quant = info.get("quantization") or {}
        if name == "model.onnx":
            out.append(("fp32", "fp32", name))
        elif name == "model.fp16.onnx":
            out.append(("fp16", "fp16", name))
        elif "int8" in name or info.get("precision") == "int8":
            static = "static" in name or quant.get("format") == "QDQ" or str(quant.get("variant", "")).startswith("static")
            out.append(("int8-static" if static else "int8", "int8", name))
        else:
            out.append((Path(name).stem.replace("model.", ""), info.get("precision", "?"), name))
    return out


def plan_variants(target: Target, device: str, has_train: bool, has_data: bool = True) -> list[Variant]:
    """The variants for `device` (cpu, cuda or all), with a skip reason for those that cannot run."""
    variants: list[Variant] = []
    no_torch = None if target.run else f"no PyTorch checkpoint: {target.run_note or 'no run folder'}"
    no_artifact = None if target.artifact else "no artifact: run `edgesent export` on the run first"
    onnx = _onnx_variants(target)
    if device in ("cpu", "all"):
        variants.append(Variant("torch-fp32", "cpu", "torch", "fp32", skip=no_torch))
        for suffix, precision, name in onnx:
            if precision != "fp16":
                variants.append(Variant(f"ort-{suffix}", "cpu", "ort", precision, file=name))
        if not onnx:
            variants.append(Variant("ort-fp32", "cpu", "ort", "fp32", skip=no_artifact or "the artifact holds no ONNX model"))
        no_texts = None if has_data else "measures throughput on texts only: pass --data"
        variants.append(Variant("pipeline-fp32", "cpu", "pipeline", "fp32", skip=no_torch or no_texts))
        no_train = None if has_train else "needs --data with a train split other than the benchmarked one"
        variants.append(Variant("tfidf-logreg", "cpu", "sklearn", "fp64", skip=no_train))
    if device in ("cuda", "all"):
        variants.extend(_cuda_variants(target, no_torch, onnx))
    return variants


def _cuda_variants(target: Target, no_torch: str | None, onnx) -> list[Variant]:
    import importlib.util

    import onnxruntime as ort

    cuda = _cuda_available()
    no_cuda = None if cuda else "CUDA not available (torch.cuda.is_available() is False)"
    out = [Variant(f"torch-{p}-cuda", "cuda", "torch", p, skip=no_cuda or no_torch) for p in ("fp32", "fp16", "bf16")]
    no_bnb = None if importlib.util.find_spec("bitsandbytes") else "bitsandbytes not installed"
    for p in ("llm-int8", "nf4"):
        out.append(Variant(f"torch-bnb-{p}-cuda", "cuda", "torch", p, skip=no_cuda or no_torch or no_bnb))
    no_ort_gpu = None if "CUDAExecutionProvider" in ort.get_available_providers() else "onnxruntime-gpu not installed"
    files = {precision: name for _, precision, name in onnx}
    for p, name in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx")):
        missing = None if name in files.values() else f"the artifact has no {name}" + (" (export with --fp16)" if p == "fp16" else "")
        out.append(Variant(f"ort-{p}-cuda", "cuda", "ort", p, file=name, skip=no_cuda or no_ort_gpu or missing))
    return out


def _cuda_available() -> bool:
    """Asked in a subprocess so that the driver process does not import torch."""
    code = "import torch; print(int(torch.cuda.is_available()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() == "1"


# --------------------------------------------------------------------------------------------
# Inputs


def load_preprocessor(spec: dict):
    """The artifact's own Preprocessor (tokenizer.json + manifest preprocessing)."""
    from tokenizers import Tokenizer

    from edgesent.textproc import Preprocessor

    return Preprocessor.from_manifest(Tokenizer.from_file(spec["tokenizer_file"]), spec["preprocessing"])


def synthetic_batch(pre, batch: int, seq_len: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Exactly `seq_len` tokens per row: the template's special tokens around random non-special ids."""
    tok = pre.tokenizer
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special} | {pre.pad_token_id}
    pool = np.setdiff1d(np.arange(tok.get_vocab_size()), np.fromiter(special, dtype=np.int64))
    n_content = max(seq_len - len(pre.prefix) - len(pre.suffix), 0)
    rows = [pre.prefix + rng.choice(pool, n_content).tolist() + pre.suffix for _ in range(batch)]
    rows = [r[:seq_len] for r in rows]
    return pre.pad(rows, pad_to=seq_len)


def text_batch(pre, texts: list[str], batch: int, seq_len: int, start: int = 0) -> dict[str, np.ndarray]:
    """`batch` real texts truncated (the artifact's strategy) and padded to exactly `seq_len` tokens."""
    from dataclasses import replace

    sized = replace(pre, max_length=seq_len)
    chosen = [texts[(start + i) % len(texts)] for i in range(batch)]
    return sized.pad(sized.encode(chosen), pad_to=seq_len)


# --------------------------------------------------------------------------------------------
# The worker: measures one variant in its own process


class _Runner:
    """Uniform face of an engine: `load(threads)`, `run(batch) -> logits`, `classify(texts, bs) -> logits`."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.pre = load_preprocessor(spec["pre"]) if spec.get("pre") else None

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Length-bucketed batches at the artifact's max_length (dynamic padding), like serving."""
        from edgesent.textproc import length_buckets

        ids = self.pre.encode(texts)
        out = np.zeros((len(texts), self.n_labels), dtype=np.float32)
        for group in length_buckets([len(x) for x in ids], batch_size):
            out[group] = self.run(self.pre.pad([ids[i] for i in group]))
        return out

    def gpu_mem_mb(self) -> float | None:
        return None


class _OrtRunner(_Runner):
    """The serving path itself: `edgesent.runtime.Classifier` (its load time, session options, bucketing)."""

    def load(self, threads: int) -> None:
        from edgesent.runtime import Classifier

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.spec["device"] == "cuda" else None
        self.clf = Classifier(self.spec["artifact"], model=self.spec["file"], threads=threads, providers=providers)
        self.inputs = {i.name: i.type for i in self.clf.session.get_inputs()}
        self.n_labels = len(self.clf.labels)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = dict(batch)
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(batch["input_ids"])
        feed = {k: v.astype(np.int32 if self.inputs[k] == "tensor(int32)" else np.int64, copy=False)
                for k, v in feed.items() if k in self.inputs}
        return self.clf.session.run(None, feed)[0]

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.clf.logits(texts, batch_size)

    def gpu_mem_mb(self) -> float | None:
        """Memory this process holds on the GPU (onnxruntime's arena keeps its peak), via nvidia-smi."""
        if self.spec["device"] != "cuda":
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            proc = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10)
            for line in proc.stdout.splitlines():
                pid, used = (x.strip() for x in line.split(","))
                if int(pid) == os.getpid():
                    return float(used)
        return None


class _TorchRunner(_Runner):
    def load(self, threads: int) -> None:
        import torch

        from edgesent.model import load_run

        torch.set_num_threads(threads)
        model, self.tokenizer, _ = load_run(self.spec["run"], merge=True)
        precision, device = self.spec["precision"], self.spec["device"]
        if precision in ("llm-int8", "nf4"):
            model = quantize_bnb(model, precision)
        elif device == "cuda":
            model = model.to({"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]).to("cuda")
        model.eval()
        self.model, self.torch = model, torch
        self.n_labels = int(model.config.num_labels)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def set_threads(self, threads: int) -> None:
        self.torch.set_num_threads(threads)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        device = "cuda" if self.spec["device"] == "cuda" else "cpu"
        with torch.inference_mode():
            ids = torch.from_numpy(batch["input_ids"]).to(device)
            mask = torch.from_numpy(batch["attention_mask"]).to(device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
        return logits  # .cpu() synchronises, so the time includes the whole GPU computation

    def gpu_mem_mb(self) -> float | None:
        if self.spec["device"] != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20


def quantize_bnb(model, precision: str):
    """Swap every Linear of the backbone for a bitsandbytes LLM.int8 / nf4 layer; the head stays fp16.

    In-place quantization (rather than `from_pretrained(quantization_config=...)`) also works for the
    MLP head and merged LoRA runs, which have no plain transformers checkpoint.
    """
    import bitsandbytes as bnb
    import torch
    import torch.nn as nn

    from edgesent.model import head_prefixes

    heads = tuple(head_prefixes(model))
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or full.startswith(heads):
                continue
            bias = child.bias is not None
            if precision == "llm-int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias, has_fp16_weights=False, threshold=6.0)
                new.weight = bnb.nn.Int8Params(child.weight.data.to(torch.float16), requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias, compute_dtype=torch.float16,
                                        quant_type="nf4")
                new.weight = bnb.nn.Params4bit(child.weight.data.to(torch.float16), requires_grad=False, quant_type="nf4")
            if bias:
                new.bias = nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
            setattr(module, child_name, new)
    return model.to(torch.float16).to("cuda")  # moving to the GPU is what quantizes the bnb weights


class _PipelineRunner(_Runner):
    """transformers `pipeline("text-classification")` on the fp32 model: the usual way people serve it."""

    def load(self, threads: int) -> None:
        import torch
        from transformers import pipeline

        from edgesent.model import load_run

        torch.set_num_threads(threads)
        model, tokenizer, _ = load_run(self.spec["run"], merge=True)
        self.torch = torch
        self.pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
        self.label_ids = {name: i for i, name in model.config.id2label.items()}
        self.n_labels = int(model.config.num_labels)

    def set_threads(self, threads: int) -> None:
        self.torch.set_num_threads(threads)

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        max_length = self.spec["pre"]["preprocessing"]["max_length"]
        results = self.pipe(texts, batch_size=batch_size, truncation=True, max_length=max_length, top_k=None)
        out = np.zeros((len(texts), self.n_labels), dtype=np.float32)
        for row, scores in zip(out, results, strict=True):
            for s in scores:
                row[self.label_ids[s["label"]]] = s["score"]
        return out


def tfidf_baseline():
    """The unfitted baseline every edgesent figure compares against: TF-IDF of word 1-2 grams
    (sublinear tf) + logistic regression (C = 1)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True), LogisticRegression(max_iter=1000))


class _SklearnRunner(_Runner):
    """TF-IDF (word 1-2 grams) + logistic regression fitted on the train split: the floor to beat."""

    def load(self, threads: int) -> None:
        data = json.loads(Path(self.spec["data_file"]).read_text())
        self.model = tfidf_baseline()
        self.model.fit(data["train_texts"], data["train_labels"])
        self.n_labels = len(self.spec["labels"])

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        proba = np.zeros((len(texts), self.n_labels), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            chunk = self.model.predict_proba(texts[i:i + batch_size])
            proba[i:i + batch_size][:, self.model.classes_] = chunk
        return proba


RUNNERS = {"ort": _OrtRunner, "torch": _TorchRunner, "pipeline": _PipelineRunner, "sklearn": _SklearnRunner}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    On Linux this is VmHWM of /proc/self/status, the high-water mark of the current address space:
    `ru_maxrss` would be wrong here, because it carries over the parent's RSS at fork time (a worker
    forked from a driver that holds torch would report torch's memory).
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def measure_variant(spec: dict, progress=None) -> dict:
    """All figures of one variant (runs inside the worker process)."""
    runner = RUNNERS[spec["engine"]](spec)
    threads = spec["threads"] if spec["device"] == "cpu" else [spec["threads"][0]]
    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    runner.load(threads[0])  # cold start: engine imports + model/session construction
    result: dict[str, Any] = {"load_s": time.perf_counter() - start, "rss_before_load_mb": rss_before, "cells": [],
                              "throughput": []}
    data = json.loads(Path(spec["data_file"]).read_text()) if spec.get("data_file") else None
    texts = data["texts"] if data else None
    rng = np.random.default_rng(0)

    def use_threads(t):
        if spec["engine"] == "ort" and t != current[0]:
            runner.load(t)  # onnxruntime fixes the thread pool when the session is made
        elif hasattr(runner, "set_threads"):
            runner.set_threads(t)
        current[0] = t

    current = [threads[0]]
    if spec["engine"] in ("ort", "torch"):
        for t in threads:
            use_threads(t)
            for seq in spec["seq_lens"]:
                for bs in spec["batch_sizes"]:
                    cell = {"batch_size": bs, "seq_len": seq, "threads": t}
                    try:
                        batch = text_batch(runner.pre, texts, bs, seq) if texts else synthetic_batch(runner.pre, bs, seq, rng)
                        samples = time_runs(lambda b=batch: runner.run(b), spec["budget"])
                        cell.update(status="ok", **summarize(samples), samples_ms=[s * 1000 for s in samples])
                    except Exception as exc:  # one bad cell (e.g. seq_len beyond the model's positions) is a row
                        cell.update(status="error", reason=_one_line(exc))
                    result["cells"].append(cell)
                    if progress:
                        progress()
    elif spec["engine"] == "sklearn" and texts:
        for t in threads:  # single-threaded: the same figure for every thread count, measured once per row
            samples = time_runs(lambda: runner.classify(texts[:1], 1), spec["budget"])
            result["cells"].append({"batch_size": 1, "seq_len": None, "threads": t, "status": "ok", **summarize(samples),
                                    "samples_ms": [s * 1000 for s in samples]})
    if texts:
        bs = spec["throughput_batch"]
        for i, t in enumerate(threads):
            use_threads(t)
            runner.classify(texts[:bs], bs)  # warm-up
            start = time.perf_counter()
            logits = runner.classify(texts, bs)
            seconds = time.perf_counter() - start
            result["throughput"].append({"threads": t, "batch_size": bs, "n_texts": len(texts), "seconds": seconds,
                                         "texts_per_s": len(texts) / seconds})
            if i == 0:
                result["predictions"] = np.asarray(logits).argmax(-1).tolist()
    result["peak_rss_mb"] = _peak_rss_mb()
    result["torch_imported"] = "torch" in sys.modules
    result["gpu_mem_mb"] = runner.gpu_mem_mb()
    result["status"] = "ok"
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _worker_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    done = [0]

    def progress():
        done[0] += 1
        print(f"cell {done[0]}", flush=True)

    try:
        result = measure_variant(spec, progress)
    except Exception as exc:
        result = {"status": "error", "reason": _one_line(exc)}
    Path(result_path).write_text(json.dumps(result))
    return 0


def run_worker(spec: dict, workdir: Path, isolate: bool = True, progress=None) -> dict:
    """Measure one variant, by default in a fresh `python -m edgesent.bench _worker` process."""
    if not isolate:
        try:
            return measure_variant(spec, progress)
        except Exception as exc:
            return {"status": "error", "reason": _one_line(exc)}
    spec_path, result_path = workdir / f"{spec['name']}.spec.json", workdir / f"{spec['name']}.result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(max(spec["threads"])))
    cmd = [sys.executable, "-m", "edgesent.bench", "_worker", str(spec_path), str(result_path)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            if line.startswith("cell ") and progress:
                progress()
        stderr = proc.stderr.read()
    if proc.returncode != 0 or not result_path.is_file():
        last = [x for x in stderr.strip().splitlines() if x.strip()]
        return {"status": "error", "reason": f"worker exited with {proc.returncode}: {last[-1] if last else 'no output'}"[:300]}
    return json.loads(result_path.read_text())


# --------------------------------------------------------------------------------------------
# The driver


def _data_for_bench(data: str, split: str, limit: int | None, labels: list[str]):
    """(texts, labels) of the benchmarked split and, when the data has one, of the train split (for the baseline)."""
    from edgesent.data import load_split

    test = load_split(data, split, limit=limit, labels=labels)
    if not len(test.texts):
        raise DataError(f"{data}: split '{split}' holds no rows")
    if split == "train" or Path(data).is_file():  # a single file is every split: fitting on it would be cheating
        return test, None
    try:
        train = load_split(data, "train", limit=BASELINE_TRAIN_CAP, labels=labels)
    except DataError:
        train = None
    return test, train


def _preprocessing_spec(target: Target) -> dict:
    """Tokenizer file + preprocessing settings: the artifact's, or the run's recipe when not exported."""
    if target.artifact is not None:
        return {"tokenizer_file": str(target.artifact / "tokenizer.json"), "preprocessing": target.manifest["preprocessing"]}
    from edgesent.config import load_recipe
    from edgesent.model import load_tokenizer

    recipe = load_recipe(target.run / "recipe.yaml")
    tok_dir = target.run / "tokenizer"
    tok = load_tokenizer(str(tok_dir if tok_dir.is_dir() else recipe.model.name_or_path), recipe.model.pad_token)
    path = Path(tempfile.mkdtemp(prefix="edgesent-bench-tok-")) / "tokenizer.json"
    tok.backend_tokenizer.save(str(path))
    d = recipe.data
    return {"tokenizer_file": str(path), "preprocessing": {
        "max_length": d.max_length, "truncation": d.truncation, "head_share": d.head_share, "lowercase": d.lowercase,
        "padding_side": "right", "pad_token_id": tok.pad_token_id}}


def _labels(target: Target) -> list[str]:
    if target.manifest is not None:
        return list(target.manifest["labels"])
    from edgesent.config import load_recipe

    return list(load_recipe(target.run / "recipe.yaml").data.labels)


def _file_bytes(target: Target, variant: Variant) -> int | None:
    if variant.engine == "ort" and target.artifact is not None and variant.file:
        path = target.artifact / variant.file
        return path.stat().st_size if path.is_file() else None
    if variant.engine in ("torch", "pipeline") and target.run is not None:
        folder = target.run / ("model" if (target.run / "model").is_dir() else "adapter")
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    return None


def bench(
    target: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    batch_sizes: list[int] | None = None,
    seq_lens: list[int] | None = None,
    threads: list[int] | None = None,
    data: str | None = None,
    split: str = "test",
    limit: int | None = None,
    budget: float = 2.0,
    out: str | os.PathLike | None = None,
    isolate: bool = True,
    show: bool = True,
) -> Path:
    """Benchmark every variant of `target`; returns the output folder (results.json, .csv, report.md, PNGs)."""
    batch_sizes, seq_lens, threads = batch_sizes or [1, 8, 32], seq_lens or [32, 128, 256, 512], threads or [1, 2]
    if device not in ("cpu", "cuda", "all"):
        raise EdgesentError(f"--device must be cpu or cuda, got {device!r}")
    for flag, values in (("--batch-sizes", batch_sizes), ("--seq-lens", seq_lens), ("--threads", threads)):
        if any(v <= 0 for v in values):
            raise EdgesentError(f"{flag} must be positive integers, got {','.join(map(str, values))}")
    if budget <= 0:
        raise EdgesentError(f"--budget must be positive, got {budget}")
    if limit is not None and limit <= 0:
        raise EdgesentError(f"--limit must be positive, got {limit}")
    tgt = resolve_target(target)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out else (tgt.artifact or tgt.run) / f"bench-{stamp}"
    from edgesent.errors import check_writable

    check_writable(out.parent)
    labels = _labels(tgt)
    pre = _preprocessing_spec(tgt)
    test = train = None
    if data:
        test, train = _data_for_bench(data, split, limit, labels)
    variants = plan_variants(tgt, device, has_train=train is not None and len(train.texts) > 0, has_data=test is not None)
    config = {"target": str(target) if target else None, "artifact": str(tgt.artifact) if tgt.artifact else None,
              "run": str(tgt.run) if tgt.run else None, "device": device, "batch_sizes": batch_sizes,
              "seq_lens": seq_lens, "threads": threads, "data": data, "split": split, "limit": limit,
              "n_texts": len(test.texts) if test else 0, "budget_s": budget, "warmup_runs": WARMUP_RUNS,
              "max_runs": MAX_RUNS, "throughput_batch": THROUGHPUT_BATCH, "isolated": isolate,
              "inputs": "real texts truncated/padded to seq_len" if data else "random non-special token ids, full mask"}
    results = {"machine": machine_facts(), "config": config, "labels": labels, "variants": []}
    with tempfile.TemporaryDirectory(prefix="edgesent-bench-") as tmp:
        workdir = Path(tmp)
        data_file = None
        if test is not None:
            data_file = workdir / "data.json"
            payload = {"texts": list(test.texts), "labels": [int(x) for x in test.labels]}
            if train is not None:
                payload.update(train_texts=list(train.texts), train_labels=[int(x) for x in train.labels])
            data_file.write_text(json.dumps(payload))
        with _progress(show) as bar:
            cells = len(batch_sizes) * len(seq_lens) * len(threads)
            task = bar.add_task("bench", total=sum(cells for v in variants if not v.skip and v.engine in ("ort", "torch")))
            for v in variants:
                entry = {**asdict(v), "file_bytes": _file_bytes(tgt, v)}
                entry.pop("extra")
                if v.skip:
                    entry.update(status="skipped", reason=v.skip, cells=[], throughput=[])
                    results["variants"].append(entry)
                    continue
                bar.update(task, description=f"{v.name:<22}")
                spec = {"name": v.name, "engine": v.engine, "device": v.device, "precision": v.precision,
                        "file": v.file, "artifact": str(tgt.artifact) if tgt.artifact else None,
                        "run": str(tgt.run) if tgt.run else None, "pre": pre, "labels": labels,
                        "batch_sizes": batch_sizes, "seq_lens": seq_lens, "threads": threads, "budget": budget,
                        "throughput_batch": THROUGHPUT_BATCH, "data_file": str(data_file) if data_file else None}
                measured = run_worker(spec, workdir, isolate, progress=lambda: bar.advance(task))
                entry.update(measured)
                entry.setdefault("cells", [])
                entry.setdefault("throughput", [])
                results["variants"].append(entry)
    _score(results, test)
    with atomic_dir(out) as tmp_out:
        write_outputs(tmp_out, results)
    if show:
        print_summary(results, out)
    return out


@contextlib.contextmanager
def _progress(show: bool):
    """A rich progress bar on a terminal; a silent stand-in otherwise."""
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            yield bar
        return

    class _Quiet:
        def add_task(self, *a, **k):
            return 0

        def update(self, *a, **k):
            pass

        def advance(self, *a, **k):
            pass

    yield _Quiet()


def _score(results: dict, test) -> None:
    """Accuracy, macro F1 and agreement with the reference (onnxruntime fp32, else PyTorch fp32)."""
    preds = {v["name"]: v.pop("predictions") for v in results["variants"] if v.get("predictions") is not None}
    if test is None or not preds:
        return
    from sklearn.metrics import accuracy_score, f1_score

    truth = [int(x) for x in test.labels]
    ref_name = next((n for n in ("ort-fp32", "torch-fp32", "ort-fp32-cuda", "torch-fp32-cuda") if n in preds), None)
    results["config"]["agreement_reference"] = ref_name
    for v in results["variants"]:
        if v["name"] not in preds:
            continue
        mine = preds[v["name"]]
        v["accuracy"] = float(accuracy_score(truth, mine))
        v["f1"] = float(f1_score(truth, mine, average="macro"))
        if ref_name:
            v["agreement"] = float(np.mean(np.asarray(mine) == np.asarray(preds[ref_name])))


# --------------------------------------------------------------------------------------------
# Outputs


def to_rows(results: dict) -> list[dict]:
    """One CSV row per variant x batch x seq_len x threads (latency) and per variant x threads (throughput)."""
    rows = []
    for v in results["variants"]:
        base = {k: v.get(k) for k in ("device", "engine", "precision", "file_bytes", "load_s", "peak_rss_mb",
                                      "gpu_mem_mb", "accuracy", "f1", "agreement")}
        base["variant"] = v["name"]
        if v.get("status") != "ok":
            rows.append({**base, "measure": "-", "status": v.get("status"), "reason": v.get("reason")})
            continue
        for c in v["cells"]:
            rows.append({**base, "measure": "latency", **{k: c.get(k) for k in CSV_COLUMNS if k in c}})
        for t in v["throughput"]:
            rows.append({**base, "measure": "throughput", "batch_size": t["batch_size"], "seq_len": "data",
                         "threads": t["threads"], "status": "ok", "texts_per_s": t["texts_per_s"], "n": t["n_texts"]})
    return [{k: r.get(k) for k in CSV_COLUMNS} for r in rows]


def _fmt(value, digits=2) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _mb(n) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(results: dict) -> str:
    m, cfg = results["machine"], results["config"]
    isa = ", ".join(f for f, on in m["isa"].items() if on) or "none of " + ", ".join(m["isa"])
    out = ["# edgesent bench", "",
           f"Target: `{cfg['artifact'] or cfg['run']}` · {m['date']} · inputs: {cfg['inputs']} · "
           f"budget {cfg['budget_s']} s per cell after {cfg['warmup_runs']} warm-up runs.", "",
           "## Machine", "",
           _md_table(["fact", "value"], [
               ["CPU", m["cpu"]], ["cores (usable / logical)", f"{m['usable_cores']} / {m['logical_cores']}"],
               ["ISA", isa], ["threads benchmarked", ",".join(map(str, cfg["threads"]))], ["GPU", m["gpu"] or "none"],
               ["OS / Python", f"{m['os']} / {m['python']}"],
               ["versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())]]), ""]
    for device in ("cpu", "cuda"):
        variants = [v for v in results["variants"] if v["device"] == device]
        if not variants:
            continue
        out += [f"## {device.upper()}", "", "### Variants", ""]
        out.append(_md_table(
            ["variant", "status", "file MB", "load s", "peak RSS MB", "GPU MB", "accuracy", "F1", "agreement"],
            [[v["name"], v.get("status"), _mb(v.get("file_bytes")), v.get("load_s"), v.get("peak_rss_mb"),
              v.get("gpu_mem_mb"), v.get("accuracy"), v.get("f1"), v.get("agreement")] for v in variants]))
        ok = [v for v in variants if v.get("status") == "ok" and v["cells"]]
        if ok:
            out += ["", "### Latency (ms)", ""]
            rows = [[v["name"], c["batch_size"], c["seq_len"] or "text", c["threads"], c.get("n"), c.get("mean_ms"),
                     c.get("std_ms"), c.get("p50_ms"), c.get("p90_ms"), c.get("p99_ms"), c.get("reason")]
                    for v in ok for c in v["cells"]]
            out.append(_md_table(["variant", "batch", "seq", "threads", "runs", "mean", "std", "p50", "p90", "p99", "note"],
                                 rows))
        tp = [[v["name"], t["threads"], t["batch_size"], t["n_texts"], t["texts_per_s"]]
              for v in variants if v.get("status") == "ok" for t in v["throughput"]]
        if tp:
            out += ["", "### Throughput over the data (length-bucketed)", "",
                    _md_table(["variant", "threads", "batch", "texts", "texts/s"], tp)]
        skipped = [v for v in variants if v.get("status") != "ok"]
        if skipped:
            out += ["", "### Skipped or failed", ""]
            out += [f"- **{v['name']}**: {v.get('status')}: {v.get('reason')}" for v in skipped]
        out.append("")
    if cfg.get("agreement_reference"):
        out += [f"Agreement = share of texts with the same predicted label as `{cfg['agreement_reference']}`.", ""]
    return "\n".join(out)


def plot_latency(results: dict, path: Path) -> bool:
    """p50 latency vs batch size (log-log), one line per variant, one panel per seq_len, at the first thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    seqs, t0 = cfg["seq_lens"], cfg["threads"][0]
    ok = [v for v in results["variants"] if v.get("status") == "ok" and any(c.get("seq_len") for c in v["cells"])]
    if not ok:
        return False
    fig, axes = plt.subplots(1, len(seqs), figsize=(4.2 * len(seqs), 3.8), squeeze=False, sharey=True)
    for ax, seq in zip(axes[0], seqs, strict=True):
        for v in ok:
            pts = sorted((c["batch_size"], c["p50_ms"]) for c in v["cells"]
                         if c.get("seq_len") == seq and c.get("status") == "ok" and c["threads"] == t0)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=v["name"])
        ax.set(xscale="log", yscale="log", title=f"seq_len {seq}", xlabel="batch size")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"p50 latency, ms ({t0} thread{'s' if t0 > 1 else ''} on CPU)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_pareto(results: dict, path: Path) -> bool:
    """Accuracy vs batch-1 latency, marker area proportional to file size; the Pareto front is joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = []
    for v in results["variants"]:
        if v.get("accuracy") is None:
            continue
        cells = [c for c in v["cells"] if c.get("status") == "ok" and c["batch_size"] == 1]
        if not cells:
            continue
        cell = min(cells, key=lambda c: (c["threads"], -(c["seq_len"] or 0)))  # fewest threads, longest seq
        pts.append((cell["p50_ms"], v["accuracy"], v.get("file_bytes") or 0, v["name"]))
    if not pts:
        return False
    biggest = max(p[2] for p in pts) or 1
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for lat, acc, size, name in pts:
        ax.scatter(lat, acc, s=40 + 900 * size / biggest, alpha=0.6)
        ax.annotate(name, (lat, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
    front, best = [], -1.0
    for lat, acc, _, _ in sorted(pts):
        if acc > best:
            front.append((lat, acc))
            best = acc
    ax.plot(*zip(*front, strict=True), "k--", lw=1, label="Pareto front")
    ax.set(xscale="log", xlabel="p50 latency at batch 1, ms (log)", ylabel="accuracy",
           title="accuracy vs latency (marker size = file size)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(folder: Path, results: dict) -> None:
    folder = Path(folder)
    results["plots"] = [name for name, fn in (("latency.png", plot_latency), ("pareto.png", plot_pareto))
                        if fn(results, folder / name)]
    (folder / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(to_rows(results))
    (folder / "results.csv").write_text(buf.getvalue(), encoding="utf-8")
    (folder / "report.md").write_text(render_report(results), encoding="utf-8")


def print_summary(results: dict, out: Path) -> None:
    """One screen: per variant, the batch-1 latency at the first thread count, throughput, size and accuracy."""
    from rich.console import Console
    from rich.table import Table

    cfg = results["config"]
    table = Table(title=f"edgesent bench · {results['machine']['cpu']}", show_lines=False)
    seqs = cfg["seq_lens"]
    table.add_column("variant", no_wrap=True)
    for col in ["MB", "load s", "RSS MB", *(f"p50 ms b1 s{s}" for s in seqs), "texts/s", "acc", "agree"]:
        table.add_column(col, justify="right")
    t0 = cfg["threads"][0]
    not_run = [v for v in results["variants"] if v.get("status") != "ok"]
    for v in results["variants"]:
        if v.get("status") != "ok":
            continue
        lat = {c["seq_len"]: c.get("p50_ms") for c in v["cells"] if c["batch_size"] == 1 and c["threads"] in (t0,)}
        lat = lat or {c["seq_len"]: c.get("p50_ms") for c in v["cells"] if c["batch_size"] == 1}
        tp = max((t["texts_per_s"] for t in v["throughput"]), default=None)
        table.add_row(v["name"], _mb(v.get("file_bytes")), _fmt(v.get("load_s")), _fmt(v.get("peak_rss_mb"), 0),
                      *(_fmt(lat.get(s)) for s in seqs), _fmt(tp, 0), _fmt(v.get("accuracy"), 3),
                      _fmt(v.get("agreement"), 3))
    console = Console()
    console.print(table)
    for v in not_run:
        console.print(f"[yellow]{v['name']}[/]: {v.get('status')}: {v.get('reason')}", highlight=False)
    console.print(f"results: {out}/ (report.md, results.csv, results.json, plots)")


def bench_cli(target, *, device, batch_sizes, seq_lens, threads, data, split, limit, budget, out) -> Path:
    return bench(target, device=device, batch_sizes=batch_sizes, seq_lens=seq_lens, threads=threads, data=data,
                 split=split, limit=limit, budget=budget, out=out)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    print("usage: python -m edgesent.bench _worker SPEC.json RESULT.json (internal; use `edgesent bench`)", file=sys.stderr)
    sys.exit(2)
