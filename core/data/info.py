"""What the pages and the trainer show about a dataset, whichever kind it is."""

from __future__ import annotations

from dataclasses import dataclass

TEXT_CLASSIFICATION = "text_classification"


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """One entry of the dataset list: `key` is what `load_splits` accepts."""

    key: str
    title: str
    task: str = TEXT_CLASSIFICATION
    source: str
    description: str
    builtin: bool
