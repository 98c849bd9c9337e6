"""Torch-free inference on an exported artifact: `Classifier`.

This module is what runs on the edge device, so it imports only numpy, onnxruntime, tokenizers,
pydantic (the manifest) and the standard library. It must never import torch, transformers or
peft; `tests/test_runtime.py` checks that in a fresh interpreter. Scoring files and the
`edgesent predict` command live in `edgesent.scoring`.

Text goes through `edgesent.textproc.Preprocessor`, built from the manifest's `preprocessing`
block, i.e. the very same truncation/padding code that training and export validation used.

Decisions worth knowing:

- Verification: the manifest's sha256 is checked for the files this process actually loads (the
  served ONNX file and the tokenizer), not for sibling variants it never opens. That keeps a cold
  start cheap when an artifact carries fp32 + INT8 + fp16 files, and still refuses a tampered,
  truncated or git-lfs-pointer model with one line.
- Empty input: a text with no content tokens ("", whitespace, only control characters) is still
  classified -- the model sees only the tokenizer's special tokens (or, for tokenizers that add
  none, such as GPT-NeoX, a single pad/eos token, because a zero-length sequence is not a valid
  input) -- and the result carries `empty: True` so callers can ignore or flag it. It never crashes.
- Very long input: before tokenizing, a text longer than `max_length * CHARS_PER_TOKEN_BUDGET`
  characters is cut to that many characters from the side(s) the truncation strategy keeps (head,
  tail, or both for head+tail). Every tokenizer we ship produces tokens far shorter than that budget,
  so the kept tokens are identical to tokenizing the whole text; a 1 MB review is then as fast as a
  short one instead of taking ~0.5 s of tokenization that truncation throws away.
  With `long_text: windows` the cut keeps `max_windows` windows' worth of characters from each end
  (no cut without a `max_windows` cap), so only texts far beyond any review are affected.
- Batching: texts are sorted by token length and padded per batch (length bucketing), then the
  results are put back in input order, so a mix of short and long texts wastes little compute.
- Long texts with `long_text: windows` (manifest): every window of every text is scored in the same
  length-bucketed batches and each text gets the mean of its windows' logits --
  `textproc.pooled_logits`, the same function the export gate and bench use. A text that fits one
  window costs what truncation costs (same batches, same session calls, same logits).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgesent import artifact as art
from edgesent.errors import ArtifactError
from edgesent.session import OnnxSession, softmax
from edgesent.textproc import Preprocessor, pooled_logits

CHARS_PER_TOKEN_BUDGET = 50


class Classifier:
    """A sentiment classifier served from an artifact folder with onnxruntime.

    `model` picks the ONNX file: "int8", "fp32", "fp16" or a file name; by default INT8 when the
    artifact has one, else fp32. `threads` sets onnxruntime's intra-op threads (None = one per core).
    `providers` defaults to CPU; pass e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"] for GPU.
    """

    def __init__(self, artifact_dir: str | os.PathLike, model: str | None = None, threads: int | None = None,
                 providers: list | None = None):
        start = time.perf_counter()
        from tokenizers import Tokenizer

        self.artifact_dir = Path(artifact_dir)
        self._manifest = art.load_manifest(self.artifact_dir, verify=False)
        self._model_file = art.pick_model_file(self.artifact_dir, self._manifest, model)
        if "tokenizer.json" not in self._manifest["files"]:
            raise ArtifactError(f"{self.artifact_dir} has no tokenizer.json; re-export it with `edgesent export`")
        art.verify_files(self.artifact_dir, self._manifest, names=[self._model_file, "tokenizer.json"])

        tokenizer = Tokenizer.from_file(str(self.artifact_dir / "tokenizer.json"))
        try:
            self.preprocessor = Preprocessor.from_manifest(tokenizer, self._manifest["preprocessing"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"{self.artifact_dir}/{art.MANIFEST} has a bad 'preprocessing' block: {exc}") from None
        self._labels = [str(x) for x in self._manifest["labels"]]

        self.session = OnnxSession(self.artifact_dir / self._model_file, threads=threads, providers=providers)
        self._load_seconds = time.perf_counter() - start

    # ----------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    @property
    def model_file(self) -> str:
        return self._model_file

    @property
    def load_seconds(self) -> float:
        return self._load_seconds

    # ----------------------------------------------------------------------------------------
    def _precut(self, text: str) -> str:
        """Drop characters truncation would discard anyway (see the module docstring)."""
        pre = self.preprocessor
        if pre.long_text == "windows":
            if pre.max_windows is None:
                return text
            budget = pre.window_length * pre.max_windows * CHARS_PER_TOKEN_BUDGET
            return text if len(text) <= 2 * budget else text[:budget] + " " + text[-budget:]
        budget = pre.max_length * CHARS_PER_TOKEN_BUDGET
        if len(text) <= budget:
            return text
        if pre.truncation == "head":
            return text[:budget]
        if pre.truncation == "tail":
            return text[-budget:]
        return text[:budget] + " " + text[-budget:]

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text, truncated (through the shared Preprocessor), and whether each had no content."""
        pre = self.preprocessor
        ids = pre.encode([_valid_unicode(self._precut(t)) for t in texts])
        n_special = len(pre.prefix) + len(pre.suffix)
        empty = [len(row) <= n_special for row in ids]
        ids = [row if row else [pre.pad_token_id] for row in ids]
        return ids, empty

    def encode_windows(self, texts: list[str]) -> tuple[list[list[list[int]]], list[bool]]:
        """What is scored: the windows of token ids per text (one window unless `long_text: windows` and
        the text is longer than a window) and whether each text had no content."""
        pre = self.preprocessor
        windows = pre.encode_windows([_valid_unicode(self._precut(t)) for t in texts])
        n_special = len(pre.prefix) + len(pre.suffix)
        empty = [len(ws) == 1 and len(ws[0]) <= n_special for ws in windows]
        windows = [[row or [pre.pad_token_id] for row in ws] for ws in windows]
        return windows, empty

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        return self.session.logits(self.preprocessor.pad(batch))

    def logits(self, texts: Iterable[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits, shape (len(texts), len(labels)), in input order."""
        logits, _ = self._logits_and_empty(texts, batch_size)
        return logits

    def _logits_and_empty(self, texts: Iterable[str], batch_size: int) -> tuple[np.ndarray, list[bool]]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), len(self._labels)), dtype=np.float32)
        if not texts:
            return out, []
        windows, empty = self.encode_windows(texts)
        return pooled_logits(windows, self._run, batch_size, self.preprocessor.pool), empty

    def predict_proba(self, texts: Iterable[str], batch_size: int = 32) -> np.ndarray:
        return softmax(self.logits(texts, batch_size))

    def predict(self, texts: Iterable[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """One dict per text: label, confidence, probs {label: p}, empty (no content tokens)."""
        logits, empty = self._logits_and_empty(texts, batch_size)
        probs = softmax(logits)
        results = []
        for row, is_empty in zip(probs, empty, strict=True):
            best = int(row.argmax())
            results.append({
                "label": self._labels[best],
                "confidence": float(row[best]),
                "probs": {name: float(p) for name, p in zip(self._labels, row, strict=True)},
                "empty": bool(is_empty),
            })
        return results


def _valid_unicode(text: str) -> str:
    """Replace lone surrogates (e.g. from a JSON "\\ud800" escape), which the Rust tokenizer rejects."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
