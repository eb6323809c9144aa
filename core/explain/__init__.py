"""Explanations: which input tokens (text) or patches (images) a trained classifier relied on, as plain data.

    from core.explain import load_text_explainer, load_image_explainer, methods_for
    explainer = load_text_explainer(run_id)                 # latest stage; or stage="before"
    explanation = explainer.explain(text, method="ig")      # an Explanation (units, scores, delta, ...)
    randomization_check(explainer, text)                    # does the map depend on the learned weights?
    images = load_image_explainer(run_id)                   # an image run: the same verbs over patches
    images.explain(image, method="occlusion", grid=7)       # units "r0c0", "r0c1", ... row-major
    pairs = load_pair_explainer(run_id)                     # an image-text run: tokens and patches at once
    pairs.explain(image, "a red circle", method="ig")       # an Explanation with a tokens and a patches part

Methods live in one registry, `METHODS` in `methods.py`: one class each, written once over input adapters, one
verb `attribute`; `methods_for("tokens" | "patches" | "pairs")` gives those that apply to an input, with its
baselines. The adapters: text (and a tagger's word) in `text.py` / `tags.py`, images in `image.py` (pixel maps
onto a grid in `patches.py`), image-text pairs in `pairs.py`; the randomisation sanity check in `sanity.py`;
the `explain` command in `cli.py`.
Importing this package does not import torch or captum: they load on the first explanation.
"""

from core.explain.base import BASELINES, AttributionMethod, Explanation, Part
from core.explain.image import ImageExplainer
from core.explain.loading import (
    clear_explainer_cache,
    load_explainer,
    load_image_explainer,
    load_pair_explainer,
    load_tag_explainer,
    load_text_explainer,
)
from core.explain.methods import METHODS, describe, get_method, methods_for
from core.explain.pairs import PairExplainer
from core.explain.sanity import pair_randomization_check, randomization_check, randomized_copy
from core.explain.text import EncodedText, TextExplainer, merge_word_pieces

__all__ = [
    "BASELINES",
    "METHODS",
    "AttributionMethod",
    "EncodedText",
    "Explanation",
    "ImageExplainer",
    "PairExplainer",
    "Part",
    "TextExplainer",
    "clear_explainer_cache",
    "describe",
    "get_method",
    "load_explainer",
    "load_image_explainer",
    "load_pair_explainer",
    "load_tag_explainer",
    "load_text_explainer",
    "merge_word_pieces",
    "methods_for",
    "pair_randomization_check",
    "randomization_check",
    "randomized_copy",
]
