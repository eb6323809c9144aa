"""The command line, as a person types it: `python -m core ...` in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import cli, jobs
from core.config import RunConfig
from core.store import RunStore

REPO = Path(__file__).resolve().parents[2]


def core_cli(*arguments, workspace, timeout=120):
    env = dict(os.environ, WORKBENCH_WORKSPACE=str(workspace), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "core", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_runs_on_an_empty_workspace_says_how_to_start(workspace):
    result = core_cli("runs", workspace=workspace)
    assert result.returncode == 0, result.stderr
    assert "no runs yet" in result.stdout
    assert "python -m core train CONFIG.yaml" in result.stdout


def test_runs_lists_runs_with_status_and_progress(workspace):
    store = RunStore()
    store.create(
        "20990101-000000-abcd",
        name="my sentiment run",
        task="text_classification",
        model="m",
        dataset="d",
        device="cpu",
        config_yaml="",
    )
    store.update("20990101-000000-abcd", status="completed", step=30, max_steps=60)
    result = core_cli("runs", workspace=workspace)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("20990101-000000-abcd"))
    assert "completed" in line and "50%" in line and "my sentiment run" in line and "cpu" in line


def test_train_with_a_bad_config_exits_2_with_the_sentence(workspace, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(RunConfig(learning_rate=0, batch_size=0).to_yaml(), encoding="utf-8")
    result = core_cli("train", str(config), workspace=workspace)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "The learning rate must be above 0 (got 0.0)" in result.stderr
    assert "The batch size must be at least 1 (got 0)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_train_with_unknown_keys_or_a_missing_file_exits_2(workspace, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("name: x\nlearning_rat: 0.1\n", encoding="utf-8")
    result = core_cli("train", str(config), workspace=workspace)
    assert result.returncode == 2 and "error: " in result.stderr and "learning_rat" in result.stderr
    result = core_cli("train", str(tmp_path / "nowhere.yaml"), workspace=workspace)
    assert result.returncode == 2 and "no config file" in result.stderr


def test_cancel_and_resume_of_an_unknown_run_exit_2(workspace):
    result = core_cli("cancel", "nope", workspace=workspace)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: There is no run with id nope; `python -m core runs` lists them."
    result = core_cli("resume", "nope", workspace=workspace)
    assert result.returncode == 2 and "There is no run with id nope" in result.stderr


def test_usage_errors_exit_2():
    result = subprocess.run([sys.executable, "-m", "core"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr


# In-process: the same handlers without a process start-up.


def test_cancel_a_queued_run_from_the_cli(workspace, capsys):
    store = RunStore()
    store.create("r1", name="n", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")
    assert cli.main(["cancel", "r1"]) == 0
    assert capsys.readouterr().out.strip() == "run r1: cancelled"
    assert cli.main(["cancel", "r1"]) == 2
    assert "only queued or running runs can be cancelled" in capsys.readouterr().err


@pytest.mark.parametrize("status, error, code", [("completed", None, 0), ("failed", "It broke.", 1), ("cancelled", None, 1)])
def test_follow_prints_the_log_and_the_ending(workspace, capsys, status, error, code):
    store = RunStore()
    store.create("r1", name="n", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")
    store.update("r1", status=status, error=error)
    directory = jobs.run_directory("r1")
    directory.mkdir(parents=True)
    (directory / jobs.LOG_FILE).write_text("[00:00:00] step 5/10: loss 0.5\n", encoding="utf-8")
    assert cli.follow("r1") == code
    out = capsys.readouterr().out
    assert "step 5/10: loss 0.5" in out
    assert out.rstrip().endswith(f"run r1 {status}" + (f": {error}" if error else ""))


def test_train_detached_then_cancel(workspace, tiny_bert, tmp_path):
    # The real path from a YAML file to a queued trainer process, stopped again at once.
    config = tmp_path / "run.yaml"
    config.write_text(
        RunConfig(name="from the cli", model=str(tiny_bert), dataset="planted-keywords", max_rows=100, max_length=32).to_yaml(),
        encoding="utf-8",
    )
    result = core_cli("train", str(config), "--detach", workspace=workspace)
    assert result.returncode == 0, result.stderr
    assert "queued run " in result.stdout and "(from the cli) on cpu" in result.stdout
    run = RunStore().list()[0]
    assert run.name == "from the cli" and f"queued run {run.id} " in result.stdout
    result = core_cli("cancel", run.id, workspace=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"run {run.id}: ")
    ended = jobs.wait(run.id, timeout=120, poll=0.1)
    assert ended.status == "cancelled", ended.error
