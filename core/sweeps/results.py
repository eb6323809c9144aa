"""What a sweep found: its trials as a table, the best one, what mattered (parameter importances), and how
noisy the win is (a repeat of the best config under other seeds) — plain data and plotly figures, UI-free.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from core.config import RunConfig
from core.errors import UserError
from core.store import RunStore, Sweep
from core.sweeps.driver import existing_sweep, load_study, objective_value, submit_sweep
from core.sweeps.spec import Knob, SweepSpec

# Optuna's importance evaluator wants at least this many finished trials with an objective.
MIN_TRIALS_FOR_IMPORTANCE = 3


def sweep_spec(sweep: Sweep) -> SweepSpec:
    return SweepSpec.from_yaml(sweep.spec)


def trial_frame(sweep_id: str, store: RunStore | None = None) -> pd.DataFrame:
    """One row per trial: its run, status, the values of the swept knobs, seed, objective, and (pruned trials)
    the step it was stopped at and why."""
    store = store or RunStore()
    spec = sweep_spec(existing_sweep(sweep_id, store))
    runs = store.trials(sweep_id)
    metrics = store.metrics([run.id for run in runs]) if runs else pd.DataFrame()
    rows = []
    for run in runs:
        config = RunConfig.from_yaml(run.config)
        own = metrics[metrics["run_id"] == run.id]
        value = objective_value(own, spec, config) if run.status in ("completed", "pruned", "running") else None
        rows.append(
            {
                "trial": run.trial,
                "run_id": run.id,
                "status": run.status,
                **{name: getattr(config, name) for name in spec.space},
                **({} if "seed" in spec.space else {"seed": config.seed}),
                "objective": value,
                "stopped_at_step": run.step if run.status == "pruned" else None,
                "reason": run.error if run.status in ("pruned", "failed") else None,
            }
        )
    columns = ["trial", "run_id", "status", *spec.space, *([] if "seed" in spec.space else ["seed"])]
    return pd.DataFrame(rows, columns=[*columns, "objective", "stopped_at_step", "reason"])


def best_trial(frame: pd.DataFrame, maximize: bool) -> dict[str, Any] | None:
    """The completed trial with the best objective (the earliest among ties); None before one has completed."""
    done = frame[(frame["status"] == "completed") & frame["objective"].notna()]
    if done.empty:
        return None
    index = done["objective"].idxmax() if maximize else done["objective"].idxmin()
    return done.loc[index].to_dict()


def best_so_far(frame: pd.DataFrame, maximize: bool) -> pd.DataFrame:
    """Completed trials in trial order with the best objective up to each one (the curve a sweep climbs)."""
    done = frame[(frame["status"] == "completed") & frame["objective"].notna()].sort_values("trial")
    best = done["objective"].cummax() if maximize else done["objective"].cummin()
    return pd.DataFrame({"trial": done["trial"], "objective": done["objective"], "best": best})


def importances(study) -> dict[str, float]:
    """How much each knob mattered to the objective (Optuna's fANOVA importances, summing to 1); empty while too few
    trials have finished or nothing varied."""
    import optuna

    finished = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    varied = {name for t in finished for name in t.params if len({str(u.params.get(name)) for u in finished}) > 1}
    if len(finished) < MIN_TRIALS_FOR_IMPORTANCE or not varied:
        return {}
    found = optuna.importance.get_param_importances(study, evaluator=_evaluator(), params=sorted(varied))
    return {name: float(value) for name, value in found.items()}


def _evaluator():
    """fANOVA with a fixed seed, so the same study always shows the same importances."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def seed_summary(sweep_id: str, store: RunStore | None = None) -> dict[str, Any] | None:
    """For a "repeat best" sweep: the objective's mean ± std over its seeds, beside the parent's best trial and by how
    much that trial beat the parent's runner-up (`margin`); `within_noise` when that margin is no more than the seeds
    alone move the objective (None until two seeds and two parent trials have finished). None for other sweeps."""
    store = store or RunStore()
    spec = sweep_spec(existing_sweep(sweep_id, store))
    parent_id = spec.extras.get("parent")
    if not parent_id:
        return None
    values = trial_frame(sweep_id, store).query("status == 'completed'")["objective"].dropna()
    parent = trial_frame(parent_id, store) if store.sweep(parent_id) else None
    parent_best = best_trial(parent, spec.maximize) if parent is not None else None
    scores = pd.Series(dtype=float) if parent is None else parent.query("status == 'completed'")["objective"].dropna()
    ranked = scores.sort_values(ascending=not spec.maximize).tolist()
    margin = abs(ranked[0] - ranked[1]) if len(ranked) > 1 else None
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return {
        "seeds": len(values),
        "mean": float(values.mean()) if len(values) else math.nan,
        "std": std,
        "parent": parent_id,
        "parent_best": parent_best["objective"] if parent_best else None,
        "margin": margin,
        "within_noise": None if margin is None or math.isnan(std) else bool(margin <= std),
    }


def repeat_best(sweep_id: str, seeds: int = 3, store: RunStore | None = None) -> Sweep:
    """A new sweep that trains the best trial's config again under `seeds` other seeds: is the win noise?"""
    store = store or RunStore()
    sweep = existing_sweep(sweep_id, store)
    spec = SweepSpec.from_yaml(sweep.spec)
    best = best_trial(trial_frame(sweep_id, store), spec.maximize)
    if best is None:
        raise UserError(f"Sweep {sweep_id} has no completed trial with an objective yet; repeat it once one has finished.")
    base = RunConfig.from_yaml(store.get(best["run_id"]).config)
    repeat = SweepSpec(
        base=base,
        space={"seed": Knob("seed", values=tuple(base.seed + offset for offset in range(1, seeds + 1)))},
        name=f"{spec.title}: trial {int(best['trial'])} again with {seeds} seeds",
        search="grid",
        trials=seeds,
        parallel=spec.parallel,
        objective=spec.objective,
        direction=spec.direction,
        extras={"parent": sweep_id},
    )
    return submit_sweep(repeat, store)


def open_study(sweep_id: str, store: RunStore | None = None):
    store = store or RunStore()
    return load_study(sweep_spec(existing_sweep(sweep_id, store)), sweep_id)


# -- figures ------------------------------------------------------------------------------------------


def history_figure(frame: pd.DataFrame, maximize: bool, objective: str):
    """Each completed trial's objective, and the best so far, against the trial number."""
    import plotly.graph_objects as go

    curve = best_so_far(frame, maximize)
    figure = go.Figure()
    figure.add_scatter(x=curve["trial"], y=curve["objective"], mode="markers", name="trial")
    figure.add_scatter(x=curve["trial"], y=curve["best"], mode="lines", line_shape="hv", name="best so far")
    figure.update_layout(xaxis_title="trial", yaxis_title=objective, height=320, margin={"t": 30})
    return figure


def parallel_figure(study):
    """Optuna's parallel-coordinates plot: each completed trial a line through its knob values to its objective."""
    import optuna

    return optuna.visualization.plot_parallel_coordinate(study)


def importance_figure(study):
    """Optuna's parameter-importance bars (fANOVA), or None while there is too little to judge."""
    import optuna

    found = importances(study)
    if not found:
        return None
    return optuna.visualization.plot_param_importances(study, evaluator=_evaluator(), params=list(found))
