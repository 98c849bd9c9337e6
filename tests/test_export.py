"""Export: ONNX equality with PyTorch, LoRA merge, INT8 size and agreement, the accuracy gate, artifact integrity.

Models are tiny and random (conftest) or trained here for a few seconds on the synthetic sentiment set,
so every check runs on CPU in a couple of minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, make_tokenizer, tiny_config, tiny_recipe

from edgesent import export as E
from edgesent.archs import arch_for
from edgesent.artifact import load_manifest
from edgesent.errors import ArtifactError, EdgesentError, GateError
from edgesent.session import OnnxSession, feed_for

FAMILIES = ["gpt_neox", "roberta", "bert", "distilbert"]
LABELS = ["negative", "positive"]


def session_logits(path: Path, feed: dict) -> np.ndarray:
    return OnnxSession(path, threads=1).logits(feed)


def mixed_batches(pre) -> list[dict]:
    """Right- and left-padded batches of texts of very different lengths (one truncated)."""
    texts = ["great", "the plot was dull and the actors were awful", "loved it " * 300, "worst film", "a"]
    ids = pre.encode(texts)
    assert max(len(x) for x in ids) == pre.max_length and min(len(x) for x in ids) < 5
    import dataclasses

    return [dataclasses.replace(pre, padding_side=side).pad(ids) for side in ("right", "left")]


def write_run(run: Path, recipe_dict: dict, train: bool = False, data_dir: Path | None = None,
              lora_noise: bool = False) -> Path:
    """A run folder in the layout of edgesent.model (recipe.yaml, tokenizer/, model/ or adapter/)."""
    import torch

    from edgesent import model as M
    from edgesent.config import save_recipe, validate_recipe

    recipe = validate_recipe(recipe_dict)
    run.mkdir(parents=True)
    save_recipe(recipe, run / "recipe.yaml")
    tok = M.load_tokenizer(recipe.model.name_or_path, recipe.model.pad_token)
    tok.save_pretrained(run / "tokenizer")
    model = M.build_model(recipe, LABELS, tok)
    if train:
        fit(model, E.make_preprocessor(tok, recipe.data), data_dir)
    if lora_noise:  # LoRA B starts at zero: make the adapter change the logits so merging matters
        torch.manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    model.eval()
    if recipe.model.method == "lora":
        model.save_pretrained(run / "adapter")
        (run / "adapter" / "edgesent_labels.json").write_text(json.dumps(LABELS))
    else:
        model.save_pretrained(run / "model", safe_serialization=True)
    return run


def fit(model, pre, data_dir: Path, epochs: int = 4) -> None:
    """A few epochs of AdamW on the synthetic train split, enough to make the model confident."""
    import pandas as pd
    import torch

    df = pd.read_parquet(data_dir / "train.parquet")
    ids = pre.encode(df["text"].tolist())
    labels = torch.tensor(df["label"].tolist())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(ids), generator=gen).split(16):
            feed = {k: torch.from_numpy(v) for k, v in pre.pad([ids[i] for i in batch]).items()}
            loss = model(**feed, labels=labels[batch]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_artifact(trained_run, tmp_path_factory) -> Path:
    return E.export(trained_run, tmp_path_factory.mktemp("int8") / "artifact", int8=True, calibration=32)


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [*FAMILIES, "gpt2"])
def test_onnx_matches_pytorch_with_left_and_right_padding(kind, model_factory, tmp_path):
    from edgesent.model import load_model_dir

    out = E.export(model_factory(kind), tmp_path / "artifact")
    manifest = load_manifest(out)
    assert manifest["validation"]["max_abs_diff"] <= 1e-4
    assert {"input_ids", "attention_mask"} <= set(manifest["inputs"])
    torch_model = load_model_dir(model_factory(kind))
    pre = E.resolve_source(model_factory(kind)).preprocessor
    for feed in mixed_batches(pre):
        ref = E.torch_logits(torch_model, feed)
        got = session_logits(out / "model.onnx", feed)
        assert got.shape == (5, 2)
        assert np.abs(ref - got).max() <= 1e-4
    # left and right padding really are different inputs for these models (positions shift)
    right, left = mixed_batches(pre)
    assert not np.array_equal(right["input_ids"], left["input_ids"])
    # the nodes INT8 may keep in fp32 are found through the family's entry in archs.py: head and last block
    arch, nodes = arch_for(torch_model.config), E.sensitive_nodes(out / "model.onnx", torch_model.config)
    assert any(n.startswith(arch.onnx_head) for n in nodes)
    blocks = {int(m.group(1)) for n in nodes for m in [arch.onnx_block.search(n)] if m}
    assert blocks == {arch.num_layers(torch_model.config) - 1}


def test_modernbert_exports(tmp_path):
    import torch
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    tok = make_tokenizer("bert", tmp_path / "mb")
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                              cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                              bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, num_labels=2,
                              attn_implementation="eager", reference_compile=False)
    torch.manual_seed(0)
    ModernBertForSequenceClassification(config).eval().save_pretrained(tmp_path / "mb")
    out = E.export(tmp_path / "mb", tmp_path / "artifact")
    assert load_manifest(out)["validation"]["max_abs_diff"] <= 1e-4


def test_lora_merge_equals_adapter_and_mlp_head_exports(model_factory, sentiment_data, tmp_path):
    from edgesent.model import load_run

    recipe = tiny_recipe(model_factory("gpt_neox"), sentiment_data, tmp_path,
                         model={"method": "lora", "head": "mlp", "head_hidden": 16, "pad_token": "eos",
                                "lora": {"r": 4, "alpha": 8, "target_modules": ["query_key_value"]}})
    run = write_run(tmp_path / "run", recipe, lora_noise=True)
    out = E.export(run)
    assert out == run / "artifact"
    manifest = load_manifest(out)
    assert manifest["source"]["method"] == "lora"
    assert manifest["source"]["merge_max_abs_diff"] <= 1e-4
    assert json.loads((out / "config.json").read_text())["edgesent_head"]["type"] == "mlp"
    peft_model, tok, rec = load_run(run)  # the unmerged adapter model
    assert type(peft_model).__name__.startswith("Peft")
    pre = E.make_preprocessor(tok, rec.data)
    for feed in mixed_batches(pre):
        ref = E.torch_logits(peft_model, feed)
        assert np.abs(ref - session_logits(out / "model.onnx", feed)).max() <= 1e-4
        # the adapter matters: with it disabled the logits change
        with peft_model.disable_adapter():
            assert np.abs(ref - E.torch_logits(peft_model, feed)).max() > 1e-3


def test_merge_gate_refuses_a_bad_merge(model_factory, sentiment_data, tmp_path, monkeypatch):
    from edgesent.model import load_run

    recipe = tiny_recipe(model_factory("bert"), sentiment_data, tmp_path, model={"method": "lora"})
    run = write_run(tmp_path / "run", recipe, lora_noise=True)
    peft_model, tok, rec = load_run(run)
    pre = E.make_preprocessor(tok, rec.data)
    merged, diff = E.merge_lora(peft_model, pre)
    assert diff <= 1e-4 and not type(merged).__name__.startswith("Peft")
    # a merge that silently drops the adapter must be caught
    def lossy_merge(self):
        import torch

        with torch.no_grad():
            for name, p in self.named_parameters():
                if "lora_B" in name:
                    p.zero_()
        return self.get_base_model()

    monkeypatch.setattr(type(peft_model), "merge_and_unload", lossy_merge, raising=False)
    with pytest.raises(GateError, match="merged LoRA model differs"):
        E.merge_lora(peft_model, pre)


# ------------------------------------------------------------------------------------------------
def sized_model_dir(kind: str, out: Path) -> Path:
    """A small-but-not-tiny model (vocab 16000, hidden 128, 2 layers) where weights dominate the file.

    In the conftest models (vocab 300, hidden 32) the graph itself (~500 node protos, ~100 kB) is a
    large share of the file, so the INT8/fp32 ratio there says nothing about real models (Pythia-14M:
    see test_int8_ratio_on_real_pythia_architecture and bench/export_sizes.py).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    tok = make_tokenizer(kind, out)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        tok.save_pretrained(out)
    config = tiny_config(kind, 16000, tok.pad_token_id)
    wide = {"dim": 128, "hidden_dim": 512} if kind == "distilbert" else {"hidden_size": 128, "intermediate_size": 512}
    config.update(wide)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", FAMILIES)
def test_int8_file_is_at_most_27_percent_of_fp32(kind, tmp_path):
    out = E.export(sized_model_dir(kind, tmp_path / "m"), tmp_path / "artifact", int8=True)
    ratio = (out / "model.int8.onnx").stat().st_size / (out / "model.onnx").stat().st_size
    assert ratio <= 0.27, f"{kind}: INT8/fp32 = {ratio:.3f}"
    q = load_manifest(out)["quantization"]
    assert q["winner"]["variant"] == "dynamic_per_channel" and "Gather" in q["settings"]["op_types"]
    assert q["gate"].startswith("skipped: no evaluation data")


@pytest.mark.shared
def test_int8_ratio_on_real_pythia_architecture(tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    arch = SHARED / "models" / "pythia-14m-arch"
    tok = AutoTokenizer.from_pretrained(arch)
    tok.pad_token = tok.pad_token or tok.eos_token
    config = AutoConfig.from_pretrained(arch, num_labels=2, pad_token_id=tok.pad_token_id)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = E.export(tmp_path / "m", tmp_path / "artifact", int8=True)
    ratio = (out / "model.int8.onnx").stat().st_size / (out / "model.onnx").stat().st_size
    assert ratio <= 0.27


# ------------------------------------------------------------------------------------------------
def test_int8_agrees_with_fp32_where_confident(int8_artifact, sentiment_data):
    import pandas as pd

    manifest = load_manifest(int8_artifact)
    q = manifest["quantization"]
    assert q["fp32_accuracy"] >= 0.9  # the trained model is good ...
    assert q["drop_points"] <= 0.5 and q["winner"]["variant"] == "dynamic_per_channel" and q["winner"]["per_channel"]
    assert manifest["models"]["model.int8.onnx"]["metrics"]["accuracy"] == q["int8_accuracy"]
    assert manifest["models"]["model.int8.onnx"]["scheme"] == "dynamic"
    test = pd.read_parquet(sentiment_data / "test.parquet")
    from tokenizers import Tokenizer

    from edgesent.textproc import Preprocessor

    pre = Preprocessor.from_manifest(Tokenizer.from_file(str(int8_artifact / "tokenizer.json")), manifest["preprocessing"])
    feed = pre.pad(pre.encode(test["text"].tolist()))
    fp32 = session_logits(int8_artifact / "model.onnx", feed)
    int8 = session_logits(int8_artifact / "model.int8.onnx", feed)
    probs = np.exp(fp32) / np.exp(fp32).sum(-1, keepdims=True)
    confident = probs.max(-1) >= 0.9
    assert confident.sum() >= 0.8 * len(test)
    agree = (fp32.argmax(-1) == int8.argmax(-1))[confident].mean()
    assert agree >= 0.95
    assert (fp32.argmax(-1) == test["label"].to_numpy()).mean() >= 0.9


def test_artifact_files_and_model_card(int8_artifact, trained_run):
    names = {p.name for p in int8_artifact.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "config.json", "README.md", "edgesent.json"} <= names
    manifest = load_manifest(int8_artifact)
    assert manifest["labels"] == LABELS
    assert manifest["preprocessing"]["max_length"] == 32 and manifest["preprocessing"]["pad_token"] == "[PAD]"
    assert manifest["source"]["run"] == str(trained_run) and manifest["source"]["recipe"]["name"] == "tiny"
    assert set(manifest["versions"]) >= {"torch", "transformers", "optimum", "onnx", "onnxruntime", "edgesent"}
    card = (int8_artifact / "README.md").read_text()
    front = card.split("---")[1]
    import yaml

    meta = yaml.safe_load(front)
    assert meta["library_name"] == "onnxruntime" and "int8" in meta["tags"] and meta["metrics"] == ["accuracy"]
    assert "| model.int8.onnx | int8 |" in card and "Intended use and limitations" in card


def test_tampered_and_lfs_pointer_files_are_refused(int8_artifact, tmp_path):
    import shutil

    copy = shutil.copytree(int8_artifact, tmp_path / "copy")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx does not match its sha256") as info:
        load_manifest(copy)
    assert "\n" not in str(info.value)
    (copy / "model.onnx").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ArtifactError, match="model.onnx is a git-lfs pointer"):
        load_manifest(copy)


def _int8_predictions(monkeypatch, wrong: dict[int, int]):
    """Make the n-th INT8 candidate scored by the gate (0-based) wrong on `wrong[n]` texts that fp32 gets
    right, i.e. a variant that really disagrees with fp32 (the ONNX files themselves are real)."""
    import edgesent.export.quantize as Q

    real = Q.onnx_predictions
    calls = {"candidate": 0}

    def patched(path, preprocessor, texts, *args, **kwargs):
        preds = np.asarray(real(path, preprocessor, texts, *args, **kwargs))
        if Path(path).name.startswith(".candidate"):
            n = wrong.get(calls["candidate"], 0)
            calls["candidate"] += 1
            preds = preds.copy()
            preds[:n] = 1 - preds[:n]
        return preds

    monkeypatch.setattr(Q, "onnx_predictions", patched)


def test_gate_falls_back_through_every_variant_then_keeps_fp32_only(trained_run, tmp_path, monkeypatch):
    """Every variant is significantly worse than fp32 (20 of 40 texts flipped): each is tried, in table order,
    then the artifact is written fp32-only and GateError raised."""
    _int8_predictions(monkeypatch, {0: 20, 1: 20, 2: 20})
    out = tmp_path / "artifact"
    with pytest.raises(GateError, match=r"INT8 accuracy gate failed.*significantly on 40 texts.*fp32-only artifact") as info:
        E.export(trained_run, out, int8=True, max_drop=0.5, calibration=16, eval_limit=40)
    assert "\n" not in str(info.value)
    manifest = load_manifest(out)
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    assert not list(out.glob("*.candidate*"))
    q = manifest["quantization"]
    assert [a["variant"] for a in q["attempts"]] == [
        "dynamic_per_channel", "dynamic_per_channel_keep_head_last_block", "static_qdq"]
    assert all(not a["passed"] and a["drop_points"] > 0.5 and a["mcnemar_p"] < 0.05 for a in q["attempts"])
    assert all(a["decision"].startswith("fail") for a in q["attempts"])
    assert q["attempts"][1]["excluded_nodes"] > 0 and q["attempts"][2]["calibration_texts"] == 16
    assert q["winner"] is None and q["eval_size"] == 40 and q["resolution_points"] == 15.0
    assert list(manifest["models"]) == ["model.onnx"]


def test_gate_falls_back_only_past_a_significantly_worse_variant(trained_run, tmp_path, monkeypatch):
    """The first variant disagrees on 20 of 40 texts (significant): the gate moves to the next, which agrees."""
    _int8_predictions(monkeypatch, {0: 20})
    q = load_manifest(E.export(trained_run, tmp_path / "a", int8=True, max_drop=0.5, calibration=16,
                               eval_limit=40))["quantization"]
    assert [a["variant"] for a in q["attempts"]] == ["dynamic_per_channel", "dynamic_per_channel_keep_head_last_block"]
    assert not q["attempts"][0]["passed"] and q["winner"]["variant"] == "dynamic_per_channel_keep_head_last_block"


def test_gate_does_not_fall_back_on_evidence_that_cannot_tell_variants_apart(trained_run, tmp_path, monkeypatch, capsys):
    """32 texts, one flipped: a 3.1-point drop the paired test cannot tell from noise. The first variant is kept
    (no fall back to a later one) and the manifest says what this gate can resolve (6 of 32 texts = 18.75 points)."""
    _int8_predictions(monkeypatch, {0: 1, 1: 0, 2: 0})
    out = E.export(trained_run, tmp_path / "a", int8=True, max_drop=0.5, calibration=16, eval_limit=32)
    q = load_manifest(out)["quantization"]
    [attempt] = q["attempts"]
    assert attempt["variant"] == "dynamic_per_channel" and attempt["passed"]
    assert attempt["drop_points"] == pytest.approx(3.125) and attempt["decision"].startswith("inconclusive")
    assert q["resolution_points"] == 18.75 and "resolves accuracy differences of 18.75 points" in q["gate"]
    assert "within noise" in capsys.readouterr().err


def test_static_int8_and_fp16(trained_run, sentiment_data, tmp_path):
    out = E.export(trained_run, tmp_path / "artifact", static=True, fp16=True, calibration=16, eval_limit=40,
                   eval_data=str(sentiment_data))
    manifest = load_manifest(out)
    q = manifest["quantization"]
    assert q["eval_size"] == 40 and "validation" in q["eval_data"]
    assert [a["variant"] for a in q["attempts"]] == ["static_qdq"] and q["winner"]["format"] == "QDQ"
    assert q["drop_points"] <= 0.5
    fp16 = manifest["models"]["model.fp16.onnx"]
    assert fp16["precision"] == "fp16" and fp16["max_prob_diff"] <= 1e-2
    assert manifest["models"]["model.int8.onnx"]["scheme"] == "static"


def test_cli_gate_failure_is_one_line_and_exit_code_3(trained_run, tmp_path, capsys, monkeypatch):
    from edgesent.cli import main

    _int8_predictions(monkeypatch, {0: 20, 1: 20, 2: 20})
    with pytest.raises(SystemExit) as info:
        main(["export", str(trained_run), "--int8", "--max-drop", "0", "--eval-limit", "20", "--calibration", "8",
              "--out", str(tmp_path / "a")])
    assert info.value.code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: INT8 accuracy gate failed") and "\n" not in err
    assert (tmp_path / "a" / "model.onnx").is_file()


def test_optimum_loads_the_artifact(int8_artifact):
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from tokenizers import Tokenizer

    from edgesent.textproc import Preprocessor

    manifest = load_manifest(int8_artifact)
    pre = Preprocessor.from_manifest(Tokenizer.from_file(str(int8_artifact / "tokenizer.json")), manifest["preprocessing"])
    model = ORTModelForSequenceClassification.from_pretrained(int8_artifact, file_name="model.onnx")
    for feed in mixed_batches(pre):
        inputs = {k: torch.from_numpy(v) for k, v in feed_for(feed, dict.fromkeys(manifest["inputs"], np.int64)).items()}
        got = model(**inputs).logits.numpy()
        assert np.abs(got - session_logits(int8_artifact / "model.onnx", feed)).max() <= 1e-6


# ------------------------------------------------------------------------------------------------
def test_default_source_is_newest_run_and_stale_partials_are_cleared(trained_run, monkeypatch):
    monkeypatch.chdir(trained_run.parent.parent)  # the folder holding exports/
    stale = trained_run / f".artifact.partial-{2**22 + 12345}"  # a pid that does not exist
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half written")
    try:
        out = E.export(None)
        assert out == trained_run / "artifact" and not stale.exists()
        assert load_manifest(out)["models"]["model.onnx"]["precision"] == "fp32"
        with pytest.raises(EdgesentError, match="already exists .*--overwrite"):
            E.export(None)
        assert E.export(None, overwrite=True) == out
    finally:
        import shutil

        shutil.rmtree(trained_run / "artifact", ignore_errors=True)


def test_bad_sources_give_one_line_errors(tmp_path):
    from edgesent.errors import ModelError

    with pytest.raises(ModelError, match="export source not found"):
        E.export(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither an edgesent run folder"):
        E.export(tmp_path / "empty")
    os.makedirs(tmp_path / "exports")
    with pytest.raises(ModelError, match="no finished run folder"):
        E.find_latest_run(tmp_path / "exports")
