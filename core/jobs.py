"""The job manager: queue runs, start each trainer as its own OS process, cancel, resume, reconcile.

Nothing here holds state in memory that matters: every decision reads the run store, so the
Streamlit server can restart, or two tabs can act at once, without losing or doubling a job.
A trainer process is started in a new session (it survives the server), writes its own status
when it ends, and starts the next queued job on its device. `reconcile()` catches the trainer
that could not report: a process that is gone while its run still says "running" is marked
failed, with its last log lines as the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from core.config import RunConfig
from core.errors import UserError
from core.store import Run, RunStore, new_run_id, run_directory
from core.workspace import WORKSPACE_ENV, workspace_root

REPO_ROOT = Path(__file__).resolve().parent.parent
SLOTS_ENV = "WORKBENCH_JOBS_PER_DEVICE"
CANCEL_FLAG = "CANCEL"
LOG_FILE = "train.log"
# A claimed run gets this long to report its pid before it is presumed lost.
START_GRACE_SECONDS = 60


def slots_per_device() -> int:
    try:
        return max(1, int(os.environ.get(SLOTS_ENV, "1")))
    except ValueError:
        return 1


def resolve_device(requested: str) -> str:
    """The queue a run joins: 'auto' becomes cuda when a GPU is visible, else cpu."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def submit(config: RunConfig, store: RunStore | None = None, *, preflight: bool = True) -> Run:
    """Validate, record and queue a run; start it at once if its device is free. Returns quickly."""
    store = store or RunStore()
    config.raise_if_invalid()
    device = resolve_device(config.device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("This run asks for cuda, but no GPU is visible here; choose device auto or cpu.")
    if device == "cpu" and config.precision == "fp16":
        # validate() catches device cpu; device auto lands here on a machine without a GPU.
        raise UserError("fp16 needs a GPU and this run will train on the CPU; choose precision fp32 or auto.")
    if preflight:
        from core.tasks import TASKS

        TASKS[config.task].preflight(config)
    run_id = new_run_id()
    directory = run_directory(run_id)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    store.create(
        run_id, name=config.name, task=config.task, model=config.model, dataset=config.dataset,
        device=device, config_yaml=config.to_yaml(),
    )
    dispatch(store)
    return store.get(run_id)


def dispatch(store: RunStore | None = None) -> list[Run]:
    """Start queued runs on every device that has a free slot; returns the runs started."""
    store = store or RunStore()
    reconcile(store)
    started = []
    for device in store.queued_devices():
        while (run := store.claim_next(device, slots_per_device())) is not None:
            _spawn(run, store)
            started.append(run)
    return started


def _spawn(run: Run, store: RunStore) -> None:
    env = dict(os.environ)
    env[WORKSPACE_ENV] = str(workspace_root())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    log = open(run.directory / LOG_FILE, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "worker", run.id],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT, env=env, start_new_session=True,
    )
    log.close()
    store.update(run.id, pid=process.pid, pid_started_at=_process_start_time(process.pid))
    # Reap the child when it exits so it does not linger as a zombie under a long-lived server.
    threading.Thread(target=process.wait, daemon=True).start()


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(run: Run) -> bool:
    """True while the run's trainer process exists (and is the same process, not a reused pid)."""
    if run.pid is None:
        return False
    try:
        process = psutil.Process(run.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if run.pid_started_at and abs(process.create_time() - run.pid_started_at) > 1.0:
            return False
        return True
    except psutil.Error:
        return False


def reconcile(store: RunStore | None = None) -> list[str]:
    """Mark runs whose trainer vanished as failed, with the log's last lines (or as cancelled when a
    cancel was asked for); returns their ids."""
    store = store or RunStore()
    lost = []
    now = time.time()
    for run in store.list(("running",)):
        if run.pid is None and now - (run.started_at or now) < START_GRACE_SECONDS:
            continue
        if is_alive(run):
            continue
        # Re-read: the trainer may have recorded its own ending between the list and this check.
        fresh = store.get(run.id)
        if fresh is None or fresh.status != "running":
            continue
        if (run.directory / CANCEL_FLAG).exists():
            # Asked to cancel, and gone: a SIGTERM that landed before the worker set its handler ends here.
            if store.transition(run.id, ("running",), status="cancelled", error=None, finished_at=now):
                lost.append(run.id)
            continue
        reason = "The trainer process stopped without reporting (it was killed or crashed)."
        tail = log_tail(run.id, 5)
        if tail:
            reason += " Last log lines:\n" + tail
        if store.transition(run.id, ("running",), status="failed", error=reason, finished_at=now):
            lost.append(run.id)
    return lost


def cancel(run_id: str, store: RunStore | None = None) -> Run:
    """Cancel a queued run at once; ask a running one to stop at its next step (it saves a checkpoint)."""
    store = store or RunStore()
    run = _existing(run_id, store)
    if run.status == "queued":
        store.transition(run_id, ("queued",), status="cancelled", finished_at=time.time())
    elif run.status == "running":
        (run.directory / CANCEL_FLAG).touch()
        if run.pid and is_alive(run):
            # The worker turns SIGTERM into the same polite stop as the flag.
            os.kill(run.pid, signal.SIGTERM)
        reconcile(store)
    else:
        raise UserError(f"Run {run_id} is {run.status}; only queued or running runs can be cancelled.")
    return store.get(run_id)


def resume(run_id: str, store: RunStore | None = None) -> Run:
    """Queue a failed or cancelled run again; it continues from its last checkpoint if it has one."""
    store = store or RunStore()
    run = _existing(run_id, store)
    if run.status not in ("failed", "cancelled"):
        raise UserError(f"Run {run_id} is {run.status}; only failed or cancelled runs can be resumed.")
    (run.directory / CANCEL_FLAG).unlink(missing_ok=True)
    store.transition(
        run_id, ("failed", "cancelled"), status="queued", resume=1, error=None, finished_at=None, pid=None,
    )
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
