"""The `data` command: register, list, show and delete datasets of every kind, as the Data page does.

    python -m core data add FILE --task TASK [--images ZIP] [--name NAME] [--text-column C] [--label-column L]
    python -m core data list [--json]
    python -m core data show NAME [--json]
    python -m core data delete NAME

`add` reads the files and hands their bytes to the core function the Data page's Save button calls
for that task (the files each task takes are in `FILES_PER_TASK`), so an upload and a command meet
the same checks and the same sentences. `show` prints what the Data page shows of a dataset — rows per split, classes (entity types for NER)
and their balance, and the page's preview — as text, or as JSON with --json.
`add_data_parser(subparsers)` plugs the command into `core/cli.py`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError

TEXT_PREVIEW_ROWS = 20  # the Data page's preview sizes
NER_PREVIEW_SENTENCES = 8
PAIR_PREVIEW_PAIRS = 12
IMAGES_PER_CLASS = 6
IMAGE_SIZE_SAMPLE = 300
FILES_PER_TASK = """what FILE is, per task:
  text_classification     a CSV / TSV / JSONL / Parquet table (columns guessed as on the Data page unless given)
  image_classification    a zip of class folders, or a CSV of path,label with --images ZIP
  token_classification    CoNLL text, or JSONL / Parquet with token and tag lists
  image_text_contrastive  a CSV of image,caption[,label] with --images ZIP
  image_text_fusion       a CSV of image,text,label with --images ZIP"""


@dataclass(frozen=True)
class Kind:
    """How one task's datasets are added, listed and shown: each a call into that modality's core module."""

    add: Callable[[argparse.Namespace], Any]  # the parsed `data add` -> the registered DatasetInfo
    listed: Callable[[], list]  # built-in first, then registered: DatasetInfo
    show: Callable[[str], dict[str, Any]]  # name -> what the Data page shows, as plain data
    preview: Callable[[Any], list[str]]  # show()'s "preview" -> lines of text
    columns: bool = False  # whether --text-column / --label-column mean something here
    images: str = "no"  # --images ZIP: "no", "optional" (FILE is then the labels CSV) or "required"
    classes: str = "classes"  # what show()'s "classes" are


def kinds() -> dict[str, Kind]:
    """Task key -> Kind. Imported on use: the modality modules load pandas, PIL and more."""
    from core.data.info import TEXT_CLASSIFICATION
    from core.image_text.data import CONTRASTIVE, FUSION
    from core.images.datasets import IMAGE_CLASSIFICATION
    from core.ner.data import TOKEN_CLASSIFICATION

    return {
        TEXT_CLASSIFICATION: Kind(add_table, list_tables, show_table, table_preview, columns=True),
        IMAGE_CLASSIFICATION: Kind(add_images, list_images, show_images, image_preview, images="optional"),
        TOKEN_CLASSIFICATION: Kind(add_ner, list_ner, show_ner, ner_preview, columns=True, classes="entity types"),
        **{kind: Kind(lambda arguments, kind=kind: add_pairs(arguments, kind), lambda kind=kind: list_pairs(kind),
                      lambda name, kind=kind: show_pairs(name, kind), pair_preview, images="required")
           for kind in (CONTRASTIVE, FUSION)},
    }


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="register, list, show or delete datasets (as on the Data page)",
                                   description="Datasets of every task, without the browser.")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="{add,list,show,delete}")

    add = commands.add_parser("add", help="check a file (and a zip of images) and register it as a dataset",
                              epilog=FILES_PER_TASK, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser


# ---------------------------------------------------------------------------------------------
# The commands


def command_add(arguments) -> int:
    from core.cli import shown

    kind = kind_of_task(arguments.task)
    check_add_flags(arguments, kind)
    info = kind.add(arguments)
    print(f"registered {info.key} ({info.task}): {shown(info.description)}")
    print(f"use it as `dataset: {info.key}` in a run config; `python -m core data show {info.key}` shows it")
    return 0


def command_list(arguments) -> int:
    from core.cli import shown

    entries = [entry for kind in kinds().values() for entry in kind.listed()]
    if arguments.json:
        print(json.dumps([{"name": entry.key, "task": entry.task, "builtin": entry.builtin, "title": entry.title,
                           "description": entry.description, "source": entry.source} for entry in entries], indent=2))
        return 0
    width = max(len(entry.key) for entry in entries)
    print(f"{'name':{width}}  {'task':22}  {'kind':10}  description")
    for entry in entries:
        print(f"{entry.key:{width}}  {entry.task:22}  {'built-in' if entry.builtin else 'registered':10}  {shown(entry.description)}")
    return 0


def command_show(arguments) -> int:
    task, info = find_dataset(arguments.name)
    kind = kinds()[task]
    details = {"name": info.key, "task": task, "builtin": info.builtin, **kind.show(info.key)}
    print(json.dumps(details, indent=2, ensure_ascii=False) if arguments.json else render(details, kind))
    return 0


def command_delete(arguments) -> int:
    from core.data.registry import delete_dataset

    delete_dataset(arguments.name)
    print(f"deleted dataset {arguments.name}")
    return 0


def kind_of_task(task: str) -> Kind:
    known = kinds()
    if task not in known:
        raise UserError(f"There is no task {task!r} with datasets; use one of {', '.join(known)}.")
    return known[task]


def check_add_flags(arguments, kind: Kind) -> None:
    """Refuse a flag the task has no use for, rather than ignore it silently."""
    if (arguments.text_column or arguments.label_column) and not kind.columns:
        raise UserError(f"--text-column and --label-column name the columns of a text or NER table; a dataset for "
                        f"{arguments.task} has none to choose (its CSV's header names them).")
    if arguments.images and kind.images == "no":
        raise UserError(f"--images is for image and image-text datasets; a dataset for {arguments.task} is the one file.")
    if not arguments.images and kind.images == "required":
        raise UserError(f"A dataset for {arguments.task} is a CSV of pairs with a zip of images; give the zip as --images ZIP.")


def find_dataset(name: str):
    """(task, DatasetInfo) of the built-in or registered dataset `name`: whichever task's listing has it."""
    for task, kind in kinds().items():
        for info in kind.listed():
            if info.key == name:
                return task, info
    raise UserError(f"There is no dataset called {name!r}; `python -m core data list` lists them, "
                    "and `python -m core data add FILE --task TASK` registers one.")


def dataset_name(arguments, main_file: Path) -> str:
    """--name, or the main file's name without its suffix (what the Data page proposes)."""
    return arguments.name or main_file.stem


# ---------------------------------------------------------------------------------------------
# One kind each: add, list, show


def add_table(arguments):
    from core.data import guess_columns, parse_table, register_dataset
    from core.data.registry import read_named_file

    path = Path(arguments.file)
    data = read_named_file(path)
    text_column, label_column = arguments.text_column, arguments.label_column
    if not (text_column and label_column):
        columns = [str(column) for column in parse_table(data, path.name).columns]
        text_guess, label_guess = guess_columns(columns)
        text_column, label_column = text_column or text_guess, label_column or label_guess
        for role, column in (("text", text_column), ("label", label_column)):
            if not column:
                raise UserError(f"Which column of {path.name} holds the {role}? Name it with --{role}-column "
                                f"(its columns: {', '.join(columns)}).")
    return register_dataset(dataset_name(arguments, path), path.name, data, text_column, label_column)


def list_tables() -> list:
    from core.data import list_datasets
    from core.data.info import TEXT_CLASSIFICATION

    return [info for info in list_datasets() if info.task == TEXT_CLASSIFICATION]


def show_table(name: str) -> dict[str, Any]:
    from core.data import load_splits

    splits = load_splits(name)
    preview = splits.all_rows().head(TEXT_PREVIEW_ROWS)
    return {"source": splits.source, "rows": splits.sizes(), "classes": splits.label_names,
            "balance": balance(splits.class_balance(), "label"), "preview": preview[["text", "label", "split"]].to_dict("records")}


def add_images(arguments):
    from core.data.registry import read_named_file
    from core.images.datasets import register_image_dataset

    path = Path(arguments.file)
    if arguments.images is None:
        return register_image_dataset(dataset_name(arguments, path), path.name, read_named_file(path))
    archive = Path(arguments.images)
    return register_image_dataset(dataset_name(arguments, archive), archive.name, read_named_file(archive),
                                  csv_filename=path.name, csv_data=read_named_file(path))


def list_images() -> list:
    from core.images.datasets import list_image_datasets

    return list_image_datasets()


def show_images(name: str) -> dict[str, Any]:
    from core.images.datasets import load_image_splits

    splits = load_image_splits(name)
    return {"source": splits.source, "rows": splits.sizes(), "classes": splits.label_names,
            "balance": balance(splits.class_balance(), "label"),
            "preview": splits.examples_per_class(IMAGES_PER_CLASS), "image_sizes": splits.image_sizes(IMAGE_SIZE_SAMPLE)}


def add_ner(arguments):
    from core.data.registry import read_named_file
    from core.ner.data import (
        DEFAULT_TAGS_COLUMN,
        DEFAULT_TOKENS_COLUMN,
        register_ner_dataset,
    )

    path = Path(arguments.file)
    return register_ner_dataset(dataset_name(arguments, path), path.name, read_named_file(path),
                                tokens_column=arguments.text_column or DEFAULT_TOKENS_COLUMN,
                                tags_column=arguments.label_column or DEFAULT_TAGS_COLUMN)


def list_ner() -> list:
    from core.ner.data import list_ner_datasets

    return list_ner_datasets()


def show_ner(name: str) -> dict[str, Any]:
    from seqeval.metrics.sequence_labeling import get_entities

    from core.ner.data import load_ner_splits

    splits = load_ner_splits(name)
    preview = [{"tokens": list(row.tokens), "tags": list(row.tags), "entities": [list(span) for span in get_entities(list(row.tags))]}
               for row in splits.train.head(NER_PREVIEW_SENTENCES).itertuples()]
    return {"source": splits.source, "rows": splits.sizes(), "classes": splits.entity_types, "scheme": splits.scheme,
            "tags": splits.label_names, "balance": balance(splits.entity_counts(), "type"), "preview": preview}


def add_pairs(arguments, kind: str):
    from core.data.registry import read_named_file
    from core.image_text.data import register_pair_dataset

    table, archive = Path(arguments.file), Path(arguments.images)
    return register_pair_dataset(dataset_name(arguments, archive), kind, archive.name, read_named_file(archive),
                                 table.name, read_named_file(table))


def list_pairs(kind: str) -> list:
    from core.image_text.data import list_pair_datasets

    return list_pair_datasets(kind)


def show_pairs(name: str, kind: str) -> dict[str, Any]:
    from core.image_text.data import load_pair_splits

    splits = load_pair_splits(name, kind=kind)
    train = splits.frame("train").head(PAIR_PREVIEW_PAIRS)
    return {"source": splits.source, "rows": splits.sizes(), "classes": splits.label_names,
            "balance": balance(splits.class_balance(), "label") if splits.label_names else {},
            "prompt_template": splits.prompt_template, "preview": train[["image", "text", "label"]].to_dict("records")}


def balance(counts, column: str) -> dict[str, dict[str, int]]:
    """{split: {class: count}} from a (split, class, count) frame, zero counts kept."""
    return {split: {str(key): int(count) for key, count in zip(part[column], part["count"])}
            for split, part in counts.groupby("split", sort=False)}


# ---------------------------------------------------------------------------------------------
# Text output


def render(details: dict[str, Any], kind: Kind) -> str:
    """The Data page's overview as lines: what it is, rows per split, classes and their balance, the preview."""
    from core.cli import shown

    rows, classes = details["rows"], details["classes"]
    lines = [
        f"{details['name']} ({details['task']}, {'built-in' if details['builtin'] else 'registered'})",
        f"source: {shown(details['source'])}",
        "rows per split: " + " · ".join(f"{split} {count:,}" for split, count in rows.items()) + f" ({sum(rows.values()):,} in all)",
        f"{kind.classes} ({len(classes)}): {', '.join(map(shown, classes))}" if classes else f"{kind.classes}: none",
    ]
    if "scheme" in details:
        lines.append(f"tag scheme: {details['scheme']}")
    if "prompt_template" in details and classes:
        lines.append(f"zero-shot prompt: {shown(details['prompt_template'])}")
    if details["balance"]:
        lines += [f"{kind.classes} per split:", *balance_table(details["balance"])]
    lines += ["preview:", *(f"  {line}" for line in kind.preview(details["preview"]))]
    if "image_sizes" in details:
        lines.append(f"image sizes (of up to {IMAGE_SIZE_SAMPLE} images): "
                     + ", ".join(f"{size} {count:,}" for size, count in details["image_sizes"].items()))
    return "\n".join(lines)


def balance_table(counts: dict[str, dict[str, int]]) -> list[str]:
    """A class-by-split table of counts, one line per class."""
    from core.cli import shown

    splits, names = list(counts), [shown(name) for name in next(iter(counts.values()))]
    width = max(len(name) for name in names)
    header = f"  {'':{width}}  " + "  ".join(f"{split:>10}" for split in splits)
    return [header] + [f"  {name:{width}}  " + "  ".join(f"{count:>10,}" for count in row)
                       for name, row in zip(names, zip(*(part.values() for part in counts.values())))]


def table_preview(preview: list[dict[str, str]]) -> list[str]:
    from core.cli import shown

    return [f"[{row['split']}] {shown(row['label'])}: {shown(row['text'])}" for row in preview]


def image_preview(preview: dict[str, list[str]]) -> list[str]:
    return [f"{label}: {', '.join(references) or 'no training images'}" for label, references in preview.items()]


def ner_preview(preview: list[dict[str, Any]]) -> list[str]:
    """Each sentence with its entities bracketed and typed: [New York]LOC."""
    from core.cli import shown

    lines = []
    for sentence in preview:
        words = [shown(token) for token in sentence["tokens"]]
        for kind, start, end in sentence["entities"]:
            words[start] = f"[{words[start]}"
            words[end] = f"{words[end]}]{kind}"
        lines.append(" ".join(words))
    return lines


def pair_preview(preview: list[dict[str, str]]) -> list[str]:
    from core.cli import shown

    return [f"{row['image']}: " + (f"{shown(row['label'])}: " if row["label"] else "") + shown(row["text"]) for row in preview]
