"""cleanlab's cross-check of the data map's mislabel candidates, on out-of-sample probabilities.

cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021) asks, for every training example, for the
class probabilities of a model that never trained on it. A run's own passes cannot give that: by its end the model
has seen every example several times. So the cross-check is cleanlab's own recipe, K-fold cross-validation, built
from what the workbench already has: fold run k is the parent's config on a dataset version with fold k of the
training rows dropped (`core.retrain`), queued like any run (so the queue, cancel, resume and the Runs page apply),
and its final model predicts the rows it left out. Together the K folds give every training row one out-of-sample
probability vector, cached in the parent's run folder.

    runs = start_cross_check(run_id, folds=2)        # queue the fold runs (about K × the parent's training time)
    issues = label_issues(run)                       # once they finish: cleanlab's flagged rows, ranked
    candidates, sentence = checked_candidates(run, data_map(run), k=20)   # the top k, marked where cleanlab agrees
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.data.versions import Edit
from core.errors import UserError
from core.store import Run, RunStore

PLAN_FILE = "cross_check.json"  # in the parent's run folder: the folds, their runs and the rows each left out
PROBABILITIES_FILE = "out_of_sample.parquet"  # one row per training example: example, gold, probs
DEFAULT_FOLDS = 2
MAX_FOLDS = 10


@dataclass(frozen=True)
class Plan:
    """The cross-check of one run: fold k's run left out `examples[k]` (positions in the parent's training split)."""

    folds: int
    runs: list[str]
    examples: list[list[int]]


def fold_examples(labels: pd.Series, folds: int, seed: int) -> list[list[int]]:
    """Stratified folds: each class's positions shuffled (seeded) and dealt round-robin, so each fold keeps every class."""
    rng = np.random.default_rng(seed)
    dealt: list[list[int]] = [[] for _ in range(folds)]
    for _, positions in sorted(labels.groupby(labels.to_numpy()).indices.items()):
        for turn, position in enumerate(rng.permutation(positions)):
            dealt[turn % folds].append(int(position))
    return [sorted(fold) for fold in dealt]


def read_plan(run: Run) -> Plan | None:
    path = run.directory / PLAN_FILE
    if not path.exists():
        return None
    return Plan(**json.loads(path.read_text()))


def start_cross_check(run_id: str, folds: int = DEFAULT_FOLDS, store: RunStore | None = None) -> list[Run]:
    """Queue the fold runs of run `run_id` (or return the ones already queued, unless one of them failed)."""
    from core.retrain import existing_run, retrain
    from core.run_files import run_config
    from core.stages import split_rows

    store = store or RunStore()
    parent = existing_run(store, run_id)
    if parent.status != "completed":
        raise UserError(f"Run {run_id} is {parent.status}; the cross-check starts from a completed run.")
    if not 2 <= folds <= MAX_FOLDS:
        raise UserError(f"{folds} folds cannot cross-validate; pick 2 to {MAX_FOLDS} (each fold run leaves 1/folds out).")
    if not needs_start(parent, store):
        return [store.get(key) for key in read_plan(parent).runs]
    rows, _ = split_rows(parent, "train")
    config = run_config(parent)
    dealt = fold_examples(rows["label"].reset_index(drop=True), folds, config.seed)
    # Each fold run trains on (folds - 1) / folds of the rows for as many steps as the parent took: fewer steps would
    # judge the labels with a weaker model than the one whose data map the candidates come from.
    epochs = config.epochs * folds / (folds - 1)
    runs = []
    for index, examples in enumerate(dealt):
        name = fresh_name(f"{parent.id}-fold-{index + 1}-of-{folds}")
        _, child = retrain(parent.id, [Edit("drop", tuple(examples))], name=name, store=store, epochs=epochs)
        runs.append(child)
    temporary = parent.directory / f"{PLAN_FILE}.tmp"
    temporary.write_text(json.dumps({"folds": folds, "runs": [run.id for run in runs], "examples": dealt}))
    temporary.replace(parent.directory / PLAN_FILE)
    return runs


def needs_start(run: Run, store: RunStore | None = None) -> bool:
    """Whether the cross-check of `run` has yet to be started (or started again: a fold run failed or was deleted)."""
    plan = read_plan(run)
    if plan is None:
        return True
    store = store or RunStore()
    return any(fold is None or fold.status not in ("queued", "running", "completed") for fold in map(store.get, plan.runs))


def fresh_name(name: str) -> str:
    """`name`, or a numbered variant when an earlier (failed) cross-check left a version by that name."""
    from core.data.registry import free_name, is_taken

    return free_name(name) if is_taken(name) else name


def progress_sentence(run: Run, store: RunStore | None = None) -> str:
    """Where the cross-check of `run` stands, as one sentence (or how to start it)."""
    from core.retrain import VERSIONED_TASKS

    plan = read_plan(run)
    if plan is None and getattr(run, "task", None) not in VERSIONED_TASKS:
        return "cleanlab's cross-check trains fold runs on dataset versions, which text classification runs have for now."
    if plan is None:
        return (
            f"cleanlab needs out-of-sample probabilities: start the cross-check to train {DEFAULT_FOLDS} fold runs with "
            f"this run's settings, each leaving out 1/{DEFAULT_FOLDS} of the training rows and training as many steps "
            f"(about {DEFAULT_FOLDS}× this run's training time, in the background)."
        )
    store = store or RunStore()
    states = []
    for key in plan.runs:
        fold = store.get(key)
        states.append(f"{key} {'deleted' if fold is None else fold.status}")
    return f"The cross-check's {plan.folds} fold runs: " + ", ".join(states) + "."


def out_of_sample(run: Run, store: RunStore | None = None) -> pd.DataFrame:
    """Every training example's probabilities from the fold run that left it out (`example`, `gold` as a class id
    in the parent's order, `probs`), computed once all fold runs completed and cached in the parent's run folder."""
    from scipy.special import softmax

    from core.stages import open_stage, split_rows

    cached = run.directory / PROBABILITIES_FILE
    if cached.exists():
        return pd.read_parquet(cached)
    plan = read_plan(run)
    store = store or RunStore()
    folds = [store.get(key) for key in plan.runs] if plan else []
    if plan is None or any(fold is None or fold.status != "completed" for fold in folds):
        raise UserError(progress_sentence(run, store))
    rows, label_names = split_rows(run, "train")
    rows = rows.reset_index(drop=True)
    parts = []
    for fold, examples in zip(folds, plan.examples):
        model = open_stage(fold, "after")
        order = [list(model.label_names).index(name) for name in label_names]  # the fold's classes in the parent's order
        probabilities = softmax(np.asarray(model.predict(rows.iloc[examples]), dtype=np.float64)[:, order], axis=1)
        parts.append(pd.DataFrame({"example": examples, "probs": list(probabilities)}))
    frame = pd.concat(parts, ignore_index=True).sort_values("example", ignore_index=True)
    frame.insert(1, "gold", [label_names.index(label) for label in rows.loc[frame["example"], "label"]])
    temporary = run.directory / f"{PROBABILITIES_FILE}.tmp"
    frame.to_parquet(temporary, index=False)
    temporary.replace(cached)
    return frame


def label_issues(run: Run, store: RunStore | None = None) -> pd.DataFrame:
    """cleanlab's `find_label_issues` on the out-of-sample probabilities: one row per flagged training example
    (`example`; `rank`, 1 = the most likely mislabelled, by cleanlab's self-confidence order; `suggested`, the class
    id the out-of-sample probabilities favour)."""
    from cleanlab.filter import find_label_issues

    frame = out_of_sample(run, store)
    probabilities = np.stack(frame["probs"].to_numpy()).astype(np.float64)
    flagged = find_label_issues(frame["gold"].to_numpy(), probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    return pd.DataFrame(
        {
            "example": frame["example"].to_numpy()[flagged],
            "rank": np.arange(1, len(flagged) + 1),
            "suggested": probabilities[flagged].argmax(axis=1),
        }
    )


def checked_candidates(run: Run, frame: pd.DataFrame, k: int) -> tuple[pd.DataFrame, str]:
    """The data map's top-k mislabel candidates with a `cleanlab` column (whether cleanlab flags each too) and the
    sentence saying how far the two agree; before the cross-check has finished, the candidates alone and where it stands."""
    from core.dynamics import mislabel_candidates

    candidates = mislabel_candidates(frame, k)
    try:
        issues = label_issues(run)
    except UserError as problem:
        return candidates, str(problem)
    agreed = candidates["example"].isin(issues["example"])
    plan = read_plan(run)
    source = f"{len(plan.runs)} fold runs" if plan else "the fold runs"  # the cached probabilities can outlive the plan
    return candidates.assign(cleanlab=agreed), (
        f"cleanlab's find_label_issues, on out-of-sample probabilities from {source}, flags "
        f"{len(issues)} training row(s); {int(agreed.sum())} of these {len(candidates)} candidates are among them."
    )
