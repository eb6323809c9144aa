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

import os
import signal
import sys
import time

from core.errors import UserError
from core.jobs import CANCEL_FLAG, dispatch, is_alive
from core.supervisor_start import lock_path, try_lock

POLL_SECONDS = 1.0
IDLE_EXIT_SECONDS = 15.0
CANCEL_GRACE_SECONDS = 60.0


def stop_unresponsive_cancels(store, now: float) -> list[str]:
    """Kill trainers that were asked to cancel long ago and are still there; reconcile then marks them."""
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
    """One round; True while anything is queued or running (a run, or a sweep whose driver it restarts when lost)."""
    from core.sweeps.driver import reconcile_sweeps

    dispatch(store)
    stop_unresponsive_cancels(store, time.time())
    reconcile_sweeps(store)
    return bool(store.list(("queued", "running")) or store.sweeps(("running",)))


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

    descriptor = try_lock(lock_path())
    if descriptor is None:
        return 0  # another supervisor has this workspace
    store = RunStore()
    while True:
        supervise(store)
        os.close(descriptor)
        # A trainer claimed between the last idle check and the unlock found the lock still held and
        # started no supervisor: look once more after unlocking, and carry on if there is work.
        if not store.path.exists() or not (store.list(("queued", "running")) or store.sweeps(("running",))):
            return 0
        descriptor = try_lock(lock_path())
        if descriptor is None:
            return 0


if __name__ == "__main__":
    sys.exit(main())
