"""The torch-free runtime gives PyTorch's logits, handles hostile input and scores files in any format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sentences

from edgesent.errors import ArtifactError, DataError
from edgesent.runtime import Classifier
from edgesent.scoring import predict_file

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 32
CLEAR = ["great wonderful excellent movie", "awful terrible boring film", "loved it brilliant and amazing",
         "the worst dreadful plot", "superb fantastic story", "hated it horrible dull"]
CLEAR_LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]


# --------------------------------------------------------------------------------------------
# Fixtures: a tiny BERT trained on the synthetic reviews (so predictions are confident), exported.


def train_tiny(model_dir: Path, out: Path, epochs: int = 4) -> Path:
    """A few epochs of plain PyTorch on the separable synthetic set; saves an HF folder to `out`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    rows = sentences(320, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(rows), 16):
            texts, labels = zip(*rows[i:i + 16], strict=True)
            batch = tok(list(texts), truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            loss = model(**batch, labels=torch.tensor(labels)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_artifact(model_dir: Path, out: Path, int8: bool = True, eval_data: Path | None = None) -> Path:
    """The real `edgesent export` path (ONNX + validation + gated INT8 + manifest)."""
    from edgesent.export import export

    return Path(export(str(model_dir), out, int8=int8, eval_data=str(eval_data) if eval_data else None,
                       max_drop=5.0, overwrite=True))


@pytest.fixture(scope="session")
def trained_bert(model_factory, tmp_path_factory) -> Path:
    return train_tiny(model_factory("bert"), tmp_path_factory.mktemp("trained-bert"))


@pytest.fixture(scope="session")
def bert_artifact(trained_bert, sentiment_data, tmp_path_factory) -> Path:
    return build_artifact(trained_bert, tmp_path_factory.mktemp("art") / "bert", int8=True, eval_data=sentiment_data)


@pytest.fixture(scope="module")
def clf(bert_artifact) -> Classifier:
    return Classifier(bert_artifact, model="fp32", threads=1)


def torch_logits(model_dir: Path, pre, texts: list[str]) -> np.ndarray:
    """Reference logits: the saved PyTorch model on the same Preprocessor ids."""
    import torch

    from edgesent.model import load_model_dir

    model = load_model_dir(model_dir)
    feed = {k: torch.from_numpy(v) for k, v in pre.pad(pre.encode(texts)).items()}
    with torch.no_grad():
        return model(**feed).logits.numpy()


MIXED = ["great movie", "the plot was awful and the actors were really dull and the ending felt so painful",
         "a", "loved it " * 30, "thought the music was quite superb"]


# --------------------------------------------------------------------------------------------
def test_fp32_logits_equal_pytorch(clf, trained_bert):
    ref = torch_logits(trained_bert, clf.preprocessor, MIXED)
    got = clf.logits(MIXED, batch_size=2)  # several length buckets, order restored
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_decoder_without_special_tokens_matches_pytorch(model_factory, tmp_path):
    """GPT-NeoX adds no special tokens and pools the last non-pad token; right padding must not shift it."""
    model_dir = model_factory("gpt_neox")
    clf = Classifier(build_artifact(model_dir, tmp_path / "neox", int8=False), threads=1)
    assert clf.model_file == "model.onnx"
    ref = torch_logits(model_dir, clf.preprocessor, MIXED)
    np.testing.assert_allclose(clf.logits(MIXED, batch_size=8), ref, atol=1e-4)
    empty = clf.predict([""])[0]  # zero content tokens: one pad token is fed instead of nothing
    assert empty["empty"] is True and np.isfinite(empty["confidence"])


def test_classifier_learned_the_task(clf):
    assert [r["label"] for r in clf.predict(CLEAR)] == CLEAR_LABELS
    data = sentences(200, seed=11)
    preds = clf.predict([t for t, _ in data])
    acc = np.mean([p["label"] == ("positive" if y else "negative") for p, (_, y) in zip(preds, data, strict=True)])
    assert acc >= 0.95


def test_int8_is_default_and_agrees_with_fp32(bert_artifact, clf, sentiment_data):
    import pandas as pd

    int8 = Classifier(bert_artifact, threads=1)
    assert int8.model_file == "model.int8.onnx" and clf.model_file == "model.onnx"
    texts = [t for t, _ in sentences(200, seed=5)]
    p32, p8 = clf.predict_proba(texts), int8.predict_proba(texts)
    confident = np.abs(p32[:, 1] - 0.5) > 0.3
    assert confident.sum() > 150
    assert (p32.argmax(1) == p8.argmax(1))[confident].all()
    # the runtime reproduces the accuracies export's gate recorded on the same validation split
    val = pd.read_parquet(sentiment_data / "validation.parquet")
    quant = int8.manifest["quantization"]
    assert quant["eval_size"] == len(val)
    for runtime, recorded in ((int8, quant["int8_accuracy"]), (clf, quant["fp32_accuracy"])):
        preds = runtime.predict_proba(val["text"].tolist()).argmax(1)
        assert float((preds == val["label"].to_numpy()).mean()) == pytest.approx(recorded, abs=1e-9)


def test_predict_output_shape(clf):
    (r,) = clf.predict(["great wonderful film"])
    assert set(r) == {"label", "confidence", "probs", "empty"}
    assert r["label"] == "positive" and r["empty"] is False
    assert abs(sum(r["probs"].values()) - 1) < 1e-6 and r["confidence"] == max(r["probs"].values())
    assert clf.labels == ["negative", "positive"] and clf.load_seconds > 0
    assert clf.logits([]).shape == (0, 2)
    with pytest.raises(TypeError, match="list of strings"):
        clf.predict("one string")


def test_runtime_does_not_import_torch(bert_artifact):
    code = (
        "import sys, edgesent.runtime as r\n"
        f"c = r.Classifier({str(bert_artifact)!r})\n"
        "print(c.predict(['great wonderful movie'])[0]['label'])\n"
        "bad = [m for m in ('torch', 'transformers', 'peft', 'optimum') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "positive"


# --------------------------------------------------------------------------------------------
# Hostile input


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_flagged_not_crashing(clf, text):
    (r,) = clf.predict([text])
    assert r["empty"] is True and r["label"] in clf.labels and np.isfinite(r["confidence"])


def test_one_megabyte_text_is_truncated_fast(clf):
    big = "great wonderful movie " * 48_000  # ~1 MB
    assert len(big) > 1_000_000
    start = time.perf_counter()
    (r,) = clf.predict([big])
    elapsed = time.perf_counter() - start
    assert r["label"] == "positive" and elapsed < 1.0
    # the pre-cut keeps exactly the tokens full tokenization + truncation keeps
    full = clf.preprocessor.encode([big])
    assert clf.encode([big])[0] == full


@pytest.mark.parametrize("strategy", ["tail", "head+tail"])
def test_precut_identical_for_every_truncation(clf, strategy):
    from dataclasses import replace

    clf2 = Classifier.__new__(Classifier)
    clf2.__dict__.update(clf.__dict__)
    clf2.preprocessor = replace(clf.preprocessor, truncation=strategy)
    big = ("awful boring plot " * 30_000) + " the ending was superb"
    assert clf2.encode([big])[0] == clf2.preprocessor.encode([big])


def test_unicode_and_control_chars(clf):
    texts = ["great 😀🎬 movie", "פילם נהדר مذهل", "\x00awful\x07 terrible\x1b boring\x7f", "ﬁlm\u200b\u202e terrible",
             "lone surrogate \ud800 from a JSON escape", "\u0000" * 10]
    results = clf.predict(texts)
    assert len(results) == len(texts)
    assert results[0]["label"] == "positive" and results[2]["label"] == "negative"
    assert all(np.isfinite(r["confidence"]) for r in results)


def test_tampered_model_is_refused(bert_artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bert_artifact, copy)
    with open(copy / "model.int8.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match="model.int8.onnx does not match its sha256"):
        Classifier(copy)
    assert Classifier(copy, model="fp32").model_file == "model.onnx"  # untouched variant still serves
    with pytest.raises(ArtifactError, match="has no model.fp16.onnx"):
        Classifier(copy, model="fp16")


# --------------------------------------------------------------------------------------------
# Files


def write_inputs(folder: Path) -> tuple[dict[str, Path], list[str]]:
    import pandas as pd

    texts = CLEAR * 500 + ["", "great, \"quoted\"\nmultiline movie"]  # > 2 chunks
    df = pd.DataFrame({"id": range(len(texts)), "review": texts})
    paths = {ext: folder / f"in.{ext}" for ext in ("csv", "jsonl", "parquet")}
    df.to_csv(paths["csv"], index=False)
    df.to_json(paths["jsonl"], orient="records", lines=True, force_ascii=False)
    df.to_parquet(paths["parquet"], index=False)
    paths["txt"] = folder / "in.txt"
    paths["txt"].write_text("\n".join(CLEAR * 500 + ["", "loved it"]) + "\n", encoding="utf-8")
    return paths, texts


@pytest.mark.parametrize("src", ["csv", "jsonl", "parquet", "txt"])
@pytest.mark.parametrize("dst", ["parquet", "csv", "jsonl"])
def test_predict_file_roundtrip(clf, tmp_path, src, dst):
    import pandas as pd

    paths, texts = write_inputs(tmp_path)
    column = "text" if src == "txt" else "review"
    out, rows, counts = predict_file(clf, paths[src], tmp_path / f"out.{dst}", column=column)
    df = {"parquet": pd.read_parquet, "csv": lambda p: pd.read_csv(p, keep_default_na=False),
          "jsonl": lambda p: pd.read_json(p, lines=True)}[dst](out)
    n = len(CLEAR) * 500 + 2
    assert rows == n == len(df) and sum(counts.values()) == n
    expect_cols = ([column] if src == "txt" else ["id", "review"]) + ["label", "confidence", "prob_negative",
                                                                      "prob_positive", "empty"]
    assert list(df.columns) == expect_cols
    assert list(df["label"][: len(CLEAR)]) == CLEAR_LABELS
    assert df["empty"].astype(str).str.lower().tolist()[-2] == "true"
    if src != "txt":
        assert df["review"].tolist()[-1] == texts[-1] and df["id"].astype(int).tolist() == list(range(n))
    assert not list(tmp_path.glob(".out.*"))  # the temporary file was renamed away


def test_missing_column_names_available(clf, tmp_path):
    paths, _ = write_inputs(tmp_path)
    for ext in ("csv", "jsonl", "parquet"):
        with pytest.raises(DataError, match=r"has no column 'text' \(columns: id, review\)"):
            predict_file(clf, paths[ext], tmp_path / "o.csv", column="text")
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("ext", ["csv", "txt", "jsonl"])
def test_non_utf8_names_line(clf, tmp_path, ext):
    lines = {"csv": [b"text", b"great movie", b"fine", b"caf\xe9 was awful"],
             "txt": [b"great movie", b"fine", b"not bad", b"caf\xe9 was awful"],
             "jsonl": [b'{"text": "great"}', b'{"text": "fine"}', b'{"text": "ok"}', b'{"text": "caf\xe9"}']}[ext]
    path = tmp_path / f"latin1.{ext}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"latin1\.\w+ line 4 is not valid UTF-8 \(byte 0xe9"):
        predict_file(clf, path, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".o.jsonl*"))


def test_bad_files(clf, tmp_path):
    with pytest.raises(DataError, match="input file not found"):
        predict_file(clf, tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"use one of \.csv, \.jsonl, \.parquet, \.txt"):
        predict_file(clf, tmp_path / "x.xlsx")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="bad.jsonl line 2 is not valid JSON"):
        predict_file(clf, tmp_path / "bad.jsonl")
    (tmp_path / "in.csv").write_text("text\ngreat\n")
    with pytest.raises(DataError, match="would overwrite the input"):
        predict_file(clf, tmp_path / "in.csv", tmp_path / "in.csv")


# --------------------------------------------------------------------------------------------
# CLI


def cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edgesent", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_cli_prints_table(bert_artifact):
    proc = cli("predict", bert_artifact, "great wonderful movie", "awful terrible film", "")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["text", "label", "confidence", "p(negative)", "p(positive)"]
    assert lines[2].split()[3] == "positive" and lines[3].split()[3] == "negative"
    assert "(empty)" in lines[4]


def test_cli_scores_file(bert_artifact, tmp_path):
    import pandas as pd

    src = tmp_path / "reviews.csv"
    pd.DataFrame({"body": CLEAR}).to_csv(src, index=False)
    proc = cli("predict", bert_artifact, "--file", src, "--column", "body", "--model", "fp32")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "reviews.predictions.csv"
    assert f"scored {len(CLEAR)} rows with model.onnx" in proc.stdout and str(out) in proc.stdout
    assert pd.read_csv(out)["label"].tolist() == CLEAR_LABELS


@pytest.mark.parametrize("args,fragment", [
    (["predict", "{art}"], "error: nothing to classify"),
    (["predict", "{art}", "--file", "{tmp}/missing.csv"], "error: input file not found: "),
    (["predict", "{tmp}/no-artifact", "hi"], "error: artifact folder not found"),
    (["predict", "{art}", "--file", "{tmp}/in.csv", "--column", "body"], "has no column 'body' (columns: text, stars)"),
    (["predict", "{art}", "hi", "--model", "fp16"], "has no model.fp16.onnx"),
])
def test_cli_one_line_errors(bert_artifact, tmp_path, args, fragment):
    (tmp_path / "in.csv").write_text("text,stars\ngreat,5\n")
    proc = cli(*[a.format(art=bert_artifact, tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_manifest_json_is_what_runtime_reads(bert_artifact):
    manifest = json.loads((bert_artifact / "edgesent.json").read_text())
    assert manifest["preprocessing"]["max_length"] == Classifier(bert_artifact).preprocessor.max_length
