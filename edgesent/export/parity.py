"""Run the model both ways -- PyTorch and ONNX Runtime -- on the same batches and measure how far apart they are.

The probe texts have very different lengths (one long enough to be truncated) and are padded both
right and left, so padding, masking and truncation are all exercised; they are tokenized by the
same `textproc.Preprocessor` the runtime uses. ONNX Runtime runs through `edgesent.session`, with
the same thread budget as torch.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from edgesent.errors import GateError
from edgesent.session import OnnxSession, softmax

VALIDATE_ATOL = 1e-4  # ONNX Runtime against PyTorch, fp32 logits

PROBE_TEXTS = [
    "great",
    "The film was dull and far too long; I nearly left halfway through.",
    "An absolutely wonderful, moving story with a brilliant cast.",
    " ".join(["the plot was really quite boring but the music was superb and the ending felt moving"] * 40),
    "worst",
    "It was fine?",
]


def probe_batches(preprocessor, texts: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """The probe texts tokenized by the runtime's preprocessor, right- and left-padded."""
    ids = preprocessor.encode(texts or PROBE_TEXTS)
    return [dataclasses.replace(preprocessor, padding_side=side).pad(ids) for side in ("right", "left")]


def torch_logits(torch_model, feed: dict[str, np.ndarray]) -> np.ndarray:
    """PyTorch logits for input_ids + attention_mask (token_type_ids default to zeros, as in the graph feed)."""
    import torch

    with torch.no_grad():
        out = torch_model(**{k: torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask")})
    return out.logits.float().numpy()


def onnx_session(path: str | os.PathLike) -> OnnxSession:
    """A CPU session on `path` using the same thread budget as torch."""
    import torch

    return OnnxSession(path, threads=max(1, torch.get_num_threads()))


def probe_diffs(torch_model, sess: OnnxSession, preprocessor) -> tuple[float, float]:
    """(max abs logit difference, max abs probability difference) of ORT against PyTorch on the probe batches."""
    logit_diff = prob_diff = 0.0
    for feed in probe_batches(preprocessor):
        ref, got = torch_logits(torch_model, feed), sess.logits(feed)
        logit_diff = max(logit_diff, float(np.abs(ref - got).max()))
        prob_diff = max(prob_diff, float(np.abs(softmax(ref) - softmax(got)).max()))
    return logit_diff, prob_diff


def max_abs_diff(torch_model, onnx_path: Path, preprocessor) -> float:
    """Largest absolute logit difference between the ONNX file and PyTorch on the probe batches."""
    return probe_diffs(torch_model, onnx_session(onnx_path), preprocessor)[0]


def validate_onnx(torch_model, onnx_path: Path, preprocessor, atol: float = VALIDATE_ATOL) -> float:
    """`max_abs_diff`, refusing the export (GateError) when it exceeds `atol`."""
    diff = max_abs_diff(torch_model, onnx_path, preprocessor)
    if not diff <= atol:
        raise GateError(f"ONNX and PyTorch logits differ by {diff:.2e} (> {atol:g}) on the probe batch; export refused")
    return diff


def onnx_predictions(onnx_path: Path, preprocessor, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Predicted label ids, scored the way the runtime scores them (`textproc.pooled_logits`: length
    buckets, and with `long_text: windows` the mean over each text's windows)."""
    from edgesent.textproc import pooled_logits

    sess = onnx_session(onnx_path)
    windows = preprocessor.encode_windows(texts)
    logits = pooled_logits(windows, lambda ids: sess.logits(preprocessor.pad(ids)), batch_size, preprocessor.pool)
    return logits.argmax(-1).astype(np.int64)
