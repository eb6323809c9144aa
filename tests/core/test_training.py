"""The trainer's work, run in this process (no worker start-up): learning, metrics, reports, final model.

The worker process and the job lifecycle around it are tested in test_jobs.py.
"""

import json

import pandas as pd
import pytest

from core.config import RunConfig
from core.store import RunStore


def tiny_config(model_dir, **overrides) -> RunConfig:
    values = {
        "name": "tiny",
        "model": str(model_dir),
        "dataset": "planted-keywords",
        "max_rows": 300,
        "epochs": 4,
        "batch_size": 16,
        "learning_rate": 0.005,
        "eval_steps": 10,
        "logging_steps": 5,
        "max_length": 32,
        "device": "cpu",
    }
    values.update(overrides)
    return RunConfig(**values)


def train_here(config: RunConfig, store: RunStore, run_id: str):
    """Queue and claim a run like the job manager does, then run the trainer body in this process."""
    from core.trainer import train

    directory = store.path.parent / "runs" / run_id
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    store.create(
        run_id,
        name=config.name,
        task=config.task,
        model=config.model,
        dataset=config.dataset,
        device="cpu",
        config_yaml=config.to_yaml(),
    )
    run = store.claim_next("cpu", slots=10)
    assert run.id == run_id
    train(config, run, store)
    return store.get(run_id)


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    """One full fine-tuning run of the tiny BERT on planted keywords, shared by the tests below."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("training-workspace")))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")  # train() sets it; undone after the module
        store = RunStore()
        config = tiny_config(tiny_bert)
        run = train_here(config, store, "full-run")
        yield {"run": run, "store": store, "config": config, "metrics": store.metrics(run.id)}


def series(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    return metrics[metrics["name"] == name].sort_values(["step", "recorded_at"])


def test_loss_falls_and_accuracy_rises(trained):
    metrics = trained["metrics"]
    train_loss = series(metrics, "train_loss")
    assert len(train_loss) >= 10
    assert train_loss["value"].iloc[-1] < train_loss["value"].iloc[0]
    assert train_loss["value"].iloc[-1] < 0.3
    eval_loss = series(metrics, "eval_loss")
    accuracy = series(metrics, "eval_accuracy")
    assert eval_loss["step"].iloc[0] == 0 and accuracy["step"].iloc[0] == 0
    assert accuracy["value"].iloc[-1] > accuracy["value"].iloc[0]
    assert accuracy["value"].iloc[-1] >= 0.9
    assert eval_loss["value"].iloc[-1] < eval_loss["value"].iloc[0]


def test_metric_steps_are_unique_and_end_at_the_last_step(trained):
    metrics, run = trained["metrics"], trained["run"]
    assert run.max_steps == 60 and run.step == 60  # 240 training rows / 16 x 4 epochs
    for name in ("train_loss", "eval_loss", "eval_accuracy", "learning_rate", "test_accuracy"):
        steps = series(metrics, name)["step"].tolist()
        assert len(steps) == len(set(steps)), (name, steps)
    assert series(metrics, "train_loss")["step"].tolist() == list(range(5, 61, 5))
    assert series(metrics, "eval_loss")["step"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    # The per-step loss at the last step is the real one, not the mean over the whole run.
    last = series(metrics, "train_loss")["value"].iloc[-1]
    mean = series(metrics, "train_loss_mean")
    assert mean["step"].tolist() == [60]
    assert last < mean["value"].iloc[0]
    assert series(metrics, "test_accuracy")["step"].tolist() == [0, 60]
    assert not {"total_flos", "eval_model_preparation_time", "loss"} & set(metrics["name"])


def test_progress_fields(trained):
    run = trained["run"]
    assert run.train_started_at is not None and run.train_start_step == 0
    assert run.progress == 1.0


def test_reports_before_and_after(trained):
    directory = trained["run"].directory
    before = json.loads((directory / "reports" / "test_before.json").read_text())
    after = json.loads((directory / "reports" / "test_after.json").read_text())
    assert before["step"] == 0 and after["step"] == 60
    assert set(before["report"]) >= {"negative", "positive", "accuracy", "macro avg", "weighted avg"}
    assert after["report"]["accuracy"] > before["report"]["accuracy"]
    assert after["report"]["positive"]["support"] + after["report"]["negative"]["support"] == 30


def test_predictions_and_summary(trained):
    directory = trained["run"].directory
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["label_names"] == ["negative", "positive"]
    assert summary["rows"] == {"train": 240, "validation": 30, "test": 30}
    assert summary["trainable_parameters"] == summary["total_parameters"]
    assert summary["precision"] == "fp32"
    for name, rows in (("test_before", 30), ("test_after", 30), ("validation_after", 30)):
        frame = pd.read_parquet(directory / "predictions" / f"{name}.parquet")
        assert len(frame) == rows
        assert {"text", "gold", "predicted", "confidence", "loss", "correct", "p(negative)", "p(positive)"} <= set(frame.columns)
        assert frame[["p(negative)", "p(positive)"]].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    after = pd.read_parquet(directory / "predictions" / "test_after.parquet")
    report = json.loads((directory / "reports" / "test_after.json").read_text())["report"]
    assert after["correct"].mean() == pytest.approx(report["accuracy"])


def test_prediction_rows_keep_the_split_order(trained):
    # Each text must sit beside its own gold label: the frames pair outputs with the split's rows.
    from core.data import load_splits

    config = trained["config"]
    splits = load_splits(config.dataset, seed=config.seed, max_rows=config.max_rows)
    for split, name in (("test", "test_before"), ("test", "test_after"), ("validation", "validation_after")):
        frame = pd.read_parquet(trained["run"].directory / "predictions" / f"{name}.parquet")
        rows = splits.split(split)
        assert frame["text"].tolist() == rows["text"].tolist()
        assert frame["gold"].tolist() == rows["label"].tolist(), name


def test_checkpoints_and_tensorboard(trained):
    directory = trained["run"].directory
    checkpoints = sorted(p.name for p in (directory / "checkpoints").glob("checkpoint-*"))
    # save_total_limit 2: the newest, and the best by validation accuracy (kept by default) unless it is the newest.
    assert checkpoints[-1] == "checkpoint-60" and len(checkpoints) <= 2
    assert (directory / "checkpoints" / "checkpoint-60" / "optimizer.pt").exists()
    assert any((directory / "tensorboard").iterdir())


def test_final_model_reproduces_the_saved_predictions(trained):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = trained["run"].directory / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    frame = pd.read_parquet(trained["run"].directory / "predictions" / "test_after.parquet")
    encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**encoded).logits.argmax(-1).tolist()
    assert [model.config.id2label[i] for i in predicted] == frame["predicted"].tolist()


def test_lora_run_saves_a_merged_plain_model(tiny_bert, workspace, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
    store = RunStore()
    config = tiny_config(tiny_bert, strategy="lora", epochs=1, lora_r=4, lora_alpha=8, learning_rate=0.01)
    run = train_here(config, store, "lora-run")
    summary = json.loads((run.directory / "summary.json").read_text())
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"] / 5
    folder = run.directory / "model"
    assert not (folder / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert not any("lora" in name for name, _ in model.named_parameters())
    frame = pd.read_parquet(run.directory / "predictions" / "test_after.parquet")
    encoded = model_inputs(folder, frame["text"].tolist())
    with torch.no_grad():
        probabilities = torch.softmax(model(**encoded).logits, -1)[:, 1].numpy()
    # The merged model gives the probabilities the adapter model gave during the run.
    assert probabilities == pytest.approx(frame["p(positive)"].to_numpy(), abs=1e-4)
    # The adapters alone load onto the pretrained model (with its fresh head: the trained one is among their saved
    # modules) and give the same probabilities, as the export's model card says.
    from peft import PeftModel

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    adapted = PeftModel.from_pretrained(base, run.directory / "adapter").eval()
    with torch.no_grad():
        again = torch.softmax(adapted(**encoded).logits, -1)[:, 1].numpy()
    assert again == pytest.approx(probabilities, abs=1e-4)


def test_head_run_keeps_the_encoder(tiny_bert, workspace, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
    store = RunStore()
    run = train_here(tiny_config(tiny_bert, strategy="head", max_steps=5, eval_steps=5), store, "head-run")
    summary = json.loads((run.directory / "summary.json").read_text())
    assert summary["trainable_parameters"] == 32 * 2 + 2
    saved = load_file(run.directory / "model" / "model.safetensors")
    original = load_file(tiny_bert / "model.safetensors")
    for name, tensor in original.items():
        key = name if name in saved else f"bert.{name}"
        assert key in saved, name
        assert (saved[key] == tensor).all(), name


def model_inputs(folder, texts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")


# The callbacks on their own, with the objects the Trainer passes them.


def test_store_metrics_names_and_filters_what_it_records(workspace):
    from types import SimpleNamespace

    from core.callbacks import StoreMetrics

    store = RunStore()
    store.create("r", name="n", task="t", model="m", dataset="d", device="cpu", config_yaml="")
    callback = StoreMetrics(store, "r")
    state = SimpleNamespace(global_step=10)
    callback.on_log(None, state, None, logs={"loss": 0.5, "learning_rate": 1e-3, "epoch": 1.0})
    callback.on_log(None, state, None, logs={"eval_loss": 0.4, "eval_model_preparation_time": 0.1, "note": "text"})
    # The end-of-training summary: its train_loss is a mean over the run, not the loss at step 10.
    callback.on_log(None, state, None, logs={"train_runtime": 3.0, "train_loss": 0.9, "total_flos": 1e9, "epoch": 1.0})
    callback.on_log(None, state, None, logs={})
    metrics = store.metrics("r")
    names = metrics.groupby("name")["value"].apply(list).to_dict()
    assert names["train_loss"] == [0.5]
    assert names["train_loss_mean"] == [0.9]
    assert names["eval_loss"] == [0.4] and names["train_runtime"] == [3.0]
    assert not {"loss", "total_flos", "eval_model_preparation_time", "note"} & set(names)
    assert set(metrics["step"]) == {10}


def test_cancel_flag_saves_instead_of_evaluating(tmp_path):
    from types import SimpleNamespace

    from core.callbacks import CancelledRun, CancelOnFlag

    flag = tmp_path / "CANCEL"
    callback = CancelOnFlag(flag)
    control = SimpleNamespace(should_save=False, should_training_stop=False, should_evaluate=True)
    callback.on_step_end(None, None, control)
    callback.on_prediction_step(None, None, control)  # no flag: nothing happens
    assert (control.should_save, control.should_training_stop, control.should_evaluate) == (False, False, True)
    flag.touch()
    assert callback.requested
    callback.on_step_end(None, None, control)
    # An evaluation due at this step would be abandoned (CancelledRun) before the checkpoint is written.
    assert (control.should_save, control.should_training_stop, control.should_evaluate) == (True, True, False)
    with pytest.raises(CancelledRun):
        callback.on_prediction_step(None, None, control)


def test_progress_is_throttled_but_records_the_last_step(workspace, monkeypatch):
    from types import SimpleNamespace

    import core.callbacks
    from core.callbacks import Progress

    clock = [1000.0]
    monkeypatch.setattr(core.callbacks.time, "time", lambda: clock[0])
    store = RunStore()
    store.create("r", name="n", task="t", model="m", dataset="d", device="cpu", config_yaml="")
    callback = Progress(store, "r", every_seconds=1.0)
    state = SimpleNamespace(global_step=20, max_steps=100)
    callback.on_train_begin(None, state, None)
    run = store.get("r")
    assert (run.step, run.max_steps, run.train_start_step, run.train_started_at) == (20, 100, 20, 1000.0)
    clock[0] += 0.5
    state.global_step = 21
    callback.on_step_end(None, state, None)
    assert store.get("r").step == 20  # too soon
    clock[0] += 0.6
    state.global_step = 22
    callback.on_step_end(None, state, None)
    assert store.get("r").step == 22 and store.get("r").progress_at == 1001.1
    clock[0] += 0.1
    state.global_step = 100
    callback.on_step_end(None, state, None)
    assert store.get("r").step == 100  # the last step is always written
