"""The engines bench can measure, behind one `Runner` interface, registered in `RUNNERS`.

A runner is built from a `WorkerSpec` and offers:

- `load(threads)`: the cold start (engine imports + model/session construction), timed by the worker;
- `set_threads(threads)`: the thread count for the calls that follow (onnxruntime fixes its pool when
  a session is made, so the ORT runner makes a new session; PyTorch sets its global count);
- `run(batch) -> logits` on a padded batch of token ids (the latency cells);
- `classify(texts, batch_size) -> logits`, length-bucketed like serving (throughput and accuracy);
- `gpu_mem_mb()`: GPU memory this process used, or None on CPU.

Engines: `ort` and `openvino` (the serving `Classifier` on either engine), `torch` (eager, every
precision incl. bitsandbytes, on the device of `torch_device`), `pipeline`, `sklearn`.

`latency` says what a latency cell times: "tokens" (`run` on batch x seq_len token ids), "text"
(`classify` of one text, for engines that take no token ids) or None (throughput only); `warmup`
whether throughput starts with an untimed warm-up batch (not for paid API calls). `classify` may
leave a text unanswered with a row of NaN (the worker records it as prediction -1, bench as
unparsed), and `extras()` adds engine-specific figures to the variant's results. The worker
reads only this interface, so adding an engine is one class and one `RUNNERS` entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgesent.bench.inputs import load_preprocessor

if TYPE_CHECKING:
    from edgesent.bench.worker import WorkerSpec


class Runner:
    """The uniform face of an engine (see the module docstring)."""

    latency: ClassVar[str | None] = "tokens"
    warmup: ClassVar[bool] = True

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.pre = load_preprocessor(spec.tokenizer_file, spec.preprocessing)
        self.n_labels = len(spec.labels)

    def load(self, threads: int) -> None:
        raise NotImplementedError

    def set_threads(self, threads: int) -> None:
        """Use `threads` from now on (engines without a thread setting ignore it)."""

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} takes texts, not token ids")

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Scored like serving: `textproc.pooled_logits` (length buckets, windows when the target uses them)."""
        from edgesent.textproc import pooled_logits

        if not texts:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        windows = self.pre.encode_windows(texts)
        return pooled_logits(windows, lambda ids: self.run(self.pre.pad(ids)), batch_size, self.pre.pool)

    def gpu_mem_mb(self) -> float | None:
        return None

    def extras(self) -> dict:
        """Engine-specific figures merged into the variant's results (none by default)."""
        return {}


class OrtRunner(Runner):
    """The serving path itself: `edgesent.runtime.Classifier` (its load time, session options, bucketing)."""

    def _providers(self) -> list[str] | None:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.spec.device == "cuda" else None

    engine = "onnxruntime"

    def _model(self) -> str | None:
        return self.spec.file

    def load(self, threads: int) -> None:
        from edgesent.runtime import Classifier

        self.clf = Classifier(self.spec.artifact, model=self._model(), threads=threads, providers=self._providers(),
                              engine=self.engine)
        self.threads = threads
        self.n_labels = len(self.clf.labels)

    def set_threads(self, threads: int) -> None:
        """Both engines fix their thread pool when the session is made: a new count is a new session."""
        from edgesent.runtime import open_session

        if threads != self.threads:
            self.clf.session = open_session(self.engine, self.clf.session.path, threads, self._providers(),
                                            self.clf.hint)
            self.threads = threads

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.clf.session.logits(batch)

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.clf.logits(texts, batch_size)

    def gpu_mem_mb(self) -> float | None:
        """Memory this process holds on the GPU (onnxruntime's arena keeps its peak), via nvidia-smi."""
        if self.spec.device != "cuda":
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            proc = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10)
            for line in proc.stdout.splitlines():
                pid, used = (x.strip() for x in line.split(","))
                if int(pid) == os.getpid():
                    return float(used)
        return None


class OpenVinoRunner(OrtRunner):
    """The serving path on the OpenVINO engine: the fp32 ONNX file (f32 or bf16 precision hint) or the INT8 IR."""

    engine = "openvino"

    def _providers(self) -> list[str] | None:
        return None

    def _model(self) -> str | None:
        return "bf16" if self.spec.precision == "bf16" else self.spec.file

    def gpu_mem_mb(self) -> float | None:
        return None


TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_device(spec: WorkerSpec) -> str:
    """The one place a torch runner's device comes from: the variant's (cuda or cpu)."""
    return "cuda" if spec.device == "cuda" else "cpu"


class TorchRunner(Runner):
    """PyTorch eager on the run's checkpoint (LoRA merged): fp32/fp16/bf16 or bitsandbytes LLM.int8/nf4, on the
    variant's device. The CPU rows (bf16, bitsandbytes) run the very code of the CUDA rows."""

    def load(self, threads: int) -> None:
        import torch

        from edgesent.model import load_run

        torch.set_num_threads(threads)
        model, _, _ = load_run(self.spec.run, merge=True)
        precision, device = self.spec.precision, torch_device(self.spec)
        if precision in ("llm-int8", "nf4"):
            model = quantize_bnb(model, precision, device)
        else:
            model = model.to(getattr(torch, TORCH_DTYPES[precision])).to(device)
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
        device = torch_device(self.spec)
        with torch.inference_mode():
            ids = torch.from_numpy(batch["input_ids"]).to(device)
            mask = torch.from_numpy(batch["attention_mask"]).to(device)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
        return logits  # .cpu() synchronises, so the time includes the whole GPU computation

    def gpu_mem_mb(self) -> float | None:
        if self.spec.device != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20


class PipelineRunner(TorchRunner):
    """transformers `pipeline("text-classification")` on the fp32 model: the usual way people serve it."""

    latency = None

    def load(self, threads: int) -> None:
        import torch
        from transformers import pipeline

        from edgesent.model import load_run

        torch.set_num_threads(threads)
        model, tokenizer, _ = load_run(self.spec.run, merge=True)
        self.model, self.torch = model, torch
        self.pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
        self.label_ids = {name: i for i, name in model.config.id2label.items()}
        self.n_labels = int(model.config.num_labels)

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        max_length = self.spec.preprocessing["max_length"]
        results = self.pipe(texts, batch_size=batch_size, truncation=True, max_length=max_length, top_k=None)
        out = np.zeros((len(texts), self.n_labels), dtype=np.float32)
        for row, scores in zip(out, results, strict=True):
            for s in scores:
                row[self.label_ids[s["label"]]] = s["score"]
        return out


class SklearnRunner(Runner):
    """TF-IDF (word 1-2 grams) + logistic regression tuned on a validation share of the train split and
    fitted on all of it (`baseline.tuned_tfidf`): the floor to beat. `fit_record` holds the grid's choice.

    Single-threaded, so its latency cell (one text) is the same figure at every thread count.
    """

    latency = "text"

    def load(self, threads: int) -> None:
        from edgesent.bench.baseline import tuned_tfidf

        data = json.loads(Path(self.spec.data_file).read_text())
        self.model, self.fit_record = tuned_tfidf(data["train_texts"], data["train_labels"])

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        proba = np.zeros((len(texts), self.n_labels), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            chunk = self.model.predict_proba(texts[i:i + batch_size])
            proba[i:i + batch_size][:, self.model.classes_] = chunk
        return proba


class LlmRunner(Runner):
    """A chat model behind an OpenAI-compatible endpoint (`edgesent.bench.llm`): throughput and accuracy only.

    Runs in the worker like every engine; the spec carries the settings with the key's environment
    variable *name*, and the key is read from the environment here. Every review is sent once (no
    warm-up); `classify` ignores the bench batch size and sends `--llm-batch` reviews per request.
    """

    latency = None
    warmup = False

    def __init__(self, spec: WorkerSpec):
        self.spec = spec  # no tokenizer: the endpoint takes text
        self.n_labels = len(spec.labels)
        self.stats: dict = {}

    def load(self, threads: int) -> None:
        from edgesent.bench.llm import LlmSettings, pick_shots

        self.settings = LlmSettings(**self.spec.options)
        data = json.loads(Path(self.spec.data_file).read_text()) if self.spec.data_file else {}
        self.shots = pick_shots(data.get("train_texts", []), data.get("train_labels", []), self.settings.shots,
                                self.settings.seed)

    def classify(self, texts: list[str], batch_size: int) -> np.ndarray:
        from edgesent.bench.llm import classify

        preds, self.stats = classify(texts, self.spec.labels, self.settings, self.shots)
        out = np.full((len(texts), self.n_labels), np.nan, dtype=np.float32)
        for row, label in zip(out, preds, strict=True):
            if label is not None:
                row[:] = 0.0
                row[label] = 1.0
        return out

    def extras(self) -> dict:
        return {"llm": self.stats}


RUNNERS: dict[str, type[Runner]] = {"ort": OrtRunner, "openvino": OpenVinoRunner, "torch": TorchRunner,
                                    "pipeline": PipelineRunner, "sklearn": SklearnRunner, "llm": LlmRunner}


NF4_CPU_BLOCK = 64


def bnb_dtype(device: str):
    """The dtype of what bitsandbytes leaves unquantized (and computes in): fp16 on CUDA; on CPU bf16 where
    the CPU has it natively, else fp32 (CPU fp16 matmuls are emulated)."""
    import torch

    from edgesent.machine import native_bf16

    if device == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bf16() else torch.float32


def quantize_bnb(model, precision: str, device: str = "cuda"):
    """Swap every Linear of the backbone for a bitsandbytes LLM.int8 / nf4 layer; the head stays in `bnb_dtype`.

    In-place quantization (rather than `from_pretrained(quantization_config=...)`) also works for the
    MLP head and merged LoRA runs, which have no plain transformers checkpoint. bitsandbytes >= 0.49
    has CPU kernels for both, so the CPU rows run this same function with device "cpu".
    """
    import bitsandbytes as bnb
    import torch.nn as nn

    from edgesent.archs import head_modules

    dtype = bnb_dtype(device)

    heads = set(head_modules(model))
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or full.split(".")[0] in heads:
                continue
            if precision == "nf4" and device == "cpu" and child.in_features % NF4_CPU_BLOCK:
                continue  # bitsandbytes' CPU nf4 kernel packs 64-weight blocks of the input; such layers stay in dtype
            bias = child.bias is not None
            if precision == "llm-int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias, has_fp16_weights=False,
                                          threshold=6.0)
                new.weight = bnb.nn.Int8Params(child.weight.data.to(dtype), requires_grad=False,
                                               has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias, compute_dtype=dtype,
                                        quant_type="nf4")
                new.weight = bnb.nn.Params4bit(child.weight.data.to(dtype), requires_grad=False, quant_type="nf4")
            if bias:
                new.bias = nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
            setattr(module, child_name, new)
    return model.to(dtype).to(device)  # moving to the device is what quantizes the bnb weights
