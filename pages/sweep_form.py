"""The Train page's sweep section: instead of one run, search some of the form's settings (an Optuna sweep).

The form's run config is every trial's base; the widgets here say which knobs vary and how, the search, the budget
and the objective. `core.sweeps.spec.SweepSpec` checks it all (`problems()`) and `core.sweeps.driver.submit_sweep`
starts it. Every widget key starts with `sweep_`.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.config import HELP, SCHEDULERS, STRATEGIES, RunConfig
from core.errors import UserError
from core.sweeps.spec import MAX_TRIALS, PRUNERS, SEARCHES, Knob, SweepSpec, sweepable_for
from pages import PAGE_ICONS, open_store

SWEEPS_PAGE = "pages/views/sweeps.py"
SEARCH_TITLES = {"grid": "grid (every combination)", "random": "random", "tpe": "Optuna TPE"}
PRUNER_TITLES = {"none": "none", "median": "median", "halving": "successive halving"}
# Knobs that take text: they vary over a list of their choices only.
CHOICES = {"scheduler": SCHEDULERS, "strategy": STRATEGIES}
# Rates span orders of magnitude: a log range is the useful default.
LOG_KNOBS = ("learning_rate", "vision_lr", "text_lr")
RANGE, LIST = "range", "list of values"


def sweep_toggle() -> bool:
    return st.toggle(
        "Sweep these settings instead of one run",
        key="sweep_on",
        help="Train several trials that vary the settings you pick below, and keep the best.",
    )


def sweep_launch(task, config: RunConfig) -> SweepSpec | None:
    """The sweep's widgets, its problems, download, CLI and Start button; the spec when it could be built."""
    spec, problem = sweep_form(task, config)
    base_problems = set(config.validate())  # the page shows those above already
    problems = [problem] if problem else [p for p in spec.problems() if p not in base_problems]
    for sentence in problems:
        st.error(sentence)
    if spec is not None and not problems:
        st.caption(
            f"{spec.budget()} trials, {spec.parallel} at a time, ranked by {spec.objective_metric} of the model each "
            f"keeps ({'higher' if spec.maximize else 'lower'} is better)."
        )
    left, right = st.columns([1, 2])
    if spec is not None:
        left.download_button(
            "Download sweep (YAML)",
            spec.to_yaml(),
            file_name="sweep.yaml",
            mime="application/x-yaml",
            key="sweep_download",
            help="The sweep file: the base config, what varies, and how to search; the CLI below reads it.",
        )
        right.code("python -m core sweep sweep.yaml", language="bash")
    blocked = spec is None or bool(problems) or bool(base_problems)
    if st.button("Start sweep", type="primary", disabled=blocked, key="sweep_start"):
        start(spec)
    return spec


def sweep_form(task, config: RunConfig) -> tuple[SweepSpec | None, str | None]:
    """(spec, None), or (None, the sentence saying why the form's values make no spec)."""
    st.markdown("**What varies**")
    knobs = sweepable_for(task)
    if "sweep_knobs" not in st.session_state:
        st.session_state["sweep_knobs"] = ["learning_rate"] if "learning_rate" in knobs else []
    else:
        st.session_state["sweep_knobs"] = [knob for knob in st.session_state["sweep_knobs"] if knob in knobs]
    chosen = st.multiselect(
        "Settings to vary",
        knobs,
        key="sweep_knobs",
        help="Each trial takes its own value of these; every other setting is the form's above.",
    )
    space = {knob: knob_widgets(knob, config) for knob in chosen}
    values = {"base": config.to_dict(), "space": space, **search_widgets(task, config)}
    try:
        return SweepSpec.from_dict(values), None
    except UserError as problem:
        return None, str(problem)


def knob_widgets(knob: str, config: RunConfig) -> dict[str, Any]:
    """One row per knob: a range (low, high, log) or a comma-separated list; its YAML form for the spec."""
    base = getattr(config, knob)
    integer = Knob(knob).integer
    parts = ("mode", "low", "high", "log", "values")
    mode_key, low_key, high_key, log_key, values_key = (f"sweep_{part}_{knob}" for part in parts)
    # A widget's value is forgotten on a run that does not draw it (another mode, the knob dropped): start again.
    st.session_state.setdefault(mode_key, LIST if knob in CHOICES or integer else RANGE)
    st.session_state.setdefault(values_key, default_list(knob, base))
    if knob not in CHOICES:
        low, high = default_range(knob, base, config)
        st.session_state.setdefault(low_key, int(low) if integer else low)
        st.session_state.setdefault(high_key, int(high) if integer else high)
        st.session_state.setdefault(log_key, knob in LOG_KNOBS)
    help_text = HELP.get(knob, "")
    columns = st.columns([2, 2, 2, 2, 1])
    columns[0].markdown(f"`{knob}`", help=help_text or None)
    if knob in CHOICES:
        columns[1].caption("a list of values")
        mode = LIST
    else:
        mode = columns[1].radio(
            "How it varies",
            (RANGE, LIST),
            key=mode_key,
            horizontal=True,
            help="A range lets the search draw any value between low and high; a list tries only the values you give.",
        )
    if mode == LIST:
        text = columns[2].text_input(
            f"{knob} values",
            key=values_key,
            help=f"Comma-separated values to try{', from ' + ', '.join(CHOICES[knob]) if knob in CHOICES else ''}.",
        )
        return {"values": [item.strip() for item in text.split(",") if item.strip()]}
    number = {"step": 1} if integer else {"format": "%.2e" if knob in LOG_KNOBS else "%.4f"}
    low = columns[2].number_input(f"{knob} low", key=low_key, help="The smallest value a trial may draw.", **number)
    high = columns[3].number_input(f"{knob} high", key=high_key, help="The largest value a trial may draw.", **number)
    log = columns[4].checkbox(
        "log", key=log_key, help="Draw evenly across orders of magnitude (1e-5 is as likely as 1e-4); needs low above 0."
    )
    return {"low": low, "high": high, "log": log}


def default_list(knob: str, base) -> str:
    """What a new knob's list starts as: the form's value and a neighbour (all the choices for text knobs)."""
    if knob in CHOICES:
        return ", ".join(dict.fromkeys([str(base), *CHOICES[knob][:2]]))
    if isinstance(base, int):
        return f"{base}, {base + 1}" if knob == "seed" else f"{base}, {max(base * 2, 1)}"
    return f"{base:g}, {base * 2 if base else 0.1:g}"


def default_range(knob: str, base, config: RunConfig) -> tuple[float, float]:
    """What a new knob's range starts as: a decade either side for rates, half to double for the rest."""
    if knob in LOG_KNOBS:
        rate = base or config.learning_rate
        return rate / 10, rate * 10
    if not base:
        return 0.0, 0.1 if isinstance(base, float) else 2.0
    return base / 2, base * 2


def search_widgets(task, config: RunConfig) -> dict[str, Any]:
    from core.jobs import SLOTS_ENV, slots_per_device

    st.markdown("**How to search**")
    if st.session_state.get("sweep_objective") not in task.objectives:
        st.session_state["sweep_objective"] = task.objectives[0]
    first, second, third, fourth = st.columns(4)
    search = first.selectbox(
        "Search",
        SEARCHES,
        index=SEARCHES.index("tpe"),
        key="sweep_search",
        format_func=SEARCH_TITLES.get,
        help="Grid tries every combination of listed values; random draws; Optuna TPE draws near the best trials so far.",
    )
    trials = second.number_input(
        "Budget (trials)", min_value=1, max_value=MAX_TRIALS, value=8, step=1, key="sweep_trials", help="How many runs to train."
    )
    parallel = third.number_input(
        "At once",
        min_value=1,
        value=min(2, slots_per_device()),
        step=1,
        key="sweep_parallel",
        help="How many trials the sweep keeps queued or running at one time.",
    )
    name = fourth.text_input(
        "Sweep name", key="sweep_name", placeholder=f"{config.name}: sweep of …", help="Names the sweep and its trials."
    )
    st.caption(
        f"The queue runs at most {slots_per_device()} run(s) at a time per device (set {SLOTS_ENV} to change it); "
        "trials beyond that wait their turn."
    )
    first, second, third, fourth = st.columns(4)
    objective = first.selectbox(
        "Objective",
        task.objectives,
        key="sweep_objective",
        help="The evaluation metric that ranks the trials, read at the model each trial keeps.",
    )
    direction = second.selectbox(
        "Direction",
        ("", "maximize", "minimize"),
        key="sweep_direction",
        format_func=lambda d: d or "auto (maximize unless loss or perplexity)",
        help="Whether a higher or a lower objective is better.",
    )
    pruner = third.selectbox(
        "Pruner",
        PRUNERS,
        key="sweep_pruner",
        format_func=PRUNER_TITLES.get,
        help="Stop trials early whose evaluations trail the others' at the same step (they end 'pruned').",
    )
    startup = fourth.number_input(
        "Trials before pruning",
        min_value=0,
        value=2,
        step=1,
        key="sweep_pruner_startup",
        disabled=pruner == "none",
        help="How many trials must finish before the pruner stops any.",
    )
    return {
        "name": name.strip(),
        "search": search,
        "trials": int(trials),
        "parallel": int(parallel),
        "objective": objective,
        "direction": direction,
        "pruner": pruner,
        "pruner_startup": int(startup),
    }


def start(spec: SweepSpec) -> None:
    from core.sweeps.driver import submit_sweep

    try:
        with st.spinner("Checking the model and the data, then starting the sweep…"):
            sweep = submit_sweep(spec, open_store())
    except UserError as problem:
        st.error(str(problem))
        return
    st.success(f"Sweep {sweep.id} ({sweep.name}) is running: up to {spec.budget()} trials, {spec.parallel} at a time.")
    st.session_state["sweeps_selected"] = sweep.id
    st.page_link(SWEEPS_PAGE, label="Watch it on the Sweeps page", icon=PAGE_ICONS[SWEEPS_PAGE])
