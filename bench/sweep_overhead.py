"""Sweep overhead: a grid sweep of N trials against the same N runs queued by hand.

Prints figures; it is not a test. Both sides train the same configs (a tiny random BERT on planted-keywords,
one learning rate per trial) through the job manager, with the same queue slots, in separate workspaces:

  (a) by hand   core.jobs.submit for every config at once, then wait for all
  (b) sweep     core.sweeps.driver.submit_sweep with search grid and parallel = slots; the driver asks Optuna
                for each trial, queues it, feeds the study every evaluation and tells it the objective

The figure that matters is the wall-clock difference per trial: what the driver's polling, Optuna's storage
and asking only when a slot frees cost over a queue filled up front.

    python bench/sweep_overhead.py                # 6 trials, 2 slots
    python bench/sweep_overhead.py --trials 4 --slots 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def base_config(model_dir: Path, steps: int):
    from core.config import RunConfig

    return RunConfig(
        name="bench",
        model=str(model_dir),
        dataset="planted-keywords",
        max_rows=300,
        epochs=0,
        max_steps=steps,
        batch_size=16,
        eval_steps=10,
        logging_steps=5,
        max_length=32,
    )


def learning_rates(trials: int) -> list[float]:
    return [round(10 ** (-4 + 2 * index / max(1, trials - 1)), 6) for index in range(trials)]


def by_hand(model_dir: Path, workspace: Path, trials: int, steps: int) -> float:
    from core import jobs
    from core.store import RunStore

    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)
    store = RunStore()
    started = time.perf_counter()
    base = base_config(model_dir, steps)
    runs = [jobs.submit(replace(base, learning_rate=rate), store) for rate in learning_rates(trials)]
    for run in runs:
        jobs.wait(run.id, store, timeout=3600)
    return time.perf_counter() - started


def as_sweep(model_dir: Path, workspace: Path, trials: int, steps: int, slots: int) -> float:
    from core.store import RunStore
    from core.sweeps.driver import submit_sweep
    from core.sweeps.spec import Knob, SweepSpec

    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)
    store = RunStore()
    spec = SweepSpec(
        base=base_config(model_dir, steps),
        space={"learning_rate": Knob("learning_rate", values=tuple(learning_rates(trials)))},
        search="grid",
        trials=trials,
        parallel=slots,
    )
    started = time.perf_counter()
    sweep = submit_sweep(spec, store)
    while not store.sweep(sweep.id).finished:
        time.sleep(0.2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    arguments = parser.parse_args()
    os.environ["WORKBENCH_JOBS_PER_DEVICE"] = str(arguments.slots)
    from core.scratch_models import write_random_bert

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        root = Path(scratch)
        model_dir = write_random_bert(root / "tiny-bert", "tiny")
        hand = by_hand(model_dir, root / "hand", arguments.trials, arguments.steps)
        sweep = as_sweep(model_dir, root / "sweep", arguments.trials, arguments.steps, arguments.slots)
    print(f"{arguments.trials} trials of {arguments.steps} steps, {arguments.slots} slot(s)")
    print(f"  (a) queued by hand: {hand:6.1f} s  ({hand / arguments.trials:.1f} s per trial)")
    print(f"  (b) as a sweep:     {sweep:6.1f} s  ({sweep / arguments.trials:.1f} s per trial)")
    print(f"  sweep overhead: {(sweep - hand) / arguments.trials:+.2f} s per trial ({sweep / hand:.2f}×)")


if __name__ == "__main__":
    main()
