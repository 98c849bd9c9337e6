"""The one ONNX Runtime session layer: build a session, feed it a batch, turn logits into probabilities.

Torch-free (numpy + onnxruntime), so the edge runtime, export's parity checks, the bench runners
and the bench scripts all run a graph the same way -- fastembed's one-session-builder idea:

    sess = OnnxSession("artifact/model.int8.onnx", threads=2)
    logits = sess.logits(preprocessor.pad(ids))     # float32 (batch, labels)

- `make_session` sets intra-op threads (None: onnxruntime's default, one per core), one inter-op
  thread, sequential execution, all graph optimizations, quiet logging; a file onnxruntime cannot
  load is one `ArtifactError` line.
- `OnnxSession.feed` restricts a batch to the graph's inputs, adds all-zero `token_type_ids` when
  the graph takes them, and casts to the declared integer type (int32 or int64).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgesent.errors import ArtifactError, first_line

FEEDABLE = ("input_ids", "attention_mask", "token_type_ids")


def make_session(path: str | os.PathLike, threads: int | None = None, providers: list | None = None):
    """An onnxruntime InferenceSession on `path` with edgesent's options (see the module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ArtifactError(f"onnxruntime cannot load {path}: {first_line(exc)}") from None


class OnnxSession:
    """A session plus its input signature: `logits(batch)` for a padded batch of token ids."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers: list | None = None):
        self.path = Path(path)
        self.ort = make_session(path, threads, providers)
        self.inputs = check_inputs(self.path, {i.name: (np.int32 if i.type == "tensor(int32)" else np.int64)
                                               for i in self.ort.get_inputs()})
        self.output = self.ort.get_outputs()[0].name
        width = self.ort.get_outputs()[0].shape[-1]
        self.classes = width if isinstance(width, int) else None  # output width when the graph fixes it

    def feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return feed_for(batch, self.inputs)

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.ort.run([self.output], self.feed(batch))[0], dtype=np.float32)


def check_inputs(path: Path, inputs: dict[str, type]) -> dict[str, type]:
    """A graph's inputs (name -> integer dtype), refused in one line unless edgesent can feed them."""
    unknown = set(inputs) - set(FEEDABLE)
    if unknown or "input_ids" not in inputs:
        raise ArtifactError(f"{path.name} declares inputs {sorted(inputs)}; edgesent feeds {', '.join(FEEDABLE)} only")
    return inputs


def feed_for(batch: dict[str, np.ndarray], inputs: dict[str, type]) -> dict[str, np.ndarray]:
    """`batch` restricted to `inputs` (name -> integer dtype), with zero token_type_ids when required."""
    batch = dict(batch)
    if "token_type_ids" in inputs and "token_type_ids" not in batch:
        batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    return {name: batch[name].astype(dtype, copy=False) for name, dtype in inputs.items()}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
