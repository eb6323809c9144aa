"""The image modality on the Data and Inspect pages, under Streamlit's AppTest.

One tiny image run (a random 2-layer ViT, 32x32, on planted-squares) is trained once for the
whole session through the job manager and shared with tests/test_browser_image.py. AppTest cannot
click a plotly point or a thumbnail's pixels: a confusion-cell click is the same two filters it sets
(the real click is in tests/test_browser_image.py), and selecting an image is its selectbox.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from finished_runs import finished_run
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import inspect, viz
from core.config import RunConfig
from core.store import RunStore

TIMEOUT = 120
APP = str(Path(__file__).resolve().parents[2] / "app.py")
DATA_PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "views" / "data.py")
INSPECT = "pages/views/inspect.py"


def tiny_image_config(scratch: Path) -> RunConfig:
    from core.images.scratch import write_random_vit

    vit = write_random_vit(scratch, "tiny")
    return RunConfig(
        name="tiny image inspect",
        task="image_classification",
        model=str(vit),
        dataset="planted-squares",
        max_rows=200,
        max_steps=12,
        batch_size=16,
        learning_rate=3e-3,
        eval_steps=6,
        logging_steps=3,
        device="cpu",
    )


def trained_image_run(tmp_path_factory) -> tuple[Path, str]:
    """(workspace folder, run id) of one finished tiny ViT run on planted-squares, trained once per session."""
    return finished_run(tmp_path_factory, "image-pages", tiny_image_config, timeout=240)


@pytest.fixture
def image_run(tmp_path_factory, monkeypatch):
    root, run_id = trained_image_run(tmp_path_factory)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return RunStore().get(run_id)


def explainer_ready() -> bool:
    try:
        from core.explain import methods_for

        return bool(methods_for("patches"))
    except Exception:  # noqa: BLE001 - the image explainer is written in parallel
        return False


# --- viz -------------------------------------------------------------------------------------


def test_patch_overlay_colours_each_patch_on_a_diverging_scale():
    picture = Image.new("RGB", (64, 64), (100, 100, 100))
    overlay = viz.patch_overlay(picture, scores=[2.0, -2.0, 1.0, 0.0], grid=[2, 2], opacity=1.0, size=128)
    assert overlay.size == (128, 128)
    assert overlay.getpixel((10, 10)) == viz.ATTRIBUTION_POSITIVE  # full red: the largest support
    assert overlay.getpixel((100, 10)) == viz.ATTRIBUTION_NEGATIVE  # full blue: speaks against
    half = overlay.getpixel((10, 100))
    assert all(min(a, b) <= c <= max(a, b) for a, b, c in zip((100, 100, 100), viz.ATTRIBUTION_POSITIVE, half))
    assert overlay.getpixel((100, 100)) == (100, 100, 100)  # zero: the image itself
    assert viz.patch_overlay(picture, scores=[1.0] * 4, grid=[2, 2], opacity=0.0).getpixel((5, 5)) == (100, 100, 100)
    assert viz.side_by_side([overlay, overlay], gap=8).size == (264, 128)
    assert Image.open(io.BytesIO(viz.thumbnail_png(picture, 96))).size == (96, 96)


# --- the Data page ---------------------------------------------------------------------------


def data_page(workspace, **state) -> AppTest:
    at = AppTest.from_file(DATA_PAGE, default_timeout=TIMEOUT)
    at.session_state["data_modality"] = "Images"
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_data_page_image_mode_shows_thumbnails_counts_and_sizes(workspace):
    at = data_page(workspace)
    assert not at.exception, at.exception
    assert "**1,000 images** in 2 classes: blue square, red square" in [m.value for m in at.markdown]
    assert {m.label: m.value for m in at.metric} == {"train images": "800", "validation images": "100", "test images": "100"}
    assert len(at.image) == 2  # one row of thumbnails per class
    (balance,) = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert {trace["name"] for trace in balance["data"]} == {"train", "validation", "test"}
    sizes = at.dataframe[0].value
    assert sizes.iloc[0, 0] == "64×64"


def test_data_page_image_upload_saves_or_says_why(workspace):
    at = data_page(workspace, data_image_source="Upload")
    assert any("Upload a zip" in info.value for info in at.info)
    at.file_uploader(key="data_image_zip").upload("not-a-zip.zip", b"hello", "application/zip").run()
    at.button(key="data_image_save").click().run()
    assert any("is not a zip file" in error.value for error in at.error)
    good = zip_of(
        {f"{name}/{i}.png": png(colour) for name, colour in (("red", (200, 0, 0)), ("blue", (0, 0, 200))) for i in range(10)}
    )
    at.file_uploader(key="data_image_zip").upload("shapes.zip", good, "application/zip").run()
    at.button(key="data_image_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="data_image_source").value == "Registered"
    assert at.selectbox(key="data_image_registered").value == "shapes"
    assert "**20 images** in 2 classes: blue, red" in [m.value for m in at.markdown]
    # A CSV of path,label with a zip of loose images; a CSV naming a missing image gets a sentence.
    loose = zip_of({f"img{i}.png": png((200, 0, 0) if i % 2 else (0, 0, 200)) for i in range(20)})
    rows = "path,label\n" + "".join(f"img{i}.png,{'red' if i % 2 else 'blue'}\n" for i in range(20))
    at.radio(key="data_image_source").set_value("Upload").run()
    at.radio(key="data_image_upload_kind").set_value("CSV of path,label + zip").run()
    at.file_uploader(key="data_image_zip").upload("loose.zip", loose, "application/zip").run()
    at.file_uploader(key="data_image_csv").upload("bad.csv", (rows + "missing.png,red\n").encode(), "text/csv").run()
    at.button(key="data_image_save").click().run()
    assert at.error and "missing.png" in at.error[0].value
    at.file_uploader(key="data_image_csv").upload("labels.csv", rows.encode(), "text/csv").run()
    at.button(key="data_image_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="data_image_registered").value == "loose"


# --- the Inspect page ------------------------------------------------------------------------


def open_inspect() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page(INSPECT).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def gallery_count(app: AppTest) -> str:
    return next(c.value for c in app.caption if " images" in c.value and " of " in c.value)


def test_inspect_image_run_gallery_filters_and_overlay(image_run):
    frame = inspect.predictions(image_run, "test", "after")
    app = open_inspect()
    assert not app.error, [e.value for e in app.error]
    assert {m.label: m.value for m in app.metric}["Accuracy"] == f"{frame['correct'].mean():.1%}"
    assert gallery_count(app).startswith(f"{len(frame)} of {len(frame)} images")
    thumbnails = [button for button in app.button if button.key and button.key.startswith("inspect_pick_")]
    assert len(thumbnails) == min(len(frame), inspect.IMAGE_PAGE_SIZE)
    # A filter changes the count (the confidence range below the median).
    app.slider(key="inspect_confidence").set_value((0.0, float(frame["confidence"].median()))).run()
    kept = len(frame[frame["confidence"] <= frame["confidence"].median() + 1e-9])
    assert gallery_count(app).startswith(f"{kept} of {len(frame)} images") and kept < len(frame)
    app.button(key="inspect_clear").click().run()
    # A confusion-cell click sets these two filters: exactly that cell's images remain.
    gold, predicted = frame.iloc[0]["gold"], frame.iloc[0]["predicted"]
    app.multiselect(key="inspect_gold").set_value([gold])
    app.multiselect(key="inspect_predicted").set_value([predicted]).run()
    in_cell = frame[(frame["gold"] == gold) & (frame["predicted"] == predicted)]
    assert gallery_count(app).startswith(f"{len(in_cell)} of {len(frame)} images")
    assert app.slider(key="inspect_opacity").value == pytest.approx(0.55)
    if not explainer_ready():
        pytest.skip("core.explain has no image explainer yet: overlays not checked")
    # Selecting an image shows its probabilities and a patch overlay.
    chosen = int(in_cell.index[-1])
    app.selectbox(key="inspect_example").set_value(chosen).run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    captions = [c for c in (str(image.proto) for image in app.image) if "explaining" in c]
    assert captions, "no patch overlay drawn"
    app.slider(key="inspect_opacity").set_value(0.9).run()
    assert not app.exception
    # A second method side by side: two overlays, each with its method in the caption.
    app.selectbox(key="inspect_image_method_b").set_value("occlusion").run()
    assert not app.error, [e.value for e in app.error]
    captions = [c for c in (str(image.proto) for image in app.image) if "explaining" in c]
    assert any("Integrated Gradients" in c for c in captions) and any("Occlusion" in c for c in captions)
    app.selectbox(key="inspect_image_method_b").set_value(None)
    # Explain this selection: one overlay per image of the filtered gallery.
    app.button(key="inspect_gallery_go").click().run()
    assert not app.error, [e.value for e in app.error]
    drawn = [c for c in (str(image.proto) for image in app.image) if "explaining" in c and " → " in c]
    assert len(drawn) >= min(len(in_cell), inspect.IMAGE_PAGE_SIZE)
    # Compare models (the panel every view shares): both accuracies, and the flips as galleries.
    before = inspect.predictions(image_run, "test", "before")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Accuracy · before"] == f"{before['correct'].mean():.1%}"
    assert metrics["Accuracy · after"] == f"{frame['correct'].mean():.1%}"
    comparison = inspect.compare(before, frame)
    titles = [m.value for m in app.markdown if m.value.startswith(("**Fixed**", "**Broken**"))]
    assert titles == [
        f"**Fixed** — wrong under before, right under after: {len(comparison.fixed)}",
        f"**Broken** — right under before, wrong under after: {len(comparison.broken)}",
    ]


def test_inspect_image_sanity_check(image_run):
    if not explainer_ready():
        pytest.skip("core.explain has no image explainer yet")
    app = open_inspect()
    app.button(key="inspect_sanity_go").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert any(m.label == "Spearman rank correlation" for m in app.metric)
    captions = [c for c in (str(image.proto) for image in app.image) if "explaining" in c]
    assert any("trained model" in c for c in captions) and any("randomised head" in c for c in captions)
    app.multiselect(key="inspect_faithful_methods").set_value(["ig", "occlusion"])
    app.button(key="inspect_faithful_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    table = next(frame.value for frame in app.dataframe if "NAOPC (↑)" in frame.value.columns)
    assert len(table) == 2 and table["deletion AOPC (↑)"].notna().all()
    app.button(key="inspect_drift_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert any("is first from step" in caption.value for caption in app.caption)
    app.button(key="inspect_classes_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    maps = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    assert any(figure["data"][0]["type"] == "heatmap" and not figure["data"][0].get("showscale", True) for figure in maps)


def test_inspect_image_bad_inputs_get_sentences(workspace):
    store = RunStore()
    run = store.create(
        "img-queued",
        name="waiting images",
        task="image_classification",
        model="m",
        dataset="planted-squares",
        device="cpu",
        config_yaml=RunConfig(task="image_classification").to_yaml(),
    )
    run.directory.mkdir(parents=True)
    other = store.create(
        "ner-1",
        name="tagger",
        task="token_classification",
        model="m",
        dataset="x",
        device="cpu",
        config_yaml=RunConfig().to_yaml(),
    )
    other.directory.mkdir(parents=True)
    app = open_inspect()
    app.selectbox(key="inspect_run").set_value(run.id).run()
    assert any("has no model to inspect yet" in e.value for e in app.error)
    # A NER run with nothing stored yet gets the NER view's sentence.
    app.selectbox(key="inspect_run").set_value(other.id).run()
    assert any("no stored predictions yet" in i.value for i in app.info)
    assert not app.exception


def test_image_predictions_are_recomputed_as_the_trainer_made_them(image_run):
    """Same split, order, processor and model: the Inspect path reproduces test_after.parquet, and is stored."""
    stored = pd.read_parquet(inspect.predictions_path(image_run, "test", "after"))
    computed = inspect.compute_predictions(image_run, "test", "after")
    assert list(computed.columns) == list(stored.columns)
    assert computed["image"].tolist() == stored["image"].tolist()
    assert computed["predicted"].tolist() == stored["predicted"].tolist()
    assert (computed["confidence"] - stored["confidence"]).abs().max() < 1e-4
    path = inspect.predictions_path(image_run, "validation", "before")
    path.unlink(missing_ok=True)
    frame = inspect.predictions(image_run, "validation", "before")
    assert path.is_file() and frame.index.name == "row" and frame["image"].str.startswith("planted-squares#").all()
    comparison = inspect.compare(inspect.predictions(image_run, "test", "before"), stored, ("before", "after"))
    assert "image" in comparison.fixed.columns


def test_inspect_image_coarse_integral_warns_and_an_inapplicable_method_says_why(image_run, monkeypatch):
    if not explainer_ready():
        pytest.skip("core.explain has no image explainer yet")
    from core.explain import Explanation, methods_for

    monkeypatch.setattr(Explanation, "delta_is_large", lambda self, tolerance=0.05: True)
    app = open_inspect()
    assert any("convergence delta is large" in w.value for w in app.warning)
    inapplicable = [key for key, method in methods_for("patches").items() if key == "grad_cam"]
    if inapplicable:  # Grad-CAM needs a convolution; the tiny ViT has none
        app.selectbox(key="inspect_image_method_a").set_value("grad_cam").run()
        assert not app.exception, [e.message for e in app.exception]
        assert any("Grad-CAM needs a convolutional" in e.value for e in app.error)


def test_runs_page_checks_an_image_runs_robustness_in_pixel_space(image_run):
    app = AppTest.from_file(str(Path(APP).parent / "pages" / "views" / "runs.py"), default_timeout=TIMEOUT).run()
    app.multiselect(key="runs_selection").set_value([image_run.id]).run()
    assert any("around its pixels" in caption.value for caption in app.caption)
    app.number_input(key=f"runs_attack_eps_{image_run.id}").set_value(0.2)
    app.button(key=f"runs_attack_go_{image_run.id}").click().run()
    assert not app.error, [e.value for e in app.error]
    table = next(t.value for t in app.dataframe if "after fine-tuning" in t.value.columns and "drop" in t.value.index)
    assert 0 <= table.loc["accuracy under attack", "after fine-tuning"] <= table.loc["clean accuracy", "after fine-tuning"]
