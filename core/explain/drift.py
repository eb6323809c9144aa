"""Attribution drift: one example's map under every stage of a run — before training, each kept checkpoint, after —
so a learner sees when the model started looking at a word or a patch.

Every stage is explained towards the same class (the final model's prediction, or the target given), with the same
method and parameters, through the explainer the run's task names (`core.explain.loading`). The result holds the
units × stages matrix, each stage's Spearman correlation with the final map, the rank of every unit at every stage,
and the step from which the final map's top unit stayed on top ("settled").

Two runs side by side (LoRA against full fine-tuning, plain against adversarial; `drift_side_by_side`) explain the
same example towards the same class, and follow the same unit: the first run's final top unit, so both answer "when
did this model start looking at *that* word".
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
    top_unit: str  # the unit followed: the final map's most important one, unless another run's was asked for
    top_ranks: list[int]  # its rank (1 = first) at each stage
    settled_step: int | None  # the first step from which it stays first; None when it is not first at the last stage

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


def settled_from(steps: list[int], ranks: list[int]) -> int | None:
    """The first step from which `ranks` stays 1 to the end, or None when the last stage's rank is not 1."""
    settled = None
    for step, rank in zip(reversed(steps), reversed(ranks)):
        if rank != 1:
            break
        settled = step
    return settled


def attribution_drift(
    run_id: str,
    item,
    method: str = "ig",
    target=None,
    word: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    follow: int | None = None,
    **params,
) -> Drift:
    """`item` (a text, an image; a NER sentence with `word`) explained under every stage of run `run_id`, following
    unit `follow` (by position; the final map's top unit when not given)."""
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
    if follow is not None and not 0 <= follow < len(units):
        raise UserError(f"Unit {follow} is not in this input, which has {len(units)} units (0 to {len(units) - 1}).")
    top = int(np.argmax(final_scores)) if follow is None else follow
    top_ranks = [_ranks(row)[top] for row in scores]
    steps = [stage_step(stage, run.step) for stage in stages]
    settled = settled_from(steps, top_ranks)
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


def drift_side_by_side(
    first_run: str,
    second_run: str,
    item,
    method: str = "ig",
    target=None,
    word: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    **params,
) -> tuple[Drift, Drift]:
    """The drift of `item` under two runs: the second explained towards the class the first explains and following the
    first's top unit, so the two answer the same question on each run's own checkpoint grid."""

    def half(offset: float) -> Callable[[float, str], None] | None:
        return (lambda done, text: progress(offset + done / 2, text)) if progress else None

    if first_run == second_run:
        raise UserError("Pick a different run to put beside this one: a run beside itself shows nothing new.")
    first = attribution_drift(first_run, item, method, target, word=word, progress=half(0.0), **params)
    second = attribution_drift(
        second_run, item, method, first.target, word=word, progress=half(0.5), follow=int(np.argmax(first.scores[-1])),
        **params,
    )  # fmt: skip
    if second.units != first.units:
        raise UserError(
            f"Runs {first_run} and {second_run} split this input into different units (different tokenizers or image "
            "sizes), so their maps cannot be set side by side; pick two runs of the same base model."
        )
    if second.target_label != first.target_label:
        raise UserError(
            f"Class {first.target} is '{first.target_label}' in run {first_run} but '{second.target_label}' in run "
            f"{second_run}: pick two runs trained on the same classes."
        )
    return first, second


def drift_partners(run) -> list:
    """The completed runs that can be set beside `run`: the same task on the same base model (so the same units and,
    trained on the same classes, the same targets), newest first."""
    from core.run_files import run_config
    from core.store import RunStore

    model = run_config(run).model
    return [
        other
        for other in RunStore().list(("completed",))
        if other.id != run.id and other.task == run.task and run_config(other).model == model
    ]
