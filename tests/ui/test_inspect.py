"""Inspect: predictions stored once, confusion counts, filters, flips, figures; and the page via AppTest.

One tiny run is trained once for the whole file (and shared with tests/test_browser_inspect.py):
24 updates of a random 2-layer BERT on planted-keywords learn most of the task but not all of
it, so the test split has right and wrong predictions, and "before" vs "after" has flips.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import inspect, jobs, viz
from core.config import RunConfig
from core.errors import UserError
from core.store import RunStore

TIMEOUT = 90
APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/views/inspect.py"
_TRAINED: dict[str, object] = {}


def trained_run(tmp_path_factory, tiny_bert) -> tuple[Path, str]:
    """(workspace folder, run id) of one finished tiny run, trained once per test session."""
    if "root" not in _TRAINED:
        root = tmp_path_factory.mktemp("inspect-workspace")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WORKBENCH_WORKSPACE", str(root))
            store = RunStore()
            config = RunConfig(
                name="tiny inspect",
                model=str(tiny_bert),
                dataset="planted-keywords",
                max_rows=300,
                max_steps=24,
                batch_size=16,
                learning_rate=0.005,
                eval_steps=12,
                logging_steps=4,
                max_length=32,
            )
            run = jobs.submit(config, store)
            finished = jobs.wait(run.id, store, timeout=180)
            assert finished.status == "completed", finished.error
        _TRAINED.update(root=root, run_id=run.id)
    return _TRAINED["root"], _TRAINED["run_id"]


@pytest.fixture
def trained(tmp_path_factory, tiny_bert, monkeypatch):
    """The shared finished run, with this test's workspace pointing at it."""
    root, run_id = trained_run(tmp_path_factory, tiny_bert)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return RunStore().get(run_id)


# --- core: predictions -----------------------------------------------------------------------


def test_predictions_are_computed_once_then_read_from_parquet(trained, monkeypatch):
    path = inspect.predictions_path(trained, "validation", "before")  # the trainer does not write this one
    path.unlink(missing_ok=True)
    first = inspect.predictions(trained, "validation", "before")
    assert path.is_file()
    assert list(first.columns[:6]) == list(inspect.TABLE_COLUMNS)
    assert first.index.name == "row" and list(first.index) == list(range(len(first)))
    stamp = path.stat().st_mtime_ns

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the predictions were stored")

    monkeypatch.setattr("core.stages.open_stage", no_model)
    monkeypatch.setattr(inspect, "compute_predictions", no_model)
    again = inspect.predictions(trained, "validation", "before")
    pd.testing.assert_frame_equal(first, again)
    assert path.stat().st_mtime_ns == stamp


def test_computed_predictions_match_the_trainers_own(trained):
    """Same split, same order, same model: our prediction path reproduces test_after.parquet."""
    stored = pd.read_parquet(inspect.predictions_path(trained, "test", "after"))
    computed = inspect.compute_predictions(trained, "test", "after")
    assert computed["text"].tolist() == stored["text"].tolist()
    assert computed["gold"].tolist() == stored["gold"].tolist()
    assert computed["predicted"].tolist() == stored["predicted"].tolist()
    np.testing.assert_allclose(computed["confidence"], stored["confidence"], atol=1e-4)


def test_stages_and_predictions_say_what_is_wrong(workspace):
    store = RunStore()
    queued = store.create(
        "q1", name="waiting", task="text_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml()
    )
    queued.directory.mkdir(parents=True)
    with pytest.raises(UserError, match="has no model to inspect yet"):
        inspect.stages(queued)
    gone = store.create(
        "g1", name="gone", task="text_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml()
    )
    with pytest.raises(UserError, match="was deleted"):
        inspect.stages(gone)
    with pytest.raises(UserError, match="was deleted"):
        inspect.predictions(gone, "test", "after")
    with pytest.raises(UserError, match="no split 'dev'"):
        inspect.predictions(queued, "dev", "after")
    # Image runs are inspected too (tests/test_image_pages.py); other tasks get a sentence.
    tagger = store.create(
        "t1", name="tagger", task="token_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml()
    )
    with pytest.raises(UserError, match="token classification run; this page inspects text and image"):
        inspect.stages(tagger)


# --- core: counts, filters, flips ------------------------------------------------------------


def small_frame() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "text": ["good film", "bad film here", "A Good ending", "dull " * 12, "fine", "awful " * 45],
            "gold": ["pos", "neg", "pos", "neg", "pos", "neg"],
            "predicted": ["pos", "pos", "neg", "neg", "pos", "pos"],
            "confidence": [0.9, 0.6, 0.55, 0.99, 0.51, 0.8],
            "loss": [0.1, 0.9, 0.8, 0.01, 0.6, 1.6],
        }
    )
    frame["correct"] = frame["gold"] == frame["predicted"]
    frame.index.name = "row"
    return frame


def test_confusion_counts_equal_a_hand_count(trained):
    frame = inspect.predictions(trained, "test", "after")
    names = inspect.label_names(trained, frame)
    counts = inspect.confusion_counts(frame, names)
    assert list(counts.index) == names and list(counts.columns) == names
    for gold in names:
        for predicted in names:
            by_hand = sum(1 for _, row in frame.iterrows() if row["gold"] == gold and row["predicted"] == predicted)
            assert counts.loc[gold, predicted] == by_hand
    assert counts.to_numpy().sum() == len(frame)
    # A class never predicted still gets its (zero) column.
    assert inspect.confusion_counts(small_frame().assign(predicted="pos"), ["neg", "pos"])["neg"].tolist() == [0, 0]


def rows(frame: pd.DataFrame, **changes) -> list[int]:
    return list(inspect.filter_predictions(frame, inspect.Filters(hardest_first=False, **changes)).index)


def test_each_filter():
    frame = small_frame()
    assert rows(frame) == [0, 1, 2, 3, 4, 5]
    assert rows(frame, misclassified_only=True) == [1, 2, 5]
    assert rows(frame, gold=["neg"]) == [1, 3, 5]
    assert rows(frame, predicted=["neg"]) == [2, 3]
    assert rows(frame, gold=["neg"], predicted=["pos"]) == [1, 5]  # one confusion cell
    assert rows(frame, confidence=(0.5, 0.6)) == [1, 2, 4]
    assert rows(frame, confidence=(0.95, 1.0)) == [3]
    assert rows(frame, contains="GOOD") == [0, 2]  # any case, literal
    assert rows(frame, contains="film (") == []  # not a regular expression
    assert rows(frame, lengths=["1–10 words"]) == [0, 1, 2, 4]
    assert rows(frame, lengths=["11–20 words", "over 40 words"]) == [3, 5]
    assert rows(frame, misclassified_only=True, lengths=["1–10 words"], contains="film") == [1]
    hardest = inspect.filter_predictions(frame, inspect.Filters(misclassified_only=True))
    assert list(hardest.index) == [5, 1, 2]  # by loss, highest first
    assert hardest["loss"].is_monotonic_decreasing


def test_pages_gallery_cap_and_targets():
    frame = pd.DataFrame({"loss": range(120)})
    assert inspect.page_count(0) == 1 and inspect.page_count(50) == 1 and inspect.page_count(51) == 2
    assert list(inspect.page_of(frame, 3).index) == list(range(100, 120))
    assert list(inspect.page_of(frame, 9).index) == list(range(100, 120))  # clamped
    capped, left_out = inspect.gallery_rows(frame)
    assert len(capped) == inspect.GALLERY_CAP and left_out
    assert inspect.gallery_rows(frame.head(7))[1] is False
    assert inspect.target_for("predicted", "pos") is None
    assert inspect.target_for("gold", "pos") == "pos"
    assert inspect.target_for("neg", "pos") == "neg"
    with pytest.raises(UserError, match="no gold label"):
        inspect.target_for("gold", None)


def test_cell_from_a_plotly_selection_event():
    names = ["negative", "positive"]
    event = {"selection": {"points": [{"x": "positive", "y": "negative", "point_index": 1}], "point_indices": [1]}}
    assert inspect.cell_from_selection(event, names) == ("negative", "positive")
    by_index = {"selection": {"points": [{"point_index": 2}]}}
    assert inspect.cell_from_selection(by_index, names) == ("positive", "negative")
    assert inspect.cell_from_selection({"selection": {"points": []}}, names) is None
    assert inspect.cell_from_selection(None, names) is None


def test_flips_between_before_and_after(trained):
    before = inspect.predictions(trained, "test", "before")
    after = inspect.predictions(trained, "test", "after")
    result = inspect.compare(before, after, ("before", "after"))
    fixed = [i for i in before.index if not before.at[i, "correct"] and after.at[i, "correct"]]
    broken = [i for i in before.index if before.at[i, "correct"] and not after.at[i, "correct"]]
    assert list(result.fixed.index) == fixed and list(result.broken.index) == broken
    assert fixed, "training fixed nothing: the tiny run did not learn"
    assert result.accuracy_a == pytest.approx(before["correct"].mean())
    assert result.accuracy_b == pytest.approx(after["correct"].mean())
    assert result.changed == int((before["predicted"] != after["predicted"]).sum())
    assert {"predicted (before)", "predicted (after)"} <= set(result.fixed.columns)
    with pytest.raises(UserError, match="different examples"):
        inspect.compare(before, after.iloc[::-1].reset_index(drop=True))


# --- figures ---------------------------------------------------------------------------------


def decoded(values):
    """Plotly 7 stores arrays in JSON as {"dtype", "bdata"}; return a plain list."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).tolist()
    return list(values)


def test_confusion_matrix_is_one_clickable_point_per_cell():
    counts = pd.DataFrame([[5, 1, 0], [2, 7, 0], [0, 0, 3]], index=list("abc"), columns=list("abc"))
    figure = json.loads(viz.confusion_matrix(counts).to_json())
    (trace,) = figure["data"]
    assert trace["type"] == "scatter" and trace["marker"]["symbol"] == "square"
    assert list(zip(trace["y"], trace["x"])) == [(g, p) for g in "abc" for p in "abc"]
    assert decoded(trace["marker"]["color"]) == [5, 1, 0, 2, 7, 0, 0, 0, 3]
    assert trace["text"] == ["5", "1", "0", "2", "7", "0", "0", "0", "3"]
    assert figure["layout"]["xaxis"]["type"] == "category"


def test_token_map_escapes_user_text_and_shows_exact_values():
    page = viz.token_attribution_html(["<script>alert(1)</script>", "fine", "##ly", '"q"'], [0.5, -0.25, 0.0, 1.2345e-5])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;: +0.5"' in page
    assert 'title="fine: -0.25"' in page and 'title="&quot;q&quot;: +1.234e-05"' in page  # small values keep their digits
    assert "rgba(214,96,77,0.850)" in page  # the largest positive score is full red
    assert "rgba(67,147,195,0.425)" in page  # half the largest magnitude, negative: half blue
    unsigned = viz.token_attribution_html(["a", "b"], [1.0, 0.5], signed=False)
    assert "no direction" in unsigned and "67,147,195" not in unsigned.split("</div>")[0]


# --- the page (AppTest, driven through app.py) ----------------------------------------------


def open_inspect() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page(PAGE).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def shown_rows(app: AppTest) -> int:
    return len(next(frame.value for frame in app.dataframe if "confidence" in frame.value.columns))


def maps(app: AppTest) -> list[str]:
    return [html.value for html in app.get("html") if "attribution-map" in html.value]


def test_page_shows_metrics_matrix_table_and_a_token_map(trained):
    frame = inspect.predictions(trained, "test", "after")
    app = open_inspect()
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox(key="inspect_run").value == trained.id
    assert app.selectbox(key=f"inspect_stage_{trained.id}").value == "after"  # the latest stage by default
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Accuracy"] == f"{frame['correct'].mean():.1%}"
    assert metrics["Errors"] == str(int((~frame["correct"]).sum()))
    figure = json.loads(app.get("plotly_chart")[0].proto.spec)
    (trace,) = figure["data"]
    assert trace["type"] == "scatter"
    counts = inspect.confusion_counts(frame, ["negative", "positive"])
    assert decoded(trace["marker"]["color"]) == counts.to_numpy().ravel().tolist()
    assert shown_rows(app) == len(frame)
    # The first example of the table (hardest first) is selected, and its token map drawn as HTML.
    hardest = frame.sort_values("loss", ascending=False, kind="stable").index[0]
    assert app.selectbox(key="inspect_example").value == hardest
    html = maps(app)[0]
    assert "Integrated Gradients" in html and "Convergence delta" in " ".join(c.value for c in app.caption)
    words = [word for word in frame.at[hardest, "text"].split() if word.isalpha()]
    assert all(f">{word}<" in html for word in words[:5])  # planted-keywords words are single tokens


def test_filters_and_a_confusion_cell_narrow_the_table(trained):
    frame = inspect.predictions(trained, "test", "after")
    errors = frame[~frame["correct"]]
    app = open_inspect()
    app.toggle(key="inspect_misclassified").set_value(True).run()
    assert shown_rows(app) == len(errors) or (errors.empty and shown_rows(app) == 0)
    app.button(key="inspect_clear").click().run()
    assert shown_rows(app) == len(frame)
    # AppTest cannot click a plotly point: a click calls show_cell(gold, predicted), which sets these
    # two filters (the real click is exercised in tests/test_browser_inspect.py).
    gold, predicted = ("negative", "positive") if not errors.empty else ("negative", "negative")
    app.multiselect(key="inspect_gold").set_value([gold])
    app.multiselect(key="inspect_predicted").set_value([predicted]).run()
    in_cell = frame[(frame["gold"] == gold) & (frame["predicted"] == predicted)]
    assert shown_rows(app) == len(in_cell)
    app.text_input(key="inspect_contains").set_value("zzz-not-there").run()
    assert shown_rows(app) == 0
    assert any("No example matches" in info.value for info in app.info)
    app.button(key="inspect_clear").click().run()
    app.slider(key="inspect_confidence").set_value((0.0, float(frame["confidence"].median()))).run()
    assert 0 < shown_rows(app) < len(frame)


def test_a_large_split_is_predicted_once_and_paginated(trained):
    path = inspect.predictions_path(trained, "train", "after")
    path.unlink(missing_ok=True)
    app = open_inspect()
    app.selectbox(key="inspect_split").set_value("train").run()
    assert not app.error, [e.value for e in app.error]
    assert path.is_file()  # predicted with the model once, kept for the next look
    rows = len(pd.read_parquet(path))
    assert rows > 2 * inspect.PAGE_SIZE
    assert shown_rows(app) == inspect.PAGE_SIZE
    pager = app.pagination(key="inspect_page")
    assert pager.num_pages == inspect.page_count(rows)
    pager.set_value(pager.num_pages).run()
    assert shown_rows(app) == rows - (pager.num_pages - 1) * inspect.PAGE_SIZE
    # A filter goes back to the first page.
    app.toggle(key="inspect_hardest").set_value(False).run()
    assert app.pagination(key="inspect_page").value == 1


def test_typed_sentence_methods_gallery_compare_and_sanity_check(trained):
    app = open_inspect()
    # A typed sentence: prediction and attribution at once.
    app.text_area(key="inspect_free_text").set_value("")
    app.button(key="inspect_free_go").click().run()
    assert any("The text is empty" in e.value for e in app.error)
    app.text_area(key="inspect_free_text").set_value("a superb story with an awful ending")
    app.button(key="inspect_free_go").click().run()
    assert not app.error, [e.value for e in app.error]
    typed = [html for html in maps(app) if ">superb<" in html]
    assert typed and ">awful<" in typed[0]
    assert any(m.startswith("Predicted **") for m in (x.value for x in app.markdown))
    # Another class, and word pieces merged into words.
    app.text_area(key="inspect_free_text").set_value("an overacted story")
    app.selectbox(key="inspect_target").set_value("negative")
    app.toggle(key="inspect_merge").set_value(True)
    app.button(key="inspect_free_go").click().run()
    typed = next(html for html in maps(app) if "story" in html)
    assert "explaining &#x27;negative&#x27;" in typed and ">overacted<" in typed and "##" not in typed
    app.toggle(key="inspect_merge").set_value(False).run()
    typed = next(html for html in maps(app) if "story" in html)
    assert ">##" in typed  # the pieces, unmerged
    app.selectbox(key="inspect_target").set_value("predicted")
    # Longer than the run's max length (32 tokens): explained, with the truncation note.
    app.text_area(key="inspect_free_text").set_value(" ".join(["superb film"] * 40))
    app.button(key="inspect_free_go").click().run()
    assert any("longer than the model's limit of 32 tokens" in info.value for info in app.info)
    # Another method with its parameter, and a second method side by side.
    app.selectbox(key="inspect_method_a").set_value("occlusion").run()
    app.number_input(key="inspect_param_a_occlusion_window").set_value(2)
    app.selectbox(key="inspect_method_b").set_value("saliency").run()
    joined = " ".join(maps(app))
    assert "Occlusion (window 2, baseline pad, measure logit)" in joined and "Saliency (gradient magnitude)" in joined
    # Explain this selection: a gallery of the filtered table's examples.
    app.selectbox(key="inspect_method_b").set_value(None)
    app.selectbox(key="inspect_method_a").set_value("input_x_gradient").run()
    app.button(key="inspect_gallery_go").click().run()
    frame = inspect.predictions(trained, "test", "after")
    gallery = [html for html in maps(app) if " · gold " in html]
    assert len(gallery) == min(len(frame), inspect.GALLERY_CAP)
    # Compare with the before stage: both accuracies and the flipped examples.
    metrics = {m.label: m.value for m in app.metric}
    before = inspect.predictions(trained, "test", "before")
    assert metrics["Accuracy · before"] == f"{before['correct'].mean():.1%}"
    assert metrics["Accuracy · after"] == f"{frame['correct'].mean():.1%}"
    assert any(m.value.startswith("**Fixed**") for m in app.markdown)
    comparison = inspect.compare(before, frame)
    first_flip = int((comparison.fixed.index.tolist() + comparison.broken.index.tolist())[0])
    app.selectbox(key="inspect_compare_example").set_value(first_flip).run()
    side_by_side = [html for html in maps(app) if html.count("Input × Gradient") and (">before ·" in html or ">after ·" in html)]
    assert len(side_by_side) == 2, "the flipped example is explained under both models"
    # The sanity check: Spearman correlation and a verdict sentence.
    app.button(key="inspect_sanity_go").click().run()
    assert any(m.label == "Spearman rank correlation" for m in app.metric)
    verdicts = [box.value for box in [*app.success, *app.warning] if "re-initialising the classifier head" in box.value]
    assert verdicts
    assert not app.exception
    # The faithfulness card: curves and a table of the chosen methods against random orderings.
    app.multiselect(key="inspect_faithful_methods").set_value(["ig", "occlusion"])
    app.button(key="inspect_faithful_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    table = next(frame.value for frame in app.dataframe if "NAOPC (↑)" in frame.value.columns)
    assert table["method"].tolist() == ["Integrated Gradients", "Occlusion"]
    assert (table["random deletion AOPC"] == table["random deletion AOPC"].iloc[0]).all()
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    curves = next(figure for figure in figures if any(trace.get("name") == "random order" for trace in figure["data"]))
    assert {trace["name"] for trace in curves["data"]} == {"random order", "Integrated Gradients", "Occlusion"}
    assert any("most faithful map" in caption.value for caption in app.caption)
    # Drift: the example's map under every kept stage, as a units × stages heat map.
    from core.checkpoints import available_stages

    app.button(key="inspect_drift_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    heatmap = next(
        figure for figure in figures if figure["data"][0]["type"] == "heatmap" and "step" in str(figure["data"][0]["y"])
    )
    assert [label.split(" ")[0] for label in heatmap["data"][0]["y"]] == available_stages(trained)
    assert any("is first from step" in caption.value for caption in app.caption)
    # What drives each class: computed on a click, then shown from the run folder's cache.
    app.button(key="inspect_classes_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    tables = [frame.value for frame in app.dataframe if "attribution" in frame.value.columns]
    assert len(tables) == 2 and all(len(table) > 0 for table in tables)
    again = open_inspect()
    assert len([frame for frame in again.dataframe if "attribution" in frame.value.columns]) == 2


def test_a_method_that_does_not_apply_says_why_and_a_coarse_integral_warns(trained, monkeypatch):
    from core.explain import METHODS, Explanation

    monkeypatch.setattr(type(METHODS["occlusion"]), "applies_to", lambda self, model: "Occlusion cannot explain this model.")
    monkeypatch.setattr(Explanation, "delta_is_large", lambda self, tolerance=0.05: True)
    app = open_inspect()
    assert any("convergence delta is large" in w.value for w in app.warning)
    app.selectbox(key="inspect_method_a").set_value("occlusion").run()
    assert any("Occlusion cannot explain this model." in e.value for e in app.error)
    assert not app.exception


def test_bad_inputs_get_sentences(workspace):
    app = open_inspect()
    assert any("No runs yet" in info.value for info in app.info)
    store = RunStore()
    run = store.create(
        "r-queued",
        name="waiting",
        task="text_classification",
        model="m",
        dataset="planted-keywords",
        device="cpu",
        config_yaml=RunConfig().to_yaml(),
    )
    run.directory.mkdir(parents=True)
    app = open_inspect()
    assert any("has no model to inspect yet" in e.value for e in app.error)
    shutil.rmtree(run.directory)
    app.run()
    assert any("was deleted" in e.value for e in app.error)
    assert not app.exception


def test_a_running_run_is_inspected_at_its_latest_checkpoint(tmp_path_factory, tiny_bert, workspace):
    """A run still training has no final model: the page opens its newest checkpoint and predicts with it."""
    shared_root, shared_id = trained_run(tmp_path_factory, tiny_bert)
    source = shared_root / "runs" / shared_id
    store = RunStore()
    run = store.create(
        "running-1",
        name="still training",
        task="text_classification",
        model=str(tiny_bert),
        dataset="planted-keywords",
        device="cpu",
        config_yaml=(source / "config.yaml").read_text(),
    )
    shutil.copytree(source, run.directory, ignore=shutil.ignore_patterns("model", "predictions", "tensorboard"))
    store.update(run.id, status="running", step=12, max_steps=24)
    newest = inspect.stages(store.get(run.id))[-1]
    assert newest.startswith("checkpoint-")
    app = open_inspect()
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox(key=f"inspect_stage_{run.id}").value == newest
    assert inspect.predictions_path(run, "test", newest).is_file()
    assert maps(app)
