"""Interruptions: kill -9 during training and export, and an output directory that cannot be written.

The kills are deterministic: the child process runs the real CLI through a small wrapper that
pauses right after the interesting point (the first Trainer checkpoint is on disk; the ONNX file
is written inside the partial artifact folder) and touches a marker file; the test waits for the
marker and sends SIGKILL. Nothing is mocked in what is being tested: resume reads what the killed
process left, export re-runs over its leftovers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from edgesent import artifact as art
from edgesent.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]

# Runs `edgesent ARGS` after wrapping `module.function` so that its first call touches MARKER and sleeps.
PAUSE_WRAPPER = textwrap.dedent("""
    import importlib, pathlib, sys, time
    marker, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    module_name, owner_name, func_name = target.split(":")
    owner = importlib.import_module(module_name)
    for part in filter(None, owner_name.split(".")):
        owner = getattr(owner, part)
    original = getattr(owner, func_name)

    def paused(*a, **k):
        result = original(*a, **k)
        pathlib.Path(marker).touch()
        time.sleep(600)
        return result

    setattr(owner, func_name, paused)
    from edgesent.cli import main
    main(args)
""")


def kill_at(target: str, args: list[str], marker: Path, cwd: Path, timeout: float = 300) -> None:
    """Start `edgesent ARGS` paused after `target` ("module:Class:function") and SIGKILL it there."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_WRAPPER, str(marker), target, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the child ended (rc {proc.returncode}) before reaching {target}:\n{proc.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the child did not reach {target} within {timeout:.0f} s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def edgesent(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesent", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def passes_manifest(folder: Path) -> bool:
    try:
        art.load_manifest(folder)
        return True
    except ArtifactError:
        return False


# --------------------------------------------------------------------------------------------
# kill -9 during training, then --resume


TRAINING = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "eval_steps": 10, "logging_steps": 5, "threads": 1,
            "save_total_limit": 2}


def _final_accuracy(run: Path) -> float:
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_accuracy", "accuracy"):
        if key in metrics:
            return float(metrics[key])
    test = metrics.get("test") or {}
    for key in ("accuracy", "test_accuracy"):
        if key in test:
            return float(test[key])
    raise AssertionError(f"no test accuracy in {run / 'metrics.json'}: {metrics}")


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def test_kill_during_training_then_resume(model_factory, sentiment_data, tmp_path):
    pytest.importorskip("edgesent.train")
    model_dir = model_factory("bert")
    root = tmp_path / "exports"

    # the reference: an uninterrupted run
    ref_recipe = tmp_path / "ref.yaml"
    ref_recipe.write_text(yaml.safe_dump(tiny_recipe(model_dir, sentiment_data, tmp_path / "ref-exports",
                                                     name="ref", training=TRAINING)))
    proc = edgesent(["train", ref_recipe], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [ref_run] = _runs(tmp_path / "ref-exports")
    ref_accuracy = _final_accuracy(ref_run)

    # the same recipe, killed right after its first checkpoint is on disk
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(model_dir, sentiment_data, root, training=TRAINING)))
    kill_at("transformers:Trainer:_save_checkpoint", ["train", str(recipe)], tmp_path / "checkpointed", tmp_path)
    [run] = _runs(root)
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert checkpoints, f"no checkpoint in {run}"
    killed_at = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["global_step"]
    assert killed_at == TRAINING["eval_steps"]
    assert not (run / "metrics.json").exists()  # the run did not finish

    proc = edgesent(["train", recipe, "--resume"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _runs(root) == [run], "--resume must continue the same run folder"
    log = proc.stdout + proc.stderr + (run / "train.log").read_text(encoding="utf-8")
    assert f"resuming from {checkpoints[-1]}" in log, f"resume did not say where it continued from:\n{log[-3000:]}"
    last = max((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] > killed_at
    # the loss log before the kill is kept (the state was restored, not restarted from step 0)
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == sorted(steps) and steps[0] <= killed_at and len(steps) == len(set(steps))
    accuracy = _final_accuracy(run)
    assert abs(accuracy - ref_accuracy) <= 0.05, f"resumed {accuracy:.3f} vs uninterrupted {ref_accuracy:.3f}"
    assert accuracy >= 0.8, f"the resumed run did not learn the separable set: {accuracy:.3f}"


# --------------------------------------------------------------------------------------------
# kill -9 during export


def test_kill_during_export_leaves_no_artifact(model_factory, tmp_path):
    model_dir = model_factory("bert")
    out = tmp_path / "artifacts" / "tiny"
    args = ["export", str(model_dir), "--out", str(out), "--int8", "--max-drop", "100"]
    kill_at("edgesent.export::export_onnx", args, tmp_path / "exported", tmp_path)

    assert not out.exists(), "a killed export must not leave the final folder"
    leftovers = list(out.parent.iterdir())
    assert leftovers and all(p.name.startswith(".tiny.partial-") for p in leftovers)
    assert (leftovers[0] / "model.onnx").is_file()  # it was killed mid-way, after writing the ONNX file
    assert not any(passes_manifest(p) for p in leftovers)

    proc = edgesent(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = art.load_manifest(out)  # verifies every hash
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json"} <= set(manifest["files"])
    assert [p.name for p in out.parent.iterdir()] == ["tiny"], "stale partial folders are cleaned up"


# --------------------------------------------------------------------------------------------
# Output directory that cannot be written: a clear one-line error before any work


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "under-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        return blocker / "sub"
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0o500 does not stop root from writing (covered by under-a-file)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "sub"


UNWRITABLE = ["under-a-file", "read-only-dir"]


@pytest.mark.parametrize("how", UNWRITABLE)
def test_unwritable_export_dir(how, model_factory, tmp_path):
    out = _unwritable(tmp_path, how)
    start = time.monotonic()
    proc = edgesent(["export", model_factory("bert"), "--out", out / "artifact"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: output directory {out} is not writable"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("how", UNWRITABLE)
def test_unwritable_train_dir(how, model_factory, sentiment_data, tmp_path):
    pytest.importorskip("edgesent.train")
    out = _unwritable(tmp_path, how)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(model_factory("bert"), sentiment_data, out)))
    proc = edgesent(["train", recipe], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: output directory"), proc.stderr
    assert "is not writable" in proc.stderr and "Traceback" not in proc.stderr
    assert "{'loss'" not in proc.stdout + proc.stderr, "training started before the check"


@pytest.mark.parametrize("how", UNWRITABLE)
def test_unwritable_predict_out(how, model_factory, tmp_path):
    from test_bad_inputs import build_artifact

    artifact = build_artifact(model_factory("bert"), tmp_path / "artifact")
    texts = tmp_path / "texts.txt"
    texts.write_text("a great movie\nan awful movie\n")
    out = _unwritable(tmp_path, how)
    proc = edgesent(["predict", artifact, "--file", texts, "--out", out / "scores.csv"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: output directory {out} is not writable"), proc.stderr
    assert not out.exists()
