"""Datasets of every kind: the one registry (`core.data.registry`) and the text tables' own loaders.

The registry lists, names and deletes datasets of every kind (text, images, NER, image-text);
each kind registers itself from one module (`core.data.text_kind`, `core.images.kind`,
`core.ner.kind`, `core.image_text.kind`). For text, `load_splits` is what the trainer and the
pages call; everything returns string labels and raises `UserError` with a sentence when the data
cannot be used.
"""

from core.assets import no_progress
from core.data.builtin import BUILTIN_DATASETS, PLANTED_KEYWORDS, BuiltinDataset, planted_keywords_frame
from core.data.info import DatasetInfo
from core.data.loading import load_splits
from core.data.registry import check_dataset_name, dataset_kind, dataset_kinds, delete_dataset, find_dataset, list_datasets
from core.data.splits import SPLIT_NAMES, DataSplits
from core.data.tables import SUPPORTED_SUFFIXES, guess_columns, parse_table, read_table
from core.data.uploads import register_dataset

__all__ = [
    "BUILTIN_DATASETS",
    "PLANTED_KEYWORDS",
    "SPLIT_NAMES",
    "SUPPORTED_SUFFIXES",
    "BuiltinDataset",
    "DataSplits",
    "DatasetInfo",
    "check_dataset_name",
    "dataset_kind",
    "dataset_kinds",
    "delete_dataset",
    "find_dataset",
    "guess_columns",
    "list_datasets",
    "load_splits",
    "no_progress",
    "parse_table",
    "planted_keywords_frame",
    "read_table",
    "register_dataset",
]
