"""Image datasets: four built-ins and uploads, stored once as Arrow, split like the text datasets.

Every dataset is one Arrow file of rows (image, label, row[, bbox]) read through the `datasets`
library, memory-mapped rather than held in memory: built-ins under `cache/images/<key>/` (made on
first use), uploads under `datasets/<name>/` beside a `spec.yaml` that `core.data`'s registry lists
with task "image_classification". Images decode as RGB (greyscale, palette and RGBA are converted).

Splits reuse `core.data.splits.make_splits` on a (row id, label) table, so images follow exactly the
text rules: stratified and seeded, at least two examples per class, an optional stratified
`max_rows` subsample, and a dataset's own train/test split kept (Fashion-MNIST's) with validation
carved out of train. A split is a `datasets.Dataset` selected from the stored file by row.

Uploads (`register_image_dataset`) are a zip of class folders (cat/1.jpg, dog/2.png), or a zip of
images with a CSV of `path,label`. The zip is read in memory and never extracted: `__MACOSX`,
hidden files and non-image files are skipped; paths with `..` or a leading `/`, a zip whose
unpacked size is far beyond its packed size, an empty or undecodable image, a CSV path missing
from the zip, or a single class are refused with a sentence, and nothing is written until every
image has been read. A run config may name the same files by path instead ("images.zip", or
"labels.csv + images.zip"): `image_files_key` reads them with the same checks and stores them once
in the cache under a key made from their checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

from core.assets import no_progress, PipAsset, prepare, Progress, sha256_of
from core.data.info import DatasetInfo
from core.data.registry import builtin_dataset_names, max_upload_bytes, read_named_file
from core.data.splits import SPLIT_NAMES, make_splits
from core.errors import UserError
from core.workspace import cache_dir, datasets_dir, safe_name

IMAGE_CLASSIFICATION = "image_classification"
DATA_FILE = "images.arrow"
META_FILE = "meta.json"
SPEC_FILE = "spec.yaml"  # the same file core.data.registry reads
STORE_VERSION = 1  # bump when a built-in's stored form changes, so old caches are rebuilt
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KEPT_FORMATS = ("JPEG", "PNG", "WEBP")  # stored as uploaded when already RGB; anything else becomes PNG
JUNK_NAMES = {"thumbs.db", "desktop.ini"}
MAX_PIXELS = 40_000_000  # one image above this many pixels is refused (decompression bomb)
MAX_UNPACKED_ENV = "WORKBENCH_MAX_UNPACKED_MB"
DEFAULT_MAX_UNPACKED_MB = 1024.0
# Photos barely compress; a zip that unpacks to over this many times its size is refused once it is big.
MAX_PACKING_RATIO = 100
RATIO_CHECK_FROM = 64 * 2**20
WRITE_BATCH = 500
FILES_FOLDER = "files"  # cache/images/files/<key>/: image files a run config names by path
FILE_KEY_PREFIX = "file-"  # such a key is "file-" and 16 hex digits of the files' checksum


# ---------------------------------------------------------------------------------------------
# The stored form and the splits


@dataclass
class ImageSplits:
    """Train/validation/test of an image dataset; class index i means `label_names[i]`.

    Each split is a `datasets.Dataset` whose rows give `image` (a PIL image, RGB), `label` (str),
    `row` (the row in the stored file; `reference(row)` names it for `open_image`) and, for
    planted-squares, `bbox` ([x0, y0, x1, y1], pixels, end exclusive).
    """

    train: Any
    validation: Any
    test: Any
    label_names: list[str]
    source: str
    dataset: str

    def split(self, name: str):
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLIT_NAMES}

    def frame(self, name: str) -> pd.DataFrame:
        """The split's rows without pixels: image (a reference for `open_image`), label, row[, bbox]."""
        part = self.split(name)
        columns = [column for column in part.column_names if column != "image"]
        frame = part.select_columns(columns).to_pandas()
        frame.insert(0, "image", [reference(self.dataset, row) for row in frame["row"]])
        return frame

    def class_balance(self) -> pd.DataFrame:
        """Images per (split, label), zero counts kept so a missing class shows as a gap."""
        parts = [self.split(name).select_columns(["label"]).to_pandas().assign(split=name) for name in SPLIT_NAMES]
        counts = pd.concat(parts).groupby(["split", "label"]).size()
        full = pd.MultiIndex.from_product([list(SPLIT_NAMES), self.label_names], names=["split", "label"])
        return counts.reindex(full, fill_value=0).rename("count").reset_index()

    def examples_per_class(self, per_class: int, split: str = "train") -> dict[str, list[str]]:
        """References of the first `per_class` images of each class in `split`: the Data page's thumbnails."""
        chosen: dict[str, list[str]] = {name: [] for name in self.label_names}
        part = self.split(split)
        for label, row in zip(part["label"], part["row"]):
            if len(chosen[label]) < per_class:
                chosen[label].append(reference(self.dataset, row))
        return chosen

    def image_sizes(self, sample: int) -> dict[str, int]:
        """How many of the first `sample` images (train first) have each "width×height", most common first."""
        counts: dict[str, int] = {}
        left = sample
        for name in SPLIT_NAMES:
            part = self.split(name)
            for image in part.select(range(min(len(part), left)))["image"]:
                size = f"{image.width}×{image.height}"
                counts[size] = counts.get(size, 0) + 1
            left -= min(len(part), left)
        return dict(sorted(counts.items(), key=lambda item: -item[1]))


def reference(dataset: str, row: int) -> str:
    """How a prediction names its image: '<dataset>#<row>'; `open_image` turns it back into the image."""
    return f"{dataset}#{int(row)}"


def open_image(ref: str, progress: Progress = no_progress) -> Image.Image:
    """The RGB image a reference from `reference()` (or a predictions frame's image column) names."""
    return open_record(ref, progress)["image"]


def open_record(ref: str, progress: Progress = no_progress) -> dict[str, Any]:
    """The stored row a reference names: image, label, row (and bbox for planted-squares)."""
    dataset, _, row = ref.rpartition("#")
    if not dataset or not row.isdigit():
        raise UserError(f"{ref!r} does not name an image of a dataset; references look like 'digits#12'.")
    table = stored_table(dataset, progress)
    if int(row) >= len(table):
        raise UserError(f"The image dataset {dataset!r} has {len(table):,} images, so {ref!r} names none; "
                        "the dataset may have been uploaded again since the run.")
    return table[int(row)]


def load_image_splits(
    dataset: str,
    *,
    seed: int = 42,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    progress: Progress = no_progress,
) -> ImageSplits:
    """Stratified, seeded splits of a built-in or registered image dataset, or of image files named by path."""
    dataset = image_dataset_key(dataset, progress)
    table = stored_table(dataset, progress)
    meta = read_meta(dataset)
    labels = table.data.column("label").to_pylist()
    frame = pd.DataFrame({"text": [str(row) for row in range(len(labels))], "label": labels})
    if meta.get("official_split"):
        frame["split"] = table.data.column("split").to_pylist()
    where = f"the image dataset {dataset!r}"
    splits = make_splits(frame, where=where, source=meta["source"], seed=seed, validation_fraction=validation_fraction,
                         test_fraction=test_fraction, max_rows=max_rows)
    columns = [column for column in table.column_names if column != "split"]
    parts = {name: table.select(splits.split(name)["text"].astype(int).tolist()).select_columns(columns) for name in SPLIT_NAMES}
    return ImageSplits(label_names=splits.label_names, source=meta["source"], dataset=dataset, **parts)


def stored_table(dataset: str, progress: Progress = no_progress):
    """The whole stored dataset as a memory-mapped `datasets.Dataset` (built on first use for a built-in)."""
    from datasets import Dataset

    return Dataset.from_file(str(stored_folder(dataset, progress) / DATA_FILE))


def stored_folder(dataset: str, progress: Progress = no_progress) -> Path:
    """The folder of a built-in, registered or stored-file key (`image_dataset_key` turns file paths into one)."""
    if dataset in BUILTIN_IMAGE_DATASETS:
        return BUILTIN_IMAGE_DATASETS[dataset].folder(progress)
    if is_registered_image_dataset(dataset):
        return datasets_dir() / dataset
    if _is_stored_files(dataset):
        return cache_dir() / "images" / FILES_FOLDER / dataset
    raise _no_such_dataset(dataset)


def image_dataset_key(dataset: str, progress: Progress = no_progress) -> str:
    """The stored dataset `dataset` means: itself when it is a built-in, registered or stored-file key (these come
    first, so a dataset registered as "pets.zip" is never taken for a path), else the key of the files it names."""
    if dataset in BUILTIN_IMAGE_DATASETS or is_registered_image_dataset(dataset) or _is_stored_files(dataset):
        return dataset
    key = image_files_key(dataset, progress)
    if key is None:
        raise _no_such_dataset(dataset)
    return key


def _no_such_dataset(dataset: str) -> UserError:
    known = ", ".join(info.key for info in list_image_datasets())
    return UserError(f"There is no image dataset called {dataset!r}; choose one of {known}, give the path of a zip of class "
                     "folders (or 'labels.csv + images.zip'), or upload a zip of images on the Data page.")


def read_meta(dataset: str) -> dict[str, Any]:
    path = stored_folder(dataset) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"The description {path} of the image dataset {dataset!r} is damaged ({type(error).__name__}); "
                        "delete that folder and load or upload the dataset again.") from None


def image_features(with_bbox: bool = False, with_split: bool = False):
    from datasets import Features, Image as ImageFeature, Sequence, Value

    columns = {"image": ImageFeature(mode="RGB"), "label": Value("string"), "row": Value("int64")}
    if with_bbox:
        columns["bbox"] = Sequence(Value("int32"), length=4)
    if with_split:
        columns["split"] = Value("string")
    return Features(columns)


def write_table(target: Path, records: Iterable[dict[str, Any]], features, meta: dict[str, Any], progress: Progress = no_progress,
                total: int | None = None) -> int:
    """Write records (image as PNG/JPEG bytes, label, …) to `target/images.arrow` plus meta.json; returns the row count.

    The rows stream to disk in batches; `target` must not exist yet or be an empty staging folder.
    """
    from datasets.arrow_writer import ArrowWriter

    target.mkdir(parents=True, exist_ok=True)
    writer = ArrowWriter(features=features, path=str(target / DATA_FILE))
    rows, batch = 0, []

    def flush():
        writer.write_batch({name: [record[name] for record in batch] for name in features})
        batch.clear()

    try:
        for record in records:
            record = dict(record, row=rows, image={"bytes": record["image"], "path": None})
            batch.append(record)
            rows += 1
            if len(batch) >= WRITE_BATCH:
                flush()
                if total:
                    progress(min(0.95, rows / total), f"Stored {rows:,} of {total:,} images")
        if batch:
            flush()
        writer.finalize()
    finally:
        writer.close()
    (target / META_FILE).write_text(json.dumps({**meta, "rows": rows, "store_version": STORE_VERSION}, indent=2), encoding="utf-8")
    return rows


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Built-in datasets


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
        return DatasetInfo(key=self.key, title=self.title, task=IMAGE_CLASSIFICATION, source=self.source,
                           description=self.description, builtin=True)

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
            write_table(staging, self.records(progress), image_features(self.with_bbox, self.official_split),
                        {"key": self.key, "source": self.source, "official_split": self.official_split, **self.extra_meta},
                        progress, total=self.size)
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


def fashion_mnist_records(progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    """The 70,000 images in the official order: 60,000 train, then 10,000 test."""
    folder = FASHION_MNIST_DIR
    missing = [name for name in FASHION_MNIST_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"Fashion-MNIST is not installed on this machine ({folder} lacks {missing[0]}); install it as root with "
            "`apt-get update && apt-get install -y dataset-fashion-mnist`, or choose another dataset."
        )
    for name, expected in FASHION_MNIST_FILES.items():
        if sha256_of(folder / name) != expected:
            raise UserError(f"The Fashion-MNIST file {folder / name} failed its checksum; reinstall it with "
                            "`apt-get install --reinstall dataset-fashion-mnist`.")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        for pixels, label in zip(images, labels):
            # Stored greyscale (a third of the bytes); the image feature decodes it as RGB.
            yield {"image": png_bytes(Image.fromarray(pixels, mode="L")), "label": FASHION_MNIST_LABELS[int(label)], "split": split}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dimension sizes (big-endian int32), then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dimensions = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dimensions))
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
        raise UserError(f"The textile images in {folder} are incomplete or changed ({len(files)} files); delete that folder "
                        "and load the dataset again.")
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


def planted_squares_image(rng: random.Random, label: str, size: int = PLANTED_SQUARES_SIZE,
                          side: int = PLANTED_SQUARE_SIDE) -> tuple[Image.Image, list[int]]:
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


def planted_squares_records(progress: Progress = no_progress, rows: int = PLANTED_SQUARES_ROWS,
                            seed: int = PLANTED_SQUARES_SEED) -> Iterator[dict[str, Any]]:
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
    source=f"generated in code (core/images/datasets.py, seed {PLANTED_SQUARES_SEED})",
    records=planted_squares_records,
    size=PLANTED_SQUARES_ROWS,
    with_bbox=True,
)

BUILTIN_IMAGE_DATASETS: dict[str, BuiltinImageDataset] = {
    dataset.key: dataset for dataset in (PLANTED_SQUARES, DIGITS, TEXTILE, FASHION_MNIST)
}


def list_image_datasets() -> list[DatasetInfo]:
    """Built-in image datasets first, then the image datasets registered in this workspace."""
    registered = []
    for folder in sorted(datasets_dir().iterdir()):
        if is_registered_image_dataset(folder.name):
            registered.append(_registered_info(folder.name))
    return [dataset.info() for dataset in BUILTIN_IMAGE_DATASETS.values()] + registered


def is_image_dataset(dataset: str) -> bool:
    """A built-in, registered or stored-file key, or image files named by path — which are read and stored here, so a
    path to a missing file or a broken zip is refused with the upload's own sentence rather than called unknown."""
    if dataset in BUILTIN_IMAGE_DATASETS or is_registered_image_dataset(dataset) or _is_stored_files(dataset):
        return True
    return image_files_key(dataset) is not None


# ---------------------------------------------------------------------------------------------
# Uploads


def is_registered_image_dataset(name: str) -> bool:
    folder = datasets_dir() / name
    return (name == safe_name(name, fallback="") and (folder / SPEC_FILE).is_file() and (folder / META_FILE).is_file()
            and (folder / DATA_FILE).is_file())


def _registered_info(name: str) -> DatasetInfo:
    folder = datasets_dir() / name
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        description = (f"{meta['rows']:,} images in {len(meta['label_names'])} classes "
                       f"({', '.join(meta['label_names'][:6])}{'…' if len(meta['label_names']) > 6 else ''}) uploaded from "
                       f"{meta['original_filename']}.")
        source = meta["source"]
    except (OSError, ValueError, KeyError) as error:
        description, source = f"The description of this dataset is damaged ({type(error).__name__}); delete {folder} and upload it again.", str(folder)
    return DatasetInfo(key=name, title=name, task=IMAGE_CLASSIFICATION, source=source, description=description, builtin=False)


def max_unpacked_bytes() -> int:
    raw = os.environ.get(MAX_UNPACKED_ENV, "")
    try:
        megabytes = float(raw) if raw.strip() else DEFAULT_MAX_UNPACKED_MB
    except ValueError:
        raise UserError(f"{MAX_UNPACKED_ENV} is set to {raw!r}, which is not a number; set it to a size in MB such as 1024.") from None
    return int(megabytes * 2**20)


def register_image_dataset(name: str, filename: str, data: bytes, *, csv_filename: str | None = None,
                           csv_data: bytes | None = None, progress: Progress = no_progress) -> DatasetInfo:
    """Check an uploaded zip of images (class folders, or with a `path,label` CSV) and store it as datasets/<name>/.

    Every image is decoded before anything is written; the folder appears (renamed from a hidden
    staging folder inside the workspace) only once its spec is complete.
    """
    _check_sizes(((filename, len(data)), (csv_filename or "the CSV", len(csv_data or b""))))
    key = _new_key(name)
    upload = _checked_upload(filename, data, csv_filename, csv_data)
    try:
        _write_upload(datasets_dir() / key, upload, f"uploaded {upload.how} (workspace/datasets/{key}/{DATA_FILE})", progress)
    except FileExistsError:
        raise UserError(f"A dataset named {key!r} already exists; choose another name.") from None
    return _registered_info(key)


def image_files_key(dataset: str, progress: Progress = no_progress) -> str | None:
    """The key of the image files `dataset` names by path — "images.zip" (one folder per class) or
    "labels.csv + images.zip" — or None when it names no such files.

    The files are read exactly as a Data page upload (the same checks, sentences and limits) and stored
    once under workspace/cache/images/files/<key>/, the key made from their checksum: a run config can
    name them by path, and a run's image references stay valid even if the files change later.
    """
    named = named_files(dataset)
    if named is None:
        return None
    archive, table = named
    data = read_named_file(archive)
    csv_data = read_named_file(table) if table is not None else None
    key = FILE_KEY_PREFIX + _checksum(data, *([] if csv_data is None else [csv_data]))  # a zip alone differs from zip + empty CSV
    target = cache_dir() / "images" / FILES_FOLDER / key
    if not (target / META_FILE).is_file():
        _check_sizes(((archive.name, len(data)), (table.name if table else "the CSV", len(csv_data or b""))))
        upload = _checked_upload(archive.name, data, table and table.name, csv_data)
        how = f"{archive.resolve()}" + (f" with labels from {table.resolve()}" if table else " (one folder per class)")
        try:
            _write_upload(target, upload, f"file {how} (stored as workspace/cache/images/{FILES_FOLDER}/{key})", progress)
        except FileExistsError:
            pass  # another process stored the same files meanwhile: theirs is the same dataset
    return key


def named_files(dataset: str) -> tuple[Path, Path | None] | None:
    """(zip, CSV or None) when `dataset` names a zip by path, alone or with a CSV as "labels.csv + images.zip"
    (either order); None otherwise. A path that exists as it is is never split at a "+"."""
    whole = dataset.strip()
    parts = [whole] if "+" not in whole or Path(whole).expanduser().is_file() else [part.strip() for part in whole.split("+")]
    zips = [part for part in parts if part.lower().endswith(".zip")]
    tables = [part for part in parts if part.lower().endswith(".csv")]
    if len(zips) != 1 or len(tables) > 1 or len(zips) + len(tables) != len(parts):
        return None
    return Path(zips[0]).expanduser(), Path(tables[0]).expanduser() if tables else None


def _checksum(*contents: bytes) -> str:
    """16 hex digits of SHA-256 over the contents' own digests (so no two splits of the bytes collide)."""
    return hashlib.sha256(b"".join(hashlib.sha256(content).digest() for content in contents)).hexdigest()[:16]


def _is_stored_files(dataset: str) -> bool:
    return (dataset.startswith(FILE_KEY_PREFIX) and dataset == safe_name(dataset, fallback="")
            and (cache_dir() / "images" / FILES_FOLDER / dataset / META_FILE).is_file())


def _check_sizes(files: Iterable[tuple[str, int]]) -> None:
    limit = max_upload_bytes()
    for label, size in files:
        if size > limit:
            raise UserError(f"{Path(label).name} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB upload limit; "
                            "upload a smaller sample or raise WORKBENCH_MAX_UPLOAD_MB.")


@dataclass(frozen=True)
class _Upload:
    """A zip of images (with its labels CSV, if any) that passed every check, decoded and ready to store."""

    records: list[dict[str, Any]]  # {"image": bytes as stored, "label": str}
    label_names: list[str]
    original: str  # the zip's file name
    csv_name: str | None
    how: str  # for the source line: "pets.zip (one folder per class)" or "images.zip with labels from labels.csv"


def _checked_upload(filename: str, data: bytes, csv_filename: str | None, csv_data: bytes | None) -> _Upload:
    original = Path(filename.replace("\\", "/")).name
    archive = _open_zip(data, original)
    members = _usable_members(archive, original)
    csv_name = None
    if csv_data is not None:
        csv_name = Path((csv_filename or "labels.csv").replace("\\", "/")).name
        entries = _entries_from_csv(csv_data, csv_name, members, original)
        how = f"{original} with labels from {csv_name}"
    else:
        entries = _entries_from_folders(members, original)
        how = f"{original} (one folder per class)"
    labels = [label for _, label in entries]
    _check_classes(labels, original)
    # The checks load_image_splits applies (every split gets rows), so a stored dataset always loads.
    make_splits(pd.DataFrame({"text": [str(i) for i in range(len(entries))], "label": labels}),
                where=f"the upload {original}", source=original)
    records = [{"image": _read_image(archive, members[member], member, original), "label": label} for member, label in entries]
    return _Upload(records=records, label_names=sorted(set(labels)), original=original, csv_name=csv_name, how=how)


def _write_upload(target: Path, upload: _Upload, source: str, progress: Progress) -> None:
    """Store a checked upload as `target`/ (images.arrow, meta.json, spec.yaml), written in a hidden staging folder
    beside it and renamed into place; FileExistsError when `target` exists by then."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the stored dataset is an ordinary folder
    try:
        rows = write_table(staging, upload.records, image_features(), {
            "key": target.name, "source": source, "label_names": upload.label_names, "original_filename": upload.original,
            "csv_filename": upload.csv_name, "official_split": False,
        }, progress, total=len(upload.records))
        spec = {  # the fields core.data.registry.DatasetSpec reads, so the Data page lists it with its task
            "name": target.name, "file": DATA_FILE, "text_column": "image", "label_column": "label",
            "original_filename": upload.original, "rows": rows,
            "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": IMAGE_CLASSIFICATION,
        }
        (staging / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:
            raise FileExistsError(target) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_key(name: str) -> str:
    key = safe_name(name.strip(), fallback="")
    if not key:
        raise UserError("Give the dataset a name made of letters, digits, dots, dashes or underscores.")
    if key in builtin_dataset_names():
        raise UserError(f"{key!r} is the name of a built-in dataset; choose another name, such as {key + '-2'!r}.")
    if (datasets_dir() / key).exists():
        raise UserError(f"A dataset named {key!r} already exists; choose another name, such as {key + '-2'!r}.")
    return key


def _open_zip(data: bytes, original: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UserError(f"{original} is not a zip file; zip the class folders (or the images for the CSV) and upload the .zip.") from None
    infos = archive.infolist()
    unpacked = sum(info.file_size for info in infos)
    cap = max_unpacked_bytes()
    if unpacked > cap or (unpacked > RATIO_CHECK_FROM and unpacked > MAX_PACKING_RATIO * max(1, len(data))):
        raise UserError(
            f"{original} would unpack to {unpacked / 2**20:,.0f} MB from {len(data) / 2**20:,.1f} MB packed, which is "
            f"over the {cap / 2**20:,.0f} MB limit or more than {MAX_PACKING_RATIO} times its size (a zip bomb?); "
            f"upload fewer or smaller images, or raise {MAX_UNPACKED_ENV}."
        )
    return archive


def _usable_members(archive: zipfile.ZipFile, original: str) -> dict[str, zipfile.ZipInfo]:
    """Image members by normalised path, junk skipped; an unsafe path refuses the whole zip."""
    members = {}
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if name.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise UserError(f"{original} contains the unsafe path {info.filename!r} (it points outside the zip's folder); "
                            "zip the folders again with relative paths.")
        if info.is_dir() or not path.parts:
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts) or path.name.lower() in JUNK_NAMES:
            continue  # macOS resource forks, .DS_Store, hidden files, Windows thumbnails
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # a README or the labels CSV packed alongside
        members[str(path)] = info
    if not members:
        raise UserError(f"{original} holds no images ({', '.join(IMAGE_SUFFIXES)}); put the images in it, one folder per class.")
    return members


def _common_root(names: Iterable[str]) -> PurePosixPath:
    """The folder every name sits in, when the whole zip is wrapped in folders (my-data/cat/1.jpg -> my-data)."""
    paths = [PurePosixPath(name) for name in names]
    root: tuple[str, ...] = ()
    while all(len(path.parts) > len(root) + 2 for path in paths):
        candidate = paths[0].parts[len(root)]
        if any(path.parts[len(root)] != candidate for path in paths):
            break
        root = root + (candidate,)
    return PurePosixPath(*root) if root else PurePosixPath()


def _entries_from_folders(members: dict[str, zipfile.ZipInfo], original: str) -> list[tuple[str, str]]:
    root = _common_root(members)
    entries = []
    for name in sorted(members):
        parts = PurePosixPath(name).relative_to(root).parts
        if len(parts) >= 2:
            entries.append((name, parts[0]))
    if not entries:
        raise UserError(
            f"{original} has images but no class folders; put each class's images in a folder named after the class "
            "(cat/1.jpg, dog/2.jpg) and zip those folders, or upload a CSV of path,label together with the zip."
        )
    return entries


def _entries_from_csv(csv_data: bytes, csv_name: str, members: dict[str, zipfile.ZipInfo], original: str) -> list[tuple[str, str]]:
    try:
        table = pd.read_csv(io.BytesIO(csv_data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserError(f"{csv_name} could not be read as a CSV ({error}); save it as UTF-8 CSV with a header row path,label.") from None
    columns = {column.strip().lower(): column for column in table.columns}
    if "path" not in columns or "label" not in columns:
        raise UserError(f"{csv_name} needs the columns path and label (it has {', '.join(map(str, table.columns)) or 'none'}); "
                        "name the header row path,label.")
    root = _common_root(members)
    by_name = dict((name, name) for name in members)
    by_name.update((str(PurePosixPath(name).relative_to(root)), name) for name in members)
    entries, missing = [], []
    for number, (path, label) in enumerate(zip(table[columns["path"]], table[columns["label"]]), start=2):
        wanted = path.strip().replace("\\", "/").removeprefix("./")
        if not label.strip():
            raise UserError(f"Line {number} of {csv_name} ({path!r}) has no label; fill it in or delete the line.")
        if wanted not in by_name:
            missing.append(path)
            continue
        entries.append((by_name[wanted], label.strip()))
    if missing:
        raise UserError(
            f"{len(missing)} paths in {csv_name} are not images in {original}, the first {missing[0]!r}; "
            "write each path as it appears inside the zip (folder/name.jpg)."
        )
    if not entries:
        raise UserError(f"{csv_name} lists no images; add one line per image: path,label.")
    return entries


def _check_classes(labels: list[str], original: str) -> None:
    counts = pd.Series(labels).value_counts()
    if len(counts) < 2:
        raise UserError(f"Every image in {original} has the class {counts.index[0]!r}; a classifier needs at least two classes — "
                        "add a folder (or CSV labels) for another class.")
    lonely = sorted(counts[counts < 2].index)
    if lonely:
        raise UserError(f"The class {lonely[0]!r} in {original} has only one image; add at least one more per class "
                        "so every class can appear in both training and evaluation.")


def _read_image(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, original: str) -> bytes:
    """The image's bytes as stored: kept when already RGB JPEG/PNG/WebP, else converted to RGB PNG."""
    if info.file_size == 0:
        raise UserError(f"{member} in {original} is an empty file (0 bytes); remove it or replace it with the real image.")
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UserError(f"{member} in {original} cannot be unpacked ({error}); zip the images again.") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise UserError(f"{member} in {original} is {image.width}x{image.height} pixels, over the "
                                f"{MAX_PIXELS // 1_000_000} megapixel limit; downscale it first.")
            image_format = image.format
            image.load()
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UserError(f"{member} in {original} is not a readable image ({type(error).__name__}: {error}); it may be "
                        "truncated or corrupt — replace or remove it.") from None
    if image.mode == "RGB" and image_format in KEPT_FORMATS and getattr(image, "n_frames", 1) == 1:
        return data
    return png_bytes(to_rgb(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: transparency is laid on white (a plain convert would show hidden pixels, often black)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        return Image.fromarray((array / top * 255).astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")
