"""The Ray side of a run handed to a cluster (`core.ray_backend` says why it is built this way).

`RunDriver` is the run's driver, a Ray actor on the machine that owns the run store: it calls Ray Train's
`TorchTrainer.fit()` and, meanwhile, answers the workers' store calls. `train_loop` is what every Ray Train worker
runs: the trainer process's own steps (`core.trainer.run_worker`) around the same `core.trainer.train`, with the
worker's output going into the run's log, and rank 0 moving the run from queued to running when training starts and
recording its ending. Whatever rank 0 could not record (a worker or a node lost) the driver records once `fit()`
returns, as a reader records a lost trainer's ending.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import RunConfig
from core.distributed import ReadOnlyStore, is_main
from core.errors import UserError
from core.jobs import CANCEL_FLAG, LOG_FILE, lost_ending, process_start_ticks, stopped_ending, write_ending
from core.ray_backend import (
    ACTIVE,
    DRIVER_START_SECONDS,
    NAMESPACE,
    Driver,
    import_ray,
    plain_device,
    write_driver,
)
from core.store import Run, RunStore, run_directory
from core.supervisor import CANCEL_GRACE_SECONDS
from core.workspace import REPO_ROOT


def start_driver(run: Run, driver: Driver, runtime_env: dict) -> None:
    """Create the run's driver on this node and start it; waits until Ray has started it (seconds), so that a driver
    Ray cannot start is a sentence now rather than a run failed a minute later."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = (
        ray.remote(RunDriver)
        .options(
            name=driver.actor,
            namespace=NAMESPACE,
            lifetime="detached",  # it outlives the app or CLI that submitted the run
            num_cpus=0,
            # Store calls from rank 0 are answered while `drive` waits in fit().
            max_concurrency=4,
            # On this machine: it writes the run store's SQLite file, and readers check its pid here.
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
            runtime_env=runtime_env,
        )
        .remote(run.id, driver)
    )
    try:
        ray.get(actor.ready.remote(), timeout=DRIVER_START_SECONDS)
    except ray.exceptions.RayError as error:
        ray.kill(actor)  # detached, and never asked to drive: it would wait forever
        raise UserError(
            f"Ray could not start this run's driver ({str(error).strip().splitlines()[-1][:300]}). Check that every node "
            f"has this checkout at {REPO_ROOT} and the packages of requirements.txt, then resume the run."
        ) from None
    actor.drive.remote()


class RunDriver:
    """A run's driver in Ray (made an actor by `start_driver`): trains it with `TorchTrainer` and owns its store writes."""

    def __init__(self, run_id: str, driver: Driver):
        self.run_id, self.store = run_id, RunStore()
        directory = run_directory(run_id)
        pid = os.getpid()
        write_driver(directory, dataclasses.replace(driver, pid=pid, ticks=process_start_ticks(pid)))
        workers = self.store.get(run_id).slots or 1
        log_line(directory, f"Handed to the Ray cluster at {driver.address}; waiting there for {workers} worker(s).")

    def ready(self) -> None:
        """Answers once Ray has started the driver."""

    def store_call(self, method: str, args: tuple, kwargs: dict):
        """One `RunStore` call on behalf of a worker (`StoreThroughDriver`)."""
        return getattr(self.store, method)(*args, **kwargs)

    def drive(self) -> None:
        ray = import_ray()
        problem = None
        try:
            torch_trainer(self.store.get(self.run_id), ray.get_runtime_context().current_actor).fit()
        except Exception as error:  # noqa: BLE001 - a failed worker or a lost node ends as the run's status
            problem = error
        try:
            settle(self.store, self.run_id, problem)
        except UserError as error:  # the store cannot be written: the next reconcile reads ending.json
            log_line(run_directory(self.run_id), str(error))
        ray.actor.exit_actor()


def torch_trainer(run: Run, driver):
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop,
        train_loop_config={"run_id": run.id, "driver": driver},
        scaling_config=ScalingConfig(num_workers=run.slots or 1, use_gpu=plain_device(run) == "cuda"),
        # Ray Train's own records of this attempt, in the run's folder on the shared workspace.
        run_config=TrainRunConfig(name=time.strftime("attempt-%Y%m%d-%H%M%S"), storage_path=str(run.directory / "ray")),
    )


def settle(store: RunStore, run_id: str, problem: Exception | None) -> None:
    """Record the ending of a run whose rank 0 could not (a worker or node lost, ranks that ignored a cancel), as a
    reader records a lost trainer's: the ending it wrote, cancelled when asked to, else failed with Ray's error."""
    run = store.get(run_id)
    if run is None or run.finished:
        return
    if problem is not None:
        log_line(run.directory, f"Ray ended the training with an error: {problem}")
        cause = f"Ray ended its training: {str(problem).strip().splitlines()[0][:300]}"
    else:
        cause = "its Ray workers ended without recording an ending"
    store.transition(run_id, ACTIVE, **lost_ending(run, time.time(), cause))


class StoreThroughDriver:
    """The run store as a Ray worker sees it: every call runs in the run's driver, on the machine that owns the file."""

    def __init__(self, driver):
        self._driver = driver

    def __getattr__(self, method: str):
        ray = import_ray()
        return lambda *args, **kwargs: ray.get(self._driver.store_call.remote(method, args, kwargs))


def train_loop(settings: dict) -> None:
    """Every Ray Train worker: `core.trainer.train`, as a local trainer process runs it; rank 0 writes."""
    from core.trainer import ending_of, train

    os.chdir(REPO_ROOT)  # where a local trainer starts, so relative paths in a config mean the same
    writer = StoreThroughDriver(settings["driver"])
    store = writer if is_main() else ReadOnlyStore(writer)
    run = writer.get(settings["run_id"])
    with output_into(run.directory / LOG_FILE), stop_when_a_cancel_is_ignored(run.directory / CANCEL_FLAG):
        if not agreed(is_main() and start_running(writer, run.id)):
            return  # cancelled while it waited in Ray's queue
        run = writer.get(run.id)
        try:
            train(RunConfig.load(run.directory / "config.yaml"), dataclasses.replace(run, device=plain_device(run)), store)
        except Exception as problem:  # every failure must end as a status with a reason
            outcome, error = ending_of(problem, run.directory)
            if is_main():
                record(writer, run.id, outcome, error)
            if outcome == "failed":
                raise  # Ray Train then stops the other ranks, which may be waiting for this one in a collective
            return
        if is_main():
            finished = (run.directory / CANCEL_FLAG).exists()
            record(writer, run.id, *(stopped_ending(run.directory) if finished else ("completed", None)))


def start_running(store, run_id: str) -> bool:
    """Rank 0 moves the run from queued to running as training starts; False when it was cancelled while it waited."""
    return store.transition(
        run_id, ("queued",), status="running", started_at=time.time(), heartbeat_at=None, error=None, warning=None
    )


def agreed(decision: bool) -> bool:
    """Rank 0's decision, on every rank (Ray Train has set up torch.distributed for them)."""
    import torch.distributed as dist

    message = [decision]
    if dist.is_initialized():
        dist.broadcast_object_list(message, src=0)
    return bool(message[0])


def record(store, run_id: str, outcome: str, error: str | None) -> None:
    """Rank 0 records the run's ending: in its directory first (it survives a store that cannot be written), then in
    the store."""
    from core.trainer import say

    say(f"Run {outcome}." + (f" {error}" if error else ""))
    try:
        # pid None: a Ray run's row has none, and `core.jobs.read_ending` matches the ending on it.
        write_ending(run_id, outcome, error, None)
    except OSError as problem:
        say(f"Could not write the run's ending into its directory ({problem}).")
    store.transition(run_id, ("running",), status=outcome, error=error, finished_at=time.time())


@contextmanager
def output_into(log: Path) -> Iterator[None]:
    """This worker's stdout and stderr (Python's and the libraries' below it) into the run's log, as a local trainer's
    go, for the Runs page; Ray's own worker log gets them back afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for descriptor, copy in zip((1, 2), saved):
            os.dup2(copy, descriptor)
            os.close(copy)


@contextmanager
def stop_when_a_cancel_is_ignored(flag: Path) -> Iterator[None]:
    """End this worker's process when the run was asked to cancel a while ago and still trains (a hung collective, a
    long evaluation), as the supervisor kills a local trainer: Ray Train then stops the other workers and frees their
    resources, and the driver records the run cancelled."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            try:
                asked = flag.stat().st_mtime
            except OSError:
                continue
            if time.time() - asked > CANCEL_GRACE_SECONDS:
                print(f"Still training {CANCEL_GRACE_SECONDS:.0f} s after the cancel: stopping this worker.", flush=True)
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def log_line(directory: Path, message: str) -> None:
    """One line in the run's log from its driver (the workers' output goes there too)."""
    with (directory / LOG_FILE).open("a", encoding="utf-8") as log:
        log.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
