"""Classification metrics through scikit-learn, shared by every classification task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    predicted = logits.argmax(axis=-1)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(labels, predicted, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(labels, predicted, average="macro", zero_division=0)),
    }


def classification_report(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """sklearn's report as a dict: one entry per class, plus accuracy, macro avg and weighted avg."""
    from sklearn.metrics import classification_report as sklearn_report

    return sklearn_report(
        labels,
        logits.argmax(axis=-1),
        labels=list(range(len(label_names))),
        target_names=label_names,
        output_dict=True,
        zero_division=0,
    )


def label_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 of string labels; every label seen in gold or predicted counts once."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    if not len(gold):
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def label_report(gold: Sequence[str], predicted: Sequence[str], label_names: list[str]) -> dict[str, Any]:
    """sklearn's report of string labels: one entry per name in `label_names`, then accuracy, macro and weighted avg.

    The averages cover the labels seen in gold or predicted, as `label_scores` does, so the report's
    macro F1 is the logged one; a label absent from both gets a zero entry, so reports of different
    splits and stages list the same labels.
    """
    from sklearn.metrics import classification_report as sklearn_report

    seen = [name for name in label_names if name in set(gold) | set(predicted)]
    raw = sklearn_report(gold, predicted, labels=seen, output_dict=True, zero_division=0) if len(gold) else {}
    zero = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    report: dict[str, Any] = {name: _plain_scores(raw.get(name, zero)) for name in label_names}
    report["accuracy"] = float(raw.get("accuracy", 0.0))
    for average in ("macro avg", "weighted avg"):
        report[average] = _plain_scores(raw.get(average, zero))
    return report


def _plain_scores(scores: dict[str, Any]) -> dict[str, float | int]:
    return {
        "precision": float(scores["precision"]),
        "recall": float(scores["recall"]),
        "f1-score": float(scores["f1-score"]),
        "support": int(scores["support"]),
    }


def per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    probabilities = softmax(logits)
    picked = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(picked, 1e-12, None))
