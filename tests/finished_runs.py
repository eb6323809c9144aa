"""Runs trained once per test session through the job manager (the Start button's path), shared by page tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core import jobs
from core.config import RunConfig
from core.store import RunStore

_FINISHED: dict[str, tuple[Path, str]] = {}


def finished_run(tmp_path_factory, key: str, make_config: Callable[[Path], RunConfig], timeout: float = 600) -> tuple[Path, str]:
    """(workspace folder, run id) of the run `make_config(scratch folder)` describes, trained once per session under `key`."""
    if key not in _FINISHED:
        root = tmp_path_factory.mktemp(f"{key}-workspace")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WORKBENCH_WORKSPACE", str(root))
            patch.setenv("OMP_NUM_THREADS", "1")
            store = RunStore()
            run = jobs.submit(make_config(tmp_path_factory.mktemp(f"{key}-scratch")), store)
            finished = jobs.wait(run.id, store, timeout=timeout)
            assert finished.status == "completed", jobs.log_tail(run.id, 40)
        _FINISHED[key] = (root, run.id)
    return _FINISHED[key]
