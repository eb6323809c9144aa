"""Datasets registered from uploads: workspace/datasets/<name>/ holds the file and a spec.yaml.

An upload is parsed and split in memory with the same checks `load_splits` applies, and only a
table that passes is written, so a registered dataset always loads. Names and file names are
sanitised (no path parts) and the dataset folder is claimed with an exclusive mkdir, so an
existing dataset is never overwritten, not even by two saves racing each other. No upload of any
kind may take a built-in's name (`builtin_dataset_names`), and `delete_dataset` removes one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from core.data.builtin import BUILTIN_DATASETS
from core.data.info import TEXT_CLASSIFICATION, DatasetInfo
from core.data.splits import make_splits
from core.data.tables import parse_table, read_table, select_columns
from core.errors import UserError
from core.workspace import datasets_dir, safe_name

SPEC_FILE = "spec.yaml"
MAX_UPLOAD_ENV = "WORKBENCH_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 200.0


@dataclass(frozen=True)
class DatasetSpec:
    """What spec.yaml records: enough to reload the table and to tell the user where it came from."""

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
            description=f"{self.rows:,} rows uploaded from {self.original_filename}; text column {self.text_column!r}, label column {self.label_column!r}.",
            builtin=False,
        )


def max_upload_bytes() -> int:
    raw = os.environ.get(MAX_UPLOAD_ENV, "")
    try:
        megabytes = float(raw) if raw.strip() else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise UserError(f"{MAX_UPLOAD_ENV} is set to {raw!r}, which is not a number; set it to a size in MB such as 200.") from None
    return int(megabytes * 1024 * 1024)


def is_registered(name: str) -> bool:
    return name == safe_name(name, fallback="") and (datasets_dir() / name / SPEC_FILE).is_file()


def read_spec(name: str) -> DatasetSpec:
    path = datasets_dir() / name / SPEC_FILE
    try:
        fields = yaml.safe_load(path.read_text(encoding="utf-8"))
        return DatasetSpec(**fields)
    except (OSError, yaml.YAMLError, TypeError, UnicodeDecodeError) as error:
        raise UserError(
            f"The description {path} of the dataset {name!r} is damaged ({type(error).__name__}); "
            "delete that folder and register the file again."
        ) from None


def registered_table(name: str, text_column: str | None, label_column: str | None) -> tuple[pd.DataFrame, DatasetSpec]:
    """The text/label frame of a registered dataset; columns default to those chosen at upload."""
    spec = read_spec(name)
    table = read_table(datasets_dir() / name / safe_name(spec.file))
    frame = select_columns(table, text_column or spec.text_column, label_column or spec.label_column, f"the dataset {name!r}")
    return frame, spec


def list_registered() -> list[DatasetInfo]:
    """Registered datasets by name; one with a damaged spec is listed with the reason instead of hidden."""
    infos = []
    for folder in sorted(datasets_dir().iterdir()):
        if folder.name != safe_name(folder.name, fallback="") or not (folder / SPEC_FILE).is_file():
            continue  # a hidden staging or deleting folder, a half-written registration, or something the user put there
        try:
            infos.append(read_spec(folder.name).info())
        except UserError as error:
            infos.append(DatasetInfo(key=folder.name, title=folder.name, source=str(folder), description=str(error), builtin=False))
    return infos


def register_dataset(name: str, filename: str, data: bytes, text_column: str, label_column: str) -> DatasetInfo:
    """Check an uploaded table fully and store it as workspace/datasets/<safe name>/."""
    limit = max_upload_bytes()
    if len(data) > limit:
        raise UserError(
            f"{filename} is {len(data) / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB upload limit; "
            f"upload a smaller sample or raise {MAX_UPLOAD_ENV}."
        )
    key = _new_dataset_key(name)
    original = Path(filename.replace("\\", "/")).name
    file_name = _stored_file_name(original)
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
        registered_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    _store(spec, data)
    return spec.info()


def builtin_dataset_names() -> set[str]:
    """The built-in keys of every kind (text, images, NER, image-text): a run names a dataset by key alone, so an
    upload under one of them would make that name mean two datasets."""
    from core.image_text.data import BUILTIN_PAIR_DATASETS
    from core.images.datasets import BUILTIN_IMAGE_DATASETS
    from core.ner.data import BUILTIN_NER_DATASETS

    return {*BUILTIN_DATASETS, *BUILTIN_IMAGE_DATASETS, *BUILTIN_NER_DATASETS, *BUILTIN_PAIR_DATASETS}


def _new_dataset_key(name: str) -> str:
    key = safe_name(name.strip(), fallback="")
    if not key:
        raise UserError("Give the dataset a name made of letters, digits, dots, dashes or underscores.")
    if key in builtin_dataset_names():
        raise UserError(f"{key!r} is the name of a built-in dataset; choose another name, such as {_free_name(key)!r}.")
    if (datasets_dir() / key).exists():
        raise UserError(f"A dataset named {key!r} already exists; choose another name, such as {_free_name(key)!r}.")
    return key


def _free_name(key: str) -> str:
    number, taken = 2, builtin_dataset_names()
    while f"{key}-{number}" in taken or (datasets_dir() / f"{key}-{number}").exists():
        number += 1
    return f"{key}-{number}"


def _stored_file_name(original: str) -> str:
    """A sanitised file name that keeps the suffix the format is read from (safe_name strips a leading dot)."""
    suffix = Path(original).suffix.lower()
    cleaned = safe_name(original, fallback="data")
    return cleaned if Path(cleaned).suffix.lower() == suffix else f"data{suffix}"


def _store(spec: DatasetSpec, data: bytes) -> None:
    folder = datasets_dir() / spec.name
    try:
        folder.mkdir()  # exclusive: fails if another save claimed the name meanwhile
    except FileExistsError:
        raise UserError(f"A dataset named {spec.name!r} already exists; choose another name, such as {_free_name(spec.name)!r}.") from None
    (folder / spec.file).write_bytes(data)
    # The spec is written last: a folder without one is ignored, so a crash leaves no broken entry.
    (folder / SPEC_FILE).write_text(yaml.safe_dump(asdict(spec), sort_keys=False), encoding="utf-8")


def read_named_file(path: str | Path) -> bytes:
    """The bytes of a file named on the command line or in a run config, or a sentence saying why they cannot be read."""
    path = Path(path).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"There is no file at {path}; check the path.") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a file; give the path of the file itself (zip a folder of images first).") from None
    except OSError as error:
        raise UserError(f"The file {path} cannot be read ({error.strerror or error}); fix its permissions.") from None


def delete_dataset(name: str) -> None:
    """Remove the registered dataset `name` (of any kind) from workspace/datasets/.

    The folder is first renamed to a hidden name, which no listing reads, and only then removed, so
    nobody ever loads half a dataset. Built-ins cannot be deleted; they are remade on first use anyway.
    """
    if name in builtin_dataset_names():
        raise UserError(f"{name!r} is a built-in dataset and cannot be deleted; only datasets you registered can.")
    folder = datasets_dir() / name
    if name != safe_name(name, fallback="") or not folder.is_dir():
        registered = ", ".join(sorted(path.name for path in datasets_dir().iterdir()
                                      if path.is_dir() and path.name == safe_name(path.name, fallback="")))
        raise UserError(f"There is no registered dataset called {name!r}; "
                        + (f"the registered ones are {registered}." if registered else "none is registered in this workspace."))
    doomed = Path(tempfile.mkdtemp(prefix=f".deleting-{name}-", dir=datasets_dir()))
    folder.rename(doomed / name)  # one atomic step: the dataset is there whole, or gone
    shutil.rmtree(doomed, ignore_errors=True)
