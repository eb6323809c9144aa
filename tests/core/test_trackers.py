"""Experiment trackers beside TensorBoard: opt-in, checked at submit, and a run's curves land in MLflow."""

import importlib.util

import pytest
from test_training import tiny_config, train_here

from core.config import TRACKERS, RunConfig
from core.errors import UserError
from core.store import RunStore

# The variables the trainer sets for the trackers; monkeypatch restores them after each test.
TRACKER_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ALLOW_FILE_STORE",
    "MLFLOW_EXPERIMENT_NAME",
    "TRACKIO_DIR",
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_PROJECT",
)


@pytest.fixture
def clean_tracker_environment(monkeypatch):
    for name in TRACKER_VARIABLES:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unused")  # train() sets it


@pytest.fixture
def mlflow_run(workspace, tiny_bert, clean_tracker_environment):
    store = RunStore()
    run = train_here(tiny_config(tiny_bert, name="tracked", trackers=["mlflow"]), store, "mlflow-run")
    return {"run": run, "store": store, "workspace": workspace}


def mlflow_history(client, run_id: str, name: str) -> dict[int, float]:
    return {point.step: point.value for point in client.get_metric_history(run_id, name)}


def test_a_tiny_run_logs_its_curves_to_mlflows_file_store_in_the_workspace(mlflow_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(mlflow_run["workspace"] / "mlruns").as_uri())  # MLFLOW_ALLOW_FILE_STORE is still set
    experiment = client.get_experiment_by_name("Text classification")
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_name == "tracked (mlflow-run)" and tracked.info.status == "FINISHED"
    metrics = mlflow_run["store"].metrics("mlflow-run")
    stored = {name: dict(zip(rows["step"], rows["value"])) for name, rows in metrics.groupby("name")}
    # Trainer logs the step loss as "loss" (the store calls it train_loss) and the run's mean as "train_loss".
    train_loss, eval_loss = (
        mlflow_history(client, tracked.info.run_id, "loss"),
        mlflow_history(client, tracked.info.run_id, "eval_loss"),
    )
    assert train_loss and max(train_loss) == max(stored["train_loss"]) == 60  # 4 epochs of 15 steps (240 training rows, batch 16)
    assert train_loss == pytest.approx(stored["train_loss"])
    assert max(eval_loss) == max(stored["eval_loss"]) and eval_loss[max(eval_loss)] == pytest.approx(
        stored["eval_loss"][max(eval_loss)]
    )
    assert tracked.data.metrics["train_loss"] == pytest.approx(stored["train_loss_mean"][60])
    assert tracked.data.params["learning_rate"] == "0.005"
    assert list((mlflow_run["run"].directory / "tensorboard").rglob("events.out.tfevents.*"))  # TensorBoard still logs


def test_trackers_are_off_unless_chosen(workspace, tiny_bert, clean_tracker_environment):
    import os

    from core.trainer import report_to

    store = RunStore()
    run = store.create("plain", name="p", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")
    assert RunConfig().trackers == [] and report_to(RunConfig(), run, "Text classification") == ["tensorboard"]
    assert not any(name in os.environ for name in TRACKER_VARIABLES)


def test_a_tracking_uri_and_wandb_keep_to_what_the_user_chose(workspace, clean_tracker_environment, monkeypatch):
    import os

    from core.trainer import report_to

    run = RunStore().create("w", name="w", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")
    config = RunConfig(trackers=["mlflow", "wandb"], mlflow_tracking_uri="http://localhost:5000")
    assert report_to(config, run, "Text classification") == ["tensorboard", "mlflow", "wandb"]
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://localhost:5000"
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(run.directory)
    monkeypatch.setenv("WANDB_MODE", "online")  # a user who wants W&B's servers says so
    report_to(config, run, "Text classification")
    assert os.environ["WANDB_MODE"] == "online"


def test_unknown_and_missing_trackers_are_sentences_with_the_install_command(monkeypatch):
    assert RunConfig(trackers=["comet"]).tracker_problems() == [
        "Unknown tracker 'comet'; choose from mlflow, trackio, wandb (TensorBoard always logs)."
    ]
    present = {name for name, tracker in TRACKERS.items() if importlib.util.find_spec(tracker.module)}
    monkeypatch.setattr(importlib.util, "find_spec", lambda module: object() if module in present - {"mlflow"} else None)
    problems = RunConfig(trackers=["mlflow", "trackio", "wandb"]).tracker_problems()
    assert (
        "MLflow is not installed here; run `pip install mlflow-skinny==3.17.2`, or remove mlflow from the trackers." in problems
    )
    assert "Trackio is not installed here; run `pip install trackio==0.43.0`, or remove trackio from the trackers." in problems
    assert any("`pip install wandb`" in problem for problem in problems)
    assert RunConfig(mlflow_tracking_uri="http://localhost:5000").tracker_problems() == [
        "An MLflow tracking URI is set but mlflow is not among the trackers; add it, or clear the URI."
    ]


def test_trackers_come_from_yaml_and_a_missing_one_is_refused_at_submit(workspace, monkeypatch):
    from core import jobs

    config = RunConfig.from_yaml("trackers: [mlflow]\nmlflow_tracking_uri: ''\n")
    assert config.trackers == ["mlflow"] and config.validate() == []
    assert RunConfig.from_dict({"trackers": "mlflow, wandb"}).trackers == ["mlflow", "wandb"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda module: None if module == "mlflow" else object())
    with pytest.raises(UserError, match=r"MLflow is not installed here; run `pip install mlflow-skinny==3\.17\.2`"):
        jobs.submit(config)
    assert RunStore().list() == []


def test_the_train_page_offers_the_trackers_in_the_robustness_group(workspace):
    from streamlit.testing.v1 import AppTest

    from core.config import HELP

    app = AppTest.from_file("../../app.py", default_timeout=60).run()
    app.switch_page("pages/views/train.py").run()
    chooser = app.multiselect(key="train_trackers")
    assert chooser.options == [tracker.label for tracker in TRACKERS.values()] and chooser.value == []
    assert chooser.help == HELP["trackers"] and app.text_input(key="train_mlflow_tracking_uri").disabled
    chooser.set_value(["mlflow"]).run()
    assert not app.text_input(key="train_mlflow_tracking_uri").disabled and not app.error
    app.multiselect(key="train_trackers").set_value(["trackio"]).run()
    missing = importlib.util.find_spec("trackio") is None
    assert any("`pip install trackio==0.43.0`" in error.value for error in app.error) == missing
    assert app.button(key="train_start").disabled == missing
