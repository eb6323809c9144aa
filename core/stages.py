"""A run's stages after training: one way to rebuild its split and one way to open a stage's model.

    rows, names = split_rows(run, "test")       # the run's exact split (dataset, columns, seed, row limit)
    model = open_stage(run, "after")             # a StageModel: model, its preprocessor, class names
    logits = model.predict(rows)                 # (len(rows), classes), batched as the task feeds it

Both are the run's task's own (`Task.split_rows`, `Task.open_stage`, `Task.stage_logits`): Inspect, the
explanations, robustness checks and the `explain` command read every modality through these two calls.
A stage is "before" (the pretrained model with its untrained head), "checkpoint-N" or "after".
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pandas as pd

from core.errors import UserError
from core.store import Run
from core.tasks import TASKS
from core.tasks.base import StageModel

SPLITS = ("test", "validation", "train")  # the order pages offer them in: the held-out split first


def task_of(run: Run):
    """The run's task, or a sentence saying this version does not know it."""
    task = TASKS.get(run.task)
    if task is None:
        raise UserError(
            f"Run {run.id} is a run of the task '{run.task}', which this version of the workbench does not "
            "know; pick another run."
        )
    return task


def split_rows(run: Run, split: str) -> tuple[pd.DataFrame, list[str]]:
    """The run's exact `split` (train, validation or test) as rows, and its class names."""
    if split not in SPLITS:
        raise UserError(f"There is no split '{split}'; choose one of {', '.join(SPLITS)}.")
    return task_of(run).split_rows(run, split)


STAGE_CACHE_SIZE = 4  # opened stage models kept (each holds a model in memory)
_OPENED: OrderedDict[tuple, StageModel] = OrderedDict()
_LOCK = threading.Lock()


def stage_key(run: Run, stage: str) -> tuple:
    """(workspace, run, stage, time the stage's model was written): a re-saved model is a new key."""
    from core.checkpoints import stage_folder
    from core.workspace import workspace_root

    written = stage_folder(run, stage) / "config.json"
    return str(workspace_root()), run.id, stage, written.stat().st_mtime_ns if written.exists() else None


def open_stage(run: Run, stage: str) -> StageModel:
    """The model of one stage of a run, ready to predict and explain, opened once and kept for the next caller
    (Inspect, the explainers, retrieval) until the stage's model is written again; a sentence when it cannot be read."""
    key = stage_key(run, stage)
    with _LOCK:
        if key in _OPENED:
            _OPENED.move_to_end(key)
            return _OPENED[key]
    opened = read_stage(run, stage)
    with _LOCK:
        _OPENED[key] = opened
        while len(_OPENED) > STAGE_CACHE_SIZE:
            _OPENED.popitem(last=False)
    return opened


def clear_stage_cache() -> None:
    with _LOCK:
        _OPENED.clear()


def read_stage(run: Run, stage: str) -> StageModel:
    """The model of one stage of a run, read from disk through its task; a sentence when it cannot be read."""
    from core.checkpoints import available_stages

    if not run.directory.exists():
        raise UserError(f"The directory of run {run.id} was deleted; its models are gone. Pick another run.")
    if stage not in available_stages(run):
        raise UserError(f"Run {run.id} has no '{stage}' model; available: {', '.join(available_stages(run)) or 'none'}.")
    try:
        opened = task_of(run).open_stage(run, stage)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - a checkpoint a running trainer is still writing, or rotated away
        raise UserError(
            f"The '{stage}' model of run {run.id} could not be read ({type(error).__name__}: {str(error)[:200]}); "
            "a running run may still be writing it. Pick another stage or try again in a moment."
        ) from None
    for parameter in opened.model.parameters():  # after training only input gradients are ever needed
        parameter.requires_grad_(False)
    opened.model.eval()
    return opened
