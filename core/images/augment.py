"""Train-time image augmentation in PIL and numpy: pure functions of (image, parameters, random generator).

`augment(image, params, rng)` returns a new image and never changes its input; the same parameters
and the same generator state give the same output, so a seeded run, a test or the Train page's
preview (`preview_grid`) can repeat it exactly. The steps run in a fixed order:

1. random resized crop: a crop covering `crop_scale`…100 % of the area, aspect ratio 3/4…4/3
   (torchvision's rule), resized back to the original size; `crop_scale` 1 turns it off;
2. horizontal flip with probability `flip`;
3. rotation by an angle drawn from ±`rotation` degrees (corners filled with black);
4. colour jitter: brightness, contrast and saturation each multiplied by a factor drawn from
   [1 - strength, 1 + strength]; strength 0 turns each off.

Which of these keep the label depends on the data: a flipped shirt is still a shirt, a flipped
digit may not be a digit; a crop can cut off the object that decides the class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageEnhance

# RunConfig field -> AugmentParams field, with the value that turns the step off.
CONFIG_FIELDS = {
    "aug_crop_scale": ("crop_scale", 1.0),
    "aug_flip": ("flip", 0.0),
    "aug_rotation": ("rotation", 0.0),
    "aug_brightness": ("brightness", 0.0),
    "aug_contrast": ("contrast", 0.0),
    "aug_saturation": ("saturation", 0.0),
}
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class AugmentParams:
    crop_scale: float = 1.0  # smallest share of the area a random crop keeps; 1 = no crop
    flip: float = 0.0  # probability of a horizontal flip
    rotation: float = 0.0  # largest rotation, in degrees, either way
    brightness: float = 0.0  # jitter strength: factor drawn from [1 - s, 1 + s]
    contrast: float = 0.0
    saturation: float = 0.0

    @property
    def active(self) -> bool:
        return self != AugmentParams()

    def problems(self) -> list[str]:
        """Every out-of-range value, as sentences (empty when usable)."""
        found = []
        if not 0.05 <= self.crop_scale <= 1:
            found.append(
                f"The crop scale is the smallest share of the image a crop keeps, between 0.05 and 1 (got {self.crop_scale})."
            )
        if not 0 <= self.flip <= 1:
            found.append(f"The flip probability must be between 0 and 1 (got {self.flip}).")
        if not 0 <= self.rotation <= 180:
            found.append(f"The rotation must be between 0 and 180 degrees (got {self.rotation}).")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                found.append(f"The {name} jitter strength must be at least 0 and below 1 (got {value}).")
        return found

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def params_from_config(config) -> AugmentParams:
    """The augmentation a run asks for; configs without the aug_* fields get no augmentation."""
    return AugmentParams(**{name: float(getattr(config, field, off)) for field, (name, off) in CONFIG_FIELDS.items()})


def augment(image: Image.Image, params: AugmentParams, rng: np.random.Generator) -> Image.Image:
    """One random augmentation of `image` (any mode; returns the same size and mode)."""
    out = image
    if params.crop_scale < 1:
        out = random_resized_crop(out, params.crop_scale, rng)
    if params.flip > 0 and rng.random() < params.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if params.rotation > 0:
        angle = float(rng.uniform(-params.rotation, params.rotation))
        out = out.rotate(angle, resample=Image.Resampling.BILINEAR)
    for strength, enhancer in (
        (params.brightness, ImageEnhance.Brightness),
        (params.contrast, ImageEnhance.Contrast),
        (params.saturation, ImageEnhance.Color),
    ):
        if strength > 0:
            out = enhancer(out).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return out.copy() if out is image else out


def random_resized_crop(image: Image.Image, min_scale: float, rng: np.random.Generator) -> Image.Image:
    """A crop of min_scale…1 of the area, aspect 3/4…4/3, resized back to the image's size."""
    width, height = image.size
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            break
    else:  # no fitting crop in ten draws (a very elongated image): keep the whole image
        w, h = width, height
        left, top = 0, 0
    box = (left, top, left + w, top + h)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box)


def preview_grid(images: list[Image.Image], params: AugmentParams, seed: int = 0, n: int = 8) -> list[Image.Image]:
    """`n` augmented images for a preview: image i % len(images), each with its own seeded generator.

    The same images, parameters and seed always give the same pictures, so a page can redraw the
    preview on every rerun without it flickering, and show a new draw by changing the seed.
    """
    if not images:
        return []
    return [augment(images[i % len(images)], params, np.random.default_rng([seed, i])) for i in range(n)]
