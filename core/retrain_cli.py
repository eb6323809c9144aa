"""`data edit` and `data compare`: error slice → retrain from the command line, as the Inspect page does it.

    python -m core data edit RUN_ID --relabel 3,17-20=positive --drop 5 --upweight 8,9 --copies 2 [--retrain]
    python -m core data edit RUN_ID --relabel-candidates 20 --retrain     # the data map's top 20, to the class proposed
    python -m core data compare CHILD_RUN_ID [--json]                      # lineage, accuracy per slice, fixed / broken
    python -m core data candidates RUN_ID [--k 20] [--json]                # the mislabel candidates, cleanlab's verdict
    python -m core data candidates RUN_ID --cross-check [--folds 2]        # queue the fold runs cleanlab's check reads

Rows are positions in the run's training split: the `example` column of the data map and the row
numbers of Inspect's table on the train split. `add_edit_commands(commands)` plugs the three into `data`.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import UserError


def add_edit_commands(commands) -> None:
    edit = commands.add_parser(
        "edit",
        help="write a new dataset version from a run's training rows with edits (and retrain on it)",
        description="Relabel, drop, up-weight or augment some of a run's training rows; the original is never changed.",
    )
    edit.add_argument("run_id", help="the run whose exact splits the version starts from")
    edit.add_argument("--relabel", action="append", default=[], metavar="ROWS=LABEL", help="e.g. 3,17-20=positive")
    edit.add_argument("--drop", action="append", default=[], metavar="ROWS", help="rows to leave out, e.g. 5,9")
    edit.add_argument("--upweight", action="append", default=[], metavar="ROWS", help="rows to repeat --copies more times")
    edit.add_argument("--augment", action="append", default=[], metavar="ROWS", help="rows to add --copies perturbed copies of")
    edit.add_argument("--copies", type=int, default=1, help="up-weight and augment: how many more of each row (default 1)")
    edit.add_argument(
        "--relabel-candidates", type=int, metavar="K", help="relabel the data map's top K mislabel candidates to the class "
        "the run's model predicted instead while it trained (core.retrain.proposed_labels)",
    )  # fmt: skip
    edit.add_argument("--name", help="the version's name (default: the dataset's name plus -edit)")
    edit.add_argument("--retrain", action="store_true", help="queue a run with the parent's config on the new version")
    edit.set_defaults(handler=command_edit)

    compare = commands.add_parser("compare", help="a run trained on a dataset version against its parent run")
    compare.add_argument("run_id", help="the child run")
    compare.add_argument("--split", default="test", help="the split to compare on (default test)")
    compare.add_argument("--json", action="store_true", help="print it as JSON")
    compare.set_defaults(handler=command_compare)

    candidates = commands.add_parser(
        "candidates", help="a run's mislabel candidates from its data map, cross-checked with cleanlab's find_label_issues"
    )
    candidates.add_argument("run_id")
    candidates.add_argument("--k", type=int, default=20, help="how many candidates to list (default 20)")
    candidates.add_argument("--json", action="store_true", help="print them as JSON")
    candidates.add_argument(
        "--cross-check", action="store_true",
        help="queue the fold runs whose out-of-sample probabilities cleanlab's find_label_issues reads",
    )  # fmt: skip
    candidates.add_argument("--folds", type=int, default=2, help="fold runs for --cross-check (default 2)")
    candidates.set_defaults(handler=command_candidates)


def parse_rows(text: str) -> tuple[int, ...]:
    """'3,17-20' → (3, 17, 18, 19, 20), or a sentence saying what a row list looks like."""
    rows: list[int] = []
    try:
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            first, _, last = part.partition("-")
            rows += range(int(first), int(last or first) + 1)
    except ValueError:
        raise UserError(f"{text!r} is not a list of rows; write rows as 3,17-20 (positions in the training split).") from None
    return tuple(rows)


def edits_from(arguments) -> list:
    from core.data.versions import Edit

    edits = []
    for relabel in arguments.relabel:
        rows, equals, label = relabel.rpartition("=")
        if not equals or not rows:
            raise UserError(f"--relabel {relabel!r} needs ROWS=LABEL, e.g. --relabel 3,17-20=positive.")
        edits.append(Edit("relabel", parse_rows(rows), label=label))
    for action in ("drop", "upweight", "augment"):
        for rows in getattr(arguments, action):
            edits.append(Edit(action, parse_rows(rows), copies=arguments.copies))
    return edits


def command_edit(arguments) -> int:
    from core.cli_support import shown
    from core.retrain import candidate_edits, retrain, version_from_run

    edits = edits_from(arguments)
    if arguments.relabel_candidates:
        edits += candidate_edits(arguments.run_id, arguments.relabel_candidates)
    if arguments.retrain:
        version, child = retrain(arguments.run_id, edits, arguments.name)
    else:
        version, child = version_from_run(arguments.run_id, edits, arguments.name), None
    print(f"wrote dataset version {version.name}: {shown(version.summary())}; checksum {version.checksum[:12]}")
    if child:
        print(f"queued run {child.id} ({shown(child.name)}); `python -m core data compare {child.id}` compares it when done")
    else:
        print(f"train on it with `dataset: {version.name}`, or run this again with --retrain")
    return 0


def command_compare(arguments) -> int:
    from core.retrain import compare_with_parent, edited_rows, lineage

    steps = lineage(arguments.run_id)
    outcome = compare_with_parent(arguments.run_id, split=arguments.split)
    found = comparison_record(steps, outcome, edited_rows(outcome))
    print(json.dumps(found, indent=2, ensure_ascii=False) if arguments.json else render(found, arguments.split))
    return 0


def command_candidates(arguments) -> int:
    from core.cli_support import shown
    from core.dynamics import data_map
    from core.label_check import checked_candidates, start_cross_check
    from core.retrain import existing_run
    from core.store import RunStore

    if arguments.k < 1:
        raise UserError(f"--k {arguments.k} lists nothing; give how many candidates to list, e.g. --k 20.")
    run = existing_run(RunStore(), arguments.run_id)
    if arguments.cross_check:
        runs = start_cross_check(run.id, arguments.folds)
        print(f"cross-check of run {run.id}: fold runs {', '.join(fold.id for fold in runs)}; run this again without "
              "--cross-check once they finish")  # fmt: skip
        return 0
    frame = data_map(run)
    candidates, agreement = checked_candidates(run, frame, arguments.k)
    shown_column = "text" if "text" in candidates else "image"
    columns = [
        column
        for column in ("example", shown_column, "label", "confidence", "variability", "region", "cleanlab")
        if column in candidates
    ]
    records = candidates[columns].to_dict("records")
    if arguments.json:
        print(json.dumps({"candidates": records, "cleanlab": agreement}, indent=2, ensure_ascii=False, default=str))
        return 0
    for row in records:
        flag = {True: "  cleanlab: yes", False: "  cleanlab: no"}.get(row.get("cleanlab"), "")
        print(
            f"{row['example']:>6}  {shown(str(row['label']))}  confidence {row['confidence']:.2f}  "
            f"variability {row['variability']:.2f}  {row['region']}{flag}  {shown(str(row[shown_column]))[:80]}"
        )
    print(agreement)
    return 0


def comparison_record(steps, outcome, edited) -> dict[str, Any]:
    comparison = outcome.comparison
    return {
        "lineage": [{"kind": step.kind, "key": step.key, "text": step.text, "exists": step.exists} for step in steps],
        "parent": outcome.parent.id,
        "child": outcome.child.id,
        "version": outcome.version.name,
        "accuracy": {"parent": comparison.accuracy_a, "child": comparison.accuracy_b},
        "fixed": len(comparison.fixed),
        "broken": len(comparison.broken),
        "slices": outcome.slices.to_dict("records"),
        "edited": edited.to_dict("records"),
    }


def render(found: dict[str, Any], split: str) -> str:
    from core.cli_support import shown

    lines = ["lineage:", *(f"  {'' if step['exists'] else '(gone) '}{shown(step['text'])}" for step in found["lineage"])]
    accuracy = found["accuracy"]
    lines.append(
        f"{split} accuracy: parent {accuracy['parent']:.1%} → child {accuracy['child']:.1%}; "
        f"{found['fixed']} fixed, {found['broken']} broken"
    )
    lines += ["per slice:"] + [
        f"  {shown(row['slice'])}: {row['examples']} examples, {row['accuracy (parent)']:.1%} → {row['accuracy (child)']:.1%}"
        for row in found["slices"]
    ]
    lines += ["edited training rows (predicted as their label in the version):"] + [
        f"  {row['edit']}: {row['rows']} rows, parent {row['right (parent)']}, child {row['right (child)']}"
        for row in found["edited"]
    ]
    return "\n".join(lines)
