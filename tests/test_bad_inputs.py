"""Bad input never surfaces as a traceback: every case is one `error:` line naming the problem.

Table-driven: each case builds one broken input (recipe, data file, model folder, artifact), runs
the real CLI entry point in-process (`edgesent.cli.main`), and checks the exit code is non-zero,
stderr is exactly one line starting with `error:`, the expected fragment (file, key, column, row
count ...) is in it, and no traceback was printed. A few cases go through a subprocess to check
the same from the outside. Hostile *texts* (empty, 1 MB, emoji/RTL, control characters, 100k rows)
are the opposite case: they must be classified, not refused, with memory staying flat.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_cli, sentences, tiny_recipe

from edgesent import artifact as art

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 32


# --------------------------------------------------------------------------------------------
# Helpers




def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"expected a failure, got exit 0 (stderr: {err!r})"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_dir(model_factory) -> Path:
    return model_factory("bert")


@pytest.fixture()
def base_recipe(bert_dir, sentiment_data, tmp_path) -> dict:
    """A valid tiny recipe (1 short epoch) whose runs land under tmp_path."""
    return tiny_recipe(bert_dir, sentiment_data, tmp_path / "exports",
                       training={"epochs": 1, "max_steps": 2, "batch_size": 16})


def build_artifact(model_dir: Path, out: Path) -> Path:
    """An fp32 artifact of `model_dir`: edgesent.export when present, else the same layout by hand."""
    try:
        from edgesent.export import export
    except ImportError:
        export = None
    if export is not None:
        return Path(export(str(model_dir), out, overwrite=True))
    from optimum.exporters.onnx import main_export
    from transformers import AutoTokenizer

    from edgesent.textproc import Preprocessor

    main_export(str(model_dir), output=out, task="text-classification", no_post_process=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    pre = Preprocessor.create(tok.backend_tokenizer, max_length=MAX_LENGTH, pad_token_id=tok.pad_token_id)
    manifest = {"labels": ["negative", "positive"], "preprocessing": pre.to_manifest(tok.pad_token),
                "source": {"base_model": str(model_dir), "recipe": {"name": "tiny"}, "method": "full"},
                "models": {"model.onnx": {"precision": "fp32", "metrics": {}}}}
    art.write_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def artifact_dir(bert_dir, tmp_path_factory) -> Path:
    return build_artifact(bert_dir, tmp_path_factory.mktemp("bad-inputs") / "artifact")


@pytest.fixture()
def artifact_copy(artifact_dir, tmp_path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(artifact_dir, tmp_path / "artifact"))


# --------------------------------------------------------------------------------------------
# Recipes: `edgesent train RECIPE` must refuse before any work.


def _set(path: str, value):
    def mutate(recipe: dict) -> dict:
        *parents, leaf = path.split(".")
        node = recipe
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return recipe
    return mutate


def _drop(key: str):
    def mutate(recipe: dict) -> dict:
        recipe.pop(key)
        return recipe
    return mutate


RECIPE_CASES = [
    ("unknown-key", _set("training.frobnicate", 1), "unknown key 'training.frobnicate'"),
    ("typo-did-you-mean", _set("training.epoch", 2), "unknown key 'training.epoch' (did you mean 'training.epochs'?)"),
    ("synonym-did-you-mean", _set("training.learning_rate", 1e-4),
     "unknown key 'training.learning_rate' (did you mean 'training.lr'?)"),
    ("key-in-wrong-section", _set("model.lr", 1e-4), "unknown key 'model.lr' (did you mean 'training.lr'?)"),
    ("wrong-type", _set("training.batch_size", "sixteen"), "invalid value for 'training.batch_size': 'sixteen'"),
    ("lr-zero", _set("training.lr", 0), "invalid value for 'training.lr': 0 (Input should be greater than 0)"),
    ("lr-negative", _set("training.lr", -1e-3), "invalid value for 'training.lr': -0.001"),
    ("batch-size-zero", _set("training.batch_size", 0), "invalid value for 'training.batch_size': 0"),
    ("missing-model", _drop("model"), "missing required key 'model'"),
    ("bad-method", _set("model.method", "qlora"), "invalid value for 'model.method': 'qlora'"),
]


@pytest.mark.parametrize("mutate,fragment", [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES])
def test_bad_recipe(mutate, fragment, base_recipe, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    recipe = write_yaml(tmp_path / "bad.yaml", mutate(base_recipe))
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line_error(code, err, fragment)
    assert str(recipe) in err  # names the file
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


RAW_RECIPE_CASES = [
    ("yaml-syntax", "name: t\nmodel:\n  name_or_path: [unclosed\n", "YAML syntax error at line"),
    ("yaml-tab-indent", "name: t\nmodel:\n\tname_or_path: x\n", "YAML syntax error"),
    ("empty-file", "", "the recipe is empty"),
    ("only-comments", "# nothing here\n", "the recipe is empty"),
    ("top-level-list", "- a\n- b\n", "expected a mapping of sections at the top level, got list"),
]


@pytest.mark.parametrize("text,fragment", [c[1:] for c in RAW_RECIPE_CASES], ids=[c[0] for c in RAW_RECIPE_CASES])
def test_unparsable_recipe(text, fragment, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text, encoding="utf-8")
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line_error(code, err, fragment)


def test_recipe_not_utf8(tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line_error(code, err, f"{recipe}: not a UTF-8 text file")


def test_recipe_nonexistent_path_subprocess(tmp_path):
    """From the outside too: exit 2, one line, no traceback, nothing on stdout."""
    pytest.importorskip("edgesent.train")
    missing = tmp_path / "nope" / "recipe.yaml"
    proc = subprocess.run([sys.executable, "-m", "edgesent", "train", str(missing)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"error: recipe file not found: {missing}"


def test_bad_override_value(base_recipe, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    recipe = write_yaml(tmp_path / "ok.yaml", base_recipe)
    code, _, err = run_cli(["train", recipe, "--set", "data.truncation=middle"], capsys)
    assert_one_line_error(code, err, "invalid value for 'data.truncation': 'middle'")


def test_lora_targets_matching_no_module(base_recipe, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    recipe = write_yaml(tmp_path / "lora.yaml", base_recipe)
    code, _, err = run_cli(["train", recipe, "--set", "model.method=lora",
                            "--set", "model.lora.target_modules=q_proj,v_proj"], capsys)
    assert_one_line_error(code, err, "model.lora.target_modules ['q_proj', 'v_proj'] match no module of BertForSequenceClassification")
    assert "query" in err  # lists modules that do exist


# --------------------------------------------------------------------------------------------
# Data: a broken train file next to good validation/test files.


def _frame(n: int = 64, seed: int = 1) -> pd.DataFrame:
    return pd.DataFrame(sentences(n, seed=seed), columns=["text", "label"])


def _good_splits(folder: Path) -> None:
    _frame(40, 2).to_csv(folder / "validation.csv", index=False)
    _frame(40, 3).to_csv(folder / "test.csv", index=False)


def _write_train(folder: Path, kind: str) -> Path:
    """Write the broken train file of case `kind`; return its path."""
    path = folder / "train.csv"
    df = _frame()
    if kind == "missing-text-column":
        df.rename(columns={"text": "review"}).to_csv(path, index=False)
    elif kind == "missing-label-column":
        df.rename(columns={"label": "sentiment"}).to_csv(path, index=False)
    elif kind == "label-outside-set":
        df.loc[5, "label"] = 7
        df.to_csv(path, index=False)
    elif kind == "string-label-outside-set":
        df["label"] = df["label"].map({0: "negative", 1: "positive"})
        df.loc[3, "label"] = "neutral"
        df.to_csv(path, index=False)
    elif kind == "nan-labels":
        df["label"] = df["label"].astype("float")
        df.loc[[2, 9, 11], "label"] = np.nan
        df.to_csv(path, index=False)
    elif kind == "single-class":
        df["label"] = 1
        df.to_csv(path, index=False)
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "header-only":
        path.write_text("text,label\n", encoding="utf-8")
    elif kind == "broken-quote":
        rows = ["text,label"] + [f'"{t}",{y}' for t, y in sentences(30, seed=4)]
        rows.insert(12, '"this review never closes its quote,1')
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    elif kind == "not-utf8":
        rows = ["text,label"] + [f"{t},{y}" for t, y in sentences(30, seed=4)]
        rows[7] = "un film tr\xe8s ennuyeux,0"
        path.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    elif kind == "all-texts-empty":
        df["text"] = ""
        df.to_csv(path, index=False)
    elif kind == "smaller-than-batch":
        _frame(6, 5).to_csv(path, index=False)
    else:
        raise ValueError(kind)
    return path


# (case, fragment that must be in the error line). "{path}" is the broken train file.
DATA_CASES = [
    ("missing-text-column", "{path}: no column 'text' (columns: 'review', 'label')"),
    ("missing-label-column", "{path}: no column 'label' (columns: 'text', 'sentiment')"),
    ("label-outside-set", "1 row of train ({path}) has labels outside ['negative', 'positive'] (e.g. 7 at row 6)"),
    ("string-label-outside-set", "has labels outside ['negative', 'positive'] (e.g. 'neutral' at row 4)"),
    ("nan-labels", "3 rows of train ({path}) have no label (NaN) (e.g. row 3)"),
    ("single-class", "has only one class ('positive', 64 rows); a classifier needs at least two"),
    ("empty-file", "{path} is empty"),
    ("header-only", "{path} holds no rows"),
    ("broken-quote", "{path}: malformed CSV in the row starting at line 13"),
    ("not-utf8", "{path}: line 8 is not valid UTF-8 (byte 0xe8); re-save the file as UTF-8"),
    ("all-texts-empty", "all 64 texts of train ({path}) are empty"),
    ("smaller-than-batch", "6"),
]


@pytest.mark.parametrize("kind,fragment", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(kind, fragment, base_recipe, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    data = tmp_path / "data"
    data.mkdir()
    _good_splits(data)
    path = _write_train(data, kind)
    base_recipe["data"]["dataset"] = str(data)
    recipe = write_yaml(tmp_path / "recipe.yaml", base_recipe)
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line_error(code, err, fragment.format(path=path))


def test_missing_data_path(base_recipe, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    base_recipe["data"]["dataset"] = str(tmp_path / "no-such-folder")
    recipe = write_yaml(tmp_path / "recipe.yaml", base_recipe)
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line_error(code, err, "no-such-folder")


# --------------------------------------------------------------------------------------------
# Model folders (training side)


def _model_copy(bert_dir: Path, tmp_path: Path, kind: str) -> Path:
    out = Path(shutil.copytree(bert_dir, tmp_path / "model"))
    weights = out / "model.safetensors"
    if kind == "no-model":
        for f in out.iterdir():
            f.unlink()
    elif kind == "lfs-pointer":
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 167328\n")
    elif kind == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-header":
        weights.write_bytes(weights.read_bytes()[:5])
    elif kind == "no-weights":
        weights.unlink()
    elif kind == "pickle-only":
        _to_pickle(out)
    return out


def _to_pickle(folder: Path) -> None:
    """Replace model.safetensors with the same weights as pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


MODEL_CASES = [
    ("no-model", "holds no model (no config.json)"),
    ("lfs-pointer", "model.safetensors is a git-lfs pointer, not the weights (run `git lfs pull`)"),
    ("truncated", "model.safetensors is truncated ("),
    ("truncated-header", "model.safetensors is not a valid safetensors file"),
    ("no-weights", "has a config.json but no weights (model.safetensors); set model.random_init: true"),
    ("pickle-only", "has only pickled weights (pytorch_model.bin), which can run code when loaded"),
]


@pytest.mark.parametrize("kind,fragment", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_folder(kind, fragment, bert_dir, base_recipe, tmp_path, capsys):
    pytest.importorskip("edgesent.train")
    base_recipe["model"]["name_or_path"] = str(_model_copy(bert_dir, tmp_path, kind))
    recipe = write_yaml(tmp_path / "recipe.yaml", base_recipe)
    code, _, err = run_cli(["train", recipe], capsys)
    assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize("kind,fragment", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_folder_on_load(kind, fragment, bert_dir, tmp_path):
    """The same refusals when loading a saved model back (export of an HF folder goes through here)."""
    from edgesent.errors import ModelError
    from edgesent.model import load_model_dir

    with pytest.raises(ModelError) as info:
        load_model_dir(_model_copy(bert_dir, tmp_path, kind))
    assert fragment in str(info.value)


def test_pickle_allowed_only_when_asked(bert_dir, tmp_path):
    """model.allow_pickle: true loads pytorch_model.bin, and gives the same logits as the safetensors original."""
    import torch

    from edgesent.model import load_model_dir

    folder = _model_copy(bert_dir, tmp_path, "pickle-only")
    model = load_model_dir(folder, allow_pickle=True)
    reference = load_model_dir(bert_dir)
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)


# --------------------------------------------------------------------------------------------
# Artifacts (serving side): `edgesent predict ARTIFACT TEXT`


def _tamper(folder: Path, kind: str) -> None:
    model = folder / "model.onnx"
    manifest_path = folder / art.MANIFEST
    if kind == "empty-folder":
        shutil.rmtree(folder)
        folder.mkdir()
    elif kind == "missing-folder":
        shutil.rmtree(folder)
    elif kind == "lfs-pointer":
        model.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "1" * 64 + "\nsize 99\n")
    elif kind == "truncated":
        model.write_bytes(model.read_bytes()[:1000])
    elif kind == "wrong-hash":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, different bytes
        model.write_bytes(bytes(data))
    elif kind == "tokenizer-changed":
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        tok["model"]["vocab"] = dict(list(tok["model"]["vocab"].items())[:-1])
        (folder / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    elif kind == "model-missing":
        model.unlink()
    elif kind in ("future-version", "manifest-not-json", "path-outside", "no-labels"):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if kind == "future-version":
            manifest["manifest_version"] = art.MANIFEST_VERSION + 1
        elif kind == "path-outside":
            manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
        elif kind == "no-labels":
            manifest.pop("labels")
        text = json.dumps(manifest) if kind != "manifest-not-json" else json.dumps(manifest)[:-20]
        manifest_path.write_text(text, encoding="utf-8")
    else:
        raise ValueError(kind)


ARTIFACT_CASES = [
    ("empty-folder", "is not an edgesent artifact (no edgesent.json)"),
    ("missing-folder", "artifact folder not found"),
    ("lfs-pointer", "model.onnx is a git-lfs pointer, not the file itself"),
    ("truncated", "model.onnx is truncated (1000 of"),
    ("wrong-hash", "model.onnx does not match its sha256 in edgesent.json"),
    ("tokenizer-changed", "tokenizer.json"),
    ("model-missing", "is incomplete: model.onnx is missing"),
    ("future-version", "was written by a newer edgesent (manifest version 2"),
    ("manifest-not-json", "edgesent.json is not valid JSON"),
    ("no-labels", "lacks the 'labels' field"),
]


@pytest.mark.parametrize("kind,fragment", ARTIFACT_CASES, ids=[c[0] for c in ARTIFACT_CASES])
def test_bad_artifact(kind, fragment, artifact_copy, capsys):
    _tamper(artifact_copy, kind)
    code, out, err = run_cli(["predict", artifact_copy, "a great movie"], capsys)
    assert_one_line_error(code, err, fragment)
    assert out == ""


def test_manifest_path_outside_artifact(artifact_copy):
    """A manifest that lists ../../etc/passwd is refused by full verification (never hashed or opened)."""
    from edgesent.errors import ArtifactError

    _tamper(artifact_copy, "path-outside")
    with pytest.raises(ArtifactError, match=r"lists '../../etc/passwd', which is outside the artifact folder"):
        art.load_manifest(artifact_copy)


def test_symlink_out_of_artifact_is_refused(artifact_copy, tmp_path):
    """A tokenizer.json that is a symlink to a file outside the folder fails verification."""
    from edgesent.errors import ArtifactError

    outside = tmp_path / "outside.json"
    shutil.move(artifact_copy / "tokenizer.json", outside)
    (artifact_copy / "tokenizer.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="tokenizer.json.*outside the artifact folder"):
        art.load_manifest(artifact_copy)


def test_onnx_external_data_outside_artifact(artifact_copy, tmp_path, capsys):
    """ONNX external data pointing outside the artifact (CVE-2022-25882 / CVE-2024-27318 class) is refused
    by onnxruntime even when the manifest was rewritten to match: one line, nothing read."""
    import onnx
    from onnx import numpy_helper

    model_path = artifact_copy / "model.onnx"
    model = onnx.load(model_path)
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    blob = numpy_helper.to_array(init).tobytes()
    (tmp_path / "secret.bin").write_bytes(blob)
    init.ClearField("raw_data")
    del init.float_data[:]
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": "../secret.bin", "offset": "0", "length": str(len(blob))}.items():
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    model_path.write_bytes(model.SerializeToString())
    manifest = json.loads((artifact_copy / art.MANIFEST).read_text(encoding="utf-8"))
    art.write_manifest(artifact_copy, manifest)  # re-hash: an attacker controls the whole folder
    code, out, err = run_cli(["predict", artifact_copy, "a great movie"], capsys)
    assert_one_line_error(code, err, "escapes model directory")
    assert "onnxruntime cannot load" in err


# --------------------------------------------------------------------------------------------
# Runtime: hostile texts are classified, not refused.


@pytest.fixture(scope="module")
def classifier(artifact_dir):
    from edgesent.runtime import Classifier

    return Classifier(artifact_dir, threads=1)


HOSTILE = {
    "empty": "",
    "whitespace": " \t\n ",
    "emoji-rtl": "😀🎬👍 هذا الفيلم رائع جدا ‏ מצוין 🤬 \u202eevil\u202c",
    "control": "\x00\x01\x07\x1b[31mred\x1b[0m\x7f\ufeff\u200b great",
    "surrogate-free-cjk": "这部电影很好看。とても面白い映画でした。",
    "only-specials": "[CLS] [SEP] [PAD] <|endoftext|>",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_text_is_classified(name, classifier):
    [result] = classifier.predict([HOSTILE[name]])
    assert result["label"] in ("negative", "positive")
    assert abs(sum(result["probs"].values()) - 1.0) < 1e-5
    assert np.isfinite(list(result["probs"].values())).all()
    if name in ("empty", "whitespace"):
        assert result["empty"] is True


def test_hostile_texts_through_cli(artifact_dir, capsys):
    texts = list(HOSTILE.values())
    code, out, err = run_cli(["predict", artifact_dir, *texts], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    rows = [line for line in out.splitlines()[2:] if line.strip()]
    assert len(rows) == len(texts)
    assert sum("(empty)" in row for row in rows) >= 2


def test_one_megabyte_text(classifier):
    """A 1 MB review is classified quickly, exactly as its kept head would be."""
    import time

    head = "the movie was great and the actors were superb " * 10
    huge = head + "x" * (1_000_000 - len(head))
    start = time.perf_counter()
    [logits_huge] = classifier.logits([huge])
    elapsed = time.perf_counter() - start
    [logits_head] = classifier.logits([huge[: classifier.preprocessor.max_length * 50]])
    np.testing.assert_allclose(logits_huge, logits_head, atol=1e-6)
    assert elapsed < 5.0, f"1 MB text took {elapsed:.1f} s"


def _peak_rss_mb(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Peak RSS (MB) of `edgesent ARGS` in a fresh wrapper, so no other child pollutes the number."""
    code = textwrap.dedent("""
        import json, resource, subprocess, sys
        proc = subprocess.run([sys.executable, "-m", "edgesent", *sys.argv[1:]], capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"peak": peak, "rc": proc.returncode, "out": proc.stdout[-2000:], "err": proc.stderr[-2000:]}))
    """)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return info["peak"], subprocess.CompletedProcess(args, info["rc"], info["out"], info["err"])


def _stream_many(artifact_dir: Path, tmp_path: Path, n: int) -> None:
    rows = sentences(1000, seed=11)
    texts = [rows[i % len(rows)][0] + f" #{i}" for i in range(n)]
    big = tmp_path / "many.csv"
    pd.DataFrame({"id": range(n), "text": texts}).to_csv(big, index=False)
    small = tmp_path / "few.csv"
    pd.DataFrame({"id": range(50), "text": texts[:50]}).to_csv(small, index=False)

    base, proc = _peak_rss_mb(["predict", str(artifact_dir), "--file", str(small), "--out", str(tmp_path / "few.out.csv"),
                               "--threads", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    peak, proc = _peak_rss_mb(["predict", str(artifact_dir), "--file", str(big), "--out", str(tmp_path / "many.out.csv"),
                               "--threads", "1", "--batch-size", "64"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"scored {n} rows" in proc.stdout
    out = pd.read_csv(tmp_path / "many.out.csv")
    assert len(out) == n and out["id"].tolist() == list(range(n))
    assert set(out["label"]) <= {"negative", "positive"}
    print(f"{n} rows: peak RSS {peak:.0f} MB, baseline {base:.0f} MB")
    assert peak - base < 300, f"peak RSS grew from {base:.0f} MB to {peak:.0f} MB for {n} rows"


def test_hundred_thousand_texts_stream_with_flat_memory(artifact_dir, tmp_path):
    """`predict --file` on 100k rows keeps peak RSS within 300 MB of a 50-row run (about 15 s on one core)."""
    _stream_many(artifact_dir, tmp_path, 100_000)


def test_run_main_turns_edgesent_errors_into_one_line(capsys):
    """What the bench scripts use: exit code of main, or one `error:` line and exit 2 -- no traceback."""
    from edgesent.errors import DataError, run_main

    def bad(argv):
        raise DataError("imdb/test.parquet:\n  no column 'text'")

    with pytest.raises(SystemExit) as info:
        run_main(bad)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: imdb/test.parquet: no column 'text'\n"
    with pytest.raises(SystemExit) as info:
        run_main(lambda argv: 3)
    assert info.value.code == 3
