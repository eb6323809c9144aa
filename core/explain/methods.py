"""Attribution methods behind one verb, and the plain-data result they produce.

One class per method, one line in `METHODS` per class (Captum's shape: switch method by switching
key, nothing else). Every method works in the same space: the word-embedding vectors of the input,
fed to the model as `inputs_embeds`. That is exactly what Captum's `LayerIntegratedGradients` on
`embeddings.word_embeddings` differentiates (position and segment embeddings are added after it),
and it lets every method share one baseline: the same text with each non-special token replaced
by [PAD] or [MASK], or its embedding set to zero. Special tokens ([CLS], [SEP]) keep their own
embedding in every baseline, so their attribution is zero for path methods and they are left out
of what is shown.

Notation for one text of L tokens, hidden size H, and a target class t:
    x      (1, L, H)  word embeddings of the text        b (1, L, H) baseline embeddings
    f_t(.)            the target logit (occlusion may use the target probability instead)
    scores (L,)       one number per token: a (1, L, H) attribution reduced over H
                      (summed for signed methods, L2 norm for saliency)

Nothing here imports torch or captum at module level: `import core.explain` stays cheap for pages
and the CLI, and the heavy imports happen on the first explanation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from core.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from core.explain.text import EncodedText, TextExplainer

BASELINES = ("pad", "mask", "zero")
# Captum batches the n_steps interpolated copies of the input; cap the tokens in one batch so long
# texts do not need gigabytes for the saved activations.
TOKENS_PER_BATCH = 8192
# The allowed range of every numeric method parameter, whatever the method or modality; the CLI refuses
# values outside it and Inspect's number inputs stop at it. The maximums keep one explanation to seconds
# or minutes instead of hours and petabytes: IG costs `steps` forward and backward passes, the sampling
# methods `n_samples` each; a window wider than the text or grid is cut to it anyway; numpy's generators
# take no seed of 2**32 or more.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "steps": (1, 1000),
    "window": (1, 512),
    "n_samples": (1, 2000),
    "stdevs": (0.0, 10.0),
    "seed": (0, 2**32 - 1),
}


@dataclass(frozen=True)
class Explanation:
    """One attribution map for one text (modality "tokens") or image ("patches"): plain data, JSON-ready
    through `to_dict()`; treat as read-only. For an image, `units` are grid cells "r0c0", "r0c1", ...
    (row-major), `params["grid"]` is [rows, cols] and `text` is the image's reference when it had one.

    `scores[i]` belongs to `units[i]`; positive means evidence *for* the target class (for an
    unsigned method, `signed` is False and a score is only a magnitude of influence).
    `delta` is the method's own error where it has one: for Integrated Gradients the convergence
    delta sum(scores) - (f_t(x) - f_t(b)), which is zero for an exact integral.
    """

    units: list[str]
    scores: list[float]
    method: str
    target: int
    target_label: str
    predicted: int
    predicted_label: str
    probabilities: list[float]
    delta: float | None
    output_difference: float | None
    seconds: float
    params: dict
    truncated: bool
    modality: str = "tokens"
    signed: bool = True
    text: str = ""

    def delta_is_large(self, tolerance: float = 0.05) -> bool:
        """Whether |delta| exceeds `tolerance` times |f(x) - f(baseline)| (then the integral is too coarse)."""
        if self.delta is None:
            return False
        scale = max(abs(self.output_difference or 0.0), 1e-6)
        return abs(self.delta) > tolerance * scale

    def top(self, k: int = 3, by_magnitude: bool | None = None) -> list[tuple[str, float]]:
        """The k units with the highest scores (by |score| for unsigned methods or when asked)."""
        magnitude = (not self.signed) if by_magnitude is None else by_magnitude
        order = sorted(range(len(self.scores)), key=lambda i: abs(self.scores[i]) if magnitude else self.scores[i], reverse=True)
        return [(self.units[i], self.scores[i]) for i in order[:k]]

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Explanation":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def _plain(value: Any) -> Any:
    """Python floats/ints/strings only (numpy scalars become floats, non-finite floats None)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not hasattr(value, "dtype"):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "f") in "iu":
        return int(value)
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------------------
# The seam


class AttributionMethod:
    """One attribution method. Subclasses set the class attributes and implement `attribute`."""

    key: str = ""
    title: str = ""
    description: str = ""  # one sentence for a learner
    defaults: dict[str, Any] = {}
    choices: dict[str, tuple] = {}  # parameter -> allowed values
    signed: bool = True  # False: scores are magnitudes (no direction)
    needs_gradients: bool = True
    modality: str = "tokens"  # the units it scores: "tokens" (this file) or "patches" (core/explain/image.py)

    def applies_to(self, model) -> str | None:
        """None when this method can explain `model`, else a sentence saying why not."""
        embeddings = getattr(model, "get_input_embeddings", lambda: None)()
        if embeddings is None or not hasattr(embeddings, "weight"):
            return f"{self.title} needs a model with a word-embedding layer; this one has none."
        import inspect

        if "inputs_embeds" not in inspect.signature(model.forward).parameters:
            return f"{self.title} feeds word embeddings to the model, and this model's forward takes no inputs_embeds."
        return None

    def check_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """The defaults overridden by `given`, coerced to the defaults' types; UserError otherwise."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            accepted = ", ".join(self.defaults) or "none"
            raise UserError(f"{self.title} has no parameter {', '.join(unknown)}; it takes: {accepted}.")
        used = dict(self.defaults)
        for name, value in given.items():
            if value is None:
                continue
            used[name] = _coerce(self.title, name, value, self.defaults[name])
        for name, allowed in self.choices.items():
            if used[name] not in allowed:
                raise UserError(f"{self.title}: '{name}' must be one of {', '.join(map(str, allowed))} (got {used[name]!r}).")
        for name, value in used.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                low, high = self.bounds(name)
                if not low <= value <= high:
                    limit = f"at least {low}" if value < low else f"at most {high}"
                    raise UserError(f"{self.title}: '{name}' must be {limit} (got {value}); choose a value from {low} to {high}.")
        return used

    def bounds(self, name: str) -> tuple[float, float]:
        """(minimum, maximum) of a numeric parameter, from `PARAM_RANGES`."""
        return PARAM_RANGES[name]

    def attribute(self, explainer: "TextExplainer", encoded: "EncodedText", target: int | None, **params):
        """(scores (L,) for every position, special tokens included; delta or None; f(x) - f(b) or None).

        `target` None means the predicted class: call `explainer.resolve_target(encoded, None)`, which
        reuses a forward pass already made on this input when there is one.
        """
        raise NotImplementedError


def _coerce(title: str, name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{title}: '{name}' must be a {type(default).__name__} (got {value!r}).") from None


def _seeded(seed: int):
    """A context in which torch's, numpy's and random's global generators are seeded, restored afterwards.

    Captum draws GradientSHAP's path points from numpy and LIME/Kernel SHAP's samples from torch.
    """
    import random

    import numpy
    import torch

    class Seeded:
        def __enter__(self):
            self.states = (random.getstate(), numpy.random.get_state())
            self.fork = torch.random.fork_rng(devices=[])
            self.fork.__enter__()
            torch.manual_seed(seed)
            numpy.random.seed(seed)
            random.seed(seed)

        def __exit__(self, *exc):
            random.setstate(self.states[0])
            numpy.random.set_state(self.states[1])
            return self.fork.__exit__(*exc)

    return Seeded()


def internal_batch_size(tokens: int, steps: int) -> int:
    return max(1, min(steps, TOKENS_PER_BATCH // max(tokens, 1)))


# ---------------------------------------------------------------------------------------------
# The methods


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al., 2017) on the word embeddings.

    scores_i = sum_h (x - b)_ih * integral_0^1 d f_t(b + a (x - b)) / d x_ih da, with Captum's
    Gauss-Legendre rule over `steps` points. Completeness: sum(scores) = f_t(x) - f_t(b) up to the
    convergence delta, which is reported. Same numbers as `LayerIntegratedGradients` on
    `get_input_embeddings()` with baseline token ids; `zero` has no token-id equivalent.
    """

    key = "ig"
    title = "Integrated Gradients"
    description = (
        "Walks in small steps from a neutral baseline text to yours and adds up how much each token's "
        "embedding moved the class score, so the scores add up to the change in the score."
    )
    defaults = {"steps": 50, "baseline": "pad"}
    choices = {"baseline": BASELINES}

    def attribute(self, explainer, encoded, target, steps=50, baseline="pad"):
        from captum.attr import IntegratedGradients as CaptumIG

        inputs = explainer.embeddings(encoded)
        reference = explainer.baseline_embeddings(encoded, baseline)
        logits, reference_logits = explainer.logits_with_reference(encoded, reference)
        target = explainer.resolve_target(encoded, target)
        attributions = CaptumIG(explainer.forward).attribute(
            inputs, baselines=reference, target=target, additional_forward_args=explainer.forward_args(encoded),
            n_steps=steps, internal_batch_size=internal_batch_size(inputs.shape[1], steps),
        )
        scores = attributions.sum(-1)[0].detach()
        difference = float(logits[target] - reference_logits[target])
        # Captum's return_convergence_delta computes the same number with two more forward passes.
        return scores.cpu().numpy(), float(scores.sum()) - difference, difference


class Saliency(AttributionMethod):
    """Gradient norm: scores_i = || d f_t(x) / d x_i ||_2 over the hidden dimension (unsigned).

    A plain sum of the gradient over hidden units has a sign that depends on the embedding basis,
    so it means nothing; the L2 norm is the usual token saliency (LIT's "Grad L2 Norm").
    Same gradient as `captum.attr.Saliency(abs=False)`; computed here in one forward and backward
    pass, which also gives the prediction.
    """

    key = "saliency"
    title = "Saliency (gradient norm)"
    description = (
        "How sensitive the class score is to a small change in each token's embedding; it shows how much "
        "a token matters, not whether it speaks for or against the class."
    )
    defaults = {}
    signed = False

    def attribute(self, explainer, encoded, target):
        gradient, _ = explainer.gradient(encoded, target)
        return gradient[0].norm(dim=-1).cpu().numpy(), None, None


class InputXGradient(AttributionMethod):
    """Gradient times input: scores_i = sum_h x_ih * d f_t(x) / d x_ih (signed).

    The first-order Taylor term of f_t around a zero embedding; equal to
    `captum.attr.InputXGradient` summed over the hidden dimension.
    """

    key = "input_x_gradient"
    title = "Input × Gradient"
    description = (
        "Multiplies each token's embedding by the gradient of the class score: a one-step, cheap "
        "estimate of how much each token pushes the score up or down."
    )
    defaults = {}

    def attribute(self, explainer, encoded, target):
        gradient, inputs = explainer.gradient(encoded, target)
        return (gradient * inputs).sum(-1)[0].cpu().numpy(), None, None


class Occlusion(AttributionMethod):
    """Occlusion (Zeiler & Fergus, 2014): replace a window of tokens by the baseline, measure the drop.

    scores_i = mean over the windows W that contain i of f_t(x) - f_t(x with W replaced by b).
    `measure` "logit" uses the target logit; "probability" the softmax probability of the target.
    Captum's `Occlusion` with a (window, H) sliding window and stride (1, H); every occluded copy
    of one text runs in one batch.
    """

    key = "occlusion"
    title = "Occlusion"
    description = (
        "Hides one token at a time (or a window of them) behind a neutral token and measures how much "
        "the class score drops: a big drop means the model relied on that token."
    )
    defaults = {"window": 1, "baseline": "pad", "measure": "logit"}
    choices = {"baseline": BASELINES, "measure": ("logit", "probability")}
    needs_gradients = False

    def attribute(self, explainer, encoded, target, window=1, baseline="pad", measure="logit"):
        from captum.attr import Occlusion as CaptumOcclusion

        inputs = explainer.embeddings(encoded)
        length, hidden = inputs.shape[1], inputs.shape[2]
        window = min(window, length)
        reference = explainer.baseline_embeddings(encoded, baseline)
        logits, reference_logits = explainer.logits_with_reference(encoded, reference)
        target = explainer.resolve_target(encoded, target)
        forward = explainer.forward_probability if measure == "probability" else explainer.forward
        attributions = CaptumOcclusion(forward).attribute(
            inputs, sliding_window_shapes=(window, hidden), strides=(1, hidden), baselines=reference,
            target=target, additional_forward_args=explainer.forward_args(encoded),
            perturbations_per_eval=max(1, length - window + 1),
        )
        if measure == "probability":
            difference = float(logits.softmax(-1)[target] - reference_logits.softmax(-1)[target])
        else:
            difference = float(logits[target] - reference_logits[target])
        return attributions[0].mean(-1).detach().cpu().numpy(), None, difference


class GradientShap(AttributionMethod):
    """GradientSHAP (Lundberg & Lee, 2017; Captum's `GradientShap`) on the word embeddings.

    scores_i = E_{a ~ U(0,1), e ~ N(0, stdevs^2)} [ sum_h (x - b)_ih * d f_t(b + a (x + e - b)) / d x_ih ],
    estimated from `n_samples` draws with a fixed `seed`. Completeness holds only in expectation, so
    the reported delta sum(scores) - (f_t(x) - f_t(b)) shrinks with more samples.
    (Captum's `LayerGradientShap` would add the noise to integer token ids, so the embeddings are used.)
    """

    key = "gradient_shap"
    title = "GradientSHAP"
    description = (
        "Averages gradients at random points between a neutral baseline and your text (with a little "
        "noise): a quick, approximate estimate of each token's Shapley value."
    )
    defaults = {"n_samples": 20, "stdevs": 0.01, "baseline": "pad", "seed": 0}
    choices = {"baseline": BASELINES}

    def attribute(self, explainer, encoded, target, n_samples=20, stdevs=0.01, baseline="pad", seed=0):
        from captum.attr import GradientShap as CaptumGradientShap

        inputs = explainer.embeddings(encoded)
        reference = explainer.baseline_embeddings(encoded, baseline)
        logits, reference_logits = explainer.logits_with_reference(encoded, reference)
        target = explainer.resolve_target(encoded, target)
        with _seeded(seed):
            attributions = CaptumGradientShap(explainer.forward).attribute(
                inputs, baselines=reference, n_samples=n_samples, stdevs=stdevs, target=target,
                additional_forward_args=explainer.forward_args(encoded),
            )
        scores = attributions.sum(-1)[0].detach()
        difference = float(logits[target] - reference_logits[target])
        return scores.cpu().numpy(), float(scores.sum()) - difference, difference


class _Surrogate(AttributionMethod):
    """Shared by LIME and Kernel SHAP: a linear model fitted to the outputs of texts with tokens removed.

    Each token is one interpretable feature (present = its embedding, absent = the baseline's);
    `n_samples` perturbed texts run in batches; the fitted coefficients are the scores.
    """

    needs_gradients = False
    defaults = {"n_samples": 200, "baseline": "pad", "seed": 0}
    choices = {"baseline": BASELINES}
    captum_class = ""

    def attribute(self, explainer, encoded, target, n_samples=200, baseline="pad", seed=0):
        import captum.attr
        import torch

        inputs = explainer.embeddings(encoded)
        length = inputs.shape[1]
        reference = explainer.baseline_embeddings(encoded, baseline)
        logits, reference_logits = explainer.logits_with_reference(encoded, reference)
        target = explainer.resolve_target(encoded, target)
        feature_mask = torch.arange(length, device=inputs.device).view(1, length, 1).expand_as(inputs)
        with _seeded(seed):
            attributions = getattr(captum.attr, self.captum_class)(explainer.forward).attribute(
                inputs, baselines=reference, target=target, additional_forward_args=explainer.forward_args(encoded),
                feature_mask=feature_mask, n_samples=n_samples, perturbations_per_eval=min(n_samples, 64),
            )
        difference = float(logits[target] - reference_logits[target])
        scores = attributions[0, :, 0].detach()
        delta = float(scores.sum()) - difference if self.key == "kernel_shap" else None
        return scores.cpu().numpy(), delta, difference


class KernelShap(_Surrogate):
    """Kernel SHAP (Lundberg & Lee, 2017; Captum's `KernelShap`): Shapley values via a weighted linear fit."""

    key = "kernel_shap"
    title = "Kernel SHAP"
    description = (
        "Removes random subsets of tokens, watches the class score, and fits Shapley values: each token's "
        "fair share of the change from the neutral text to yours."
    )
    captum_class = "KernelShap"


class Lime(_Surrogate):
    """LIME (Ribeiro et al., 2016; Captum's `Lime`): a sparse linear model fitted near the text."""

    key = "lime"
    title = "LIME"
    description = (
        "Removes random subsets of tokens, watches the class score, and fits a simple linear model "
        "whose weights say how much each token counts near your text."
    )
    captum_class = "Lime"


METHODS: dict[str, AttributionMethod] = {
    method.key: method
    for method in (
        IntegratedGradients(),
        Saliency(),
        InputXGradient(),
        Occlusion(),
        GradientShap(),
        KernelShap(),
        Lime(),
    )
}


# One registry per modality (Captum Insights' features): "tokens" here, "patches" registered by
# core/explain/image.py and "pairs" (image and text together) by core/explain/pairs.py when first asked
# for, so importing this module stays free of torch.
REGISTRIES: dict[str, dict[str, AttributionMethod]] = {"tokens": METHODS}
MODALITY_MODULES = {"patches": "core.explain.image", "pairs": "core.explain.pairs"}


def methods_for(modality: str = "tokens") -> dict[str, AttributionMethod]:
    """The method registry of a modality: "tokens" (text, `METHODS`), "patches" (images) or "pairs" (image and text)."""
    if modality not in REGISTRIES and modality in MODALITY_MODULES:
        import importlib

        importlib.import_module(MODALITY_MODULES[modality])  # registers itself
    if modality not in REGISTRIES:
        raise UserError(f"There are no attribution methods for '{modality}'; choose one of {', '.join(sorted({*REGISTRIES, *MODALITY_MODULES}))}.")
    return REGISTRIES[modality]


def register_methods(modality: str, methods: dict[str, AttributionMethod]) -> dict[str, AttributionMethod]:
    REGISTRIES[modality] = methods
    return methods


def get_method(key: str, modality: str = "tokens") -> AttributionMethod:
    methods = methods_for(modality)
    if key not in methods:
        raise UserError(f"There is no attribution method '{key}'; choose one of {', '.join(methods)}.")
    return methods[key]


def describe(key: str, params: dict[str, Any], modality: str | None = None) -> str:
    """A short human label: 'Integrated Gradients (steps 50, baseline pad)'; image maps add their grid.

    `modality` None reads it from the params: an image explanation's params always hold its "grid".
    """
    modality = modality or ("patches" if "grid" in params else "tokens")
    method = methods_for(modality).get(key)
    title = method.title if method else key
    known = dict(method.defaults if method else params)
    if modality == "patches" and "grid" in params:
        known["grid"] = None
    shown = ", ".join(f"{name} {_shown(value)}" for name, value in params.items() if name in known)
    return f"{title} ({shown})" if shown else title


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value)


__all__ = ["AttributionMethod", "BASELINES", "Explanation", "METHODS", "PARAM_RANGES", "REGISTRIES", "describe",
           "get_method", "methods_for", "register_methods"]


def explain_each(explain_one: Callable[[Any, Any], "Explanation"], inputs: Sequence, target, progress, noun: str) -> list:
    """`explain_one(input, target)` for each input, for every modality's `explain_many`.

    `target` is one value for all inputs, or a sequence (list, array, Series) with one per input;
    `progress(fraction, message)` is called after each input, e.g. to move a progress bar.
    """
    inputs = list(inputs)
    one_for_all = target is None or isinstance(target, (str, int, np.integer)) or not hasattr(target, "__len__")
    targets = [target] * len(inputs) if one_for_all else list(target)
    if len(targets) != len(inputs):
        raise UserError(f"Give one target per {noun[:-1]} ({len(inputs)} {noun}, {len(targets)} targets), or a single target.")
    results = []
    for index, (item, one_target) in enumerate(zip(inputs, targets)):
        results.append(explain_one(item, one_target))
        if progress:
            progress((index + 1) / len(inputs), f"Explained {index + 1} of {len(inputs)} {noun}")
    return results
