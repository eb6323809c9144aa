"""Datasets for the workbench: built-ins, registered uploads and table files, split for training.

`load_splits` is what the trainer and the pages call; everything returns string labels and
raises `UserError` with a sentence when the data cannot be used.
"""

from core.assets import no_progress
from core.data.builtin import BUILTIN_DATASETS, PLANTED_KEYWORDS, BuiltinDataset, planted_keywords_frame
from core.data.info import DatasetInfo
from core.data.loading import list_datasets, load_splits
from core.data.registry import register_dataset
from core.data.splits import SPLIT_NAMES, DataSplits
from core.data.tables import SUPPORTED_SUFFIXES, guess_columns, parse_table, read_table

__all__ = [
    "BUILTIN_DATASETS",
    "PLANTED_KEYWORDS",
    "SPLIT_NAMES",
    "SUPPORTED_SUFFIXES",
    "BuiltinDataset",
    "DataSplits",
    "DatasetInfo",
    "guess_columns",
    "list_datasets",
    "load_splits",
    "no_progress",
    "parse_table",
    "planted_keywords_frame",
    "read_table",
    "register_dataset",
]
