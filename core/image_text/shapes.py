"""A synthetic image-caption set with known answers: coloured shapes at named positions.

Each image holds one shape (circle, square or triangle) of one colour in one of four corners, on
a plain background with faint noise; its caption names all three ("a red circle in the top left")
in varied phrasing, and its mask marks the shape's pixels, the ground truth a cross-modal
attribution should point at. Deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
TEMPLATES = (
    "a {colour} {shape} in the {position}",
    "a {shape} coloured {colour}, {position}",
    "{position}: a {colour} {shape}",
    "there is a {colour} {shape} in the {position} corner",
)


@dataclass(frozen=True)
class ShapeExample:
    image: Image.Image
    caption: str
    mask: np.ndarray  # (size, size) bool: the shape's pixels
    colour: str
    shape: str
    position: str


def draw_example(rng: random.Random, size: int = 64) -> ShapeExample:
    colour, shape, position = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(POSITIONS))
    background = np.full((size, size, 3), 235, dtype=np.int16)
    noise = np.array([[rng.randint(-6, 6) for _ in range(size)] for _ in range(size)], dtype=np.int16)
    image = Image.fromarray(np.clip(background + noise[..., None], 0, 255).astype(np.uint8))
    column, row = POSITIONS[position]
    half = size // 2
    extent = rng.randint(size // 5, size // 3)
    left = column * half + rng.randint(2, half - extent - 2)
    top = row * half + rng.randint(2, half - extent - 2)
    box = (left, top, left + extent, top + extent)
    mask_image = Image.new("L", (size, size), 0)
    for canvas, fill in ((ImageDraw.Draw(image), COLOURS[colour]), (ImageDraw.Draw(mask_image), 255)):
        if shape == "circle":
            canvas.ellipse(box, fill=fill)
        elif shape == "square":
            canvas.rectangle(box, fill=fill)
        else:
            canvas.polygon([(left + extent / 2, top), (left, top + extent), (left + extent, top + extent)], fill=fill)
    caption = rng.choice(TEMPLATES).format(colour=colour, shape=shape, position=position)
    return ShapeExample(image, caption, np.asarray(mask_image) > 0, colour, shape, position)


def shapes_examples(count: int = 600, seed: int = 0, size: int = 64) -> list[ShapeExample]:
    rng = random.Random(seed)
    return [draw_example(rng, size) for _ in range(count)]
