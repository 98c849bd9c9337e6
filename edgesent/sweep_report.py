"""The end of `edgesent sweep`: top-trials table, parameter importances, history plot, best recipe.

`report(study, ...)` reads everything from the optuna study (storage), so it reports trials of
earlier invocations too; `edgesent.sweep` runs the trials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgesent.config import save_recipe, validate_recipe
from edgesent.errors import EdgesentError


@dataclass
class SweepResult:
    """What a sweep produced; `best_*` are None when no trial completed."""

    study_name: str
    storage: str
    metric: str
    finished: int
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_recipe: Path | None = None
    history_plot: Path | None = None
    importances: dict[str, float] = field(default_factory=dict)


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# --------------------------------------------------------------------------------------------
# Report: table, importances, history plot, best recipe


def report(study: optuna.Study, storage: str, metric: str, sweeps_dir: Path, seed: int = 0) -> SweepResult:
    """Print the top trials and importances; write the history plot and the best recipe."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    result = SweepResult(study.study_name, storage, metric, finished=len(finished))
    states = {s.name.lower(): sum(t.state == s for t in finished) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                           TrialState.FAIL)}
    print(f"{len(finished)} finished trial(s): " + ", ".join(f"{n} {s}" for s, n in states.items()))
    if not complete:
        errors = [t.user_attrs["error"] for t in finished if "error" in t.user_attrs]
        raise EdgesentError(
            f"no trial of study '{study.study_name}' completed" + (f"; last error: {errors[-1]}" if errors else "")
        )

    best = study.best_trial
    _print_table(complete, metric, maximise=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    result.importances = _importances(study, seed)
    if result.importances:
        print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()))
    result.history_plot = plot_history(study, metric, sweeps_dir / f"{study.study_name}_history.png")
    result.best_recipe = write_best_recipe(best, storage, study.study_name, metric, sweeps_dir)
    result.best_trial, result.best_value, result.best_params = best.number, best.value, dict(best.params)
    print(f"best: trial {best.number}, validation {metric} {best.value:.4f}; recipe {result.best_recipe}; "
          f"history {result.history_plot}")
    return result


def _print_table(complete: list[FrozenTrial], metric: str, maximise: bool, top: int = 10) -> None:
    from rich.console import Console
    from rich.table import Table

    ranked = sorted(complete, key=lambda t: t.value, reverse=maximise)[:top]
    table = Table(title=f"top {len(ranked)} trials by validation {metric}")
    for column in ("trial", metric, "seconds", "parameters"):
        table.add_column(column)
    for t in ranked:
        table.add_row(str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("seconds", "")), describe(t.params))
    Console(width=160).print(table)


def _importances(study: optuna.Study, seed: int) -> dict[str, float]:
    """fANOVA-style importances; empty when there is too little to compare (under 2 complete trials)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. a parameter never varied
        return {}


def plot_history(study: optuna.Study, metric: str, path: Path) -> Path:
    """Each complete trial's score and the best so far, by trial number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    xs = [t.number for t in complete]
    ys = [t.value for t in complete]
    best = [pick(ys[: i + 1]) for i in range(len(ys))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, ys, "o", label="trial")
    ax.step(xs, best, where="post", color="tab:red", label="best so far")
    pruned_points = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in pruned if t.intermediate_values]
    if pruned_points:
        ax.plot(*zip(*pruned_points, strict=True), "x", color="grey", label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"sweep {study.study_name}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_best_recipe(best: FrozenTrial, storage: str, study_name: str, metric: str, sweeps_dir: Path) -> Path:
    """The best trial's recipe (sweep section removed) with a header saying where it came from."""
    recipe = validate_recipe(best.user_attrs["recipe"], f"trial {best.number} recipe")
    path = sweeps_dir / f"{study_name}_best.yaml"
    header = (
        f"Best trial of edgesent sweep study '{study_name}' (storage {storage}).\n"
        f"Trial {best.number}: validation {metric} = {best.value:.6f}; run folder {best.user_attrs.get('run_dir')}\n"
        f"Parameters: {describe(best.params)}\n"
        f"Reproduce it: edgesent train {path}"
    )
    return save_recipe(recipe, path, header=header)
