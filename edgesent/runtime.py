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
- Engine: onnxruntime, or OpenVINO (`engine="openvino"`, optional extra `edgesent[openvino]`), both
  behind the same `.logits(batch)` (`open_session`), so preprocessing, bucketing and threads are the
  same. Not told, the classifier uses the manifest's `engine` (export sets openvino only when its
  INT8 IR passed the accuracy gate), falling back to onnxruntime where openvino is not installed or
  when `model` asks for something only onnxruntime serves (fp16, an .onnx file name).
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
from edgesent.errors import ArtifactError, EdgesentError
from edgesent.session import OnnxSession, softmax
from edgesent.textproc import Preprocessor, pooled_logits

CHARS_PER_TOKEN_BUDGET = 50


class Classifier:
    """A sentiment classifier served from an artifact folder with onnxruntime.

    `model` picks the ONNX file: "int8", "fp32", "fp16" or a file name; by default INT8 when the
    artifact has one, else fp32. `threads` sets onnxruntime's intra-op threads (None = one per core; at
    least 1, capped at the usable cores by `machine.check_threads`).
    `providers` defaults to CPU; pass e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"] for GPU.
    `engine` is "onnxruntime" or "openvino" (None: the manifest's default, see the module docstring);
    with OpenVINO, `model` "bf16" runs the fp32 file with OpenVINO's bf16 precision hint.
    """

    def __init__(self, artifact_dir: str | os.PathLike, model: str | None = None, threads: int | None = None,
                 providers: list | None = None, engine: str | None = None):
        start = time.perf_counter()
        from tokenizers import Tokenizer

        self.artifact_dir = Path(artifact_dir)
        self._manifest = art.load_manifest(self.artifact_dir, verify=False)
        self.engine = choose_engine(self._manifest, engine, model)
        self._model_file = art.pick_model_file(self.artifact_dir, self._manifest, model, self.engine)
        if "tokenizer.json" not in self._manifest["files"]:
            raise ArtifactError(f"{self.artifact_dir} has no tokenizer.json; re-export it with `edgesent export`")
        art.verify_files(self.artifact_dir, self._manifest, names=[*art.loaded_files(self._model_file), "tokenizer.json"])

        tokenizer = Tokenizer.from_file(str(self.artifact_dir / "tokenizer.json"))
        try:
            self.preprocessor = Preprocessor.from_manifest(tokenizer, self._manifest["preprocessing"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"{self.artifact_dir}/{art.MANIFEST} has a bad 'preprocessing' block: {exc}") from None
        self._labels = [str(x) for x in self._manifest["labels"]]

        from edgesent.machine import check_threads

        threads = check_threads(threads, "threads")  # < 1 refused, more than the cores capped (with a note)
        self.hint = "bf16" if model == "bf16" else "f32"
        self.session = open_session(self.engine, self.artifact_dir / self._model_file, threads, providers, self.hint)
        width = self.session.classes
        if isinstance(width, int) and width != len(self._labels):
            raise ArtifactError(f"{self.artifact_dir}/{art.MANIFEST} lists {len(self._labels)} labels "
                                f"({', '.join(self._labels)}) but {self._model_file} outputs {width} classes; "
                                "re-export the artifact")
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


def choose_engine(manifest: art.Manifest, engine: str | None, model: str | None) -> str:
    """The engine to run: `engine` when given, else the one `model`'s file belongs to, else the manifest's
    default (onnxruntime when that default is openvino and openvino is not installed here)."""
    if engine is not None:
        if engine not in art.ENGINES:
            raise EdgesentError(f"--engine: unknown engine '{engine}' (choose {', '.join(art.ENGINES)})")
        return engine
    if model is not None and model in manifest.files:
        return manifest.entry(model).engine
    default = manifest.engine
    if default == "openvino":
        from edgesent.openvino_session import available

        if not available() or (model is not None and model not in art.ENGINE_FILES["openvino"]):
            return "onnxruntime"
    return default


def open_session(engine: str, path: Path, threads: int | None = None, providers: list | None = None,
                 hint: str = "f32"):
    """A session with `.logits(batch)` on `path` for `engine` (onnxruntime or openvino)."""
    if engine == "openvino":
        from edgesent.openvino_session import OpenVinoSession

        return OpenVinoSession(path, threads=threads, hint=hint)
    return OnnxSession(path, threads=threads, providers=providers)


def _valid_unicode(text: str) -> str:
    """Replace lone surrogates (e.g. from a JSON "\\ud800" escape), which the Rust tokenizer rejects."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
