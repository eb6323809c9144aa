"""Error analysis for token-classification runs: sentences with gold and predicted spans, per-type confusion.

Reads the per-sentence predictions the trainer stored (`predictions/{split}_{stage}.parquet`,
one row per sentence with span lists as JSON `[[type, start, end], ...]`, end inclusive). For a run
on plain tags every word is a one-word span of its tag, so the same confusion is per tag.
"""

from __future__ import annotations

import json

import pandas as pd

from core.errors import UserError
from core.ner.schemes import detect_scheme
from core.store import Run

MISSING = "O (none)"  # the row/column for "no entity here" in the per-type confusion


def ner_predictions(run: Run, split: str = "test", stage: str = "after") -> pd.DataFrame:
    path = run.directory / "predictions" / f"{split}_{stage}.parquet"
    if not path.exists():
        stored = (
            sorted(p.stem for p in (run.directory / "predictions").glob("*.parquet"))
            if (run.directory / "predictions").exists()
            else []
        )
        raise UserError(
            f"Run {run.id} has no {split} predictions for stage '{stage}'; available: {', '.join(stored) or 'none yet'}."
        )
    frame = pd.read_parquet(path)
    if "gold_entities" not in frame.columns:
        raise UserError(f"Run {run.id} is not a named-entity run; its predictions have no entities.")
    return frame


def run_scheme(run: Run, frame: pd.DataFrame) -> str:
    """The run's tag scheme from its summary; until the summary is written (just after step 0), read from the
    gold tags of its predictions, which tell plain tags from entity tags as the dataset's do."""
    from core.run_files import summary

    stored = (summary(run) or {}).get("tag_scheme")
    return stored or detect_scheme(frame["gold_tags"])


def entities(cell: str) -> list[tuple[str, int, int]]:
    return [tuple(entity) for entity in json.loads(cell)]


def spans_text(text: str, cell: str) -> str:
    """A sentence's spans as people read them: "PER John Smith · LOC Paris" (`text` is its words joined by spaces)."""
    words = text.split(" ")
    return " · ".join(f"{kind} {' '.join(words[start : end + 1])}" for kind, start, end in entities(cell)) or "(none)"


def readable_flips(flips: pd.DataFrame) -> pd.DataFrame:
    """A comparison's flipped sentences with every span column (gold, each model's prediction) spelled out in words."""
    shown = flips.copy()
    for column in shown.columns:
        if column.startswith(("gold_entities", "predicted_entities")):
            shown[column] = [spans_text(text, cell) for text, cell in zip(shown["text"], shown[column])]
    return shown.rename(columns=lambda column: column.replace("gold_entities", "gold").replace("predicted_entities", "predicted"))


def type_confusion(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts of (gold type, predicted type) over spans: same span, different type, or missed/spurious.

    For plain tags (one span per word) that is the per-tag confusion of words; MISSING marks a word
    that truncation cut off."""
    pairs = []
    for gold_cell, predicted_cell in zip(frame["gold_entities"], frame["predicted_entities"]):
        gold = {(start, end): kind for kind, start, end in entities(gold_cell)}
        predicted = {(start, end): kind for kind, start, end in entities(predicted_cell)}
        for span in gold.keys() | predicted.keys():
            pairs.append((gold.get(span, MISSING), predicted.get(span, MISSING)))
    table = pd.DataFrame(pairs, columns=["gold", "predicted"])
    return pd.crosstab(table["gold"], table["predicted"]) if len(table) else pd.DataFrame()


def filter_sentences(
    frame: pd.DataFrame, *, errors_only: bool = False, error_type: str | None = None, contains: str = ""
) -> pd.DataFrame:
    """Sentences with errors (of one entity type, when given), containing a text, hardest first."""
    selected = frame
    if errors_only:
        selected = selected[~selected["correct"]]
    if error_type:
        selected = selected[selected["error_types"].map(lambda types: error_type in list(types))]
    if contains:
        selected = selected[selected["text"].str.contains(contains, case=False, regex=False)]
    return selected.sort_values("loss", ascending=False)
