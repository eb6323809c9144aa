"""Runs of several processes: the queue's slot and GPU accounting (fast, with a fake device list), and two-process
data-parallel runs on the CPU (gloo) through torchrun, the job manager and the CLI (slow: real trainer processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import torch
from test_training import tiny_config

from core import jobs
from core.config import RunConfig
from core.distributed import ReadOnlyStore, cluster_command, launch_prefix, pick_gpus
from core.errors import UserError
from core.store import RunStore
from core.workspace import REPO_ROOT

# --- the queue: slots and GPUs --------------------------------------------------------------------------------------


def test_gpus_go_to_the_least_loaded_and_a_run_waits_for_enough_free_ones():
    assert pick_gpus([], 2, visible=4, per_gpu=1) == "0,1"
    assert pick_gpus(["0", "1"], 1, visible=2, per_gpu=1) is None  # both taken
    assert pick_gpus(["0"], 1, visible=2, per_gpu=1) == "1"
    assert pick_gpus(["0", "0,1"], 2, visible=3, per_gpu=2) == "1,2"  # GPU 0 holds two runs: full
    assert pick_gpus(["0", "0,1"], 3, visible=3, per_gpu=2) is None
    assert pick_gpus(["0", "1"], 2, visible=3, per_gpu=2) == "0,2"  # GPU 2 is empty, then the lower of the half-loaded


def queue(store: RunStore, run_id: str, device: str, slots: int) -> None:
    store.create(
        run_id, name=run_id, task="text_classification", model="m", dataset="d", device=device, config_yaml="", slots=slots
    )


def test_two_one_gpu_runs_share_a_two_gpu_machine_and_a_two_gpu_run_waits_for_both(workspace):
    from functools import partial

    store = RunStore()
    place = partial(pick_gpus, visible=2, per_gpu=1)
    for run_id, slots in (("a", 1), ("b", 1), ("c", 2)):
        queue(store, run_id, "cuda", slots)
        time.sleep(0.01)  # created_at orders the queue
    first, second = store.claim_next("cuda", 2, place), store.claim_next("cuda", 2, place)
    assert (first.id, first.gpus, second.id, second.gpus) == ("a", "0", "b", "1")
    assert store.claim_next("cuda", 2, place) is None  # "c" needs both
    store.update("a", status="completed")
    assert store.claim_next("cuda", 2, place) is None  # one is free, not two
    store.update("b", status="completed")
    assert store.claim_next("cuda", 2, place).gpus == "0,1"


def test_a_run_of_more_processes_than_slots_runs_alone_on_the_cpu(workspace):
    store = RunStore()
    queue(store, "small", "cpu", 1)
    time.sleep(0.01)
    queue(store, "wide", "cpu", 2)
    assert store.claim_next("cpu", 1).id == "small"
    assert store.claim_next("cpu", 1) is None  # it would share the CPU with "small"
    store.update("small", status="completed")
    claimed = store.claim_next("cpu", 1)
    assert (claimed.id, claimed.slots, claimed.gpus) == ("wide", 2, None)


def test_devices_zero_takes_every_gpu_and_too_many_is_a_sentence(monkeypatch):
    monkeypatch.setattr(jobs, "visible_gpus", lambda: 4)
    assert jobs.processes_of(RunConfig(devices=0), "cuda") == 4
    assert jobs.processes_of(RunConfig(devices=3), "cuda") == 3
    assert jobs.processes_of(RunConfig(devices=0), "cpu") == 1
    with pytest.raises(UserError, match="asks for 8 GPUs and 4 are visible here; set devices to 4 or fewer"):
        jobs.processes_of(RunConfig(devices=8), "cuda")
    assert "devices must be 0" in " ".join(RunConfig(devices=-1).validate())


def test_the_launch_is_torchrun_for_several_processes_and_a_scheduler_gets_the_same_worker():
    assert launch_prefix(1) == []
    assert launch_prefix(4) == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    command = cluster_command("run-1", nodes=3, per_node=8)
    assert command.startswith("torchrun --nnodes=3 --nproc_per_node=8 --rdzv-backend=c10d")
    assert command.endswith("--rdzv-endpoint=$HEAD_NODE:29500 --rdzv-id=run-1 -m core worker run-1")


def test_ranks_other_than_zero_read_the_store_and_write_nothing(workspace):
    store = RunStore()
    queue(store, "r", "cpu", 2)
    quiet = ReadOnlyStore(store)
    quiet.update("r", status="running")
    quiet.log_metrics("r", 1, {"loss": 1.0})
    assert quiet.get("r").status == "queued" and store.metrics("r").empty


def test_a_gpu_run_gets_the_fast_settings_and_a_cpu_run_keeps_its_cores():
    from core.trainer import device_settings

    gpu = device_settings(RunConfig(batch_size=16, compile=True), "cuda")
    assert gpu["optim"] == "adamw_torch_fused" and gpu["dataloader_pin_memory"] and gpu["dataloader_num_workers"] == 2
    assert gpu["per_device_eval_batch_size"] == 64 and gpu["torch_compile"]
    cpu = device_settings(RunConfig(batch_size=16), "cpu")
    assert cpu == {"per_device_eval_batch_size": 32, "dataloader_num_workers": 0, "torch_compile": False}


def test_the_train_page_asks_how_many_processes_and_says_what_the_global_batch_is(workspace):
    from test_pages import open_page

    app = open_page("pages/views/train.py")
    app.number_input(key="train_devices").set_value(2)
    app.number_input(key="train_grad_accum").set_value(2).run()
    assert not app.error, [error.value for error in app.error]
    assert any("Data-parallel over 2 processes" in c.value and "16 × processes × 2" in c.value for c in app.caption)
    app.number_input(key="train_scheduler_nodes").set_value(3)
    app.number_input(key="train_scheduler_per_node").set_value(2).run()
    script = next(block.value for block in app.code if "#SBATCH" in block.value)
    assert "#SBATCH --nodes=3" in script and "srun torchrun --nnodes=3 --nproc_per_node=2" in script


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here: the CUDA path runs where a GPU is")
def test_a_cuda_run_trains_in_bf16_with_fused_adamw_and_sdpa(tiny_bert, workspace):
    store = RunStore()
    run = jobs.wait(jobs.submit(tiny_config(tiny_bert, device="cuda", epochs=1), store).id, store, timeout=600)
    assert run.status == "completed", run.error
    summary = json.loads((run.directory / "summary.json").read_text())
    assert summary["optimizer"] == "adamw_torch_fused" and summary["attention"] == "sdpa"
    assert summary["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


# --- two processes on the CPU, for real --------------------------------------------------------------------------


@pytest.fixture
def two_process_config(tiny_bert, tmp_path) -> RunConfig:
    return tiny_config(tiny_bert, devices=2, epochs=4)


def test_a_two_process_run_from_the_cli_trains_on_both_ranks_and_writes_once(two_process_config, workspace, tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(two_process_config.to_yaml(), encoding="utf-8")
    finished = subprocess.run(
        [sys.executable, "-m", "core", "train", str(config_file)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    (run,) = RunStore().list()
    assert run.status == "completed" and run.slots == 2
    assert "Training with 2 processes" in finished.stdout
    # Each process takes batches of 16: 240 training rows make 8 global steps of 32 an epoch.
    assert run.max_steps == run.step == 4 * 8
    summary = json.loads((run.directory / "summary.json").read_text())
    assert (summary["processes"], summary["global_batch"]) == (2, 32)
    metrics = RunStore().metrics(run.id)
    assert not metrics.duplicated(["name", "step"]).any()
    assert len(metrics[metrics["name"] == "eval_loss"]) == len({0, 10, 20, 30, 32})
    assert finished.stdout.count("Test after training") == 1  # one log line per event, not one per rank
    # transformers 5 already picks the fused AdamW on the CPU.
    assert summary["attention"] in ("sdpa", "eager") and summary["optimizer"] == "adamw_torch_fused"
    from test_pages import open_page

    runs_page = open_page("pages/views/runs.py")
    runs_page.multiselect(key="runs_selection").set_value([run.id]).run()
    assert any(
        "over 2 processes (world size 2): each takes batches of 16; one update sees 32" in c.value for c in runs_page.caption
    )
    # The saved model is the one rank 0 trained: it predicts what the stored test predictions say.
    from core.stages import open_stage, split_rows

    rows, names = split_rows(run, "test")
    logits = open_stage(run, "after").predict(rows)
    stored = pd.read_parquet(run.directory / "predictions" / "test_after.parquet")
    assert [names[index] for index in logits.argmax(1)] == stored["predicted"].tolist()
    assert stored["correct"].mean() > 0.6  # it learned (chance is 0.5)


def test_cancel_stops_both_ranks_and_resume_continues_at_the_same_world_size(two_process_config, workspace):
    store = RunStore()
    run = jobs.submit(tiny_config(two_process_config.model, devices=2, epochs=40, eval_steps=20), store)
    deadline = time.time() + 300
    while (running := store.get(run.id)).step < 25:
        assert time.time() < deadline and running.status in ("queued", "running"), jobs.log_tail(run.id, 20)
        time.sleep(0.2)
    ranks = psutil.Process(running.pid).children()
    assert len(ranks) == 2 and all(rank.cmdline()[-3:] == ["core", "worker", run.id] for rank in ranks)
    jobs.cancel(run.id, store)
    cancelled = jobs.wait(run.id, store, timeout=120)
    assert cancelled.status == "cancelled", cancelled.error
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive  # no rank outlives the run
    saved = sorted(int(folder.name.split("-")[1]) for folder in (cancelled.directory / "checkpoints").glob("checkpoint-*"))
    assert saved and saved[-1] > 20 and saved[-1] % 20  # the checkpoint written at the cancel, off the save grid

    jobs.resume(run.id, store)
    resumed = jobs.wait(run.id, store, timeout=600)
    assert resumed.status == "completed" and resumed.step == resumed.max_steps == 40 * 8
    log = jobs.log_tail(run.id, 400)
    assert "Training with 2 processes" in log and f"Resuming from checkpoint-{saved[-1]}" in log


# --- a cluster's own scheduler ------------------------------------------------------------------------------------


def test_the_slurm_script_records_the_run_once_and_starts_its_worker_on_every_node():
    from core.scheduler_runs import slurm_script

    script = slurm_script("run.yaml", nodes=4, per_node=8, workspace="/nfs/workbench")
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    assert "export WORKBENCH_WORKSPACE=/nfs/workbench" in script
    assert "RUN_ID=$(python -m core train run.yaml --external)" in script
    assert script.rstrip().endswith(
        "srun torchrun --nnodes=4 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=$HEAD_NODE:29500 "
        "--rdzv-id=$RUN_ID -m core worker $RUN_ID"
    )


def test_a_scheduler_run_is_never_started_here_and_is_lost_only_after_a_long_silence(workspace, tiny_bert):
    from core.scheduler_runs import SILENCE_SECONDS

    store = RunStore()
    run = jobs.submit(tiny_config(tiny_bert, devices=2), store, external=True)
    assert (run.status, run.device, run.slots) == ("queued", "scheduler:cpu", 2)
    jobs.dispatch(store)
    assert store.get(run.id).status == "queued"  # this machine's queue leaves it to the scheduler
    started = time.time() - 3 * SILENCE_SECONDS
    store.update(run.id, status="running", started_at=started, heartbeat_at=time.time() - SILENCE_SECONDS / 2)
    assert jobs.reconcile(store) == [] and store.get(run.id).status == "running"  # no local pid, and that is fine
    store.update(run.id, heartbeat_at=time.time() - 2 * SILENCE_SECONDS)
    assert jobs.reconcile(store) == [run.id]
    assert "its scheduler's job showed no sign of life for 15 min" in store.get(run.id).error


def test_a_run_recorded_for_a_scheduler_trains_when_torchrun_starts_its_worker(two_process_config, workspace, tmp_path):
    """What a SLURM job does on its one node: record the run, then torchrun with a c10d rendezvous."""
    from tests.browser.harness import free_port

    config_file = tmp_path / "run.yaml"
    config_file.write_text(two_process_config.to_yaml(), encoding="utf-8")
    recorded = subprocess.run(
        [sys.executable, "-m", "core", "train", str(config_file), "--external"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert recorded.returncode == 0, recorded.stderr
    run_id = recorded.stdout.strip()
    assert f"--rdzv-id={run_id} -m core worker {run_id}" in recorded.stderr
    assert RunStore().get(run_id).status == "queued"
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}", f"--rdzv-id={run_id}", "-m", "core", "worker", run_id,
    ]  # fmt: skip
    trained = subprocess.run(launch, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    run = RunStore().get(run_id)
    assert run.status == "completed" and run.step == run.max_steps == 4 * 8 and run.pid is None
    assert (run.directory / "model" / "config.json").is_file()
    assert not RunStore().metrics(run_id).duplicated(["name", "step"]).any()
