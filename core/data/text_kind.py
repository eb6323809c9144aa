"""Text tables as a kind of the dataset registry: built-ins, uploads, and what `data add` / `data show` do with them."""

from __future__ import annotations

from typing import Any

from core.data.builtin import BUILTIN_DATASETS
from core.data.info import TEXT_CLASSIFICATION, DatasetInfo, split_counts
from core.data.loading import load_splits
from core.data.registry import DatasetFiles, DatasetKind, read_named_file, register_kind
from core.data.tables import guess_columns, parse_table
from core.data.uploads import register_dataset, registered_table_info
from core.errors import UserError

PREVIEW_ROWS = 20  # the Data page's preview size


def add_table(files: DatasetFiles) -> DatasetInfo:
    """Register a table; columns not named are guessed as the Data page guesses them."""
    data = read_named_file(files.file)
    text_column, label_column = files.text_column, files.label_column
    if not (text_column and label_column):
        columns = [str(column) for column in parse_table(data, files.file.name).columns]
        text_guess, label_guess = guess_columns(columns)
        text_column, label_column = text_column or text_guess, label_column or label_guess
        for role, column in (("text", text_column), ("label", label_column)):
            if not column:
                raise UserError(
                    f"Which column of {files.file.name} holds the {role}? Name it with --{role}-column "
                    f"(its columns: {', '.join(columns)})."
                )
    return register_dataset(files.name, files.file.name, data, text_column, label_column)


def show_table(name: str) -> dict[str, Any]:
    splits = load_splits(name)
    preview = splits.all_rows().head(PREVIEW_ROWS)
    return {
        "source": splits.source,
        "rows": splits.sizes(),
        "classes": splits.label_names,
        "balance": split_counts(splits.class_balance(), "label"),
        "preview": preview[["text", "label", "split"]].to_dict("records"),
    }


def table_preview(preview: list[dict[str, str]]) -> list[str]:
    return [f"[{row['split']}] {row['label']}: {row['text']}" for row in preview]


TEXT_TABLES = register_kind(
    DatasetKind(
        task=TEXT_CLASSIFICATION,
        modality="Text",
        builtins=BUILTIN_DATASETS,
        registered_info=registered_table_info,
        load=load_splits,
        add=add_table,
        show=show_table,
        preview_lines=table_preview,
        files="a CSV / TSV / JSONL / Parquet table (columns guessed as on the Data page unless given)",
        columns=True,
    )
)
