"""The job manager with real trainer processes: queue, slots, cancel, resume, reconcile, refusals.

Each trainer process takes several seconds just to import torch and transformers, so the runs
here are few and tiny (a 2-layer BERT on the synthetic planted-keywords data) and shared through a
module-scoped fixture where the assertions allow it. Every wait polls against a deadline.
"""

import json
import os
import signal
import time

import psutil
import pytest

from core import jobs
from core.allocator import tcmalloc_library
from core.config import RunConfig
from core.errors import UserError
from core.store import RunStore

# Generous: the suite must also pass on a busy 2-core machine. A healthy run takes well under this.
RUN_TIMEOUT = 240


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
    }
    values.update(overrides)
    return RunConfig(**values)


def poll(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def steps_of(metrics, name: str) -> list[int]:
    return metrics[metrics["name"] == name].sort_values(["step", "recorded_at"])["step"].tolist()


def log_of(run) -> str:
    return (run.directory / jobs.LOG_FILE).read_text(encoding="utf-8", errors="replace")


def nothing_queued(store: RunStore, workspace) -> bool:
    runs = workspace / "runs"
    return store.list() == [] and (not runs.exists() or not any(runs.iterdir()))


# ---------------------------------------------------------------------------------------------
# A queue of three runs with one slot: the first runs, the second waits and is started by the
# first worker when it ends, the third is cancelled while queued.


@pytest.fixture(scope="module")
def queue(tiny_bert, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("jobs-queue")
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        patch.setenv(jobs.SLOTS_ENV, "1")
        store = RunStore()
        seen = {}
        first = jobs.submit(tiny_config(tiny_bert, name="first"), store)
        seen["first_after_submit"] = first
        seen["first_process"] = psutil.Process(first.pid).cmdline() if first.pid else None
        second = jobs.submit(tiny_config(tiny_bert, name="second", strategy="head"), store)
        seen["second_after_submit"] = second
        third = jobs.submit(tiny_config(tiny_bert, name="third"), store)
        seen["third_after_cancel"] = jobs.cancel(third.id, store)
        # Nobody calls dispatch from here on: only the first worker can start the second run.
        seen["first"] = jobs.wait(first.id, store, timeout=RUN_TIMEOUT, poll=0.2)
        seen["second"] = jobs.wait(second.id, store, timeout=RUN_TIMEOUT, poll=0.2)
        seen["third"] = store.get(third.id)
        seen["store"] = store
        yield seen


def test_submit_with_a_free_device_starts_a_process(queue):
    run = queue["first_after_submit"]
    assert run.status == "running"
    assert run.device == "cpu"
    assert run.pid is not None and run.pid_started_at is not None
    assert queue["first_process"][-3:] == ["core", "worker", run.id]
    assert (run.directory / "config.yaml").exists()
    assert RunConfig.load(run.directory / "config.yaml").name == "first"


def test_one_slot_runs_jobs_one_after_the_other(queue):
    first, second = queue["first"], queue["second"]
    waiting = queue["second_after_submit"]
    assert waiting.status == "queued" and waiting.pid is None
    assert first.status == "completed", first.error
    assert second.status == "completed", second.error
    # The second started only once the first had ended, and without anyone calling dispatch.
    assert second.started_at >= first.finished_at
    assert "Strategy head" in log_of(second)


def test_cancel_a_queued_run_is_immediate_and_final(queue):
    cancelled = queue["third_after_cancel"]
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    # The worker that dispatched after the first and second runs did not start it.
    third = queue["third"]
    assert third.status == "cancelled" and third.pid is None and third.started_at is None
    assert not (third.directory / jobs.LOG_FILE).exists()


def test_completed_run_has_metrics_reports_predictions_and_model(queue):
    run, store = queue["first"], queue["store"]
    assert run.error is None and run.finished_at >= run.started_at
    assert run.step == run.max_steps == 60
    metrics = store.metrics(run.id)
    eval_steps = steps_of(metrics, "eval_loss")
    assert eval_steps[0] == 0 and eval_steps[-1] == 60
    assert len(eval_steps) == len(set(eval_steps))
    assert steps_of(metrics, "eval_accuracy") == eval_steps
    assert steps_of(metrics, "test_accuracy") == [0, 60]
    train_steps = steps_of(metrics, "train_loss")
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 60
    for stage, step in (("before", 0), ("after", 60)):
        report = json.loads((run.directory / "reports" / f"test_{stage}.json").read_text())
        assert report["step"] == step and "accuracy" in report["report"]
        assert (run.directory / "predictions" / f"test_{stage}.parquet").stat().st_size > 0
    assert (run.directory / "predictions" / "validation_after.parquet").exists()
    assert "Run completed." in log_of(run)
    # The trainer process started with tcmalloc where it is installed (`core.allocator`), and says which it has.
    expected = "tcmalloc" if tcmalloc_library() else "system malloc"
    assert json.loads((run.directory / "summary.json").read_text())["allocator"] == expected
    assert f"Memory allocator: {'tcmalloc' if expected == 'tcmalloc' else 'the system malloc'}" in log_of(run)

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(run.directory / "model")
    assert model.config.num_labels == 2
    assert set(model.config.id2label.values()) == {"negative", "positive"}


# ---------------------------------------------------------------------------------------------
# Cancel while training, then resume from the checkpoint.


def test_cancel_a_running_run_then_resume_from_its_checkpoint(tiny_bert, workspace):
    store = RunStore()
    # Long enough that the cancel lands mid-run even if this process stalls for a few seconds.
    config = tiny_config(tiny_bert, name="long", epochs=0, max_steps=400, eval_steps=50, logging_steps=5)
    run = jobs.submit(config, store)
    checkpoints = run.directory / "checkpoints"
    poll(lambda: checkpoints.exists() and any(checkpoints.glob("checkpoint-*")), RUN_TIMEOUT, 0.01, "a first checkpoint")
    asked = jobs.cancel(run.id, store)
    assert asked.status in ("running", "cancelled")
    assert (run.directory / jobs.CANCEL_FLAG).exists()

    cancelled = jobs.wait(run.id, store, timeout=RUN_TIMEOUT, poll=0.1)
    assert cancelled.status == "cancelled", cancelled.error
    assert cancelled.error is None
    kept = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert kept, "cancel must keep a checkpoint"
    last = kept[-1]
    assert 0 < last < 400, "the run was stopped in the middle"
    assert (checkpoints / f"checkpoint-{last}" / "trainer_state.json").exists()
    assert "Cancelled; the last checkpoint is kept for resume." in log_of(cancelled)
    assert not (run.directory / "model").exists()

    with pytest.raises(UserError, match="only queued or running"):
        jobs.cancel(run.id, store)

    resumed = jobs.resume(run.id, store)
    assert resumed.status == "running" and resumed.resume == 1
    assert not (run.directory / jobs.CANCEL_FLAG).exists()
    done = jobs.wait(run.id, store, timeout=RUN_TIMEOUT, poll=0.2)
    assert done.status == "completed", done.error
    assert done.step == 400 and done.progress == 1.0
    assert done.train_start_step == last  # the pace (ETA) counts only the steps of this start

    log = log_of(done)
    assert f"Resuming from checkpoint-{last}" in log
    assert log.count("Evaluating before the first update (step 0).") == 1
    metrics = store.metrics(run.id)
    train_steps = steps_of(metrics, "train_loss")
    assert len(train_steps) == len(set(train_steps)), train_steps
    assert train_steps == sorted(train_steps) and train_steps[-1] == 400
    assert set(range(5, 401, 5)) <= set(train_steps)
    eval_steps = steps_of(metrics, "eval_loss")
    assert len(eval_steps) == len(set(eval_steps)), eval_steps
    assert eval_steps[0] == 0 and eval_steps[-1] == 400
    assert (run.directory / "reports" / "test_before.json").exists()
    assert json.loads((run.directory / "reports" / "test_after.json").read_text())["step"] == 400
    assert (run.directory / "model" / "config.json").exists()

    with pytest.raises(UserError, match="only failed, cancelled or pruned"):
        jobs.resume(run.id, store)


def test_cancel_right_after_submit_ends_cancelled_not_failed(tiny_bert, workspace):
    # The SIGTERM may land before the worker has set its handler; the run was still asked to stop.
    store = RunStore()
    run = jobs.submit(tiny_config(tiny_bert, name="quick cancel"), store)
    jobs.cancel(run.id, store)
    ended = jobs.wait(run.id, store, timeout=RUN_TIMEOUT, poll=0.1)
    assert ended.status == "cancelled", ended.error
    assert ended.error is None


# ---------------------------------------------------------------------------------------------
# Failures: a killed trainer, and a dataset the worker cannot use.


def test_a_killed_trainer_is_marked_failed_by_reconcile(tiny_bert, workspace):
    store = RunStore()
    run = jobs.submit(tiny_config(tiny_bert, name="doomed", epochs=0, max_steps=100_000), store)
    poll(lambda: "Preparing" in log_of(run), RUN_TIMEOUT, 0.05, "the worker to start")
    assert jobs.reconcile(store) == []  # alive: left alone
    os.kill(run.pid, signal.SIGKILL)
    start = time.time()
    # This test's reconcile or the workspace's supervisor, whichever looks first, marks it.
    poll(lambda: jobs.reconcile(store) or store.get(run.id).status == "failed", 5, 0.05, "the dead trainer to be noticed")
    assert time.time() - start < 5
    failed = store.get(run.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert "stopped without reporting" in failed.error
    tail = jobs.log_tail(run.id, 5)  # the log no longer changes
    assert tail and failed.error.endswith("Last log lines:\n" + tail)
    assert jobs.reconcile(store) == []  # only once


def test_a_dataset_that_fails_in_the_worker_gives_its_sentence(tiny_bert, workspace, tmp_path):
    table = tmp_path / "one-class.csv"
    table.write_text("text,label\n" + "".join(f"review number {i},good\n" for i in range(20)), encoding="utf-8")
    store = RunStore()
    # Submit refuses this file (its preflight loads it); skipping that stands for a file changed after queueing.
    run = jobs.submit(tiny_config(tiny_bert, name="one class", dataset=str(table)), store, preflight=False)
    ended = jobs.wait(run.id, store, timeout=RUN_TIMEOUT, poll=0.1)
    assert ended.status == "failed"
    assert ended.error.startswith("Every row of the file one-class.csv has the label 'good'")
    assert "at least two classes" in ended.error
    assert "Traceback" not in ended.error and "Training stopped with an error" not in ended.error
    assert f"Run failed. {ended.error}" in log_of(ended)
    assert "Traceback" not in log_of(ended)


# ---------------------------------------------------------------------------------------------
# Refusals before anything is queued (no process is started).


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"learning_rate": 0}, ["learning rate must be above 0"]),
        ({"dataset": "no-such-dataset"}, ["There is no dataset 'no-such-dataset'", "planted-keywords"]),
        ({"max_length": 1000}, ["max length 1000", "limit of 512"]),
        ({"precision": "fp16", "device": "auto"}, ["fp16 needs a GPU"]),
    ],
)
def test_submit_refuses_before_queueing(tiny_bert, workspace, overrides, words):
    if overrides.get("precision") == "fp16" and jobs.resolve_device("auto") != "cpu":
        pytest.skip("auto picks a GPU here")
    store = RunStore()
    with pytest.raises(UserError) as caught:
        jobs.submit(tiny_config(tiny_bert, **overrides), store)
    for word in words:
        assert word in str(caught.value)
    assert nothing_queued(store, workspace)


def test_submit_refuses_a_folder_that_is_not_a_model(workspace, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x")
    store = RunStore()
    with pytest.raises(UserError, match=r"is not a model: it has no config.json"):
        jobs.submit(tiny_config(folder), store)
    with pytest.raises(UserError, match="is not a model"):
        jobs.submit(tiny_config(tmp_path / "missing-folder"), store)
    assert nothing_queued(store, workspace)


def test_submit_refuses_cuda_without_a_gpu(tiny_bert, workspace):
    if jobs.resolve_device("auto") == "cuda":
        pytest.skip("a GPU is visible")
    store = RunStore()
    with pytest.raises(UserError, match="no GPU is visible"):
        jobs.submit(tiny_config(tiny_bert, device="cuda"), store)
    assert nothing_queued(store, workspace)


def test_a_workspace_that_cannot_be_written(tiny_bert, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(blocker / "workspace"))
    with pytest.raises(UserError) as caught:
        jobs.submit(tiny_config(tiny_bert))
    message = str(caught.value)
    assert "is not writable" in message and "WORKBENCH_WORKSPACE" in message
    with pytest.raises(UserError, match="is not writable"):
        RunStore()


def test_unknown_run_ids(workspace):
    store = RunStore()
    for action in (jobs.cancel, jobs.resume):
        with pytest.raises(UserError, match="There is no run with id nope"):
            action("nope", store)


# ---------------------------------------------------------------------------------------------
# Reconcile and helpers, without processes.


def claimed_run(store: RunStore, run_id: str = "r1"):
    store.create(run_id, name="n", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")
    jobs.run_directory(run_id).mkdir(parents=True)
    return store.claim_next("cpu", 1)


def test_reconcile_gives_a_claimed_run_time_to_report_its_pid(workspace):
    store = RunStore()
    run = claimed_run(store)
    assert run.pid is None
    assert jobs.reconcile(store) == []
    assert store.get(run.id).status == "running"
    store.update(run.id, started_at=time.time() - jobs.START_GRACE_SECONDS - 1)
    assert jobs.reconcile(store) == [run.id]
    assert store.get(run.id).status == "failed"


def test_reconcile_sees_a_reused_pid_as_dead(workspace, stand_in):
    store = RunStore()
    run = claimed_run(store)
    me = stand_in
    ticks = jobs.process_start_ticks(me.pid)
    store.update(run.id, pid=me.pid, pid_started_at=me.create_time(), pid_ticks=ticks)
    assert jobs.is_alive(store.get(run.id))
    assert jobs.reconcile(store) == []
    # Same pid number, but a process that started at another moment since boot: not our trainer.
    store.update(run.id, pid_ticks=ticks - 1)
    assert not jobs.is_alive(store.get(run.id))
    (run.directory / jobs.LOG_FILE).write_text("line one\nprogress 10%\rprogress 90%\n\nthe end\n")
    assert jobs.reconcile(store) == [run.id]
    error = store.get(run.id).error
    assert "stopped without reporting" in error and "last complete checkpoint" in error
    assert error.endswith("Last log lines:\nline one\nprogress 90%\nthe end")


def test_reconcile_marks_a_dead_run_that_was_asked_to_cancel_as_cancelled(workspace):
    store = RunStore()
    run = claimed_run(store)
    store.update(run.id, pid=2**22 + 12345, pid_started_at=1.0)  # no such process
    (run.directory / jobs.CANCEL_FLAG).touch()
    assert jobs.reconcile(store) == [run.id]
    ended = store.get(run.id)
    assert ended.status == "cancelled" and ended.error is None


def test_log_tail(workspace):
    store = RunStore()
    run = claimed_run(store)
    assert jobs.log_tail(run.id) == ""
    lines = [f"line {i}" for i in range(30)]
    (run.directory / jobs.LOG_FILE).write_text("\n".join(lines) + "\nbar 1\rbar 2\rbar 3\n")
    assert jobs.log_tail(run.id, 3).splitlines() == ["line 28", "line 29", "bar 3"]


@pytest.mark.parametrize("value, slots", [(None, 1), ("3", 3), ("0", 1), ("-2", 1), ("many", 1)])
def test_slots_per_device(monkeypatch, value, slots):
    if value is None:
        monkeypatch.delenv(jobs.SLOTS_ENV, raising=False)
    else:
        monkeypatch.setenv(jobs.SLOTS_ENV, value)
    assert jobs.slots_per_device() == slots


def test_dispatch_honours_the_slot_count(workspace, monkeypatch, stand_in):
    # Spawning is replaced here: this checks only how many runs dispatch claims per device.
    store = RunStore()
    for run_id in ("a", "b", "c"):
        store.create(run_id, name=run_id, task="t", model="m", dataset="d", device="cpu", config_yaml="")
        time.sleep(0.002)
    spawned = []
    monkeypatch.setattr(
        jobs,
        "_spawn",
        lambda run, store: (
            spawned.append(run.id) or store.update(run.id, pid=stand_in.pid, pid_started_at=stand_in.create_time())
        ),
    )
    monkeypatch.setenv(jobs.SLOTS_ENV, "2")
    assert [r.id for r in jobs.dispatch(store)] == ["a", "b"]
    assert spawned == ["a", "b"]
    assert jobs.dispatch(store) == []
    assert store.get("c").status == "queued"
