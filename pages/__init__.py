"""Page scripts live in pages/views/; this package holds the helpers they share.

Why a sub-folder: Streamlit treats any `pages/*.py` beside the entry script as a legacy
multipage app on a server's first request, which would run a page without app.py's navigation.
Keeping the page scripts one level down leaves app.py's `st.navigation` the only router.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from core.errors import UserError
from core.store import Run, RunStore

# Material icons (Streamlit's own icon font): emoji need a colour-emoji font that a stock browser
# may lack, and then show as empty boxes. For st.navigation, st.page_link, headings and markdown.
PAGE_ICONS = {
    "pages/views/home.py": ":material/home:",
    "pages/views/data.py": ":material/table_chart:",
    "pages/views/train.py": ":material/model_training:",
    "pages/views/runs.py": ":material/monitoring:",
    "pages/views/inspect.py": ":material/search_insights:",
}
# Plain-text places (table cells, select options, image captions) cannot draw Material icons:
# these marks are in WGL4, which the common fonts (Liberation, DejaVu, Arial, Segoe) all cover.
STATUS_ICONS = {"queued": "…", "running": "►", "completed": "●", "failed": "×", "cancelled": "■"}
VERDICTS = {True: "right", False: "wrong"}  # a prediction, in image captions


def open_store() -> RunStore:
    """The run store, or a sentence and a stop when the workspace cannot be used."""
    try:
        return RunStore()
    except UserError as problem:
        st.error(str(problem))
        st.stop()


def run_label(run: Run) -> str:
    return f"{STATUS_ICONS.get(run.status, '')} {run.name} · {run.id}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def since(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "—"


def show_delta(explanation) -> None:
    """The convergence-delta caption, and a warning when it is large (`core.viz.delta_note`), under any map."""
    from core import viz

    caption, warning = viz.delta_note(explanation)
    if caption:
        st.caption(caption)
    if warning:
        st.warning(warning)


def method_picker(modality: str, key: str, params_key: str, label: str, optional: bool = False,
                  help: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """A selectbox of every attribution method that applies to an input ("tokens", "patches", "pairs"), the chosen
    one's description and a widget per parameter; (None, {}) when an optional slot is left off."""
    from core.explain.methods import methods_for

    methods = methods_for(modality)
    options = ([None] if optional else []) + list(methods)
    chosen = st.selectbox(label, options, key=key, format_func=lambda k: "— none —" if k is None else methods[k].title,
                          help=None if optional else help)
    if chosen is None:
        return None, {}
    st.caption(methods[chosen].description)
    return chosen, method_params(methods[chosen], f"{params_key}_{chosen}")


def method_params(method, key_prefix: str, preferred: dict[str, Any] | None = None) -> dict[str, Any]:
    """One widget per parameter of an attribution method (from its defaults, choices and bounds), keyed `key_prefix_name`;
    `preferred` replaces some of the method's defaults where a view knows better."""
    choices = getattr(method, "choices", {}) or {}
    params: dict[str, Any] = {}
    for name, default in {**(method.defaults or {}), **{k: v for k, v in (preferred or {}).items() if k in (method.defaults or {})}}.items():
        key = f"{key_prefix}_{name}"
        if name in choices:
            params[name] = st.selectbox(name, list(choices[name]), index=list(choices[name]).index(default), key=key)
        elif isinstance(default, bool):
            params[name] = st.toggle(name, value=default, key=key)
        elif isinstance(default, int):
            low, high = method.bounds(name)
            params[name] = int(st.number_input(name, min_value=int(low), max_value=int(high), value=default, step=1, key=key))
        elif isinstance(default, float):
            low, high = method.bounds(name)
            params[name] = float(st.number_input(name, min_value=float(low), max_value=float(high), value=default,
                                                 format="%.4f", key=key))
        elif isinstance(default, (list, tuple)):
            continue  # a pair such as a fixed grid: the method's own default
        else:
            params[name] = st.text_input(name, value=str(default), key=key)
    return params
