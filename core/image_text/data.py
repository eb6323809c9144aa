"""Image-text pair datasets as two kinds of the registry: captions for CLIP-style alignment, labelled pairs for fusion.

Two kinds, told apart by `DatasetInfo.task`: CONTRASTIVE rows are (image, caption[, label for
zero-shot prompts]); FUSION rows are (image, text, label). The stored form and the splits are
`core.image_text.store`: built-ins (`core.image_text.builtin`) under `cache/image_text/<key>/`
(made on first use), uploads under `datasets/<name>/table/` beside a `spec.yaml` whose task is the
kind, which the registry lists. Uploads are a zip of images plus a CSV of pairs, checked by
`core.image_text.uploads`; their names follow the registry's one rule. A run config may name the
same files by path ("captions.csv + images.zip"): `pair_files_key` reads them with the same checks
and stores them once in the cache under a key made from their kind and checksum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.assets import Progress, no_progress
from core.data.info import DatasetInfo
from core.data.registry import (
    already_exists,
    check_dataset_name,
    list_datasets,
    read_named_file,
    read_spec,
    registered_task,
    write_spec,
)
from core.data.splits import SPLIT_NAMES
from core.errors import UserError
from core.image_text.builtin import BUILTIN_PAIR_DATASETS
from core.image_text.store import (
    CONTRASTIVE,
    FUSION,
    KIND_NAMES,
    PAIR_STORE_VERSION,
    TABLE_FOLDER,
    is_current,
    open_table,
    pair_features,
    read_meta,
    split_rows,
    staged,
)
from core.image_text.uploads import REQUIRED_COLUMNS, checked_pairs
from core.images.datasets import ImageSplits
from core.images.store import DATA_FILE, META_FILE, reference, write_table
from core.images.uploads import FILE_KEY_PREFIX, FILES_FOLDER, check_sizes, checksum, named_files
from core.workspace import cache_dir, datasets_dir, safe_name


@dataclass
class PairSplits(ImageSplits):
    """Train/validation/test of a pair dataset, each a `datasets.Dataset`; `split`, `sizes` and
    `class_balance` are the image splits' own.

    Rows give `image` (PIL, RGB), `text` (str), `label` (str; "" when the dataset has none) and
    `row` (the stored row; `reference(dataset, row)` names it for `open_pair_record`); shapes and
    planted pairs add `mask` (PIL "L", 255 = the evidence's pixels), planted pairs `evidence` and
    `keyword`. `label_names` is [] for a dataset without labels.
    """

    prompt_template: str  # a zero-shot prompt with "{label}", e.g. "a photo of a {label}"

    def frame(self, name: str) -> pd.DataFrame:
        """The split without pixels: image (a reference for `open_pair_record`), text, label, row and any ground truth."""
        part = self.split(name)
        extras = [column for column in part.column_names if column not in ("image", "text", "label", "row", "mask")]
        frame = part.select_columns(["text", "label", "row", *extras]).to_pandas()
        frame.insert(0, "image", [reference(self.dataset, row) for row in frame["row"]])
        return frame


def load_pair_splits(
    dataset: str, *, kind: str, seed: int = 42, max_rows: int | None = None, progress: Progress = no_progress
) -> PairSplits:
    """Seeded 80/10/10 splits of a built-in or registered pair dataset of `kind`, or of pair files named by path."""
    _checked_kind(kind)
    dataset = pair_dataset_key(dataset, kind, progress)
    folder, found = _locate(dataset, progress)
    if found != kind:
        raise UserError(
            f"{dataset!r} is a {KIND_NAMES[found]}, not a {KIND_NAMES[kind]}; "
            f"choose one of {', '.join(info.key for info in list_pair_datasets(kind))}."
        )
    table = open_table(folder)
    meta = read_meta(folder, dataset)
    labels = table.data.column("label").to_pylist()
    rows = split_rows(labels, where=f"the image-text dataset {dataset!r}", source=meta["source"], seed=seed, max_rows=max_rows)
    return PairSplits(
        label_names=sorted(set(labels) - {""}),
        prompt_template=meta["prompt_template"],
        source=meta["source"],
        dataset=dataset,
        **{name: table.select(rows[name]) for name in SPLIT_NAMES},
    )


def open_pair_record(ref: str) -> dict[str, Any]:
    """The stored pair a reference names: image, text, label, mask (bool array or None), plus evidence/keyword if kept."""
    dataset, _, row = ref.rpartition("#")
    if not dataset or not row.isdigit():
        raise UserError(f"{ref!r} does not name a pair of a dataset; references look like 'shapes-captions#12'.")
    table = open_table(_locate(dataset)[0])
    if int(row) >= len(table):
        raise UserError(
            f"The image-text dataset {dataset!r} has {len(table):,} pairs, so {ref!r} names none; "
            "the dataset may have been uploaded again since the run."
        )
    stored = table[int(row)]
    record = {
        "image": stored["image"],
        "text": stored["text"],
        "label": stored["label"],
        "mask": np.asarray(stored["mask"]) > 0 if stored.get("mask") is not None else None,
    }
    return record | {name: stored[name] for name in ("evidence", "keyword") if name in stored}


def list_pair_datasets(kind: str) -> list[DatasetInfo]:
    """Built-in pair datasets of `kind` first, then the ones of that kind registered in this workspace."""
    _checked_kind(kind)
    return list_datasets(kind)


def is_pair_dataset(key: str, kind: str) -> bool:
    """Whether `key` is a pair dataset of `kind`: built in, registered, or pair files named by path — which are read and
    stored here, so a path to a missing file or a broken zip is refused with the upload's own sentence."""
    builtin = BUILTIN_PAIR_DATASETS.get(key)
    if builtin is not None:
        return builtin.kind == kind
    found = _registered_kind(key) or _stored_files_kind(key)
    if found is not None:
        return found == kind
    return pair_files_key(key, kind) is not None


def pair_dataset_key(dataset: str, kind: str, progress: Progress = no_progress) -> str:
    """The stored dataset `dataset` means: itself when it is a built-in, registered or stored-file key (these come
    first, so a dataset registered as "shots.zip" is never taken for a path), else the key of the files it names."""
    if dataset in BUILTIN_PAIR_DATASETS or _registered_kind(dataset) or _stored_files_kind(dataset):
        return dataset
    return pair_files_key(dataset, kind, progress) or dataset  # an unknown name: _locate says so


def version_stamp(dataset: str) -> float:
    """When a registered dataset's table was written (0 for a built-in): lets a page's cache notice a re-upload."""
    meta = datasets_dir() / dataset / TABLE_FOLDER / META_FILE
    return meta.stat().st_mtime if dataset not in BUILTIN_PAIR_DATASETS and meta.is_file() else 0.0


def _checked_kind(kind: str) -> str:
    if kind not in KIND_NAMES:
        raise UserError(f"{kind!r} is not a kind of image-text dataset; use {CONTRASTIVE!r} or {FUSION!r}.")
    return kind


def _locate(dataset: str, progress: Progress = no_progress) -> tuple[Path, str]:
    """The folder holding the dataset's table (a built-in is stored on first use) and its kind."""
    if dataset in BUILTIN_PAIR_DATASETS:
        builtin = BUILTIN_PAIR_DATASETS[dataset]
        return builtin.folder(progress), builtin.kind
    kind = _registered_kind(dataset)
    if kind is not None:
        return datasets_dir() / dataset / TABLE_FOLDER, kind
    kind = _stored_files_kind(dataset)
    if kind is not None:
        return _files_folder() / dataset, kind
    known = ", ".join(info.key for each in KIND_NAMES for info in list_pair_datasets(each))
    raise UserError(
        f"There is no image-text dataset called {dataset!r}; choose one of {known}, give the paths of a CSV "
        "and a zip of images as 'captions.csv + images.zip', or upload them on the Data page."
    )


def register_pair_dataset(
    name: str, kind: str, zip_filename: str, zip_data: bytes, csv_filename: str, csv_data: bytes, progress: Progress = no_progress
) -> DatasetInfo:
    """Check a zip of images and a CSV of pairs fully, then store them as datasets/<name>/ (nothing is written before)."""
    _checked_kind(kind)
    check_sizes(((zip_filename, len(zip_data)), (csv_filename, len(csv_data))))
    key = check_dataset_name(name)
    upload = checked_pairs(kind, zip_filename, zip_data, csv_filename, csv_data)
    source = (
        f"uploaded {upload.meta['original_filename']} with pairs from {upload.meta['csv_filename']} "
        f"(workspace/datasets/{key}/{TABLE_FOLDER}/{DATA_FILE})"
    )
    spec = {  # every kind's spec fields; the registry lists it under its task
        "name": key,
        "file": f"{TABLE_FOLDER}/{DATA_FILE}",
        "text_column": REQUIRED_COLUMNS[kind][1],
        "label_column": "label",
        "original_filename": upload.meta["original_filename"],
        "rows": len(upload.records),
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": kind,
    }
    with staged(datasets_dir(), key) as staging:
        write_table(
            staging / TABLE_FOLDER,
            upload.records,
            pair_features(),
            {"key": key, "source": source, **upload.meta},
            progress,
            total=len(upload.records),
        )
        write_spec(staging, spec)
        try:
            staging.rename(datasets_dir() / key)  # fails if another save claimed the name meanwhile
        except OSError:
            raise already_exists(key) from None
    return registered_pair_info(key)


def pair_files_key(dataset: str, kind: str, progress: Progress = no_progress) -> str | None:
    """The key of the pair files `dataset` names by path, "captions.csv + images.zip", or None when it names none.

    The files are read exactly as a Data page upload of `kind` (the same checks, sentences and limits) and
    stored once under workspace/cache/image_text/files/<key>/, the key made from the kind and the files'
    checksum, so a run config can name them by path and a run's pair references stay valid.
    """
    named = named_files(dataset)
    if named is None:
        return None
    archive, table = named
    header = ",".join(REQUIRED_COLUMNS[_checked_kind(kind)])
    if table is None:
        raise UserError(
            f"A zip alone is not an image-text dataset; name the CSV of pairs ({header}) with it, "
            f"as 'pairs.csv + {archive.name}'."
        )
    zip_data, csv_data = read_named_file(archive), read_named_file(table)
    key = FILE_KEY_PREFIX + checksum(kind.encode(), zip_data, csv_data)
    target = _files_folder() / key
    if not is_current(target):
        check_sizes(((archive.name, len(zip_data)), (table.name, len(csv_data))))
        upload = checked_pairs(kind, archive.name, zip_data, table.name, csv_data)
        source = (
            f"file {archive.resolve()} with pairs from {table.resolve()} "
            f"(stored as workspace/cache/image_text/{FILES_FOLDER}/{key})"
        )
        meta = {"key": key, "source": source, "pair_version": PAIR_STORE_VERSION, **upload.meta}
        with staged(target.parent, key) as staging:
            write_table(staging, upload.records, pair_features(), meta, progress, total=len(upload.records))
            try:
                staging.rename(target)
            except OSError:
                if not is_current(target):  # else another process stored the same files meanwhile: the same dataset
                    raise
    return key


def _files_folder() -> Path:
    return cache_dir() / "image_text" / FILES_FOLDER


def _stored_files_kind(dataset: str) -> str | None:
    """The kind of the pair files stored from a path under the key `dataset`, else None."""
    folder = _files_folder() / dataset
    if not dataset.startswith(FILE_KEY_PREFIX) or dataset != safe_name(dataset, fallback="") or not is_current(folder):
        return None
    return read_meta(folder, dataset).get("kind")


def _registered_kind(name: str) -> str | None:
    """The pair kind of a registered dataset whose table is complete, else None (text, image, NER or half-written)."""
    task = registered_task(name)
    if task not in KIND_NAMES or not (datasets_dir() / name / TABLE_FOLDER / DATA_FILE).is_file():
        return None
    return task


def registered_pair_info(name: str) -> DatasetInfo:
    """A pair upload as the lists show it; a damaged one with the reason instead of hidden."""
    folder = datasets_dir() / name
    kind = read_spec(name)["task"]
    try:
        meta = json.loads((folder / TABLE_FOLDER / META_FILE).read_text(encoding="utf-8"))
        names = meta["label_names"]
        classes = f"{len(names)} classes ({', '.join(names[:6])}{'…' if len(names) > 6 else ''})" if names else "no labels"
        dropped = meta["duplicates_dropped"]
        description = (
            f"{meta['rows']:,} pairs of {meta['images']:,} images, {classes}, uploaded from "
            f"{meta['original_filename']} with {meta['csv_filename']}; "
            + (f"{dropped:,} duplicate lines dropped." if dropped else "no duplicate lines.")
        )
        source = meta["source"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        description, source = (
            f"The description of this dataset is damaged ({type(error).__name__}); delete {folder} and upload it again.",
            str(folder),
        )
    return DatasetInfo(key=name, title=name, task=kind, source=source, description=description, builtin=False)
