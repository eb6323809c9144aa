"""AppTest of the sweep pages: the Train page's sweep section, the Sweeps page on a real finished sweep (three tiny-BERT
trials on planted keywords, two at a time, trained once for the module), and the Runs page's trial rows."""

import json
import time

import pytest
from streamlit.testing.v1 import AppTest
from test_pages import APP, TIMEOUT, open_page, tiny_config

from conftest import stop_trainers
from core import jobs
from core.config import RunConfig
from core.store import RunStore
from core.sweeps.driver import cancel_sweep, submit_sweep
from core.sweeps.results import best_trial, trial_frame
from core.sweeps.spec import Knob, SweepSpec

SWEEPS, TRAIN, INSPECT = "pages/views/sweeps.py", "pages/views/train.py", "pages/views/inspect.py"
SWEEP_TIMEOUT = 300


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while not (value := predicate()):
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def finished_sweep_workspace(tiny_bert, tmp_path_factory):
    """(workspace, sweep id) of a completed random sweep of three trials over the learning rate, two at a time."""
    root = tmp_path_factory.mktemp("sweeps-page-workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        patch.setenv(jobs.SLOTS_ENV, "2")  # the driver and its trainers inherit it
        store = RunStore()
        spec = SweepSpec(
            base=tiny_config(tiny_bert),
            space={"learning_rate": Knob("learning_rate", low=1e-4, high=1e-2, log=True)},
            name="tiny lr sweep",
            search="random",
            trials=3,
            parallel=2,
        )
        sweep = submit_sweep(spec, store)
        try:
            finished = wait_for(lambda: store.sweep(sweep.id).finished and store.sweep(sweep.id), SWEEP_TIMEOUT, "the sweep")
            assert finished.status == "completed", finished.error
            yield root, sweep.id
        finally:
            stop_trainers(root)


@pytest.fixture
def finished_sweep(finished_sweep_workspace, monkeypatch):
    root, sweep_id = finished_sweep_workspace
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return sweep_id


def open_sweep(sweep_id: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.session_state["sweeps_selected"] = sweep_id
    app.run()
    app.switch_page(SWEEPS).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def trials_table(app: AppTest):
    return next(frame.value for frame in app.dataframe if "objective" in frame.value.columns)


def test_the_sweeps_page_shows_the_trials_the_best_objective_and_the_figures(finished_sweep):
    app = open_sweep(finished_sweep)
    assert app.selectbox(key="sweeps_pick").value == finished_sweep
    table = trials_table(app)
    assert len(table) == 3
    assert {"trial", "run_id", "learning_rate", "seed", "objective"} <= set(table.columns)
    assert table["status"].str.endswith("completed").all()
    assert table["learning_rate"].between(1e-4, 1e-2).all()
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Trials finished"] == "3 / 3"
    best = best_trial(trial_frame(finished_sweep), maximize=True)
    assert metrics["Best accuracy (higher is better)"] == f"{best['objective']:.4g}"
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    assert len(figures) == 3  # best so far, parallel coordinates, importances (three trials varied the rate)
    assert {trace["name"] for trace in figures[0]["data"]} == {"trial", "best so far"}
    assert not any(b.key == "sweeps_cancel" for b in app.button)  # a finished sweep has nothing to cancel


def test_copy_best_config_fills_the_train_form_with_the_best_trial(finished_sweep, tiny_bert):
    best = best_trial(trial_frame(finished_sweep), maximize=True)
    app = open_sweep(finished_sweep)
    app.button(key="sweeps_copy_best").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.number_input(key="train_learning_rate").value == pytest.approx(best["learning_rate"])
    assert app.radio(key="train_model_source").value == "Local folder"
    assert app.text_input(key="train_model_text").value == str(tiny_bert)
    assert app.toggle(key="sweep_on").value is False
    assert app.button(key="train_start").disabled is False


def test_open_best_trial_switches_to_inspect_on_that_run(finished_sweep):
    best = best_trial(trial_frame(finished_sweep), maximize=True)
    app = open_sweep(finished_sweep)
    app.button(key="sweeps_open_best").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.selectbox(key="inspect_run").value == best["run_id"]


def test_the_runs_page_names_each_trial_and_its_sweep(finished_sweep):
    app = open_page("pages/views/runs.py")
    table = next(frame.value for frame in app.dataframe if "sweep" in frame.value.columns)
    assert sorted(table["sweep"]) == [f"trial {n} · {finished_sweep}" for n in range(3)]


def test_repeat_best_starts_a_seed_sweep_that_names_its_parent(finished_sweep):
    store = RunStore()
    app = open_sweep(finished_sweep)
    app.button(key="sweeps_repeat").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    repeat = next(sweep for sweep in store.sweeps() if sweep.id != finished_sweep)
    cancel_sweep(repeat.id, store)  # its seeds would take a minute: the page's part is what it recorded
    spec = SweepSpec.from_yaml(repeat.spec)
    assert spec.extras["parent"] == finished_sweep
    best = best_trial(trial_frame(finished_sweep), maximize=True)
    assert set(spec.space) == {"seed"} and len(spec.space["seed"].values) == 3
    assert spec.base.learning_rate == pytest.approx(best["learning_rate"])
    assert app.selectbox(key="sweeps_pick").value == repeat.id  # the page shows the new sweep
    app.run()
    labels = [m.label for m in app.metric]
    assert any("mean ± std over" in label for label in labels), labels
    assert any("this says whether the win is noise" in c.value for c in app.caption)


# --- without a trained sweep -------------------------------------------------------------------


def test_the_empty_sweeps_page_says_where_to_start_one(workspace):
    app = open_page(SWEEPS)
    assert any("No sweeps yet" in info.value for info in app.info)
    assert not app.get("selectbox")


def sweep_section(app: AppTest, *knobs: str) -> AppTest:
    app.toggle(key="sweep_on").set_value(True).run()
    app.multiselect(key="sweep_knobs").set_value(list(knobs)).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def errors(app: AppTest) -> str:
    return " ".join(e.value for e in app.error)


def test_the_sweep_section_explains_an_empty_range_and_an_empty_list_and_blocks_start(workspace):
    app = open_page(TRAIN)
    assert app.button(key="train_start") is not None
    app = sweep_section(app, "learning_rate", "batch_size")
    assert not any(b.key == "train_start" for b in app.button)  # the sweep's Start replaces the run's
    assert app.checkbox(key="sweep_log_learning_rate").value is True
    assert app.button(key="sweep_start").disabled is False
    assert "python -m core sweep sweep.yaml" in [c.value for c in app.code]

    app.number_input(key="sweep_low_learning_rate").set_value(1e-3)
    app.number_input(key="sweep_high_learning_rate").set_value(1e-4).run()
    assert "The range of learning_rate is empty: low (0.001) must be below high (0.0001)." in errors(app)
    assert app.button(key="sweep_start").disabled is True

    app.number_input(key="sweep_low_learning_rate").set_value(1e-5)
    app.text_input(key="sweep_values_batch_size").set_value(" , ").run()
    assert "The list of values for batch_size is empty; give at least one value." in errors(app)
    assert "learning_rate is empty" not in errors(app)
    assert app.button(key="sweep_start").disabled is True

    app.text_input(key="sweep_values_batch_size").set_value("8, 16")
    app.selectbox(key="sweep_search").set_value("grid").run()
    assert "A grid search needs a list of values for every setting; give learning_rate as a list" in errors(app)
    app.radio(key="sweep_mode_learning_rate").set_value("list of values").run()
    assert not app.error, errors(app)
    assert app.button(key="sweep_start").disabled is False
    assert any("4 trials" in c.value for c in app.caption)  # the grid's size, under the budget of 8
    assert RunStore().sweeps() == []


def test_the_sweep_section_offers_this_tasks_objectives_and_knobs(workspace):
    app = sweep_section(open_page(TRAIN), "learning_rate")
    assert app.selectbox(key="sweep_objective").value == "accuracy"
    assert "max_length" in app.multiselect(key="sweep_knobs").options
    app.selectbox(key="train_task").set_value("image_classification").run()
    assert not app.exception, [e.message for e in app.exception]
    assert "max_length" not in app.multiselect(key="sweep_knobs").options  # images have no sequence length
    assert "aug_flip" in app.multiselect(key="sweep_knobs").options
    app.multiselect(key="sweep_knobs").set_value(["lora_r"]).run()
    assert "lora_r acts only with strategy lora or adalora" in errors(app)
    assert app.button(key="sweep_start").disabled is True


def test_the_train_page_starts_a_sweep(workspace, tiny_bert):
    app = open_page(TRAIN)
    app.radio(key="train_model_source").set_value("Local folder").run()
    app.text_input(key="train_model_text").set_value(str(tiny_bert))
    app.selectbox(key="train_dataset").set_value("planted-keywords")
    app.number_input(key="train_max_steps").set_value(4)
    app.number_input(key="train_max_length").set_value(32).run()
    app = sweep_section(app, "learning_rate", "batch_size")
    app.selectbox(key="sweep_search").set_value("random")
    app.number_input(key="sweep_trials").set_value(2)
    app.text_input(key="sweep_name").set_value("from the page").run()
    app.button(key="sweep_start").click().run()
    assert not app.error, errors(app)
    store = RunStore()
    [sweep] = store.sweeps()
    cancel_sweep(sweep.id, store)
    assert sweep.name == "from the page" and sweep.status == "running"
    spec = SweepSpec.from_yaml(sweep.spec)
    assert set(spec.space) == {"learning_rate", "batch_size"} and spec.trials == 2 and spec.search == "random"
    assert spec.space["batch_size"].values == (16, 32)
    assert spec.base.model == str(tiny_bert) and spec.base.max_steps == 4
    assert any(sweep.id in s.value for s in app.success)
    assert app.session_state["sweeps_selected"] == sweep.id
    assert store.sweep(sweep.id).status == "cancelled"


def test_the_runs_page_offers_resume_for_a_pruned_trial(workspace):
    store = RunStore()
    run = store.create(
        "r1",
        name="lr sweep · trial 2",
        task="text_classification",
        model="m",
        dataset="d",
        device="cpu",
        config_yaml=RunConfig().to_yaml(),
        sweep_id="sweep-x",
        trial=2,
    )
    store.update(run.id, status="pruned", error="Stopped at step 10: its accuracy trailed the median.")
    app = open_page("pages/views/runs.py")
    assert any("trailed the median" in w.value for w in app.warning)
    assert app.button(key="runs_resume_r1") is not None
    assert any("Trial 2 of sweep sweep-x" in c.value for c in app.caption)
    table = next(frame.value for frame in app.dataframe if "sweep" in frame.value.columns)
    assert table["sweep"].tolist() == ["trial 2 · sweep-x"]
    assert table["status"].tolist() == ["▼ pruned"]
