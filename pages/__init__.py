"""Page scripts live in pages/views/; this package holds the helpers they share.

Why a sub-folder: Streamlit treats any `pages/*.py` beside the entry script as a legacy
multipage app on a server's first request, which would run a page without app.py's navigation.
Keeping the page scripts one level down leaves app.py's `st.navigation` the only router.
"""

from __future__ import annotations

import time

import streamlit as st

from core.errors import UserError
from core.store import Run, RunStore

STATUS_ICONS = {"queued": "⏳", "running": "🏃", "completed": "✅", "failed": "❌", "cancelled": "⛔"}


def open_store() -> RunStore:
    """The run store, or a sentence and a stop when the workspace cannot be used."""
    try:
        return RunStore()
    except UserError as problem:
        st.error(str(problem))
        st.stop()


def run_label(run: Run) -> str:
    return f"{STATUS_ICONS.get(run.status, '')} {run.name} · {run.id}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def since(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "—"
