"""Inspect: where a run's model errs and why. The page picks the run; the view its task names (`Task.view`:
text, tags, image, pairs or answers; `INSPECT_VIEWS` below) picks the stage and split and draws the rest — metrics, the
examples behind each error, attributions, a sanity check, and before/after (or run vs run) flips.
"""

from __future__ import annotations

import importlib

import streamlit as st

from core.tasks import TASKS
from pages import PAGE_ICONS, open_store, run_label

# One line per view: (module, function), imported only when a run of that view is picked.
INSPECT_VIEWS = {
    "text": ("pages.text_view", "text_inspector"),
    "image": ("pages.image_view", "image_inspector"),
    "tags": ("pages.ner_view", "ner_inspector"),
    "pairs": ("pages.pair_view", "pair_inspector"),
    "answers": ("pages.answer_view", "answer_inspector"),
}

st.title("Inspect")
runs = open_store().list()
if not runs:
    st.info("No runs yet. Train a model on the Train page; then come back here to see where it errs and why.")
    st.page_link("pages/views/train.py", label="Go to Train", icon=PAGE_ICONS["pages/views/train.py"])
    st.stop()

by_id = {run.id: run for run in runs}
pick_run, pick_stage, pick_split = st.columns([3, 2, 1])
run_id = pick_run.selectbox(
    "Run",
    list(by_id),
    format_func=lambda key: run_label(by_id[key]),
    key="inspect_run",
    persist_state="session",
    help="A finished run, or a running one (its latest checkpoint).",
)
run = by_id[run_id]
task = TASKS.get(run.task)
if task is None:
    st.error(
        f"Run {run.id} is a run of the task '{run.task}', which this version of the workbench does not know; pick another run."
    )
    st.stop()
module, view = INSPECT_VIEWS[task.view]
getattr(importlib.import_module(module), view)(run, pick_stage, pick_split)
