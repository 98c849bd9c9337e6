"""`edgesent sweep`: Bayesian (TPE) hyperparameter search over a recipe, resumable.

The recipe's `sweep:` section names recipe fields (`training.lr`, `model.method`, ...) and their
ranges. Each optuna trial samples one value per field, applies them to the recipe, and trains a
normal run folder `<output_dir>/sweeps/<name>/trial-<n>` with `edgesent.train.train`. Its score is
the run's validation metric (`metrics.json`).

Decisions:

- Storage. The study lives in SQLite (`<output_dir>/sweeps/<name>.db`, study name = recipe name)
  and is opened with `load_if_exists`, so running the same command again resumes it.
  `--trials N` counts trials in total: complete and pruned trials already in the storage count
  towards N and only the rest are run. Failed trials do not count (a fixed problem is not "used up"
  budget); one invocation stops after N failures, so a trial that always fails cannot loop forever.
  A study whose categorical choices were edited in the recipe cannot be resumed (optuna's fixed
  value space): one line says so before any trial runs.
- Set-up errors. Before the first trial the base recipe's data is loaded and its tokenizer and
  model folder are checked (`preflight`); a data path that cannot load or a bad model folder stops
  the sweep at once with one line, instead of failing every trial.
- Interrupted trials. A trial left RUNNING by a killed process (or failed by Ctrl+C) is marked
  FAIL with the user attribute `interrupted`, and its parameters are enqueued again
  (`study.enqueue_trial`), so it is retried as a new trial. Interrupted trials do not count
  towards N. A RUNNING trial is "left by a killed process" when its owner (pid + host + start
  time, stored as user attributes) no longer runs; RUNNING trials of a live process (another
  worker sharing the storage) are left alone and counted.
- Sampler. `TPESampler` seeded with `--seed` plus the number of trials already in the study: the
  same command gives the same trials, and a resumed study does not replay the first trials'
  random start-up samples.
- Pruning. A `TrainerCallback` reports the validation metric after every evaluation
  (`trial.report`) and, when the pruner says so, asks the Trainer to stop
  (`control.should_training_stop`), which ends training cleanly (no half-written run folder);
  the objective then raises `optuna.TrialPruned`.
- Failures. Any exception inside a trial (out of memory, a combination the model rejects, ...)
  is caught, printed as one line, kept as the trial's `error` attribute with the traceback in
  `trial-<n>-error.txt`, and the trial is recorded as FAIL; the sweep goes on with another trial.
- Trial recipe. Sampled values are set directly on the recipe data and validated with
  `config.validate_recipe`, not turned into `--set` text first (re-parsing it as YAML would change
  values such as the string choices 'yes' or 'null'). The trial recipe (sweep section removed, seed unchanged) is
  stored as the trial's `recipe` attribute, so the best recipe can be written from the storage
  alone, even for a trial run by an earlier invocation with other `--set` overrides.

Outputs next to the database: `<name>_best.yaml` (a ready recipe: `edgesent train` it to
reproduce the best trial) and `<name>_history.png` (optimisation history). The top trials and
the parameter importances are printed.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from edgesent.config import Recipe, load_recipe, validate_recipe
from edgesent.errors import EdgesentError, RecipeError, atomic_write_text, check_writable
from edgesent.sweep_report import SweepResult, describe, report

METRICS = ("accuracy", "f1", "loss")
SCALARS = (type(None), bool, int, float, str)


# --------------------------------------------------------------------------------------------
# Search space


def _label(choice: Any) -> Any:
    """Optuna categoricals take scalars only; lists (e.g. target_modules) are encoded as JSON text."""
    return choice if isinstance(choice, SCALARS) else json.dumps(choice)


def sample_params(trial: optuna.Trial, space: dict) -> dict[str, Any]:
    """One value per search dimension, as recipe values (categorical labels decoded)."""
    values: dict[str, Any] = {}
    for key, p in space.items():
        if p.type == "categorical":
            labels = [_label(c) for c in p.choices]
            values[key] = p.choices[labels.index(trial.suggest_categorical(key, labels))]
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
        else:
            values[key] = trial.suggest_float(key, float(p.low), float(p.high), log=p.log)
    return values


def trial_recipe(base: Recipe, values: dict[str, Any], source: str = "sweep trial") -> Recipe:
    """`base` with each dotted field set to its value, the sweep section removed, validated."""
    data = base.model_dump(mode="json")
    data.pop("sweep", None)
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise RecipeError(f"{source}: sweep.space key {key!r}: '{part}' is not a section")
        node[leaf] = copy.deepcopy(value)
    return validate_recipe(data, source)


def check_space(recipe: Recipe) -> None:
    """Fail before any training when a bound or choice is not a valid value of its recipe field."""
    if recipe.sweep is None or not recipe.sweep.space:
        raise RecipeError(
            f"recipe '{recipe.name}' has no sweep.space to search; add e.g. "
            "sweep: {space: {training.lr: {type: float, low: 1e-5, high: 1e-3, log: true}}}"
        )
    for key, p in recipe.sweep.space.items():
        if p.type == "categorical":
            candidates = list(p.choices)
        elif p.type == "int":
            if int(p.low) != p.low or int(p.high) != p.high:
                raise RecipeError(f"sweep.space '{key}': int bounds must be whole numbers, got {p.low}..{p.high}")
            candidates = [int(p.low), int(p.high)]
        else:
            candidates = [float(p.low), float(p.high)]
        for value in candidates:
            trial_recipe(recipe, {key: value}, source=f"sweep.space '{key}' = {value!r}")


# --------------------------------------------------------------------------------------------
# Study, storage and interrupted trials


def default_storage(recipe: Recipe) -> str:
    folder = check_writable(Path(recipe.output_dir) / "sweeps")
    return f"sqlite:///{(folder / f'{recipe.name}.db').resolve()}"


def open_study(storage: str, name: str, metric: str) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """Create or load the study; refuse one made for another metric (its scores would not compare).

    Returns the study and its storage object (used to fail trials left RUNNING by a killed process).
    """
    direction = "minimize" if metric == "loss" else "maximize"
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":  # SQLite makes the file, not its folder
        check_writable(Path(storage[len("sqlite:///"):]).parent)
    try:
        backend = optuna.storages.get_storage(storage)
        study = optuna.create_study(storage=backend, study_name=name, direction=direction, load_if_exists=True)
    except Exception as exc:  # sqlalchemy/optuna errors: bad URL, unreadable file, old schema
        raise EdgesentError(f"cannot open sweep storage {storage}: {type(exc).__name__}: {exc}") from None
    known = study.user_attrs.get("metric")
    if known is None:
        study.set_user_attr("metric", metric)
    elif known != metric:
        raise RecipeError(
            f"study '{name}' in {storage} optimises validation {known}, not {metric}; "
            f"pass --metric {known} or another --storage"
        )
    return study, backend


def _owner_alive(trial: FrozenTrial) -> bool:
    """Whether the process that started this RUNNING trial still runs.

    Trials of another host count as alive (their process cannot be checked from here); a trial
    without an owner was killed in the instant between its creation and the objective's first line.
    """
    import psutil

    pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
    if pid is None or host != socket.gethostname():
        return pid is not None
    try:
        proc = psutil.Process(pid)
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= started + 1
    except psutil.Error:
        return False


def recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark trials interrupted by a kill or Ctrl+C as FAIL and enqueue their parameters again.

    Returns the numbers of the trials re-enqueued. The retry carries the user attribute
    `retry_of`, which keeps a later run from enqueueing the same interrupted trial twice.
    """
    trials = study.get_trials(deepcopy=False)
    already = {t.user_attrs.get("retry_of") for t in trials}
    study_id = storage.get_study_id_from_name(study.study_name)
    retried = []
    for t in trials:
        dead_running = t.state == TrialState.RUNNING and not _owner_alive(t)
        interrupted_fail = t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
        if not (dead_running or interrupted_fail) or t.number in already:
            continue
        if dead_running:  # attributes first: a finished trial cannot be updated
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        retried.append(t.number)
    return retried


def count_trials(study: optuna.Study) -> int:
    """Trials that count towards --trials: complete and pruned ones, and live RUNNING ones (not failed)."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.RUNNING and _owner_alive(t):
            n += 1
    return n


def check_study_space(study: optuna.Study, space: dict, storage: str) -> None:
    """Refuse to resume a study whose categorical choices (or a parameter's kind) the recipe changed."""
    from optuna.distributions import CategoricalDistribution

    for t in study.get_trials(deepcopy=False):
        for key, dist in t.distributions.items():
            p = space.get(key)
            if p is None:
                continue
            was_categorical = isinstance(dist, CategoricalDistribution)
            if was_categorical != (p.type == "categorical") or (
                    was_categorical and tuple(dist.choices) != tuple(_label(c) for c in p.choices)):
                old = list(dist.choices) if was_categorical else type(dist).__name__
                new = list(p.choices) if p.type == "categorical" else p.type
                raise RecipeError(
                    f"sweep.space '{key}' changed since study '{study.study_name}' in {storage} started ({old} -> "
                    f"{new}); optuna cannot resume a study whose space changed: restore the choices or pass "
                    "a new --storage")


def preflight(recipe: Recipe) -> None:
    """Set-up errors stop the sweep before any trial: load the data, check the tokenizer and model folder
    (skipped for the parts the search space itself varies)."""
    from edgesent import archs
    from edgesent import model as M
    from edgesent.data import load_splits

    space = recipe.sweep.space if recipe.sweep else {}
    if not any(k.startswith("data.") and k.endswith(("dataset", "_file", "column", "labels")) for k in space):
        load_splits(recipe)
    m = recipe.model
    if "model.name_or_path" not in space:
        if M.is_local(m.name_or_path):
            M.check_local_model_dir(Path(m.name_or_path).expanduser(), m.allow_pickle, need_weights=not m.random_init)
        archs.arch_for(M.load_config(m.name_or_path, m.trust_remote_code))
        M.load_tokenizer(m.name_or_path, m.pad_token, m.trust_remote_code)


# --------------------------------------------------------------------------------------------
# One trial


class PruningCallback(TrainerCallback):
    """Report the validation metric after each evaluation; stop training cleanly when pruned.

    The final evaluation after training (of the kept checkpoint) comes at an already reported step
    and is not reported again.
    """

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric, self.pruned_at, self.reported = trial, metric, None, set()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None or self.pruned_at is not None or state.global_step in self.reported:
            return
        self.reported.add(state.global_step)
        self.trial.report(float(value), step=state.global_step)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True


def make_objective(base: Recipe, metric: str, trials_dir: Path):
    """The optuna objective: sample, train a run folder, return its validation metric."""

    def objective(trial: optuna.Trial) -> float:
        from edgesent import train as train_module  # looked up per call, so tests can wrap train()

        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        values = sample_params(trial, base.sweep.space)
        run_dir = trials_dir / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        callback = PruningCallback(trial, metric)
        start = time.time()
        try:
            recipe = trial_recipe(base, values, source=f"trial {trial.number}")
            trial.set_user_attr("recipe", recipe.model_dump(mode="json"))
            if run_dir.exists():
                raise EdgesentError(f"{run_dir} already exists (left by another study); remove it or rename the recipe")
            run = Path(train_module.train(recipe, out=run_dir, callbacks=[callback]))
            value = _read_metric(run, metric)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            trial.set_user_attr("error", message)
            log = atomic_write_text(trials_dir / f"trial-{trial.number}-error.txt", traceback.format_exc())
            print(f"trial {trial.number} failed ({describe(values)}): {message} [traceback: {log}]", flush=True)
            return math.nan  # optuna records a nan objective as FAIL and goes on with the next trial
        trial.set_user_attr("seconds", round(time.time() - start, 1))
        if callback.pruned_at is not None:
            print(f"trial {trial.number} pruned at step {callback.pruned_at} ({describe(values)})", flush=True)
            raise optuna.TrialPruned()
        print(f"trial {trial.number}: validation {metric} {value:.4f} ({describe(values)}) "
              f"in {time.time() - start:.0f}s", flush=True)
        return value

    return objective


def _read_metric(run: Path, metric: str) -> float:
    path = run / "metrics.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["validation"][metric]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgesentError(f"{path} has no validation {metric} ({type(exc).__name__}: {exc})") from None
    return float(value)


# --------------------------------------------------------------------------------------------
# The sweep


def run_sweep(recipe: Recipe | str | Path, trials: int = 20, timeout: float | None = None, storage: str | None = None,
              metric: str | None = None, seed: int = 0, overrides: list[str] | None = None) -> SweepResult:
    """Run (or resume) the study of `recipe` until it holds `trials` finished trials, then report.

    `recipe` is a Recipe or a recipe file (loaded with `overrides`, the CLI's --set).
    """
    from edgesent.quiet import quiet_libraries

    quiet_libraries()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    check_space(recipe)
    if trials < 1:
        raise EdgesentError(f"--trials must be at least 1, got {trials}")
    metric = metric or recipe.sweep.metric
    if metric not in METRICS:
        raise RecipeError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    storage = storage or default_storage(recipe)
    sweeps_dir = Path(recipe.output_dir) / "sweeps"
    trials_dir = sweeps_dir / recipe.name

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial comes from the objective
    study, backend = open_study(storage, recipe.name, metric)
    if not study.trials and trials_dir.is_dir() and any(trials_dir.glob("trial-*")):
        raise EdgesentError(
            f"{trials_dir} holds trial folders but study '{recipe.name}' in {storage} is new; "
            "remove the folder, pass the study's --storage, or rename the recipe"
        )
    check_study_space(study, recipe.sweep.space, storage)
    preflight(recipe)
    retried = recover_interrupted(study, backend)
    if retried:
        print(f"re-running interrupted trial(s) {', '.join(map(str, retried))} with the same parameters")
    done = count_trials(study)
    todo = max(trials - done, 0)
    goal = "minimising" if metric == "loss" else "maximising"
    print(f"study '{recipe.name}' ({storage}): {done} trial(s) finished, running {todo} more to reach {trials}; "
          f"{goal} validation {metric}", flush=True)

    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    study.pruner = _pruner(recipe.sweep.pruner)
    if todo:
        failed_before = _failed(study)

        def enough(study: optuna.Study, trial: FrozenTrial) -> None:  # failed trials do not count (up to N of them)
            if count_trials(study) >= trials:
                study.stop()
            elif _failed(study) - failed_before >= trials:
                print(f"stopping: {trials} trial(s) failed in this run", flush=True)
                study.stop()

        study.optimize(make_objective(recipe, metric, trials_dir), n_trials=2 * todo + trials, timeout=timeout,
                       callbacks=[enough])
    return report(study, storage, metric, sweeps_dir, seed)


def _failed(study: optuna.Study) -> int:
    return sum(t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") for t in study.get_trials(deepcopy=False))


def _pruner(kind: str) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner()
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()
