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


def split_counts(counts, column: str) -> dict[str, dict[str, int]]:
    """{split: {class: count}} from a (split, class, count) frame, zero counts kept: a kind's `show` balance."""
    return {
        split: {str(key): int(count) for key, count in zip(part[column], part["count"])}
        for split, part in counts.groupby("split", sort=False)
    }
