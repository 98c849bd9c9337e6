"""Data: read labelled texts, check them, split them, and feed them to the Trainer.

Sources (`recipe.data.dataset`):
- a local folder with `train`, `validation` (or `valid`/`val`/`dev`) and `test` files, each
  `.parquet`, `.csv`, `.tsv` or `.jsonl`/`.json` (only these exact stems: `train_meta.parquet` is
  not the train split);
- one local file: it is the train split, and validation and test are carved out of it;
- a hub id, read with `datasets.load_dataset` (offline machines get a one-line error saying how to
  point the recipe at a local folder).
`data.train_file` / `validation_file` / `test_file` override the dataset's splits one by one.

Decisions:
- Every failure is a `DataError` with one line that names the split or file, the row count and an
  example (bad label and its 1-based data row, malformed CSV line, first non-UTF-8 line).
- Files are decoded as UTF-8 here, not by pandas, so the first bad line can be named. CSV quoting
  is checked with the `csv` module in strict mode first: pandas silently glues an unclosed quote
  onto the following lines instead of failing.
- Only the label column uses pandas' "NA" spellings: a review that reads "None" stays a text.
- Labels are ints in `range(len(labels))` or the label names themselves (stripped, case-sensitive).
- Empty or whitespace-only texts are dropped (with a logged count), never silently classified.
- Missing validation/test splits are carved out of train with `sklearn.model_selection.
  train_test_split`, stratified by label and seeded with `recipe.seed`, so runs are repeatable.
- Lowercasing and truncation are NOT done here: they belong to `textproc.Preprocessor`, the one
  text->ids function shared by training, export validation and the runtime.
- Training tensors: texts are tokenized once (`Preprocessor.encode`) and padded per batch to the
  longest member (`Preprocessor.pad`), never to max_length.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgesent.errors import DataError, hub_error
from edgesent.tables import LABEL_NA, SUFFIXES, TEXT_SUFFIXES, read_table  # noqa: F401 - re-exported

logger = logging.getLogger("edgesent")

SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
@dataclass
class Split:
    """Texts and integer label ids of one split (`origin` names where they came from, for messages)."""

    texts: list[str]
    labels: list[int]
    origin: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices) -> Split:
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.origin)


# --------------------------------------------------------------------------------------------
# Labels and texts


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def encode_labels(values: list[Any], labels: list[str] | tuple[str, ...], where: str) -> list[int]:
    """Label ids of `values` (ints in range, integral floats, or names from `labels`)."""
    names = [str(n) for n in labels]
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise DataError(
            f"data: {_plural(len(missing), 'row')} of {where} {'has' if len(missing) == 1 else 'have'} no label (NaN) "
            f"(e.g. row {missing[0] + 1})"
        )
    ids, bad = [], []
    for i, value in enumerate(values):
        label = _label_id(value, names)
        if label is None:
            bad.append(i)
        ids.append(label)
    if bad:
        example = values[bad[0]]
        if isinstance(example, float) and example.is_integer():
            example = int(example)
        raise DataError(
            f"data: {_plural(len(bad), 'row')} of {where} {'has' if len(bad) == 1 else 'have'} labels outside {names} "
            f"(e.g. {example!r} at row {bad[0] + 1}); labels must be ids 0..{len(names) - 1} or these names (data.labels)"
        )
    return ids


def _label_id(value: Any, names: list[str]) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 0 <= value < len(names) else None
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() and 0 <= value < len(names) else None
    if isinstance(value, str):
        text = value.strip()
        if text in names:
            return names.index(text)
        if text.isdigit() and int(text) < len(names):  # ids stored as text ("0", "1")
            return int(text)
    return None


def frame_to_split(df: pd.DataFrame, text_column: str, label_column: str, labels, where: str) -> Split:
    """Checked Split of a frame: labels mapped to ids, empty texts dropped (logged)."""
    label_ids = encode_labels(df[label_column].tolist(), labels, where)
    texts = ["" if t is None or (isinstance(t, float) and math.isnan(t)) else str(t) for t in df[text_column].tolist()]
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise DataError(f"data: all {len(texts)} texts of {where} are empty")
    if len(keep) < len(texts):
        logger.warning("%s: dropped %s", where, _plural(len(texts) - len(keep), "empty text"))
    return Split([texts[i] for i in keep], [label_ids[i] for i in keep], where)


# --------------------------------------------------------------------------------------------
# Sources: folder, file, hub


def _split_file(folder: Path, split: str) -> Path | None:
    for stem in SPLIT_NAMES[split]:
        for suffix in SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in SUFFIXES + TEXT_SUFFIXES


def advice_for(exc: DataError, option: str, columns: str = "text/label") -> DataError:
    """The same error with advice for a command option (bench --data, export --eval-data) instead of recipe keys."""
    message = (str(exc).replace("set data.text_column/label_column", f"rename the columns of {option} to {columns}")
               .replace("point data.dataset at a local folder (e.g. --set data.dataset=/path/with/train.parquet)",
                        f"pass a local folder or file as {option}")
               .replace("; set data.train_file", ""))
    return type(exc)(message)


def _hub_error(source: str, exc: BaseException) -> DataError:
    return hub_error(source, exc, "point data.dataset at a local folder (e.g. --set data.dataset=/path/with/train.parquet)",
                     DataError)


def _load_hub(source: str, split: str | None = None):
    """`datasets.load_dataset(source)`: a DatasetDict (or one Dataset for `split`)."""
    import datasets

    try:
        return datasets.load_dataset(source, split=split)
    except ValueError as exc:
        if split is not None and "split" in str(exc).lower():
            raise DataError(f"'{source}' has no '{split}' split") from None
        raise _hub_error(source, exc) from None
    except Exception as exc:  # offline: ConnectionError, DatasetNotFoundError, OSError, ...
        raise _hub_error(source, exc) from None


def _hub_frames(source: str, text_column: str, label_column: str) -> dict[str, tuple[pd.DataFrame, str]]:
    dd = _load_hub(source)
    frames = {}
    for split, aliases in SPLIT_NAMES.items():
        for alias in aliases:
            if alias in dd:
                df = dd[alias].to_pandas()
                for column in (text_column, label_column):
                    if column not in df.columns:
                        raise DataError(f"'{source}' [{alias}]: no column '{column}' (columns: {', '.join(df.columns)})")
                frames[split] = (df[[text_column, label_column]], f"{split} ({source} [{alias}])")
                break
    if "train" not in frames:
        raise DataError(f"'{source}' has no train split (splits: {', '.join(dd)}); set data.train_file")
    return frames


def _raw_frames(cfg) -> dict[str, tuple[pd.DataFrame, str]]:
    """split -> (frame, description) for the splits the data config names.

    With `data.train_file` set, `data.dataset` only contributes the other splits, and only when it is
    a local folder: the default hub id is then never contacted.
    """
    source = cfg.dataset
    path = Path(source).expanduser()
    explicit = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
    frames: dict[str, tuple[pd.DataFrame, str]] = {}
    if path.is_dir():
        for split in SPLIT_NAMES:
            file = _split_file(path, split)
            if file is not None and not explicit[split]:
                frames[split] = (read_table(file, cfg.text_column, cfg.label_column), f"{split} ({file})")
        if "train" not in frames and not explicit["train"]:
            raise DataError(f"{path} holds no train file (train.parquet, train.csv or train.jsonl)")
    elif explicit["train"]:
        pass
    elif path.is_file():
        frames["train"] = (read_table(path, cfg.text_column, cfg.label_column), f"train ({path})")
    elif looks_like_path(source):
        raise DataError(f"data not found: {source} (data.dataset is neither a folder, a file nor a hub id)")
    else:
        frames.update({k: v for k, v in _hub_frames(source, cfg.text_column, cfg.label_column).items() if not explicit[k]})
    for split, file in explicit.items():
        if file:
            file = Path(file).expanduser()
            frames[split] = (read_table(file, cfg.text_column, cfg.label_column), f"{split} ({file})")
    return frames


# --------------------------------------------------------------------------------------------
# Splitting


def _can_stratify(labels: list[int], n_carve: int, n_rest: int) -> bool:
    counts = Counter(labels)
    return min(counts.values()) >= 2 and n_carve >= len(counts) and n_rest >= len(counts)


def carve(split: Split, size: int, seed: int) -> tuple[Split, Split]:
    """(rest, carved): `size` rows taken out of `split`, stratified by label when possible, seeded."""
    from sklearn.model_selection import train_test_split

    n = len(split)
    if size <= 0 or size >= n:
        raise DataError(f"data: cannot carve {size} rows out of {split.origin or 'a split'} with {n} rows")
    stratify = split.labels if _can_stratify(split.labels, size, n - size) else None
    rest, carved = train_test_split(np.arange(n), test_size=size, random_state=seed, stratify=stratify)
    return split.take(sorted(rest)), split.take(sorted(carved))


def subset(split: Split, n: int | None, seed: int) -> Split:
    """A seeded, stratified subset of at most `n` rows (kept in file order)."""
    if n is None or len(split) <= n:
        return split
    kept, _ = carve(split, len(split) - n, seed)
    return kept


def _carve_fraction(split: Split, fraction: float) -> int:
    return max(1, round(len(split) * fraction))


def load_splits(recipe) -> dict[str, Split]:
    """"train", "validation" and "test" Splits per `recipe.data`, checked, carved and subsetted."""
    cfg, seed = recipe.data, recipe.seed
    splits = {
        name: frame_to_split(df, cfg.text_column, cfg.label_column, cfg.labels, where)
        for name, (df, where) in _raw_frames(cfg).items()
    }
    if "train" not in splits:
        raise DataError("data: no train split (set data.dataset or data.train_file)")

    if cfg.resplit:
        pooled = Split([], [], "all rows")
        for split in splits.values():
            pooled.texts += split.texts
            pooled.labels += split.labels
        r_train, r_val, r_test = cfg.resplit
        if min(r_train, r_val, r_test) <= 0:
            raise DataError(f"data.resplit {cfg.resplit}: every ratio must be above 0")
        rest, test = carve(pooled, _carve_fraction(pooled, r_test), seed)
        train, validation = carve(rest, _carve_fraction(pooled, r_val), seed)
        splits = {"train": train, "validation": validation, "test": test}
    else:
        train = splits["train"]
        n_carve = _carve_fraction(train, cfg.validation_size)
        if "test" not in splits:
            train, splits["test"] = carve(train, n_carve, seed)
            logger.info("no test split: carved %d rows out of train", len(splits["test"]))
        if "validation" not in splits:
            train, splits["validation"] = carve(train, n_carve, seed)
            logger.info("no validation split: carved %d rows out of train", len(splits["validation"]))
        splits["train"] = train
    for name, split in splits.items():
        split.origin = split.origin if split.origin.startswith(name) else f"{name} ({split.origin})"

    splits["train"] = subset(splits["train"], cfg.max_train_samples, seed)
    splits["validation"] = subset(splits["validation"], cfg.max_eval_samples, seed)
    splits["test"] = subset(splits["test"], cfg.max_test_samples, seed)

    classes = Counter(splits["train"].labels)
    if len(classes) < 2:
        (only, count), = classes.items()
        raise DataError(
            f"data: {splits['train'].origin} has only one class ('{cfg.labels[only]}', {count} rows); "
            "a classifier needs at least two"
        )
    return {name: splits[name] for name in ("train", "validation", "test")}


def load_split(source: str, split: str = "test", *, text_column: str = "text", label_column: str = "label",
               labels=("negative", "positive"), limit: int | None = None, seed: int = 0) -> Split:
    """One split of a file (the file itself), a folder (its `split` file) or a hub id.

    Used by export's accuracy gate and bench's --data. `limit` keeps a seeded stratified subset.
    """
    if split not in SPLIT_NAMES:
        raise DataError(f"unknown split '{split}' (use train, validation or test)")
    path = Path(str(source)).expanduser()
    if path.is_dir():
        file = _split_file(path, split)
        if file is None:
            found = [s for s in SPLIT_NAMES if _split_file(path, s) is not None]
            raise DataError(f"{path} has no '{split}' split file (found: {', '.join(found) or 'none'})")
        out = frame_to_split(read_table(file, text_column, label_column), text_column, label_column, labels, f"{split} ({file})")
    elif path.is_file():
        out = frame_to_split(read_table(path, text_column, label_column), text_column, label_column, labels, str(path))
    elif looks_like_path(str(source)):
        raise DataError(f"data not found: {source}")
    else:
        ds = None
        for alias in SPLIT_NAMES[split]:
            try:
                ds = _load_hub(str(source), alias)
                break
            except DataError as exc:
                if "has no" not in str(exc):
                    raise
        if ds is None:
            raise DataError(f"'{source}' has no '{split}' split")
        df = ds.to_pandas()
        for column in (text_column, label_column):
            if column not in df.columns:
                raise DataError(f"'{source}' [{split}]: no column '{column}' (columns: {', '.join(df.columns)})")
        out = frame_to_split(df, text_column, label_column, labels, f"{split} ({source})")
    return subset(out, limit, seed)


# --------------------------------------------------------------------------------------------
# Tokenization and batches for training


def make_preprocessor(tokenizer, data_cfg, max_tokens: int | None = None):
    """The shared `textproc.Preprocessor` for a transformers fast tokenizer and a recipe's data section.

    The backend tokenizer is copied: `Preprocessor.create` switches its truncation/padding off, which
    must not change the transformers tokenizer the caller keeps using. `max_tokens` is the longest
    input the model's positions allow (`archs.Arch.max_tokens(config)`), checked against the windows.
    """
    from edgesent.errors import ModelError
    from edgesent.textproc import WINDOW_KEYS, Preprocessor

    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("edgesent needs a fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token_id is None:
        raise ModelError("the tokenizer has no pad token; set model.pad_token")
    try:
        return Preprocessor.create(
            copy.deepcopy(tokenizer.backend_tokenizer),
            max_length=data_cfg.max_length,
            truncation=data_cfg.truncation,
            head_share=data_cfg.head_share,
            lowercase=data_cfg.lowercase,
            padding_side="right",
            pad_token_id=tokenizer.pad_token_id,
            max_tokens=max_tokens,
            **{key: getattr(data_cfg, key) for key in WINDOW_KEYS},
        )
    except ValueError as exc:
        key = next((k for k in WINDOW_KEYS if str(exc).startswith(k)), "max_length")
        raise DataError(f"data.{key}: {exc}") from None


class TokenizedDataset:
    """A map-style dataset (torch's protocol: __len__ + __getitem__) of ids tokenized once, unpadded."""

    def __init__(self, split: Split, preprocessor):
        self.input_ids = preprocessor.encode(split.texts)
        self.labels = list(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    @property
    def n_tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)


class PadCollator:
    """Batches for the Trainer: padded to the longest member with `Preprocessor.pad` (dynamic padding)."""

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.preprocessor.pad([f["input_ids"] for f in features])
        out = {k: torch.from_numpy(v) for k, v in batch.items()}
        out["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return out
