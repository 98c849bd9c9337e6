"""Reading one labelled-text file into a DataFrame: .csv/.tsv/.jsonl/.json/.parquet/.txt.

Files are decoded as UTF-8 here, not by pandas, so the first bad line can be named. CSV quoting
is checked with the `csv` module in strict mode first: pandas silently glues an unclosed quote
onto the following lines instead of failing. Only the label column uses pandas' "NA" spellings:
a review that reads "None" stays a text. Every failure is one `DataError` line naming the file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from edgesent.errors import DataError, first_line, json_record

SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)
# pandas' default NA spellings, applied to the label column only.
LABEL_NA = ["", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "#N/A", "<NA>", "-NaN", "-nan"]




def read_table(path: str | Path, text_column: str, label_column: str | None = None) -> pd.DataFrame:
    """The text (and label) columns of a .csv/.tsv/.jsonl/.json/.parquet/.txt file, as read.

    `.txt` holds one text per line and no labels. Raises DataError with one line for a missing or
    empty file, malformed CSV/JSON lines, non-UTF-8 bytes and missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES + TEXT_SUFFIXES:
        raise DataError(f"{path}: unsupported data file type (use .parquet, .csv, .tsv, .jsonl or .txt)")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    if suffix == ".parquet":
        df = _read_parquet(path)
    else:
        text = _decode(path)
        if suffix == ".txt":
            if label_column is not None:
                raise DataError(f"{path}: a .txt file holds texts only (one per line), no '{label_column}' column")
            df = pd.DataFrame({text_column: text.splitlines()})
        elif suffix in (".csv", ".tsv"):
            df = _read_csv(path, text, "\t" if suffix == ".tsv" else ",", text_column, label_column)
        else:
            df = _read_json(path, text)
    columns = [text_column] + ([label_column] if label_column is not None else [])
    for column in columns:
        if column not in df.columns:
            available = ", ".join(f"'{c}'" for c in df.columns) or "none"
            raise DataError(f"{path}: no column '{column}' (columns: {available}); set data.text_column/label_column")
    if len(df) == 0:
        raise DataError(f"{path} holds no rows")
    return df[columns].reset_index(drop=True)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path} is not a readable parquet file ({type(exc).__name__}: {first_line(exc)})") from None


def _decode(path: Path) -> str:
    """The file as text; the first line that is not UTF-8 is named."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8") from None


def _read_csv(path: Path, text: str, sep: str, text_column: str, label_column: str | None) -> pd.DataFrame:
    # pandas accepts an unclosed quote by swallowing the following lines; the csv module does not.
    reader = csv.reader(io.StringIO(text), delimiter=sep, strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV in the row starting at line {start} ({exc})") from None
    na_values = {label_column: LABEL_NA} if label_column else None
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, na_values=na_values,
                           dtype={text_column: str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} holds no rows") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV: {first_line(exc).replace('Error tokenizing data. C error: ', '')}") from None


def _read_json(path: Path, text: str) -> pd.DataFrame:
    """JSON lines (one object per line); a .json file may also be one array of objects."""
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            return pd.DataFrame(json.loads(stripped))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a valid JSON array of records ({exc})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(json_record(path, number, line))
    if not records:
        raise DataError(f"{path} holds no rows")
    return pd.DataFrame.from_records(records)
