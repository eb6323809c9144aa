"""Reading what a run left in its directory: config, reports, summary, predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import RunConfig
from core.store import Run


def run_config(run: Run) -> RunConfig:
    return RunConfig.from_yaml(run.config)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def test_report(run: Run, stage: str) -> dict[str, Any] | None:
    """The test-split classification report 'before' (step 0) or 'after' training, if written."""
    payload = read_json(run.directory / "reports" / f"test_{stage}.json")
    return payload["report"] if payload else None


def summary(run: Run) -> dict[str, Any] | None:
    return read_json(run.directory / "summary.json")


def config_differences(runs: list[Run]) -> pd.DataFrame:
    """One row per config key whose value differs between the runs, one column per run."""
    configs = {f"{run.name} ({run.id})": run_config(run).to_dict() for run in runs}
    keys = next(iter(configs.values())).keys() if configs else []
    differing = [key for key in keys if len({json.dumps(c[key]) for c in configs.values()}) > 1]
    return pd.DataFrame({label: {key: str(values[key]) for key in differing} for label, values in configs.items()})
