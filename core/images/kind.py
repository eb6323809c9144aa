"""Labelled images as a kind of the dataset registry: what `data add` and `data show` do with them."""

from __future__ import annotations

from typing import Any

from core.data.info import DatasetInfo, split_counts
from core.data.registry import DatasetFiles, DatasetKind, read_named_file, register_kind
from core.images.builtin import BUILTIN_IMAGE_DATASETS
from core.images.datasets import load_image_splits, register_image_dataset, registered_image_info
from core.images.store import IMAGE_CLASSIFICATION

IMAGES_PER_CLASS = 6  # the Data page's thumbnails per class
IMAGE_SIZE_SAMPLE = 300  # images whose size is counted, as on the Data page


def add_images(files: DatasetFiles) -> DatasetInfo:
    """A zip of class folders, or (with `images`) a CSV of path,label and the zip it names."""
    if files.images is None:
        return register_image_dataset(files.name, files.file.name, read_named_file(files.file))
    return register_image_dataset(
        files.name,
        files.images.name,
        read_named_file(files.images),
        csv_filename=files.file.name,
        csv_data=read_named_file(files.file),
    )


def show_images(name: str) -> dict[str, Any]:
    splits = load_image_splits(name)
    return {
        "source": splits.source,
        "rows": splits.sizes(),
        "classes": splits.label_names,
        "balance": split_counts(splits.class_balance(), "label"),
        "preview": splits.examples_per_class(IMAGES_PER_CLASS),
        "image_sizes": splits.image_sizes(IMAGE_SIZE_SAMPLE),
    }


def image_preview(preview: dict[str, list[str]]) -> list[str]:
    return [f"{label}: {', '.join(references) or 'no training images'}" for label, references in preview.items()]


LABELLED_IMAGES = register_kind(
    DatasetKind(
        task=IMAGE_CLASSIFICATION,
        modality="Images",
        builtins=BUILTIN_IMAGE_DATASETS,
        registered_info=registered_image_info,
        load=load_image_splits,
        add=add_images,
        show=show_images,
        preview_lines=image_preview,
        files="a zip of class folders, or a CSV of path,label with --images ZIP",
        images="optional",
    )
)
