"""The image modality: an image classifier plus its image processor, explained patch by patch.

    explainer = load_image_explainer(run_id)                     # the run's latest model (or stage="before")
    explanation = explainer.explain(image, method="ig", grid=7)  # an Explanation over grid cells "r0c0", ...
    explainer.pixel_map(image, method="ig")                      # (H, W) map in model-input pixels, for an overlay
    methods_for("patches")                                       # the image methods, one class each

Every method works on what the model sees: `pixel_values` (1, 3, H, W), the image after the
model's own processor (resize, crop, normalise). Two kinds of model:

- ViT-like (a `*patch_embeddings` module and a `patch_size`): the model has its own grid of
  rows x cols = (H / p) x (W / p) patch tokens, and that grid is used (the caller's grid is ignored,
  as `params["grid_note"]` says). Integrated Gradients and GradientSHAP are taken on the patch
  embeddings (Captum's `LayerIntegratedGradients` / `LayerGradientShap`): one score per patch token,
  the (1, N, D) layer attribution summed over D.
- Convolutional (anything else, e.g. MobileNetV2): pixel attributions (1, 3, H, W), summed over
  channels and then over the pixels of each cell of a rows x cols grid the caller picks
  (`core/explain/patches.py`: cell scores add up exactly to the pixel total, so IG's completeness
  holds for the cells). Grad-CAM uses the last convolution.

Baselines (what "absent" means), all made by the model's processor from a PIL image of the same size:
"mean" the processor's mean colour (a grey; zero after normalisation), "black", or "blur" (the image
under a Gaussian blur of radius max(width, height) / 16).

Notation: x (1, 3, H, W) processed image, b its baseline, f_t the target logit, delta
sum(scores) - (f_t(x) - f_t(b)) for path methods (zero for an exact integral).

Nothing here imports torch, transformers or captum at module level.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from core.errors import UserError
from core.explain import patches
from core.explain.cache import LRUCache
from core.explain.methods import (
    AttributionMethod, Explanation, _seeded, explain_each, get_method, methods_for, register_methods,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

IMAGE_BASELINES = ("mean", "black", "blur")
DEFAULT_CACHE_SIZE = 256
EXPLAINER_CACHE_SIZE = 2
# Captum batches the n_steps interpolated images; cap the pixels in one batch (8 images of 224 x 224).
PIXELS_PER_BATCH = 8 * 224 * 224


@dataclass
class PreparedImage:
    """One image, batch of one, as the model sees it. `logits` is filled by the first forward pass."""

    image: "Image.Image"  # the original, RGB
    pixels: "torch.Tensor"  # (1, 3, H, W) processed
    key: str  # a hash of the original's pixels
    reference: str = ""  # e.g. "planted-squares#12" when the caller named the image
    logits: "torch.Tensor | None" = None  # (C,)
    baselines: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def patch_embedding_layer(model) -> tuple[str, Any] | None:
    """(name, module) of a ViT-like model's patch embeddings (output (N, patches, D)); None for other models."""
    if not getattr(model.config, "patch_size", None):
        return None
    for name, module in model.named_modules():
        if name.endswith("patch_embeddings"):
            return name, module
    return None


def last_convolution(model) -> tuple[str, Any] | None:
    """(name, module) of the last 2-D convolution, or of its conv + norm + activation block when it has one.

    In MobileNetV2 that is `mobilenet_v2.conv_1x1` (Conv2d 1x1 to 1280 channels, BatchNorm, ReLU6): the
    activated feature map the classifier pools, which is what Grad-CAM (Selvaraju et al., 2017) weighs.
    """
    from torch import nn

    convolutions = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        return None
    name, module = convolutions[-1]
    parent_name = name.rpartition(".")[0]
    if parent_name:
        parent = model.get_submodule(parent_name)
        simple = (nn.Conv2d, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Identity, nn.Dropout,
                  nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)
        children = list(parent.children())
        activation_named = type(parent).__name__.endswith(("ConvLayer", "ConvBlock", "ConvNormActivation"))
        if children and (activation_named or all(isinstance(child, simple) for child in children)):
            return parent_name, parent
    return name, module


# ---------------------------------------------------------------------------------------------
# The methods (one class each, one verb)


class ImageMethod(AttributionMethod):
    """An attribution method over image patches.

    `attribute(explainer, prepared, target, grid, **params)` returns (values, delta, difference):
    `values` is either an (H, W) pixel map (channels summed), which the explainer sums into the grid,
    or a (rows, cols) map already one score per cell; `delta` and `difference` as for text.
    """

    modality = "patches"

    def applies_to(self, model) -> str | None:
        import inspect

        if "pixel_values" not in inspect.signature(model.forward).parameters:
            return f"{self.title} feeds pixels to the model, and this model's forward takes no pixel_values."
        return None

    def attribute(self, explainer: "ImageExplainer", prepared: PreparedImage, target: int | None, grid: tuple[int, int],
                  **params):
        raise NotImplementedError


class ImageIntegratedGradients(ImageMethod):
    """Integrated Gradients (Sundararajan et al., 2017).

    CNN: Captum's `IntegratedGradients` on pixel_values, (1, 3, H, W) summed over channels to an (H, W)
    map. ViT: `LayerIntegratedGradients` on the patch embeddings, (1, N, D) summed over D to N patch
    scores. Either way sum(scores) = f_t(x) - f_t(b) up to the reported delta.
    """

    key = "ig"
    title = "Integrated Gradients"
    description = (
        "Fades the image in from a neutral baseline in small steps and adds up how much each patch moved the class "
        "score, so the patch scores add up to the change in the score."
    )
    defaults = {"steps": 32, "baseline": "mean"}
    choices = {"baseline": IMAGE_BASELINES}

    def attribute(self, explainer, prepared, target, grid, steps=32, baseline="mean"):
        from captum.attr import IntegratedGradients, LayerIntegratedGradients

        reference = explainer.baseline(prepared, baseline)
        logits, reference_logits = explainer.logits_with_reference(prepared, reference)
        target = explainer.resolve_target(prepared, target)
        batch = explainer.internal_batch_size(prepared, steps)
        if explainer.is_vit:
            attributions = LayerIntegratedGradients(explainer.forward, explainer.patch_layer).attribute(
                prepared.pixels, baselines=reference, target=target, n_steps=steps, internal_batch_size=batch)
            values = attributions.sum(-1)[0].detach().reshape(grid)
        else:
            attributions = IntegratedGradients(explainer.forward).attribute(
                prepared.pixels, baselines=reference, target=target, n_steps=steps, internal_batch_size=batch)
            values = attributions[0].sum(0).detach()
        difference = float(logits[target] - reference_logits[target])
        values = values.double().cpu().numpy()
        return values, float(values.sum()) - difference, difference


class ImageOcclusion(ImageMethod):
    """Occlusion (Zeiler & Fergus, 2014) with windows of `window` x `window` grid cells, sliding one cell at a time.

    drop_W = f_t(x) - f_t(x with the cells of window W replaced by the baseline's pixels), and
    scores_c = mean of drop_W over the windows W that contain cell c (Captum's `Occlusion` rule, and the
    text method's). With `window` 1 a cell's score is its own drop: Captum's `Occlusion` with a
    patch-sized window and stride (or `FeatureAblation` with one feature per cell), computed here on
    the grid's own cells so that sizes not divisible by the grid work too. On a ViT the cells are its
    patches. Evidence spread over neighbouring cells (an object cut by a cell edge) shows better with
    `window` 2: hiding half of it leaves the other half to speak for the class.
    """

    key = "occlusion"
    title = "Occlusion"
    description = (
        "Covers one patch (or a window of patches) at a time with a neutral colour and measures how much the class "
        "score drops: a big drop means the model relied on that patch."
    )
    defaults = {"window": 1, "baseline": "mean", "measure": "logit"}
    choices = {"baseline": IMAGE_BASELINES, "measure": ("logit", "probability")}
    needs_gradients = False

    def attribute(self, explainer, prepared, target, grid, window=1, baseline="mean", measure="logit"):
        import torch

        height, width = prepared.size
        rows, cols = grid
        high, wide = min(window, rows), min(window, cols)
        reference = explainer.baseline(prepared, baseline)
        logits, reference_logits = explainer.logits_with_reference(prepared, reference)
        target = explainer.resolve_target(prepared, target)
        forward = explainer.forward_probability if measure == "probability" else explainer.forward
        cell = torch.from_numpy(patches.cell_mask(height, width, grid)).to(prepared.pixels.device)
        cell_row, cell_col = cell // cols, cell % cols
        windows = [(r, c) for r in range(rows - high + 1) for c in range(cols - wide + 1)]
        batch = explainer.internal_batch_size(prepared, len(windows))
        drops = []
        with torch.no_grad():
            unoccluded = forward(prepared.pixels)[0, target]
            for start in range(0, len(windows), batch):
                masks = torch.stack([(cell_row >= r) & (cell_row < r + high) & (cell_col >= c) & (cell_col < c + wide)
                                     for r, c in windows[start:start + batch]])
                occluded = torch.where(masks[:, None], reference, prepared.pixels)
                drops.append(unoccluded - forward(occluded)[:, target])
        drops = torch.cat(drops).double().cpu().numpy()
        totals, counts = np.zeros(grid), np.zeros(grid)
        for (r, c), drop in zip(windows, drops):
            totals[r:r + high, c:c + wide] += drop
            counts[r:r + high, c:c + wide] += 1
        if measure == "probability":
            difference = float(logits.softmax(-1)[target] - reference_logits.softmax(-1)[target])
        else:
            difference = float(logits[target] - reference_logits[target])
        return totals / counts, None, difference


class ImageGradientShap(ImageMethod):
    """GradientSHAP (Lundberg & Lee, 2017; Captum's `GradientShap`, or `LayerGradientShap` on a ViT's patches).

    scores = E_{a ~ U(0,1), e ~ N(0, stdevs^2)} [ (x - b) * grad f_t(b + a (x + e - b)) ], from `n_samples`
    draws with a fixed `seed`, in normalised pixel units; completeness only in expectation (delta reported).
    """

    key = "gradient_shap"
    title = "GradientSHAP"
    description = (
        "Averages gradients at random points between a neutral baseline and your image (with a little noise): a "
        "quick, approximate estimate of each patch's Shapley value."
    )
    defaults = {"n_samples": 20, "stdevs": 0.1, "baseline": "mean", "seed": 0}
    choices = {"baseline": IMAGE_BASELINES}

    def attribute(self, explainer, prepared, target, grid, n_samples=20, stdevs=0.1, baseline="mean", seed=0):
        from captum.attr import GradientShap, LayerGradientShap

        reference = explainer.baseline(prepared, baseline)
        logits, reference_logits = explainer.logits_with_reference(prepared, reference)
        target = explainer.resolve_target(prepared, target)
        with _seeded(seed):
            if explainer.is_vit:
                attributions = LayerGradientShap(explainer.forward, explainer.patch_layer).attribute(
                    prepared.pixels, baselines=reference, n_samples=n_samples, stdevs=stdevs, target=target)
                values = attributions.sum(-1)[0].detach().reshape(grid)
            else:
                attributions = GradientShap(explainer.forward).attribute(
                    prepared.pixels, baselines=reference, n_samples=n_samples, stdevs=stdevs, target=target)
                values = attributions[0].sum(0).detach()
        difference = float(logits[target] - reference_logits[target])
        values = values.double().cpu().numpy()
        return values, float(values.sum()) - difference, difference


class ImageSaliency(ImageMethod):
    """Saliency (Simonyan et al., 2014): |d f_t / d x| per pixel and channel (Captum's `Saliency`, abs),
    summed over channels and then over each cell (unsigned)."""

    key = "saliency"
    title = "Saliency (gradient magnitude)"
    description = (
        "How sensitive the class score is to a small change in each pixel, added up per patch; it shows how much "
        "a patch matters, not whether it speaks for or against the class."
    )
    defaults = {}
    signed = False

    def attribute(self, explainer, prepared, target, grid):
        from captum.attr import Saliency

        target = explainer.resolve_target(prepared, target)  # a forward pass only when no target is given
        pixels = prepared.pixels.clone().requires_grad_(True)
        attributions = Saliency(explainer.recording_forward(prepared)).attribute(pixels, target=target, abs=True)
        return attributions[0].sum(0).detach().double().cpu().numpy(), None, None


class ImageGradCam(ImageMethod):
    """Grad-CAM (Selvaraju et al., 2017) on the last convolution (Captum's `LayerGradCam`).

    With A (1, K, h, w) the layer's output: map = ReLU(sum_k mean_ij(d f_t / d A_kij) * A_k), (h, w),
    upsampled bilinearly to (H, W) and summed into the grid. `relu` False keeps the negative part.
    Convolutional models only: a ViT has no spatial feature map after its patch projection.
    """

    key = "grad_cam"
    title = "Grad-CAM"
    description = (
        "Weighs the last convolutional feature maps by how much they raise the class score: a coarse heat map of "
        "where the network looked."
    )
    defaults = {"relu": True}

    def applies_to(self, model) -> str | None:
        reason = super().applies_to(model)
        if reason:
            return reason
        if patch_embedding_layer(model) is not None:
            return ("Grad-CAM needs a convolutional feature map, and this is a ViT-like model made of patch tokens; use "
                    "Integrated Gradients or Occlusion, which score its patches directly.")
        if last_convolution(model) is None:
            return "Grad-CAM needs a convolution layer, and this model has none."
        return None

    def attribute(self, explainer, prepared, target, grid, relu=True):
        from captum.attr import LayerAttribution, LayerGradCam

        target = explainer.resolve_target(prepared, target)  # a forward pass only when no target is given
        _, layer = last_convolution(explainer.model)
        coarse = LayerGradCam(explainer.recording_forward(prepared), layer).attribute(prepared.pixels, target=target, relu_attributions=relu)
        fine = LayerAttribution.interpolate(coarse.detach(), prepared.size, interpolate_mode="bilinear")
        return fine[0].sum(0).double().cpu().numpy(), None, None


IMAGE_METHODS: dict[str, ImageMethod] = register_methods("patches", {
    method.key: method
    for method in (ImageIntegratedGradients(), ImageOcclusion(), ImageGradientShap(), ImageSaliency(), ImageGradCam())
})


# ---------------------------------------------------------------------------------------------
# The explainer


class ImageExplainer:
    """Explanations for one image classifier: `explain(image, method, grid=...)` returns an `Explanation`.

    `model` is a Hugging Face image classifier taking `pixel_values` (put in eval mode here);
    `processor` its image processor (PIL backend); `label_names[i]` names class i (default: the
    model config's id2label). `cache_size` 0 turns the explanation cache off.
    """

    modality = "patches"

    def __init__(self, model, processor, label_names: Sequence[str] | None = None, cache_size: int = DEFAULT_CACHE_SIZE,
                 name: str = ""):
        self.model = model.eval()
        self.processor = processor
        if label_names is None:
            id2label = getattr(model.config, "id2label", None) or {}
            label_names = [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]
        self.label_names = [str(label) for label in label_names]
        found = patch_embedding_layer(model)
        self.is_vit = found is not None
        self.patch_layer_name, self.patch_layer = found if found else (None, None)
        self.name = name
        self.run_id: str | None = None
        self.stage: str | None = None
        self._cache = LRUCache(cache_size)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        kind = "ViT-like" if self.is_vit else "convolutional"
        return f"ImageExplainer({self.name or type(self.model).__name__}, {kind}, labels={self.label_names})"

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -- the public verbs ------------------------------------------------------------------------

    def predict_proba(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape (len(images), number of classes); images are PIL images or references."""
        import torch

        images = [self._open(image)[0] for image in images]
        parts = []
        with self._lock, torch.no_grad():
            for start in range(0, len(images), batch_size):
                pixels = self.processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"]
                parts.append(self.forward(pixels.to(self.device)).float().softmax(-1).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.label_names)), dtype=np.float32)

    def explain(self, image, method: str = "ig", target: int | str | None = None, grid: int | Sequence[int] = 7,
                **params) -> Explanation:
        """Attribution scores for every cell of a rows x cols grid over the model's input, row-major.

        `image` is a PIL image, an (H, W, 3) uint8 array, or a reference like "planted-squares#12".
        `target` None explains the predicted class. `grid` is an int (square) or (rows, cols); a
        ViT-like model uses its own patch grid instead. The same call twice returns the same object.
        """
        return self._explained(image, method, target, grid, params)[0]

    def pixel_map(self, image, method: str = "ig", target: int | str | None = None, grid: int | Sequence[int] = 7,
                  **params) -> np.ndarray:
        """The (H, W) map in model-input pixels behind `explain` (cell scores spread evenly for per-patch
        methods), so that `patches.aggregate(pixel_map, grid)` gives the explanation's scores."""
        return self._explained(image, method, target, grid, params)[1]

    def explain_many(self, images: Sequence, method: str = "ig", target: int | str | None | Sequence = None,
                     progress: Callable[[float, str], None] | None = None, grid: int | Sequence[int] = 7,
                     **params) -> list[Explanation]:
        """`explain` for each image; `target` is one value for all, or one per image. `progress(fraction, message)`."""
        return explain_each(lambda image, one: self.explain(image, method, one, grid=grid, **params),
                            images, target, progress, "images")

    def method_availability(self) -> dict[str, str | None]:
        """Method key -> None when it can explain this model, else the sentence why not."""
        return {key: method.applies_to(self.model) for key, method in methods_for("patches").items()}

    def with_model(self, model, cache_size: int = 0) -> "ImageExplainer":
        """The same processor and labels around another model (e.g. a randomised copy)."""
        twin = ImageExplainer(model, self.processor, self.label_names, cache_size=cache_size, name=self.name)
        twin.run_id, twin.stage = self.run_id, self.stage
        return twin

    def clear_cache(self) -> None:
        self._cache.clear()

    def target_index(self, target: int | str | None) -> int | None:
        from core.explain.text import TextExplainer

        return TextExplainer.target_index(self, target)  # same rules, same sentences

    def patch_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """A ViT-like model's own (rows, cols) of patch tokens for a model input of `size` (H, W)."""
        patch = self.model.config.patch_size
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        return size[0] // ph, size[1] // pw

    def input_image(self, image) -> "Image.Image":
        """The image resized and cropped exactly as the model sees it (before normalisation), for an overlay."""
        from PIL import Image

        raw = self.processor(images=self._open(image)[0], do_rescale=False, do_normalize=False, return_tensors="np")
        pixels = np.asarray(raw["pixel_values"][0])
        return Image.fromarray(np.clip(np.rint(pixels.transpose(1, 2, 0)), 0, 255).astype(np.uint8), mode="RGB")

    def region_to_input(self, box: Sequence[int], image) -> list[int] | None:
        """A [x0, y0, x1, y1] box (end exclusive) in the original image, mapped to model-input pixels
        through the processor's own resize and crop; None when the crop cut it away."""
        from PIL import Image, ImageDraw

        original = self._open(image)[0]
        mask = Image.new("RGB", original.size, (0, 0, 0))
        ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
        inside = np.asarray(self.input_image(mask))[..., 0] >= 128
        if not inside.any():
            return None
        ys, xs = np.nonzero(inside)
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]

    # -- what the methods call -------------------------------------------------------------------

    def prepare(self, image) -> PreparedImage:
        image, reference = self._open(image)
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
        digest = hashlib.sha1(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
        return PreparedImage(image=image, pixels=pixels.float(), key=digest, reference=reference)

    def forward(self, pixel_values: "torch.Tensor") -> "torch.Tensor":
        """Logits (N, C) for pixel values (N, 3, H, W)."""
        return self.model(pixel_values=pixel_values).logits

    def recording_forward(self, prepared: PreparedImage) -> Callable:
        """`forward` that also keeps the logits of a batch-of-one pass on the image itself, so a method whose
        Captum call runs the model on the unchanged image needs no extra pass for the prediction."""

        def forward(pixel_values):
            logits = self.forward(pixel_values)
            if prepared.logits is None and logits.shape[0] == 1:
                prepared.logits = logits[0].detach()
            return logits

        return forward

    def forward_probability(self, pixel_values: "torch.Tensor") -> "torch.Tensor":
        return self.forward(pixel_values).softmax(-1)

    def baseline(self, prepared: PreparedImage, kind: str) -> "torch.Tensor":
        """The baseline (1, 3, H, W): the processor applied to a mean-coloured, black or blurred image."""
        from PIL import Image, ImageFilter

        if kind not in prepared.baselines:
            if kind == "blur":
                picture = prepared.image.filter(ImageFilter.GaussianBlur(radius=max(prepared.image.size) / 16))
            elif kind == "black":
                picture = Image.new("RGB", prepared.image.size, (0, 0, 0))
            elif kind == "mean":
                mean = getattr(self.processor, "image_mean", None) or [0.5, 0.5, 0.5]
                colour = tuple(int(round(255 * float(value))) for value in list(mean)[:3])
                picture = Image.new("RGB", prepared.image.size, colour)
            else:
                raise UserError(f"The baseline must be one of {', '.join(IMAGE_BASELINES)} (got {kind!r}).")
            pixels = self.processor(images=picture, return_tensors="pt")["pixel_values"]
            prepared.baselines[kind] = pixels.to(self.device).float()
        return prepared.baselines[kind]

    def logits(self, prepared: PreparedImage) -> "torch.Tensor":
        import torch

        if prepared.logits is None:
            with torch.no_grad():
                prepared.logits = self.forward(prepared.pixels)[0].detach()
        return prepared.logits

    def logits_with_reference(self, prepared: PreparedImage, reference: "torch.Tensor"):
        """Logits (C,) on the image and on the baseline, from one forward pass over both."""
        import torch

        with torch.no_grad():
            both = self.forward(torch.cat([prepared.pixels, reference])).detach()
        prepared.logits = both[0]
        return both[0], both[1]

    def resolve_target(self, prepared: PreparedImage, target: int | None) -> int:
        return int(self.logits(prepared).argmax()) if target is None else int(target)

    def internal_batch_size(self, prepared: PreparedImage, steps: int) -> int:
        height, width = prepared.size
        return max(1, min(steps, PIXELS_PER_BATCH // max(height * width, 1)))

    # -- internals -------------------------------------------------------------------------------

    def _open(self, image) -> tuple["Image.Image", str]:
        from PIL import Image

        if isinstance(image, str):
            from core.images import open_image

            return open_image(image).convert("RGB"), image
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
                raise UserError(f"An image array must be (height, width, 3) uint8, not {image.shape} {image.dtype}.")
            return Image.fromarray(image[..., :3], mode="RGB"), ""
        if isinstance(image, Image.Image):
            return (image if image.mode == "RGB" else image.convert("RGB")), ""
        raise UserError(f"Pick an image to explain (a picture or a dataset reference like 'digits#12'), not {type(image).__name__}.")

    def _explained(self, image, method: str, target, grid, params: dict) -> tuple[Explanation, np.ndarray]:
        attribution = get_method(method, "patches")
        reason = attribution.applies_to(self.model)
        if reason:
            raise UserError(reason)
        used = attribution.check_params(params)
        target_index = self.target_index(target)
        with self._lock:
            prepared = self.prepare(image)
            size = prepared.size
            if self.is_vit:
                cells = self.patch_grid(size)
                try:
                    asked = patches.as_grid(grid, *size) if grid is not None else cells
                except UserError:
                    asked = grid
                shown = f"{asked[0]}x{asked[1]}" if isinstance(asked, tuple) else str(asked)
                note = ("" if asked == cells else
                        f"This ViT-like model sees the image as {cells[0]}x{cells[1]} patches of its own, so that grid is "
                        f"used instead of {shown}.")
            else:
                cells, note = patches.as_grid(grid, *size), ""
            key = (prepared.key, attribution.key, target_index, cells, tuple(sorted(used.items())), note)
            found = self._cache.get(key)
            if found is not None:
                return found
            return self._cache.put(key, self._compute(prepared, attribution, target_index, cells, used, note))

    def _compute(self, prepared: PreparedImage, attribution: ImageMethod, target: int | None, grid: tuple[int, int],
                 used: dict[str, Any], note: str) -> tuple[Explanation, np.ndarray]:
        import torch

        started = time.perf_counter()
        height, width = prepared.size
        with torch.enable_grad():  # a caller inside torch.no_grad() still gets gradients
            values, delta, difference = attribution.attribute(self, prepared, target, grid, **used)
        values = np.asarray(values, dtype=np.float64)
        if values.shape == (height, width):
            pixel_map, scores = values, patches.aggregate(values, grid)
        elif values.shape == grid:
            pixel_map, scores = patches.spread(values, grid, height, width), values
        else:  # pragma: no cover - a method broke its contract
            raise RuntimeError(f"{attribution.key} returned a map of shape {values.shape}, neither {(height, width)} nor {grid}")
        target = self.resolve_target(prepared, target)
        probabilities = self.logits(prepared).float().softmax(-1).cpu().numpy()
        predicted = int(probabilities.argmax())
        extra: dict[str, Any] = {"grid": [grid[0], grid[1]], "input_size": [height, width]}
        if note:
            extra["grid_note"] = note
        if attribution.key == "grad_cam":
            extra["layer"] = last_convolution(self.model)[0]
        explanation = Explanation(
            units=patches.unit_names(grid),
            scores=[float(score) for score in scores.ravel()],
            method=attribution.key,
            target=target,
            target_label=self.label_names[target],
            predicted=predicted,
            predicted_label=self.label_names[predicted],
            probabilities=[float(p) for p in probabilities],
            delta=None if delta is None else float(delta),
            output_difference=None if difference is None else float(difference),
            seconds=time.perf_counter() - started,
            params={**used, **extra},
            truncated=False,
            modality=self.modality,
            signed=attribution.signed,
            text=prepared.reference,
        )
        pixel_map.setflags(write=False)
        return explanation, pixel_map


# ---------------------------------------------------------------------------------------------
# Loading a run's model


def load_image_classifier(run, stage: str):
    """(model in eval mode, image processor) for a stage of an image run; LoRA checkpoints merged onto the before-model.

    The processor is the one the run trained with (saved next to the model, or with the before-model).
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from core.checkpoints import BEFORE_MODEL, available_stages, stage_folder
    from core.models import SAFE_LOADING

    if not run.directory.exists():
        raise UserError(f"The directory of run {run.id} was deleted; its models are gone. Pick another run.")
    if stage not in available_stages(run):
        raise UserError(f"Run {run.id} has no '{stage}' model; available: {', '.join(available_stages(run)) or 'none'}.")
    folder = stage_folder(run, stage)
    source = folder if (folder / "preprocessor_config.json").exists() else run.directory / BEFORE_MODEL
    processor = AutoImageProcessor.from_pretrained(source, backend="pil", trust_remote_code=False)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForImageClassification.from_pretrained(run.directory / BEFORE_MODEL, **SAFE_LOADING)
        model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    else:
        model = AutoModelForImageClassification.from_pretrained(folder, **SAFE_LOADING)
    return model.eval(), processor


_EXPLAINERS = LRUCache(EXPLAINER_CACHE_SIZE)


def load_image_explainer(run_id: str, stage: str | None = None) -> ImageExplainer:
    """The explainer for an image run's model at `stage` (None: the latest one); kept for the next call.

    Cached per (workspace, run, stage, time the stage's model was written), like `load_text_explainer`.
    """
    from core.checkpoints import latest_stage, stage_folder
    from core.store import RunStore
    from core.tasks import TASKS
    from core.workspace import workspace_root

    run = RunStore().get(run_id)
    if run is None:
        raise UserError(f"There is no run '{run_id}' in this workspace; `python -m core runs` lists the runs there are.")
    if not run.directory.exists():
        raise UserError(f"The directory of run {run_id} was deleted; its models are gone. Pick another run.")
    task = TASKS.get(run.task)
    if task is None or task.modality != "image":
        what = f"a {task.title.lower()} run" if task is not None else f"a run of task '{run.task}'"
        raise UserError(f"Run {run_id} is {what}; patch explanations need an image classification run.")
    stage = stage or latest_stage(run)
    weights = stage_folder(run, stage) / "config.json"
    stamp = weights.stat().st_mtime_ns if weights.exists() else None
    key = (str(workspace_root()), run_id, stage, stamp)
    found = _EXPLAINERS.get(key)
    if found is not None:
        return found
    model, processor = load_image_classifier(run, stage)
    for parameter in model.parameters():  # only input gradients are needed
        parameter.requires_grad_(False)
    explainer = ImageExplainer(model, processor, name=f"{run.name} ({run.id}, {stage})")
    explainer.run_id, explainer.stage = run_id, stage
    return _EXPLAINERS.put(key, explainer)


def clear_image_explainer_cache() -> None:
    _EXPLAINERS.clear()


__all__ = ["IMAGE_BASELINES", "IMAGE_METHODS", "ImageExplainer", "ImageMethod", "PreparedImage", "clear_image_explainer_cache",
           "last_convolution", "load_image_classifier", "load_image_explainer", "patch_embedding_layer"]
