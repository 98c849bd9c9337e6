"""Recipes: every shipped recipe validates; bad ones are refused with one line naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgesent.config import load_recipe
from edgesent.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

BASE = {"name": "t", "model": {"name_or_path": "some/model"}, "training": {"lr": 1e-4, "batch_size": 8}}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    # IMDB everywhere, except the Pythia-14M card's search, which used the card's own data set
    assert recipe.data.dataset == ("jtatman/movie_sentiment_reviews" if path.stem == "pythia14m_sweep" else "stanfordnlp/imdb")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert header, "a recipe starts with a comment header"
    # the header names the exact command that runs it
    assert any(f"edgesent {cmd} recipes/{path.name}" in line for line in header for cmd in ("train", "sweep"))


def test_pythia_recipe_settings():
    r = load_recipe(ROOT / "recipes" / "pythia14m.yaml")
    assert (r.model.name_or_path, r.model.method, r.model.head, r.model.head_lr_multiplier) == (
        "EleutherAI/pythia-14m", "full", "mlp", 10)
    assert (r.training.lr, r.training.batch_size, r.training.epochs, r.data.max_length) == (7.36e-05, 16, 3, 512)
    assert (r.training.weight_decay, r.training.warmup_ratio, r.training.scheduler) == (0.0017, 0.165, "cosine")
    assert r.model.pad_token == "<|endoftext|>"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def with_(section: str, key: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.setdefault(section, {})[key] = value
    return data


CASES = [
    ("typo", with_("training", "lrr", 1e-3), "unknown key 'training.lrr' (did you mean 'training.lr'?)"),
    ("synonym", with_("training", "learning_rate", 1e-3), "(did you mean 'training.lr'?)"),
    ("wrong-section", with_("data", "epochs", 2), "unknown key 'data.epochs' (did you mean 'training.epochs'?)"),
    ("wrong-type", with_("training", "epochs", "three"), "invalid value for 'training.epochs': 'three'"),
    ("lr-zero", with_("training", "lr", 0), "invalid value for 'training.lr': 0"),
    ("lr-negative", with_("training", "lr", -0.1), "invalid value for 'training.lr': -0.1"),
    ("batch-zero", with_("training", "batch_size", 0), "invalid value for 'training.batch_size': 0"),
    ("bad-choice", with_("data", "truncation", "middle"), "invalid value for 'data.truncation': 'middle'"),
    ("bad-resplit", with_("data", "resplit", [0.5, 0.5]), "invalid value for 'data.resplit'"),
    ("syntax", "name: t\nmodel: [unclosed\n", "YAML syntax error at line"),
    ("empty", "", "the recipe is empty"),
    ("list", "- a\n", "expected a mapping of sections at the top level"),
]


@pytest.mark.parametrize("data,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_recipes(data, fragment, tmp_path):
    path = write(tmp_path, data)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert str(path) in message


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("override,fragment", [
    ("training.lr=-1", "invalid value for 'training.lr': -1"),
    ("training.batch_size=0", "invalid value for 'training.batch_size': 0"),
    ("training.epoch=3", "unknown key 'training.epoch' (did you mean 'training.epochs'?)"),
    ("training.lr", "expected section.key=value"),
])
def test_overrides_are_validated(override, fragment, tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, BASE), [override])
    assert fragment in str(info.value)


def test_overrides_apply(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["training.lr=3e-4", "model.lora.target_modules=query,key", "data.max_length=64"])
    assert (r.training.lr, r.model.lora.target_modules, r.data.max_length) == (3e-4, ["query", "key"], 64)


# --------------------------------------------------------------------------------------------
def test_cli_train_bad_recipe_one_line(tmp_path, capsys):
    from edgesent.cli import main

    path = write(tmp_path, with_("training", "lrr", 1e-3))
    with pytest.raises(SystemExit) as info:
        main(["train", str(path), "--set", "data.max_length=64"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path}: unknown key 'training.lrr' (did you mean 'training.lr'?)")


def test_cli_train_subprocess_no_traceback(tmp_path):
    path = write(tmp_path, with_("training", "batch_size", 0))
    proc = subprocess.run([sys.executable, "-m", "edgesent", "train", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: invalid value for 'training.batch_size': 0 (Input should be greater than 0)"]
