"""The per-example prediction frame of a classifier, whatever its input: one row per example.

Text, image and image + text classification all write it (and Inspect rebuilds it for a stage), so it
lives here rather than in one task's module that the others would have to import.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.metrics import per_example_loss, softmax


def prediction_frame(texts: list[str], logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    """Columns: text (the input as people see it; callers rename it, e.g. to image), gold, predicted, confidence,
    loss, correct, and one p(label) per class."""
    probabilities = softmax(logits)
    predicted = probabilities.argmax(axis=-1)
    frame = pd.DataFrame(
        {
            "text": texts,
            "gold": [label_names[i] for i in labels],
            "predicted": [label_names[i] for i in predicted],
            "confidence": probabilities.max(axis=-1),
            "loss": per_example_loss(logits, labels),
        }
    )
    frame["correct"] = frame["gold"] == frame["predicted"]
    for index, name in enumerate(label_names):
        frame[f"p({name})"] = probabilities[:, index]
    return frame
