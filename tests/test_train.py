"""edgesent.train on tiny random models (hidden 32, 2 layers) and the separable synthetic reviews.

The models here are built with a 1000-token vocabulary (each synthetic word is one token; the
conftest default of 300 splits words into letters, which a 2-layer hidden-32 model learns slowly)
and without dropout, so that a few seconds of training reach >= 95% test accuracy reliably.
LoRA is tested the way it is used: on a backbone that was trained before (here: a full fine-tune
of the tiny RoBERTa) with a freshly initialised classification head.
"""

from __future__ import annotations

import json
from pathlib import Path

import conftest
import pytest
import torch
from conftest import tiny_recipe, write_sentiment_data
from transformers import TrainerCallback

from edgesent.config import validate_recipe
from edgesent.errors import EdgesentError

TEXTS = ["i loved this wonderful film", "the plot was dull and the ending awful", "a movie"]


def build_model_dir(kind: str, out: Path, vocab_size: int = 1000) -> Path:
    from transformers import AutoModelForSequenceClassification

    tok = conftest.make_tokenizer(kind, out, vocab_size=vocab_size)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        tok.save_pretrained(out)
    config = conftest.tiny_config(kind, len(tok), tok.pad_token_id)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "hidden_dropout", "attention_dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_sentiment_data(tmp_path_factory.mktemp("train-data"))


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory) -> Path:
    return build_model_dir("gpt_neox", tmp_path_factory.mktemp("neox"))


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    return build_model_dir("roberta", tmp_path_factory.mktemp("roberta"))


class Capture(TrainerCallback):
    """Keeps the optimizer, the model at the end of training and the step training (re)started at."""

    def __init__(self):
        self.optimizer = self.model = None
        self.start_step = None
        self.steps = 0

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer, self.start_step = optimizer, state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model  # after load_best_model_at_end


def logits_of(model, tokenizer, recipe) -> torch.Tensor:
    from edgesent.data import make_preprocessor

    pre = make_preprocessor(tokenizer, recipe.data)
    batch = {k: torch.from_numpy(v) for k, v in pre.pad(pre.encode(TEXTS)).items()}
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


def recipe_for(model_dir, data, out_root, **sections):
    sections.setdefault("data", {})
    sections["data"].setdefault("max_length", 64)
    return validate_recipe(tiny_recipe(model_dir, data, out_root, **sections))


# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def neox_run(neox_dir, data, tmp_path_factory):
    """Full fine-tune of tiny GPT-NeoX with the MLP head and a 10x head learning rate."""
    from edgesent.train import train

    recipe = recipe_for(neox_dir, data, tmp_path_factory.mktemp("neox-runs"),
                        model={"head": "mlp", "head_lr_multiplier": 10},
                        training={"lr": 1e-3, "epochs": 6, "warmup_ratio": 0.1})
    capture = Capture()
    run = train(recipe, callbacks=[capture])
    return run, recipe, capture


def test_full_mlp_head_reaches_95(neox_run):
    run, recipe, _ = neox_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
    assert metrics["validation"]["accuracy"] >= 0.9
    assert run.parent == Path(recipe.output_dir) and run.name.startswith("tiny-")
    for name in ("recipe.yaml", "train.log", "tokenizer/tokenizer.json", "model/model.safetensors", "model/config.json"):
        assert (run / name).is_file(), name
    assert metrics["trainable_params"] == metrics["total_params"] > 0
    assert metrics["test"]["confusion_matrix"][0][0] + metrics["test"]["confusion_matrix"][1][1] == round(
        metrics["test"]["accuracy"] * 120)
    assert set(metrics["test"]["report"]) >= {"negative", "positive", "macro avg"}
    assert metrics["train_tokens_per_s"] > 0 and metrics["peak_memory_mb"] > 0
    assert "step" in (run / "train.log").read_text()  # Trainer logs go to the file


def test_head_lr_is_ten_times_backbone(neox_run):
    _, recipe, capture = neox_run
    groups = capture.optimizer.param_groups
    head_ids = {id(p) for p in capture.model.score.parameters()}
    head_lrs = [g["initial_lr"] for g in groups if all(id(p) in head_ids for p in g["params"])]
    body_lrs = [g["initial_lr"] for g in groups if not any(id(p) in head_ids for p in g["params"])]
    assert len(head_lrs) + len(body_lrs) == len(groups) and head_lrs and body_lrs
    assert head_lrs == pytest.approx([10 * recipe.training.lr] * len(head_lrs))
    assert body_lrs == pytest.approx([recipe.training.lr] * len(body_lrs))
    # biases and LayerNorm weights get no weight decay
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    ln = capture.model.gpt_neox.final_layer_norm
    assert id(ln.weight) in no_decay and id(capture.model.score[1].bias) in no_decay


def test_mlp_head_shape(neox_run):
    _, _, capture = neox_run
    head = capture.model.score
    assert [type(m).__name__ for m in head] == ["Dropout", "Linear", "GELU", "Dropout", "Linear"]
    assert head[4].out_features == 2


def test_run_folder_loads_back_with_same_logits(neox_run):
    from edgesent.model import load_run

    run, recipe, capture = neox_run
    model, tokenizer, loaded_recipe = load_run(run)
    assert loaded_recipe == recipe
    assert model.config.edgesent_head["type"] == "mlp"
    torch.testing.assert_close(logits_of(model, tokenizer, recipe), logits_of(capture.model, tokenizer, recipe),
                               atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_roberta(roberta_dir, data, tmp_path_factory) -> Path:
    """The tiny RoBERTa after a full fine-tune, with a fresh random classification head."""
    from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

    from edgesent.model import load_run
    from edgesent.train import train

    recipe = recipe_for(roberta_dir, data, tmp_path_factory.mktemp("roberta-pre"),
                        training={"lr": 1e-3, "epochs": 4, "warmup_ratio": 0.1})
    model, tokenizer, _ = load_run(train(recipe))
    torch.manual_seed(1)
    model.classifier = RobertaClassificationHead(model.config)
    out = tmp_path_factory.mktemp("roberta-backbone")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_lora_reaches_95_and_loads_back(pretrained_roberta, data, tmp_path):
    from edgesent.model import load_model_dir, load_run
    from edgesent.train import train

    recipe = recipe_for(pretrained_roberta, data, tmp_path / "exports",
                        model={"method": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
                        training={"lr": 5e-3, "epochs": 3, "warmup_ratio": 0.1})
    capture = Capture()
    run = train(recipe, callbacks=[capture])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
    assert 0 < metrics["trainable_pct"] < 50
    assert (run / "adapter" / "adapter_config.json").is_file() and not (run / "model").exists()
    assert json.loads((run / "adapter" / "edgesent_labels.json").read_text()) == ["negative", "positive"]

    model, tokenizer, _ = load_run(run)
    expected = logits_of(capture.model, tokenizer, recipe)
    torch.testing.assert_close(logits_of(model, tokenizer, recipe), expected, atol=1e-5, rtol=1e-5)
    merged, _, _ = load_run(run, merge=True)
    torch.testing.assert_close(logits_of(merged, tokenizer, recipe), expected, atol=1e-4, rtol=1e-4)
    # the trained head is saved with the adapter: the untouched backbone folder scores near chance
    base = logits_of(load_model_dir(pretrained_roberta), tokenizer, recipe)
    assert not torch.allclose(base, expected, atol=1e-2)


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["frozen", "last_block"])
def test_frozen_and_last_block_train_only_what_they_should(method, neox_dir, data, tmp_path):
    from edgesent.model import load_model_dir
    from edgesent.train import train

    recipe = recipe_for(neox_dir, data, tmp_path / "exports", model={"method": method},
                        training={"max_steps": 3, "lr": 1e-2})
    capture = Capture()
    run = train(recipe, callbacks=[capture])
    trainable = {n for n, p in capture.model.named_parameters() if p.requires_grad}
    assert trainable >= {"score.weight"}
    last = f"gpt_neox.layers.{len(capture.model.gpt_neox.layers) - 1}."
    assert any(n.startswith(last) for n in trainable) == (method == "last_block")
    assert all(n == "score.weight" or n.startswith(last) for n in trainable)
    # frozen weights did not move; the head did
    before, after = load_model_dir(neox_dir).state_dict(), load_model_dir(run / "model").state_dict()
    assert torch.equal(before["gpt_neox.embed_in.weight"], after["gpt_neox.embed_in.weight"])
    assert torch.equal(before["gpt_neox.layers.0.attention.query_key_value.weight"],
                       after["gpt_neox.layers.0.attention.query_key_value.weight"])
    assert not torch.equal(before["score.weight"], after["score.weight"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainable_params"] < metrics["total_params"]


# --------------------------------------------------------------------------------------------
class Interrupt(TrainerCallback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.at_step:
            raise KeyboardInterrupt


def test_resume_continues_from_checkpoint(neox_dir, data, tmp_path):
    from edgesent.train import train

    sections = dict(model={"head": "mlp"}, training={"max_steps": 4, "eval_steps": 2, "lr": 1e-3, "epochs": 1})
    with pytest.raises(KeyboardInterrupt):
        train(recipe_for(neox_dir, data, tmp_path / "exports", **sections), callbacks=[Interrupt(4)])
    [run] = list((tmp_path / "exports").iterdir())
    assert (run / "checkpoints" / "checkpoint-4").is_dir() and not (run / "metrics.json").exists()

    sections["training"]["max_steps"] = 8
    capture = Capture()
    resumed = train(recipe_for(neox_dir, data, tmp_path / "exports", **sections), resume=True, callbacks=[capture])
    assert resumed == run
    assert capture.start_step == 4 and capture.steps == 4  # steps 5..8 only, not from 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 8
    state = json.loads((run / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_loss" in e] == [2, 4, 6, 8]

    with pytest.raises(EdgesentError, match="no unfinished run with a checkpoint"):
        train(recipe_for(neox_dir, data, tmp_path / "exports", **sections), resume=True)


def test_seeds_write_mean_and_std(neox_dir, data, tmp_path, capsys):
    import yaml

    from edgesent.train import train_cli

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(neox_dir, data, tmp_path / "exports",
                                               training={"max_steps": 2, "epochs": 1})))
    train_cli(path, overrides=["data.max_length=64"], seeds=[1, 2])
    out = capsys.readouterr().out
    runs = sorted(p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    assert [r.name.split("-")[-1] for r in runs] == ["seed1", "seed2"]
    [summary_path] = (tmp_path / "exports").glob("tiny-seeds-*.json")
    summary = json.loads(summary_path.read_text())
    accs = [json.loads((r / "metrics.json").read_text())["test"]["accuracy"] for r in runs]
    assert summary["test"]["accuracy"]["values"] == accs
    assert summary["test"]["accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    assert [json.loads((r / "metrics.json").read_text())["seed"] for r in runs] == [1, 2]
    assert f"accuracy   {summary['test']['accuracy']['mean']:.4f} ± " in out


# --------------------------------------------------------------------------------------------
def test_bf16_cpu_mixed_precision_with_length_grouping(roberta_dir, data, tmp_path, monkeypatch):
    """precision bf16 on CPU (autocast, fp32 master weights) trains to >= 95 %, saves fp32 weights,
    and group_by_length batches similar lengths (far less padding than random batches of the same texts)."""
    import random

    import numpy as np
    from safetensors import safe_open

    from edgesent import data as data_mod
    from edgesent.train import train

    padded, real = [], []
    original = data_mod.PadCollator.__call__

    def spy(self, features):
        lengths = [len(f["input_ids"]) for f in features]
        padded.append(max(lengths) * len(lengths))
        real.append(sum(lengths))
        return original(self, features)

    monkeypatch.setattr(data_mod.PadCollator, "__call__", spy)
    recipe = recipe_for(roberta_dir, data, tmp_path / "exports",
                        training={"lr": 1e-3, "epochs": 4, "warmup_ratio": 0.1, "precision": "bf16",
                                  "group_by_length": True, "batch_size": 8})
    run = train(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["device"] == "cpu"
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
    with safe_open(run / "model" / "model.safetensors", "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float32}

    # padding of the training batches vs the same texts batched at random
    from edgesent.data import load_splits, make_preprocessor
    from edgesent.model import load_tokenizer

    pre = make_preprocessor(load_tokenizer(str(roberta_dir)), recipe.data)
    lengths = [len(ids) for ids in pre.encode(load_splits(recipe)["train"].texts)]
    rng = random.Random(0)
    waste_random = []
    for _ in range(20):
        rng.shuffle(lengths)
        batches = [lengths[i:i + 8] for i in range(0, len(lengths), 8)]
        waste_random.append(sum(max(b) * len(b) - sum(b) for b in batches) / sum(lengths))
    train_batches = len(lengths) // 8 + (len(lengths) % 8 > 0)
    waste_grouped = (sum(padded[:train_batches]) - sum(real[:train_batches])) / sum(real[:train_batches])
    assert np.mean(waste_random) > 0.05, "the synthetic texts vary too little in length for this check"
    assert waste_grouped < 0.5 * np.mean(waste_random), (waste_grouped, np.mean(waste_random))
