"""Error slice → retrain on the Inspect page (AppTest): the data map's mislabel candidates written into a dataset
version and retrained on with one button, and the child run's Compare tab against its parent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import stop_trainers
from core import inspect, jobs
from core.data import planted_keywords_frame
from core.retrain import compare_with_parent, lineage, proposed_labels
from core.store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from test_jobs import RUN_TIMEOUT, tiny_config

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/views/inspect.py"
OTHER = {"positive": "negative", "negative": "positive"}


@pytest.fixture(scope="module")
def noisy_workspace(tiny_bert, tmp_path_factory):
    """A workspace with one finished run on planted keywords whose every 10th training label is flipped."""
    root = tmp_path_factory.mktemp("retrain-pages")
    frame = planted_keywords_frame(600, seed=3)
    frame["split"] = ["test" if row % 5 == 0 else "validation" if row % 5 == 1 else "train" for row in range(len(frame))]
    flipped = frame.index[frame["split"] == "train"][::10]
    frame.loc[flipped, "label"] = frame.loc[flipped, "label"].map(OTHER)
    frame.to_csv(root / "noisy.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        store = RunStore()
        config = tiny_config(tiny_bert, name="noisy", dataset=str(root / "noisy.csv"), max_rows=0, epochs=3)
        try:
            parent = jobs.wait(jobs.submit(config, store).id, store, timeout=RUN_TIMEOUT)
        finally:
            stop_trainers(root)
        assert parent.status == "completed", jobs.log_tail(parent.id, 30)
    yield root, parent
    stop_trainers(root)


def open_run(run_id: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.switch_page(PAGE).run()
    app.selectbox(key="inspect_run").set_value(run_id).run()
    assert not app.exception, [error.message for error in app.exception]
    return app


def test_retrain_from_the_candidates_then_compare_the_child_with_its_parent(noisy_workspace, monkeypatch):
    root, parent = noisy_workspace
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    app = open_run(parent.id)
    assert not app.error, [error.value for error in app.error]
    # The candidates' editor starts each new label at the class the model predicted instead while it trained, and
    # leaves the rows it never predicted otherwise at their own label.
    (editor,) = [frame.value for frame in app.dataframe if "new label" in frame.value.columns]
    proposed = proposed_labels(parent).reindex(editor["example"]).to_numpy()
    expected = np.where(pd.isna(proposed), editor["label"].to_numpy(), proposed)
    assert (editor["new label"].to_numpy() == expected).all() and (editor["new label"] != editor["label"]).any()
    assert app.text_input(key="inspect_map_edit_name").value == "noisy-edit"
    app.button(key="inspect_map_edit_go").click().run()
    assert not app.error, [error.value for error in app.error]
    (success,) = [message.value for message in app.success]
    assert "Wrote the dataset version noisy-edit" in success and "relabelled" in success
    store = RunStore()
    child = next(run for run in store.list() if run.id != parent.id)
    assert child.dataset == "noisy-edit" and child.name == "noisy · noisy-edit"
    try:
        child = jobs.wait(child.id, store, timeout=RUN_TIMEOUT)
    finally:
        stop_trainers(root)
    assert child.status == "completed", jobs.log_tail(child.id, 30)

    app = open_run(child.id)
    assert app.radio(key="inspect_compare_mode").value == "the run it was retrained from"
    assert not app.error, [error.value for error in app.error]
    texts = " ".join(block.value for block in app.markdown)
    assert all(step.text in texts for step in lineage(child.id))
    outcome = compare_with_parent(child.id)
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics[f"Accuracy · parent {parent.id}"] == f"{outcome.comparison.accuracy_a:.1%}"
    assert metrics["Accuracy · this run"] == f"{outcome.comparison.accuracy_b:.1%}"
    assert f"**Fixed** — wrong under parent, right under child: {len(outcome.comparison.fixed)}" in texts
    test = inspect.predictions(child, "test", "after")
    slices = next(frame.value for frame in app.dataframe if "slice" in frame.value.columns)
    assert slices.set_index("slice").at["all", "examples"] == len(test)

    # Drift of the child beside its parent: one heat map per run, one settling figure with a line for each.
    assert app.selectbox(key="inspect_drift_beside").options == ["no other run", f"{parent.id} · {parent.name}"]
    app.selectbox(key="inspect_drift_beside").set_value(parent.id).run()
    app.button(key="inspect_drift_go").click().run()
    assert not app.exception and not app.error, [error.value for error in app.error]
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    heatmaps = [figure for figure in figures if figure["data"][0]["type"] == "heatmap" and "step" in str(figure["data"][0]["y"])]
    assert len(heatmaps) == 2
    settling = next(figure for figure in figures if "Spearman" in str(figure["layout"].get("annotations")))
    assert {trace["name"] for trace in settling["data"]} == {f"run {child.id}", f"run {parent.id}"}
    assert any(f"In run {child.id}" in caption.value and f"In run {parent.id}" in caption.value for caption in app.caption)


def test_the_train_split_offers_the_filtered_rows_for_editing_and_other_splits_say_how(noisy_workspace, monkeypatch):
    root, parent = noisy_workspace
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    app = open_run(parent.id)
    assert any("pick the train split above" in caption.value for caption in app.caption)
    app.selectbox(key="inspect_split").set_value("train").run()
    app.toggle(key="inspect_misclassified").set_value(True).run()
    errors = inspect.predictions(parent, "train", "after")
    wrong = int((~errors["correct"]).sum())
    assert any(expander.label == f"Edit these {wrong} training rows and retrain" for expander in app.expander)
    app.radio(key="inspect_slice_edit_action").set_value("drop").run()
    app.text_input(key="inspect_slice_edit_name").set_value("noisy-dropped").run()
    app.button(key="inspect_slice_edit_go").click().run()
    assert any("noisy-dropped" in message.value and f"{wrong} rows dropped" in message.value for message in app.success)
    stop_trainers(root)
