"""Long texts scored as windows with pooled logits (`data.long_text: windows`), end to end, on a tiny model.

A tiny BERT is trained here on short synthetic reviews (32 tokens), exported with windows in its
manifest, and scored on long texts whose only sentiment cue sits in the middle of hundreds of
neutral words: head+tail truncation cannot see the cue, windows can.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import FILLER, NEG, POS, tiny_recipe

from edgesent import export as E
from edgesent.errors import DataError, EdgesentError, RecipeError
from edgesent.runtime import Classifier
from edgesent.session import OnnxSession
from edgesent.textproc import Preprocessor, pooled_logits

WINDOWS = {"long_text": "windows", "window": 32, "stride": 16, "truncation": "head+tail"}
SHORT = ["great film", "the plot was dull and the actors were awful", "loved it", "worst film ever", "a",
         "it was fine i guess", "brilliant moving story", "boring", "", "superb music and a great cast"]


def middle_cue_texts(n: int = 40, side: int = 200, seed: int = 3) -> tuple[list[str], list[int]]:
    """Balanced texts: `side` neutral words, three sentiment words, `side` neutral words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        cue = rng.sample(POS if label else NEG, 3)
        texts.append(" ".join(rng.choices(FILLER, k=side) + cue + rng.choices(FILLER, k=side)))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def short_data(tmp_path_factory) -> Path:
    """The synthetic sentiment set plus short neutral texts with coin-flip labels: the model learns that
    neutral words carry no evidence (a real review model's filler is near neutral too)."""
    import pandas as pd
    from conftest import write_sentiment_data

    out = write_sentiment_data(tmp_path_factory.mktemp("short"))
    rng = random.Random(5)
    neutral = [(" ".join(rng.choices(FILLER, k=rng.randint(25, 40))), i % 2) for i in range(600)]
    train = pd.read_parquet(out / "train.parquet")
    pd.concat([train, pd.DataFrame(neutral, columns=["text", "label"])]).sample(frac=1, random_state=0).to_parquet(
        out / "train.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, model_factory, short_data) -> Path:
    import torch
    from test_export import write_run

    torch.set_num_threads(1)  # module fixtures run before conftest's per-test thread cap
    root = tmp_path_factory.mktemp("runs")
    recipe = tiny_recipe(model_factory("bert"), short_data, root / "exports", data=WINDOWS)
    return write_run(root / "exports" / "tiny-20250101-000000", recipe, train=True, data_dir=short_data)


@pytest.fixture(scope="module")
def artifact(trained_run, tmp_path_factory) -> Path:
    return E.export(trained_run, tmp_path_factory.mktemp("win") / "artifact", int8=True, calibration=32)


def truncating(clf: Classifier) -> Classifier:
    """The same classifier with today's behaviour: head+tail truncation at max_length."""
    clf.preprocessor = dataclasses.replace(clf.preprocessor, long_text="truncate")
    return clf


def count_calls(clf: Classifier) -> list[int]:
    calls = [0]
    run = clf.session.logits

    def counted(batch):
        calls[0] += 1
        return run(batch)

    clf.session.logits = counted
    return calls


# ------------------------------------------------------------------------------------------------
def test_manifest_records_and_round_trips_the_settings(artifact):
    clf = Classifier(artifact, model="fp32")
    pre = clf.preprocessor
    block = clf.manifest["preprocessing"]
    assert {k: block[k] for k in ("long_text", "window", "stride", "max_windows", "pool")} == {
        "long_text": "windows", "window": 32, "stride": 16, "max_windows": None, "pool": "mean"}
    again = Preprocessor.from_manifest(pre.tokenizer, pre.to_manifest("[PAD]"))
    texts, _ = middle_cue_texts(4)
    assert again.encode_windows(texts) == pre.encode_windows(texts)
    assert again.to_manifest("[PAD]") == pre.to_manifest("[PAD]")


def test_middle_cue_fails_truncated_and_is_found_by_windows(artifact):
    texts, labels = middle_cue_texts()
    assert all(len(t.split()) > 400 for t in texts)
    windowed = Classifier(artifact, model="fp32").logits(texts).argmax(-1)
    truncated = truncating(Classifier(artifact, model="fp32")).logits(texts).argmax(-1)
    acc_windows = float((windowed == np.array(labels)).mean())
    acc_truncated = float((truncated == np.array(labels)).mean())
    assert acc_windows >= 0.9, acc_windows
    assert acc_truncated <= 0.65, acc_truncated  # it sees only neutral words: a coin at best


def test_windowed_logits_equal_a_hand_computation(artifact):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(artifact)
    sess = OnnxSession(artifact / "model.onnx", threads=1)
    texts, _ = middle_cue_texts(3, side=70)
    clf = Classifier(artifact, model="fp32", threads=1)
    got = clf.logits(texts, batch_size=5)
    content, stride = 30, 16  # window 32 minus [CLS] and [SEP]
    for text, row in zip(texts, got, strict=True):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        last = len(ids) - content
        starts = list(range(0, last, stride)) + [last]
        windows = np.array([[tok.cls_token_id, *ids[s:s + content], tok.sep_token_id] for s in starts])
        assert windows.shape[1] == 32 and len(starts) > 5
        assert starts[-1] + content == len(ids)  # the last window ends at the text's end
        hand = sess.logits({"input_ids": windows, "attention_mask": np.ones_like(windows)}).mean(axis=0)
        np.testing.assert_allclose(row, hand, atol=1e-6, rtol=0)


def test_texts_of_one_window_cost_exactly_what_truncation_costs(artifact):
    windowed, truncated = Classifier(artifact, model="fp32"), truncating(Classifier(artifact, model="fp32"))
    calls_w, calls_t = count_calls(windowed), count_calls(truncated)
    a, b = windowed.logits(SHORT, batch_size=3), truncated.logits(SHORT, batch_size=3)
    assert np.array_equal(a, b)
    assert calls_w[0] == calls_t[0] == 4  # 10 texts, batches of 3
    assert [r["empty"] for r in windowed.predict(SHORT)] == [r["empty"] for r in truncated.predict(SHORT)]


def test_windows_of_many_texts_share_batches(artifact):
    clf = Classifier(artifact, model="fp32")
    calls = count_calls(clf)
    texts, _ = middle_cue_texts(4, side=70)
    n_windows = sum(len(ws) for ws in clf.encode_windows(texts)[0])
    clf.logits(texts + SHORT, batch_size=8)
    assert calls[0] == -(-(n_windows + len(SHORT)) // 8)


def test_max_windows_spreads_windows_over_the_whole_text(artifact):
    pre = dataclasses.replace(Classifier(artifact, model="fp32").preprocessor, max_windows=3)
    ids = list(range(1000, 1100))  # 100 content tokens, 30 per window
    assert pre.window_starts(len(ids)) == [0, 35, 70]
    assert dataclasses.replace(pre, max_windows=None).window_starts(100) == [0, 16, 32, 48, 64, 70]
    text, _ = middle_cue_texts(1)
    one = dataclasses.replace(pre, max_windows=1).encode_windows(text)
    assert one == [dataclasses.replace(pre, max_windows=1, long_text="truncate").encode(text)]  # = truncation


def test_predict_classifier_gate_and_bench_agree(artifact, trained_run, tmp_path):
    import pandas as pd

    from edgesent.bench.runners import RUNNERS
    from edgesent.bench.worker import WorkerSpec
    from edgesent.scoring import predict_file

    long_texts, _ = middle_cue_texts(12, side=60)
    texts = long_texts + SHORT
    clf = Classifier(artifact, model="fp32")
    expected = clf.logits(texts).argmax(-1)
    names = clf.labels

    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    out, _, _ = predict_file(clf, tmp_path / "in.csv", tmp_path / "out.csv", batch_size=5)
    assert [names.index(x) for x in pd.read_csv(out)["label"]] == expected.tolist()

    gate = E.onnx_predictions(artifact / "model.onnx", clf.preprocessor, texts, batch_size=7)
    assert gate.tolist() == expected.tolist()

    spec = WorkerSpec(name="x", engine="ort", device="cpu", precision="fp32", file="model.onnx", artifact=str(artifact),
                      run=str(trained_run), tokenizer_file=str(artifact / "tokenizer.json"),
                      preprocessing=clf.manifest["preprocessing"], labels=names, batch_sizes=[1], seq_lens=[8],
                      threads=[1], budget=0.01)
    for engine in ("ort", "torch"):
        runner = RUNNERS[engine](dataclasses.replace(spec, engine=engine))
        runner.load(1)
        assert runner.classify(texts, 4).argmax(-1).tolist() == expected.tolist(), engine


def test_pooled_logits_is_the_mean_over_each_texts_windows():
    windows = [[[1, 2, 3]], [[4, 5], [6, 7], [8, 9]], [[1]]]
    seen = []

    def run(batch):
        seen.append(len(batch))
        return np.array([[float(sum(ids)), -float(len(ids))] for ids in batch])

    got = pooled_logits(windows, run, batch_size=2)
    np.testing.assert_allclose(got, [[6, -3], [13, -2], [1, -1]])
    assert sum(seen) == 5 and max(seen) <= 2


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ({"stride": 0}, "data.stride"),
    ({"window": 32, "stride": 40}, "data.stride"),
    ({"max_windows": 0}, "data.max_windows"),
])
def test_bad_recipe_settings_are_one_line_naming_the_key(model_factory, sentiment_data, tmp_path, override, key):
    from edgesent.config import validate_recipe

    recipe = tiny_recipe(model_factory("bert"), sentiment_data, tmp_path, data={**WINDOWS, **override})
    with pytest.raises(RecipeError) as err:
        validate_recipe(recipe)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_stride_past_the_window_content_names_the_key(model_factory):
    from transformers import AutoTokenizer

    from edgesent.config import DataConfig
    from edgesent.data import make_preprocessor

    tok = AutoTokenizer.from_pretrained(model_factory("bert"))
    with pytest.raises(DataError, match=r"^data\.stride: stride 31 must be between 1 and the window's 30"):
        make_preprocessor(tok, DataConfig(max_length=32, long_text="windows", stride=31))


def test_window_beyond_the_model_positions_is_refused_at_export(trained_run, tmp_path, model_factory, sentiment_data):
    from test_export import write_run

    recipe = tiny_recipe(model_factory("bert"), sentiment_data, tmp_path, data={**WINDOWS, "window": 600})
    run = write_run(tmp_path / "exports" / "tiny-20250101-000001", recipe)
    with pytest.raises(EdgesentError) as err:
        E.export(run, tmp_path / "a")
    assert str(err.value).startswith("data.window: window 600 is longer than the model's 512 positions")
    assert not (tmp_path / "a").exists()


def test_bench_reports_latency_per_review_and_accuracy_by_length(artifact, short_data, tmp_path):
    import json

    from edgesent.bench import bench
    from edgesent.bench.baseline import GRID_C

    out = bench(artifact, data=str(short_data), split="test", limit=30, out=tmp_path / "b", show=False, isolate=False,
                batch_sizes=[1], seq_lens=[16], threads=[1], budget=0.02)
    results = json.loads((out / "results.json").read_text())
    variants = {v["name"]: v for v in results["variants"]}
    ort = variants["ort-fp32"]
    assert ort["per_review"]["n"] == 30 and ort["per_review"]["p50_ms"] > 0
    assert ort["accuracy_by_length"] == {"<=256": {"n": 30, "accuracy": ort["accuracy"]}}
    assert variants["tfidf-logreg"]["baseline_fit"]["C"] in GRID_C
    report = (out / "report.md").read_text()
    assert "Per review and by length" in report and "TF-IDF + LR (C " in report


def test_export_set_changes_only_inference_keys(trained_run, tmp_path):
    from edgesent.artifact import load_manifest

    out = E.export(trained_run, tmp_path / "a", set=["data.window=24", "data.stride=8", "data.max_windows=4"])
    pre = load_manifest(out, verify=False)["preprocessing"]
    assert (pre["long_text"], pre["window"], pre["stride"], pre["max_windows"]) == ("windows", 24, 8, 4)
    with pytest.raises(EdgesentError, match=r"^--set 'training.lr=1': export can only change data.long_text"):
        E.export(trained_run, tmp_path / "b", set=["training.lr=1"])
    with pytest.raises(EdgesentError, match="data.stride"):
        E.export(trained_run, tmp_path / "c", set=["data.stride=0"])
