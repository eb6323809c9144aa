"""A second backend: runs trained by Ray Train on a Ray cluster instead of this machine's queue.

When `WORKBENCH_RAY_ADDRESS` is set, `core.jobs.submit` hands each run to Ray. A run of `devices: N` trains with Ray
Train's `TorchTrainer` on N workers (one GPU each on cuda, one CPU each on the CPU), and every worker runs the same
`core.trainer.train` a local trainer process runs (`core.ray_worker.train_loop`): Ray Train sets up torch.distributed
and the RANK / WORLD_SIZE / LOCAL_RANK variables that Hugging Face `Trainer` and `core.distributed` read, so the run is
plain DDP with rank 0 writing, as under torchrun. `devices` is reused rather than a new `workers` field: it already
means "how many processes train this run", so one config trains the same way on either backend, and which backend
runs it is the machine's choice (the variable), not the config's.

The addresses: `auto` is the cluster this machine joined with `ray start` (as head, or with `--address HEAD:6379`);
`HOST:PORT` names a cluster's head, of which this machine must also be a node; `local` starts a Ray inside this
process, for one machine (the app, or a CLI that follows its run): its runs stop when this process exits, so start Ray
with `ray start --head` and use auto for runs that outlive it. A Ray Client address (`ray://`) is refused: see below.

How it is built, and why:
- Queue. Each run gets one small actor, its driver (`core.ray_worker.RunDriver`: no CPU, detached so that it outlives
  the process that submitted it), which calls `TorchTrainer.fit()`. Ray Train asks for one placement group of N
  workers and Ray's scheduler holds it until the cluster has room, so runs from several users wait in Ray, not in the
  run store's queue (`core.jobs` never claims a run whose device is `ray:…`). The run still has its row: queued until
  its rank 0 starts training, then running, then its ending, so the pages list it like any other.
- Metrics, live. Rank 0 writes to the run store through its driver: each store call is a method call on the driver
  actor, which is pinned to the node that submitted the run — this machine — and writes the SQLite file there.
  Not rank 0 straight into the store on a shared folder: SQLite's WAL mode is safe only between processes of one
  machine, never across machines over NFS. One call per logged step and at most one progress update a second, as
  locally; other ranks read through the driver and write nothing (`core.distributed.ReadOnlyStore`).
- Files. Checkpoints, reports, predictions, model folders and the log go into the run directory as they do locally,
  so the workspace must be one folder at the same path on every node, readable and writable by all (NFS or the like);
  Ray Train's own `storage_path` is there too (`runs/<id>/ray`). The checkout and its Python environment must also be
  at the same path on every node: the workers import `core` from it (PYTHONPATH), and start in it as a local trainer
  does, so relative paths in a config mean the same thing.
- Liveness without Ray. The driver writes its pid into the run directory (`ray_driver.json`, with the actor's name
  and the cluster's address), and readers judge it as they judge a local trainer process (`core.jobs.process_alive`):
  the supervisor reconciles every second and must not wait on a cluster that may be down. A run whose driver is gone
  ends failed with a sentence (or cancelled, when a cancel was asked for).
- Cancel. The CANCEL flag in the (shared) run directory, as locally: every rank sees it at its next step's end and all
  stop together, saving a checkpoint. A rank that has not stopped a minute after the flag ends its own process, which
  Ray Train takes for a failed worker: it tears the worker group down and frees its placement group, and the driver
  records the run cancelled. Not `ray.kill` or `ray.cancel` of the driver: Ray Train frees a dead controller's placement
  group only through Ray's state API, which needs the dashboard, so without one the killed run's CPUs or GPUs stayed
  reserved and the next queued run never started (seen here). A run cancelled while it waits in Ray's queue is
  cancelled in the store at once; when Ray gives it workers, they see that and end without training.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig
from core.errors import UserError
from core.store import Run, RunStore
from core.workspace import REPO_ROOT, WORKSPACE_ENV, workspace_root

ADDRESS_ENV = "WORKBENCH_RAY_ADDRESS"
LOCAL = "local"
INSTALL = 'pip install "ray[train]==2.60.0"'
# A Ray run's device: this prefix and the device its workers train on ("ray:cpu", "ray:cuda").
DEVICE_PREFIX = "ray:"
DRIVER_FILE = "ray_driver.json"
NAMESPACE = "workbench"
# How long Ray may take to start a run's driver (a new worker process, its environment) before the run is failed.
DRIVER_START_SECONDS = 60.0
# Variables the trainer reads, passed on to the driver and the workers (which a cluster started with `ray start`
# elsewhere would not have): the workbench's own, and Hugging Face's (HF_HUB_OFFLINE, HF_HOME, ...).
FORWARDED_PREFIXES = ("WORKBENCH_", "HF_")
# The module the driver and the worker loop live in. Named, not imported: it imports core.trainer, which imports
# core.jobs, which imports this module; the driver runs in another process anyway, as `python -m core worker` does.
WORKER_MODULE = "core.ray_worker"
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Driver:
    """What `ray_driver.json` says about the Ray actor that drives a run (its pid once it has started)."""

    actor: str
    address: str
    handed_at: float
    pid: int | None = None
    ticks: int | None = None


def address_setting() -> str | None:
    """The Ray address the workbench submits to, or None to train on this machine; a sentence for one it cannot use."""
    address = os.environ.get(ADDRESS_ENV, "").strip()
    if address.startswith("ray://"):
        raise UserError(
            f"{ADDRESS_ENV} is a Ray Client address ({address}), and the workbench must run on a node of the cluster: its "
            "run store is an SQLite file that only processes on this machine may write. Run `ray start --address "
            f"HEAD:6379` here, then set {ADDRESS_ENV}=auto."
        )
    return address or None


def enabled() -> bool:
    return address_setting() is not None


def is_ray_run(run: Run) -> bool:
    return run.device.startswith(DEVICE_PREFIX)


def plain_device(run: Run) -> str:
    """The device a Ray run's workers train on (what `core.trainer` expects in `run.device`)."""
    return run.device.removeprefix(DEVICE_PREFIX)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            f"{ADDRESS_ENV} is set, but Ray is not installed here; run `{INSTALL}`, or unset {ADDRESS_ENV} to train on "
            "this machine."
        ) from None
    return ray


def connect() -> str:
    """Connect this process to the cluster the setting names (once per process); returns the cluster's GCS address."""
    ray = import_ray()
    if not ray.is_initialized():
        address = address_setting()
        if address is None:
            raise UserError(f"This run trains on a Ray cluster; set {ADDRESS_ENV} (for example to auto) to reach it.")
        try:
            # The workers' output goes into each run's log, not into this process (the app or the CLI).
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(
                f"Could not connect to the Ray cluster at {address} ({error}). Start it with `ray start --head` (and `ray "
                f"start --address HEAD:6379` on the other machines), or set {ADDRESS_ENV}=local to start a Ray inside "
                "this process, for this machine alone."
            ) from None
    return ray.get_runtime_context().gcs_address


def placement(config: RunConfig) -> tuple[str, int]:
    """The Ray device a run joins and its number of workers, from what the cluster has; a sentence when it cannot fit."""
    connect()
    ray = import_ray()
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    device = config.device if config.device != "auto" else ("cuda" if gpus else "cpu")
    if device == "cuda" and not gpus:
        raise UserError("This run asks for cuda, but the Ray cluster has no GPU; choose device auto or cpu.")
    if device == "cpu" and config.precision == "fp16":
        raise UserError("fp16 needs a GPU and this run will train on the cluster's CPUs; choose precision fp32 or auto.")
    workers = (config.devices or gpus) if device == "cuda" else max(1, config.devices)
    have, unit = (gpus, "GPU") if device == "cuda" else (cpus, "CPU")
    if workers > have:
        raise UserError(
            f"This run asks for {workers} Ray workers with a {unit} each, and the Ray cluster has {have} {unit}s in all; "
            f"set devices to {have} or fewer, or add machines to the cluster (`ray start --address HEAD:6379` on each)."
        )
    return DEVICE_PREFIX + device, workers


def hand_over(run: Run, store: RunStore) -> None:
    """Start a queued run's driver in Ray, where the run waits for its workers; a driver that cannot start fails the
    run with the reason (raised too)."""
    from core.supervisor_start import ensure_supervisor

    try:
        driver = Driver(actor=f"run-{run.id}-{secrets.token_hex(3)}", address=connect(), handed_at=time.time())
        write_driver(run.directory, driver)
        importlib.import_module(WORKER_MODULE).start_driver(run, driver, runtime_env())
    except UserError as problem:
        store.transition(run.id, ("queued",), status="failed", error=str(problem), finished_at=time.time())
        raise
    # The supervisor reconciles every second, so a run whose driver dies is marked even when nobody is looking.
    ensure_supervisor()


def runtime_env() -> dict:
    """What the driver and its workers run with: this checkout on the import path, this workspace, and the variables
    the trainer reads."""
    variables = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_PREFIXES)}
    variables[WORKSPACE_ENV] = str(workspace_root())
    variables["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # Ray Train replaces `print` in its workers by one that also logs each line: every log line came twice, and output
    # that libraries capture (dill's disassembly while datasets hashes a function) leaked into the log.
    variables["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    return {"env_vars": variables}


def reconcile(
    store: RunStore,
    now: float,
    alive: Callable[[int | None, int | None], bool],
    ending: Callable[[Run, float, str], dict],
) -> list[str]:
    """End the Ray runs (queued or running) whose driver is gone, as `ending` (the job manager's verdict on a lost
    trainer, given the cause) says; returns their ids. `alive(pid, ticks)` is the job manager's process check."""
    lost = []
    for run in store.list(ACTIVE):
        cause = driver_lost(run, now, alive) if is_ray_run(run) else None
        if cause is None:
            continue
        fresh = store.get(run.id)  # the driver may have recorded the ending between the list and the check
        if fresh is not None and fresh.status in ACTIVE and store.transition(run.id, ACTIVE, **ending(fresh, now, cause)):
            lost.append(run.id)
    return lost


def driver_lost(run: Run, now: float, alive: Callable[[int | None, int | None], bool]) -> str | None:
    """Why a Ray run's driver is gone, or None while it lives, is starting, or the run is not handed to Ray yet (the
    process handing it over records its own failure)."""
    driver = read_driver(run.directory)
    if driver is None:
        return None
    if driver.pid is None:
        if now - driver.handed_at < DRIVER_START_SECONDS:
            return None
        return f"Ray did not start its driver within {DRIVER_START_SECONDS:.0f} s of the hand-over"
    if alive(driver.pid, driver.ticks):
        return None
    return (
        "its Ray driver process on this machine is gone: it was killed, Ray was stopped, or the process that started a "
        "local Ray exited"
    )


def write_driver(directory: Path, driver: Driver) -> None:
    path = directory / DRIVER_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(dataclasses.asdict(driver)), encoding="utf-8")
    os.replace(temporary, path)


def read_driver(directory: Path) -> Driver | None:
    try:
        return Driver(**json.loads((directory / DRIVER_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
