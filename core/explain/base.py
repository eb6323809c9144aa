"""The seam every attribution method and every input adapter meet at: what an input declares (`InputSpec`), what
a method is (`AttributionMethod`) and returns (`Attribution`), the plain-data result (`Explanation`), and the few
steps every method takes with an adapter (score the target, fold raw attributions into units, occlude units).

The adapter protocol (each explainer implements it; see `core/explain/methods.py` for the methods over it):

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
    adapter.feature_map_layer(prepared)     -> the module whose spatial output Grad-CAM weighs, or None

Nothing here imports torch or captum at module level.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
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
class Part:
    """One input's share of an explanation (Captum Insights' "feature"): its units, their scores, how the units
    are laid out, and the part's share of the explanation's total |attribution|.

    `input` is "tokens" (units are word pieces, `layout` [length]) or "patches" (units are grid cells "r0c0",
    "r0c1", ... row-major, `layout` [rows, cols]). `share` is 1 for an explanation of one input; the shares
    of a pair's parts add up to 1 (an all-zero map is split evenly).
    """

    input: str
    units: list[str]
    scores: list[float]
    layout: list[int]
    share: float = 1.0


def make_parts(*parts: tuple[str, Sequence[str], Sequence[float], Sequence[int]]) -> list[Part]:
    """Parts from (input, units, scores, layout), each given its share of the total |attribution|."""
    totals = [float(np.abs(np.asarray(scores, dtype=np.float64)).sum()) for _, _, scores, _ in parts]
    whole = sum(totals)
    return [
        Part(
            input=name,
            units=list(units),
            scores=[float(score) for score in scores],
            layout=[int(size) for size in layout],
            share=total / whole if whole > 0 else 1.0 / len(parts),
        )
        for (name, units, scores, layout), total in zip(parts, totals)
    ]


@dataclass(frozen=True)
class Explanation:
    """One attribution of one model output to its input, for every task: plain data, JSON-ready through
    `to_dict()`; treat as read-only.

    `parts` are the inputs attributed to: one part for a text ("tokens") or an image ("patches"), both for an
    image-text pair (`modality` "pairs"). `units` and `scores` run over every part in order. Positive means
    evidence *for* the target (for an unsigned method, `signed` is False and a score is only a magnitude).
    `delta` is the method's own error where it has one: for Integrated Gradients the convergence delta
    sum(scores) - (f_t(x) - f_t(b)), which is zero for an exact integral. `score` is f_t(x) and
    `baseline_score` f_t(b) where the method has a baseline. A similarity model (`kind` "similarity") has one
    output, the match: `target` and `predicted` are None and `probabilities` empty. `text` and `image` are
    the input's text and the image's reference when it had them; `params["grid"]` is [rows, cols] for images.
    """

    parts: list[Part]
    method: str
    target: int | None
    target_label: str
    predicted: int | None
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
    image: str = ""
    kind: str = "classification"
    score: float | None = None
    baseline_score: float | None = None

    @property
    def units(self) -> list[str]:
        return [unit for part in self.parts for unit in part.units]

    @property
    def scores(self) -> list[float]:
        return [score for part in self.parts for score in part.scores]

    def part(self, name: str) -> Part:
        """The part for input `name` ("tokens" or "patches")."""
        for part in self.parts:
            if part.input == name:
                return part
        raise KeyError(f"This {self.modality} explanation has no {name} part (it has {', '.join(p.input for p in self.parts)}).")

    def only(self, name: str) -> Explanation:
        """The explanation of one part alone, for the code that ranks or draws one input; the delta and
        f(x) - f(b) belong to every part together, so the one part carries neither."""
        part = replace(self.part(name), share=1.0)
        return replace(self, parts=[part], modality=name, delta=None, output_difference=None)

    def delta_is_large(self, tolerance: float = 0.05) -> bool:
        """Whether |delta| exceeds `tolerance` times |f(x) - f(baseline)| (then the integral is too coarse)."""
        if self.delta is None:
            return False
        scale = max(abs(self.output_difference or 0.0), 1e-6)
        return abs(self.delta) > tolerance * scale

    def top(self, k: int = 3, by_magnitude: bool | None = None) -> list[tuple[str, float]]:
        """The k units with the highest scores (by |score| for unsigned methods or when asked)."""
        magnitude = (not self.signed) if by_magnitude is None else by_magnitude
        units, scores = self.units, self.scores
        order = sorted(range(len(scores)), key=lambda i: abs(scores[i]) if magnitude else scores[i], reverse=True)
        return [(units[i], scores[i]) for i in order[:k]]

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Explanation:
        known = {f.name for f in fields(cls)}
        kept = {key: value for key, value in values.items() if key in known}
        kept["parts"] = [part if isinstance(part, Part) else Part(**part) for part in kept.get("parts", [])]
        return cls(**kept)


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
