"""Home: what the workbench does and where to start."""

import streamlit as st

from core.errors import UserError
from core.jobs import reconcile
from core.store import RunStore
from pages import PAGE_ICONS

st.title("Fine-tune & explain workbench")
st.markdown(
    "Pick a pretrained encoder and a dataset, fine-tune it in the background, watch the curves "
    "move, and judge it against the model **before** fine-tuning — all on this machine, offline."
)

try:
    store = RunStore()
except UserError as problem:
    st.error(str(problem))
    st.stop()
try:
    reconcile(store)
except UserError as problem:  # a read-only store: the runs can still be read and counted
    st.warning(str(problem))
runs = store.list()

active = sum(run.status in ("queued", "running") for run in runs)
left, middle, right = st.columns(3)
left.metric("Runs", len(runs))
middle.metric("Queued or running", active)
right.metric("Completed", sum(run.status == "completed" for run in runs))

st.subheader("Start here")
st.page_link(
    "pages/views/data.py",
    label="1 · Data — look at a built-in dataset or upload your own",
    icon=PAGE_ICONS["pages/views/data.py"],
)
st.page_link(
    "pages/views/train.py", label="2 · Train — MiniLM on movie reviews is ready to go", icon=PAGE_ICONS["pages/views/train.py"]
)
st.page_link(
    "pages/views/runs.py", label="3 · Runs — live curves, cancel, resume, compare", icon=PAGE_ICONS["pages/views/runs.py"]
)
st.page_link(
    "pages/views/inspect.py",
    label="4 · Inspect — errors, attributions, and for image-text runs a retrieval browser",
    icon=PAGE_ICONS["pages/views/inspect.py"],
)
st.caption(
    "Built in and offline: the all-MiniLM-L6-v2 encoder (hub: sentence-transformers/all-MiniLM-L6-v2) and "
    "4,000 Pang & Lee movie-review sentences (hub: cornell-movie-review-data/rotten_tomatoes); ImageNet "
    "MobileNetV2 (hub: google/mobilenet_v2_1.0_224) with image datasets; and both joined as a CLIP-style dual "
    "encoder that learns to match images with captions (Train → preset 'Align images and captions')."
)
