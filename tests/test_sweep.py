"""edgesent sweep: resumable optuna studies over tiny random DistilBERTs on separable synthetic data.

Every trial here trains for 30 steps (evaluating at steps 15 and 30) at max_length 32, one thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, tiny_recipe
from optuna.trial import TrialState

from edgesent.config import load_recipe, validate_recipe
from edgesent.errors import EdgesentError, RecipeError

SPACE = {
    "training.lr": {"type": "float", "low": 5e-3, "high": 3e-2, "log": True},
    "model.method": {"type": "categorical", "choices": ["full", "frozen"]},
}


def recipe_dict(tmp_path: Path, model_dir: Path, data_dir: Path, **sweep) -> dict:
    return tiny_recipe(
        model_dir, data_dir, tmp_path / "exports",
        training={"max_steps": 30, "eval_steps": 15, "epochs": 1, "logging_steps": 5},
        sweep={"space": SPACE, "metric": "accuracy", "pruner": "median", **sweep},
    )


@pytest.fixture
def recipe(tmp_path, model_factory, sentiment_data):
    return validate_recipe(recipe_dict(tmp_path, model_factory("distilbert"), sentiment_data))


def storage_of(recipe) -> str:
    return f"sqlite:///{(Path(recipe.output_dir) / 'sweeps' / f'{recipe.name}.db').resolve()}"


def finished(study) -> list:
    return [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]


# --------------------------------------------------------------------------------------------
def test_sweep_resumes_to_total_and_best_recipe_reproduces(recipe):
    """--trials 2 then --trials 4 on the same storage: 4 trials in all, the first two untouched;
    the best recipe validates and training it again gives the trial's validation score."""
    from edgesent.sweep import run_sweep
    from edgesent.train import train

    first = run_sweep(recipe, trials=2, seed=3)
    assert first.finished == 2
    study = optuna.load_study(study_name="tiny", storage=storage_of(recipe))
    before = {t.number: (t.params, t.value, t.datetime_complete) for t in study.trials}

    result = run_sweep(recipe, trials=4, seed=3)
    study = optuna.load_study(study_name="tiny", storage=storage_of(recipe))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert {t.number: (t.params, t.value, t.datetime_complete) for t in study.trials[:2]} == before
    # the resumed sampler does not replay the first trials' random samples
    assert {t.params["training.lr"] for t in study.trials[2:]}.isdisjoint({p["training.lr"] for p, _, _ in before.values()})
    for t in study.trials:
        run = Path(t.user_attrs["run_dir"])
        assert run.name == f"trial-{t.number}"
        assert json.loads((run / "metrics.json").read_text())["validation"]["accuracy"] == pytest.approx(t.value)
        assert t.intermediate_values.keys() == {15, 30}  # reported after each evaluation

    best = max(study.trials, key=lambda t: t.value)
    assert (result.best_trial, result.best_value) == (best.number, best.value)
    assert best.value > 0.6  # the synthetic task is learnable in 30 steps for good lrs
    text = result.best_recipe.read_text()
    assert result.best_recipe == Path(recipe.output_dir) / "sweeps" / "tiny_best.yaml"
    assert f"Trial {best.number}: validation accuracy = {best.value:.6f}" in text
    assert storage_of(recipe) in text and f"edgesent train {result.best_recipe}" in text
    assert "sweep" not in yaml.safe_load(text)
    assert result.history_plot.stat().st_size > 1000
    assert result.history_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result.importances) == set(SPACE)

    best_recipe = load_recipe(result.best_recipe)
    assert best_recipe.training.lr == best.params["training.lr"]
    assert best_recipe.model.method == best.params["model.method"]
    assert best_recipe.seed == recipe.seed and best_recipe.sweep is None
    run = train(best_recipe, out=Path(recipe.output_dir) / "repro")
    again = json.loads((run / "metrics.json").read_text())["validation"]["accuracy"]
    assert abs(again - best.value) <= 1e-6


def poll_states(db: Path) -> list[str]:
    """Trial states read straight from SQLite, read-only (optuna would race the writer creating the schema).
    A RUNNING trial whose owner pid and sampled parameters are already stored reads 'RUNNING-owned'
    (killed before sampling, its retry could not repeat its parameters: the test would race)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT t.state, EXISTS(SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id "
                "AND a.key = 'pid') AND EXISTS(SELECT 1 FROM trial_params p WHERE p.trial_id = t.trial_id) "
                "FROM trials t"
            ).fetchall()
    except sqlite3.Error:  # no file or no tables yet
        return []
    return [f"{state}-owned" if state == "RUNNING" and owned else state for state, owned in rows]


def test_killed_sweep_resumes_and_retries_the_running_trial(tmp_path, model_factory, sentiment_data):
    """kill -9 a sweep process while its third trial runs; re-running finishes 4 trials in total and
    retries the killed trial with the same parameters."""
    from edgesent.sweep import run_sweep

    data = recipe_dict(tmp_path, model_factory("distilbert"), sentiment_data)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "sweep.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edgesent", "sweep", str(path), "--trials", "8", "--seed", "5"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-2000:]
            assert time.time() < deadline, "the sweep subprocess did not complete 2 trials in time"
            states = poll_states(Path(recipe.output_dir, "sweeps", "tiny.db"))
            if states.count("COMPLETE") >= 2 and "RUNNING-owned" in states:
                break
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    study = optuna.load_study(study_name="tiny", storage=storage_of(recipe))
    done_before = {t.number: (t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE}
    killed = next(t for t in study.trials if t.state == TrialState.RUNNING)

    result = run_sweep(recipe, trials=4, seed=5)
    study = optuna.load_study(study_name="tiny", storage=storage_of(recipe))
    assert result.finished == len(finished(study)) == 4
    assert all(t.state == TrialState.COMPLETE for t in finished(study))
    assert {n: (study.trials[n].params, study.trials[n].value) for n in done_before} == done_before
    again = study.trials[killed.number]
    assert again.state == TrialState.FAIL and again.user_attrs["interrupted"] is True
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].state == TrialState.COMPLETE
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]

    # a third run has nothing left to do and does not retry the killed trial twice
    run_sweep(recipe, trials=4, seed=5)
    assert len(optuna.load_study(study_name="tiny", storage=storage_of(recipe)).trials) == len(study.trials)


def test_failing_trial_is_recorded_and_sweep_goes_on(recipe, monkeypatch, capsys):
    import edgesent.train
    from edgesent.sweep import run_sweep

    real_train = edgesent.train.train

    def flaky_train(r, out=None, resume=False, callbacks=None):
        if Path(out).name == "trial-1":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 1 GiB total)")
        return real_train(r, out=out, resume=resume, callbacks=callbacks)

    monkeypatch.setattr(edgesent.train, "train", flaky_train)
    result = run_sweep(recipe, trials=3)
    study = optuna.load_study(study_name="tiny", storage=storage_of(recipe))
    # the failed trial does not count towards --trials: a fourth runs so that 3 complete
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                               TrialState.COMPLETE]
    assert study.trials[1].user_attrs["error"].startswith("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0")
    assert result.finished == 4 and result.best_trial in (0, 2, 3)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("trial 1 failed"))
    assert "CUDA out of memory" in line
    assert "flaky_train" in (Path(recipe.output_dir) / "sweeps" / "tiny" / "trial-1-error.txt").read_text()


def test_every_trial_failing_is_one_error(recipe, monkeypatch):
    import edgesent.train
    from edgesent.sweep import run_sweep

    def broken(r, out=None, resume=False, callbacks=None):
        raise ValueError("Target modules {'nope'} not found in the base model")

    monkeypatch.setattr(edgesent.train, "train", broken)
    with pytest.raises(EdgesentError, match=r"no trial of study 'tiny' completed; last error: ValueError: Target modules"):
        run_sweep(recipe, trials=2)
    assert len(finished(optuna.load_study(study_name="tiny", storage=storage_of(recipe)))) == 2  # stops after N failures
    # failed trials are not used-up budget: once the problem is fixed, the same command runs 2 trials
    monkeypatch.undo()
    result = run_sweep(recipe, trials=2)
    study = optuna.load_study(study_name="tiny", storage=storage_of(recipe))
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2 and result.best_trial in (2, 3)


def test_pruned_trial_stops_training_at_the_first_evaluation(recipe):
    """The callback reports each evaluation; a pruner that says 'prune' stops the Trainer cleanly."""
    from edgesent.sweep import make_objective

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trials_dir = Path(recipe.output_dir) / "sweeps" / "tiny"
    study.optimize(make_objective(recipe, "accuracy", trials_dir), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [15]  # stopped at step 15 of 30
    state = json.loads(next((trials_dir / "trial-0").rglob("trainer_state.json")).read_text())
    assert state["global_step"] == 15


# --------------------------------------------------------------------------------------------
# Bad sweep sections: one line, before any training


def write(tmp_path, data) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "space, fragment",
    [
        ({"training.lrr": {"type": "float", "low": 1e-4, "high": 1e-2}}, "sweep.space key 'training.lrr' is not a recipe field"),
        ({"training.lr": {"type": "float", "lo": 1e-4, "high": 1e-2}}, "unknown key 'sweep.space.training.lr.lo'"),
        ({"training.lr": {"type": "float", "low": 1e-2, "high": 1e-4}}, "float needs low <= high"),
        ({"model.method": {"type": "categorical", "choices": ["full", "qlora"]}},
         "sweep.space 'model.method' = 'qlora': invalid value for 'model.method'"),
        ({"training.batch_size": {"type": "int", "low": 0, "high": 32}},
         "sweep.space 'training.batch_size' = 0: invalid value for 'training.batch_size'"),
        ({}, "has no sweep.space to search"),
    ],
)
def test_bad_sweep_section_is_one_line_recipe_error(tmp_path, space, fragment):
    from edgesent.sweep import run_sweep

    data = tiny_recipe(tmp_path / "model", tmp_path / "data", tmp_path / "exports", sweep={"space": space})
    with pytest.raises(RecipeError) as info:
        run_sweep(write(tmp_path, data), trials=2)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "exports").exists()  # failed before creating the storage


def test_cli_reports_bad_sweep_in_one_line(tmp_path):
    data = tiny_recipe(tmp_path / "model", tmp_path / "data", tmp_path / "exports",
                       sweep={"space": {"training.lrr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    proc = subprocess.run([sys.executable, "-m", "edgesent", "sweep", str(write(tmp_path, data)), "--trials", "2"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "sweep.space key 'training.lrr' is not a recipe field" in proc.stderr


def test_storage_refuses_a_study_of_another_metric(tmp_path):
    from edgesent.sweep import open_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(url, "tiny", "accuracy")
    open_study(url, "tiny", "accuracy")  # same metric: loads the existing study
    with pytest.raises(RecipeError, match="study 'tiny' in .* optimises validation accuracy, not loss; pass --metric accuracy"):
        open_study(url, "tiny", "loss")
