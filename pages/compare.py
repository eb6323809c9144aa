"""The Inspect page's "Compare models" panel, which every view shares: another stage of the run, another run of the
same view, or the run a retrained one came from; both models' share of right examples, and the flips, drawn by the
view. The frames come from `core.comparisons`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import inspect
from core.errors import UserError
from core.store import Run
from pages import open_store, run_label, with_bar

PARENT_MODE = "the run it was retrained from"  # for a run trained on a dataset version


def compare_panel(run: Run, stage: str, split: str, frame: pd.DataFrame, draw_flips):
    """The "Compare models" tab every view shares: pick another stage of this run or another run of the same kind,
    show both models' share of right examples (each task's own: accuracy, exact match, sentences all right, R@1) and
    how many predictions changed, then hand the flips to `draw_flips(comparison, first, second)`, which draws them as
    the view does (a table of texts, a gallery of images). `frame` is this stage's `comparisons.comparison_frame`;
    `first` and `second` are (run, stage, label), the earlier model first. Returns what it passed to `draw_flips`, or
    None when nothing was compared."""
    from core import comparisons
    from core.retrain import version_of

    modes = ["another stage of this run", "another run"]
    if version_of(run) is not None:
        modes.insert(0, PARENT_MODE)
    mode = st.radio("Compare with", modes, horizontal=True, key="inspect_compare_mode")
    if mode == PARENT_MODE:
        from pages.data_map import parent_panel

        return parent_panel(run, split, stage, draw_flips)
    try:
        stages = comparisons.comparison_stages(run, split)
        other = other_stage_of(run, stage, stages) if mode == "another stage of this run" else other_run_stage(run, split)
        if other is None:
            return None
        other_run, other_stage = other
        # A = the earlier model (the other run, or the earlier stage), B = the later one.
        if other_run.id == run.id:
            first, second = sorted([stage, other_stage], key=stages.index)
            sides = ((run, first, first), (run, second, second))
        else:
            sides = ((other_run, other_stage, f"{other_run.name} · {other_stage}"), (run, stage, f"{run.name} · {stage}"))
        (run_a, stage_a, label_a), (run_b, stage_b, label_b) = sides
        frame_a = frame if (run_a.id, stage_a) == (run.id, stage) else frame_with_bar(run_a, split, stage_a)
        frame_b = frame if (run_b.id, stage_b) == (run.id, stage) else frame_with_bar(run_b, split, stage_b)
        comparison = inspect.compare(frame_a, frame_b, (label_a, label_b))
    except UserError as problem:
        st.error(str(problem))
        return None
    measure = comparisons.measure_of(frame)
    a_column, b_column, changed_column = st.columns(3)
    a_column.metric(f"{measure} · {label_a}", f"{comparison.accuracy_a:.1%}")
    b_column.metric(
        f"{measure} · {label_b}",
        f"{comparison.accuracy_b:.1%}",
        delta=f"{(comparison.accuracy_b - comparison.accuracy_a) * 100:+.1f} points",
    )
    changed_column.metric("Predictions that changed", f"{comparison.changed:,}")
    compared = (comparison, sides[0], sides[1])
    draw_flips(*compared)
    return compared


def frame_with_bar(run: Run, split: str, stage: str) -> pd.DataFrame:
    """A stage's frame to compare (`core.comparisons.comparison_frame`), with a progress bar the first time, when it is
    predicted and kept."""
    from core import comparisons

    text = f"Reading the {split} split under '{stage}' of {run.name} (predicted once, then kept)…"
    return with_bar(text, lambda progress: comparisons.comparison_frame(run, split, stage, progress))


def flip_tables(comparison, first: tuple, second: tuple, columns: list[str], key_prefix: str) -> None:
    """The fixed and the broken examples of a comparison side by side, as tables of `columns` (which name the two
    models' columns by their labels, `first[2]` and `second[2]`)."""
    label_a, label_b = first[2], second[2]
    for column, (title, flips, key) in zip(
        st.columns(2),
        (
            (f"**Fixed** — wrong under {label_a}, right under {label_b}", comparison.fixed, f"{key_prefix}_fixed"),
            (f"**Broken** — right under {label_a}, wrong under {label_b}", comparison.broken, f"{key_prefix}_broken"),
        ),
    ):
        with column:
            st.markdown(f"{title}: {len(flips)}")
            st.dataframe(flips[columns], width="stretch", height=min(38 + 35 * max(1, len(flips)), 300), key=key)


def other_stage_of(run: Run, stage: str, stages: list[str]) -> tuple[Run, str] | None:
    others = [s for s in stages if s != stage]
    if not others:
        st.info("This run has only one stage with a model; compare it with another run instead.")
        return None
    return run, st.selectbox("Stage to compare with", others, key="inspect_compare_stage")


def other_run_stage(run: Run, split: str) -> tuple[Run, str] | None:
    """Another run of the workspace whose task has the same view (so its frames can pair with this run's), and one of
    its stages; its data must be this run's for the comparison to go through."""
    from core import comparisons
    from core.tasks import TASKS

    view = TASKS[run.task].view
    by_id = {
        known.id: known
        for known in open_store().list()
        if known.id != run.id and known.task in TASKS and TASKS[known.task].view == view
    }
    if not by_id:
        st.info(f"There is no other {TASKS[run.task].title.lower()} run to compare with yet.")
        return None
    other_id = st.selectbox(
        "Run to compare with", list(by_id), format_func=lambda key: run_label(by_id[key]), key="inspect_compare_run"
    )
    other_stages = comparisons.comparison_stages(by_id[other_id], split)
    chosen = st.selectbox("Its stage", other_stages, index=len(other_stages) - 1, key=f"inspect_compare_stage_{other_id}")
    return by_id[other_id], chosen
