"""Torch-free inference on an exported artifact: `Classifier` and `edgesent predict`.

This module is what runs on the edge device, so it imports only numpy, onnxruntime, tokenizers and
the standard library (plus tqdm and pyarrow, lazily, when scoring a file). It must never import
torch, transformers or peft; `tests/test_runtime.py` checks that in a fresh interpreter.

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
- Batching: texts are sorted by token length and padded per batch (length bucketing), then the
  results are put back in input order, so a mix of short and long texts wastes little compute.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgesent import artifact as art
from edgesent.errors import ArtifactError, DataError, EdgesentError
from edgesent.session import OnnxSession, softmax
from edgesent.textproc import Preprocessor, length_buckets

CHARS_PER_TOKEN_BUDGET = 50
FILE_FORMATS = (".csv", ".jsonl", ".parquet", ".txt")
CHUNK_ROWS = 1024


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
        budget = pre.max_length * CHARS_PER_TOKEN_BUDGET
        if len(text) <= budget:
            return text
        if pre.truncation == "head":
            return text[:budget]
        if pre.truncation == "tail":
            return text[-budget:]
        return text[:budget] + " " + text[-budget:]

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (through the shared Preprocessor) and whether each had no content."""
        pre = self.preprocessor
        ids = pre.encode([_valid_unicode(self._precut(t)) for t in texts])
        n_special = len(pre.prefix) + len(pre.suffix)
        empty = [len(row) <= n_special for row in ids]
        ids = [row if row else [pre.pad_token_id] for row in ids]
        return ids, empty

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
        ids, empty = self.encode(texts)
        for bucket in length_buckets([len(x) for x in ids], max(1, int(batch_size))):
            out[bucket] = self._run([ids[i] for i in bucket])
        return out, empty

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


# --------------------------------------------------------------------------------------------
# Reading and writing files, streamed in chunks so memory stays flat for any file size.


def _decode_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, decoded line, bytes consumed) for each line; non-UTF-8 bytes name the line."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path} line {number} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                f"column {exc.start + 1}); re-save the file as UTF-8") from None
            yield number, line, len(raw)


def _missing_column(path: Path, column: str, available: list[str]) -> DataError:
    return DataError(f"{path} has no column '{column}' (columns: {', '.join(map(str, available)) or 'none'}); "
                     "pass --column NAME")


def _chunks_txt(path: Path, column: str, progress) -> Iterator[tuple[dict[str, list], list[str]]]:
    """One text per line; blank lines are kept (flagged empty) so output rows align with input lines."""
    rows: list[str] = []
    for _, line, size in _decode_lines(path):
        rows.append(line.rstrip("\r\n"))
        progress.update(size)
        if len(rows) >= CHUNK_ROWS:
            yield {"text": rows}, rows
            rows = []
    if rows:
        yield {"text": rows}, rows


def _chunks_csv(path: Path, column: str, progress) -> Iterator[tuple[dict[str, list], list[str]]]:
    import csv

    sizes: list[int] = []

    def lines():
        for _, line, size in _decode_lines(path):
            sizes.append(size)
            yield line

    reader = csv.reader(lines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path} is empty (no header row)")
    if column not in header:
        raise _missing_column(path, column, header)
    cols: dict[str, list] = {name: [] for name in header}
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path} line {reader.line_num} has {len(row)} fields, the header has {len(header)}")
        for name, value in zip(header, row, strict=True):
            cols[name].append(value)
        progress.update(sum(sizes))
        sizes.clear()
        if len(cols[column]) >= CHUNK_ROWS:
            yield cols, cols[column]
            cols = {name: [] for name in header}
    if cols[column]:
        yield cols, cols[column]


def _chunks_jsonl(path: Path, column: str, progress) -> Iterator[tuple[dict[str, list], list[str]]]:
    import json

    names: list[str] | None = None
    cols: dict[str, list] = {}
    for number, line, size in _decode_lines(path):
        progress.update(size)
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object")
        if column not in record:
            raise _missing_column(path, column, list(record)) if names is None else DataError(
                f"{path} line {number} has no '{column}' field")
        if names is None:
            names = list(record)
        if not cols:
            cols = {name: [] for name in names}
        for name in record:
            if name not in cols:  # a field the first rows lacked: pad it with None
                names.append(name)
                cols[name] = [None] * len(cols[column])
        for name in names:
            cols[name].append(record.get(name))
        if len(cols[column]) >= CHUNK_ROWS:
            yield cols, cols[column]
            cols = {}
    if cols and cols[column]:
        yield cols, cols[column]


def _chunks_parquet(path: Path, column: str, progress) -> Iterator[tuple[dict[str, list], list[str]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"{path} is not a readable parquet file: {str(exc).splitlines()[0]}") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise _missing_column(path, column, names)
    for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
        cols = batch.to_pydict()
        progress.update(batch.num_rows)
        yield cols, cols[column]


class _Writer:
    """Appends scored chunks to a temporary file; `close()` renames it into place (atomic output)."""

    def __init__(self, out: Path):
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        self.kind = out.suffix.lower()
        self._fh = None
        self._csv = None
        self._parquet = None

    def write(self, cols: dict[str, list]) -> None:
        if self.kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._parquet is None:
                table = pa.Table.from_pydict(cols)
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            else:
                table = pa.Table.from_pydict(cols, schema=self._parquet.schema)
            self._parquet.write_table(table)
            return
        if self._fh is None:
            self._fh = open(self.tmp, "w", encoding="utf-8", newline="")
        rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
        if self.kind == ".csv":
            import csv

            if self._csv is None:
                self._csv = csv.DictWriter(self._fh, fieldnames=list(cols), extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerows(rows)
        else:
            import json

            for row in rows:
                self._fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def close(self, ok: bool) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._fh is not None:
            self._fh.close()
        if ok and self.tmp.exists():
            os.replace(self.tmp, self.out)
        elif self.tmp.exists():
            self.tmp.unlink()


def default_out(file: Path) -> Path:
    suffix = ".csv" if file.suffix.lower() == ".txt" else file.suffix.lower()
    return file.with_name(f"{file.stem}.predictions{suffix}")


def predict_file(clf: Classifier, file: str | os.PathLike, out: str | os.PathLike | None = None, column: str = "text",
                 batch_size: int = 32) -> tuple[Path, int, dict[str, int]]:
    """Score every row of `file` and write its columns + label, confidence, prob_<label>, empty to `out`.

    Returns (out path, rows, label counts). Reads and writes CHUNK_ROWS rows at a time.
    """
    from tqdm import tqdm

    file = Path(file)
    if not file.is_file():
        raise DataError(f"input file not found: {file}")
    kind = file.suffix.lower()
    if kind not in FILE_FORMATS:
        raise DataError(f"cannot read {file}: use one of {', '.join(FILE_FORMATS)}")
    out = Path(out) if out else default_out(file)
    if out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise DataError(f"cannot write {out}: --out must end in .csv, .jsonl or .parquet")
    if out.resolve() == file.resolve():
        raise DataError(f"--out {out} would overwrite the input file")
    from edgesent.errors import check_writable

    check_writable(out.parent if str(out.parent) else Path("."))

    reader = {".txt": _chunks_txt, ".csv": _chunks_csv, ".jsonl": _chunks_jsonl, ".parquet": _chunks_parquet}[kind]
    if kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            total, unit = pq.ParquetFile(file).metadata.num_rows, "rows"
        except Exception:
            total, unit = None, "rows"
    else:
        total, unit = file.stat().st_size, "B"
    counts = {name: 0 for name in clf.labels}
    rows = 0
    writer = _Writer(out)
    ok = False
    try:
        with tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=f"scoring {file.name}", disable=None,
                  file=sys.stderr) as progress:
            for cols, texts in reader(file, column, progress):
                results = clf.predict(texts, batch_size=batch_size)
                cols = dict(cols)
                cols["label"] = [r["label"] for r in results]
                cols["confidence"] = [r["confidence"] for r in results]
                for name in clf.labels:
                    cols[f"prob_{name}"] = [r["probs"][name] for r in results]
                cols["empty"] = [r["empty"] for r in results]
                writer.write(cols)
                rows += len(results)
                for r in results:
                    counts[r["label"]] += 1
        ok = True
    finally:
        writer.close(ok)
    if rows == 0:
        raise DataError(f"{file} holds no rows to score")
    return out, rows, counts


# --------------------------------------------------------------------------------------------
def format_table(texts: list[str], results: list[dict[str, Any]], labels: list[str], width: int = 48) -> str:
    """A plain-text table (no rich import: it would cost cold-start time)."""
    def clip(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    head = ["text", "label", "confidence"] + [f"p({name})" for name in labels]
    body = []
    for text, r in zip(texts, results, strict=True):
        label = r["label"] + (" (empty)" if r["empty"] else "")
        body.append([clip(text), label, f"{r['confidence']:.3f}"] + [f"{r['probs'][n]:.3f}" for n in labels])
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def predict_cli(artifact: str | os.PathLike, texts: list[str], file: str | os.PathLike | None = None,
                column: str = "text", out: str | os.PathLike | None = None, model: str | None = None,
                threads: int | None = None, batch_size: int = 32) -> None:
    """`edgesent predict`: print a table for TEXTS, or score --file into --out."""
    if texts and file:
        raise EdgesentError("give texts or --file, not both")
    if not texts and not file:
        raise EdgesentError("nothing to classify: give one or more texts, or --file PATH")
    if out and not file:
        raise EdgesentError("--out needs --file (texts given on the command line are printed)")
    if batch_size < 1:
        raise EdgesentError(f"--batch-size must be at least 1, got {batch_size}")
    if file is not None and not Path(file).is_file():
        raise DataError(f"input file not found: {file}")
    clf = Classifier(artifact, model=model, threads=threads)
    if texts:
        print(format_table(texts, clf.predict(texts, batch_size=batch_size), clf.labels))
        return
    start = time.perf_counter()
    path, rows, counts = predict_file(clf, file, out, column=column, batch_size=batch_size)
    seconds = time.perf_counter() - start
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    print(f"scored {rows} rows with {clf.model_file} in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} rows/s): "
          f"{summary} -> {path}")
