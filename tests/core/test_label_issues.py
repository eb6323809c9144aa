"""cleanlab's cross-check of the data map, without trainers: the folds it deals, and what it reads from the
out-of-sample probabilities the fold runs leave in the parent's run folder (written here as they would be)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from core.label_check import PROBABILITIES_FILE, checked_candidates, fold_examples, label_issues, progress_sentence

EXAMPLES = 200
FLIPPED = tuple(range(5, EXAMPLES, 17))  # 12 rows, 4 of each class


def write_out_of_sample(directory) -> None:
    """Confident, right probabilities for every example except `FLIPPED`, whose gold label the folds' models
    confidently disagree with (they favour the next class)."""
    rng = np.random.default_rng(0)
    gold = np.arange(EXAMPLES) % 3
    favoured = np.where(np.isin(np.arange(EXAMPLES), FLIPPED), (gold + 1) % 3, gold)
    logits = np.full((EXAMPLES, 3), -2.0)
    logits[np.arange(EXAMPLES), favoured] = 2.0 + rng.random(EXAMPLES)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    order = rng.permutation(EXAMPLES)  # rows in fold order, not by example
    frame = pd.DataFrame({"example": order, "gold": gold[order], "probs": list(probabilities[order])})
    frame.to_parquet(directory / PROBABILITIES_FILE, index=False)


def a_run(directory):
    return SimpleNamespace(id="r1", directory=directory, status="completed", task="text_classification")


def test_folds_are_stratified_seeded_disjoint_and_cover_every_training_row():
    labels = pd.Series(["a"] * 9 + ["b"] * 5 + ["c"] * 2)
    folds = fold_examples(labels, 2, seed=7)
    assert sorted(example for fold in folds for example in fold) == list(range(len(labels)))
    for fold in folds:
        counts = labels.iloc[fold].value_counts()
        assert set(counts.index) == {"a", "b", "c"} and counts["a"] in (4, 5) and counts["c"] == 1
    assert fold_examples(labels, 2, seed=7) == folds and fold_examples(labels, 2, seed=8) != folds


def test_cleanlab_flags_the_rows_the_out_of_sample_models_disagree_with_ranked_by_self_confidence(tmp_path):
    write_out_of_sample(tmp_path)
    issues = label_issues(a_run(tmp_path))
    assert set(issues["example"]) == set(FLIPPED)  # by their own positions, whatever order the folds wrote them in
    assert list(issues["rank"]) == list(range(1, len(FLIPPED) + 1))
    assert (issues["suggested"].to_numpy() == (issues["example"].to_numpy() % 3 + 1) % 3).all()


def test_the_candidates_are_marked_where_cleanlab_agrees_and_the_sentence_counts_them(tmp_path):
    write_out_of_sample(tmp_path)
    frame = pd.DataFrame(
        {"example": [FLIPPED[0], FLIPPED[1], 3, 4, 6], "confidence": [0.1, 0.2, 0.3, 0.4, 0.9], "variability": 0.05}
    )
    candidates, sentence = checked_candidates(a_run(tmp_path), frame, 4)
    assert list(candidates["example"]) == [FLIPPED[0], FLIPPED[1], 3, 4]
    assert list(candidates["cleanlab"]) == [True, True, False, False]
    assert f"flags {len(FLIPPED)} training row(s); 2 of these 4 candidates are among them" in sentence


def test_before_the_cross_check_the_candidates_come_alone_with_how_to_start_it(tmp_path):
    frame = pd.DataFrame({"example": [1, 2], "confidence": [0.1, 0.2], "variability": 0.0})
    candidates, sentence = checked_candidates(a_run(tmp_path), frame, 2)
    assert "cleanlab" not in candidates and sentence == progress_sentence(a_run(tmp_path))
    assert "start the cross-check to train 2 fold runs" in sentence
    with pytest.raises(UserError, match="start the cross-check"):
        label_issues(a_run(tmp_path))


def test_a_relabel_proposes_the_class_most_often_predicted_instead_in_training_not_the_last_answer(tmp_path):
    from core.dynamics import DYNAMICS_FILE
    from core.retrain import proposed_labels

    (tmp_path / "summary.json").write_text(json.dumps({"label_names": ["cat", "dog", "fox"]}))
    # Example 0 (gold cat) was called dog in two epochs and fox in one, then memorised: right at the last epoch.
    # Example 1 (gold dog) was always right. Example 2 (gold fox) was called cat once and dog once: a tie, the first.
    passes = [
        (0, 0, 1), (1, 0, 1), (2, 0, 2), (3, 0, 0),
        (0, 1, 1), (1, 1, 1), (2, 1, 1), (3, 1, 1),
        (0, 2, 0), (1, 2, 1), (2, 2, 2), (3, 2, 2),
    ]  # fmt: skip
    gold = {0: 0, 1: 1, 2: 2}
    frame = pd.DataFrame(passes, columns=["epoch", "index", "predicted"])
    frame["correct"] = frame["predicted"] == frame["index"].map(gold)
    frame.assign(p_gold=0.5).to_parquet(tmp_path / DYNAMICS_FILE, index=False)
    proposed = proposed_labels(a_run(tmp_path))
    assert proposed.to_dict() == {0: "dog", 2: "cat"}  # example 1 was never predicted otherwise: nothing proposed
