"""Two models on the same split, for every task: which stages of a run have a frame to compare, that frame, and the
comparison (`core.inspect.compare`, each kind of frame right by its own rule).

A classifier's and a generator's frames are Inspect's predictions (any stage with a model); a tagger's are the
sentences the trainer stored (before and after on test, after on validation); an image-text run's are its fusion
predictions, or for an aligned model each pair's caption rank. The Inspect page's "Compare models" and
`python -m core compare` both read through here.
"""

from __future__ import annotations

import pandas as pd

from core import inspect
from core.assets import Progress, no_progress
from core.errors import UserError
from core.stages import task_of
from core.store import Run


def comparison_stages(run: Run, split: str) -> list[str]:
    """The run's stages with a frame on `split`, in training order; a sentence when there is none."""
    view = task_of(run).view
    if view == "pairs":
        from core.pair_runs import pair_stages

        return pair_stages(run)
    if view != "tags":
        return inspect.stages(run)
    from core.checkpoints import available_stages

    stored = [stage for stage in available_stages(run) if inspect.predictions_path(run, split, stage).is_file()]
    if not stored:
        raise UserError(
            f"Run {run.id} has no stored {split} sentences to compare: a tagging run writes them at step 0 and when "
            "training ends (validation only at the end). Pick the test split, or wait until it finishes."
        )
    return stored


def comparison_frame(run: Run, split: str, stage: str, progress: Progress = no_progress) -> pd.DataFrame:
    """The stage's frame of `split` as its view compares it (kept beside the run after the first time)."""
    view = task_of(run).view
    if view == "tags":
        from core.ner.inspect import ner_predictions

        return ner_predictions(run, split, stage)
    if view != "pairs":
        return inspect.predictions(run, split, stage, progress)
    from core.pair_runs import fusion_predictions, retrieval_frame, stage_pair_model

    pair = stage_pair_model(run, stage)
    read = fusion_predictions if pair.kind == "classification" else retrieval_frame
    return read(run, pair, stage, split, progress=progress).reset_index(drop=True).rename_axis("row")


# The share of right examples each kind of frame reports, by its predicted column (`inspect.frame_roles`).
MEASURES = {
    "predicted": "Accuracy",
    "answer": "Exact match",
    "predicted_entities": "Sentences all right",
    "retrieved": "Image→text R@1",
}


def measure_of(frame: pd.DataFrame) -> str:
    """The name of the share `inspect.compare` reports for this kind of frame."""
    return MEASURES[inspect.frame_roles(frame)["predicted"]]


def compare_stages(
    first: tuple[Run, str], second: tuple[Run, str], split: str = "test", progress: Progress = no_progress
) -> tuple[inspect.Comparison, str]:
    """(comparison of `first` = (run, stage) with `second` on the split, the name of its measure); a sentence when
    the two cannot be paired (other data, another kind of task)."""
    frames = []
    for run, stage in (first, second):
        if stage not in comparison_stages(run, split):
            raise UserError(
                f"Run {run.id} has no stage '{stage}' on {split}; pick one of {', '.join(comparison_stages(run, split))}."
            )
        frames.append(comparison_frame(run, split, stage, progress))
    labels = [stage if first[0].id == second[0].id else f"{run.name} · {stage}" for run, stage in (first, second)]
    return inspect.compare(*frames, labels), measure_of(frames[0])
