"""Attribution methods, each written once over input adapters (`core/explain/base.py` has the protocol).

One class per method and one line in `METHODS` per class (Captum's shape: switch method by switching key,
nothing else). A method never knows the modality; it asks the adapter for inputs, baselines, outputs, units
and how to fold raw attributions. The adapters are the explainers of each input (`TextExplainer` and
`TagExplainer` over tokens, `ImageExplainer` over patches, `PairExplainer` over tokens and patches together);
each registers an `InputSpec` naming its baselines, the defaults it prefers, and which models it can read.
`methods_for(modality)` gives every method that applies to that input, with the input's parameters filled in.

Notation for one input x = (x_1, ..., x_k), a baseline b and a target t: f_t(.) the target output (occlusion may
use the target probability instead); delta = sum(scores) - (f_t(x) - f_t(b)) for methods that keep completeness.

Nothing here imports torch or captum at module level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import UserError
from core.explain.base import (
    Attribution,
    AttributionMethod,
    _seeded,
    clone_for_gradients,
    completeness,
    fold,
    input_spec,
    scores_with_reference,
    target_scorer,
    unit_values,
)


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
    """Grad-CAM (Selvaraju et al., 2017) on the feature map the classifier pools (Captum's `LayerGradCam`).

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
        layer = adapter.feature_map_layer(prepared)
        coarse = LayerGradCam(target_scorer(adapter, prepared, target, on_input=True), layer).attribute(
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


__all__ = ["METHODS", "describe", "get_method", "methods_for"]
