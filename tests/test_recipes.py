"""The shipped recipes: every one passes `edgesent train --dry-run`, and the seed systems' recipes train,
export, match PyTorch and quantize on a tiny model of their family.

Nothing is downloaded: the dry run of a hub id says so without contacting the hub (the conftest sets
HF_HUB_OFFLINE, so a contact would fail loudly), and the training cases swap the hub ids for tiny local
models and synthetic data, keeping each recipe's method, head and training settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, write_sentiment_data

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# recipe -> tiny family; pythia14m_sweep trains its LoRA choice (the card's search covers full, lora and frozen)
SEED_SYSTEMS = {"gpt2": ("gpt2", []), "bert_large": ("bert", []), "roberta_large": ("roberta", []),
                "modernbert_base": ("modernbert", []), "modernbert_large": ("modernbert", []),
                "pythia14m_sweep": ("gpt_neox", ["model.method=lora"])}




@pytest.fixture(scope="module")
def tiny(model_factory):
    return model_factory  # conftest's cached tiny model per family



@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return write_sentiment_data(tmp_path_factory.mktemp("recipe-data"), n_train=96, n_val=32, n_test=64)


def tiny_overrides(model_dir: Path, data_dir: Path, out_root: Path) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"data.dataset={data_dir}", "data.max_length=32", "data.resplit=null",
            "data.max_train_samples=null", "data.max_eval_samples=null", "data.max_test_samples=null",
            "training.epochs=1", "training.precision=fp32", "training.threads=1", "training.logging_steps=2",
            f"output_dir={out_root}"]


# --------------------------------------------------------------------------------------------


def test_the_seed_systems_have_recipes():
    names = {p.stem for p in RECIPES}
    assert set(SEED_SYSTEMS) <= names
    for name in SEED_SYSTEMS:
        header = (ROOT / "recipes" / f"{name}.yaml").read_text().splitlines()[0]
        assert header.startswith(f"# edgesent {'sweep' if 'sweep' in name else 'train'} recipes/{name}.yaml")


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_passes_dry_run(recipe, capsys):
    code, out, err = run_cli(["train", recipe, "--dry-run"], capsys)
    assert code == 0, err
    text = recipe.read_text()
    assert f"# resolved recipe ({recipe})" in out and f"dry run of {recipe}: nothing downloaded, nothing trained" in out
    import yaml

    data = yaml.safe_load(text)
    assert f"  model:     {data['model']['name_or_path']}: hub id, would download from the hub" in out
    assert f"  data:      {data['data']['dataset']}: hub id, would download from the hub" in out
    assert f"  method:    {data['model'].get('method', 'full')}" in out
    assert "trainable: unknown until the config is downloaded" in out
    assert f"run:       exports/{data['name']}-<timestamp>" in out
    if "sweep" in data:
        assert all(f"             {key}: " in out for key in data["sweep"]["space"])
    assert err.strip() == ""  # no library chatter without --debug


def test_dry_run_counts_local_models_and_reads_local_data(tiny, small_data, tmp_path, capsys):
    from edgesent.config import load_recipe
    from edgesent.model import build_model, count_parameters, load_tokenizer

    sets = tiny_overrides(tiny("roberta"), small_data, tmp_path / "exports")
    code, out, err = run_cli(["train", ROOT / "recipes/roberta_large.yaml", "--dry-run", *sum((["--set", s] for s in sets), [])],
                             capsys)
    assert code == 0, err
    recipe = load_recipe(ROOT / "recipes/roberta_large.yaml", sets)
    tok = load_tokenizer(recipe.model.name_or_path)
    trainable, total = count_parameters(build_model(recipe, list(recipe.data.labels), tok))
    assert trainable < total
    assert f"trainable: {trainable:,} of {total:,} parameters" in out
    assert "data:      train 96 rows, validation 32 rows, test 64 rows" in out
    assert "steps" in out and not list((tmp_path / "exports").glob("*"))  # nothing written


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--set", "training.lr=-1"], "invalid value for 'training.lr'"),
    (["--set", "training.learning_rate=1e-4"], "did you mean 'training.lr'?"),
    (["--set", "model.name_or_path=/no/such/model"], "model folder not found: /no/such/model"),
    (["--set", "data.dataset=./no/such/data.parquet"], "data not found: ./no/such/data.parquet"),
    (["--set", "model.lora.target_modules=nothing_here,nor_this", "--set", "model.method=lora",
      "--set", "model.name_or_path=LOCAL"], "model.lora.target_modules ['nothing_here', 'nor_this'] match no module"),
])
def test_dry_run_refuses_what_training_would_refuse(flags, fragment, tiny, capsys):
    flags = [f.replace("LOCAL", str(tiny("bert"))) for f in flags]
    code, out, err = run_cli(["train", ROOT / "recipes/bert_large.yaml", "--dry-run", *flags], capsys)
    assert code != 0
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("name", sorted(SEED_SYSTEMS))
def test_seed_recipe_trains_exports_and_quantizes_a_tiny_model(name, tiny, small_data, tmp_path, capsys):
    """The recipe's own method/head/schedule on a tiny model: trainable count as the dry run said, parity, INT8."""
    import numpy as np

    from edgesent.artifact import file_for, load_manifest
    from edgesent.config import load_recipe
    from edgesent.dryrun import dry_run
    from edgesent.export import export
    from edgesent.runtime import Classifier
    from edgesent.train import train

    family, extra = SEED_SYSTEMS[name]
    sets = tiny_overrides(tiny(family), small_data, tmp_path / "exports") + extra
    path = ROOT / "recipes" / f"{name}.yaml"
    predicted = dry_run(path, sets, show=False)["model"]
    recipe = load_recipe(path, sets)
    run = train(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 6  # 96 rows / batch 16, one epoch
    assert (metrics["trainable_params"], metrics["total_params"]) == (predicted["trainable_params"],
                                                                      predicted["total_params"])
    if recipe.model.method != "full":
        assert metrics["trainable_params"] < metrics["total_params"]

    artifact = export(run, tmp_path / "artifact", int8=True, max_drop=100)
    manifest = load_manifest(artifact)
    assert manifest["validation"]["max_abs_diff"] <= 1e-4
    assert manifest.models[file_for("int8")].precision == "int8"
    texts = ["a wonderful and moving film", "dull boring awful plot", "the cast was great"]
    fp32 = Classifier(artifact, model="fp32", threads=1).logits(texts, 8)
    int8 = Classifier(artifact, model="int8", threads=1).logits(texts, 8)
    assert fp32.shape == int8.shape == (3, 2) and np.isfinite(int8).all()
    assert np.abs(fp32 - int8).max() < 0.5  # INT8 stays near fp32 on a tiny model's small logits


def test_pythia_sweep_space_builds_every_method_with_the_default_lora_targets(tiny, small_data, tmp_path):
    """Each categorical method choice of the card's search yields a valid trial; LoRA finds GPT-NeoX's targets."""
    from edgesent.config import load_recipe
    from edgesent.model import build_model, count_parameters, load_tokenizer
    from edgesent.sweep import check_space, trial_recipe

    base = load_recipe(ROOT / "recipes/pythia14m_sweep.yaml", tiny_overrides(tiny("gpt_neox"), small_data, tmp_path))
    check_space(base)
    assert base.model.lora.target_modules is None
    tok = load_tokenizer(base.model.name_or_path, base.model.pad_token)
    counts = {}
    for method in base.sweep.space["model.method"].choices:
        model = build_model(trial_recipe(base, {"model.method": method}), ["negative", "positive"], tok)
        counts[method] = count_parameters(model)[0]
        if method == "lora":
            assert any("query_key_value.lora_A" in n for n, _ in model.named_parameters())
    assert counts["frozen"] < counts["lora"] < counts["full"]
