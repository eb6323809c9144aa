"""One entry point for text datasets: built-in key, registered name, or a table file path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.assets import Progress, no_progress
from core.data.builtin import BUILTIN_DATASETS
from core.data.info import TEXT_CLASSIFICATION
from core.data.registry import is_registered, list_datasets, registered_task
from core.data.splits import DataSplits, make_splits
from core.data.tables import SUPPORTED_SUFFIXES, read_table, select_columns
from core.data.uploads import registered_table
from core.data.versions import is_version, load_version_splits
from core.errors import UserError


def load_splits(
    dataset: str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    seed: int = 42,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    progress: Progress = no_progress,
) -> DataSplits:
    """Train/validation/test splits of `dataset`, with string labels and `label_names` sorted.

    Column names apply to registered datasets (overriding the ones chosen at upload) and to files
    (default "text"/"label"); built-in datasets already have their columns. A dataset version
    (`core.data.versions`) keeps its parent run's splits, so the fractions do not apply to it and
    `max_rows` samples its training rows only.
    """
    if is_registered(dataset) and is_version(dataset):
        return load_version_splits(dataset, seed=seed, max_rows=max_rows)
    frame, source, where = _resolve(dataset, text_column, label_column, progress)
    return make_splits(
        frame,
        where=where,
        source=source,
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        max_rows=max_rows,
    )


def _resolve(
    dataset: str, text_column: str | None, label_column: str | None, progress: Progress
) -> tuple[pd.DataFrame, str, str]:
    """The text/label frame of `dataset`, a one-line source, and how to name it in messages."""
    if dataset in BUILTIN_DATASETS:
        builtin = BUILTIN_DATASETS[dataset]
        return builtin.frame(progress), builtin.source, f"the built-in dataset {dataset!r}"
    if is_registered(dataset) and registered_task(dataset) in (TEXT_CLASSIFICATION, None):  # None: damaged, says why
        frame, spec = registered_table(dataset, text_column, label_column)
        return frame, spec.source, f"the dataset {dataset!r}"
    path = Path(dataset).expanduser()
    if path.is_file() or path.suffix.lower() in SUPPORTED_SUFFIXES:
        table = read_table(path)  # a missing file gets its own sentence there
        where = f"the file {path.name}"
        return select_columns(table, text_column or "text", label_column or "label", where), f"file {path.resolve()}", where
    available = ", ".join(info.key for info in list_datasets(TEXT_CLASSIFICATION))
    raise UserError(
        f"There is no dataset called {dataset!r}; choose one of {available}, or give the path of a "
        f"{'/'.join(suffix.lstrip('.') for suffix in SUPPORTED_SUFFIXES)} file."
    )
