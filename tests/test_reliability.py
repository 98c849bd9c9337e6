"""Reliability round 2 (issue #13): every bad value is one line naming the option or file, nothing is lost.

Table-driven per class, like tests/test_bad_inputs.py: each case runs the real CLI entry point
(`edgesent.cli.main`, in-process unless the point is the outside view) and checks the exit code, that
stderr is one `error:` line holding the option or file, and that nothing was written. Thread counts
are capped at the usable cores, so no test here starts more threads than the machine has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import ROOT, sentences, tiny_recipe
from test_bad_inputs import assert_one_line_error, build_artifact, run_cli, write_yaml

from edgesent import artifact as art


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k != "EDGESENT_DEBUG"}
    return {**clean, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def bert_dir(model_factory) -> Path:
    return model_factory("bert")


@pytest.fixture(scope="module")
def artifact(bert_dir, tmp_path_factory) -> Path:
    return build_artifact(bert_dir, tmp_path_factory.mktemp("rel") / "artifact")


@pytest.fixture()
def recipe_path(bert_dir, sentiment_data, tmp_path) -> Path:
    recipe = tiny_recipe(bert_dir, sentiment_data, tmp_path / "exports",
                         training={"epochs": 1, "max_steps": 2, "batch_size": 16})
    return write_yaml(tmp_path / "recipe.yaml", recipe)


def nothing_written(folder: Path) -> list[str]:
    """Files edgesent might have left behind: temporaries, locks, partial folders."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and (".tmp-" in p.name or p.name.endswith(".lock")
                                                                          or ".partial-" in p.name)]


# --------------------------------------------------------------------------------------------
# 1. Thread counts: validated, capped at the cores (with a note), never a runaway pool.

THREAD_CASES = [
    ("zero", "0", "--threads: must be at least 1"),
    ("negative", "-1", "--threads: must be at least 1"),
    ("not-a-number", "many", "--threads"),
]


@pytest.mark.parametrize("value,fragment", [c[1:] for c in THREAD_CASES], ids=[c[0] for c in THREAD_CASES])
def test_bad_thread_counts(value, fragment, artifact, capsys):
    code, out, err = run_cli(["predict", artifact, "a great movie", "--threads", value], capsys)
    assert_one_line_error(code, err, fragment)
    assert out == ""


def test_huge_thread_count_is_capped_and_fast(artifact, capsys):
    from edgesent.machine import usable_cores

    start = time.perf_counter()
    code, out, err = run_cli(["predict", artifact, "a great movie", "--threads", "100000"], capsys)
    elapsed = time.perf_counter() - start
    assert code == 0, err
    assert f"--threads 100000 capped to {usable_cores()}" in err and "great movie" in out
    assert elapsed < 2.0, f"predict --threads 100000 took {elapsed:.1f} s"


def test_classifier_threads_for_library_users(artifact):
    from edgesent.errors import EdgesentError
    from edgesent.machine import usable_cores
    from edgesent.runtime import Classifier

    with pytest.raises(EdgesentError, match="threads must be a whole number of threads, at least 1; got 0"):
        Classifier(artifact, threads=0)
    clf = Classifier(artifact, threads=10**6)
    assert clf.session.ort.get_session_options().intra_op_num_threads == usable_cores()


# --------------------------------------------------------------------------------------------
# 2-3. predict --file: no silent data loss, atomic output, big CSV fields.


def _scores_file(folder: Path, kind: str, columns: dict[str, list]) -> Path:
    df = pd.DataFrame(columns)
    path = folder / f"in.{kind}"
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path, index=False)
    return path


TEXTS = [s for s, _ in sentences(12, seed=3)]
COLUMN_CASES = [  # (id, format, clashing column)
    ("gold-label-csv", "csv", "label"),
    ("confidence-jsonl", "jsonl", "confidence"),
    ("prob-parquet", "parquet", "prob_positive"),
    ("empty-csv", "csv", "empty"),
]


@pytest.mark.parametrize("kind,column", [c[1:] for c in COLUMN_CASES], ids=[c[0] for c in COLUMN_CASES])
def test_input_column_named_like_an_output_is_never_replaced(kind, column, artifact, tmp_path, capsys):
    path = _scores_file(tmp_path, kind, {"text": TEXTS, column: list(range(len(TEXTS)))})
    out = tmp_path / f"out.{kind}"
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out], capsys)
    assert_one_line_error(code, err, f"{path} has a column '{column}'")
    assert "--prefix" in err
    assert not out.exists() and not nothing_written(tmp_path)
    # the suggested fix keeps the input column and adds prefixed ones
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out, "--prefix", "pred_"], capsys)
    assert code == 0, err
    back = pd.read_csv(out) if kind == "csv" else pd.read_json(out, lines=True) if kind == "jsonl" else pd.read_parquet(out)
    assert back[column].tolist() == list(range(len(TEXTS)))
    assert {"pred_label", "pred_confidence", "pred_prob_negative", "pred_prob_positive", "pred_empty"} <= set(back)


def test_existing_out_needs_overwrite(artifact, tmp_path, capsys):
    path = _scores_file(tmp_path, "csv", {"text": TEXTS})
    out = tmp_path / "out.csv"
    out.write_text("precious\n", encoding="utf-8")
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out], capsys)
    assert_one_line_error(code, err, f"--out {out} already exists; pass --overwrite")
    assert out.read_text(encoding="utf-8") == "precious\n" and not nothing_written(tmp_path)
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(out)) == len(TEXTS)
    # the default --out (<file>.predictions.csv) is protected the same way
    code, _, err = run_cli(["predict", artifact, "--file", path], capsys)
    assert code == 0, err
    code, _, err = run_cli(["predict", artifact, "--file", path], capsys)
    assert_one_line_error(code, err, "in.predictions.csv already exists")


def test_two_concurrent_runs_to_one_out(artifact, tmp_path):
    """Two real processes write the same --out: exactly one wins with a complete file, the other is refused."""
    n = 20_000
    rows = sentences(500, seed=5)
    path = tmp_path / "many.csv"
    pd.DataFrame({"id": range(n), "text": [rows[i % len(rows)][0] for i in range(n)]}).to_csv(path, index=False)
    out = tmp_path / "scored.csv"
    cmd = [sys.executable, "-m", "edgesent", "predict", str(artifact), "--file", str(path), "--out", str(out),
           "--threads", "1", "--batch-size", "64"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path)
             for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for code, _, err in results if code != 0)
    lines = [x for x in loser.splitlines() if x.strip() and not x.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and "Traceback" not in loser
    assert "being written by another edgesent predict" in lines[0] or "already exists" in lines[0]
    back = pd.read_csv(out)
    assert back["id"].tolist() == list(range(n)) and back["label"].notna().all()
    assert not nothing_written(tmp_path)


def test_lock_of_a_live_run_refuses_and_a_stale_lock_is_taken_over(artifact, tmp_path, capsys):
    path = _scores_file(tmp_path, "csv", {"text": TEXTS})
    out = tmp_path / "out.csv"
    lock = tmp_path / ".out.csv.lock"
    lock.write_text(f"{os.getpid()}\n")  # a live process (this one) is writing out.csv
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out], capsys)
    assert_one_line_error(code, err, f"--out {out} is being written by another edgesent predict")
    assert not out.exists() and lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout)  # its process is gone: a killed run's lock
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out], capsys)
    assert code == 0, err
    assert len(pd.read_csv(out)) == len(TEXTS) and not lock.exists()


def test_csv_field_over_131072_characters(artifact, tmp_path, capsys):
    huge = "a wonderful film " + "x" * 1_000_000
    path = _scores_file(tmp_path, "csv", {"id": [1, 2], "text": [huge, "an awful film"]})
    out = tmp_path / "out.csv"
    code, _, err = run_cli(["predict", artifact, "--file", path, "--out", out], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    back = pd.read_csv(out)
    assert back["id"].tolist() == [1, 2] and len(back["text"][0]) == len(huge)


# --------------------------------------------------------------------------------------------
# 4-5. Model folders, manifests, run folders, sweeps: one line where there were tracebacks.


def _folder(bert_dir: Path, tmp_path: Path, kind: str) -> Path:
    out = Path(shutil.copytree(bert_dir, tmp_path / kind))
    if kind == "no-tokenizer":
        for f in out.iterdir():
            if f.name not in ("config.json", "model.safetensors"):
                f.unlink()
    elif kind == "whisper":
        config = json.loads((out / "config.json").read_text())
        config["model_type"] = "whisper"
        (out / "config.json").write_text(json.dumps(config))
    elif kind == "base-model":  # a backbone without a classification head (like a sentence-transformers model)
        from transformers import AutoConfig, AutoModel

        (out / "model.safetensors").unlink()
        AutoModel.from_config(AutoConfig.from_pretrained(out)).save_pretrained(out)
    return out


FOLDER_CASES = [  # (kind, command, fragment)
    ("no-tokenizer", "export", "has no tokenizer files (tokenizer.json)"),
    ("no-tokenizer", "train", "has no tokenizer files (tokenizer.json)"),
    ("whisper", "export", "model type 'whisper' is not supported by edgesent (supported: bert,"),
    ("whisper", "train", "model type 'whisper' is not supported by edgesent (supported: bert,"),
    ("base-model", "export", "the classification head was never trained"),
]


@pytest.mark.parametrize("kind,command,fragment", FOLDER_CASES, ids=[f"{c[1]}-{c[0]}" for c in FOLDER_CASES])
def test_bad_model_folders(kind, command, fragment, bert_dir, sentiment_data, tmp_path, capsys):
    folder = _folder(bert_dir, tmp_path, kind)
    if command == "export":
        code, out, err = run_cli(["export", folder, "--out", tmp_path / "a"], capsys)
        assert not (tmp_path / "a").exists()
    else:
        recipe = tiny_recipe(folder, sentiment_data, tmp_path / "exports", training={"max_steps": 2})
        code, out, err = run_cli(["train", write_yaml(tmp_path / "r.yaml", recipe)], capsys)
        assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())
    assert_one_line_error(code, err, fragment)
    assert str(folder) in err or kind == "whisper"


def test_random_head_is_exported_only_when_asked(bert_dir, tmp_path, capsys):
    folder = _folder(bert_dir, tmp_path, "base-model")
    code, _, err = run_cli(["export", folder, "--out", tmp_path / "a", "--random-head-ok"], capsys)
    assert code == 0, err
    notes = art.load_manifest(tmp_path / "a")["notes"]
    assert any("random classification head" in n for n in notes)


def test_manifest_labels_not_matching_outputs(artifact, tmp_path, capsys):
    copy = Path(shutil.copytree(artifact, tmp_path / "artifact"))
    manifest = json.loads((copy / art.MANIFEST).read_text(encoding="utf-8"))
    manifest["labels"] = ["negative", "neutral", "positive"]
    (copy / art.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    code, out, err = run_cli(["predict", copy, "a great movie"], capsys)
    assert_one_line_error(code, err, "lists 3 labels (negative, neutral, positive) but model.onnx outputs 2 classes")
    assert out == ""


DEMO_CASES = [
    ("port-too-big", ["--port", "70000"], "--port: must be at most 65535"),
    ("port-negative", ["--port", "-1"], "--port: must be at least 0"),
    ("host-unresolvable", ["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' cannot be resolved"),
]


@pytest.mark.parametrize("args,fragment", [c[1:] for c in DEMO_CASES], ids=[c[0] for c in DEMO_CASES])
def test_bad_demo_options_fail_before_serving(args, fragment, artifact, capsys):
    code, out, err = run_cli(["demo", artifact, *args], capsys)
    assert_one_line_error(code, err, fragment)
    assert "serving" not in out


def test_train_out_pointing_at_a_file(recipe_path, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me", encoding="utf-8")
    code, _, err = run_cli(["train", recipe_path, "--out", target], capsys)
    assert_one_line_error(code, err, f"--out {target} is a file, not a folder")
    assert target.read_text(encoding="utf-8") == "keep me"


SWEEP_SPACE = {"training.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
               "model.method": {"type": "categorical", "choices": ["full", "frozen"]}}


def _sweep_recipe(tmp_path: Path, bert_dir: Path, data, space=SWEEP_SPACE) -> Path:
    recipe = tiny_recipe(bert_dir, data, tmp_path / "exports", training={"max_steps": 2},
                         sweep={"space": space, "metric": "accuracy"})
    return write_yaml(tmp_path / "sweep.yaml", recipe)


def test_sweep_resumed_after_choices_were_edited(bert_dir, sentiment_data, tmp_path, capsys):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="tiny", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    study.add_trial(optuna.trial.create_trial(
        params={"training.lr": 3e-3, "model.method": "full"}, value=0.9,
        distributions={"training.lr": FloatDistribution(1e-3, 1e-2, log=True),
                       "model.method": CategoricalDistribution(["full", "frozen"])}))
    edited = {**SWEEP_SPACE, "model.method": {"type": "categorical", "choices": ["full", "lora"]}}
    code, _, err = run_cli(["sweep", _sweep_recipe(tmp_path, bert_dir, sentiment_data, edited), "--storage", storage,
                            "--trials", "2"], capsys)
    assert_one_line_error(code, err, "sweep.space 'model.method' changed since study 'tiny'")
    assert "restore the choices or pass a new --storage" in err
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 1


SWEEP_SETUP_CASES = [
    ("data-path", {"data": {"dataset": "/no/such/data"}}, "/no/such/data"),
    ("model-folder", {"model": {"name_or_path": "/no/such/model"}}, "model folder not found: /no/such/model"),
]


@pytest.mark.parametrize("change,fragment", [c[1:] for c in SWEEP_SETUP_CASES], ids=[c[0] for c in SWEEP_SETUP_CASES])
def test_sweep_setup_error_stops_at_once(change, fragment, bert_dir, sentiment_data, tmp_path, capsys):
    recipe = yaml.safe_load(_sweep_recipe(tmp_path, bert_dir, sentiment_data).read_text())
    for section, values in change.items():
        recipe[section].update(values)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code, _, err = run_cli(["sweep", write_yaml(tmp_path / "bad.yaml", recipe), "--storage", storage, "--trials", "20"],
                           capsys)
    assert_one_line_error(code, err, fragment)
    assert optuna.load_study(study_name="tiny", storage=storage).trials == []  # nothing used up


# --------------------------------------------------------------------------------------------
# 8. bench: a command that measured nothing it was asked to exits non-zero with one line.


def test_bench_seq_len_beyond_positions_and_cuda_without_gpu(artifact, tmp_path, capsys):
    code, _, err = run_cli(["bench", artifact, "--seq-lens", "32,1024", "--batch-sizes", "1", "--threads", "1",
                            "--budget", "0.1", "--out", tmp_path / "b"], capsys)
    assert_one_line_error(code, err, "--seq-lens 1024 exceeds the 512 positions of the model")
    assert not (tmp_path / "b").exists()
    from edgesent.bench.plan import cuda_available

    if not cuda_available():
        code, _, err = run_cli(["bench", artifact, "--device", "cuda", "--batch-sizes", "1", "--seq-lens", "32",
                                "--threads", "1", "--budget", "0.1", "--out", tmp_path / "c"], capsys)
        assert_one_line_error(code, err, "nothing measured: every cuda variant was skipped or failed")
        assert not (tmp_path / "c").exists()
    (tmp_path / "d").mkdir()  # bench has no --overwrite, so its advice must not name one
    code, _, err = run_cli(["bench", artifact, "--out", tmp_path / "d"], capsys)
    assert_one_line_error(code, err, f"--out {tmp_path / 'd'} already exists; choose another --out")
    assert "--overwrite" not in err


# --------------------------------------------------------------------------------------------
# 9. Unclear messages.


ADVICE_CASES = [  # a data file with the wrong columns: the advice names the option of THAT command
    ("bench", ["bench", "{art}", "--data", "{data}", "--batch-sizes", "1", "--seq-lens", "32", "--threads", "1"],
     "rename the columns of --data to text/label"),
    ("export", ["export", "{model}", "--int8", "--eval-data", "{data}", "--out", "{tmp}/a"],
     "rename the columns of --eval-data to text/label"),
]


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in ADVICE_CASES], ids=[c[0] for c in ADVICE_CASES])
def test_data_advice_names_the_commands_option(argv, fragment, artifact, bert_dir, tmp_path, capsys):
    data = tmp_path / "wrong.csv"
    data.write_text("review,stars\ngood,1\nbad,0\n", encoding="utf-8")
    values = {"art": artifact, "data": data, "model": bert_dir, "tmp": tmp_path}
    code, _, err = run_cli([a.format(**values) for a in argv], capsys)
    assert_one_line_error(code, err, fragment)
    assert "data.text_column" not in err and not (tmp_path / "a").exists()


def test_recipe_that_is_a_folder(tmp_path, capsys):
    code, _, err = run_cli(["train", tmp_path], capsys)
    assert_one_line_error(code, err, f"{tmp_path} is a folder, not a recipe file")


def test_forgotten_artifact(capsys):
    code, out, err = run_cli(["predict", "what a great film"], capsys)
    assert_one_line_error(code, err, "artifact folder not found: 'what a great film' (usage: edgesent predict ARTIFACT TEXT")
    code, out, err = run_cli(["predict", "what a great film", "and another"], capsys)  # the fast path
    assert_one_line_error(code, err, "artifact folder not found: 'what a great film' (usage:")


def test_static_without_calibration_fails_before_export(bert_dir, tmp_path, capsys, monkeypatch):
    import edgesent.export as E

    def no_export(*a, **k):
        raise AssertionError("the ONNX export ran before the calibration check")

    monkeypatch.setattr(E, "export_onnx", no_export)
    code, _, err = run_cli(["export", bert_dir, "--static", "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, "--static needs calibration texts")
    assert "--eval-data" in err and not (tmp_path / "a").exists()


def test_negative_max_drop_fails_before_any_work(bert_dir, tmp_path, capsys, monkeypatch):
    import edgesent.export as E

    monkeypatch.setattr(E, "resolve_source", lambda *a, **k: pytest.fail("loaded the model before checking options"))
    code, _, err = run_cli(["export", bert_dir, "--int8", "--max-drop", "-1", "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, "--max-drop: must be at least 0")


EXPORT_ADVICE_CASES = [  # export's advice names export's options, not recipe keys it does not have
    ("pickle-only", "export reads safetensors only"),
    ("no-weights", "export needs trained weights"),
]


@pytest.mark.parametrize("kind,fragment", EXPORT_ADVICE_CASES, ids=[c[0] for c in EXPORT_ADVICE_CASES])
def test_export_advice_names_real_options(kind, fragment, bert_dir, tmp_path, capsys):
    folder = Path(shutil.copytree(bert_dir, tmp_path / "m"))
    if kind == "pickle-only":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    code, _, err = run_cli(["export", folder, "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, fragment)
    assert "allow_pickle" not in err and "set model." not in err


def test_debug_after_the_subcommand_and_flag_metavars(artifact, capsys, monkeypatch):
    monkeypatch.delenv("EDGESENT_DEBUG", raising=False)  # --debug sets it; restored (unset) after this test
    code, out, err = run_cli(["predict", artifact, "a great movie", "--debug"], capsys)
    assert code == 0 and "great movie" in out, err
    for command in ("export", "predict", "train"):
        code, out, _ = run_cli([command, "--help"], capsys)
        assert code == 0 and "<bool>" not in out and "BOOLEAN" not in out


# --------------------------------------------------------------------------------------------
# 10-11. Runs record absolute paths; library chatter stays behind --debug.


def test_relative_paths_in_a_run_and_quiet_output(bert_dir, sentiment_data, tmp_path):
    """A run trained with relative paths exports from another folder; stderr holds no library noise."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(bert_dir, work / "model")
    shutil.copytree(sentiment_data, work / "data")
    recipe = tiny_recipe(Path("model"), Path("data"), Path("exports"), training={"max_steps": 4, "batch_size": 16})
    write_yaml(work / "recipe.yaml", json.loads(json.dumps(recipe, default=str)))
    proc = subprocess.run([sys.executable, "-m", "edgesent", "train", "recipe.yaml", "--out", "exports/run"],
                          capture_output=True, text=True, cwd=work, env=env(), timeout=900)
    assert proc.returncode == 0, proc.stderr
    saved = yaml.safe_load((work / "exports" / "run" / "recipe.yaml").read_text())
    assert saved["model"]["name_or_path"] == str((work / "model").resolve())
    assert saved["data"]["dataset"] == str((work / "data").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exp = subprocess.run([sys.executable, "-m", "edgesent", "export", str(work / "exports" / "run"), "--int8",
                          "--calibration", "8", "--out", "artifact"], capture_output=True, text=True, cwd=elsewhere,
                         env=env(), timeout=900)
    assert exp.returncode == 0, exp.stderr
    assert (elsewhere / "artifact" / "model.int8.onnx").is_file()
    for stderr in (proc.stderr, exp.stderr):
        for noise in ("gemm_4bit", "Warning", "{'loss'", "'train_runtime'", "Please consider to run pre-processing",
                      "\x1b[", "\r", "Some weights of"):
            assert noise not in stderr, f"{noise!r} in stderr:\n{stderr}"
    assert "validation loss" in proc.stderr and "accuracy" in proc.stderr  # edgesent's own progress line per evaluation


# --------------------------------------------------------------------------------------------
# 12. Demo.


def test_demo_api_upload_errors_and_network_warning(artifact, tmp_path, capsys, monkeypatch):
    import gradio as gr

    from edgesent import app

    demo = app.build_app(artifact)
    names = [fn.api_name for fn in demo.fns.values() if getattr(fn, "api_visibility", "public") == "public"]
    assert "predict" in names and "predict_file" in names
    assert not [n for n in names if str(n) in ("False", "None") or n is False]
    upload = tmp_path / "secret-server-dir" / "reviews.csv"
    upload.parent.mkdir()
    pd.DataFrame({"review": ["fine"]}).to_csv(upload, index=False)
    classify_file = next(fn.fn for fn in demo.fns.values() if fn.api_name == "predict_file")
    with pytest.raises(gr.Error) as info:
        classify_file(str(upload), "text")
    message = str(info.value.message)
    assert "reviews.csv has no column 'text'" in message and "secret-server-dir" not in message

    monkeypatch.setattr(app, "launch_app", lambda demo, **k: "http://0.0.0.0:1")
    app.demo_cli(artifact, host="0.0.0.0", port=0)
    err = capsys.readouterr().err
    assert "warning: --host 0.0.0.0 makes the app reachable from the network" in err
    app.demo_cli(artifact, host="127.0.0.1", port=0)
    assert "warning" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 13. make quickstart picks ../shared or the hub ids.


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_quickstart_uses_hub_ids_without_shared(tmp_path):
    def plan(shared: Path) -> str:
        proc = subprocess.run(["make", "-n", "-o", "setup", "-o", ".venv/bin/edgesent", "quickstart", f"SHARED={shared}"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    hub = plan(tmp_path / "nothing-here")
    assert "model.name_or_path=sentence-transformers/all-MiniLM-L6-v2" in hub and "data.dataset=stanfordnlp/imdb" in hub
    assert "make quickstart SHARED=/path" in hub  # the one line printed when neither works
    local = tmp_path / "shared"
    (local / "models" / "all-MiniLM-L6-v2").mkdir(parents=True)
    (local / "models" / "all-MiniLM-L6-v2" / "config.json").write_text("{}")
    assert f"model.name_or_path={local}/models/all-MiniLM-L6-v2" in plan(local)
