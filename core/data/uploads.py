"""Text tables registered from uploads: workspace/datasets/<name>/ holds the file and a spec.yaml.

An upload is parsed and split in memory with the same checks `load_splits` applies, and only a
table that passes is written, so a registered dataset always loads. The name follows the
registry's one rule (`check_dataset_name`), file names are sanitised (no path parts), and the
dataset folder is claimed with an exclusive mkdir, so an existing dataset is never overwritten,
not even by two saves racing each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.data.info import TEXT_CLASSIFICATION, DatasetInfo
from core.data.registry import (
    already_exists,
    check_dataset_name,
    check_upload_size,
    damaged,
    read_spec,
    stored_file_name,
    write_spec,
)
from core.data.splits import make_splits
from core.data.tables import parse_table, read_table, select_columns
from core.data.versions import is_version, version_spec
from core.errors import UserError
from core.workspace import datasets_dir, safe_name


@dataclass(frozen=True)
class DatasetSpec:
    """What a text upload's spec.yaml records: enough to reload the table and to tell the user where it came from."""

    name: str
    file: str
    text_column: str
    label_column: str
    original_filename: str
    rows: int
    registered_at: str
    task: str = TEXT_CLASSIFICATION

    @property
    def source(self) -> str:
        return f"uploaded file {self.original_filename} (workspace/datasets/{self.name}/{self.file})"

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            key=self.name,
            title=self.name,
            task=self.task,
            source=self.source,
            description=f"{self.rows:,} rows uploaded from {self.original_filename}; "
            f"text column {self.text_column!r}, label column {self.label_column!r}.",
            builtin=False,
        )


def read_table_spec(name: str) -> DatasetSpec:
    fields = read_spec(name)
    try:
        return DatasetSpec(**fields)
    except TypeError as error:
        raise damaged(name, datasets_dir() / name, error) from None


def registered_table_info(name: str) -> DatasetInfo:
    """A text upload (or a dataset version) as the lists show it; a damaged one with the reason instead of hidden."""
    try:
        return version_spec(name).info() if is_version(name) else read_table_spec(name).info()
    except UserError as error:
        return DatasetInfo(key=name, title=name, source=str(datasets_dir() / name), description=str(error), builtin=False)


def registered_table(name: str, text_column: str | None, label_column: str | None) -> tuple[pd.DataFrame, DatasetSpec]:
    """The text/label frame of a registered dataset; columns default to those chosen at upload."""
    spec = read_table_spec(name)
    table = read_table(datasets_dir() / name / safe_name(spec.file))
    frame = select_columns(table, text_column or spec.text_column, label_column or spec.label_column, f"the dataset {name!r}")
    return frame, spec


def register_dataset(name: str, filename: str, data: bytes, text_column: str, label_column: str) -> DatasetInfo:
    """Check an uploaded table fully and store it as workspace/datasets/<safe name>/."""
    check_upload_size(filename, len(data))
    key = check_dataset_name(name)
    original = Path(filename.replace("\\", "/")).name
    file_name = stored_file_name(original)
    table = parse_table(data, original)
    where = f"the uploaded file {original}"
    frame = select_columns(table, text_column, label_column, where)
    make_splits(frame, where=where, source=where)  # the same checks load_splits applies
    spec = DatasetSpec(
        name=key,
        file=file_name,
        text_column=text_column,
        label_column=label_column,
        original_filename=original,
        rows=len(frame),
        registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _store(spec, data)
    return spec.info()


def _store(spec: DatasetSpec, data: bytes) -> None:
    folder = datasets_dir() / spec.name
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()  # exclusive: fails if another save claimed the name meanwhile
    except FileExistsError:
        raise already_exists(spec.name) from None
    (folder / spec.file).write_bytes(data)
    # The spec is written last: a folder without one is ignored, so a crash leaves no broken entry.
    write_spec(folder, asdict(spec))
