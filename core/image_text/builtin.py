"""The built-in image-text pair datasets, each stored once under cache/image_text/<key>/ on first use.

Shapes with captions (synthetic, each keeping the shape's mask), Fashion-MNIST with generated
captions, and planted pairs, whose class is in exactly one modality (for checking fusion explanations).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageDraw

from core.assets import Progress, no_progress
from core.data.info import DatasetInfo
from core.image_text.shapes import shapes_examples
from core.image_text.store import (
    CONTRASTIVE,
    DEFAULT_PROMPT,
    FUSION,
    PAIR_STORE_VERSION,
    is_current,
    mask_cell,
    pair_features,
    staged,
)
from core.images.builtin import (
    CLUTTER_COLOURS,
    FASHION_MNIST_DIR,
    FASHION_MNIST_HUB_ID,
    FASHION_MNIST_LABELS,
    fashion_mnist_arrays,
    fashion_mnist_png,
    planted_squares_image,
)
from core.images.store import png_bytes, write_table
from core.workspace import cache_dir


@dataclass(frozen=True)
class BuiltinPairDataset:
    """A pair dataset the workbench can always load; `records()` yields its rows for storing once."""

    key: str
    kind: str
    title: str
    description: str
    source: str
    records: Callable[[Progress], Iterator[dict[str, Any]]]
    size: int
    prompt_template: str
    extras: tuple[str, ...] = ()

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            key=self.key, title=self.title, task=self.kind, source=self.source, description=self.description, builtin=True
        )

    def is_ready(self) -> bool:
        """Whether loading needs no generation or conversion (so a page can skip a progress bar)."""
        return is_current(self._target())

    def folder(self, progress: Progress = no_progress) -> Path:
        """cache/image_text/<key>/, written on first use (staged beside it and renamed into place)."""
        target = self._target()
        if is_current(target):
            return target
        progress(0.0, f"Preparing the image-text dataset {self.key}")
        with staged(target.parent, self.key) as staging:
            meta = {
                "key": self.key,
                "kind": self.kind,
                "source": self.source,
                "prompt_template": self.prompt_template,
                "pair_version": PAIR_STORE_VERSION,
            }
            write_table(staging, self.records(progress), pair_features(self.extras), meta, progress, total=self.size)
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.rename(target)
            except OSError:
                if not is_current(target):  # another process stored it first: use that one
                    raise
        progress(1.0, f"The image-text dataset {self.key} is ready")
        return target

    def _target(self) -> Path:
        return cache_dir() / "image_text" / self.key


# Shapes with captions, from core.image_text.shapes -------------------------------------------

SHAPES_ROWS = 1200
SHAPES_SEED = 5
SHAPES_SIZE = 64


def shapes_caption_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    for example in shapes_examples(SHAPES_ROWS, seed=SHAPES_SEED, size=SHAPES_SIZE):
        yield {
            "image": png_bytes(example.image),
            "text": example.caption,
            "label": f"{example.colour} {example.shape}",
            "mask": mask_cell(example.mask),
        }


# Fashion-MNIST with captions -------------------------------------------------------------------

FASHION_PER_CLASS = 300  # 3,000 pairs: enough to align two small towers on a CPU in minutes
FASHION_CAPTIONS_SEED = 13
# Several phrasings per class and several templates, so a caption is more than its label.
FASHION_PHRASES = {
    "T-shirt/top": ("a t-shirt", "a plain tee", "a short-sleeved top", "a cotton t-shirt"),
    "Trouser": ("a pair of trousers", "a pair of jeans", "long straight-leg pants", "a pair of slacks"),
    "Pullover": ("a pullover", "a grey knitted pullover", "a long-sleeved sweater", "a wool jumper"),
    "Dress": ("a dress", "a sleeveless dress", "a knee-length dress", "a summer dress"),
    "Coat": ("a coat", "a buttoned coat", "a warm winter coat", "a long jacket"),
    "Sandal": ("a sandal", "an open-toe sandal", "a strappy sandal", "a flat summer sandal"),
    "Shirt": ("a shirt", "a button-up shirt", "a collared shirt", "a long-sleeved shirt"),
    "Sneaker": ("a sneaker", "a running shoe", "a low-top trainer", "a canvas sneaker"),
    "Bag": ("a bag", "a handbag", "a tote bag", "a shoulder bag"),
    "Ankle boot": ("an ankle boot", "a short leather boot", "a heeled ankle boot", "a chelsea boot"),
}
FASHION_TEMPLATES = (
    "a photo of {item}",
    "{item}, front view",
    "product shot: {item}",
    "a small greyscale picture of {item}",
    "{item} on a plain background",
    "catalogue image showing {item}",
)


def fashion_caption(rng: random.Random, label: str) -> str:
    return rng.choice(FASHION_TEMPLATES).format(item=rng.choice(FASHION_PHRASES[label]))


def fashion_caption_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    """FASHION_PER_CLASS seeded training images per class, each with a generated caption; only the chosen images
    are encoded (the pool is the 60,000 official training images)."""
    _, images, labels = next(fashion_mnist_arrays())  # the official training split comes first
    rng = random.Random(FASHION_CAPTIONS_SEED)
    for index, label in enumerate(FASHION_MNIST_LABELS):
        pool = np.flatnonzero(labels == index).tolist()
        for row in rng.sample(pool, FASHION_PER_CLASS):
            yield {"image": fashion_mnist_png(images[row]), "text": fashion_caption(rng, label), "label": label}


# Planted pairs: the class is in exactly one modality --------------------------------------------

PLANTED_PAIRS_ROWS = 800
PLANTED_PAIRS_SEED = 11
# Each class's evidence: the colour of the one square (planted_squares_image's classes) or a keyword.
PLANTED_PAIR_SQUARES = {"warm": "red square", "cold": "blue square"}
PLANTED_PAIR_KEYWORDS = {"warm": ("sunny", "scorching", "tropical"), "cold": ("icy", "frozen", "snowy")}
NEUTRAL_WORDS = (
    "the",
    "a",
    "street",
    "table",
    "window",
    "photo",
    "of",
    "with",
    "near",
    "old",
    "house",
    "road",
    "chair",
    "people",
    "walk",
    "car",
    "wall",
    "picture",
    "shows",
    "some",
    "door",
    "quiet",
    "small",
    "open",
    "corner",
)


def planted_pair(rng: random.Random, label: str) -> dict[str, Any]:
    """One pair whose class shows in the image (a red or blue square) or in the text (a keyword), never both."""
    evidence = rng.choice(("image", "text"))
    image, (x0, y0, x1, y1) = planted_squares_image(rng, PLANTED_PAIR_SQUARES[label])
    mask = np.zeros((image.height, image.width), dtype=bool)
    if evidence == "image":
        mask[y0:y1, x0:x1] = True
    else:
        # The generator always plants a square: a clutter colour makes it one more neutral shape.
        ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), fill=rng.choice(CLUTTER_COLOURS))
    words = rng.choices(NEUTRAL_WORDS, k=rng.randint(6, 10))
    keyword = rng.choice(PLANTED_PAIR_KEYWORDS[label]) if evidence == "text" else ""
    if keyword:
        words.insert(rng.randint(0, len(words)), keyword)
    return {
        "image": png_bytes(image),
        "text": " ".join(words),
        "label": label,
        "mask": mask_cell(mask),
        "evidence": evidence,
        "keyword": keyword,
    }


def planted_pair_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    rng = random.Random(PLANTED_PAIRS_SEED)
    labels = sorted(PLANTED_PAIR_SQUARES)
    for index in range(PLANTED_PAIRS_ROWS):
        yield planted_pair(rng, labels[index % len(labels)])


SHAPES_CAPTIONS = BuiltinPairDataset(
    key="shapes-captions",
    kind=CONTRASTIVE,
    title=f"Shapes with captions (synthetic, {SHAPES_ROWS:,} pairs, 12 colour-shape classes)",
    description=(
        f"Generated {SHAPES_SIZE}x{SHAPES_SIZE} images of one red, green, blue or yellow circle, square or triangle in a "
        'corner, captioned in varied phrasing ("a red circle in the top left"); each keeps the shape\'s mask — a known '
        "answer for cross-modal explanations. Labels (colour and shape) serve zero-shot prompts."
    ),
    source=f"generated in code (core/image_text/shapes.py, seed {SHAPES_SEED})",
    records=shapes_caption_records,
    size=SHAPES_ROWS,
    prompt_template="a {label}",
    extras=("mask",),
)
FASHION_CAPTIONS = BuiltinPairDataset(
    key="fashion-mnist-captions",
    kind=CONTRASTIVE,
    title=f"Fashion-MNIST with captions ({FASHION_PER_CLASS * len(FASHION_MNIST_LABELS):,} pairs, 10 classes)",
    description=(
        f"{FASHION_PER_CLASS} seeded Fashion-MNIST training images per class (28x28 greyscale clothes and shoes), each "
        'with a caption from per-class phrases and varied templates ("product shot: an ankle boot"), so captions are '
        "more than the class name."
    ),
    source=f"Debian package dataset-fashion-mnist ({FASHION_MNIST_DIR}), captions generated in code; hub: {FASHION_MNIST_HUB_ID}",
    records=fashion_caption_records,
    size=FASHION_PER_CLASS * len(FASHION_MNIST_LABELS),
    prompt_template=DEFAULT_PROMPT,
)
PLANTED_PAIRS = BuiltinPairDataset(
    key="planted-pairs",
    kind=FUSION,
    title=f"Planted pairs (synthetic, {PLANTED_PAIRS_ROWS:,} image-text pairs, warm / cold)",
    description=(
        "Each pair carries its class in exactly one modality: a small red (warm) or blue (cold) square among grey and "
        "green clutter with neutral words, or clutter only with one planted keyword (sunny, icy …) among neutral words. "
        "Each row keeps which modality holds the evidence, the square's mask and the keyword — a known answer for "
        "checking fusion explanations."
    ),
    source=f"generated in code (core/image_text/builtin.py, seed {PLANTED_PAIRS_SEED})",
    records=planted_pair_records,
    size=PLANTED_PAIRS_ROWS,
    prompt_template="a {label} scene",
    extras=("mask", "evidence", "keyword"),
)
BUILTIN_PAIR_DATASETS: dict[str, BuiltinPairDataset] = {
    dataset.key: dataset for dataset in (SHAPES_CAPTIONS, FASHION_CAPTIONS, PLANTED_PAIRS)
}
