"""One run over several processes: torchrun starts them, Hugging Face `Trainer` runs plain DDP, rank 0 writes.

A run with `devices: N` above one is started by the job manager as
`python -m torch.distributed.run --standalone --nproc_per_node N -m core worker RUN_ID` (torchrun, not `accelerate
launch`: torchrun ships with torch, runs the same entry point with one process per GPU, or per share of the CPU, with
gloo there, and its rendezvous flags take the same worker across machines; `accelerate launch --cpu` started only one
process here). `Trainer` reads the environment torchrun sets and wraps the model in DDP.

Every rank trains; only rank 0 writes what people read — metrics, progress, reports, predictions, model folders,
the run's ending — so each lands once. Other ranks get a store that reads but never writes (`ReadOnlyStore`). The
pid the store knows is torchrun's, the parent of every rank: its process group is the run's, so a kill of the group
leaves no rank behind. A stop (a cancel, early stopping, a diverging loss) is agreed on by all ranks at a step's end
(`core.callbacks.AgreeToStop`), since a rank that stops alone leaves the others waiting in a collective forever.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from collections.abc import Sequence

# Set by torchrun in every process it starts.
WORLD_SIZE_ENV = "WORLD_SIZE"
RANK_ENV = "RANK"
LAUNCHER = ("-m", "torch.distributed.run")
RENDEZVOUS_PORT = 29500


def world_size() -> int:
    return int(os.environ.get(WORLD_SIZE_ENV, "1"))


def rank() -> int:
    return int(os.environ.get(RANK_ENV, "0"))


def is_main() -> bool:
    """Whether this process writes what people read: the only process of a plain run, rank 0 of a distributed one."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return WORLD_SIZE_ENV in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def trainer_pid() -> int:
    """The process the store knows as the run's trainer: torchrun's (every rank's parent) under it, else this one."""
    return os.getppid() if launched_by_torchrun() else os.getpid()


def launch_prefix(processes: int) -> list[str]:
    """What goes between `python` and `-m core worker RUN_ID`: nothing for one process, torchrun for several
    (`--standalone`: a rendezvous on a free local port, so two such runs on one machine do not collide)."""
    if processes <= 1:
        return []
    return [*LAUNCHER, "--standalone", f"--nproc_per_node={processes}"]


def cluster_command(run_id: str, nodes: int, per_node: int, endpoint: str = f"$HEAD_NODE:{RENDEZVOUS_PORT}") -> str:
    """The command a scheduler (SLURM, Kubernetes) runs once on each of `nodes` machines to train the run there with
    `per_node` processes each: the same worker, with torchrun's c10d rendezvous at `endpoint` (the first node)."""
    parts = [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc_per_node={per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={run_id}",
        "-m",
        "core",
        "worker",
        run_id,
    ]
    # A part naming a shell variable ($HEAD_NODE, $RUN_ID in a batch script) is left for the shell to expand.
    return " ".join(part if "$" in part else shlex.quote(part) for part in parts)


def pick_gpus(held: Sequence[str | None], wanted: int, visible: int, per_gpu: int) -> str | None:
    """The GPUs for a run that needs `wanted` of them ("0,1", as CUDA_VISIBLE_DEVICES takes them), given the GPU lists
    the running runs hold and `per_gpu` runs allowed on one GPU: the least loaded first; None while too few are free."""
    load = Counter(int(index) for gpus in held if gpus for index in gpus.split(","))
    free = sorted((load[index], index) for index in range(visible) if load[index] < per_gpu)
    if len(free) < wanted:
        return None
    return ",".join(str(index) for _, index in sorted(free[:wanted], key=lambda pair: pair[1]))


def python_launch(prefix: Sequence[str], command: Sequence[str]) -> list[str]:
    """The argv that runs `python -m core COMMAND…` behind `prefix` (torchrun's arguments, or none)."""
    return [sys.executable, *prefix, "-m", "core", *command]


class ReadOnlyStore:
    """A run store for the ranks that do not write: reads go to the real store, writes do nothing."""

    WRITES = frozenset({"update", "log_metrics", "forget_metrics_after", "finish", "transition", "create"})

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name: str):
        if name in self.WRITES:
            return lambda *args, **kwargs: None
        return getattr(self._store, name)
