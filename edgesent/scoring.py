"""`edgesent predict`: score texts or whole files with an artifact's `Classifier` (torch-free).

Files (.csv, .jsonl, .parquet, .txt) are read and written CHUNK_ROWS rows at a time, so memory
stays flat for any file size; every input column is kept and label, confidence, prob_<label> and
empty are added. Output goes to a temporary name and is renamed into place when complete.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesent.errors import DataError, EdgesentError
from edgesent.runtime import Classifier

FILE_FORMATS = (".csv", ".jsonl", ".parquet", ".txt")
CHUNK_ROWS = 1024




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


def scored_columns(clf: Classifier, cols: dict[str, list], texts: list, batch_size: int = 32
                   ) -> tuple[dict[str, list], list[dict[str, Any]]]:
    """`cols` plus the output columns of every scorer (label, confidence, prob_<label>, empty) for `texts`.

    Shared by `predict_file` and `edgesent.scoring_ray`, so both write the same columns.
    """
    results = clf.predict(texts, batch_size=batch_size)
    cols = dict(cols)
    cols["label"] = [r["label"] for r in results]
    cols["confidence"] = [r["confidence"] for r in results]
    for name in clf.labels:
        cols[f"prob_{name}"] = [r["probs"][name] for r in results]
    cols["empty"] = [r["empty"] for r in results]
    return cols, results


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
                cols, results = scored_columns(clf, cols, texts, batch_size)
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
