"""Turning a text/label table into train/validation/test splits, stratified and reproducible.

The split is done per class by hand rather than with sklearn's `train_test_split(stratify=…)`:
sklearn refuses any class that ends up with a single member in a held-out part, which rejects
small but perfectly usable datasets (a class with two or three examples). Per class, rows are
shuffled with the seed and the first ones go to test, the next to validation, the rest to train,
so every class keeps its share in every split and the same seed always gives the same split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from core.errors import UserError

SPLIT_NAMES = ("train", "validation", "test")
# Names people use for the splits in a "split" column, mapped to ours.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
MIN_PER_CLASS = 2  # one example to learn from and one to check; fewer cannot be split


@dataclass
class DataSplits:
    """The three splits of a text-classification dataset; class index i means `label_names[i]`."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    source: str

    def split(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLIT_NAMES}

    def all_rows(self) -> pd.DataFrame:
        """Every row with a "split" column saying where it went, train first."""
        parts = [self.split(name).assign(split=name) for name in SPLIT_NAMES]
        return pd.concat(parts, ignore_index=True)

    def class_balance(self) -> pd.DataFrame:
        """Rows per (split, label), with zero counts kept so missing classes show up as gaps."""
        rows = self.all_rows()
        counts = rows.groupby(["split", "label"]).size()
        full = pd.MultiIndex.from_product([list(SPLIT_NAMES), self.label_names], names=["split", "label"])
        return counts.reindex(full, fill_value=0).rename("count").reset_index()

    def text_lengths(self) -> pd.DataFrame:
        """Words per text (whitespace-separated), per row, with its split and label."""
        rows = self.all_rows()
        return rows.assign(words=rows["text"].str.split().str.len())[["split", "label", "words"]]


def make_splits(
    frame: pd.DataFrame,
    *,
    where: str,
    source: str,
    seed: int = 42,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
) -> DataSplits:
    """Check the labels of a text/label(/split) frame, subsample it if asked, and split it."""
    _check_fractions(validation_fraction, test_fraction)
    check_labels(frame, where)
    given = _given_splits(frame, where)
    if max_rows is not None:
        frame = stratified_sample(frame, max_rows, seed, by=["split", "label"] if given else ["label"])
    if given:
        parts = _use_given_splits(frame, where, seed, validation_fraction, test_fraction)
    else:
        parts = _stratified_split(frame, seed, validation_fraction, test_fraction)
    _check_not_empty(parts, len(frame), where)
    return DataSplits(
        train=_clean(parts["train"], seed),
        validation=_clean(parts["validation"], seed),
        test=_clean(parts["test"], seed),
        label_names=sorted(frame["label"].unique()),
        source=source,
    )


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise UserError(
            f"The validation and test fractions ({validation_fraction}, {test_fraction}) must each be between 0 and 1 "
            "and leave rows for training; 0.1 and 0.1 are a good start."
        )


def check_labels(frame: pd.DataFrame, where: str) -> None:
    """Refuse tables a classifier cannot learn from, naming the rows or classes at fault."""
    for column, what in (("label", "no label"), ("text", "empty text")):
        blank = frame[column].str.strip() == ""
        if blank.any():
            first = int(blank.to_numpy().argmax()) + 1
            raise UserError(
                f"{int(blank.sum())} rows of {where} have {what} (the first is data row {first}); "
                "fill them in or delete those rows, then load it again."
            )
    counts = frame["label"].value_counts()
    if len(counts) < 2:
        raise UserError(
            f"Every row of {where} has the label {counts.index[0]!r}; a classifier needs at least two classes — "
            "check that you chose the right label column."
        )
    lonely = sorted(counts[counts < MIN_PER_CLASS].index)
    if lonely:
        names = ", ".join(repr(name) for name in lonely[:5]) + (f" and {len(lonely) - 5} more" if len(lonely) > 5 else "")
        subject = f"The class {names} in {where} has" if len(lonely) == 1 else f"The classes {names} in {where} each have"
        raise UserError(
            f"{subject} only one example; add at least one more example per class or remove those rows, "
            "so every class can appear in both training and evaluation."
        )


def stratified_sample(frame: pd.DataFrame, max_rows: int, seed: int, by: list[str]) -> pd.DataFrame:
    """About `max_rows` rows keeping each group's share, never fewer than two per group."""
    if max_rows < 1:
        raise UserError(f"The maximum number of rows must be at least 1 (got {max_rows}); leave it empty to use all rows.")
    if max_rows >= len(frame):
        return frame
    shuffled = frame.sample(frac=1.0, random_state=seed)
    groups = shuffled.groupby(by, sort=False)
    rank = groups.cumcount()
    size = groups[by[0]].transform("size")
    quota = (size * max_rows / len(frame)).map(_round_half_up).clip(lower=MIN_PER_CLASS).clip(upper=size)
    return shuffled[rank < quota]


def _given_splits(frame: pd.DataFrame, where: str) -> bool:
    """Whether the table brings its own split column; unknown split names are an error, not a guess."""
    if "split" not in frame.columns:
        return False
    unknown = sorted(set(frame["split"]) - set(SPLIT_ALIASES))
    if unknown:
        raise UserError(
            f"The split column of {where} holds {', '.join(repr(value) for value in unknown[:5])}; "
            "use train, validation (or val/dev) and test, or drop the column to split automatically."
        )
    return True


def _use_given_splits(
    frame: pd.DataFrame, where: str, seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, pd.DataFrame]:
    """Keep the table's own splits; a missing validation or test split is carved out of train."""
    named = frame["split"].map(SPLIT_ALIASES)
    parts = {name: frame[named == name] for name in SPLIT_NAMES}
    if parts["train"].empty:
        raise UserError(f"The split column of {where} marks no rows as train; mark the training rows with 'train'.")
    missing_validation = validation_fraction if parts["validation"].empty else 0.0
    missing_test = test_fraction if parts["test"].empty else 0.0
    if missing_validation or missing_test:
        carved = _stratified_split(parts["train"], seed, missing_validation, missing_test)
        parts["train"] = carved["train"]
        for name in ("validation", "test"):
            if parts[name].empty:
                parts[name] = carved[name]
    return parts


def _stratified_split(
    frame: pd.DataFrame, seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, pd.DataFrame]:
    shuffled = frame.sample(frac=1.0, random_state=seed)
    groups = shuffled.groupby("label", sort=False)
    rank = groups.cumcount()
    size = groups["label"].transform("size")
    # Each class keeps at least one training row; held-out shares are rounded per class.
    n_test = (size * test_fraction).map(_round_half_up).clip(upper=size - 1)
    n_validation = (size * validation_fraction).map(_round_half_up).clip(upper=size - 1 - n_test)
    return {
        "test": shuffled[rank < n_test],
        "validation": shuffled[(rank >= n_test) & (rank < n_test + n_validation)],
        "train": shuffled[rank >= n_test + n_validation],
    }


def _round_half_up(value: float) -> int:
    """Python's round() rounds 0.5 to even (0), which would hold out nothing from a 5-row class."""
    return math.floor(value + 0.5)


def _check_not_empty(parts: dict[str, pd.DataFrame], rows: int, where: str) -> None:
    empty = [name for name in SPLIT_NAMES if parts[name].empty]
    if empty:
        raise UserError(
            f"{where[:1].upper() + where[1:]} has too few rows ({rows}) to fill the {' and '.join(empty)} split; "
            "add more rows, raise the validation/test fractions, or raise the row limit."
        )


def _clean(part: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows mixed across classes (seeded), so the head of a split or a table is representative."""
    return part[["text", "label"]].sample(frac=1.0, random_state=seed).reset_index(drop=True)
