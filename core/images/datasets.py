"""Image datasets: the built-ins and uploads as one kind of the registry, split like the text datasets.

Every dataset is one Arrow file of rows (image, label, row[, bbox]) (`core.images.store`) read
through the `datasets` library, memory-mapped rather than held in memory: built-ins under
`cache/images/<key>/` (`core.images.builtin`, made on first use), uploads under `datasets/<name>/`
beside a `spec.yaml` with task "image_classification", which the registry (`core.data.registry`)
lists. Images decode as RGB (greyscale, palette and RGBA are converted).

Splits reuse `core.data.splits.make_splits` on a (row id, label) table, so images follow exactly the
text rules: stratified and seeded, at least two examples per class, an optional stratified
`max_rows` subsample, and a dataset's own train/test split kept (Fashion-MNIST's) with validation
carved out of train. A split is a `datasets.Dataset` selected from the stored file by row.

Uploads (`register_image_dataset`) are a zip of class folders (cat/1.jpg, dog/2.png), or a zip of
images with a CSV of `path,label`, checked in memory by `core.images.uploads` before anything is
written; the name follows the registry's one rule. A run config may name the same files by path
instead ("images.zip", or "labels.csv + images.zip"): `image_files_key` reads them with the same
checks and stores them once in the cache under a key made from their checksum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from core.assets import Progress, no_progress
from core.data.info import DatasetInfo
from core.data.registry import already_exists, check_dataset_name, list_datasets, read_named_file, registered_task
from core.data.splits import SPLIT_NAMES, make_splits
from core.errors import UserError
from core.images.builtin import BUILTIN_IMAGE_DATASETS
from core.images.store import DATA_FILE, IMAGE_CLASSIFICATION, META_FILE, reference
from core.images.uploads import FILE_KEY_PREFIX, FILES_FOLDER, check_sizes, checked_upload, checksum, named_files, write_upload
from core.workspace import cache_dir, datasets_dir, safe_name


@dataclass
class ImageSplits:
    """Train/validation/test of an image dataset; class index i means `label_names[i]`.

    Each split is a `datasets.Dataset` whose rows give `image` (a PIL image, RGB), `label` (str),
    `row` (the row in the stored file; `reference(row)` names it for `open_image`) and, for
    planted-squares, `bbox` ([x0, y0, x1, y1], pixels, end exclusive).
    """

    train: Any
    validation: Any
    test: Any
    label_names: list[str]
    source: str
    dataset: str

    def split(self, name: str):
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLIT_NAMES}

    def frame(self, name: str) -> pd.DataFrame:
        """The split's rows without pixels: image (a reference for `open_image`), label, row[, bbox]."""
        part = self.split(name)
        columns = [column for column in part.column_names if column != "image"]
        frame = part.select_columns(columns).to_pandas()
        frame.insert(0, "image", [reference(self.dataset, row) for row in frame["row"]])
        return frame

    def class_balance(self) -> pd.DataFrame:
        """Images per (split, label), zero counts kept so a missing class shows as a gap."""
        parts = [self.split(name).select_columns(["label"]).to_pandas().assign(split=name) for name in SPLIT_NAMES]
        counts = pd.concat(parts).groupby(["split", "label"]).size()
        full = pd.MultiIndex.from_product([list(SPLIT_NAMES), self.label_names], names=["split", "label"])
        return counts.reindex(full, fill_value=0).rename("count").reset_index()

    def examples_per_class(self, per_class: int, split: str = "train") -> dict[str, list[str]]:
        """References of the first `per_class` images of each class in `split`: the Data page's thumbnails."""
        chosen: dict[str, list[str]] = {name: [] for name in self.label_names}
        part = self.split(split)
        for label, row in zip(part["label"], part["row"]):
            if len(chosen[label]) < per_class:
                chosen[label].append(reference(self.dataset, row))
        return chosen

    def image_sizes(self, sample: int) -> dict[str, int]:
        """How many of the first `sample` images (train first) have each "width×height", most common first."""
        counts: dict[str, int] = {}
        left = sample
        for name in SPLIT_NAMES:
            part = self.split(name)
            for image in part.select(range(min(len(part), left)))["image"]:
                size = f"{image.width}×{image.height}"
                counts[size] = counts.get(size, 0) + 1
            left -= min(len(part), left)
        return dict(sorted(counts.items(), key=lambda item: -item[1]))


def open_image(ref: str, progress: Progress = no_progress) -> Image.Image:
    """The RGB image a reference from `reference()` (or a predictions frame's image column) names."""
    return open_record(ref, progress)["image"]


def open_record(ref: str, progress: Progress = no_progress) -> dict[str, Any]:
    """The stored row a reference names: image, label, row (and bbox for planted-squares)."""
    dataset, _, row = ref.rpartition("#")
    if not dataset or not row.isdigit():
        raise UserError(f"{ref!r} does not name an image of a dataset; references look like 'digits#12'.")
    table = stored_table(dataset, progress)
    if int(row) >= len(table):
        raise UserError(
            f"The image dataset {dataset!r} has {len(table):,} images, so {ref!r} names none; "
            "the dataset may have been uploaded again since the run."
        )
    return table[int(row)]


def load_image_splits(
    dataset: str,
    *,
    seed: int = 42,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    progress: Progress = no_progress,
) -> ImageSplits:
    """Stratified, seeded splits of a built-in or registered image dataset, or of image files named by path."""
    dataset = image_dataset_key(dataset, progress)
    table = stored_table(dataset, progress)
    meta = read_meta(dataset)
    labels = table.data.column("label").to_pylist()
    frame = pd.DataFrame({"text": [str(row) for row in range(len(labels))], "label": labels})
    if meta.get("official_split"):
        frame["split"] = table.data.column("split").to_pylist()
    where = f"the image dataset {dataset!r}"
    splits = make_splits(
        frame,
        where=where,
        source=meta["source"],
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        max_rows=max_rows,
    )
    columns = [column for column in table.column_names if column != "split"]
    parts = {name: table.select(splits.split(name)["text"].astype(int).tolist()).select_columns(columns) for name in SPLIT_NAMES}
    return ImageSplits(label_names=splits.label_names, source=meta["source"], dataset=dataset, **parts)


def stored_table(dataset: str, progress: Progress = no_progress):
    """The whole stored dataset as a memory-mapped `datasets.Dataset` (built on first use for a built-in)."""
    from core.images.store import open_table_file

    return open_table_file(stored_folder(dataset, progress) / DATA_FILE)


def stored_folder(dataset: str, progress: Progress = no_progress) -> Path:
    """The folder of a built-in, registered or stored-file key (`image_dataset_key` turns file paths into one)."""
    if dataset in BUILTIN_IMAGE_DATASETS:
        return BUILTIN_IMAGE_DATASETS[dataset].folder(progress)
    if is_registered_image_dataset(dataset):
        return datasets_dir() / dataset
    if _is_stored_files(dataset):
        return cache_dir() / "images" / FILES_FOLDER / dataset
    raise _no_such_dataset(dataset)


def image_dataset_key(dataset: str, progress: Progress = no_progress) -> str:
    """The stored dataset `dataset` means: itself when it is a built-in, registered or stored-file key (these come
    first, so a dataset registered as "pets.zip" is never taken for a path), else the key of the files it names."""
    if dataset in BUILTIN_IMAGE_DATASETS or is_registered_image_dataset(dataset) or _is_stored_files(dataset):
        return dataset
    key = image_files_key(dataset, progress)
    if key is None:
        raise _no_such_dataset(dataset)
    return key


def _no_such_dataset(dataset: str) -> UserError:
    known = ", ".join(info.key for info in list_image_datasets())
    return UserError(
        f"There is no image dataset called {dataset!r}; choose one of {known}, give the path of a zip of class "
        "folders (or 'labels.csv + images.zip'), or upload a zip of images on the Data page."
    )


def read_meta(dataset: str) -> dict[str, Any]:
    path = stored_folder(dataset) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(
            f"The description {path} of the image dataset {dataset!r} is damaged ({type(error).__name__}); "
            "delete that folder and load or upload the dataset again."
        ) from None


def list_image_datasets() -> list[DatasetInfo]:
    """Built-in image datasets first, then the image datasets registered in this workspace."""
    return list_datasets(IMAGE_CLASSIFICATION)


def is_image_dataset(dataset: str) -> bool:
    """A built-in, registered or stored-file key, or image files named by path — which are read and stored here, so a
    path to a missing file or a broken zip is refused with the upload's own sentence rather than called unknown."""
    if dataset in BUILTIN_IMAGE_DATASETS or is_registered_image_dataset(dataset) or _is_stored_files(dataset):
        return True
    return image_files_key(dataset) is not None


def is_registered_image_dataset(name: str) -> bool:
    folder = datasets_dir() / name
    return registered_task(name) == IMAGE_CLASSIFICATION and (folder / META_FILE).is_file() and (folder / DATA_FILE).is_file()


def registered_image_info(name: str) -> DatasetInfo:
    """An image upload as the lists show it; a damaged one with the reason instead of hidden."""
    folder = datasets_dir() / name
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        description = (
            f"{meta['rows']:,} images in {len(meta['label_names'])} classes "
            f"({', '.join(meta['label_names'][:6])}{'…' if len(meta['label_names']) > 6 else ''}) uploaded from "
            f"{meta['original_filename']}."
        )
        source = meta["source"]
    except (OSError, ValueError, KeyError) as error:
        description, source = (
            f"The description of this dataset is damaged ({type(error).__name__}); delete {folder} and upload it again.",
            str(folder),
        )
    return DatasetInfo(key=name, title=name, task=IMAGE_CLASSIFICATION, source=source, description=description, builtin=False)


def register_image_dataset(
    name: str,
    filename: str,
    data: bytes,
    *,
    csv_filename: str | None = None,
    csv_data: bytes | None = None,
    progress: Progress = no_progress,
) -> DatasetInfo:
    """Check an uploaded zip of images (class folders, or with a `path,label` CSV) and store it as datasets/<name>/.

    Every image is decoded before anything is written; the folder appears (renamed from a hidden
    staging folder inside the workspace) only once its spec is complete.
    """
    check_sizes(((filename, len(data)), (csv_filename or "the CSV", len(csv_data or b""))))
    key = check_dataset_name(name)
    upload = checked_upload(filename, data, csv_filename, csv_data)
    try:
        write_upload(datasets_dir() / key, upload, f"uploaded {upload.how} (workspace/datasets/{key}/{DATA_FILE})", progress)
    except FileExistsError:
        raise already_exists(key) from None
    return registered_image_info(key)


def image_files_key(dataset: str, progress: Progress = no_progress) -> str | None:
    """The key of the image files `dataset` names by path — "images.zip" (one folder per class) or
    "labels.csv + images.zip" — or None when it names no such files.

    The files are read exactly as a Data page upload (the same checks, sentences and limits) and stored
    once under workspace/cache/images/files/<key>/, the key made from their checksum: a run config can
    name them by path, and a run's image references stay valid even if the files change later.
    """
    named = named_files(dataset)
    if named is None:
        return None
    archive, table = named
    data = read_named_file(archive)
    csv_data = read_named_file(table) if table is not None else None
    key = FILE_KEY_PREFIX + checksum(data, *([] if csv_data is None else [csv_data]))  # a zip alone differs from zip + empty CSV
    target = cache_dir() / "images" / FILES_FOLDER / key
    if not (target / META_FILE).is_file():
        check_sizes(((archive.name, len(data)), (table.name if table else "the CSV", len(csv_data or b""))))
        upload = checked_upload(archive.name, data, table and table.name, csv_data)
        how = f"{archive.resolve()}" + (f" with labels from {table.resolve()}" if table else " (one folder per class)")
        try:
            write_upload(target, upload, f"file {how} (stored as workspace/cache/images/{FILES_FOLDER}/{key})", progress)
        except FileExistsError:
            pass  # another process stored the same files meanwhile: theirs is the same dataset
    return key


def _is_stored_files(dataset: str) -> bool:
    return (
        dataset.startswith(FILE_KEY_PREFIX)
        and dataset == safe_name(dataset, fallback="")
        and (cache_dir() / "images" / FILES_FOLDER / dataset / META_FILE).is_file()
    )
