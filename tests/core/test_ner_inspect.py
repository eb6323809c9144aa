"""NER error analysis: per-type confusion by span, sentence filters, entity span HTML."""

import json

import pandas as pd

from core.ner.inspect import MISSING, filter_sentences, type_confusion
from core.viz import entity_spans_html


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": ["Ada met Bob", "Paris is big", "nothing here"],
            "tokens": [["Ada", "met", "Bob"], ["Paris", "is", "big"], ["nothing", "here"]],
            "gold_entities": [json.dumps([["PER", 0, 0], ["PER", 2, 2]]), json.dumps([["LOC", 0, 0]]), "[]"],
            "predicted_entities": [json.dumps([["PER", 0, 0], ["LOC", 2, 2]]), "[]", json.dumps([["ORG", 1, 1]])],
            "correct": [False, False, False],
            "error_types": [["PER", "LOC"], ["LOC"], ["ORG"]],
            "loss": [0.5, 0.9, 0.1],
        }
    )


def test_type_confusion_counts_spans_by_gold_and_predicted_type():
    confusion = type_confusion(frame())
    assert confusion.loc["PER", "PER"] == 1
    assert confusion.loc["PER", "LOC"] == 1  # same span, wrong type
    assert confusion.loc["LOC", MISSING] == 1  # missed
    assert confusion.loc[MISSING, "ORG"] == 1  # spurious
    assert confusion.values.sum() == 4


def test_filters_by_error_type_and_text_hardest_first():
    assert filter_sentences(frame(), error_type="LOC")["text"].tolist() == ["Paris is big", "Ada met Bob"]
    assert filter_sentences(frame(), contains="bob")["text"].tolist() == ["Ada met Bob"]


def test_entity_spans_are_coloured_labelled_and_escaped():
    html = entity_spans_html(["<b>Ada", "met", "Bob"], [("PER", 0, 0), ("PER", 2, 2)], ["PER"])
    assert html.count('title="PER"') == 2
    assert "&lt;b&gt;Ada" in html and "<b>Ada" not in html
