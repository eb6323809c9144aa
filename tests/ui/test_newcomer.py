"""What a newcomer sees: the default recipe, readable curves and matrices, icons every browser draws,
a Train page that fits the task, and a run log a person can read."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, viz
from core.config import RunConfig
from core.presets import PRESETS
from core.store import RunStore

TIMEOUT = 90
ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
# Emoji and pictographs: a browser without a colour-emoji font draws them as empty boxes.
EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u23e9-\u23fa\ufe0f]")
MATERIAL = re.compile(r"^:material/([a-z0-9_]+):$")


# --- the default recipe ------------------------------------------------------------------------


def test_the_default_recipe_keeps_its_best_checkpoint_after_one_epoch():
    defaults = RunConfig()
    assert defaults.best_checkpoint is True and defaults.epochs == 1.0


def test_the_over_fitting_preset_keeps_its_last_checkpoint_to_show_the_cost():
    (config,) = PRESETS["overfit"].configs()
    assert config.best_checkpoint is False and config.epochs >= 10 and config.learning_rate >= 1e-3


# --- live curves -------------------------------------------------------------------------------


def metrics_of(runs: dict[str, float]) -> pd.DataFrame:
    """Loss, accuracy, F1 and learning rate at a few steps for each run (value offset per run)."""
    rows = [
        {"run_id": run_id, "name": name, "step": step, "value": offset + step / 100}
        for run_id, offset in runs.items()
        for name in ("train_loss", "eval_loss", "eval_accuracy", "eval_f1_macro", "learning_rate")
        for step in (0, 10, 20)
    ]
    return pd.DataFrame(rows)


def test_one_run_draws_one_colour_per_metric_and_a_legend_under_each_panel():
    figure = viz.training_curves(metrics_of({"r1": 0.0}), {"r1": "run one"})
    colours = {trace.name: trace.line.color for trace in figure.data}
    assert len(colours) == 5 and len(set(colours.values())) == 5
    legends = {}
    for trace in figure.data:
        legends.setdefault(trace.legend or "legend", set()).add(trace.name)
    assert legends == {
        "legend": {"train_loss", "eval_loss"},
        "legend2": {"eval_accuracy", "eval_f1_macro"},
        "legend3": {"learning_rate"},
    }
    for column, legend in enumerate(("legend", "legend2", "legend3"), start=1):
        panel = figure.layout["xaxis" if column == 1 else f"xaxis{column}"].domain
        placed = figure.layout[legend]
        assert placed.x == pytest.approx(panel[0]) and placed.y < 0  # under its own panel, from its left edge


def test_overlaid_runs_draw_one_colour_per_run():
    figure = viz.training_curves(metrics_of({"r1": 0.0, "r2": 0.5}), {"r1": "fast", "r2": "slow"})
    by_run = {}
    for trace in figure.data:
        by_run.setdefault(trace.name.split(" · ")[0], set()).add(trace.line.color)
    assert set(by_run) == {"fast", "slow"} and all(len(colours) == 1 for colours in by_run.values())
    assert by_run["fast"] != by_run["slow"]


# --- the confusion matrix ---------------------------------------------------------------------


def test_confusion_counts_are_dark_on_light_cells_and_light_on_dark_cells():
    counts = pd.DataFrame([[200, 0, 60], [10, 130, 100], [0, 5, 150]], index=list("abc"), columns=list("abc"))
    (trace,) = viz.confusion_matrix(counts).data
    text_colours = dict(zip(trace.text, trace.textfont.color))
    assert text_colours["0"] == viz.DARK_TEXT and text_colours["5"] == viz.DARK_TEXT  # near white
    assert text_colours["200"] == viz.LIGHT_TEXT and text_colours["150"] == viz.LIGHT_TEXT  # deep blue
    fills = dict(zip(trace.text, viz.sample_colorscale(viz.CONFUSION_COLOURSCALE, [int(t) / 200 for t in trace.text])))
    for text, colour in text_colours.items():  # whichever colour a cell gets, it is the more readable one
        other = viz.LIGHT_TEXT if colour == viz.DARK_TEXT else viz.DARK_TEXT
        assert viz.contrast_ratio(colour, fills[text]) >= viz.contrast_ratio(other, fills[text])


# --- icons -------------------------------------------------------------------------------------


def test_navigation_and_page_links_use_material_icons_and_statuses_plain_marks():
    from streamlit.material_icon_names import ALL_MATERIAL_ICONS

    from pages import PAGE_ICONS, STATUS_ICONS, VERDICTS

    assert {str(path.relative_to(ROOT)) for path in (ROOT / "pages" / "views").glob("*.py")} == set(PAGE_ICONS)
    for icon in PAGE_ICONS.values():
        assert MATERIAL.match(icon) and MATERIAL.match(icon).group(1) in ALL_MATERIAL_ICONS, icon
    for mark in [*STATUS_ICONS.values(), *VERDICTS.values()]:
        assert not EMOJI.search(mark), mark
    for source in (
        "app.py",
        "pages/__init__.py",
        "pages/views/home.py",
        "pages/views/data.py",
        "pages/views/train.py",
        "pages/views/inspect.py",
    ):
        assert not EMOJI.search((ROOT / source).read_text(encoding="utf-8")), source


def test_home_page_links_carry_material_icons(workspace):
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not app.exception
    icons = [link.proto.icon for link in app.get("page_link")]
    assert len(icons) == 4 and all(MATERIAL.match(icon) for icon in icons), icons


# --- the Train page follows the task -----------------------------------------------------------


def open_train_page() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/views/train.py").run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def widget_keys(app: AppTest) -> set[str]:
    return {widget.key for kind in ("number_input", "checkbox") for widget in app.get(kind)}


def test_image_classification_hides_text_knobs_and_names_the_run_after_its_dataset(workspace):
    app = open_train_page()
    assert {"train_max_length", "train_group_by_length"} <= widget_keys(app)
    assert app.text_input(key="train_name").value == "movie-reviews · text classification"
    app.selectbox(key="train_task").set_value("image_classification").run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert not {"train_max_length", "train_group_by_length"} & widget_keys(app)
    assert app.text_input(key="train_name").value == "planted-squares · image classification"
    app.selectbox(key="train_dataset").set_value("digits").run()
    assert app.text_input(key="train_name").value == "digits · image classification"


def test_hidden_text_knobs_keep_their_values_for_the_way_back(workspace):
    app = open_train_page()
    app.number_input(key="train_max_length").set_value(64).run()
    app.selectbox(key="train_task").set_value("image_classification").run()
    app.selectbox(key="train_task").set_value("text_classification").run()
    assert app.number_input(key="train_max_length").value == 64
    assert app.checkbox(key="train_group_by_length").value is True
    assert app.text_input(key="train_name").value == "movie-reviews · text classification"


def test_a_name_the_user_typed_stays_when_the_task_changes(workspace):
    app = open_train_page()
    app.text_input(key="train_name").set_value("my first run").run()
    app.selectbox(key="train_task").set_value("image_classification").run()
    assert app.text_input(key="train_name").value == "my first run"


# --- the run log -------------------------------------------------------------------------------


def test_the_worker_log_has_no_progress_bars_or_load_reports(workspace, tiny_bert):
    config = RunConfig(
        name="quiet",
        model=str(tiny_bert),
        dataset="planted-keywords",
        max_rows=200,
        max_steps=4,
        batch_size=16,
        eval_steps=2,
        logging_steps=2,
        max_length=32,
        device="cpu",
    )
    store = RunStore()
    run = jobs.submit(config, store)
    finished = jobs.wait(run.id, store, timeout=240)
    log = (run.directory / jobs.LOG_FILE).read_text(encoding="utf-8", errors="replace")
    assert finished.status == "completed", log[-2000:]
    for noise in ("Map:", "LOAD REPORT", "%|", "MISSING"):
        assert noise not in log, noise
    for line in ("Preparing Text classification", "Strategy full", "step 2/4", "Test after training"):
        assert line in log, line
