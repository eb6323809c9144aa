"""The one dataset registry: every kind of data (text tables, image folders, tagged sentences, image-text pairs).

A kind is one module that describes its datasets as a `DatasetKind` and registers it with one
line, `register_kind(KIND)`; `KIND_MODULES` below names those modules (one line each), and they are
imported on first use, so the modality packages depend on this registry and never the reverse.

Every upload of every kind lives in workspace/datasets/<name>/ beside a spec.yaml whose `task`
says its kind, and a run names a dataset by that name alone, so there is one name rule for all of
them (`check_dataset_name`): a name is sanitised, and it is taken when it is a built-in of any kind
or any folder in workspace/datasets/. `delete_dataset` removes an upload of any kind.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from core.assets import Progress
from core.data.info import TEXT_CLASSIFICATION, DatasetInfo
from core.errors import UserError
from core.workspace import datasets_dir, safe_name

SPEC_FILE = "spec.yaml"
MAX_UPLOAD_ENV = "WORKBENCH_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 200.0
# The modules that register a kind, in the order the Data page, the CLI and the listings show them.
KIND_MODULES = ("core.data.text_kind", "core.images.kind", "core.ner.kind", "core.image_text.kind", "core.instructions.kind")


class Builtin(Protocol):
    """What every kind's built-in datasets offer the registry."""

    title: str
    description: str

    def info(self) -> DatasetInfo: ...

    def is_ready(self) -> bool: ...


@dataclass(frozen=True)
class DatasetFiles:
    """What `python -m core data add` hands a kind: the main file, the zip of images, the name and columns asked for."""

    name: str
    file: Path
    images: Path | None = None
    text_column: str | None = None
    label_column: str | None = None


@dataclass(frozen=True)
class DatasetKind:
    """The datasets of one task: its built-ins, how an upload is described, loaded, added and shown."""

    task: str  # the run config's `task:` these datasets train, and the `task` in an upload's spec.yaml
    modality: str  # the Data page's name for the kind's group ("Text", "Images", "NER", "Image + text")
    builtins: Mapping[str, Builtin]
    registered_info: Callable[[str], DatasetInfo]  # an upload of this kind, by name, as the lists show it
    load: Callable[..., Any]  # (name, *, seed=, max_rows=, progress=) -> the kind's splits
    add: Callable[[DatasetFiles], DatasetInfo]  # check files named on the command line and register them
    show: Callable[[str], dict[str, Any]]  # name -> what the Data page shows, as plain data
    preview_lines: Callable[[Any], list[str]]  # show()'s "preview" -> lines of text
    files: str  # what the main file is, for `data add --help`
    columns: bool = False  # whether a table's text / label columns can be chosen
    images: str = "no"  # a zip of images beside the main file: "no", "optional" or "required"
    classes: str = "classes"  # what show()'s "classes" are


_KINDS: dict[str, DatasetKind] = {}


def register_kind(kind: DatasetKind) -> DatasetKind:
    """The one line a kind's module ends with."""
    _KINDS[kind.task] = kind
    return kind


def dataset_kinds() -> dict[str, DatasetKind]:
    """Task -> kind, for every kind in `KIND_MODULES` order (their modules are imported on first use)."""
    for module in KIND_MODULES:
        importlib.import_module(module)
    return dict(_KINDS)  # in registration order: only this function imports the kind modules


def data_modalities() -> dict[str, list[DatasetKind]]:
    """The Data page's groups of kinds ("Text", "Images", …) in registration order, each with its kinds."""
    groups: dict[str, list[DatasetKind]] = {}
    for kind in dataset_kinds().values():
        groups.setdefault(kind.modality, []).append(kind)
    return groups


def dataset_kind(task: str) -> DatasetKind:
    kinds = dataset_kinds()
    if task not in kinds:
        raise UserError(f"There is no task {task!r} with datasets; use one of {', '.join(kinds)}.")
    return kinds[task]


# ---------------------------------------------------------------------------------------------
# One list of every kind


def list_datasets(task: str | None = None) -> list[DatasetInfo]:
    """The datasets of `task` (every kind when None): per kind, its built-ins first, then its uploads by name.

    An upload whose spec.yaml is damaged, or names no known kind, is listed with the reason rather than hidden.
    """
    kinds = dataset_kinds()
    uploads = registered_names()
    listed = []
    for kind in kinds.values():
        if task is None or kind.task == task:
            listed += [builtin.info() for builtin in kind.builtins.values()]
            listed += [kind.registered_info(name) for name, found in uploads.items() if found == kind.task]
    if task is None:
        listed += [_damaged_info(name) for name, found in uploads.items() if found not in kinds]
    return listed


def find_dataset(name: str) -> DatasetInfo:
    """The built-in or uploaded dataset `name`, of whichever kind."""
    for info in list_datasets():
        if info.key == name:
            return info
    raise UserError(
        f"There is no dataset called {name!r}; `python -m core data list` lists them, "
        "and `python -m core data add FILE --task TASK` registers one."
    )


def registered_names() -> dict[str, str | None]:
    """Every upload in workspace/datasets/ by name -> the task its spec.yaml gives (None when it cannot be read)."""
    if not datasets_dir().is_dir():
        return {}
    return {
        folder.name: registered_task(folder.name)
        for folder in sorted(datasets_dir().iterdir())
        if folder.name == safe_name(folder.name, fallback="") and (folder / SPEC_FILE).is_file()
    }


def registered_task(name: str) -> str | None:
    """The task of the upload `name` (from its spec.yaml), or None when there is none or it cannot be read."""
    if not is_registered(name):
        return None
    try:
        return read_spec(name).get("task", TEXT_CLASSIFICATION)  # DatasetSpec's default
    except UserError:
        return None


def is_registered(name: str) -> bool:
    """Whether `name` is an upload of any kind: a safe name with a spec.yaml in workspace/datasets/."""
    return name == safe_name(name, fallback="") and (datasets_dir() / name / SPEC_FILE).is_file()


def read_spec(name: str) -> dict[str, Any]:
    """The fields of an upload's spec.yaml (every kind writes name, file, task and the columns it reads)."""
    path = datasets_dir() / name / SPEC_FILE
    try:
        fields = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise damaged(name, path, error) from None
    if not isinstance(fields, dict):
        raise damaged(name, path, TypeError("not a mapping"))
    return fields


def write_spec(folder: Path, fields: dict[str, Any]) -> None:
    (folder / SPEC_FILE).write_text(yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")


def damaged(name: str, path: Path, error: BaseException) -> UserError:
    return UserError(
        f"The description {path} of the dataset {name!r} is damaged ({type(error).__name__}); "
        "delete that folder and register the file again."
    )


def _damaged_info(name: str) -> DatasetInfo:
    try:
        fields = read_spec(name)
        description = f"It names the task {fields.get('task')!r}, which no kind of dataset here reads."
    except UserError as error:
        description = str(error)
    return DatasetInfo(key=name, title=name, source=str(datasets_dir() / name), description=description, builtin=False)


# ---------------------------------------------------------------------------------------------
# The one name rule


def builtin_dataset_names() -> set[str]:
    """The built-in keys of every kind: a run names a dataset by key alone, so an upload under one of them would
    make that name mean two datasets."""
    return {key for kind in dataset_kinds().values() for key in kind.builtins}


def is_taken(key: str) -> bool:
    """Whether `key` already means a dataset: a built-in of any kind, or any folder in workspace/datasets/."""
    return key in builtin_dataset_names() or (datasets_dir() / key).exists()


def check_dataset_name(name: str) -> str:
    """The folder name an upload called `name` is stored under, or a UserError saying why it cannot be used.

    The one rule for every kind: letters, digits, dots, dashes and underscores (anything else becomes "_",
    path parts are dropped), and neither a built-in nor an upload of any kind may have it already.
    """
    key = safe_name(name.strip(), fallback="")
    if not key:
        raise UserError("Give the dataset a name made of letters, digits, dots, dashes or underscores.")
    if key in builtin_dataset_names():
        raise UserError(f"{key!r} is the name of a built-in dataset; choose another name, such as {free_name(key)!r}.")
    if (datasets_dir() / key).exists():
        raise already_exists(key)
    return key


def already_exists(key: str) -> UserError:
    """The sentence for a name an upload of any kind has (also when a save racing this one claimed it first)."""
    return UserError(f"A dataset named {key!r} already exists; choose another name, such as {free_name(key)!r}.")


def free_name(key: str) -> str:
    number = 2
    while is_taken(f"{key}-{number}"):
        number += 1
    return f"{key}-{number}"


def stored_file_name(original: str) -> str:
    """A sanitised file name that keeps the suffix the format is read from (safe_name strips a leading dot)."""
    suffix = Path(original).suffix.lower()
    cleaned = safe_name(original, fallback="data")
    return cleaned if Path(cleaned).suffix.lower() == suffix else f"data{suffix}"


def staging_folder(parent: Path, key: str) -> Path:
    """A hidden folder in `parent` (which no listing reads) to write a dataset in before it is renamed into place."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the stored dataset is an ordinary folder
    return staging


# ---------------------------------------------------------------------------------------------
# Limits and files, the same for every kind


def max_upload_bytes() -> int:
    raw = os.environ.get(MAX_UPLOAD_ENV, "")
    try:
        megabytes = float(raw) if raw.strip() else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise UserError(
            f"{MAX_UPLOAD_ENV} is set to {raw!r}, which is not a number; set it to a size in MB such as 200."
        ) from None
    return int(megabytes * 1024 * 1024)


def check_upload_size(filename: str, size: int) -> None:
    limit = max_upload_bytes()
    if size > limit:
        raise UserError(
            f"{Path(filename).name} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB upload limit; "
            f"upload a smaller sample or raise {MAX_UPLOAD_ENV}."
        )


def read_named_file(path: str | Path) -> bytes:
    """The bytes of a file named on the command line or in a run config, or a sentence saying why they cannot be read."""
    path = Path(path).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"There is no file at {path}; check the path.") from None
    except IsADirectoryError:
        raise UserError(
            f"{path} is a folder, not a file; give the path of the file itself (zip a folder of images first)."
        ) from None
    except OSError as error:
        raise UserError(f"The file {path} cannot be read ({error.strerror or error}); fix its permissions.") from None


def prepare_builtin(kind: DatasetKind, key: str, progress: Progress) -> None:
    """Make a built-in ready (download, convert or generate it) while `progress` reports; a no-op when it is."""
    builtin = kind.builtins[key]
    if not builtin.is_ready():
        kind.load(key, max_rows=None, progress=progress)


def delete_dataset(name: str) -> None:
    """Remove the registered dataset `name` (of any kind) from workspace/datasets/.

    The folder is first renamed to a hidden name, which no listing reads, and only then removed, so
    nobody ever loads half a dataset. Built-ins cannot be deleted; they are remade on first use anyway.
    """
    if name in builtin_dataset_names():
        raise UserError(f"{name!r} is a built-in dataset and cannot be deleted; only datasets you registered can.")
    folder = datasets_dir() / name
    if name != safe_name(name, fallback="") or not folder.is_dir():
        registered = ", ".join(
            sorted(
                path.name for path in datasets_dir().iterdir() if path.is_dir() and path.name == safe_name(path.name, fallback="")
            )
        )
        raise UserError(
            f"There is no registered dataset called {name!r}; "
            + (f"the registered ones are {registered}." if registered else "none is registered in this workspace.")
        )
    doomed = Path(tempfile.mkdtemp(prefix=f".deleting-{name}-", dir=datasets_dir()))
    folder.rename(doomed / name)  # one atomic step: the dataset is there whole, or gone
    shutil.rmtree(doomed, ignore_errors=True)
