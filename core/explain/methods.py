"""Attribution methods, each written once over input adapters, and the plain-data result they produce.

One class per method and one line in `METHODS` per class (Captum's shape: switch method by switching key,
nothing else). A method never knows the modality. It asks an *input adapter* (Captum's own split: a method
takes a forward function and inputs) for what it needs:

    adapter.inputs(prepared)                -> (x_1, ..., x_k)  the tensors attributed to, batch of one
    adapter.baseline_inputs(prepared, used) -> (b_1, ..., b_k)  "absent", by the baseline names in `used`
    adapter.outputs(prepared, *tensors)     -> (N, C)           the model's outputs for N copies of the input
    adapter.remember(prepared, row)                             keeps f(x) so the prediction needs no extra pass
    adapter.resolve_target(prepared, target)-> int | None       the class explained (None: the one output)
    adapter.unit_maps(prepared, grid)       -> (m_1, ..., m_k)  per input, the unit (token, patch) of each
                                                                element, ids unique across inputs
    adapter.unit_layouts(prepared, grid)    -> ((L,), (rows, cols), ...)  how each input's units are laid out
    adapter.fold(raw, signed)               -> per input, the element attributions reduced to a map: (L,)
                                               for tokens, an (H, W) pixel map or (rows, cols) for patches
    adapter.batch_rows(prepared, n)         -> how many copies fit in one batch
    adapter.feature_map_layer()             -> a convolutional feature map for Grad-CAM, or None

The adapters are the explainers of each input (`TextExplainer` and `TagExplainer` over tokens,
`ImageExplainer` over patches, `PairExplainer` over tokens and patches together); each registers an
`InputSpec` naming its baselines, the defaults it prefers, and which models it can read. `methods_for(modality)`
gives every method that applies to that input, with the input's parameters filled in.

Notation for one input x = (x_1, ..., x_k), a baseline b and a target t: f_t(.) the target output (occlusion may
use the target probability instead); delta = sum(scores) - (f_t(x) - f_t(b)) for methods that keep completeness.

Nothing here imports torch or captum at module level: `import core.explain` stays cheap for pages
and the CLI, and the heavy imports happen on the first explanation.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from core.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

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
    "nt_samples": (1, 500),
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
    def from_dict(cls, values: dict[str, Any]) -> Explanation:
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
# The seam: what an input declares, what a method is


@dataclass(frozen=True)
class InputSpec:
    """What one kind of input (a modality) tells every method, registered by the module of its adapter.

    `baselines` maps each baseline parameter to (default, choices): {"baseline": ("pad", BASELINES)} for text,
    {"text_baseline": ..., "image_baseline": ...} for pairs. `preferred` overrides a method's defaults for this
    input (method key -> {parameter: value}), e.g. more IG steps where the integral converges slowly.
    `problem(model)` is None when the adapter can read `model`, else the sentence why not.
    """

    modality: str
    baselines: dict[str, tuple[str, tuple[str, ...]]]
    preferred: dict[str, dict[str, Any]]
    problem: Callable[[Any], str | None]
    measures: tuple[str, ...] = ("logit", "probability")


SPECS: dict[str, InputSpec] = {}
# The modules that register each input's spec, imported on first use so this module stays free of torch.
SPEC_MODULES = {"tokens": "core.explain.text", "patches": "core.explain.image", "pairs": "core.explain.pairs"}


def register_input(spec: InputSpec) -> InputSpec:
    SPECS[spec.modality] = spec
    return spec


def input_spec(modality: str) -> InputSpec:
    if modality not in SPECS and modality in SPEC_MODULES:
        importlib.import_module(SPEC_MODULES[modality])  # registers itself
    if modality not in SPECS:
        raise UserError(f"There are no attribution methods for '{modality}'; choose one of {', '.join(SPEC_MODULES)}.")
    return SPECS[modality]


class Attribution(NamedTuple):
    """What a method returns: one map per input (see `adapter.fold`), and delta and f_t(x) - f_t(b) where known."""

    parts: tuple
    delta: float | None = None
    difference: float | None = None


class AttributionMethod:
    """One attribution method. Subclasses set the class attributes and implement `attribute`.

    `defaults` are the method's own parameters; a baseline parameter, when `uses_baseline`, comes from the input
    (`bound`). `modalities` None means every input; Grad-CAM names the one it needs.
    """

    key: str = ""
    title: str = ""
    description: str = ""  # one sentence for a learner
    defaults: dict[str, Any] = {}
    choices: dict[str, tuple] = {}  # parameter -> allowed values
    signed: bool = True  # False: scores are magnitudes (no direction)
    needs_gradients: bool = True
    uses_baseline: bool = False
    uses_measure: bool = False
    modalities: tuple[str, ...] | None = None
    modality: str = ""  # set on the copy `bound` makes for one input

    def bound(self, spec: InputSpec) -> AttributionMethod:
        """This method for one input: the input's baseline parameters and preferred defaults filled in."""
        bound = copy.copy(self)
        defaults, choices = dict(self.defaults), dict(self.choices)
        if self.uses_baseline:
            for name, (default, allowed) in spec.baselines.items():
                defaults[name], choices[name] = default, allowed
        if self.uses_measure and len(spec.measures) > 1:  # a similarity score has no probability to measure
            defaults["measure"], choices["measure"] = spec.measures[0], spec.measures
        defaults.update({name: value for name, value in spec.preferred.get(self.key, {}).items() if name in defaults})
        bound.defaults, bound.choices, bound.modality, bound.spec = defaults, choices, spec.modality, spec
        return bound

    def applies_to(self, model) -> str | None:
        """None when this method can explain `model` through its input's adapter, else a sentence saying why not."""
        spec = getattr(self, "spec", None)
        return spec.problem(model) if spec is not None else None

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

    def attribute(self, adapter, prepared, target: int | None, grid, **params) -> Attribution:
        """The maps for one prepared input towards `target` (None: the predicted class), one per input tensor."""
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


@contextlib.contextmanager
def replaced_output(module, value: torch.Tensor):
    """Within the block, `module` returns `value` instead of its output: word embeddings that carry gradients."""
    handle = module.register_forward_hook(lambda _module, _inputs, _output: value)
    try:
        yield
    finally:
        handle.remove()


def internal_batch_size(tokens: int, steps: int) -> int:
    return max(1, min(steps, TOKENS_PER_BATCH // max(tokens, 1)))


# ---------------------------------------------------------------------------------------------
# What every method does with an adapter


def target_scorer(adapter, prepared, target: int | None, measure: str = "logit", on_input: bool = False) -> Callable:
    """f_t as Captum wants it: the input tensors -> (N,) target outputs (or target probabilities).

    `on_input` True: the method's one forward pass is on the input itself (saliency, input x gradient, Grad-CAM),
    so its outputs are kept as the prediction and no second pass is needed for it."""
    column = 0 if target is None else target

    def score(*tensors):
        outputs = adapter.outputs(prepared, *tensors)
        if on_input and outputs.shape[0] == 1:
            adapter.remember(prepared, outputs[0].detach())
        if measure == "probability":
            outputs = outputs.softmax(-1)
        return outputs[:, column]

    return score


def scores_with_reference(
    adapter, prepared, inputs: tuple, baselines: tuple, target: int | None, measure: str = "logit"
) -> tuple[int | None, float]:
    """(the resolved target, f_t(x) - f_t(b)) from one forward pass over the input and its baseline together."""
    import torch

    with torch.no_grad():
        both = adapter.outputs(prepared, *(torch.cat([x, b]) for x, b in zip(inputs, baselines))).detach()
    adapter.remember(prepared, both[0])
    target = adapter.resolve_target(prepared, target)
    column = 0 if target is None else target
    if measure == "probability":
        both = both.softmax(-1)
    return target, float(both[0, column] - both[1, column])


def fold(adapter, raw, signed: bool) -> tuple:
    raw = raw if isinstance(raw, tuple) else (raw,)
    return tuple(adapter.fold(tuple(part.detach() for part in raw), signed))


def completeness(parts: tuple, difference: float) -> float:
    return float(sum(np.asarray(part, dtype=np.float64).sum() for part in parts)) - difference


def unit_values(raw: tuple, unit_maps: tuple, layouts: tuple) -> tuple:
    """Per input, the value a per-unit attribution (occlusion, a surrogate's coefficient) gives each unit.

    Every element of a unit carries that unit's value, so the first element found stands for it."""
    parts = []
    for values, units, layout in zip(raw, unit_maps, layouts):
        units = units.expand_as(values).reshape(-1)
        flat = values.detach().reshape(-1).double()
        count = int(np.prod(layout))
        first = units.min()
        found = np.zeros(count)
        scattered = flat.new_zeros(int(units.max()) - int(first) + 1).scatter_(0, units - first, flat)
        found[:] = scattered[:count].cpu().numpy()
        parts.append(found.reshape(layout))
    return tuple(parts)


def clone_for_gradients(inputs: tuple) -> tuple:
    return tuple(part.clone().requires_grad_(True) for part in inputs)


# ---------------------------------------------------------------------------------------------
# The methods


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al., 2017) along the straight path from the baseline to the input.

    scores = (x - b) * integral_0^1 d f_t(b + a (x - b)) / d x da, with Captum's Gauss-Legendre rule over `steps`
    points, every input moving together. Completeness: the scores add up to f_t(x) - f_t(b) up to the reported
    convergence delta. On text the path runs through the word embeddings (the numbers of `LayerIntegratedGradients`
    on `get_input_embeddings()`), on a ViT through its patch embeddings, on a CNN through the pixels.
    """

    key = "ig"
    title = "Integrated Gradients"
    description = (
        "Walks in small steps from a neutral baseline (blank tokens, a flat or blurred picture) to your input and "
        "adds up how much each token or patch moved the class score, so the scores add up to the change in the score."
    )
    defaults = {"steps": 50}
    uses_baseline = True

    def attribute(self, adapter, prepared, target, grid, steps=50, **baselines):
        from captum.attr import IntegratedGradients as CaptumIG

        inputs, reference = adapter.inputs(prepared), adapter.baseline_inputs(prepared, baselines)
        target, difference = scores_with_reference(adapter, prepared, inputs, reference, target)
        raw = CaptumIG(target_scorer(adapter, prepared, target)).attribute(
            inputs, baselines=reference, n_steps=steps, internal_batch_size=adapter.batch_rows(prepared, steps)
        )
        # Captum's return_convergence_delta computes the same number with two more forward passes.
        parts = fold(adapter, raw, signed=True)
        return Attribution(parts, completeness(parts, difference), difference)


class Saliency(AttributionMethod):
    """Gradient magnitude: |d f_t(x) / d x| per element, reduced per unit (unsigned; Captum's `Saliency`).

    On tokens the L2 norm over the embedding dimension (LIT's "Grad L2 Norm": a plain sum has a sign that depends
    on the embedding basis, so it means nothing); on pixels |gradient| summed over channels and cells.
    """

    key = "saliency"
    title = "Saliency (gradient magnitude)"
    description = (
        "How sensitive the class score is to a small change in each token or pixel; it shows how much a unit "
        "matters, not whether it speaks for or against the class."
    )
    signed = False

    def attribute(self, adapter, prepared, target, grid):
        from captum.attr import Saliency as CaptumSaliency

        inputs = clone_for_gradients(adapter.inputs(prepared))
        target = adapter.resolve_target(prepared, target)  # a forward pass only when no target is given
        raw = CaptumSaliency(target_scorer(adapter, prepared, target, on_input=True)).attribute(inputs, abs=False)
        return Attribution(fold(adapter, raw, signed=False))


class SmoothGrad(AttributionMethod):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over `nt_samples` noisy copies of the input.

    mean over e ~ N(0, stdevs^2) of d f_t(x + e) / d x (Captum's `NoiseTunnel` around `Saliency`, nt_type
    "smoothgrad"), then reduced per unit to a magnitude as saliency is: the noise washes out the gradient's
    sharp local fluctuations, so the map is less speckled than plain saliency. Unsigned; seeded by `seed`.
    """

    key = "smoothgrad"
    title = "SmoothGrad"
    description = (
        "Saliency averaged over many slightly noisy copies of your input: a calmer map of which tokens or patches "
        "the class score is most sensitive to."
    )
    defaults = {"nt_samples": 16, "stdevs": 0.1, "seed": 0}
    signed = False

    def attribute(self, adapter, prepared, target, grid, nt_samples=16, stdevs=0.1, seed=0):
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as CaptumSaliency

        inputs = adapter.inputs(prepared)
        target = adapter.resolve_target(prepared, target)
        with _seeded(seed):
            raw = NoiseTunnel(CaptumSaliency(target_scorer(adapter, prepared, target))).attribute(
                inputs,
                nt_type="smoothgrad",
                nt_samples=nt_samples,
                stdevs=stdevs,
                nt_samples_batch_size=adapter.batch_rows(prepared, nt_samples),
                abs=False,
            )
        return Attribution(fold(adapter, raw, signed=False))


class InputXGradient(AttributionMethod):
    """Input times gradient: x * d f_t(x) / d x per element, summed per unit (signed; Captum's `InputXGradient`).

    The first-order Taylor term of f_t around a zero input: zero embeddings, or zero normalised pixels (the
    processor's mean colour).
    """

    key = "input_x_gradient"
    title = "Input × Gradient"
    description = (
        "Multiplies each token's embedding or each pixel by the gradient of the class score: a one-step, cheap "
        "estimate of how much each unit pushes the score up or down."
    )

    def attribute(self, adapter, prepared, target, grid):
        from captum.attr import InputXGradient as CaptumInputXGradient

        inputs = clone_for_gradients(adapter.inputs(prepared))
        target = adapter.resolve_target(prepared, target)
        raw = CaptumInputXGradient(target_scorer(adapter, prepared, target, on_input=True)).attribute(inputs)
        return Attribution(fold(adapter, raw, signed=True))


class Occlusion(AttributionMethod):
    """Occlusion (Zeiler & Fergus, 2014): replace a window of units by the baseline's, measure the drop.

    Windows of `window` consecutive tokens, or `window` x `window` grid cells, slide one unit at a time over each
    input while the other inputs stay whole; drop_W = f_t(x) - f_t(x with W replaced by b), and a unit's score is
    the mean drop of the windows that contain it (Captum's `Occlusion` rule). `measure` "logit" uses the target
    output, "probability" its softmax probability. Every occluded copy runs in batches.
    """

    key = "occlusion"
    title = "Occlusion"
    description = (
        "Hides one token or patch at a time (or a window of them) behind a neutral one and measures how much the "
        "class score drops: a big drop means the model relied on that unit."
    )
    defaults = {"window": 1}
    needs_gradients = False
    uses_baseline = True
    uses_measure = True

    def attribute(self, adapter, prepared, target, grid, window=1, measure="logit", **baselines):
        import torch

        inputs, reference = adapter.inputs(prepared), adapter.baseline_inputs(prepared, baselines)
        target, difference = scores_with_reference(adapter, prepared, inputs, reference, target, measure)
        score = target_scorer(adapter, prepared, target, measure)
        maps, layouts = adapter.unit_maps(prepared, grid), adapter.unit_layouts(prepared, grid)
        with torch.no_grad():
            whole = float(score(*inputs)[0])
            parts = tuple(
                occluded_drops(adapter, prepared, score, inputs, reference, index, maps[index], layout, window, whole)
                for index, layout in enumerate(layouts)
            )
        return Attribution(parts, None, difference)


def occluded_drops(
    adapter, prepared, score, inputs: tuple, reference: tuple, index: int, units, layout: tuple, window: int, whole: float
) -> np.ndarray:
    """One input's occlusion map: the mean drop of every window (of its layout) that covers each unit."""
    import torch

    first = int(units.min())
    local = units - first  # this input's unit ids, from 0, laid out row-major over `layout`
    spans = [min(window, size) for size in layout]
    starts = np.stack(np.meshgrid(*[np.arange(size - span + 1) for size, span in zip(layout, spans)], indexing="ij"), -1).reshape(
        -1, len(layout)
    )
    coordinates = [local // int(np.prod(layout[axis + 1 :])) % layout[axis] for axis in range(len(layout))]
    batch = adapter.batch_rows(prepared, len(starts))
    drops = []
    for begin in range(0, len(starts), batch):
        masks = torch.stack(
            [
                torch.stack(
                    [
                        (coordinate >= int(start[axis])) & (coordinate < int(start[axis]) + spans[axis])
                        for axis, coordinate in enumerate(coordinates)
                    ]
                ).all(0)
                for start in starts[begin : begin + batch]
            ]
        )
        copies = list(inputs)
        copies[index] = torch.where(masks[:, 0], reference[index], inputs[index])  # (B, ...) from B masks of batch one
        drops.append(whole - score(*copies).double().cpu())
    drops = torch.cat(drops).numpy()
    totals, counts = np.zeros(layout), np.zeros(layout)
    for start, drop in zip(starts, drops):
        region = tuple(slice(int(begin), int(begin) + span) for begin, span in zip(start, spans))
        totals[region] += drop
        counts[region] += 1
    return totals / counts


class GradientShap(AttributionMethod):
    """GradientSHAP (Lundberg & Lee, 2017; Captum's `GradientShap`).

    scores = E_{a ~ U(0,1), e ~ N(0, stdevs^2)} [ (x - b) * d f_t(b + a (x + e - b)) / d x ], estimated from
    `n_samples` draws with a fixed `seed`. Completeness holds only in expectation, so the reported delta
    sum(scores) - (f_t(x) - f_t(b)) shrinks with more samples.
    """

    key = "gradient_shap"
    title = "GradientSHAP"
    description = (
        "Averages gradients at random points between a neutral baseline and your input (with a little noise): a "
        "quick, approximate estimate of each token's or patch's Shapley value."
    )
    defaults = {"n_samples": 20, "stdevs": 0.01, "seed": 0}
    uses_baseline = True

    def attribute(self, adapter, prepared, target, grid, n_samples=20, stdevs=0.01, seed=0, **baselines):
        from captum.attr import GradientShap as CaptumGradientShap

        inputs, reference = adapter.inputs(prepared), adapter.baseline_inputs(prepared, baselines)
        target, difference = scores_with_reference(adapter, prepared, inputs, reference, target)
        with _seeded(seed):
            raw = CaptumGradientShap(target_scorer(adapter, prepared, target)).attribute(
                inputs, baselines=reference, n_samples=n_samples, stdevs=stdevs
            )
        parts = fold(adapter, raw, signed=True)
        return Attribution(parts, completeness(parts, difference), difference)


class _Surrogate(AttributionMethod):
    """Shared by LIME and Kernel SHAP: a linear model fitted to the outputs of inputs with units removed.

    Each unit (token, patch) is one interpretable feature (present = the input's, absent = the baseline's);
    `n_samples` perturbed inputs run in batches; the fitted coefficients are the scores.
    """

    needs_gradients = False
    defaults = {"n_samples": 200, "seed": 0}
    uses_baseline = True
    captum_class = ""

    def attribute(self, adapter, prepared, target, grid, n_samples=200, seed=0, **baselines):
        import captum.attr

        inputs, reference = adapter.inputs(prepared), adapter.baseline_inputs(prepared, baselines)
        target, difference = scores_with_reference(adapter, prepared, inputs, reference, target)
        maps = adapter.unit_maps(prepared, grid)
        masks = tuple(units.expand_as(part) for units, part in zip(maps, inputs))
        with _seeded(seed):
            raw = getattr(captum.attr, self.captum_class)(target_scorer(adapter, prepared, target)).attribute(
                inputs,
                baselines=reference,
                feature_mask=masks,
                n_samples=n_samples,
                perturbations_per_eval=adapter.batch_rows(prepared, min(n_samples, 64)),
            )
        raw = raw if isinstance(raw, tuple) else (raw,)
        parts = unit_values(raw, maps, adapter.unit_layouts(prepared, grid))
        delta = completeness(parts, difference) if self.key == "kernel_shap" else None
        return Attribution(parts, delta, difference)


class KernelShap(_Surrogate):
    """Kernel SHAP (Lundberg & Lee, 2017; Captum's `KernelShap`): Shapley values via a weighted linear fit."""

    key = "kernel_shap"
    title = "Kernel SHAP"
    description = (
        "Removes random subsets of tokens or patches, watches the class score, and fits Shapley values: each unit's "
        "fair share of the change from the neutral input to yours."
    )
    captum_class = "KernelShap"


class Lime(_Surrogate):
    """LIME (Ribeiro et al., 2016; Captum's `Lime`): a sparse linear model fitted near the input."""

    key = "lime"
    title = "LIME"
    description = (
        "Removes random subsets of tokens or patches, watches the class score, and fits a simple linear model "
        "whose weights say how much each unit counts near your input."
    )
    captum_class = "Lime"


class GradCam(AttributionMethod):
    """Grad-CAM (Selvaraju et al., 2017) on the last convolution (Captum's `LayerGradCam`).

    With A (1, K, h, w) the layer's output: map = ReLU(sum_k mean_ij(d f_t / d A_kij) * A_k), (h, w),
    upsampled bilinearly to (H, W) and summed into the grid. `relu` False keeps the negative part.
    Convolutional image models only: a ViT has no spatial feature map after its patch projection.
    """

    key = "grad_cam"
    title = "Grad-CAM"
    description = (
        "Weighs the last convolutional feature maps by how much they raise the class score: a coarse heat map of "
        "where the network looked."
    )
    defaults = {"relu": True}
    modalities = ("patches",)

    def applies_to(self, model) -> str | None:
        from core.explain.layers import grad_cam_problem

        return super().applies_to(model) or grad_cam_problem(model)

    def attribute(self, adapter, prepared, target, grid, relu=True):
        from captum.attr import LayerAttribution, LayerGradCam

        (inputs,) = adapter.inputs(prepared)
        target = adapter.resolve_target(prepared, target)
        coarse = LayerGradCam(target_scorer(adapter, prepared, target, on_input=True), adapter.feature_map_layer()).attribute(
            inputs, relu_attributions=relu
        )
        fine = LayerAttribution.interpolate(coarse.detach(), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return Attribution((fine[0].sum(0).double().cpu().numpy(),))


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
        GradCam(),
        SmoothGrad(),
    )
}


def methods_for(modality: str = "tokens") -> dict[str, AttributionMethod]:
    """Every method that applies to an input ("tokens", "patches" or "pairs"), with that input's parameters."""
    spec = input_spec(modality)
    return {
        key: method.bound(spec) for key, method in METHODS.items() if method.modalities is None or modality in method.modalities
    }


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


__all__ = [
    "BASELINES",
    "METHODS",
    "PARAM_RANGES",
    "Attribution",
    "AttributionMethod",
    "Explanation",
    "InputSpec",
    "describe",
    "get_method",
    "input_spec",
    "methods_for",
    "register_input",
]


def explain_each(explain_one: Callable[[Any, Any], Explanation], inputs: Sequence, target, progress, noun: str) -> list:
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
