"""edgesent.data: reading files, label mapping, one-line data errors, seeded stratified splits."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sentences, tiny_recipe

from edgesent.config import validate_recipe
from edgesent.data import (
    PadCollator,
    TokenizedDataset,
    load_split,
    load_splits,
    make_preprocessor,
    read_table,
)
from edgesent.errors import DataError


def frame(n: int = 60, seed: int = 1) -> pd.DataFrame:
    return pd.DataFrame(sentences(n, seed=seed), columns=["text", "label"])


def recipe(dataset, tmp_path, **data):
    return validate_recipe(tiny_recipe("unused-model", dataset, tmp_path / "exports", data=data))


# --------------------------------------------------------------------------------------------
# Reading files


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "tsv"])
def test_read_table_formats(fmt, tmp_path):
    df = frame(10)
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    got = read_table(path, "text", "label")
    assert got["text"].tolist() == df["text"].tolist()
    assert [int(v) for v in got["label"]] == df["label"].tolist()


def test_read_txt_and_texts_like_none_are_kept(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("None\nNA\na great film\n", encoding="utf-8")
    assert read_table(path, "text")["text"].tolist() == ["None", "NA", "a great film"]
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nNone,0\nNA,1\n", encoding="utf-8")
    assert read_table(csv, "text", "label")["text"].tolist() == ["None", "NA"]


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


READ_ERRORS = [
    ("missing", None, "data file not found"),
    ("empty", b"", "is empty"),
    ("header-only", "text,label\n", "holds no rows"),
    ("broken-quote", "text,label\n\"a b\",1\n\"c d\",0\n\"never closed,1\n\"e f\",0\n", "malformed CSV in the row starting at line 4"),
    ("not-utf8", b"text,label\na,1\nb,0\n" + "tr\xe8s,0\n".encode("latin-1"), "line 4 is not valid UTF-8"),
    ("missing-column", "review,label\na,1\n", "no column 'text' (columns: 'review', 'label')"),
]


@pytest.mark.parametrize("kind,content,fragment", READ_ERRORS, ids=[c[0] for c in READ_ERRORS])
def test_read_errors(kind, content, fragment, tmp_path):
    path = tmp_path / "train.csv" if content is None else write(tmp_path, "train.csv", content)
    with pytest.raises(DataError) as info:
        read_table(path, "text", "label")
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_bad_json_line_is_named(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_table(path, "text", "label")


# --------------------------------------------------------------------------------------------
# Labels and texts


def test_string_labels_map_by_index_and_ints_pass(tmp_path):
    df = frame(40)
    names = df["label"].map({0: " negative", 1: "positive "})  # whitespace is stripped
    df.assign(label=names).to_csv(tmp_path / "train.csv", index=False)
    df.to_csv(tmp_path / "test.csv", index=False)
    splits = load_splits(recipe(tmp_path, tmp_path))
    assert splits["test"].labels == df["label"].tolist()
    assert sorted(splits["train"].labels + splits["validation"].labels) == sorted(df["label"].tolist())


def _folder_with_train(tmp_path, df: pd.DataFrame) -> Path:
    df.to_csv(tmp_path / "train.csv", index=False)
    frame(20, seed=2).to_csv(tmp_path / "validation.csv", index=False)
    frame(20, seed=3).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path


def test_labels_outside_set(tmp_path):
    df = frame()
    df.loc[[16, 20, 30], "label"] = 2
    with pytest.raises(DataError) as info:
        load_splits(recipe(_folder_with_train(tmp_path, df), tmp_path))
    assert "data: 3 rows of train" in str(info.value)
    assert "have labels outside ['negative', 'positive'] (e.g. 2 at row 17)" in str(info.value)


def test_case_sensitive_string_labels(tmp_path):
    df = frame().astype({"label": object})
    df["label"] = df["label"].map({0: "negative", 1: "positive"})
    df.loc[4, "label"] = "Positive"
    with pytest.raises(DataError, match=r"1 row of train .* has labels outside .* \(e.g. 'Positive' at row 5\)"):
        load_splits(recipe(_folder_with_train(tmp_path, df), tmp_path))


def test_nan_labels(tmp_path):
    df = frame().astype({"label": float})
    df.loc[[3, 8], "label"] = np.nan
    with pytest.raises(DataError, match=r"2 rows of train .* have no label \(NaN\) \(e.g. row 4\)"):
        load_splits(recipe(_folder_with_train(tmp_path, df), tmp_path))


def test_single_class(tmp_path):
    df = frame().assign(label=1)
    with pytest.raises(DataError, match=r"has only one class \('positive', 60 rows\)"):
        load_splits(recipe(_folder_with_train(tmp_path, df), tmp_path))


def test_empty_texts_dropped_with_count(tmp_path, caplog):
    df = frame()
    df.loc[[1, 2, 5], "text"] = ["", "   ", "\t"]
    with caplog.at_level(logging.WARNING, logger="edgesent"):
        splits = load_splits(recipe(_folder_with_train(tmp_path, df), tmp_path))
    assert len(splits["train"]) == 57
    assert all(t.strip() for t in splits["train"].texts)
    assert any("dropped 3 empty texts" in r.getMessage() for r in caplog.records)


def test_all_texts_empty(tmp_path):
    df = frame().assign(text="")
    with pytest.raises(DataError, match="all 60 texts of train .* are empty"):
        load_splits(recipe(_folder_with_train(tmp_path, df), tmp_path))


# --------------------------------------------------------------------------------------------
# Sources and splits


def test_validation_and_test_carved_stratified_and_seeded(tmp_path):
    df = pd.DataFrame({"text": [f"text number {i}" for i in range(200)], "label": [int(i % 4 == 0) for i in range(200)]})
    df.to_parquet(tmp_path / "all.parquet")
    r = recipe(str(tmp_path / "all.parquet"), tmp_path, validation_size=0.1)
    a, b = load_splits(r), load_splits(r)
    assert [len(a[s]) for s in ("train", "validation", "test")] == [160, 20, 20]
    for split in ("validation", "test"):
        assert Counter(a[split].labels) == {0: 15, 1: 5}  # stratified: 25% positive, like the whole
        assert a[split].texts == b[split].texts  # seeded: identical again
    assert not set(a["train"].texts) & (set(a["validation"].texts) | set(a["test"].texts))
    other = load_splits(r.model_copy(update={"seed": 1}))
    assert other["validation"].texts != a["validation"].texts


def test_folder_with_dev_split_and_explicit_file(tmp_path):
    frame(40, 1).to_parquet(tmp_path / "train.parquet")
    frame(10, 2).to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    frame(12, 3).to_csv(tmp_path / "other_test.csv", index=False)
    splits = load_splits(recipe(tmp_path, tmp_path, test_file=str(tmp_path / "other_test.csv")))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [40, 10, 12]
    assert splits["test"].texts == frame(12, 3)["text"].tolist()


def test_resplit_and_max_samples(tmp_path):
    frame(80, 1).to_parquet(tmp_path / "train.parquet")
    frame(20, 2).to_parquet(tmp_path / "test.parquet")
    splits = load_splits(recipe(tmp_path, tmp_path, resplit=[0.8, 0.1, 0.1]))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [80, 10, 10]
    small = load_splits(recipe(tmp_path, tmp_path, max_train_samples=30, max_test_samples=6))
    assert len(small["train"]) == 30 and len(small["test"]) == 6
    assert Counter(small["train"].labels) == {0: 15, 1: 15}


def test_missing_path_and_offline_hub(tmp_path):
    with pytest.raises(DataError, match="data not found: .*no-such-folder"):
        load_splits(recipe(str(tmp_path / "no-such-folder"), tmp_path))
    with pytest.raises(DataError) as info:
        load_splits(recipe("nobody-xyz/not-a-dataset", tmp_path))
    assert "cannot reach the hub for 'nobody-xyz/not-a-dataset'" in str(info.value)
    assert "--set data.dataset=/path/with/train.parquet" in str(info.value)


def test_load_split_file_folder_and_limit(tmp_path):
    frame(50, 1).to_parquet(tmp_path / "test.parquet")
    whole = load_split(str(tmp_path))
    assert whole.texts == frame(50, 1)["text"].tolist()
    limited = load_split(str(tmp_path / "test.parquet"), limit=10, seed=3)
    assert len(limited) == 10 and set(limited.texts) <= set(whole.texts)
    assert limited.texts == load_split(str(tmp_path), limit=10, seed=3).texts
    with pytest.raises(DataError, match="has no 'train' split file \\(found: test\\)"):
        load_split(str(tmp_path), "train")


# --------------------------------------------------------------------------------------------
# Truncation and batches (through make_preprocessor: the recipe's settings reach the Preprocessor)

LONG = " ".join(f"w{i}" for i in range(40))


@pytest.fixture(scope="module")
def roberta_tok(model_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_factory("roberta"))


@pytest.mark.parametrize("strategy,head_share", [("head", 0.25), ("tail", 0.25), ("head+tail", 0.25), ("head+tail", 0.5)])
def test_truncation_keeps_right_tokens(roberta_tok, strategy, head_share, tmp_path):
    r = recipe(tmp_path, tmp_path, max_length=12, truncation=strategy, head_share=head_share)
    pre = make_preprocessor(roberta_tok, r.data)
    content = roberta_tok(LONG, add_special_tokens=False)["input_ids"]
    ids = pre.encode([LONG])[0]
    assert ids[0] == roberta_tok.bos_token_id and ids[-1] == roberta_tok.eos_token_id
    body = ids[1:-1]
    expected = {"head": content[:10], "tail": content[-10:]}.get(strategy)
    if expected is None:
        n_head = round(10 * head_share)
        expected = content[:n_head] + content[-(10 - n_head):]
    assert body == expected
    assert len(roberta_tok(LONG)["input_ids"]) > 12  # the caller's tokenizer is left as it was


def test_dataset_and_collator_pad_dynamically(roberta_tok, tmp_path):
    import torch

    from edgesent.data import Split

    r = recipe(tmp_path, tmp_path, max_length=64)
    pre = make_preprocessor(roberta_tok, r.data)
    ds = TokenizedDataset(Split(["a great film", "the plot was dull and the ending awful"], [1, 0]), pre)
    batch = PadCollator(pre)([ds[0], ds[1]])
    longest = max(len(ids) for ids in ds.input_ids)
    assert tuple(batch["input_ids"].shape) == (2, longest) and longest < 64  # not padded to max_length
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert batch["attention_mask"][0].sum() == len(ds.input_ids[0])
    assert batch["input_ids"][0, len(ds.input_ids[0]):].eq(roberta_tok.pad_token_id).all()
