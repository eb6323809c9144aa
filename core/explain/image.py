"""The image modality: an image classifier plus its image processor, explained patch by patch.

    explainer = load_image_explainer(run_id)                     # (core/explain/loading.py) the run's latest model
    explanation = explainer.explain(image, method="ig", grid=7)  # an Explanation over grid cells "r0c0", ...
    explainer.pixel_map(image, method="ig")                      # (H, W) map in model-input pixels, for an overlay
    methods_for("patches")                                       # the methods that apply to images

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import UserError
from core.explain import patches
from core.explain.base import (
    AttributionMethod,
    Explanation,
    InputSpec,
    explain_each,
    make_parts,
    register_input,
    replaced_output,
)
from core.explain.cache import LRUCache
from core.explain.layers import patch_embedding_layer, pooled_feature_map
from core.explain.methods import get_method, methods_for

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

IMAGE_BASELINES = ("mean", "black", "blur")
DEFAULT_CACHE_SIZE = 256
# Captum batches the n_steps interpolated images; cap the pixels in one batch (8 images of 224 x 224).
PIXELS_PER_BATCH = 8 * 224 * 224


@dataclass
class PreparedImage:
    """One image, batch of one, as the model sees it. `logits` is filled by the first forward pass."""

    image: Image.Image  # the original, RGB
    pixels: torch.Tensor  # (1, 3, H, W) processed
    key: str  # a hash of the original's pixels
    reference: str = ""  # e.g. "planted-squares#12" when the caller named the image
    logits: torch.Tensor | None = None  # (C,)
    baselines: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def pixels_problem(model) -> str | None:
    """None for a model every patch method can read (it takes pixel_values), else the sentence why not."""
    import inspect

    if "pixel_values" not in inspect.signature(model.forward).parameters:
        return "Patch explanations feed pixels to the model, and this model's forward takes no pixel_values."
    return None


# Images: the pixels (a CNN) or the patch embeddings (a ViT); baselines made by the model's processor.
PATCHES = register_input(
    InputSpec(
        modality="patches",
        baselines={"baseline": ("mean", IMAGE_BASELINES)},
        preferred={"ig": {"steps": 32}, "gradient_shap": {"stdevs": 0.1}, "smoothgrad": {"stdevs": 0.1}},
        problem=pixels_problem,
    )
)


# ---------------------------------------------------------------------------------------------
# The explainer


class ImageExplainer:
    """Explanations for one image classifier: `explain(image, method, grid=...)` returns an `Explanation`.

    `model` is a Hugging Face image classifier taking `pixel_values` (put in eval mode here);
    `processor` its image processor (PIL backend); `label_names[i]` names class i (default: the
    model config's id2label). `cache_size` 0 turns the explanation cache off.
    """

    modality = "patches"

    def __init__(
        self, model, processor, label_names: Sequence[str] | None = None, cache_size: int = DEFAULT_CACHE_SIZE, name: str = ""
    ):
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
        self._feature_maps: dict[tuple[int, int], tuple[str, Any] | None] = {}

    @classmethod
    def from_stage(cls, stage, word: int | None = None) -> ImageExplainer:
        """The explainer of one opened stage of an image classification run (`core.stages.open_stage`)."""
        return cls(stage.model, stage.preprocessor, stage.label_names, name=f"{stage.run.name} ({stage.run.id}, {stage.stage})")

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
                pixels = self.processor(images=images[start : start + batch_size], return_tensors="pt")["pixel_values"]
                parts.append(self.forward(pixels.to(self.device)).float().softmax(-1).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.label_names)), dtype=np.float32)

    def explain(
        self, image, method: str = "ig", target: int | str | None = None, grid: int | Sequence[int] = 7, **params
    ) -> Explanation:
        """Attribution scores for every cell of a rows x cols grid over the model's input, row-major.

        `image` is a PIL image, an (H, W, 3) uint8 array, or a reference like "planted-squares#12".
        `target` None explains the predicted class. `grid` is an int (square) or (rows, cols); a
        ViT-like model uses its own patch grid instead. The same call twice returns the same object.
        """
        return self._explained(image, method, target, grid, params)[0]

    def pixel_map(
        self, image, method: str = "ig", target: int | str | None = None, grid: int | Sequence[int] = 7, **params
    ) -> np.ndarray:
        """The (H, W) map in model-input pixels behind `explain` (cell scores spread evenly for per-patch
        methods), so that `patches.aggregate(pixel_map, grid)` gives the explanation's scores."""
        return self._explained(image, method, target, grid, params)[1]

    def explain_many(
        self,
        images: Sequence,
        method: str = "ig",
        target: int | str | Sequence | None = None,
        progress: Callable[[float, str], None] | None = None,
        grid: int | Sequence[int] = 7,
        **params,
    ) -> list[Explanation]:
        """`explain` for each image; `target` is one value for all, or one per image. `progress(fraction, message)`."""
        return explain_each(
            lambda image, one: self.explain(image, method, one, grid=grid, **params), images, target, progress, "images"
        )

    def faithfulness_input(self, image, explanation: Explanation) -> tuple:
        """(prepared image, grid, adapter unit ids in the explanation's row-major cell order) for
        `core.explain.faithfulness`."""
        rows, cols = explanation.params["grid"]
        return self.prepare(image), (rows, cols), list(range(rows * cols))

    def method_availability(self) -> dict[str, str | None]:
        """Method key -> None when it can explain this model, else the sentence why not."""
        return {key: method.applies_to(self.model) for key, method in methods_for(self.modality).items()}

    def with_model(self, model, cache_size: int = 0) -> ImageExplainer:
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

    def input_image(self, image) -> Image.Image:
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

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) for pixel values (N, 3, H, W)."""
        return self.model(pixel_values=pixel_values).logits

    # -- the input adapter (what every method calls; see core/explain/methods.py) ----------------
    # A CNN is attributed in its pixels; a ViT in its patch embeddings (what LayerIntegratedGradients on the
    # patch layer differentiates), one unit per patch token: hiding a patch's embedding is hiding its pixels.

    def inputs(self, prepared: PreparedImage) -> tuple[torch.Tensor]:
        return (self.patch_embeddings(prepared.pixels) if self.is_vit else prepared.pixels,)

    def baseline_inputs(self, prepared: PreparedImage, used: dict[str, Any]) -> tuple[torch.Tensor]:
        pixels = self.baseline(prepared, used["baseline"])
        return (self.patch_embeddings(pixels) if self.is_vit else pixels,)

    def outputs(self, prepared: PreparedImage, values: torch.Tensor) -> torch.Tensor:
        if not self.is_vit:
            return self.forward(values)
        with replaced_output(self.patch_layer, values):
            return self.forward(prepared.pixels.expand(values.shape[0], -1, -1, -1))

    def remember(self, prepared: PreparedImage, row: torch.Tensor) -> None:
        prepared.logits = row

    def unit_maps(self, prepared: PreparedImage, grid: tuple[int, int]) -> tuple[torch.Tensor]:
        import torch

        if self.is_vit:
            count = grid[0] * grid[1]
            return (torch.arange(count, device=prepared.pixels.device).view(1, count, 1),)
        cells = torch.from_numpy(patches.cell_mask(*prepared.size, grid)).to(prepared.pixels.device)
        return (cells.view(1, 1, *prepared.size),)

    def unit_layouts(self, prepared: PreparedImage, grid: tuple[int, int]) -> tuple[tuple[int, int]]:
        return (tuple(grid),)

    def fold(self, raw: tuple, signed: bool) -> tuple[np.ndarray]:
        """An (H, W) pixel map (channels summed, |.| first for a magnitude); a ViT's patch scores, row-major."""
        (values,) = raw
        if self.is_vit:
            return ((values.sum(-1)[0] if signed else values.norm(dim=-1)[0]).double().cpu().numpy(),)
        return ((values[0] if signed else values[0].abs()).sum(0).double().cpu().numpy(),)

    def batch_rows(self, prepared: PreparedImage, rows: int) -> int:
        height, width = prepared.size
        return max(1, min(rows, PIXELS_PER_BATCH // max(height * width, 1)))

    def feature_map_layer(self, prepared: PreparedImage):
        found = self.feature_map(prepared)
        return found[1] if found else None

    def feature_map(self, prepared: PreparedImage) -> tuple[str, Any] | None:
        """(name, module) of the map the classifier pools, traced once per input size (`pooled_feature_map`)."""
        size = tuple(prepared.pixels.shape[-2:])
        if size not in self._feature_maps:
            self._feature_maps[size] = pooled_feature_map(self.model, prepared.pixels)
        return self._feature_maps[size]

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            return self.patch_layer(pixels).detach()

    def baseline(self, prepared: PreparedImage, kind: str) -> torch.Tensor:
        """The baseline (1, 3, H, W): the processor applied to a mean-coloured, black or blurred image."""
        from PIL import Image, ImageFilter

        if kind not in prepared.baselines:
            if kind == "blur":
                picture = prepared.image.filter(ImageFilter.GaussianBlur(radius=max(prepared.image.size) / 16))
            elif kind == "black":
                picture = Image.new("RGB", prepared.image.size, (0, 0, 0))
            elif kind == "mean":
                mean = getattr(self.processor, "image_mean", None) or [0.5, 0.5, 0.5]
                colour = tuple(round(255 * float(value)) for value in list(mean)[:3])
                picture = Image.new("RGB", prepared.image.size, colour)
            else:
                raise UserError(f"The baseline must be one of {', '.join(IMAGE_BASELINES)} (got {kind!r}).")
            pixels = self.processor(images=picture, return_tensors="pt")["pixel_values"]
            prepared.baselines[kind] = pixels.to(self.device).float()
        return prepared.baselines[kind]

    def logits(self, prepared: PreparedImage) -> torch.Tensor:
        import torch

        if prepared.logits is None:
            with torch.no_grad():
                prepared.logits = self.forward(prepared.pixels)[0].detach()
        return prepared.logits

    def resolve_target(self, prepared: PreparedImage, target: int | None) -> int:
        return int(self.logits(prepared).argmax()) if target is None else int(target)

    # -- internals -------------------------------------------------------------------------------

    def _open(self, image) -> tuple[Image.Image, str]:
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
        raise UserError(
            f"Pick an image to explain (a picture or a dataset reference like 'digits#12'), not {type(image).__name__}."
        )

    def _explained(self, image, method: str, target, grid, params: dict) -> tuple[Explanation, np.ndarray]:
        attribution = get_method(method, self.modality)
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
                note = (
                    ""
                    if asked == cells
                    else f"This ViT-like model sees the image as {cells[0]}x{cells[1]} patches of its own, so that grid is "
                    f"used instead of {shown}."
                )
            else:
                cells, note = patches.as_grid(grid, *size), ""
            key = (prepared.key, attribution.key, target_index, cells, tuple(sorted(used.items())), note)
            found = self._cache.get(key)
            if found is not None:
                return found
            return self._cache.put(key, self._compute(prepared, attribution, target_index, cells, used, note))

    def _compute(
        self,
        prepared: PreparedImage,
        attribution: AttributionMethod,
        target: int | None,
        grid: tuple[int, int],
        used: dict[str, Any],
        note: str,
    ) -> tuple[Explanation, np.ndarray]:
        import torch

        started = time.perf_counter()
        height, width = prepared.size
        with torch.enable_grad():  # a caller inside torch.no_grad() still gets gradients
            (values,), delta, difference = attribution.attribute(self, prepared, target, grid, **used)
        values = np.asarray(values, dtype=np.float64)
        if values.shape == (height, width):
            pixel_map, scores = values, patches.aggregate(values, grid)
        elif values.size == grid[0] * grid[1]:  # one score per cell already (row-major)
            scores = values.reshape(grid)
            pixel_map = patches.spread(scores, grid, height, width)
        else:  # pragma: no cover - a method broke its contract
            raise RuntimeError(f"{attribution.key} returned a map of shape {values.shape}, neither {(height, width)} nor {grid}")
        target = self.resolve_target(prepared, target)
        probabilities = self.logits(prepared).float().softmax(-1).cpu().numpy()
        predicted = int(probabilities.argmax())
        extra: dict[str, Any] = {"grid": [grid[0], grid[1]], "input_size": [height, width]}
        if note:
            extra["grid_note"] = note
        if attribution.key == "grad_cam":
            extra["layer"] = self.feature_map(prepared)[0]
        explanation = Explanation(
            parts=make_parts(("patches", patches.unit_names(grid), scores.ravel(), grid)),
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
            image=prepared.reference,
        )
        pixel_map.setflags(write=False)
        return explanation, pixel_map


__all__ = ["IMAGE_BASELINES", "ImageExplainer", "PreparedImage"]
