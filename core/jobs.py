"""The job manager: queue runs, start each trainer as its own OS process, cancel, resume, reconcile.

Nothing here holds state in memory that matters: every decision reads the run store, so the
Streamlit server can restart, or two tabs can act at once, without losing or doubling a job.
A trainer process is started in a new session (it survives the server), writes its own status
when it ends, and starts the next queued job on its device. `reconcile()` catches the trainer
that could not report: a process that is gone while its run still says "running" is marked
failed, with its last log lines as the reason, and the queue moves on. The workspace's
supervisor (`core.supervisor`) calls it every second while anything is queued or running, so a
lost trainer is found even when no page or CLI is looking.

A trainer is identified by its pid plus its start in clock ticks since boot, which no wall-clock
jump (a suspended VM, an NTP step) changes; the wall-clock start time is kept for display.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from core import ray_backend, scheduler_runs
from core.config import RunConfig
from core.errors import UserError
from core.store import FINISHED, LOST_REASON, Run, RunStore, new_run_id, run_directory
from core.supervisor_start import ensure_supervisor
from core.workspace import REPO_ROOT, WORKSPACE_ENV, workspace_root

SLOTS_ENV = "WORKBENCH_JOBS_PER_DEVICE"
CANCEL_FLAG = "CANCEL"
# Beside the cancel flag when a sweep's driver stops a trial early: it holds the reason, and the run ends "pruned".
PRUNE_FILE = "PRUNED"
LOG_FILE = "train.log"
# The ending a trainer writes into its run directory before it tells the store (see `read_ending`).
ENDING_FILE = "ending.json"
# A claimed run gets this long to report its pid before it is presumed lost.
START_GRACE_SECONDS = 60
# A trainer is stalled after this many seconds without a sign of life, or this many of its own step
# times, whichever is longer (evaluations and saves beat too, so slow phases are not stalls).
STALL_MIN_SECONDS = 60.0
STALL_STEP_TIMES = 20


def slots_per_device() -> int:
    try:
        return max(1, int(os.environ.get(SLOTS_ENV, "1")))
    except ValueError:
        return 1


def visible_gpus() -> int:
    """How many GPUs this machine shows (the cuda queue's devices)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def processes_of(config: RunConfig, device: str) -> int:
    """How many processes train the run: its `devices`, where 0 means every visible GPU (one process on the CPU); a
    sentence when it asks for more GPUs than the machine has."""
    if device != "cuda":
        return max(1, config.devices)
    visible = visible_gpus()
    if config.devices > visible:
        raise UserError(
            f"This run asks for {config.devices} GPUs and {visible} are visible here; set devices to {visible} or fewer "
            "(0 takes every visible GPU), or run it on a machine with more."
        )
    return config.devices or visible


def resolve_device(requested: str) -> str:
    """The queue a run joins: 'auto' becomes cuda when a GPU is visible, else cpu."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def submit(
    config: RunConfig,
    store: RunStore | None = None,
    *,
    preflight: bool = True,
    sweep_id: str | None = None,
    trial: int | None = None,
    external: bool = False,
) -> Run:
    """Validate, record and queue a run (a sweep's trial when `sweep_id` is given); start it at once if its
    device is free, or hand it to the Ray cluster when WORKBENCH_RAY_ADDRESS is set (`core.ray_backend`). An
    `external` run is only recorded: another scheduler starts its worker (`core.scheduler_runs`). Returns quickly."""
    store = store or RunStore()
    config.raise_if_invalid()
    on_ray = ray_backend.enabled() and not external
    if external:
        device, processes = scheduler_runs.scheduler_device(config.device), max(1, config.devices)
    else:
        device, processes = ray_backend.placement(config) if on_ray else local_placement(config)
    if preflight:
        from core.tasks import TASKS

        TASKS[config.task].preflight(config)
    run_id = new_run_id()
    directory = run_directory(run_id)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    store.create(
        run_id,
        name=config.name,
        task=config.task,
        model=config.model,
        dataset=config.dataset,
        device=device,
        config_yaml=config.to_yaml(),
        sweep_id=sweep_id,
        trial=trial,
        slots=processes,
    )
    if on_ray:
        ray_backend.hand_over(store.get(run_id), store)
    elif not external:
        dispatch(store)
    return store.get(run_id)


def local_placement(config: RunConfig) -> tuple[str, int]:
    """The queue a run joins on this machine and how many processes train it; a sentence when it cannot train here."""
    device = resolve_device(config.device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("This run asks for cuda, but no GPU is visible here; choose device auto or cpu.")
    if device == "cpu" and config.precision == "fp16":
        # validate() catches device cpu; device auto lands here on a machine without a GPU.
        raise UserError("fp16 needs a GPU and this run will train on the CPU; choose precision fp32 or auto.")
    return device, processes_of(config, device)


def dispatch(store: RunStore | None = None) -> list[Run]:
    """Start queued runs on every device that has a free slot; returns the runs started."""
    store = store or RunStore()
    reconcile(store, start_queued=False)
    return _start_queued(store)


def _start_queued(store: RunStore) -> list[Run]:
    from functools import partial

    from core.distributed import pick_gpus

    started = []
    for device in store.queued_devices():
        if device.startswith((ray_backend.DEVICE_PREFIX, scheduler_runs.DEVICE_PREFIX)):
            continue  # Ray's scheduler, or the user's, starts these (`core.ray_backend`, `core.scheduler_runs`)
        capacity, place = slots_per_device(), None
        if device == "cuda":
            # Each GPU takes `slots_per_device` runs' processes; a run is placed on the least loaded GPUs.
            gpus = visible_gpus()
            capacity, place = gpus * slots_per_device(), partial(pick_gpus, visible=gpus, per_gpu=slots_per_device())
        while (run := store.claim_next(device, capacity, place)) is not None:
            _spawn(run, store)
            started.append(run)
    return started


def _spawn(run: Run, store: RunStore) -> None:
    from core.allocator import allocator_environment
    from core.distributed import launch_prefix

    environment = {"CUDA_VISIBLE_DEVICES": run.gpus} if run.gpus else {}
    environment.update(allocator_environment(run.device))
    process = start_detached(["worker", run.id], run.directory / LOG_FILE, launch_prefix(run.slots or 1), environment)
    store.update(
        run.id,
        pid=process.pid,
        pid_started_at=_process_start_time(process.pid),
        pid_ticks=process_start_ticks(process.pid),
    )
    ensure_supervisor()


def start_detached(
    command: list[str], log_path: Path, prefix: list[str] | None = None, environment: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start `python [PREFIX…] -m core COMMAND…` in its own session (it outlives the server), logging to `log_path`;
    the prefix is torchrun's arguments for a run of several processes, which then share that session's group."""
    from core.distributed import python_launch

    env = {**os.environ, **(environment or {})}
    env[WORKSPACE_ENV] = str(workspace_root())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    log = open(log_path, "ab")
    process = subprocess.Popen(
        python_launch(prefix or [], command),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,
    )
    log.close()
    # Reap the child when it exits so it does not linger as a zombie under a long-lived server.
    threading.Thread(target=process.wait, daemon=True).start()
    return process


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux /proc); None where that is not known.

    Unlike a wall-clock start time (psutil's create_time is boot time + ticks, and the boot time is
    re-derived from the wall clock), this does not move when the clock jumps.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def is_alive(run: Run) -> bool:
    """True while the run's trainer process exists (and is the same process, not a reused pid)."""
    return process_alive(run.pid, run.pid_ticks, run.pid_started_at)


def process_alive(pid: int | None, ticks: int | None, started_at: float | None = None) -> bool:
    """True while the process started as `pid` at `ticks` (clock ticks since boot) exists and is not a reused pid."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    if ticks is not None:
        now = process_start_ticks(pid)
        return now is None or now == ticks
    # Stores written before ticks were recorded: the wall-clock start, with room for clock jumps of
    # up to a few minutes (a reused pid is new and differs by far more on any machine that ran long).
    try:
        return not started_at or abs(process.create_time() - started_at) <= 600.0
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Stall:
    """A running trainer that shows no sign of life."""

    seconds: float  # since its last sign of life
    reason: str

    def sentence(self) -> str:
        return f"Stalled: no step for {_plain_duration(self.seconds)} ({self.reason}). Cancel it, or wait if you know why."


def stall_of(run: Run, now: float | None = None) -> Stall | None:
    """Whether a running run's trainer has stopped making progress, judged by its own pace."""
    if run.status != "running" or run.pid is None:
        return None
    now = now or time.time()
    beats = [moment for moment in (run.heartbeat_at, run.progress_at) if moment]
    last = max(beats) if beats else (run.train_started_at or run.started_at or now)
    silent = max(0.0, now - last)
    try:
        if is_alive(run) and psutil.Process(run.pid).status() == psutil.STATUS_STOPPED:
            return Stall(silent, "the trainer process is suspended (SIGSTOP or a debugger); send it SIGCONT to go on")
    except psutil.Error:
        return None
    if not run.train_started_at:
        return None  # preparing: downloads and conversions have no steps to judge by
    pace = run.seconds_per_step() or 0.0
    if silent > max(STALL_MIN_SECONDS, STALL_STEP_TIMES * pace):
        return Stall(silent, f"a step usually takes {pace:.2g} s" if pace else "no step has finished yet")
    return None


def _plain_duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def write_ending(run_id: str, status: str, error: str | None, pid: int | None) -> None:
    """The trainer's ending, in its run directory first: it survives a store that cannot be written."""
    path = run_directory(run_id) / ENDING_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"status": status, "error": error, "pid": pid, "finished_at": time.time()}), encoding="utf-8")
    os.replace(temporary, path)


def stopped_ending(directory: Path) -> tuple[str, str | None]:
    """How a run that was asked to stop ends: pruned (with the driver's reason) or cancelled."""
    try:
        return "pruned", (directory / PRUNE_FILE).read_text(encoding="utf-8")
    except OSError:
        return "cancelled", None


def read_ending(run: Run) -> dict | None:
    """The ending this run's current trainer wrote, if it wrote one (an older attempt's does not count)."""
    try:
        ending = json.loads((run.directory / ENDING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ending if ending.get("pid") == run.pid and ending.get("status") in FINISHED else None


def reconcile(store: RunStore | None = None, *, start_queued: bool = True) -> list[str]:
    """Mark runs whose trainer vanished as failed, with the log's last lines (or as cancelled when a
    cancel was asked for, or as the trainer's own ending when it wrote one the store never got);
    then start what was queued behind them. Returns the ids marked."""
    store = store or RunStore()
    lost = []
    now = time.time()
    for run in store.list(("running",)):
        if ray_backend.is_ray_run(run):
            continue  # no trainer process here: judged by its Ray driver, below
        if scheduler_runs.is_scheduler_run(run):
            if scheduler_runs.silent_too_long(run, now):
                silence = f"its scheduler's job showed no sign of life for {scheduler_runs.SILENCE_SECONDS / 60:.0f} min"
                if store.transition(run.id, ("running",), **lost_ending(run, now, cause=silence)):
                    lost.append(run.id)
            continue
        if run.pid is None and now - (run.started_at or now) < START_GRACE_SECONDS:
            continue
        if is_alive(run):
            continue
        # Re-read: the trainer may have recorded its own ending between the list and this check.
        fresh = store.get(run.id)
        if fresh is None or fresh.status != "running":
            continue
        if store.transition(run.id, ("running",), **lost_ending(fresh, now)):
            lost.append(run.id)
    lost += ray_backend.reconcile(store, now, alive=process_alive, ending=lost_ending)
    if lost and start_queued:
        _start_queued(store)
    return lost


def lost_ending(run: Run, now: float, cause: str = "it was killed or crashed") -> dict:
    """The status and reason to record for a run whose trainer is gone (for `cause`)."""
    ending = read_ending(run)
    if ending:  # it ended on its own, but could not tell the store (read-only or full at the time)
        return {"status": ending["status"], "error": ending["error"], "finished_at": ending["finished_at"]}
    if (run.directory / CANCEL_FLAG).exists():
        # Asked to cancel, and gone: a SIGTERM that landed before the worker set its handler ends here.
        status, reason = stopped_ending(run.directory)
        return {"status": status, "error": reason, "finished_at": now}
    reason = f"{LOST_REASON} ({cause}). Resume continues from its last complete checkpoint."
    tail = log_tail(run.id, 5)
    if tail:
        reason += " Last log lines:\n" + tail
    return {"status": "failed", "error": reason, "finished_at": now}


def cancel(run_id: str, store: RunStore | None = None) -> Run:
    """Cancel a queued run at once; ask a running one to stop at its next step (it saves a checkpoint)."""
    store = store or RunStore()
    run = _existing(run_id, store)
    if run.status == "queued":
        store.transition(run_id, ("queued",), status="cancelled", finished_at=time.time())
    elif run.status == "running":
        (run.directory / CANCEL_FLAG).touch()
        if run.pid and is_alive(run):
            # The worker turns SIGTERM into the same polite stop as the flag; a suspended trainer
            # must be woken to act on it. One that still does not stop is killed by the supervisor.
            # torchrun (a run of several processes) would answer SIGTERM by killing its ranks mid-step: its ranks
            # see the flag and stop together at the next step instead.
            if (run.slots or 1) == 1:
                os.kill(run.pid, signal.SIGTERM)
                os.kill(run.pid, signal.SIGCONT)
            else:
                os.killpg(run.pid, signal.SIGCONT)
        reconcile(store)
    else:
        raise UserError(f"Run {run_id} is {run.status}; only queued or running runs can be cancelled.")
    return store.get(run_id)


def prune(run_id: str, reason: str, store: RunStore | None = None) -> Run:
    """Stop a sweep's trial early, as a cancel does (it saves a checkpoint); it ends "pruned", with the reason."""
    store = store or RunStore()
    run = _existing(run_id, store)
    (run.directory / PRUNE_FILE).write_text(reason, encoding="utf-8")
    return cancel(run_id, store)


RESUMABLE = ("failed", "cancelled", "pruned")


def resume(run_id: str, store: RunStore | None = None) -> Run:
    """Queue a failed, cancelled or pruned run again; it continues from its last checkpoint if it has one."""
    store = store or RunStore()
    run = _existing(run_id, store)
    if run.status not in RESUMABLE:
        raise UserError(f"Run {run_id} is {run.status}; only failed, cancelled or pruned runs can be resumed.")
    # A Ray run's old driver file goes too: until the new driver writes its own, the run is not judged by the old one.
    for leftover in (CANCEL_FLAG, PRUNE_FILE, ENDING_FILE, ray_backend.DRIVER_FILE):
        (run.directory / leftover).unlink(missing_ok=True)
    store.transition(
        run_id,
        RESUMABLE,
        status="queued",
        resume=1,
        error=None,
        warning=None,
        finished_at=None,
        pid=None,
        pid_ticks=None,
        heartbeat_at=None,
    )
    if ray_backend.is_ray_run(run):
        ray_backend.hand_over(store.get(run_id), store)
    else:
        dispatch(store)
    return store.get(run_id)


def wait(run_id: str, store: RunStore | None = None, timeout: float | None = None, poll: float = 0.5) -> Run:
    """Block until the run finishes (used by the CLI and tests)."""
    store = store or RunStore()
    deadline = None if timeout is None else time.time() + timeout
    while True:
        reconcile(store)
        run = _existing(run_id, store)
        if run.finished:
            return run
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"run {run_id} still {run.status} after {timeout} s")
        time.sleep(poll)


def log_tail(run_id: str, lines: int = 20) -> str:
    path = run_directory(run_id) / LOG_FILE
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    # Progress bars write carriage returns; keep what a person would last have seen on each line.
    # (Split on newlines only: str.splitlines() would also split at every carriage return.)
    cleaned = [line.split("\r")[-1] for line in text.split("\n")]
    return "\n".join([line for line in cleaned if line.strip()][-lines:])


def _existing(run_id: str, store: RunStore) -> Run:
    run = store.get(run_id)
    if run is None:
        raise UserError(f"There is no run with id {run_id}; `python -m core runs` lists them.")
    return run
