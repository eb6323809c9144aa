"""The workspace's supervisor: one small process that keeps the queue moving when nobody is looking.

A trainer records its own ending and starts the next queued run, but a trainer killed with
SIGKILL (or by the OOM killer, or a crashed machine) cannot. Readers (pages, the CLI) reconcile
when they look, yet a queue must not wait for a reader. So whenever a trainer is started, the job
manager makes sure one supervisor runs for the workspace (`python -m core.supervisor`, in its own
session, so it outlives the Streamlit server like the trainers do). Every second it reconciles
(marking lost trainers and starting what waited behind them) and kills a trainer that was asked
to cancel but did not stop within `CANCEL_GRACE_SECONDS` (hung, or deadlocked). It exits once
nothing has been queued or running for `IDLE_EXIT_SECONDS`, and the next started trainer starts
it again. An exclusive lock on `supervisor.lock` keeps it to one per workspace; the lock is the
kernel's, so a supervisor that dies releases it with no stale file to clean up.

Why not a supervisor per trainer: one per workspace costs one process however many runs there
are, and it also sees runs queued from another server or the CLI.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserError
from core.workspace import WORKSPACE_ENV, workspace_root

POLL_SECONDS = 1.0
IDLE_EXIT_SECONDS = 15.0
CANCEL_GRACE_SECONDS = 60.0
LOCK_FILE = "supervisor.lock"
LOG_FILE = "supervisor.log"


def lock_path() -> Path:
    return workspace_root() / LOCK_FILE


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding the workspace's supervisor lock, or None when another process holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def is_running() -> bool:
    descriptor = _try_lock(lock_path())
    if descriptor is None:
        return True
    os.close(descriptor)
    return False


def ensure_supervisor() -> None:
    """Start the workspace's supervisor unless one runs already (cheap: one lock probe)."""
    if is_running():
        return
    from core.jobs import REPO_ROOT

    env = dict(os.environ)
    env[WORKSPACE_ENV] = str(workspace_root())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(workspace_root() / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "core.supervisor"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env, start_new_session=True,
        )
    # Reap it whenever it exits so it does not linger as a zombie under a long-lived starter.
    import threading

    threading.Thread(target=process.wait, daemon=True).start()


def stop_unresponsive_cancels(store, now: float) -> list[str]:
    """Kill trainers that were asked to cancel long ago and are still there; reconcile then marks them."""
    from core.jobs import CANCEL_FLAG, is_alive

    killed = []
    for run in store.list(("running",)):
        flag = run.directory / CANCEL_FLAG
        try:
            asked = flag.stat().st_mtime
        except OSError:
            continue
        if now - asked > CANCEL_GRACE_SECONDS and is_alive(run):
            try:
                os.killpg(run.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(run.id)
    return killed


def supervise_once(store) -> bool:
    """One round; True while anything is queued or running."""
    from core.jobs import dispatch

    dispatch(store)
    stop_unresponsive_cancels(store, time.time())
    return bool(store.list(("queued", "running")))


def supervise(store) -> None:
    """Poll until the workspace has been idle for a while (or its store is gone)."""
    idle_since = None
    while store.path.exists():
        try:
            active = supervise_once(store)
        except UserError as problem:  # a read-only or full store: say so, keep watching
            print(f"[{time.strftime('%H:%M:%S')}] {problem}", flush=True)
            active = True
        if active:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
            return
        time.sleep(POLL_SECONDS)


def main() -> int:
    from core.store import RunStore

    descriptor = _try_lock(lock_path())
    if descriptor is None:
        return 0  # another supervisor has this workspace
    store = RunStore()
    while True:
        supervise(store)
        os.close(descriptor)
        # A trainer claimed between the last idle check and the unlock found the lock still held and
        # started no supervisor: look once more after unlocking, and carry on if there is work.
        if not store.path.exists() or not store.list(("queued", "running")):
            return 0
        descriptor = _try_lock(lock_path())
        if descriptor is None:
            return 0


if __name__ == "__main__":
    sys.exit(main())
