"""Attribution drift: one example's map under every stage of a run — before training, each kept checkpoint, after —
so a learner sees when the model started looking at a word or a patch.

Every stage is explained towards the same class (the final model's prediction, or the target given), with the same
method and parameters, through the explainer the run's task names (`core.explain.loading`). The result holds the
units × stages matrix, each stage's Spearman correlation with the final map, the rank of every unit at every stage,
and the step from which the final map's top unit stayed on top ("settled"). Two runs side by side are two calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from core.errors import UserError


@dataclass(frozen=True)
class Drift:
    run_id: str
    method: str
    target: int | None
    target_label: str
    stages: list[str]
    steps: list[int]  # the training step of each stage: 0 before, N for checkpoint-N, the last step after
    units: list[str]
    scores: list[list[float]]  # stages × units
    spearman_to_final: list[float]
    top_unit: str  # the final map's most important unit
    top_ranks: list[int]  # its rank (1 = first) at each stage
    settled_step: int  # the first step from which the final top unit stays first (at the latest, the last stage's)

    def ranks(self) -> list[list[int]]:
        """Each unit's rank (1 = most important for the target) at each stage."""
        return [_ranks(row) for row in self.scores]

    def to_dict(self) -> dict:
        return asdict(self)


def stage_step(stage: str, final_step: int) -> int:
    if stage == "before":
        return 0
    if stage == "after":
        return final_step
    found = re.fullmatch(r"checkpoint-(\d+)", stage)
    return int(found.group(1)) if found else final_step


def _ranks(scores) -> list[int]:
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order), dtype=int)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks.tolist()


def attribution_drift(
    run_id: str,
    item,
    method: str = "ig",
    target=None,
    word: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    **params,
) -> Drift:
    """`item` (a text, an image; a NER sentence with `word`) explained under every stage of run `run_id`."""
    from core.checkpoints import available_stages
    from core.explain.loading import load_explainer
    from core.explain.sanity import spearman
    from core.store import RunStore

    run = RunStore().get(run_id)
    if run is None:
        raise UserError(f"There is no run '{run_id}' in this workspace; `python -m core runs` lists the runs there are.")
    stages = available_stages(run)
    if len(stages) < 2:
        raise UserError(
            f"Run {run_id} has only {len(stages)} model(s) on disk, so there is nothing to compare; its checkpoints were "
            "not kept. Train again with more checkpoints kept (keep_checkpoints: 0 keeps them all)."
        )
    final = load_explainer(run_id, stages[-1], word)
    last = final.explain(item, method, target, **params)
    if last.target is None:
        raise UserError("Drift follows one class's evidence; this model gives one similarity score. Pick a class model.")
    explanations = []
    for index, stage in enumerate(stages):
        explainer = final if stage == stages[-1] else load_explainer(run_id, stage, word)
        explanations.append(last if explainer is final else explainer.explain(item, method, last.target, **params))
        if progress:
            progress((index + 1) / len(stages), f"Explained stage {stage} ({index + 1} of {len(stages)})")
    units = last.units
    if any(explanation.units != units for explanation in explanations):
        raise UserError("The stages of this run split the input into different units; drift needs the same tokenizer.")
    scores = [list(map(float, explanation.scores)) for explanation in explanations]
    final_scores = scores[-1]
    top = int(np.argmax(final_scores))
    top_ranks = [_ranks(row)[top] for row in scores]
    steps = [stage_step(stage, run.step) for stage in stages]
    settled = steps[-1]
    for index in range(len(stages) - 2, -1, -1):
        if top_ranks[index] != 1:
            break
        settled = steps[index]
    return Drift(
        run_id=run_id,
        method=last.method,
        target=last.target,
        target_label=last.target_label,
        stages=stages,
        steps=steps,
        units=units,
        scores=scores,
        spearman_to_final=[spearman(row, final_scores) for row in scores],
        top_unit=units[top],
        top_ranks=top_ranks,
        settled_step=settled,
    )
