"""RunStore: runs table (create/get/list, conditional transitions, claiming a slot) and long-form metrics."""

import re
import time

import pytest

from core.store import FINISHED, STATUSES, Run, RunStore, new_run_id, run_directory


@pytest.fixture
def store(workspace):
    return RunStore()


def make(store: RunStore, run_id: str, device: str = "cpu", name: str | None = None) -> Run:
    return store.create(
        run_id,
        name=name or f"run {run_id}",
        task="text_classification",
        model="m",
        dataset="d",
        device=device,
        config_yaml="name: x\n",
    )


def test_store_lives_in_the_workspace(workspace, store):
    assert store.path == workspace / "runs.db"
    assert store.path.exists()
    # Opening it again keeps what is there.
    make(store, "a")
    assert RunStore().get("a") is not None


def test_create_get_and_list(store):
    before = time.time()
    run = make(store, "a", name="first")
    assert run.id == "a" and run.name == "first" and run.status == "queued"
    assert before <= run.created_at <= time.time()
    assert run.pid is None and run.started_at is None and run.finished_at is None
    assert run.step == 0 and run.max_steps == 0 and run.resume == 0
    assert run.config == "name: x\n"
    assert not run.finished
    assert store.get("missing") is None
    make(store, "b")
    make(store, "c")
    assert [r.id for r in store.list()] == ["c", "b", "a"]  # newest first
    store.update("b", status="completed")
    assert [r.id for r in store.list(("queued",))] == ["c", "a"]
    assert [r.id for r in store.list(FINISHED)] == ["b"]
    assert store.get("b").finished


def test_update_and_delete(store):
    make(store, "a")
    store.update("a")  # nothing to change is fine
    store.update("a", step=5, max_steps=10, error="oops")
    run = store.get("a")
    assert (run.step, run.max_steps, run.error) == (5, 10, "oops")
    store.log_metrics("a", 1, {"train_loss": 1.0})
    store.delete("a")
    assert store.get("a") is None
    assert store.metrics("a").empty


def test_transition_only_from_expected_statuses(store):
    make(store, "a")
    assert store.transition("a", ("running",), status="completed") is False
    assert store.get("a").status == "queued"
    assert store.transition("a", ("queued", "failed"), status="running", pid=123) is True
    run = store.get("a")
    assert run.status == "running" and run.pid == 123
    # The loser of a race sees False and changes nothing.
    assert store.transition("a", ("queued",), status="cancelled", error="late") is False
    assert store.get("a").status == "running" and store.get("a").error is None
    assert store.transition("missing", ("queued",), status="running") is False


def test_claim_next_respects_slots_fifo_and_device(store):
    for run_id in ("first", "second", "third"):
        make(store, run_id)
        time.sleep(0.002)  # distinct creation times
    make(store, "gpu-job", device="cuda")
    assert sorted(store.queued_devices()) == ["cpu", "cuda"]

    claimed = store.claim_next("cpu", slots=1)
    assert claimed.id == "first" and claimed.status == "running"
    assert claimed.started_at is not None and claimed.pid is None
    assert store.claim_next("cpu", slots=1) is None  # the only slot is taken
    assert store.get("second").status == "queued"

    second = store.claim_next("cpu", slots=2)
    assert second.id == "second"
    assert store.claim_next("cpu", slots=2) is None

    # Another device has its own slots.
    assert store.claim_next("cuda", slots=1).id == "gpu-job"

    store.transition("first", ("running",), status="completed")
    assert store.claim_next("cpu", slots=2).id == "third"
    assert store.claim_next("cpu", slots=5) is None  # nothing left queued
    assert store.queued_devices() == []


def test_claim_next_takes_the_oldest_even_when_listed_out_of_order(store):
    make(store, "zzz-old")
    time.sleep(0.002)
    make(store, "aaa-new")
    assert store.claim_next("cpu", slots=1).id == "zzz-old"


def test_claim_clears_the_previous_attempt(store):
    make(store, "a")
    store.update("a", status="queued", pid=99, error="old error", finished_at=1.0)
    run = store.claim_next("cpu", 1)
    assert run.pid is None and run.error is None and run.finished_at is None


def test_metrics_long_frame(store):
    make(store, "a")
    make(store, "b")
    store.log_metrics("a", 0, {"eval_loss": 0.7, "eval_accuracy": 0.5})
    store.log_metrics("a", 10, {"train_loss": 0.6, "eval_loss": 0.4})
    store.log_metrics("b", 5, {"train_loss": 2})
    frame = store.metrics("a")
    assert list(frame.columns) == ["run_id", "step", "name", "value", "recorded_at"]
    assert len(frame) == 4
    assert set(frame["run_id"]) == {"a"}
    loss = frame[frame["name"] == "eval_loss"]
    assert loss["step"].tolist() == [0, 10]
    assert loss["value"].tolist() == pytest.approx([0.7, 0.4])
    both = store.metrics(["a", "b"])
    assert len(both) == 5
    b_loss = both[(both["run_id"] == "b") & (both["name"] == "train_loss")]
    assert b_loss["value"].tolist() == [2.0] and isinstance(b_loss["value"].iloc[0], float)
    empty = store.metrics([])
    assert empty.empty and list(empty.columns) == ["run_id", "step", "name", "value", "recorded_at"]


def test_forget_metrics_after_drops_only_later_steps_of_that_run(store):
    make(store, "a")
    make(store, "b")
    for step in (0, 5, 10, 15):
        store.log_metrics("a", step, {"train_loss": step / 10})
        store.log_metrics("b", step, {"train_loss": step / 10})
    store.forget_metrics_after("a", 10)
    assert store.metrics("a")["step"].tolist() == [0, 5, 10]
    assert store.metrics("b")["step"].tolist() == [0, 5, 10, 15]
    store.forget_metrics_after("a", -1)
    assert store.metrics("a").empty


def run_with(**values) -> Run:
    base = {
        "id": "r",
        "name": "n",
        "task": "t",
        "model": "m",
        "dataset": "d",
        "device": "cpu",
        "status": "running",
        "created_at": 0.0,
        "started_at": 0.0,
        "finished_at": None,
        "pid": None,
        "pid_started_at": None,
        "step": 0,
        "max_steps": 0,
        "train_started_at": None,
        "train_start_step": 0,
        "progress_at": None,
        "error": None,
        "resume": 0,
        "config": "",
    }
    base.update(values)
    return Run(**base)


def test_progress_fraction():
    assert run_with(step=0, max_steps=0).progress == 0.0
    assert run_with(step=25, max_steps=100).progress == 0.25
    assert run_with(step=120, max_steps=100).progress == 1.0


def test_eta_from_pace_since_this_start():
    # 20 steps (10 -> 30) took 10 s: 0.5 s a step, 80 steps left.
    run = run_with(step=30, max_steps=110, train_started_at=100.0, train_start_step=10, progress_at=110.0)
    assert run.eta_seconds(now=110.0) == pytest.approx(40.0)
    assert run.seconds_per_step() == pytest.approx(0.5)
    # No step for 20 s more: the pace so far is 1.5 s a step, and the ETA grows instead of freezing.
    assert run.eta_seconds(now=130.0) == pytest.approx(120.0)
    # Without a progress time, the caller's clock counts.
    run = run_with(step=30, max_steps=110, train_started_at=100.0, train_start_step=10, progress_at=None)
    assert run.eta_seconds(now=120.0) == pytest.approx(80.0)


@pytest.mark.parametrize(
    "values",
    [
        {"status": "queued"},
        {"status": "completed"},
        {"train_started_at": None},
        {"max_steps": 0},
        {"step": 10},  # no step done since this (re)start
    ],
)
def test_eta_unknown(values):
    base = {"step": 30, "max_steps": 110, "train_started_at": 100.0, "train_start_step": 10, "progress_at": 110.0}
    base.update(values)
    assert run_with(**base).eta_seconds() is None


def test_run_directory_and_ids(workspace):
    assert run_directory("abc") == workspace / "runs" / "abc"
    assert run_with(id="xyz").directory == workspace / "runs" / "xyz"
    # A sortable timestamp first, so a directory listing is in creation order.
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", new_run_id())
    assert set(STATUSES) >= set(FINISHED)
