"""Retrieval and zero-shot metrics for image-text alignment, from embeddings or a similarity matrix.

`similarity[i, j]` scores image i against caption j; the matching caption of image i is caption i.
Image→text ranks each row, text→image each column. Recall@k is the share of queries whose match is
among the top k; the median rank is 1 when the match usually comes first.

Captions repeat in real and synthetic data ("a red circle in the top left" may describe several
images). With `groups` (equal ids for equal captions), any caption of the image's group counts as
its match, and any image whose caption is in the query's group counts as the query's match;
otherwise a second image with the same caption would cap recall@1 far below 1 for a perfect model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KS = (1, 5, 10)


def match_ranks(similarity: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the best match in each row: 1 + the non-matches scoring at least as high (ties count against it)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    groups = np.arange(similarity.shape[0]) if groups is None else np.asarray(groups)
    relevant = groups[:, None] == groups[None, :]
    best_match = np.where(relevant, similarity, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((similarity >= best_match) & ~relevant).sum(axis=1)


def retrieval_metrics(similarity: np.ndarray, ks: tuple[int, ...] = KS, groups: np.ndarray | None = None) -> dict[str, float]:
    """Recall@k and median rank in both directions, plus `recall@k`: the mean of the two directions."""
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError("similarity must be square: one caption per image, in the same order")
    results: dict[str, float] = {}
    for direction, matrix in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        ranks = match_ranks(matrix, groups)
        for k in ks:
            results[f"{direction}_recall@{k}"] = float((ranks <= k).mean())
        results[f"{direction}_median_rank"] = float(np.median(ranks))
    for k in ks:
        results[f"recall@{k}"] = (results[f"image_to_text_recall@{k}"] + results[f"text_to_image_recall@{k}"]) / 2
    return results


def chance_recall(groups: np.ndarray, k: int = 1) -> float:
    """Expected recall@k of a model that ranks at random (the "near chance" line before training)."""
    groups = np.asarray(groups)
    size = len(groups)
    _, counts = np.unique(groups, return_counts=True)
    per_query = np.repeat(counts, counts)  # each query's number of matches
    # P(at least one of m matches among k random picks out of n) = 1 - C(n-m, k) / C(n, k)
    misses = np.ones(len(per_query))
    for step in range(k):
        misses *= np.clip((size - per_query - step) / (size - step), 0, 1)
    return float(1 - misses.mean())


def caption_groups(texts: list[str]) -> np.ndarray:
    """Equal ids for captions equal up to case and surrounding space."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(text.strip().lower(), len(ids)) for text in texts], dtype=np.int64)


def zero_shot_metrics(zero_shot_logits: np.ndarray, class_ids: np.ndarray) -> dict[str, Any]:
    """Accuracy of naming each image's class by its most similar class prompt, over the labelled rows."""
    labelled = class_ids >= 0
    if not labelled.any() or zero_shot_logits.shape[-1] == 0:
        return {}
    predicted = zero_shot_logits[labelled].argmax(axis=-1)
    return {"zero_shot_accuracy": float((predicted == class_ids[labelled]).mean())}
