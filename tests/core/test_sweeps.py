"""Sweeps with real trainer processes: the CLI queues trials as runs, prunes a bad one, survives a killed driver,
cancels, and repeats the best trial under other seeds. A tiny BERT on planted-keywords; each trial takes ~10 s."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from test_jobs import RUN_TIMEOUT, poll, tiny_config

from core import jobs
from core.store import RunStore
from core.sweeps.driver import storage_url
from core.sweeps.results import best_trial, open_study, repeat_best, seed_summary, trial_frame
from core.workspace import REPO_ROOT

SWEEP_TIMEOUT = 4 * RUN_TIMEOUT


def write_sweep(path, base, **values):
    spec = {"name": "tiny sweep", "base": base.to_dict(), **values}
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def core_command(*arguments, workspace, check_output=True):
    environment = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace), jobs.SLOTS_ENV: "2"}
    result = subprocess.run(
        [sys.executable, "-m", "core", *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=environment,
        timeout=SWEEP_TIMEOUT,
    )
    if check_output:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def overlap(runs) -> int:
    """The most runs that were running at one moment."""
    moments = sorted([(run.started_at, 1) for run in runs] + [(run.finished_at, -1) for run in runs])
    most = current = 0
    for _, change in moments:
        current += change
        most = max(most, current)
    return most


@pytest.fixture(scope="module")
def random_sweep(tiny_bert, tmp_path_factory):
    """Six random trials, two at a time, started detached through the CLI; its driver is killed once mid-way."""
    root = tmp_path_factory.mktemp("sweep-random")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        patch.setenv(jobs.SLOTS_ENV, "2")
        base = tiny_config(tiny_bert, epochs=2)
        space = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": [8, 16]}
        spec = write_sweep(root / "sweep.yaml", base, space=space, search="random", trials=6, parallel=2)
        started = core_command("sweep", str(spec), "--detach", workspace=root)
        store = RunStore()
        sweep = store.sweeps()[0]
        assert sweep.id in started.stdout
        poll(lambda: len(store.trials(sweep.id)) >= 2, RUN_TIMEOUT, what="two trials queued")
        first_driver = store.sweep(sweep.id).pid
        os.kill(first_driver, signal.SIGKILL)
        poll(lambda: not jobs.process_alive(first_driver, store.sweep(sweep.id).pid_ticks), 30, what="the driver gone")
        listing = core_command("sweeps", workspace=root)  # a reader: it finds the lost driver and starts it again
        poll(lambda: store.sweep(sweep.id).finished, SWEEP_TIMEOUT, interval=0.5, what="the sweep to finish")
        yield {"root": root, "store": store, "sweep": store.sweep(sweep.id), "first_driver": first_driver, "listing": listing}


def test_a_random_sweep_runs_every_trial_as_a_run_linked_to_it(random_sweep):
    store, sweep = random_sweep["store"], random_sweep["sweep"]
    assert sweep.status == "completed", sweep.error
    runs = store.trials(sweep.id)
    assert [run.trial for run in runs] == list(range(6))
    assert all(run.status == "completed" and run.sweep_id == sweep.id for run in runs)
    study = open_study(sweep.id, store)
    for run, trial in zip(runs, study.trials):
        config = yaml.safe_load(run.config)
        assert config["learning_rate"] == trial.params["learning_rate"]
        assert config["batch_size"] == trial.params["batch_size"] in (8, 16)
    assert len({run.config for run in runs}) == 6  # six different settings


def test_the_best_trial_is_the_best_over_trials_and_the_study_agrees(random_sweep):
    store, sweep = random_sweep["store"], random_sweep["sweep"]
    frame = trial_frame(sweep.id, store)
    best = best_trial(frame, maximize=True)
    assert best["objective"] == frame["objective"].max()
    assert open_study(sweep.id, store).best_value == pytest.approx(best["objective"])
    assert frame["seed"].tolist() == [42] * 6  # every trial records its seed


def test_no_more_than_parallel_trials_ran_at_once(random_sweep):
    runs = random_sweep["store"].trials(random_sweep["sweep"].id)
    assert overlap(runs) == 2


def test_a_killed_driver_is_started_again_and_the_sweep_still_completes_once(random_sweep):
    store, sweep = random_sweep["store"], random_sweep["sweep"]
    assert sweep.pid != random_sweep["first_driver"]
    assert len(store.trials(sweep.id)) == 6  # the new driver took over; it did not ask for the trials again
    assert sweep.id in random_sweep["listing"].stdout


def test_the_sweeps_command_lists_sweeps_and_one_sweeps_trials_as_json(random_sweep):
    root, sweep = random_sweep["root"], random_sweep["sweep"]
    listing = core_command("sweeps", workspace=root).stdout
    assert sweep.id in listing and "6/6" in listing and "completed" in listing
    trials = json.loads(core_command("sweeps", sweep.id, "--json", workspace=root).stdout)
    assert [row["trial"] for row in trials] == list(range(6)) and {"learning_rate", "batch_size"} <= set(trials[0])


def test_the_study_is_an_optuna_storage_file_in_the_workspace(random_sweep):
    import optuna

    root, sweep = random_sweep["root"], random_sweep["sweep"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        assert storage_url() == f"sqlite:///{root / 'sweeps.db'}"
    names = optuna.get_all_study_names(storage=f"sqlite:///{root / 'sweeps.db'}")
    assert sweep.id in names  # what optuna-dashboard opens


def test_repeat_best_trains_its_config_under_three_other_seeds(random_sweep):
    store, sweep = random_sweep["store"], random_sweep["sweep"]
    best = best_trial(trial_frame(sweep.id, store), maximize=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(random_sweep["root"]))
        patch.setenv(jobs.SLOTS_ENV, "2")
        repeat = repeat_best(sweep.id, seeds=3, store=store)
        poll(lambda: store.sweep(repeat.id).finished, SWEEP_TIMEOUT, interval=0.5, what="the repeat to finish")
        runs = store.trials(repeat.id)
        configs = [yaml.safe_load(run.config) for run in runs]
        assert sorted(config["seed"] for config in configs) == [43, 44, 45]
        assert {config["learning_rate"] for config in configs} == {best["learning_rate"]}
        summary = seed_summary(repeat.id, store)
        values = trial_frame(repeat.id, store)["objective"]
    assert summary["seeds"] == 3 and summary["parent"] == sweep.id
    assert summary["mean"] == pytest.approx(values.mean()) and summary["std"] == pytest.approx(values.std())
    assert summary["parent_best"] == best["objective"]
    parent = trial_frame(sweep.id, store)["objective"].sort_values(ascending=False).tolist()
    assert summary["margin"] == pytest.approx(parent[0] - parent[1])
    assert summary["within_noise"] is (summary["margin"] <= summary["std"])


def test_a_bad_learning_rate_is_pruned_before_its_last_evaluation(tiny_bert, workspace):
    base = tiny_config(tiny_bert, epochs=0, max_steps=300, eval_steps=10)
    spec = write_sweep(
        workspace.parent / "prune.yaml",
        base,
        space={"learning_rate": [0.005, 0.003, 1e-7]},
        search="grid",
        trials=3,
        parallel=1,
        pruner="median",
        pruner_startup=2,
    )
    followed = core_command("sweep", str(spec), workspace=workspace)
    store = RunStore()
    sweep = store.sweeps()[0]
    runs = store.trials(sweep.id)
    assert [run.status for run in runs] == ["completed", "completed", "pruned"]
    pruned = runs[2]
    assert pruned.step < 300, "stopped before its last evaluation"
    assert "median of the finished trials" in pruned.error
    assert f"trial 2 (run {pruned.id}) pruned: Pruned at step" in followed.stdout
    trial = open_study(sweep.id, store).trials[2]
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at_step"] < 300
    frame = trial_frame(sweep.id, store)
    assert frame.loc[2, "stopped_at_step"] == pruned.step


def test_cancelling_a_sweep_cancels_its_trials_and_asks_for_no_more(tiny_bert, workspace):
    base = tiny_config(tiny_bert, epochs=0, max_steps=100_000)
    spec = write_sweep(workspace.parent / "long.yaml", base, space={"learning_rate": [0.005, 0.004, 0.003]}, search="grid")
    core_command("sweep", str(spec), "--detach", workspace=workspace)
    store = RunStore()
    sweep = store.sweeps()[0]
    poll(lambda: any(run.status == "running" for run in store.trials(sweep.id)), RUN_TIMEOUT, what="a running trial")
    said = core_command("cancel", sweep.id, workspace=workspace).stdout
    assert f"sweep {sweep.id}: cancelled" in said
    poll(lambda: all(run.finished for run in store.trials(sweep.id)), RUN_TIMEOUT, what="the trials to stop")
    poll(lambda: not jobs.process_alive(store.sweep(sweep.id).pid, store.sweep(sweep.id).pid_ticks), 30, what="driver exit")
    runs = store.trials(sweep.id)
    assert len(runs) == 1 and runs[0].status == "cancelled"
    assert store.sweep(sweep.id).status == "cancelled"
    refused = core_command("cancel", sweep.id, workspace=workspace, check_output=False)
    assert refused.returncode == 2 and "only a running sweep can be cancelled" in refused.stderr
