"""Retrieval metrics for image-text alignment, from a similarity matrix.

`similarity[i, j]` scores image i against caption j; the matching caption of image i is caption i.
Image→text ranks each row, text→image each column. Recall@k is the share of queries whose match is
among the top k; the median rank is 1 when the match usually comes first.
"""

from __future__ import annotations

import numpy as np


def match_ranks(similarity: np.ndarray) -> np.ndarray:
    """1-based rank of the matching column in each row (ties count against the match)."""
    matching = np.diag(similarity)[:, None]
    return (similarity >= matching).sum(axis=1)


def retrieval_metrics(similarity: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError("similarity must be square: one caption per image, in the same order")
    results: dict[str, float] = {}
    for direction, matrix in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        ranks = match_ranks(matrix)
        for k in ks:
            results[f"{direction}_recall@{k}"] = float((ranks <= k).mean())
        results[f"{direction}_median_rank"] = float(np.median(ranks))
    return results
