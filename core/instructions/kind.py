"""Prompt/response pairs as a kind of the dataset registry: what `data add` and `data show` do with them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.data.info import DatasetInfo, split_counts
from core.data.registry import DatasetFiles, DatasetKind, read_named_file, register_kind
from core.data.splits import SPLIT_NAMES
from core.instructions.data import (
    BUILTIN_INSTRUCTION_DATASETS,
    PROMPT,
    RESPONSE,
    answers_are_labels,
    load_instruction_splits,
    register_instruction_dataset,
    registered_instruction_info,
)
from core.task_keys import INSTRUCTION_TUNING

PREVIEW_PAIRS = 8  # the Data page's and `data show`'s preview size


def add_pairs(files: DatasetFiles) -> DatasetInfo:
    """A table whose prompt and response columns the text and label columns name (default prompt / response);
    a JSONL / Parquet table with a messages column and no prompt column is read as chat turns."""
    return register_instruction_dataset(
        files.name,
        files.file.name,
        read_named_file(files.file),
        prompt_column=files.text_column or PROMPT,
        response_column=files.label_column or RESPONSE,
    )


def word_lengths(texts: pd.Series) -> dict[str, float]:
    words = texts.str.split().str.len()
    return {
        "min": int(words.min()),
        "median": float(words.median()),
        "mean": round(float(words.mean()), 2),
        "max": int(words.max()),
    }


def answer_counts(rows: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Pairs per (split, answer), zero counts kept."""
    counts = rows.groupby(["split", RESPONSE]).size()
    full = pd.MultiIndex.from_product([list(SPLIT_NAMES), labels], names=["split", RESPONSE])
    return counts.reindex(full, fill_value=0).rename("count").reset_index()


def show_pairs(name: str) -> dict[str, Any]:
    splits = load_instruction_splits(name)
    rows = splits.all_rows()
    labels = answers_are_labels(rows) or []
    return {
        "source": splits.source,
        "rows": splits.sizes(),
        "classes": labels,
        "balance": split_counts(answer_counts(rows, labels), RESPONSE) if labels else {},
        "preview": rows.head(PREVIEW_PAIRS)[[PROMPT, RESPONSE, "split"]].to_dict("records"),
        "words": {"prompt": word_lengths(rows[PROMPT]), "response": word_lengths(rows[RESPONSE])},
    }


def pair_preview(preview: list[dict[str, str]]) -> list[str]:
    """Each pair on one line: [split] prompt → response (the prompt's line breaks shown as ⏎)."""
    return [f"[{row['split']}] {row[PROMPT].replace(chr(10), ' ⏎ ')} → {row[RESPONSE]}" for row in preview]


INSTRUCTION_PAIRS = register_kind(
    DatasetKind(
        task=INSTRUCTION_TUNING,
        modality="Instructions",
        builtins=BUILTIN_INSTRUCTION_DATASETS,
        registered_info=registered_instruction_info,
        load=load_instruction_splits,
        add=add_pairs,
        show=show_pairs,
        preview_lines=pair_preview,
        files="CSV / TSV / JSONL / Parquet with prompt and response columns, or JSONL with chat messages",
        columns=True,
        classes="answers",
    )
)
