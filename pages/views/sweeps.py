"""Sweeps: each hyperparameter sweep's trials, the best so far, what mattered, and whether the win is noise."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.errors import UserError
from core.store import FINISHED, Sweep
from core.sweeps import results
from core.sweeps.driver import cancel_sweep, reconcile_sweeps
from pages import PAGE_ICONS, STATUS_ICONS, open_store, since

LIVE_REFRESH_SECONDS = 2.0
INSPECT, TRAIN = "pages/views/inspect.py", "pages/views/train.py"
REPEAT_SEEDS = 3

st.title("Sweeps")
store = open_store()
try:
    reconcile_sweeps(store)  # start again the driver of a running sweep that lost it
except UserError as problem:
    st.warning(str(problem))


def sweep_label(sweep: Sweep) -> str:
    return f"{STATUS_ICONS.get(sweep.status, '')} {sweep.name} · {sweep.id}"


def remember_pick() -> None:
    st.session_state["sweeps_selected"] = st.session_state["sweeps_pick"]


def number(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def shown_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The trial table as drawn: status with its mark, and the pruning columns only when a trial has them."""
    table = frame.assign(status=[f"{STATUS_ICONS.get(status, '')} {status}" for status in frame["status"]])
    for column in ("stopped_at_step", "reason"):
        if table[column].isna().all():
            table = table.drop(columns=column)
    return table


@st.cache_data(show_spinner=False, max_entries=16)
def study_figures(workspace: str, sweep_id: str, finished: int):
    """The parallel-coordinates and importance figures, redrawn only when another trial has finished."""
    study = results.open_study(sweep_id, store)
    return results.parallel_figure(study), results.importance_figure(study)


def overview(sweep_id: str, status_drawn: str) -> None:
    """Status, progress, best objective, trial table and figures: the part that refreshes while the sweep runs."""
    sweep = store.sweep(sweep_id)
    if sweep.status != status_drawn:
        st.rerun()  # it just ended: redraw the whole page (its buttons, and no more timer)
    spec = results.sweep_spec(sweep)
    frame = results.trial_frame(sweep_id, store)
    best = results.best_trial(frame, spec.maximize)
    objective = spec.objective_metric.removeprefix("eval_")
    finished = int(frame["status"].isin(FINISHED).sum())
    left, middle, right = st.columns(3)
    left.metric("Status", f"{STATUS_ICONS.get(sweep.status, '')} {sweep.status}")
    middle.metric("Trials finished", f"{finished} / {spec.budget()}")
    right.metric(
        f"Best {objective} ({'higher' if spec.maximize else 'lower'} is better)",
        number(best["objective"] if best else None),
        help=f"Trial {int(best['trial'])}, run {best['run_id']}." if best else "No trial has completed yet.",
    )
    if sweep.error:
        st.error(sweep.error)
    st.caption(
        f"{spec.search} search over {', '.join(spec.space)} · {spec.parallel} at a time · pruner {spec.pruner} · "
        f"started {since(sweep.created_at)}"
    )
    summary = results.seed_summary(sweep_id, store)
    if summary:
        seed_noise(summary, spec.maximize, objective)
    st.markdown("**Trials**")
    if frame.empty:
        st.info("No trial queued yet: the sweep's driver queues the first ones within seconds.")
        return
    st.dataframe(shown_trials(frame), hide_index=True, width="stretch", key="sweeps_trials")
    completed = int((frame["status"] == "completed").sum())
    if not completed:
        st.caption("The figures appear once a trial has completed.")
        return
    st.plotly_chart(results.history_figure(frame, spec.maximize, objective), key="sweeps_history", width="stretch")
    parallel, importance = study_figures(str(store.path), sweep_id, completed)
    left, right = st.columns(2)
    left.plotly_chart(parallel, key="sweeps_parallel", width="stretch")
    if importance is None:
        right.caption(
            f"Which setting mattered shows here once at least {results.MIN_TRIALS_FOR_IMPORTANCE} trials have completed "
            "with different values."
        )
    else:
        right.plotly_chart(importance, key="sweeps_importance", width="stretch")


def seed_noise(summary: dict, maximize: bool, objective: str) -> None:
    """A repeat sweep: the best config's objective over other seeds, beside the parent sweep's best trial."""
    left, right = st.columns(2)
    left.metric(
        f"{objective}, mean ± std over {summary['seeds']} seeds",
        f"{number(summary['mean'])} ± {number(summary['std'])}",
    )
    right.metric(f"Parent sweep's best {objective}", number(summary["parent_best"]), help=f"Sweep {summary['parent']}.")
    std, margin = number(summary["std"]), number(summary["margin"])
    if summary["within_noise"] is None:
        st.caption("Once two seeds (and two of the parent's trials) have finished, this says whether the win is noise.")
    elif summary["within_noise"]:
        st.warning(
            f"The parent's best beat its runner-up by {margin}, no more than the seeds alone move it (± {std}): "
            "its win is within noise, so treat the top trials as tied."
        )
    else:
        st.success(f"The parent's best beat its runner-up by {margin}, more than the seeds alone move it (± {std}).")


def open_in_inspect(run_id: str) -> None:
    st.session_state["inspect_run"] = run_id
    st.switch_page(INSPECT)


def actions(sweep: Sweep) -> None:
    """What to do with a sweep: cancel it, open a trial, take the best config to Train, repeat it under other seeds."""
    spec = results.sweep_spec(sweep)
    frame = results.trial_frame(sweep.id, store)
    best = results.best_trial(frame, spec.maximize)
    if sweep.status == "running" and st.button(
        "Cancel sweep", key="sweeps_cancel", help="Queue no more trials, and stop the queued and running ones."
    ):
        act(lambda: cancel_sweep(sweep.id, store))
    if not frame.empty:
        left, right = st.columns([3, 1])
        labels = {
            row.run_id: f"trial {row.trial} · {row.status} · {number(row.objective)} · {row.run_id}" for row in frame.itertuples()
        }
        trial = left.selectbox(
            "Trial", list(labels), format_func=labels.get, key="sweeps_trial", help="A trial is an ordinary run."
        )
        right.markdown("&nbsp;")
        if right.button("Open in Inspect", key="sweeps_open_trial", help="See where this trial's model errs and why."):
            open_in_inspect(trial)
    first, second, third = st.columns(3)
    no_best = "No trial has completed yet." if best is None else None
    if first.button("Open best trial", key="sweeps_open_best", disabled=best is None, help=no_best or "In Inspect."):
        open_in_inspect(best["run_id"])
    if second.button(
        "Copy best config to Train",
        key="sweeps_copy_best",
        disabled=best is None,
        help=no_best or "Fill the Train form with the best trial's config, to train it as one run or change it.",
    ):
        st.session_state["train_pending_config"] = store.get(best["run_id"]).config
        st.switch_page(TRAIN)
    if third.button(
        f"Repeat best with {REPEAT_SEEDS} seeds",
        key="sweeps_repeat",
        disabled=best is None,
        help=no_best or "Train the best config again under other seeds: is its win more than noise?",
    ):
        act(lambda: results.repeat_best(sweep.id, REPEAT_SEEDS, store), select=True)


def act(action, select: bool = False) -> None:
    try:
        with st.spinner("Working…"):
            sweep = action()
    except UserError as problem:
        st.error(str(problem))
        return
    if select:
        st.session_state["sweeps_selected"] = sweep.id
    st.rerun()


sweeps = store.sweeps()
if not sweeps:
    st.info(
        "No sweeps yet. On the Train page, turn on 'Sweep these settings instead of one run' to try several "
        "learning rates (or other settings) and keep the best."
    )
    st.page_link(TRAIN, label="Go to Train", icon=PAGE_ICONS[TRAIN])
    st.stop()

by_id = {sweep.id: sweep for sweep in sweeps}
wanted = st.session_state.get("sweeps_selected")
st.session_state["sweeps_pick"] = wanted if wanted in by_id else sweeps[0].id  # the newest unless one was chosen
chosen = st.selectbox(
    "Sweep", list(by_id), format_func=lambda key: sweep_label(by_id[key]), key="sweeps_pick", on_change=remember_pick
)
sweep = by_id[chosen]
try:
    results.sweep_spec(sweep)
except UserError as problem:
    st.error(f"Sweep {sweep.id}'s spec cannot be read: {problem}")
    st.stop()
running = sweep.status == "running"
st.fragment(run_every=LIVE_REFRESH_SECONDS if running else None)(overview)(sweep.id, sweep.status)
actions(sweep)
with st.expander("Sweep spec (YAML)"):
    st.code(sweep.spec, language="yaml")
    st.caption(f"Same as `python -m core sweeps {sweep.id}`; `python -m core sweep-repeat {sweep.id}` repeats its best.")
