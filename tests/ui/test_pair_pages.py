"""The image-text tasks on the Train, Runs and Inspect pages, under Streamlit's AppTest.

One short alignment run of the built-in dual encoder (MobileNetV2 + MiniLM, 64 px) on the shapes
captions is trained once per session through the job manager, the path the Start button takes,
and shared with tests/test_browser_pairs.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finished_runs import finished_run
from streamlit.testing.v1 import AppTest
from test_pages import open_page

from core import jobs
from core.config import RunConfig
from core.store import RunStore

TIMEOUT = 180
INSPECT = "pages/views/inspect.py"


def alignment_config(scratch: Path) -> RunConfig:
    return RunConfig(
        name="shapes alignment",
        task="image_text_contrastive",
        model="mobilenet-minilm-clip",
        dataset="shapes-captions",
        max_rows=240,
        max_steps=6,
        batch_size=32,
        learning_rate=1e-4,
        image_size=64,
        max_length=24,
        eval_steps=3,
        logging_steps=2,
        device="cpu",
    )


def trained_pair_run(tmp_path_factory) -> tuple[Path, str]:
    """(workspace folder, run id) of one finished alignment run on shapes captions, trained once per session."""
    return finished_run(tmp_path_factory, "pair-pages", alignment_config)


@pytest.fixture
def pair_run(tmp_path_factory, monkeypatch):
    root, run_id = trained_pair_run(tmp_path_factory)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return RunStore().get(run_id)


def test_train_page_offers_the_dual_encoder_tower_settings_and_negatives(workspace):
    app = open_page("pages/views/train.py")
    app.selectbox(key="train_task").set_value("image_text_contrastive").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="train_model_builtin").value == "mobilenet-minilm-clip"
    assert app.selectbox(key="train_dataset").value == "shapes-captions"
    assert not [radio for radio in app.radio if radio.key == "train_strategy"]  # per-tower settings replace it
    app.selectbox(key="train_text_tower").set_value("lora")
    app.number_input(key="train_batch_size").set_value(48).run()
    assert app.text_input(key="train_lora_targets").value == "query,value"
    assert any("other 47 pairs of its batch" in caption.value for caption in app.caption)
    assert any("adds optimizer steps, not negatives" in caption.value for caption in app.caption)
    assert app.button(key="train_start").disabled is False
    app.button(key="train_start").click().run()
    (run,) = RunStore().list()
    config = RunConfig.from_yaml(run.config)
    assert (config.task, config.text_tower, config.vision_tower, config.strategy) == (
        "image_text_contrastive",
        "lora",
        "train",
        "full",
    )
    jobs.cancel(run.id, RunStore())


def test_the_alignment_preset_fills_the_form(workspace):
    app = open_page("pages/views/train.py")
    app.selectbox(key="train_preset").set_value("align-shapes").run()
    app.button(key="train_preset_fill").click().run()
    assert app.selectbox(key="train_task").value == "image_text_contrastive"
    assert app.number_input(key="train_image_size").value == 64
    assert app.selectbox(key="train_dataset").value == "shapes-captions"
    assert not app.error


def test_runs_page_draws_retrieval_and_temperature_curves_and_the_before_after_table(pair_run):
    app = open_page("pages/views/runs.py")
    app.session_state["runs_selected_ids"] = [pair_run.id]
    app.run()
    assert not app.exception, app.exception
    (curves,) = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    titles = {annotation["text"] for annotation in curves["layout"]["annotations"]}
    assert {"Loss", "Validation retrieval recall@1 and zero-shot accuracy", "Temperature", "Learning rate"} <= titles
    assert "Validation accuracy and macro-F1" not in titles
    before_after = app.dataframe[1].value
    assert "R@1 (mean of both directions)" in before_after.index
    assert list(before_after.columns) == ["before fine-tuning", "after fine-tuning"]


def inspect_pair_page(pair_run) -> AppTest:
    app = open_page(INSPECT)
    app.selectbox(key="inspect_run").set_value(pair_run.id).run()
    return app


def test_inspect_searches_images_by_words_and_captions_by_image(pair_run):
    app = inspect_pair_page(pair_run)
    assert not app.exception, app.exception
    labels = [metric.label for metric in app.metric]
    assert {"Pairs", "Image→text R@1", "Text→image R@1"} <= set(labels)
    assert any("Chance level for R@1" in caption.value for caption in app.caption)
    app.text_input(key="inspect_pair_query").set_value("blue square").run()
    assert any("most similar to 'blue square'" in caption.value for caption in app.caption)
    results = [button for button in app.button if button.key and button.key.startswith("inspect_pair_use_")]
    assert len(results) == 8
    captions_table = app.dataframe[0].value
    assert list(captions_table.columns) == ["text", "label", "score"]
    assert captions_table["score"].is_monotonic_decreasing
    # "Explain with the query" puts that image and the typed words into the pair to explain.
    results[0].click().run()
    assert app.text_input(key="inspect_pair_text").value == "blue square"


def test_inspect_explains_a_pair_with_words_patches_and_shares(pair_run):
    app = inspect_pair_page(pair_run)
    app.selectbox(key="inspect_pair_method").set_value("occlusion")
    app.number_input(key="inspect_pair_grid").set_value(4).run()
    app.button(key="inspect_pair_explain").click().run()
    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    token_map = [html for html in app.get("html") if "text share" in html.proto.body]
    assert token_map, "the token map is drawn"
    shares = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    assert any(chart["layout"]["title"]["text"] == "Share of the total attribution" for chart in shares)
    assert any("image share" in picture.caption for image in app.get("image") for picture in image.proto.imgs)
    # The patches that make one word of the caption count.
    words = app.selectbox(key="inspect_pair_word").options
    assert words and all(word == word.lower() for word in words)
    app.selectbox(key="inspect_pair_word").set_value(words[1]).run()
    app.button(key="inspect_pair_word_show").click().run()
    assert not app.error, [error.value for error in app.error]
    assert any(f"'{words[1]}' adds" in picture.caption for image in app.get("image") for picture in image.proto.imgs)


def test_inspect_compares_two_stages_of_an_aligned_model_by_caption_rank(pair_run):
    """A pair is fixed when its caption comes to rank first among the split's; the counts are the frames'."""
    from core.comparisons import comparison_frame

    app = inspect_pair_page(pair_run)
    app.selectbox(key="inspect_compare_stage").set_value("before").run()
    assert not app.exception, app.exception
    before, after = (comparison_frame(pair_run, "test", stage) for stage in ("before", "after"))
    fixed = int((~before["correct"] & after["correct"]).sum())
    assert fixed > 0  # six steps lift R@1 from chance
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Image→text R@1 · before"] == f"{before['correct'].mean():.1%}"
    assert metrics["Image→text R@1 · after"] == f"{after['correct'].mean():.1%}" == metrics["Image→text R@1"]
    assert any(m.value == f"**Fixed** — wrong under before, right under after: {fixed}" for m in app.markdown)
    table = next(frame.value for frame in app.dataframe if "rank (before)" in frame.value.columns)
    assert len(table) == fixed and (table["rank (after)"] == 1).all() and (table["rank (before)"] > 1).all()
