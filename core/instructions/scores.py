"""How close generated answers are to the references: exact match and token F1 after the usual normalisation
(SQuAD's: case, punctuation and extra spaces do not count), and a class report when the answers are labels."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

OTHER = "(another answer)"  # a generated answer that is none of the labels, in the class report
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", str(text).lower()).split())


def exact_match(answer: str, reference: str) -> bool:
    return normalise(answer) == normalise(reference)


def token_f1(answer: str, reference: str) -> float:
    """The harmonic mean of precision and recall of the answer's words against the reference's (1.0 when both are empty)."""
    said, wanted = normalise(answer).split(), normalise(reference).split()
    if not said or not wanted:
        return float(said == wanted)
    common = sum((Counter(said) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(said), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def answer_scores(answers: list[str], references: list[str]) -> dict[str, float]:
    """Exact match and token F1, averaged over the examples."""
    if not references:
        return {"exact_match": 0.0, "token_f1": 0.0}
    return {
        "exact_match": sum(map(exact_match, answers, references)) / len(references),
        "token_f1": sum(map(token_f1, answers, references)) / len(references),
    }


def answer_report(answers: list[str], references: list[str], labels: list[str] | None) -> dict[str, Any]:
    """The held-out report: the scores, and when the answers are labels sklearn's per-class report over the generated
    answers read as labels (an answer that is no label counts as OTHER)."""
    report: dict[str, Any] = {**answer_scores(answers, references), "examples": len(references)}
    if labels:
        from sklearn.metrics import classification_report

        by_form = {normalise(label): label for label in labels}
        predicted = [by_form.get(normalise(answer), OTHER) for answer in answers]
        gold = [by_form.get(normalise(reference), OTHER) for reference in references]
        report["classes"] = classification_report(gold, predicted, labels=labels, output_dict=True, zero_division=0)
        report["other_answers"] = predicted.count(OTHER)
    return report
