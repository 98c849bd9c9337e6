"""Distillation and layer dropping (edgesent/distill.py, edgesent.model.keep_layers) on tiny models.

- keep_layers copies the right weights (student block k == teacher block keep[k]; embeddings and
  head equal) for BERT and GPT-NeoX, and the smaller model saves and loads back as itself;
- the loss equals a hand computation (numpy) on a fixed batch;
- a 2-block student distilled from a trained 4-block teacher's artifact reaches >= 90 % test
  accuracy and agrees with the teacher on >= 90 % of the test texts; the artifact names the teacher;
- the teacher-logit cache is reused when nothing changed and recomputed when the teacher changes;
- bad configs are one-line errors before any training (no run folder is created).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TOKENIZER_KIND, make_tokenizer, tiny_config, tiny_recipe, write_sentiment_data

from edgesent import archs, distill
from edgesent.config import validate_recipe
from edgesent.errors import EdgesentError


def make_deep_model_dir(kind: str, out: Path, layers: int = 4, seed: int = 0) -> Path:
    """A tiny random classifier like conftest.make_model_dir, but with `layers` blocks."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tok = make_tokenizer(TOKENIZER_KIND.get(kind, kind), out)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        tok.save_pretrained(out)
    config = tiny_config(kind, len(tok), tok.pad_token_id, tok=tok)
    setattr(config, archs.arch_for(config).depth_key, layers)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sentiment_data(tmp_path_factory.mktemp("data"), n_train=480, n_val=80, n_test=160)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, data):
    """A trained 4-block BERT teacher run folder with its INT8-free artifact."""
    from edgesent.export import export
    from edgesent.train import train

    root = tmp_path_factory.mktemp("teacher")
    model_dir = make_deep_model_dir("bert", root / "base", layers=4)
    recipe = validate_recipe(tiny_recipe(model_dir, data, root / "runs", name="teacher"))
    run = train(recipe, out=root / "runs" / "teacher")
    export(run)
    return run


def student_recipe(teacher_run: Path, data: Path, out_root: Path, teacher: str | None = None, **model) -> dict:
    recipe = tiny_recipe(teacher_run, data, out_root, name="student",
                         model={"name_or_path": str(teacher_run), "keep_layers": [0, 3], **model})
    recipe["distill"] = {"teacher": teacher or str(teacher_run / "artifact"), "temperature": 2.0, "alpha": 0.5}
    return recipe


# --------------------------------------------------------------------------------------------
# keep_layers


@pytest.mark.parametrize("kind", ["bert", "gpt_neox", "distilbert", "roberta", "gpt2"])
def test_keep_layers_copies_the_right_weights(kind, tmp_path):
    import torch

    from edgesent.model import build_model, load_model_dir, load_tokenizer

    model_dir = make_deep_model_dir(kind, tmp_path / "m", layers=4)
    teacher = load_model_dir(model_dir)
    recipe = validate_recipe(tiny_recipe(model_dir, tmp_path, tmp_path / "runs", model={"keep_layers": [1, 3]}))
    tok = load_tokenizer(str(model_dir))
    student = build_model(recipe, ["negative", "positive"], tok)
    arch = archs.arch_for(student.config)
    assert len(archs.blocks(student)) == 2 and arch.num_layers(student.config) == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    prefix = arch.layers + "."
    for name, value in s_state.items():
        if name.startswith(prefix):
            k, rest = name[len(prefix):].split(".", 1)
            source = f"{prefix}{[1, 3][int(k)]}.{rest}"
        else:
            source = name  # embeddings, final norms, head
        assert torch.equal(value, t_state[source]), name
    assert not any(n.startswith(prefix + "2.") for n in s_state)

    student.eval()
    student.save_pretrained(tmp_path / "student", safe_serialization=True)
    back = load_model_dir(tmp_path / "student")
    ids = torch.tensor([tok("a great film").input_ids])
    torch.testing.assert_close(back(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6, rtol=0)


def test_keep_layers_refuses_families_with_unlike_blocks(tmp_path):
    from edgesent.model import build_model, load_tokenizer

    model_dir = make_deep_model_dir("modernbert", tmp_path / "m", layers=3)
    recipe = validate_recipe(tiny_recipe(model_dir, tmp_path, tmp_path / "runs", model={"keep_layers": [0, 2]}))
    with pytest.raises(EdgesentError, match="blocks of modernbert models differ"):
        build_model(recipe, ["negative", "positive"], load_tokenizer(str(model_dir)))


def test_keep_layers_schema_refuses_unsorted_and_duplicates():
    base = {"name": "x", "model": {"name_or_path": "m"}}
    for bad in ([2, 1], [1, 1], [-1, 2]):
        with pytest.raises(EdgesentError, match="model.keep_layers"):
            validate_recipe({**base, "model": {"name_or_path": "m", "keep_layers": bad}})


# --------------------------------------------------------------------------------------------
# The loss


def test_distill_loss_equals_hand_computation():
    import torch

    s = np.array([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]], dtype=np.float32)
    t = np.array([[3.0, -2.0], [-0.2, 0.4], [0.0, 2.0]], dtype=np.float32)
    y = np.array([0, 1, 1])
    temperature, alpha = 2.0, 0.3

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    kl = float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)))
    ce = float(np.mean(-np.log(softmax(s)[np.arange(3), y])))
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    got = distill.distill_loss(torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y), temperature, alpha)
    assert abs(float(got) - expected) < 1e-6
    # alpha 0 is plain cross-entropy; identical logits give zero soft loss
    assert abs(float(distill.distill_loss(torch.from_numpy(s), torch.from_numpy(s), torch.from_numpy(y), 4.0, 1.0))) < 1e-6


# --------------------------------------------------------------------------------------------
# End to end: distil, export, compare with the teacher


def test_distilled_student_matches_teacher(teacher_run, data, tmp_path):
    import pandas as pd

    from edgesent.artifact import load_manifest
    from edgesent.export import export
    from edgesent.runtime import Classifier
    from edgesent.train import train

    recipe = validate_recipe(student_recipe(teacher_run, data, tmp_path / "runs"))
    run = train(recipe, out=tmp_path / "runs" / "student")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.90, metrics["test"]
    assert metrics["distill"]["teacher_kind"] == "artifact" and metrics["distill"]["keep_layers"] == [0, 3]
    assert metrics["total_params"] < json.loads((teacher_run / "metrics.json").read_text())["total_params"]

    artifact = export(run)
    test = pd.read_parquet(data / "test.parquet")
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    student = Classifier(artifact, model="fp32").logits(texts).argmax(-1)
    teacher = Classifier(teacher_run / "artifact", model="fp32").logits(texts).argmax(-1)
    assert (student == labels).mean() >= 0.90
    assert (student == teacher).mean() >= 0.90
    manifest = load_manifest(artifact)
    assert manifest["source"]["distill"]["teacher"] == str(teacher_run / "artifact")
    assert manifest["source"]["keep_layers"] == [0, 3]
    card = (artifact / "README.md").read_text()
    assert "Distilled from the teacher" in card and "[0, 3]" in card


def test_student_with_another_tokenizer_learns_from_the_artifact(teacher_run, data, tmp_path):
    """A GPT-NeoX student (its own BPE tokenizer, random init) distilled from the BERT teacher's artifact."""
    from edgesent.train import train

    neox = make_deep_model_dir("gpt_neox", tmp_path / "neox", layers=2)
    recipe = tiny_recipe(neox, data, tmp_path / "runs", name="neox_student",  # test_train.py's GPT-NeoX settings
                         model={"pad_token": "eos", "head": "mlp", "head_lr_multiplier": 10},
                         training={"lr": 1e-3, "epochs": 6, "warmup_ratio": 0.1})
    recipe["distill"] = {"teacher": str(teacher_run / "artifact"), "alpha": 0.7}
    run = train(validate_recipe(recipe), out=tmp_path / "runs" / "neox")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["distill"]["teacher_kind"] == "artifact" and metrics["distill"]["alpha"] == 0.7
    assert metrics["test"]["accuracy"] >= 0.90, metrics["test"]


# --------------------------------------------------------------------------------------------
# The teacher-logit cache


def test_teacher_cache_reused_then_recomputed_when_the_teacher_changes(teacher_run, data, tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "teacher-model"
    shutil.copytree(teacher_run / "model", folder)
    shutil.copytree(teacher_run / "tokenizer", folder, dirs_exist_ok=True)
    recipe = validate_recipe(student_recipe(teacher_run, data, tmp_path / "runs", teacher=str(folder)))
    texts = ["a great film", "an awful boring plot", "it was quite moving"]
    calls = []
    real = distill._torch_logits
    monkeypatch.setattr(distill, "_torch_logits", lambda *a: calls.append(1) or real(*a))

    first, path, reused = distill.teacher_logits(recipe, distill.resolve_teacher(recipe), texts)
    assert not reused and path.is_file() and len(calls) == 1
    again, path2, reused = distill.teacher_logits(recipe, distill.resolve_teacher(recipe), texts)
    assert reused and path2 == path and len(calls) == 1
    np.testing.assert_array_equal(first, again)
    _, other, _ = distill.teacher_logits(recipe, distill.resolve_teacher(recipe), texts[:2])  # other data: new key
    assert other != path and len(calls) == 2

    state = load_file(folder / "model.safetensors")
    state = {k: v + 0.05 if k.startswith("classifier") else v for k, v in state.items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    changed, path3, reused = distill.teacher_logits(recipe, distill.resolve_teacher(recipe), texts)
    assert not reused and path3 != path and len(calls) == 3
    assert not np.allclose(changed, first)


# --------------------------------------------------------------------------------------------
# Bad configs: one line, before any training


def _bad_cases(teacher_run: Path, data: Path, root: Path) -> dict:
    other_labels = student_recipe(teacher_run, data, root)
    other_labels["data"]["labels"] = ["bad", "good"]
    itself = student_recipe(teacher_run, data, root, teacher=str(teacher_run))
    del itself["model"]["keep_layers"]
    return {
        "teacher not found": (student_recipe(teacher_run, data, root, teacher=str(root / "nope")), "distill.teacher not found"),
        "label mismatch": (other_labels, "has labels ['negative', 'positive']"),
        "out of range": (student_recipe(teacher_run, data, root, keep_layers=[0, 4]), "[4] out of range"),
        "teacher is the student": (itself, "is the student itself"),
    }


@pytest.mark.parametrize("case", ["teacher not found", "label mismatch", "out of range", "teacher is the student"])
def test_bad_configs_fail_in_one_line_before_training(case, teacher_run, data, tmp_path, capsys):
    from edgesent.cli import main

    recipe, fragment = _bad_cases(teacher_run, data, tmp_path / "runs")[case]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", str(path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("student*"))
