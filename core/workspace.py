"""Where the workbench keeps everything it writes: one folder, `./workspace` by default.

Layout (created on demand):
    runs.db            the run store (SQLite)
    runs/<run_id>/     one directory per run (config, log, checkpoints, reports, predictions)
    datasets/<name>/   datasets registered from the Data page (spec.yaml + the uploaded file)
    uploads/           raw uploads, under sanitised names
    cache/             prepared built-in assets (models, datasets) and their downloads
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from core.errors import UserError

WORKSPACE_ENV = "WORKBENCH_WORKSPACE"
# The working folder and import path of the processes the workbench starts (trainers, the supervisor).
REPO_ROOT = Path(__file__).resolve().parent.parent


def workspace_root() -> Path:
    """The workspace folder, made if missing; raises UserError when it cannot be written."""
    root = Path(os.environ.get(WORKSPACE_ENV, "workspace")).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Creating a file is the only honest test of writability (mode bits lie for root).
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as error:
        raise UserError(
            f"The workspace folder {root} is not writable ({error.strerror or error}). "
            f"Point {WORKSPACE_ENV} at a folder you can write to, or fix its permissions."
        ) from None
    return root


def subdir(name: str) -> Path:
    """A folder of the workspace, made if missing; raises UserError when it cannot be (a file in its place, say)."""
    path = workspace_root() / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"The workspace folder {path} cannot be made ({error.strerror or error}). Move whatever is in its way, "
            f"or point {WORKSPACE_ENV} at another folder."
        ) from None
    return path


def runs_dir() -> Path:
    return subdir("runs")


def datasets_dir() -> Path:
    return subdir("datasets")


def uploads_dir() -> Path:
    return subdir("uploads")


def cache_dir() -> Path:
    return subdir("cache")


def safe_name(name: str, fallback: str = "item") -> str:
    """A file-system-safe name: letters, digits, dot, dash, underscore; no path parts."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    return cleaned[:120] or fallback
