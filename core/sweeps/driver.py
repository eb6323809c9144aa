"""The sweep driver: one process per sweep that asks Optuna for trials, queues each as an ordinary run, feeds the
study the metrics those runs log, prunes the ones that trail, and tells it how each ended.

Its state is the run store (the sweep row, and runs that name it) and the Optuna study in `sweeps.db` (an RDB
storage file `optuna-dashboard` opens too), so a driver started again — by the supervisor after it was killed,
say — picks up where the last one stopped. Trials go through `core.jobs.submit`: queue, cancel, resume,
reconcile and the Runs page treat them as any run. A pruned trial is stopped as a cancel is (it saves a
checkpoint) and ends "pruned", with the reason in its error.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from typing import Any

import pandas as pd

from core import jobs
from core.config import RunConfig
from core.errors import UserError
from core.store import RunStore, Sweep, new_run_id
from core.sweeps.spec import SweepSpec
from core.workspace import subdir, workspace_root

SWEEP_PREFIX = "sweep-"
POLL_SECONDS = 1.0
# A driver that has not reported its pid this long after its sweep was recorded is presumed lost and started again.
START_GRACE_SECONDS = 60.0


def storage_url() -> str:
    """The Optuna storage every sweep's study lives in: one SQLite file in the workspace."""
    return f"sqlite:///{workspace_root() / 'sweeps.db'}"


def is_sweep_id(identifier: str) -> bool:
    return identifier.startswith(SWEEP_PREFIX)


def log_path(sweep_id: str):
    return subdir("sweeps") / f"{sweep_id}.log"


# -- starting, cancelling, repeating ------------------------------------------------------------------


def submit_sweep(spec: SweepSpec, store: RunStore | None = None) -> Sweep:
    """Check the spec, record the sweep and its study, and start its driver; returns at once."""
    from core.tasks import TASKS

    store = store or RunStore()
    spec.raise_if_invalid()
    TASKS[spec.base.task].preflight(spec.base)
    sweep_id = SWEEP_PREFIX + new_run_id()
    study = create_study(spec, sweep_id)
    if spec.search == "grid":
        # The grid in the order the user listed it (Optuna's GridSampler would shuffle it), cut to the budget.
        for params in spec.grid()[: spec.budget()]:
            study.enqueue_trial(params)
    store.create_sweep(sweep_id, name=spec.title, task=spec.base.task, spec_yaml=spec.to_yaml())
    start_driver(sweep_id, store)
    return store.sweep(sweep_id)


def start_driver(sweep_id: str, store: RunStore) -> None:
    process = jobs.start_detached(["sweep-driver", sweep_id], log_path(sweep_id))
    store.update_sweep(sweep_id, pid=process.pid, pid_ticks=jobs.process_start_ticks(process.pid))
    from core.supervisor_start import ensure_supervisor

    ensure_supervisor()


def cancel_sweep(sweep_id: str, store: RunStore | None = None) -> Sweep:
    """End a running sweep: its queued trials are cancelled at once, its running ones stop at their next step."""
    store = store or RunStore()
    sweep = existing_sweep(sweep_id, store)
    if not store.end_sweep(sweep_id, "cancelled"):
        raise UserError(f"Sweep {sweep_id} is {sweep.status}; only a running sweep can be cancelled.")
    for run in store.trials(sweep_id):
        if not run.finished:
            jobs.cancel(run.id, store)
    return store.sweep(sweep_id)


def existing_sweep(sweep_id: str, store: RunStore) -> Sweep:
    sweep = store.sweep(sweep_id)
    if sweep is None:
        raise UserError(f"There is no sweep with id {sweep_id}; `python -m core sweeps` lists them.")
    return sweep


def reconcile_sweeps(store: RunStore) -> list[str]:
    """Start the driver again of every running sweep whose driver is gone (killed, or its machine restarted)."""
    restarted = []
    now = time.time()
    for sweep in store.sweeps(("running",)):
        if sweep.pid is None and now - sweep.created_at < START_GRACE_SECONDS:
            continue
        if jobs.process_alive(sweep.pid, sweep.pid_ticks):
            continue
        start_driver(sweep.id, store)
        restarted.append(sweep.id)
    return restarted


# -- the study --------------------------------------------------------------------------------------


def create_study(spec: SweepSpec, sweep_id: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage_url(),
        study_name=sweep_id,
        direction="maximize" if spec.maximize else "minimize",
        sampler=sampler(spec),
        pruner=pruner(spec),
        load_if_exists=True,
    )


def load_study(spec: SweepSpec, sweep_id: str):
    """The sweep's study, with the sampler and pruner its spec names (Optuna keeps neither in storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(storage=storage_url(), study_name=sweep_id, sampler=sampler(spec), pruner=pruner(spec))


def sampler(spec: SweepSpec):
    import optuna

    # Random for a grid too: its points are enqueued, so the sampler never draws them.
    if spec.search == "tpe":
        return optuna.samplers.TPESampler(seed=spec.base.seed)
    return optuna.samplers.RandomSampler(seed=spec.base.seed)


def pruner(spec: SweepSpec):
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup, n_warmup_steps=0)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


# -- the driver process -----------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_driver(sweep_id: str) -> int:
    store = RunStore()
    sweep = store.sweep(sweep_id)
    if sweep is None:
        say(f"No sweep {sweep_id} in the store.")
        return 2
    store.update_sweep(sweep_id, pid=os.getpid(), pid_ticks=jobs.process_start_ticks(os.getpid()))
    # SIGTERM ends only the driver (its trials run on): the supervisor starts it again while the sweep is running.
    signal.signal(signal.SIGTERM, _exit)
    try:
        spec = SweepSpec.from_yaml(sweep.spec)
        study = load_study(spec, sweep_id)
        say(f"Driving sweep {sweep_id}: {spec.budget()} trials, {spec.parallel} at a time, objective {spec.objective_metric}.")
        while drive_once(store, study, spec, sweep_id):
            time.sleep(POLL_SECONDS)
    except Exception as problem:  # noqa: BLE001 - a sweep must end with a reason, not a silent dead driver
        traceback.print_exc()
        reason = str(problem) if isinstance(problem, UserError) else f"The sweep driver failed: {problem!r}."
        store.end_sweep(sweep_id, "failed", reason + " Its trials keep running as ordinary runs.")
        return 1
    say(f"Sweep {store.sweep(sweep_id).status}.")
    return 0


def drive_once(store: RunStore, study, spec: SweepSpec, sweep_id: str) -> bool:
    """One round: feed and prune running trials, tell the finished ones, ask for more; False once the sweep is over."""
    sweep = store.sweep(sweep_id)
    runs = store.trials(sweep_id)
    frozen = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    # Only the trials the study has not been told about yet: a long sweep's finished ones cost nothing per round.
    open_runs = [run for run in runs if run.trial in frozen and not frozen[run.trial].state.is_finished()]
    metrics = store.metrics([run.id for run in open_runs]) if open_runs else pd.DataFrame()
    for run in open_runs:
        follow_trial(store, study, spec, run, frozen[run.trial], metrics[metrics["run_id"] == run.id])
    linked = {run.trial for run in runs}
    for number, trial in frozen.items():
        if number not in linked and not trial.state.is_finished() and trial.state.name == "RUNNING":
            # Asked for by a driver that died before it queued the run: it never ran.
            study.tell(number, state=_state("FAIL"))
    active = sum(not run.finished for run in runs)
    if sweep.status != "running":
        return active > 0  # cancelled: wait for the trials that are stopping, to tell the study how they ended
    started = len(runs)
    while active < min(spec.parallel, jobs.slots_per_device()) and started < spec.budget():
        trial = study.ask({name: knob.distribution() for name, knob in spec.space.items()})
        config = spec.trial_config(trial.params, trial.number)
        run = jobs.submit(config, store, preflight=False, sweep_id=sweep_id, trial=trial.number)
        say(f"Trial {trial.number} queued as run {run.id}: {trial.params}")
        active += 1
        started += 1
    if started >= spec.budget() and active == 0:
        store.end_sweep(sweep_id, "completed")
        return False
    return True


def follow_trial(store: RunStore, study, spec: SweepSpec, run, trial, metrics: pd.DataFrame) -> None:
    """Report the run's new evaluations to its trial, prune it when the pruner says so, and tell how it ended."""
    import optuna

    series = objective_series(metrics, spec.objective_metric)
    live = optuna.trial.Trial(study, trial._trial_id)
    new = [(step, value) for step, value in series.items() if step not in trial.intermediate_values]
    for step, value in new:
        live.report(float(value), int(step))
    if run.status == "running" and new and spec.pruner != "none" and not (run.directory / jobs.PRUNE_FILE).exists():
        if live.should_prune():
            step, value = new[-1]
            live.set_user_attr("pruned_at_step", int(step))
            reason = prune_reason(study, spec, int(step), float(value))
            jobs.prune(run.id, reason, store)
            say(f"Trial {trial.number} (run {run.id}) pruned: {reason}")
    if not run.finished:
        return
    if run.status == "completed":
        value = objective_value(metrics, spec, RunConfig.from_yaml(run.config))
        if value is None:
            study.tell(trial.number, state=_state("FAIL"))
            say(f"Trial {trial.number} completed without logging {spec.objective_metric}; told as failed.")
        else:
            study.tell(trial.number, value)
            say(f"Trial {trial.number} completed: {spec.objective_metric} = {value:.4g}")
    elif run.status == "pruned":
        study.tell(trial.number, state=_state("PRUNED"))
    else:
        study.tell(trial.number, state=_state("FAIL"))
        say(f"Trial {trial.number} {run.status}.")


def objective_series(metrics: pd.DataFrame, name: str) -> pd.Series:
    """A run's logged values of one eval metric by step, after training began (step 0 is the pretrained model,
    the same for every trial, and would make the pruner's comparisons noise)."""
    if metrics.empty:
        return pd.Series(dtype=float)
    rows = metrics[(metrics["name"] == name) & (metrics["step"] > 0)].drop_duplicates("step", keep="last")
    return rows.set_index("step")["value"].sort_index()


def objective_value(metrics: pd.DataFrame, spec: SweepSpec, config: RunConfig) -> float | None:
    """The objective of the model the run kept: at its best checkpoint (by the task's primary metric, as the trainer
    chose it) when it kept the best one, else at its last evaluation."""
    from core.tasks import TASKS

    series = objective_series(metrics, spec.objective_metric)
    if series.empty:
        return None
    if config.best_checkpoint:
        primary = objective_series(metrics, f"eval_{TASKS[config.task].primary_metric}")
        if not primary.empty and primary.idxmax() in series.index:
            return float(series[primary.idxmax()])
    return float(series.iloc[-1])


def prune_reason(study, spec: SweepSpec, step: int, value: float) -> str:
    """Why a trial was pruned, in the words of its pruner."""
    metric = spec.objective_metric
    if spec.pruner == "median":
        earlier = [
            trial.intermediate_values[max(s for s in trial.intermediate_values if s <= step)]
            for trial in study.get_trials(deepcopy=False, states=(_state("COMPLETE"),))
            if any(s <= step for s in trial.intermediate_values)
        ]
        if earlier:
            median = float(pd.Series(earlier).median())
            side = "below" if spec.maximize else "above"
            return (
                f"Pruned at step {step}: its {metric} ({value:.4g}) was {side} the median of the finished trials there "
                f"({median:.4g})."
            )
    return f"Pruned at step {step}: its {metric} ({value:.4g}) was not among the best trials' at that rung (successive halving)."


def _exit(*_) -> None:
    raise SystemExit(0)


def _state(name: str) -> Any:
    import optuna

    return optuna.trial.TrialState[name]
