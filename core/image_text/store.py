"""The stored form of an image-text pair dataset and how its rows are split.

Every dataset is one Arrow file written by `core.images.store.write_table` (image, label, row,
plus text and any ground truth: mask, evidence, keyword), read memory-mapped through the `datasets`
library. Splits are 80/10/10 and seeded: stratified by label through `core.data.splits.make_splits`
when the dataset has labels, a seeded random split otherwise.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from core.data.registry import staging_folder
from core.data.splits import SPLIT_NAMES, _check_not_empty, _clean, _stratified_split, make_splits, stratified_sample
from core.errors import UserError
from core.images.store import DATA_FILE, META_FILE, STORE_VERSION, image_features, open_table_file, png_bytes

CONTRASTIVE = "image_text_contrastive"
FUSION = "image_text_fusion"
KIND_NAMES = {CONTRASTIVE: "caption dataset (for alignment)", FUSION: "labelled-pair dataset (for fusion)"}
TABLE_FOLDER = "table"
PAIR_STORE_VERSION = 1  # bump when a built-in's records change, so old caches are rebuilt
VALIDATION_FRACTION = TEST_FRACTION = 0.1
DEFAULT_PROMPT = "a photo of a {label}"


def split_rows(
    labels: list[str], *, where: str, source: str, seed: int = 42, max_rows: int | None = None
) -> dict[str, list[int]]:
    """Row numbers per split: stratified by label (make_splits' checks) when labelled, else a seeded random split."""
    frame = pd.DataFrame({"text": [str(row) for row in range(len(labels))], "label": labels})
    if any(labels):
        splits = make_splits(
            frame,
            where=where,
            source=source,
            seed=seed,
            validation_fraction=VALIDATION_FRACTION,
            test_fraction=TEST_FRACTION,
            max_rows=max_rows,
        )
        parts = {name: splits.split(name) for name in SPLIT_NAMES}
    else:
        # One shared (empty) label makes the per-class split a plain seeded shuffle with the same rounding.
        if max_rows is not None:
            frame = stratified_sample(frame, max_rows, seed, by=["label"])
        parts = _stratified_split(frame, seed, VALIDATION_FRACTION, TEST_FRACTION)
        _check_not_empty(parts, len(frame), where)
        parts = {name: _clean(part, seed) for name, part in parts.items()}
    return {name: part["text"].astype(int).tolist() for name, part in parts.items()}


def open_table(folder: Path):
    return open_table_file(folder / DATA_FILE)


def read_meta(folder: Path, dataset: str) -> dict[str, Any]:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(
            f"The description {folder / META_FILE} of the image-text dataset {dataset!r} is damaged "
            f"({type(error).__name__}); delete that folder and load or upload the dataset again."
        ) from None


def pair_features(extras: Iterable[str] = ()):
    """The image columns (image, label, row) plus text, and any of the ground-truth columns mask, evidence, keyword."""
    from datasets import Image as ImageFeature
    from datasets import Value

    features = image_features()
    features["text"] = Value("string")
    for name in extras:
        features[name] = ImageFeature(mode="L") if name == "mask" else Value("string")
    return features


def mask_cell(mask: np.ndarray) -> dict[str, Any]:
    """A boolean mask as the stored image cell write_table expects for columns other than `image`."""
    return {"bytes": png_bytes(Image.fromarray(mask.astype(np.uint8) * 255)), "path": None}


@contextmanager
def staged(parent: Path, key: str) -> Iterator[Path]:
    """A hidden folder in `parent` for writing a dataset before it is renamed into place; removed whatever happens."""
    folder = staging_folder(parent, key)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_current(folder: Path) -> bool:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("store_version") == STORE_VERSION and meta.get("pair_version") == PAIR_STORE_VERSION
