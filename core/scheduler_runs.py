"""Runs that another scheduler launches (SLURM, Kubernetes, a shell on each node): the workbench records them and
reads them; the scheduler starts the same worker on its nodes.

`python -m core train run.yaml --external` records the run queued on a `scheduler:` device, which this machine's
queue never claims, and prints its id. The scheduler then runs, once on each node,

    torchrun --nnodes=N --nproc_per_node=G --rdzv-backend=c10d --rdzv-endpoint=HEAD:29500 --rdzv-id=RUN -m core worker RUN

(`core.distributed.cluster_command`; `slurm_script` writes the whole batch script). Rank 0 moves the run to running
when it starts, and trains and writes as under a local torchrun. The workspace must be one folder at the same path on
every node and on the machine that serves the app (a shared filesystem).

The trainer's pid means nothing on the machine that reads the store, so none is recorded: a scheduler run is alive
while its heartbeat is recent (every second of training, evaluation or saving; `SILENCE_SECONDS` allows for a slow
start or a long save), and a cancel is the flag every rank reads at its next step.
"""

from __future__ import annotations

import shlex
import time

from core.distributed import RENDEZVOUS_PORT, cluster_command
from core.store import Run

DEVICE_PREFIX = "scheduler:"
# A scheduler run silent this long (no step, evaluation batch or save; or no start since it began) is presumed lost.
SILENCE_SECONDS = 900.0


def scheduler_device(device: str) -> str:
    """The store's device of a run the scheduler launches ("scheduler:cuda"; "auto" is decided on the node)."""
    return DEVICE_PREFIX + device


def is_scheduler_run(run: Run) -> bool:
    return run.device.startswith(DEVICE_PREFIX)


def plain_device(run: Run) -> str:
    """The device the trainer takes on the node it runs on: the config's, with "auto" decided there."""
    device = run.device.removeprefix(DEVICE_PREFIX)
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def silent_too_long(run: Run, now: float | None = None) -> bool:
    """Whether a running scheduler run has shown no sign of life for `SILENCE_SECONDS`."""
    now = now or time.time()
    last = max((moment for moment in (run.heartbeat_at, run.progress_at, run.started_at) if moment), default=now)
    return now - last > SILENCE_SECONDS


def slurm_script(config_file: str, nodes: int, per_node: int, workspace: str = "/shared/workspace") -> str:
    """A SLURM batch script that records the run once (from the config file) and starts its worker on every node."""
    command = cluster_command("$RUN_ID", nodes, per_node, endpoint=f"$HEAD_NODE:{RENDEZVOUS_PORT}")
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --gpus-per-node={per_node}",
            "# The workspace is read and written by every node and by the app: a shared filesystem, the same path.",
            f"export WORKBENCH_WORKSPACE={shlex.quote(workspace)}",
            "# Record the run once; the app lists it from now on (queued, then running, then its ending).",
            f"RUN_ID=$(python -m core train {shlex.quote(config_file)} --external)",
            'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"srun {command}",
            "",
        ]
    )
