"""The `data` command: register, list, show and delete datasets of every kind, as the Data page does.

    python -m core data add FILE --task TASK [--images ZIP] [--name NAME] [--text-column C] [--label-column L]
    python -m core data list [--json]
    python -m core data show NAME [--json]
    python -m core data delete NAME
    python -m core data edit RUN_ID --relabel ROWS=LABEL | --drop ROWS | ... [--retrain]   (core/retrain_cli.py)
    python -m core data compare CHILD_RUN_ID [--json]

Every command goes through the one dataset registry (`core.data.registry`): `add` hands the files
to the kind of the task (`DatasetKind.add`, which calls the core function the Data page's Save
button calls), so an upload and a command meet the same checks and the same sentences. `show`
prints what the Data page shows of a dataset — rows per split, classes (entity types for NER) and
their balance, and the page's preview — as text, or as JSON with --json.
`add_data_parser(subparsers)` plugs the command into `core/cli.py`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.errors import UserError


def files_per_task() -> str:
    """What FILE is for each kind the registry has, for `data add --help`."""
    from core.data.registry import dataset_kinds

    kinds = dataset_kinds()
    width = max(len(task) for task in kinds)
    return "what FILE is, per task:\n" + "\n".join(f"  {task:{width}}  {kind.files}" for task, kind in kinds.items())


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="register, list, show or delete datasets (as on the Data page)",
        description="Datasets of every task, without the browser.",
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="{add,list,show,delete,edit,compare}")

    add = commands.add_parser(
        "add",
        help="check a file (and a zip of images) and register it as a dataset",
        epilog=files_per_task(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("file", help="the table, CoNLL file, zip of class folders, or CSV (with --images)")
    add.add_argument("--task", required=True, help="the task the dataset is for, as in a run config's `task:`")
    add.add_argument("--images", metavar="ZIP", help="the zip of images the CSV's paths name (images and image-text)")
    add.add_argument("--name", help="the name to register it under (default: the zip's or file's name without suffix)")
    add.add_argument("--text-column", help="text: the text column; NER: the token-list column of a JSONL/Parquet table")
    add.add_argument("--label-column", help="text: the label column; NER: the tag-list column of a JSONL/Parquet table")
    add.set_defaults(handler=command_add)

    listing = commands.add_parser("list", help="list the built-in and registered datasets of every task")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(handler=command_list)

    show = commands.add_parser("show", help="rows per split, classes and a preview of one dataset")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(handler=command_show)

    delete = commands.add_parser("delete", help="delete a registered dataset")
    delete.add_argument("name")
    delete.set_defaults(handler=command_delete)

    from core.retrain_cli import add_edit_commands

    add_edit_commands(commands)
    return parser


# ---------------------------------------------------------------------------------------------
# The commands


def command_add(arguments) -> int:
    from core.cli_support import shown
    from core.data.registry import DatasetFiles, dataset_kind

    kind = dataset_kind(arguments.task)
    check_add_flags(arguments, kind)
    file, images = Path(arguments.file), Path(arguments.images) if arguments.images else None
    # The name proposed is the Data page's: the zip's when there is one, else the file's, without its suffix.
    name = arguments.name or (images or file).stem
    info = kind.add(
        DatasetFiles(name=name, file=file, images=images, text_column=arguments.text_column, label_column=arguments.label_column)
    )
    print(f"registered {info.key} ({info.task}): {shown(info.description)}")
    print(f"use it as `dataset: {info.key}` in a run config; `python -m core data show {info.key}` shows it")
    return 0


def command_list(arguments) -> int:
    from core.cli_support import shown
    from core.data.registry import list_datasets

    entries = list_datasets()
    if arguments.json:
        print(
            json.dumps(
                [
                    {
                        "name": entry.key,
                        "task": entry.task,
                        "builtin": entry.builtin,
                        "title": entry.title,
                        "description": entry.description,
                        "source": entry.source,
                    }
                    for entry in entries
                ],
                indent=2,
            )
        )
        return 0
    width = max(len(entry.key) for entry in entries)
    print(f"{'name':{width}}  {'task':22}  {'kind':10}  description")
    for entry in entries:
        print(
            f"{entry.key:{width}}  {entry.task:22}  {'built-in' if entry.builtin else 'registered':10}  "
            f"{shown(entry.description)}"
        )
    return 0


def command_show(arguments) -> int:
    from core.data.registry import dataset_kind, find_dataset

    info = find_dataset(arguments.name)
    kind = dataset_kind(info.task)
    details = {"name": info.key, "task": info.task, "builtin": info.builtin, **kind.show(info.key)}
    print(json.dumps(details, indent=2, ensure_ascii=False) if arguments.json else render(details, kind))
    return 0


def command_delete(arguments) -> int:
    from core.data.registry import delete_dataset

    delete_dataset(arguments.name)
    print(f"deleted dataset {arguments.name}")
    return 0


def check_add_flags(arguments, kind) -> None:
    """Refuse a flag the task has no use for, rather than ignore it silently."""
    if (arguments.text_column or arguments.label_column) and not kind.columns:
        raise UserError(
            f"--text-column and --label-column name the columns of a text or NER table; a dataset for "
            f"{arguments.task} has none to choose (its CSV's header names them)."
        )
    if arguments.images and kind.images == "no":
        raise UserError(f"--images is for image and image-text datasets; a dataset for {arguments.task} is the one file.")
    if not arguments.images and kind.images == "required":
        raise UserError(f"A dataset for {arguments.task} is a CSV of pairs with a zip of images; give the zip as --images ZIP.")


# ---------------------------------------------------------------------------------------------
# Text output


def render(details: dict[str, Any], kind) -> str:
    """The Data page's overview as lines: what it is, rows per split, classes and their balance, the preview."""
    from core.cli_support import shown

    rows, classes = details["rows"], details["classes"]
    lines = [
        f"{details['name']} ({details['task']}, {'built-in' if details['builtin'] else 'registered'})",
        f"source: {shown(details['source'])}",
        "rows per split: "
        + " · ".join(f"{split} {count:,}" for split, count in rows.items())
        + f" ({sum(rows.values()):,} in all)",
        f"{kind.classes} ({len(classes)}): {', '.join(map(shown, classes))}" if classes else f"{kind.classes}: none",
    ]
    if "scheme" in details:
        lines.append(f"tag scheme: {details['scheme']}")
    if "prompt_template" in details and classes:
        lines.append(f"zero-shot prompt: {shown(details['prompt_template'])}")
    if details["balance"]:
        lines += [f"{kind.classes} per split:", *balance_table(details["balance"])]
    lines += ["preview:", *(f"  {shown(line)}" for line in kind.preview_lines(details["preview"]))]
    if "image_sizes" in details:
        lines.append(
            f"image sizes (of the first {sum(details['image_sizes'].values()):,} images): "
            + ", ".join(f"{size} {count:,}" for size, count in details["image_sizes"].items())
        )
    return "\n".join(lines)


def balance_table(counts: dict[str, dict[str, int]]) -> list[str]:
    """A class-by-split table of counts, one line per class."""
    from core.cli_support import shown

    splits, names = list(counts), [shown(name) for name in next(iter(counts.values()))]
    width = max(len(name) for name in names)
    header = f"  {'':{width}}  " + "  ".join(f"{split:>10}" for split in splits)
    return [header] + [
        f"  {name:{width}}  " + "  ".join(f"{count:>10,}" for count in row)
        for name, row in zip(names, zip(*(part.values() for part in counts.values())))
    ]
