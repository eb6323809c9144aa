"""The image modality: built-in image datasets and uploads, augmentation, the converted MobileNetV2.

    load_image_splits(key, seed=, max_rows=, …) -> ImageSplits   train/validation/test as datasets.Dataset
    list_image_datasets() -> [DatasetInfo]                       built-ins, then uploads in this workspace
    register_image_dataset(name, zip_name, zip_bytes, csv_filename=, csv_data=) -> DatasetInfo
    open_image("digits#12") -> PIL.Image                          what a predictions frame's image column names
    core.images.augment.augment(image, AugmentParams(…), rng) / preview_grid(images, params, seed, n)

Importing this package is light (PIL, numpy, pandas); torch, transformers and datasets load when used.
"""

# `augment` the function stays in core.images.augment: re-exported here it would hide the module.
from core.images.augment import AugmentParams, params_from_config, preview_grid
from core.images.datasets import (
    BUILTIN_IMAGE_DATASETS,
    IMAGE_CLASSIFICATION,
    ImageSplits,
    is_image_dataset,
    list_image_datasets,
    load_image_splits,
    open_image,
    open_record,
    reference,
    register_image_dataset,
)

__all__ = [
    "BUILTIN_IMAGE_DATASETS",
    "IMAGE_CLASSIFICATION",
    "AugmentParams",
    "ImageSplits",
    "is_image_dataset",
    "list_image_datasets",
    "load_image_splits",
    "open_image",
    "open_record",
    "params_from_config",
    "preview_grid",
    "reference",
    "register_image_dataset",
]
