"""The model-parameter randomisation test (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

An explanation that reflects what the model learned must change when the learned weights are
replaced by random ones. `randomization_check` explains a text with the trained model, then with a
copy whose classifier head (scope "head") or every layer (scope "all") is re-initialised as at the
start of training, and compares the two maps by Spearman rank correlation. A LOW correlation is
the passing result; a map that survives randomisation shows the input, not the model.

Read "head" results with care: in a fine-tuned encoder the decision often already lives in the
[CLS] vector, along a single direction for two classes, so any head (even a random one) ranks the
same tokens first, often with the sign flipped. The check therefore reports the correlation of
signed scores and of their magnitudes, and passes only when both drop; scope "all" tests the
whole model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.explain import patches
from core.explain.base import Explanation

if TYPE_CHECKING:  # pragma: no cover
    from core.explain.pairs import PairExplainer

SCOPES = ("head", "all")
PASS_BELOW = 0.5  # rank correlation under which the map is said to depend on the learned weights


def randomization_check(
    explainer,
    text,
    method: str = "ig",
    target: int | str | None = None,
    scope: str = "head",
    seed: int = 0,
    top_k: int = 3,
    **params,
) -> dict[str, Any]:
    """Compare `method`'s map for `text` on the trained model and on a randomised copy.

    `explainer` is a `TextExplainer` or an `ImageExplainer` (then `text` is an image and `grid=` may be
    passed with the method's params); anything with `explain`, `model` and `with_model` will do.

    Returns {"spearman": rank correlation of the signed scores, "spearman_abs": of their
    magnitudes, "top_k_overlap": share of the k highest-|score| tokens found in both maps, "k",
    "original": Explanation, "randomized": Explanation, "scope", "seed", "verdict": a sentence}.
    Both maps explain the same class (the trained model's target). A constant map has no ranks;
    its correlation is reported as 0.
    """
    if scope not in SCOPES:
        raise UserError(f"The randomisation scope must be one of {', '.join(SCOPES)} (got {scope!r}).")
    original = explainer.explain(text, method, target, **params)
    if len(original.units) < 3:
        what = (
            "pick a finer grid: a rank correlation needs at least 3 patches"
            if original.modality == "patches"
            else "type a longer text: a rank correlation needs at least 3 tokens"
        )
        raise UserError(what[0].upper() + what[1:] + ".")
    twin = explainer.with_model(randomized_copy(explainer.model, scope, seed))
    randomized = twin.explain(text, method, original.target, **params)
    rho = spearman(original.scores, randomized.scores)
    rho_abs = spearman([abs(s) for s in original.scores], [abs(s) for s in randomized.scores])
    k = min(top_k, len(original.units))
    overlap = len(top_positions(original.scores, k) & top_positions(randomized.scores, k)) / k
    return {
        "spearman": rho,
        "spearman_abs": rho_abs,
        "top_k_overlap": overlap,
        "k": k,
        "original": original,
        "randomized": randomized,
        "scope": scope,
        "seed": seed,
        "verdict": verdict(original, rho, rho_abs, overlap, k, scope),
    }


def randomized_copy(model, scope: str = "head", seed: int = 0):
    """A deep copy of `model` with the classifier head ("head") or every module ("all") re-initialised.

    Uses the model's own `_init_weights` (the initialisation it had before training) where it has
    one, else each module's `reset_parameters`. The original model is not touched.
    """
    import torch

    twin = copy.deepcopy(model).eval()
    if scope == "head":
        # The layers after the encoder: the model's own head modules, plus the encoder's pooler where
        # it has one (BERT's [CLS] pooler feeds only the classifier; DistilBERT's pre_classifier and
        # RoBERTa's classification head hold the same dense + activation inside the head).
        base = getattr(twin, "base_model", None)
        roots = [child for _, child in twin.named_children() if child is not base]
        pooler = getattr(base, "pooler", None)
        if pooler is not None:
            roots.append(pooler)
    else:
        roots = [twin]
    modules = [module for root in roots for module in root.modules()]
    if not any(True for module in modules for _ in module.parameters(recurse=False)):
        raise UserError("This model has no classifier head with weights to randomise; use scope 'all'.")
    initialise = getattr(twin, "_init_weights", None)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            _forget_initialised(module)
            before = [p.detach().clone() for p in module.parameters(recurse=False)]
            if initialise is not None:
                initialise(module)
            changed = any(not torch.equal(old, new) for old, new in zip(before, module.parameters(recurse=False)))
            if not changed and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return twin


def _forget_initialised(module) -> None:
    """transformers 5 skips tensors flagged as already initialised (loaded); un-flag them."""
    for holder in (module, *module.parameters(recurse=False), *module.buffers(recurse=False)):
        if getattr(holder, "_is_hf_initialized", False):
            try:
                delattr(holder, "_is_hf_initialized")
            except AttributeError:
                holder._is_hf_initialized = False


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return 0.0
    return float(spearmanr(a, b).statistic)


def top_positions(scores: list[float], k: int) -> set[int]:
    return set(sorted(range(len(scores)), key=lambda i: abs(scores[i]), reverse=True)[:k])


def verdict(original: Explanation, rho: float, rho_abs: float, overlap: float, k: int, scope: str) -> str:
    """One sentence; passing needs both the signed and the magnitude ranks to be scrambled.

    A map that comes back with its sign flipped (rho near -1) but the same tokens on top has not
    changed in substance, so |rho| and the correlation of |scores| must both stay under PASS_BELOW.
    """
    what = "the classifier head" if scope == "head" else "every layer"
    figures = f"rank correlation {rho:+.2f}, of magnitudes {rho_abs:+.2f}, top-{k} overlap {overlap:.0%}"
    if abs(rho) < PASS_BELOW and abs(rho_abs) < PASS_BELOW:
        return (
            f"After re-initialising {what}, the {original.method} map changed a lot ({figures}): it depends on "
            "the learned weights there, as a faithful explanation should."
        )
    flipped = " apart from its sign" if rho <= -PASS_BELOW else ""
    where = (
        " The evidence may live in the encoder below the head: re-initialise every layer to test the whole model."
        if scope == "head"
        else " It may show properties of the text rather than what the model learned (Adebayo et al., 2018)."
    )
    return f"After re-initialising {what}, the {original.method} map barely changed{flipped} ({figures}).{where}"


# ---------------------------------------------------------------------------------------------
# The randomisation sanity check, both halves


def randomized_pair_copy(model, scope: str = "head", seed: int = 0):
    """A copy of `model` with everything above the towers ("head": projections, fusion head) or every layer
    ("all") re-initialised; the original is not touched.

    `randomized_copy`'s own "head" would take a dual encoder's towers for its head (the model is its own base),
    so for "head" each module outside the two towers is randomised on its own.
    """
    import copy

    if scope not in SCOPES:
        raise UserError(f"The randomisation scope must be one of {', '.join(SCOPES)} (got {scope!r}).")
    if scope == "all":
        return randomized_copy(model, "all", seed)
    twin = copy.deepcopy(model).eval()
    heads = modules_above_towers(twin, (twin.vision_model, twin.text_model))
    if not heads:
        raise UserError("This model has no layers above its two towers to randomise; use scope 'all'.")
    for parent, name in heads:
        setattr(parent, name, randomized_copy(getattr(parent, name), "all", seed))
    return twin


def modules_above_towers(module, towers: tuple) -> list[tuple[Any, str]]:
    """(parent, name) of each submodule with weights that neither is nor holds a tower; a fusion model keeps its
    dual encoder as one child, so children that hold a tower are searched too."""
    found = []
    for name, child in module.named_children():
        if any(child is tower for tower in towers):
            continue
        if any(part is tower for part in child.modules() for tower in towers):
            found += modules_above_towers(child, towers)
        elif any(True for _ in child.parameters()):
            found.append((module, name))
    return found


def pair_randomization_check(
    explainer: PairExplainer,
    image,
    text: str,
    method: str = "ig",
    target: int | str | None = None,
    scope: str = "head",
    seed: int = 0,
    top_k: int = 3,
    grid: int | Sequence[int] = 7,
    **params,
) -> dict[str, Any]:
    """Compare `method`'s patch map and token map on the trained model and on a randomised copy (Adebayo et al., 2018).

    Returns {"patches": {"spearman", "spearman_abs", "top_k_overlap"}, "tokens": the same, "k", "original",
    "randomized" (the two Explanations), "scope", "seed", "verdict": a sentence}. A half passes when the rank
    correlations of its signed scores and of their magnitudes both fall under `PASS_BELOW`.
    """
    prepared = explainer.prepare(image, text)
    rows, cols = patches.as_grid(grid, *prepared.image.size)
    if rows * cols < 3 or len(prepared.text.shown) < 3:
        raise UserError("A rank correlation needs at least 3 patches and 3 tokens: pick a finer grid or a longer text.")
    twin = explainer.with_model(randomized_pair_copy(explainer.model, scope, seed))
    original = explainer.explain(image, text, method, target, grid=grid, **params)
    randomized = twin.explain(image, text, method, original.target, grid=grid, **params)
    halves = {
        name: rank_agreement(original.part(name).scores, randomized.part(name).scores, top_k) for name in ("patches", "tokens")
    }
    return {
        **halves,
        "k": top_k,
        "original": original,
        "randomized": randomized,
        "scope": scope,
        "seed": seed,
        "verdict": pair_verdict(method, halves, scope),
    }


def rank_agreement(first: list[float], second: list[float], top_k: int) -> dict[str, float]:
    k = min(top_k, len(first))
    return {
        "spearman": spearman(first, second),
        "spearman_abs": spearman([abs(s) for s in first], [abs(s) for s in second]),
        "top_k_overlap": len(top_positions(first, k) & top_positions(second, k)) / k,
    }


def pair_verdict(method: str, halves: dict[str, dict[str, float]], scope: str) -> str:
    """One sentence: which maps changed after randomisation (both signed and magnitude ranks under PASS_BELOW)."""
    what = "the layers above the towers" if scope == "head" else "every layer"
    nouns = {"patches": "patch", "tokens": "token"}
    figures = "; ".join(
        f"{name} {half['spearman']:+.2f}, their magnitudes {half['spearman_abs']:+.2f}" for name, half in halves.items()
    )
    kept = [
        name for name, half in halves.items() if abs(half["spearman"]) >= PASS_BELOW or abs(half["spearman_abs"]) >= PASS_BELOW
    ]
    if not kept:
        return (
            f"After re-initialising {what}, both {method} maps changed a lot (rank correlation of {figures}): they "
            "depend on the learned weights, as a faithful explanation should."
        )
    subject = " and ".join(f"the {nouns[name]} map" for name in kept)
    return (
        f"After re-initialising {what}, {subject} barely changed (rank correlation of {figures}), so "
        f"{'they' if len(kept) > 1 else 'it'} may show properties of the input rather than what the model learned."
    )
