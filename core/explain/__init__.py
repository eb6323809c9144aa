"""Explanations: which input tokens a trained classifier relied on, as plain data.

    from core.explain import load_text_explainer, METHODS
    explainer = load_text_explainer(run_id)                 # latest stage; or stage="before"
    explanation = explainer.explain(text, method="ig")      # an Explanation (units, scores, delta, ...)
    randomization_check(explainer, text)                    # does the map depend on the learned weights?

Methods live in a registry (`METHODS`, one class each, one verb `attribute`); the text modality in
`text.py`; the randomisation sanity check in `sanity.py`; the `explain` command in `cli.py`.
Importing this package does not import torch or captum: they load on the first explanation.
"""

from core.explain.methods import BASELINES, METHODS, AttributionMethod, Explanation, describe, get_method
from core.explain.sanity import randomization_check, randomized_copy
from core.explain.text import (
    EncodedText,
    TextExplainer,
    clear_explainer_cache,
    load_text_explainer,
    merge_word_pieces,
)

__all__ = [
    "BASELINES",
    "METHODS",
    "AttributionMethod",
    "EncodedText",
    "Explanation",
    "TextExplainer",
    "clear_explainer_cache",
    "describe",
    "get_method",
    "load_text_explainer",
    "merge_word_pieces",
    "randomization_check",
    "randomized_copy",
]
