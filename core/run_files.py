"""Reading what a run left in its directory: config, reports, summary, predictions, sample generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import RunConfig
from core.store import Run

GENERATIONS_FILE = "generations.jsonl"  # sample answers a generating task writes at every evaluation


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


def generations(run: Run) -> pd.DataFrame:
    """The sample answers a generating run wrote at every evaluation: step, prompt, reference, answer, seconds (the
    generation time of that evaluation). The last line of a step and prompt wins: a resumed run's repeated
    evaluation replaces the earlier one. Empty for a run that writes none."""
    path = run.directory / GENERATIONS_FILE
    columns = ["step", "prompt", "reference", "answer", "seconds"]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return pd.DataFrame(columns=columns)
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill mid-write: the lines before it stand
    frame = pd.DataFrame(rows, columns=columns)
    return frame.drop_duplicates(["step", "prompt"], keep="last").sort_values("step", kind="stable").reset_index(drop=True)
