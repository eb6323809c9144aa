"""Starting the workspace's supervisor (`core.supervisor`): one lock probe, and a detached process when none runs.

Apart from the supervisor's loop because the job manager starts it after every trainer it spawns,
while the loop itself drives the job manager (`core.jobs.dispatch`): with both halves in one module
the two would import each other.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

from core.workspace import REPO_ROOT, WORKSPACE_ENV, workspace_root

LOCK_FILE = "supervisor.lock"
LOG_FILE = "supervisor.log"


def lock_path() -> Path:
    return workspace_root() / LOCK_FILE


def try_lock(path: Path) -> int | None:
    """An open descriptor holding the workspace's supervisor lock, or None when another process holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def is_running() -> bool:
    descriptor = try_lock(lock_path())
    if descriptor is None:
        return True
    os.close(descriptor)
    return False


def ensure_supervisor() -> None:
    """Start the workspace's supervisor unless one runs already (cheap: one lock probe)."""
    if is_running():
        return
    env = dict(os.environ)
    env[WORKSPACE_ENV] = str(workspace_root())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(workspace_root() / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "core.supervisor"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    # Reap it whenever it exits so it does not linger as a zombie under a long-lived starter.
    threading.Thread(target=process.wait, daemon=True).start()
