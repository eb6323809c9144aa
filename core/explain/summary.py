"""What drives each class: over a split, every example explained towards its gold class, and per class the units
that carry the most attribution — the top words for a text classifier, the mean patch map for an image classifier.

Computed once per (stage, split, method) and cached as JSON in the run directory (`class_summary/`), so a refresh or a
second tab shows it at once; `progress(fraction, message)` reports each example. Words are whole words (word pieces
joined) compared in lower case; a word's weight is the sum of its positive attributions over the class's examples.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import UserError

SUMMARY_DIR = "class_summary"
TOP_WORDS = 15
DEFAULT_METHOD = "input_x_gradient"  # one backward pass per example: a split of thousands in minutes on a CPU


def summary_path(run, stage: str, split: str, method: str) -> Path:
    return run.directory / SUMMARY_DIR / f"{stage}_{split}_{method}.json"


def class_summary(
    run_id: str,
    split: str = "test",
    method: str = DEFAULT_METHOD,
    stage: str | None = None,
    limit: int | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Per class of the run's task: its examples in `split` (at most `limit`), and the top words or the mean patch map."""
    from core.checkpoints import latest_stage
    from core.explain.loading import load_explainer
    from core.stages import split_rows, task_of
    from core.store import RunStore

    run = RunStore().get(run_id)
    if run is None:
        raise UserError(f"There is no run '{run_id}' in this workspace; `python -m core runs` lists the runs there are.")
    view = task_of(run).view
    if view not in ("text", "image"):
        raise UserError("The class summary covers text and image classifiers; this run's task explains other units.")
    stage = stage or latest_stage(run)
    path = summary_path(run, stage, split, method)
    if path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("limit") == limit:
            return cached
    rows, labels = split_rows(run, split)
    rows = rows.head(limit) if limit else rows
    if rows.empty:
        raise UserError(f"The {split} split of run {run_id} is empty; pick another split.")
    explainer = load_explainer(run_id, stage)
    column = "text" if view == "text" else "image"
    words: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    maps: dict[str, list[np.ndarray]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for index, (item, gold) in enumerate(zip(rows[column], rows["label"])):
        gold = str(gold)
        counts[gold] += 1
        if view == "text":
            explanation = explainer.explain(item, method, gold, merge_words=True)
            for unit, score in zip(explanation.units, explanation.scores):
                entry = words[gold][unit.lower()]
                entry[0] += max(float(score), 0.0)
                entry[1] += 1
        else:
            explanation = explainer.explain(item, method, gold)
            maps[gold].append(np.asarray(explanation.scores, dtype=np.float64).reshape(explanation.params["grid"]))
        if progress:
            progress((index + 1) / len(rows), f"Explained {index + 1} of {len(rows)} examples")
    classes = {}
    for label in [name for name in labels if counts.get(name)]:
        if view == "text":
            ranked = sorted(words[label].items(), key=lambda item: -item[1][0])[:TOP_WORDS]
            classes[label] = {
                "examples": counts[label],
                "top": [{"word": word, "weight": total, "count": seen} for word, (total, seen) in ranked],
            }
        else:
            classes[label] = {"examples": counts[label], "mean_map": np.mean(maps[label], axis=0).tolist()}
    result = {"run": run_id, "stage": stage, "split": split, "method": method, "limit": limit, "view": view, "classes": classes}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result), encoding="utf-8")
    os.replace(temporary, path)
    return result
