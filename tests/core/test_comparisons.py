"""Comparing two models' frames of one split, for every kind of frame: what counts as fixed and broken, and when two
frames cannot be paired. Hand-made frames; the trained runs' comparisons are tested beside their tasks."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core import inspect
from core.comparisons import measure_of
from core.errors import UserError
from core.ner.inspect import readable_flips


def tag_frame(predicted: list[list]) -> pd.DataFrame:
    """Three sentences with one gold PER span each; `predicted` lists each sentence's predicted spans."""
    texts = ["Ana lives here", "Bo met Cy", "so did Di"]
    gold = [[["PER", 0, 0]], [["PER", 0, 0]], [["PER", 2, 2]]]
    return pd.DataFrame(
        {
            "text": texts,
            "gold_entities": [json.dumps(spans) for spans in gold],
            "predicted_entities": [json.dumps(spans) for spans in predicted],
            "correct": [spans == truth for spans, truth in zip(predicted, gold)],
            "loss": [0.1, 0.2, 0.3],
        }
    ).rename_axis("row")


def test_a_sentence_is_fixed_when_all_its_spans_become_right():
    before = tag_frame([[], [["PER", 0, 0]], [["LOC", 2, 2]]])
    after = tag_frame([[["PER", 0, 0]], [["PER", 0, 0], ["PER", 2, 2]], [["LOC", 2, 2]]])
    comparison = inspect.compare(before, after, ("before", "after"))
    assert list(comparison.fixed.index) == [0] and list(comparison.broken.index) == [1]
    assert comparison.changed == 2 and comparison.accuracy_a == pytest.approx(1 / 3)
    assert measure_of(before) == "Sentences all right"
    spelled = readable_flips(comparison.broken)
    assert spelled.loc[1, "gold"] == "PER Bo" and spelled.loc[1, "predicted (after)"] == "PER Bo · PER Cy"
    assert readable_flips(comparison.fixed).loc[0, "predicted (before)"] == "(none)"


def retrieval_frame(ranks: list[int]) -> pd.DataFrame:
    texts = ["a red circle", "a blue square", "a green star"]
    return pd.DataFrame(
        {
            "image": [f"shapes#{index}" for index in range(3)],
            "text": texts,
            "retrieved": [texts[index] if rank == 1 else texts[(index + 1) % 3] for index, rank in enumerate(ranks)],
            "rank": ranks,
            "correct": [rank == 1 for rank in ranks],
        }
    )


def test_a_pair_is_fixed_when_its_caption_comes_to_rank_first():
    comparison = inspect.compare(retrieval_frame([3, 1, 2]), retrieval_frame([1, 2, 2]), ("A", "B"))
    assert list(comparison.fixed.index) == [0] and list(comparison.broken.index) == [1]
    assert comparison.fixed.loc[0, "rank (A)"] == 3 and comparison.fixed.loc[0, "rank (B)"] == 1
    assert comparison.changed == 2 and measure_of(retrieval_frame([1, 1, 1])) == "Image→text R@1"


def test_frames_of_other_images_or_another_kind_do_not_pair():
    shifted = retrieval_frame([1, 1, 1]).assign(image=["shapes#9", "shapes#1", "shapes#2"])
    with pytest.raises(UserError, match="evaluated on different examples"):
        inspect.compare(retrieval_frame([1, 1, 1]), shifted)
    with pytest.raises(UserError, match="evaluated on different examples"):
        inspect.compare(tag_frame([[], [], []]), retrieval_frame([1, 1, 1]))


def test_a_classifier_frame_keeps_its_measure_and_both_images_columns():
    frame = pd.DataFrame(
        {"image": ["a#0", "a#1"], "text": ["x", "y"], "gold": ["c", "d"], "predicted": ["c", "c"], "correct": [True, False]}
    )
    better = frame.assign(predicted=["c", "d"], correct=[True, True])
    comparison = inspect.compare(frame, better, ("A", "B"))
    assert list(comparison.fixed.columns[:3]) == ["image", "text", "gold"] and list(comparison.fixed.index) == [1]
    assert measure_of(frame) == "Accuracy"
