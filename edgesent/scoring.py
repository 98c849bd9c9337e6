"""`edgesent predict`: score texts or whole files with an artifact's `Classifier` (torch-free).

Files (.csv, .jsonl, .parquet, .txt) are read and written CHUNK_ROWS rows at a time, so memory
stays flat for any file size; every input column is kept and label, confidence, prob_<label> and
empty are added (with `--prefix`, e.g. pred_label, so gold `label` columns can stay).

No silent data loss:
- an input column named like an added column is refused (never replaced); `--prefix` renames the
  added ones (a prefix rather than a column rename: gold labels keep their name for evaluation);
- an existing `--out` is refused unless `--overwrite` (as `export` does);
- output goes to a temporary name in the target's folder and is moved into place when complete;
  a lock file `.<out>.lock`, created with O_EXCL, makes a second concurrent run to the same `--out`
  fail at once with one line; without `--overwrite` the final move is `os.link` (fails if the
  target appeared meanwhile), so the result is always one run's complete file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesent.errors import DataError, EdgesentError, json_record
from edgesent.runtime import Classifier

FILE_FORMATS = (".csv", ".jsonl", ".parquet", ".txt")
CHUNK_ROWS = 1024
CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default cap is 131,072 characters per field


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

    csv.field_size_limit(CSV_FIELD_LIMIT)
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
    names: list[str] | None = None
    cols: dict[str, list] = {}
    for number, line, size in _decode_lines(path):
        progress.update(size)
        if not line.strip():
            continue
        record = json_record(path, number, line)
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
    """Appends scored chunks to a temporary file; `close(True)` moves it into place (atomic output).

    `open()` takes the lock `.<out>.lock` with O_EXCL (a lock left by a dead process is taken over),
    so two runs to one `--out` never interleave; see the module docstring.
    """

    def __init__(self, out: Path, overwrite: bool = False):
        self.out = out
        self.overwrite = overwrite
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        self.lock = out.with_name(f".{out.name}.lock")
        self.kind = out.suffix.lower()
        self._locked = False
        self._fh = None
        self._csv = None
        self._parquet = None

    def open(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _lock_owner_alive(self.lock):
                    raise DataError(f"--out {self.out} is being written by another edgesent predict (lock "
                                    f"{self.lock}); wait for it or choose another --out") from None
                with contextlib.suppress(FileNotFoundError):
                    self.lock.unlink()  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self._locked = True
            self.tmp.unlink(missing_ok=True)  # a leftover of a killed run with our pid: ours now, under the lock
            break
        else:
            raise DataError(f"cannot lock --out {self.out} ({self.lock}); choose another --out")
        if self.out.exists() and not self.overwrite:
            self.close(ok=False)
            raise DataError(f"--out {self.out} already exists; pass --overwrite to replace it or choose another --out")

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
            fd = os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            self._fh = open(fd, "w", encoding="utf-8", newline="")
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
        try:
            if self._parquet is not None:
                self._parquet.close()
            if self._fh is not None:
                self._fh.close()
            if ok and self.tmp.exists():
                if self.overwrite:
                    os.replace(self.tmp, self.out)
                else:
                    try:
                        os.link(self.tmp, self.out)  # atomic and never replaces a file that appeared meanwhile
                    except FileExistsError:
                        raise DataError(f"--out {self.out} appeared while scoring; pass --overwrite to replace it "
                                        "or choose another --out") from None
                    except OSError:  # a file system without hard links: the lock still guards the move
                        if self.out.exists():
                            raise DataError(f"--out {self.out} appeared while scoring; pass --overwrite") from None
                        os.replace(self.tmp, self.out)
        finally:
            self.tmp.unlink(missing_ok=True)
            if self._locked:
                self.lock.unlink(missing_ok=True)
                self._locked = False


def _lock_owner_alive(lock: Path) -> bool:
    """Whether the process whose pid is in `lock` still runs (an unreadable or fresh lock counts as alive)."""
    try:
        text = lock.read_text().strip()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not text.isdigit():
        with contextlib.suppress(OSError):
            return time.time() - lock.stat().st_mtime < 5  # being written this instant
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def output_columns(labels: list[str], prefix: str = "") -> list[str]:
    """The columns `predict --file` adds, in order."""
    return [f"{prefix}{name}" for name in ("label", "confidence", *(f"prob_{x}" for x in labels), "empty")]


def check_columns(file: Path, names, added: list[str], prefix: str) -> None:
    """Refuse an input column named like one predict adds (it is never replaced)."""
    clash = [name for name in names if name in added]
    if clash:
        hint = "another --prefix" if prefix else "--prefix pred_ (adds pred_label, pred_confidence, ...)"
        raise DataError(f"{file} has a column '{clash[0]}', which predict would add; it is never replaced: "
                        f"rename the column or pass {hint}")


def scored_columns(clf: Classifier, cols: dict[str, list], texts: list, batch_size: int = 32, prefix: str = ""
                   ) -> tuple[dict[str, list], list[dict[str, Any]]]:
    """`cols` plus the output columns (`output_columns`: label, confidence, prob_<label>, empty) for `texts`.

    Shared by `predict_file` and `edgesent.scoring_ray`, so both write the same columns.
    """
    results = clf.predict(texts, batch_size=batch_size)
    values = [[r["label"] for r in results], [r["confidence"] for r in results],
              *([r["probs"][label] for r in results] for label in clf.labels), [r["empty"] for r in results]]
    cols = dict(cols)
    cols.update(zip(output_columns(clf.labels, prefix), values, strict=True))
    return cols, results


def default_out(file: Path) -> Path:
    suffix = ".csv" if file.suffix.lower() == ".txt" else file.suffix.lower()
    return file.with_name(f"{file.stem}.predictions{suffix}")


def predict_file(clf: Classifier, file: str | os.PathLike, out: str | os.PathLike | None = None, column: str = "text",
                 batch_size: int = 32, overwrite: bool = False, prefix: str = "",
                 name: str | None = None) -> tuple[Path, int, dict[str, int]]:
    """Score every row of `file` and write its columns + label, confidence, prob_<label>, empty to `out`.

    Returns (out path, rows, label counts). Reads and writes CHUNK_ROWS rows at a time. Added
    columns get `prefix`; an input column of the same name is refused, an existing `out` too unless
    `overwrite`. `name` is how errors call the input file (the demo hides its temporary path).
    """
    from tqdm import tqdm

    file = Path(file)
    shown = name or str(file)
    if not file.is_file():
        raise DataError(f"input file not found: {shown}")
    kind = file.suffix.lower()
    if kind not in FILE_FORMATS:
        raise DataError(f"cannot read {shown}: use one of {', '.join(FILE_FORMATS)}")
    out = Path(out) if out else default_out(file)
    if out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise DataError(f"cannot write {out}: --out must end in .csv, .jsonl or .parquet")
    if out.resolve() == file.resolve():
        raise DataError(f"--out {out} would overwrite the input file")
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name ending in .csv, .jsonl or .parquet")
    if out.exists() and not overwrite:
        raise DataError(f"--out {out} already exists; pass --overwrite to replace it or choose another --out")
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
    added = output_columns(clf.labels, prefix)
    counts = {label: 0 for label in clf.labels}
    rows = 0
    writer = _Writer(out, overwrite=overwrite)
    writer.open()
    ok = False
    try:
        with tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=f"scoring {file.name}", disable=None,
                  file=sys.stderr) as progress:
            for cols, texts in reader(file, column, progress):
                check_columns(Path(shown), cols, added, prefix)
                cols, results = scored_columns(clf, cols, texts, batch_size, prefix)
                writer.write(cols)
                rows += len(results)
                for r in results:
                    counts[r["label"]] += 1
        if rows == 0:
            raise DataError(f"{shown} holds no rows to score")
        ok = True
    finally:
        writer.close(ok)
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
                threads: int | None = None, batch_size: int = 32, engine: str | None = None, overwrite: bool = False,
                prefix: str = "") -> None:
    """`edgesent predict`: print a table for TEXTS, or score --file into --out (`engine`: see Classifier)."""
    from edgesent.errors import ArtifactError
    from edgesent.machine import check_threads

    if not os.path.exists(artifact):  # first: `predict "some text"` means the artifact was forgotten
        raise ArtifactError(f"artifact folder not found: '{artifact}' (usage: edgesent predict ARTIFACT TEXT... "
                            "or edgesent predict ARTIFACT --file PATH)")
    if texts and file:
        raise EdgesentError("give texts or --file, not both")
    if not texts and not file:
        raise EdgesentError("nothing to classify: give one or more texts, or --file PATH")
    if out and not file:
        raise EdgesentError("--out needs --file (texts given on the command line are printed)")
    if batch_size < 1:
        raise EdgesentError(f"--batch-size must be at least 1, got {batch_size}")
    threads = check_threads(threads, "--threads")
    if file is not None and not Path(file).is_file():
        raise DataError(f"input file not found: {file}")
    if file is not None and out is not None and Path(out).exists() and not overwrite:
        raise DataError(f"--out {out} already exists; pass --overwrite to replace it or choose another --out")
    clf = Classifier(artifact, model=model, threads=threads, engine=engine)
    if texts:
        print(format_table(texts, clf.predict(texts, batch_size=batch_size), clf.labels))
        return
    start = time.perf_counter()
    path, rows, counts = predict_file(clf, file, out, column=column, batch_size=batch_size, overwrite=overwrite,
                                      prefix=prefix)
    seconds = time.perf_counter() - start
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    print(f"scored {rows} rows with {clf.model_file} in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} rows/s): "
          f"{summary} -> {path}")
