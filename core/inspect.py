"""What the Inspect page computes: predictions per (run, split, stage), confusion counts, filters, flips.

Predictions are made once with the stage's model and kept in the run directory as
`predictions/{split}_{stage}.parquet` (the trainer already writes test_before, test_after and
validation_after); every later look reads the file. Rows keep their position in the split as
the index ("row"), so a filtered table, a confusion cell, a gallery and a comparison all name an
example the same way. No streamlit here: the page only draws what these functions return.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import UserError
from core.stages import SPLITS, task_of
from core.store import Run

# The classification views (`Task.view`) whose runs these functions inspect, and the column naming each example in
# their prediction frames: its text, or an image reference ("digits#12").
INPUT_COLUMNS = {"text": "text", "image": "image", "answers": "prompt"}
TABLE_COLUMNS = ("text", "gold", "predicted", "confidence", "loss", "correct")
IMAGE_COLUMNS = ("image", "gold", "predicted", "confidence", "loss", "correct")
IMAGE_PAGE_SIZE = 24  # thumbnails on one page of the image gallery
PAGE_SIZE = 50
GALLERY_CAP = 50
# Length bins in words (whitespace-separated), inclusive bounds; the last is open-ended.
LENGTH_BINS: tuple[tuple[str, int, float], ...] = (
    ("1–10 words", 1, 10),
    ("11–20 words", 11, 20),
    ("21–40 words", 21, 40),
    ("over 40 words", 41, math.inf),
)

Progress = Callable[[float, str], None]


def _quiet(fraction: float, message: str) -> None:
    """Default progress sink."""


# --- runs and stages -------------------------------------------------------------------------


def stages(run: Run) -> list[str]:
    """The run's stages with a model, in training order; a sentence when there is nothing to inspect."""
    from core.checkpoints import available_stages

    modality(run)
    if not run.directory.is_dir():
        raise UserError(f"The directory of run {run.id} was deleted, so its models and predictions are gone. Pick another run.")
    found = available_stages(run)
    if not found:
        raise UserError(
            f"Run {run.id} ({run.status}) has no model to inspect yet: it saves one before its first update. "
            "Wait until it is running, or pick a finished run."
        )
    return found


def modality(run: Run) -> str:
    """ "text" or "image": how the run's examples are shown and explained; a sentence for other tasks."""
    found = task_of(run).view
    if found not in INPUT_COLUMNS:
        kind = run.task.replace("_", " ")
        raise UserError(
            f"Run {run.id} is a {kind} run; this page inspects text and image classification runs. Pick one of those."
        )
    return found


def input_column(frame: pd.DataFrame) -> str:
    """The column naming each example: "text" for text runs, "image" (a reference) for image runs, "prompt" for the
    answers of an instruction-tuned model."""
    if "prompt" in frame.columns:
        return "prompt"
    return "image" if "image" in frame.columns and "text" not in frame.columns else "text"


# What each column of a prediction frame plays in a comparison: a classifier's frame, a generator's answers, a
# tagger's sentences (right when every span is) or an aligned model's pairs (right when its caption ranks first).
CLASSIFIER_ROLES = {"gold": "gold", "predicted": "predicted", "correct": "correct"}
ANSWER_ROLES = {"gold": "reference", "predicted": "answer", "correct": "match"}
TAG_ROLES = {"gold": "gold_entities", "predicted": "predicted_entities", "correct": "correct"}
RETRIEVAL_ROLES = {"gold": "text", "predicted": "retrieved", "correct": "correct"}
# The columns that name an example; every one a frame has must agree between two frames for them to pair.
IDENTITY_COLUMNS = ("image", "prompt", "text")
# Per-example measures shown for both models in a comparison's flips, where a frame has them.
MEASURED_COLUMNS = ("confidence", "loss", "rank")


def frame_roles(frame: pd.DataFrame) -> dict[str, str]:
    """Role -> column for the kind of prediction frame this is (`CLASSIFIER_ROLES` and its siblings)."""
    for roles in (ANSWER_ROLES, TAG_ROLES, RETRIEVAL_ROLES):
        if roles["predicted"] in frame.columns:
            return roles
    return CLASSIFIER_ROLES


def label_names(run: Run, frame: pd.DataFrame | None = None) -> list[str]:
    """Class names in the model's order: from summary.json, else from a prediction frame's p(…) columns."""
    from core.run_files import summary

    written = (summary(run) or {}).get("label_names")
    if written:
        return list(written)
    if frame is not None:
        return [column[2:-1] for column in frame.columns if column.startswith("p(") and column.endswith(")")]
    raise UserError(f"Run {run.id} has not written its class names yet (summary.json); wait until it starts training.")


# --- predictions -----------------------------------------------------------------------------


def stage_stamp(run: Run, stage: str) -> int | None:
    """When the stage's model was written (ns), so caches notice a model saved again (a resumed run)."""
    from core.checkpoints import stage_folder

    marker = stage_folder(run, stage) / "config.json"
    try:
        return marker.stat().st_mtime_ns
    except OSError:
        return None


def predictions_path(run: Run, split: str, stage: str) -> Path:
    return run.directory / "predictions" / f"{split}_{stage}.parquet"


def predictions(run: Run, split: str, stage: str, progress: Progress = _quiet) -> pd.DataFrame:
    """One row per example of `split` under the `stage` model: text, gold, predicted, confidence, loss,
    correct, p(label)…; index "row" is the example's position in the split.

    Reads the stored Parquet file when there is one; otherwise predicts with the stage's model
    once and stores the result for every later look.
    """
    if split not in SPLITS:
        raise UserError(f"There is no split '{split}'; choose one of {', '.join(SPLITS)}.")
    modality(run)
    if not run.directory.is_dir():
        raise UserError(f"The directory of run {run.id} was deleted, so its models and predictions are gone. Pick another run.")
    path = predictions_path(run, split, stage)
    if path.is_file():
        frame = pd.read_parquet(path)
    else:
        frame = compute_predictions(run, split, stage, progress)
        store_frame(frame, path)
    frame = frame.reset_index(drop=True)
    frame.index.name = "row"
    return frame


def store_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: another session reading at the same moment sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    frame.to_parquet(partial)
    os.replace(partial, path)


def compute_predictions(run: Run, split: str, stage: str, progress: Progress = _quiet) -> pd.DataFrame:
    """Predict every example of the run's split with the stage's model, through the task's own split and stage
    (`core.stages`); the frame names each example by its text or its image reference."""
    from core.predictions import prediction_frame
    from core.stages import open_stage, split_rows, task_of

    progress(0.0, f"Loading the {split} split")
    rows, names = split_rows(run, split)
    progress(0.05, f"Loading the {stage} model")
    model = open_stage(run, stage)
    own = task_of(run).stage_predictions(model, rows, lambda fraction, message: progress(0.1 + 0.9 * fraction, message))
    if own is not None:
        return own
    logits = model.predict(rows, progress=lambda fraction, message: progress(0.1 + 0.9 * fraction, f"{message} ({split})"))
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[label] for label in rows["label"]], dtype=int)
    column = INPUT_COLUMNS[modality(run)]
    return prediction_frame(rows[column].astype(str).tolist(), logits, labels, names).rename(columns={"text": column})


# --- summaries -------------------------------------------------------------------------------


def classification_report(frame: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    """sklearn's report (per class, accuracy, macro and weighted averages) for a prediction frame."""
    from sklearn.metrics import classification_report as sklearn_report

    return sklearn_report(frame["gold"], frame["predicted"], labels=names, output_dict=True, zero_division=0)


def headline(frame: pd.DataFrame, names: list[str]) -> dict[str, float]:
    report = classification_report(frame, names)
    return {
        "accuracy": float(frame["correct"].mean()) if len(frame) else float("nan"),
        "macro F1": float(report["macro avg"]["f1-score"]),
        "examples": len(frame),
        "errors": int((~frame["correct"]).sum()),
    }


def confusion_counts(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Counts with gold classes as rows and predicted classes as columns, zeros kept, in class order."""
    counts = pd.crosstab(frame["gold"], frame["predicted"])
    counts = counts.reindex(index=names, columns=names, fill_value=0).astype(int)
    counts.index.name, counts.columns.name = "gold", "predicted"
    return counts


def cell_from_selection(selection: Any, names: list[str]) -> tuple[str, str] | None:
    """(gold, predicted) of the clicked confusion cell in a plotly selection event, or None.

    The matrix is drawn as one scatter point per cell (x = predicted, y = gold); the point's
    x/y name the cell, and its index (row-major over names × names) is the fallback.
    """
    if not selection or not hasattr(selection, "get"):
        return None
    points = (selection.get("selection") or {}).get("points") or []
    if not points:
        return None
    point = points[0]
    gold, predicted = point.get("y"), point.get("x")
    if gold in names and predicted in names:
        return str(gold), str(predicted)
    index = point.get("point_index", point.get("point_number"))
    if isinstance(index, int) and 0 <= index < len(names) ** 2:
        return names[index // len(names)], names[index % len(names)]
    return None


# --- filters ---------------------------------------------------------------------------------


@dataclass
class Filters:
    """What the predictions table shows; every field left at its default lets all rows through."""

    misclassified_only: bool = False
    gold: list[str] = field(default_factory=list)  # empty: every class
    predicted: list[str] = field(default_factory=list)
    confidence: tuple[float, float] = (0.0, 1.0)
    contains: str = ""
    lengths: list[str] = field(default_factory=list)  # names from LENGTH_BINS; empty: every length
    hardest_first: bool = True


def word_counts(texts: pd.Series) -> pd.Series:
    return texts.str.split().str.len().fillna(0).astype(int)


def length_bin(words: int) -> str:
    for name, low, high in LENGTH_BINS:
        if low <= words <= high:
            return name
    return LENGTH_BINS[0][0]


def filter_predictions(frame: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """The rows that pass every filter, hardest (highest loss) first when asked; index kept."""
    keep = pd.Series(True, index=frame.index)
    if filters.misclassified_only:
        keep &= ~frame["correct"]
    if filters.gold:
        keep &= frame["gold"].isin(filters.gold)
    if filters.predicted:
        keep &= frame["predicted"].isin(filters.predicted)
    low, high = filters.confidence
    if low > 0.0 or high < 1.0:
        # Rounded to the slider's 0.01 grid, so a range like 0.5–1.0 keeps a confidence of 0.50001.
        keep &= frame["confidence"].between(low - 1e-9, high + 1e-9)
    if filters.contains.strip() and "text" in frame.columns:
        keep &= frame["text"].str.contains(filters.contains.strip(), case=False, regex=False)
    if filters.lengths and "text" in frame.columns:
        keep &= word_counts(frame["text"]).map(length_bin).isin(filters.lengths)
    shown = frame[keep]
    if filters.hardest_first:
        shown = shown.sort_values("loss", ascending=False, kind="stable")
    return shown


def page_count(rows: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(rows / size))


def page_of(frame: pd.DataFrame, page: int, size: int = PAGE_SIZE) -> pd.DataFrame:
    """Rows of 1-based page `page` (clamped to the pages there are)."""
    page = min(max(1, page), page_count(len(frame), size))
    return frame.iloc[(page - 1) * size : page * size]


def gallery_rows(frame: pd.DataFrame, cap: int = GALLERY_CAP) -> tuple[pd.DataFrame, bool]:
    """The first `cap` rows of a filtered table to explain, and whether some were left out."""
    return frame.head(cap), len(frame) > cap


def target_for(choice: str, gold: str | None) -> str | None:
    """The class to explain: None for "predicted", the gold label for "gold", else the label itself."""
    if choice == "predicted":
        return None
    if choice == "gold":
        if gold is None:
            raise UserError("A typed sentence has no gold label; explain the predicted class or pick a class by name.")
        return gold
    return choice


# --- comparing two models on the same split --------------------------------------------------


@dataclass
class Comparison:
    """Two models on the same examples: accuracy of each, and the examples whose correctness flipped."""

    accuracy_a: float
    accuracy_b: float
    fixed: pd.DataFrame  # wrong under A, right under B
    broken: pd.DataFrame  # right under A, wrong under B
    changed: int  # examples whose predicted class differs (right or wrong)


def compare(a: pd.DataFrame, b: pd.DataFrame, names: Iterable[str] = ("A", "B")) -> Comparison:
    """Pair two prediction frames of the same split row by row and list the flips from A to B, each kind of frame by
    its own notion of right (`frame_roles`): a classifier's class, a generator's answer matching its reference, a
    tagger's sentence with every span right, a pair whose caption ranks first among the split's."""
    name_a, name_b = names
    roles = frame_roles(a)
    gold, predicted, correct = roles["gold"], roles["predicted"], roles["correct"]
    identity = [column for column in IDENTITY_COLUMNS if column in a.columns]
    if (
        len(a) != len(b)
        or frame_roles(b) != roles
        or any(column not in b.columns for column in identity)
        or not all((a[column].to_numpy() == b[column].to_numpy()).all() for column in (*identity, gold))
    ):
        raise UserError(
            f"{name_a} and {name_b} were evaluated on different examples (another dataset, seed or row limit), "
            "so their predictions cannot be paired; compare stages of one run, or runs on the same data."
        )
    paired = pd.DataFrame({column: a[column] for column in dict.fromkeys((*identity, gold))}, index=a.index)
    for measured in (predicted, *MEASURED_COLUMNS):
        if measured in a.columns and measured in b.columns:
            paired[f"{measured} ({name_a})"] = a[measured]
            paired[f"{measured} ({name_b})"] = b[measured].to_numpy()
    right_a, right_b = a[correct].to_numpy(dtype=bool), b[correct].to_numpy(dtype=bool)
    return Comparison(
        accuracy_a=float(right_a.mean()) if len(a) else float("nan"),
        accuracy_b=float(right_b.mean()) if len(b) else float("nan"),
        fixed=paired[~right_a & right_b],
        broken=paired[right_a & ~right_b],
        changed=int((a[predicted].to_numpy() != b[predicted].to_numpy()).sum()),
    )
