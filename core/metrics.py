"""Classification metrics through scikit-learn, shared by every classification task."""

from __future__ import annotations

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


def per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    probabilities = softmax(logits)
    picked = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(picked, 1e-12, None))
