"""AppTest of the Home, Train and Runs pages, driven through app.py as a user would navigate."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.catalog import BUILTIN_MODELS
from core.config import RunConfig
from core.store import RunStore

TIMEOUT = 90
APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page(page).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def tiny_config(tiny_bert, **changes) -> RunConfig:
    values = {
        "name": "tiny",
        "model": str(tiny_bert),
        "dataset": "planted-keywords",
        "max_rows": 200,
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 0.005,
        "eval_steps": 5,
        "logging_steps": 2,
        "max_length": 32,
    }
    values.update(changes)
    return RunConfig(**values)


def test_home_counts_runs(workspace):
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not app.exception
    assert [m.value for m in app.metric][:1] == ["0"]


def test_train_page_defaults_to_minilm_on_movie_reviews(workspace):
    app = open_page("pages/views/train.py")
    assert app.selectbox(key="train_model_builtin").value == "minilm-l6"
    assert app.selectbox(key="train_dataset").value == "movie-reviews"
    assert not app.error
    assert app.button(key="train_start").disabled is False
    assert "python -m core train run.yaml" in app.code[0].value


def test_train_page_explains_bad_hyperparameters(workspace):
    app = open_page("pages/views/train.py")
    app.number_input(key="train_learning_rate").set_value(0.0)
    app.number_input(key="train_batch_size").set_value(0).run()
    errors = " ".join(e.value for e in app.error)
    assert "learning rate must be above 0" in errors
    assert "batch size must be at least 1" in errors
    assert app.button(key="train_start").disabled is True


def test_train_page_rejects_a_folder_that_is_not_a_model(workspace, tmp_path):
    app = open_page("pages/views/train.py")
    app.radio(key="train_model_source").set_value("Local folder").run()
    app.text_input(key="train_model_text").set_value(str(tmp_path)).run()
    app.button(key="train_start").click().run()
    assert any("not a model" in e.value for e in app.error)
    assert RunStore().list() == []


def test_train_page_starts_a_run(workspace, tiny_bert):
    app = open_page("pages/views/train.py")
    app.radio(key="train_model_source").set_value("Local folder").run()
    app.text_input(key="train_model_text").set_value(str(tiny_bert))
    app.selectbox(key="train_dataset").set_value("planted-keywords")
    app.number_input(key="train_max_steps").set_value(4)
    app.number_input(key="train_max_length").set_value(32).run()
    app.button(key="train_start").click().run()
    assert not app.error, [e.value for e in app.error]
    runs = RunStore().list()
    assert len(runs) == 1 and runs[0].model == str(tiny_bert)
    assert any(runs[0].id in s.value for s in app.success)
    finished = jobs.wait(runs[0].id, timeout=120)
    assert finished.status == "completed", finished.error


@pytest.fixture(scope="module")
def two_finished_workspace(tiny_bert, tmp_path_factory):
    """(workspace, run ids) of two finished tiny runs, trained once for the module: the Runs page tests
    below only read them (measuring, exporting and attacking a run add files beside it, not runs)."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("runs-page-workspace")
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        patch.setenv(jobs.SLOTS_ENV, "2")  # both trainers at once: each is one thread, and most of each is start-up
        store = RunStore()
        first = jobs.submit(tiny_config(tiny_bert, name="fast"), store)
        second = jobs.submit(tiny_config(tiny_bert, name="slow", learning_rate=0.001), store)
        for run in (first, second):
            finished = jobs.wait(run.id, store, timeout=240)
            assert finished.status == "completed", jobs.log_tail(run.id, 40)
    return root, (first.id, second.id)


@pytest.fixture
def two_finished_runs(two_finished_workspace, monkeypatch):
    root, run_ids = two_finished_workspace
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return run_ids


def curve_names(app: AppTest) -> set[str]:
    figure = json.loads(app.get("plotly_chart")[0].proto.spec)
    return {trace["name"] for trace in figure["data"]}


def test_runs_page_shows_curves_reports_and_compares(two_finished_runs):
    first, second = two_finished_runs
    app = open_page("pages/views/runs.py")
    app.multiselect(key="runs_selection").set_value([first]).run()
    assert {"train_loss", "eval_loss", "eval_accuracy", "learning_rate"} <= curve_names(app)
    tables = [t.value for t in app.dataframe]
    assert any("before fine-tuning" in table.columns for table in tables)

    app.multiselect(key="runs_selection").set_value([first, second]).run()
    names = curve_names(app)
    assert any(name.startswith("fast") for name in names) and any(name.startswith("slow") for name in names)
    differences = [t.value for t in app.dataframe if "learning_rate" in t.value.index]
    assert differences and set(differences[0].loc["name"]) == {"fast", "slow"}


def test_runs_page_shows_failure_reason_and_resume(workspace):
    store = RunStore()
    run = store.create(
        "r1", name="broken", task="text_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml()
    )
    store.update(run.id, status="failed", error="The label column has 3 blank rows.")
    app = open_page("pages/views/runs.py")
    assert any("3 blank rows" in e.value for e in app.error)
    assert app.button(key="runs_resume_r1") is not None


def test_a_preset_fills_the_form(workspace):
    app = open_page("pages/views/train.py")
    app.selectbox(key="train_preset").set_value("overfit").run()
    assert "over-fitting" in " ".join(m.value for m in app.markdown)
    app.button(key="train_preset_fill").click().run()
    assert app.number_input(key="train_learning_rate").value == pytest.approx(1e-3)
    assert app.number_input(key="train_weight_decay").value == 0.0
    assert app.text_input(key="train_name").value == "Over-fit on purpose"
    assert not app.error


def test_robust_options_reach_the_config(workspace):
    app = open_page("pages/views/train.py")
    app.selectbox(key="train_adversarial").set_value("pgd")
    app.number_input(key="train_adv_epsilon").set_value(0.0).run()
    assert any("epsilon must be above 0" in e.value for e in app.error)
    app.radio(key="train_strategy").set_value("adalora").run()
    assert app.number_input(key="train_adalora_init_r").value == 12


def test_train_page_in_image_mode_previews_augmentation(workspace):
    app = open_page("pages/views/train.py")
    app.selectbox(key="train_task").set_value("image_classification").run()
    assert app.selectbox(key="train_dataset").value == "planted-squares"
    app.number_input(key="train_aug_rotation").set_value(30.0).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert len(app.get("image")) == 2  # the originals row and the augmented grid


def test_runs_page_exports_a_completed_run_with_int8_figures(two_finished_runs):
    first, _ = two_finished_runs
    app = open_page("pages/views/runs.py")
    app.multiselect(key="runs_selection").set_value([first]).run()
    app.button(key=f"runs_measure_{first}").click().run()
    table = next(t.value for t in app.dataframe if "int8" in t.value.columns)
    assert table.loc["size (MB)", "int8"] > 0
    app.checkbox(key=f"runs_with_int8_{first}").check().run()
    app.button(key=f"runs_prepare_{first}").click().run()
    assert not app.error
    assert app.get("download_button")[-1] is not None


def test_runs_page_robustness_check_compares_before_and_after(two_finished_runs):
    first, _ = two_finished_runs
    app = open_page("pages/views/runs.py")
    app.multiselect(key="runs_selection").set_value([first]).run()
    app.number_input(key=f"runs_attack_eps_{first}").set_value(0.2)
    app.button(key=f"runs_attack_go_{first}").click().run()
    table = next(t.value for t in app.dataframe if "after fine-tuning" in t.value.columns and "drop" in t.value.index)
    assert 0 <= table.loc["accuracy under attack", "after fine-tuning"] <= table.loc["clean accuracy", "after fine-tuning"]


def test_built_in_models_follow_the_task(workspace):
    app = open_page("pages/views/train.py")
    assert app.selectbox(key="train_model_builtin").options == [BUILTIN_MODELS[k].title for k in ("minilm-l6", "smollm2-135m")]
    app.selectbox(key="train_task").set_value("token_classification").run()
    assert app.selectbox(key="train_model_builtin").options == [BUILTIN_MODELS["minilm-l6"].title]  # a decoder cannot tag
    app.selectbox(key="train_task").set_value("image_classification").run()
    assert app.selectbox(key="train_model_builtin").value == "mobilenet-v2"
