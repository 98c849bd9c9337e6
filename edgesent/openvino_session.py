"""The OpenVINO engine: the same `.logits(batch)` face as `edgesent.session.OnnxSession`, on OpenVINO's CPU plugin.

Torch-free (numpy + openvino), and optional: `pip install "edgesent[openvino]"`. Without openvino
installed, building a session is one `EdgesentError` line naming that extra; nothing else in the
runtime imports openvino.

    sess = OpenVinoSession("artifact/model.int8.openvino.xml", threads=2)   # or the fp32 model.onnx
    logits = sess.logits(preprocessor.pad(ids))                            # float32 (batch, labels)

- OpenVINO reads the artifact's fp32 ONNX file directly (fp32 / bf16 hint) or the INT8 IR that
  `edgesent export --openvino` writes (NNCF static INT8). Shapes stay dynamic (batch, sequence),
  so the runtime's length bucketing works unchanged.
- `threads` -> `INFERENCE_NUM_THREADS` (None: OpenVINO's default, one per core), one stream and the
  LATENCY hint, like onnxruntime's one sequential inter-op thread.
- Fewer threads than cores -> `ENABLE_CPU_PINNING` off. OpenVINO pins its compute threads to cores
  by default, and every process picks the same first cores: two Ray actors with one thread each were
  both pinned to core 0 and shared it (each at 50 % CPU, no faster than one actor; measured on the
  2-core dev box, bench/RESULTS.md section 10). A process that does not own the whole machine leaves
  placement to the OS scheduler; with all cores (or threads=None) OpenVINO's default is kept.
- `hint` -> `INFERENCE_PRECISION_HINT`: "f32" (default: OpenVINO would otherwise pick bf16 by itself
  on CPUs with native bf16 and no longer match fp32 logits) or "bf16", which only CPUs with native
  bf16 (avx512_bf16 / AMX) accept here (`bf16_skip_reason`).
- Inputs longer than the model's positions (`artifact.max_tokens`, from the config.json beside the
  model file) are refused with one line: onnxruntime raises on the out-of-range position gather, but
  OpenVINO's CPU plugin does not check it and can crash the process. The runtime's preprocessing
  never produces such inputs; bench's seq_len grid can.
- The feed is the one of `edgesent.session.feed_for`: the graph's inputs only, zero token_type_ids
  when it takes them, cast to its integer type.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgesent.artifact import max_tokens
from edgesent.errors import ArtifactError, EdgesentError, first_line
from edgesent.machine import usable_cores
from edgesent.session import check_inputs, feed_for

EXTRA = 'pip install "edgesent[openvino]"'
HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
_CORE = None


def import_openvino():
    """The openvino module, or one line naming the extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise EdgesentError(f"the OpenVINO engine needs openvino, which is not installed: {EXTRA}") from None
    return openvino


def available() -> bool:
    """Whether openvino can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def core():
    """One `openvino.Core` per process (creating one costs ~50 ms)."""
    global _CORE
    if _CORE is None:
        _CORE = import_openvino().Core()
    return _CORE


def bf16_skip_reason() -> str | None:
    """None when this CPU computes bf16 natively, else why a bf16 variant cannot run here."""
    from edgesent.machine import native_bf16

    return None if native_bf16() else "this CPU has no native bf16 (avx512_bf16 / amx_bf16)"


class OpenVinoSession:
    """A compiled OpenVINO model plus its input signature: `logits(batch)` for a padded batch of token ids."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, hint: str = "f32"):
        self.path = Path(path)
        if hint not in HINTS:
            raise EdgesentError(f"unknown OpenVINO precision hint '{hint}' (choose f32 or bf16)")
        if HINTS[hint] == "bf16" and (reason := bf16_skip_reason()):
            raise EdgesentError(f"cannot run bf16 with OpenVINO: {reason}")
        self.hint = HINTS[hint]
        ie = core()
        config = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
            if int(threads) < usable_cores():
                config["ENABLE_CPU_PINNING"] = False
        try:
            model = ie.read_model(str(self.path))
            self.compiled = ie.compile_model(model, "CPU", config)
        except Exception as exc:  # openvino raises RuntimeError with a multi-line report
            raise ArtifactError(f"openvino cannot load {self.path}: {first_line(exc)}") from None
        i32 = import_openvino().Type.i32
        self.inputs = check_inputs(self.path, {port.get_any_name(): (np.int32 if port.get_element_type() == i32
                                                                     else np.int64) for port in self.compiled.inputs})
        self.output = self.compiled.outputs[0]
        width = self.output.get_partial_shape()[-1]
        self.classes = width.get_length() if width.is_static else None  # output width when the graph fixes it
        self.request = self.compiled.create_infer_request()
        self.max_tokens = max_tokens(self.path.parent)

    def feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return feed_for(batch, self.inputs)

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        length = batch["input_ids"].shape[-1]
        if self.max_tokens is not None and length > self.max_tokens:
            raise EdgesentError(f"{length} tokens exceed the {self.max_tokens} positions of {self.path.name}")
        result = self.request.infer(self.feed(batch))
        return np.array(result[self.output], dtype=np.float32)  # a copy: the request reuses its buffers
