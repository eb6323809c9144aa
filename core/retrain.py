"""Error slice → retrain: edit some of a run's training rows, retrain on the edited copy, and see what changed.

    version, child = retrain(run_id, [Edit("relabel", (3, 17), label="positive")])   # a new dataset version + a queued run
    outcome = compare_with_parent(child.id)      # accuracy before / after, per class, fixed and broken examples
    steps = lineage(child.id)                    # run → dataset version → parent run → … → the original dataset

The version (`core.data.versions`) is the parent run's exact splits with the edits applied to its
training rows only, so the child's test predictions pair row by row with the parent's; the child run
is the parent's config on that version, queued like any run. Nothing here touches the parent's data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.info import TEXT_CLASSIFICATION
from core.data.registry import is_registered
from core.data.splits import SPLIT_NAMES
from core.data.versions import ACTION_WORDS, Edit, VersionSpec, is_version, read_version_rows, version_spec, write_version
from core.errors import UserError
from core.store import Run, RunStore

# The tasks whose splits are text/label tables a version can hold; the others say so.
VERSIONED_TASKS = (TEXT_CLASSIFICATION,)


def version_from_run(run_id: str, edits: list[Edit], name: str | None = None, store: RunStore | None = None) -> VersionSpec:
    """A new dataset version: run `run_id`'s exact splits with `edits` applied to its training rows."""
    from core.run_files import run_config
    from core.stages import split_rows

    run = existing_run(store or RunStore(), run_id)
    if run.task not in VERSIONED_TASKS:
        raise UserError(
            f"Run {run.id} is a {run.task.replace('_', ' ')} run; dataset versions are made from text classification "
            "runs for now. Edit that dataset's file and register it again on the Data page instead."
        )
    parts = {split: split_rows(run, split) for split in SPLIT_NAMES}
    config = run_config(run)
    return write_version(
        name,
        parent_dataset=config.dataset,
        parent_run=run.id,
        splits={split: rows for split, (rows, _) in parts.items()},
        edits=edits,
        label_names=parts["train"][1],
        seed=config.seed,
    )


def existing_run(store: RunStore, run_id: str) -> Run:
    run = store.get(run_id)
    if run is None:
        raise UserError(f"There is no run {run_id!r}; `python -m core runs` lists the runs.")
    return run


def candidate_edits(run_id: str, k: int, store: RunStore | None = None) -> list[Edit]:
    """Relabel the data map's top `k` mislabel candidates to the class the run's model proposed for them while it
    trained (`proposed_labels`); the rows it never proposed another class for are left alone."""
    from core.dynamics import data_map, mislabel_candidates

    run = existing_run(store or RunStore(), run_id)
    candidates = mislabel_candidates(data_map(run), k)
    changed = candidates.assign(new=proposed_labels(run).reindex(candidates["example"]).to_numpy()).dropna(subset=["new"])
    changed = changed[changed["new"] != changed["label"]]
    return [
        Edit("relabel", tuple(int(example) for example in group["example"]), label=str(label))
        for label, group in changed.groupby("new", sort=True)
    ]


def proposed_labels(run: Run) -> pd.Series:
    """By training example: the class the model predicted most often *instead of* its label in the training passes of
    every epoch (ties: the first class), NaN where it never predicted another.

    Not the final model's prediction: a model that trains long enough memorises a wrong label, and by its last epoch
    agrees with it (on planted keywords with 10 % flipped labels, MiniLM after 8 epochs agreed with 92 % of the flipped
    rows it had contradicted on the way). A run recorded before the passes kept their predictions: the final model's.
    """
    from core import inspect
    from core.dynamics import read_dynamics

    records = read_dynamics(run)
    if "predicted" not in records.columns:
        final = inspect.predictions(run, "train", "after")
        return final["predicted"].where(final["predicted"] != final["gold"]).rename("proposed")
    names = inspect.label_names(run)
    other = records[~records["correct"].astype(bool)]
    # value_counts sorted by class before idxmax: the most frequent class, the first one among equals.
    favourite = other.groupby("index")["predicted"].agg(lambda classes: classes.value_counts().sort_index().idxmax())
    return favourite.map(lambda position: names[int(position)]).rename("proposed")


def retrain(
    run_id: str, edits: list[Edit], name: str | None = None, store: RunStore | None = None, **changes
) -> tuple[VersionSpec, Run]:
    """Write the version and queue a child run: the parent's config (with `changes`, config fields), on the version,
    under a name saying so."""
    from core.jobs import submit
    from core.run_files import run_config

    store = store or RunStore()
    parent = existing_run(store, run_id)
    version = version_from_run(run_id, edits, name, store)
    # The version already is the parent's sample and columns: no row limit, the default column names.
    config = replace(
        run_config(parent),
        dataset=version.name,
        max_rows=0,
        text_column="",
        label_column="",
        name=f"{parent.name} · {version.name}",
    )
    config = replace(config, **changes)
    try:
        child = submit(config, store)
    except UserError as problem:
        raise UserError(
            f"{problem} The dataset version {version.name} was written; start a run on it from the Train page once that is fixed."
        ) from None
    return version, child


# ---------------------------------------------------------------------------------------------
# Lineage


@dataclass(frozen=True)
class Step:
    """One link of a run's lineage: a run, a dataset version or the dataset it all started from."""

    kind: str  # "run", "dataset version" or "dataset"
    key: str
    text: str  # one sentence for the page and the CLI
    exists: bool = True


def lineage(run_id: str, store: RunStore | None = None) -> list[Step]:
    """Run → dataset version → parent run → … → the original dataset; a deleted link is named and ends the chain."""
    from core.run_files import run_config

    store = store or RunStore()
    steps: list[Step] = []
    run = existing_run(store, run_id)
    while True:
        steps.append(Step("run", run.id, run_sentence(run)))
        dataset = run_config(run).dataset
        if not (is_registered(dataset) and is_version(dataset)):
            steps.append(dataset_step(dataset))
            return steps
        spec = version_spec(dataset)
        described = f"dataset version {spec.name}: {spec.summary()} (checksum {spec.checksum[:12]})"
        steps.append(Step("dataset version", spec.name, described))
        parent = store.get(spec.parent_run)
        if parent is None:
            steps.append(Step("run", spec.parent_run, f"run {spec.parent_run} was deleted, so the lineage ends here", False))
            return steps
        if any(step.key == parent.id for step in steps):  # a loop cannot be made, but a hand-edited store could
            return steps
        run = parent


def run_sentence(run: Run) -> str:
    from core.run_files import test_report

    report = test_report(run, "after")
    accuracy = report.get("accuracy") if report else None
    measured = f", test accuracy {accuracy:.1%}" if isinstance(accuracy, float) else ""
    return f"run {run.id} ({run.name}): {run.status}{measured}"


def dataset_step(dataset: str) -> Step:
    from core.data.registry import builtin_dataset_names, is_taken

    if dataset in builtin_dataset_names():
        return Step("dataset", dataset, f"the built-in dataset {dataset}")
    if is_taken(dataset) or Path(dataset).expanduser().is_file():
        return Step("dataset", dataset, f"the dataset {dataset}")
    gone = f"the dataset {dataset} was deleted (a version keeps its own copy of the rows, so it still trains)"
    return Step("dataset", dataset, gone, exists=False)


# ---------------------------------------------------------------------------------------------
# The child against its parent


@dataclass
class ParentComparison:
    """A child run against the run its dataset version was made from, on the same split."""

    parent: Run
    child: Run
    version: VersionSpec
    comparison: object  # core.inspect.Comparison: accuracy of each, the fixed and broken examples
    slices: pd.DataFrame  # slice, examples, accuracy (parent), accuracy (child), change


def version_of(run: Run) -> VersionSpec | None:
    """The dataset version `run` trained on, or None when it trained on an ordinary dataset (or the version is gone)."""
    from core.run_files import run_config

    dataset = run_config(run).dataset
    return version_spec(dataset) if is_registered(dataset) and is_version(dataset) else None


def parent_of(child: Run, store: RunStore) -> tuple[Run, VersionSpec]:
    spec = version_of(child)
    if spec is None:
        raise UserError(
            f"Run {child.id} was not trained on a dataset version, so it has no parent run to compare with; compare two "
            "runs under Compare models, or retrain from a selection to make one."
        )
    parent = store.get(spec.parent_run)
    if parent is None:
        raise UserError(
            f"Run {spec.parent_run}, which the dataset version {spec.name} was made from, was deleted; there is "
            "nothing to compare with."
        )
    return parent, spec


def compare_with_parent(
    child_id: str, split: str = "test", stage: str = "after", store: RunStore | None = None
) -> ParentComparison:
    """Accuracy before / after overall and per gold class, and the examples fixed and broken: both runs' `stage`
    models on the same `split` (their predictions, stored once, pair row by row)."""
    from core import inspect

    store = store or RunStore()
    child = existing_run(store, child_id)
    parent, spec = parent_of(child, store)
    for run in (parent, child):
        if run.status != "completed":
            raise UserError(f"Run {run.id} is {run.status}; the comparison needs both runs completed.")
    before, after = inspect.predictions(parent, split, stage), inspect.predictions(child, split, stage)
    comparison = inspect.compare(before, after, names=("parent", "child"))
    return ParentComparison(
        parent=parent,
        child=child,
        version=spec,
        comparison=comparison,
        slices=slice_accuracy(before, after),
    )


def slice_accuracy(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of both models on all examples and on each gold class (the frames are paired row by row)."""
    slices = [("all", np.ones(len(before), dtype=bool))]
    slices += [(f"gold = {name}", (before["gold"] == name).to_numpy()) for name in sorted(before["gold"].unique())]
    rows = []
    for name, chosen in slices:
        right_before = before["correct"].to_numpy(dtype=bool)[chosen]
        right_after = after["correct"].to_numpy(dtype=bool)[chosen]
        rows.append(
            {
                "slice": name,
                "examples": int(chosen.sum()),
                "accuracy (parent)": float(right_before.mean()) if chosen.any() else float("nan"),
                "accuracy (child)": float(right_after.mean()) if chosen.any() else float("nan"),
            }
        )
    frame = pd.DataFrame(rows)
    frame["change"] = frame["accuracy (child)"] - frame["accuracy (parent)"]
    return frame


def edited_rows(outcome: ParentComparison, stage: str = "after") -> pd.DataFrame:
    """For each edit action, its training rows (with the version's labels; a dropped row its old one) and how many of
    them each model predicts as that label: did the child learn the fix the parent could not?"""
    from core.stages import open_stage, split_rows

    parent, child, spec = outcome.parent, outcome.child, outcome.version
    rows = read_version_rows(spec.name)
    train = rows[rows["split"] == "train"]
    parent_train, _ = split_rows(parent, "train")
    groups = []
    for action in ("relabel", "drop", "upweight", "augment"):
        examples = sorted({example for edit in spec.edit_list() if edit.action == action for example in edit.examples})
        if not examples:
            continue
        if action == "drop":
            chosen = parent_train.iloc[examples][["text", "label"]]
        else:
            chosen = train[train["origin"].eq("parent") | train["origin"].eq("relabelled")]
            chosen = chosen[chosen["example"].isin(examples)][["text", "label"]]
        groups.append((action, chosen.reset_index(drop=True)))
    if not groups:
        return pd.DataFrame(columns=["edit", "rows", "right (parent)", "right (child)"])
    models = {name: open_stage(run, stage) for name, run in (("parent", parent), ("child", child))}
    table = []
    for action, chosen in groups:
        entry = {"edit": ACTION_WORDS[action], "rows": len(chosen)}
        for name, model in models.items():
            predicted = np.asarray(model.predict(chosen)).argmax(axis=1)
            entry[f"right ({name})"] = int((np.asarray(model.label_names)[predicted] == chosen["label"].to_numpy()).sum())
        table.append(entry)
    return pd.DataFrame(table)
