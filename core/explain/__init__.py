"""Explanations: which input tokens (text) or patches (images) a trained classifier relied on, as plain data.

    from core.explain import load_text_explainer, load_image_explainer, methods_for
    explainer = load_text_explainer(run_id)                 # latest stage; or stage="before"
    explanation = explainer.explain(text, method="ig")      # an Explanation (units, scores, delta, ...)
    randomization_check(explainer, text)                    # does the map depend on the learned weights?
    images = load_image_explainer(run_id)                   # an image run: the same verbs over patches
    images.explain(image, method="occlusion", grid=7)       # units "r0c0", "r0c1", ... row-major

Methods live in one registry per modality (`methods_for("tokens")` is `METHODS`, `methods_for("patches")`
the image methods; one class each, one verb `attribute`); the text modality in `text.py`, the image
modality in `image.py` (pixel maps onto a grid in `patches.py`); the randomisation sanity check in
`sanity.py`; the `explain` command in `cli.py`.
Importing this package does not import torch or captum: they load on the first explanation.
"""

from core.explain.image import (
    IMAGE_METHODS,
    ImageExplainer,
    clear_image_explainer_cache,
    load_image_classifier,
    load_image_explainer,
)
from core.explain.methods import (
    BASELINES,
    METHODS,
    AttributionMethod,
    Explanation,
    describe,
    get_method,
    methods_for,
)
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
    "IMAGE_METHODS",
    "ImageExplainer",
    "TextExplainer",
    "clear_explainer_cache",
    "clear_image_explainer_cache",
    "describe",
    "get_method",
    "load_image_classifier",
    "load_image_explainer",
    "load_text_explainer",
    "merge_word_pieces",
    "methods_for",
    "randomization_check",
    "randomized_copy",
]
