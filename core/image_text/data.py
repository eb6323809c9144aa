"""Image-text pair datasets: captions for CLIP-style alignment, labelled pairs for fusion classification.

Two kinds, told apart by `DatasetInfo.task`: CONTRASTIVE rows are (image, caption[, label for
zero-shot prompts]); FUSION rows are (image, text, label). Every dataset is one Arrow file written
by `core.images.datasets.write_table`, read memory-mapped through the `datasets` library:
built-ins under `cache/image_text/<key>/` (made on first use), uploads under
`datasets/<name>/table/` beside a `spec.yaml` whose task is the kind. The table sits one folder
down so the image-classification listing, which looks for `images.arrow` beside the spec, does not
take a pair dataset for one of its own.

Splits are 80/10/10 and seeded: stratified by label through `core.data.splits.make_splits` when
the dataset has labels, a seeded random split otherwise. Uploads are a zip of images plus a CSV
naming each image's caption (and label); every row and image is checked, exact duplicate pairs are
dropped and counted, and nothing is written until all of it passed. A run config may name the same
files by path ("captions.csv + images.zip"): `pair_files_key` reads them with the same checks and
stores them once in the cache under a key made from their kind and checksum.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

from core.assets import Progress, no_progress
from core.data.info import DatasetInfo
from core.data.registry import is_registered, read_named_file, read_spec
from core.data.splits import (
    SPLIT_NAMES,
    _check_not_empty,
    _clean,
    _stratified_split,
    make_splits,
    stratified_sample,
)
from core.errors import UserError
from core.image_text.shapes import shapes_examples
from core.images.datasets import (
    CLUTTER_COLOURS,
    DATA_FILE,
    FASHION_MNIST_DIR,
    FASHION_MNIST_HUB_ID,
    FASHION_MNIST_LABELS,
    FILE_KEY_PREFIX,
    FILES_FOLDER,
    META_FILE,
    SPEC_FILE,
    STORE_VERSION,
    ImageSplits,
    _check_sizes,
    _checksum,
    _open_zip,
    _read_image,
    _usable_members,
    fashion_mnist_records,
    image_features,
    named_files,
    planted_squares_image,
    png_bytes,
    reference,
    write_table,
)
from core.images.datasets import _new_key as _new_image_key
from core.workspace import cache_dir, datasets_dir, safe_name

CONTRASTIVE = "image_text_contrastive"
FUSION = "image_text_fusion"
KIND_NAMES = {CONTRASTIVE: "caption dataset (for alignment)", FUSION: "labelled-pair dataset (for fusion)"}
# The CSV header each kind needs; a contrastive CSV may add a label column for zero-shot prompts.
REQUIRED_COLUMNS = {CONTRASTIVE: ("image", "caption"), FUSION: ("image", "text", "label")}
TABLE_FOLDER = "table"
PAIR_STORE_VERSION = 1  # bump when a built-in's records change, so old caches are rebuilt
VALIDATION_FRACTION = TEST_FRACTION = 0.1
MIN_PAIRS = 10
DEFAULT_PROMPT = "a photo of a {label}"


# ---------------------------------------------------------------------------------------------
# The splits


@dataclass
class PairSplits(ImageSplits):
    """Train/validation/test of a pair dataset, each a `datasets.Dataset`; `split`, `sizes` and
    `class_balance` are the image splits' own.

    Rows give `image` (PIL, RGB), `text` (str), `label` (str; "" when the dataset has none) and
    `row` (the stored row; `reference(dataset, row)` names it for `open_pair_record`); shapes and
    planted pairs add `mask` (PIL "L", 255 = the evidence's pixels), planted pairs `evidence` and
    `keyword`. `label_names` is [] for a dataset without labels.
    """

    prompt_template: str  # a zero-shot prompt with "{label}", e.g. "a photo of a {label}"

    def frame(self, name: str) -> pd.DataFrame:
        """The split without pixels: image (a reference for `open_pair_record`), text, label, row and any ground truth."""
        part = self.split(name)
        extras = [column for column in part.column_names if column not in ("image", "text", "label", "row", "mask")]
        frame = part.select_columns(["text", "label", "row", *extras]).to_pandas()
        frame.insert(0, "image", [reference(self.dataset, row) for row in frame["row"]])
        return frame


def load_pair_splits(dataset: str, *, kind: str, seed: int = 42, max_rows: int | None = None,
                     progress: Progress = no_progress) -> PairSplits:
    """Seeded 80/10/10 splits of a built-in or registered pair dataset of `kind`, or of pair files named by path."""
    _checked_kind(kind)
    dataset = pair_dataset_key(dataset, kind, progress)
    folder, found = _locate(dataset, progress)
    if found != kind:
        raise UserError(f"{dataset!r} is a {KIND_NAMES[found]}, not a {KIND_NAMES[kind]}; "
                        f"choose one of {', '.join(info.key for info in list_pair_datasets(kind))}.")
    table = _open_table(folder)
    meta = _read_meta(folder, dataset)
    labels = table.data.column("label").to_pylist()
    rows = split_rows(labels, where=f"the image-text dataset {dataset!r}", source=meta["source"], seed=seed, max_rows=max_rows)
    return PairSplits(label_names=sorted(set(labels) - {""}), prompt_template=meta["prompt_template"], source=meta["source"],
                      dataset=dataset, **{name: table.select(rows[name]) for name in SPLIT_NAMES})


def split_rows(labels: list[str], *, where: str, source: str, seed: int = 42, max_rows: int | None = None) -> dict[str, list[int]]:
    """Row numbers per split: stratified by label (make_splits' checks) when labelled, else a seeded random split."""
    frame = pd.DataFrame({"text": [str(row) for row in range(len(labels))], "label": labels})
    if any(labels):
        splits = make_splits(frame, where=where, source=source, seed=seed, validation_fraction=VALIDATION_FRACTION,
                             test_fraction=TEST_FRACTION, max_rows=max_rows)
        parts = {name: splits.split(name) for name in SPLIT_NAMES}
    else:
        # One shared (empty) label makes the per-class split a plain seeded shuffle with the same rounding.
        if max_rows is not None:
            frame = stratified_sample(frame, max_rows, seed, by=["label"])
        parts = _stratified_split(frame, seed, VALIDATION_FRACTION, TEST_FRACTION)
        _check_not_empty(parts, len(frame), where)
        parts = {name: _clean(part, seed) for name, part in parts.items()}
    return {name: part["text"].astype(int).tolist() for name, part in parts.items()}


def open_pair_record(ref: str) -> dict[str, Any]:
    """The stored pair a reference names: image, text, label, mask (bool array or None), plus evidence/keyword if kept."""
    dataset, _, row = ref.rpartition("#")
    if not dataset or not row.isdigit():
        raise UserError(f"{ref!r} does not name a pair of a dataset; references look like 'shapes-captions#12'.")
    table = _open_table(_locate(dataset)[0])
    if int(row) >= len(table):
        raise UserError(f"The image-text dataset {dataset!r} has {len(table):,} pairs, so {ref!r} names none; "
                        "the dataset may have been uploaded again since the run.")
    stored = table[int(row)]
    record = {"image": stored["image"], "text": stored["text"], "label": stored["label"],
              "mask": np.asarray(stored["mask"]) > 0 if stored.get("mask") is not None else None}
    return record | {name: stored[name] for name in ("evidence", "keyword") if name in stored}


def list_pair_datasets(kind: str) -> list[DatasetInfo]:
    """Built-in pair datasets of `kind` first, then the ones of that kind registered in this workspace."""
    _checked_kind(kind)
    builtins = [dataset.info() for dataset in BUILTIN_PAIR_DATASETS.values() if dataset.kind == kind]
    registered = [_registered_info(folder.name) for folder in sorted(datasets_dir().iterdir()) if _registered_kind(folder.name) == kind]
    return builtins + registered


def is_pair_dataset(key: str, kind: str) -> bool:
    """Whether `key` is a pair dataset of `kind`: built in, registered, or pair files named by path — which are read and
    stored here, so a path to a missing file or a broken zip is refused with the upload's own sentence."""
    builtin = BUILTIN_PAIR_DATASETS.get(key)
    if builtin is not None:
        return builtin.kind == kind
    found = _registered_kind(key) or _stored_files_kind(key)
    if found is not None:
        return found == kind
    return pair_files_key(key, kind) is not None


def pair_dataset_key(dataset: str, kind: str, progress: Progress = no_progress) -> str:
    """The stored dataset `dataset` means: itself when it is a built-in, registered or stored-file key (these come
    first, so a dataset registered as "shots.zip" is never taken for a path), else the key of the files it names."""
    if dataset in BUILTIN_PAIR_DATASETS or _registered_kind(dataset) or _stored_files_kind(dataset):
        return dataset
    return pair_files_key(dataset, kind, progress) or dataset  # an unknown name: _locate says so


def version_stamp(dataset: str) -> float:
    """When a registered dataset's table was written (0 for a built-in): lets a page's cache notice a re-upload."""
    meta = datasets_dir() / dataset / TABLE_FOLDER / META_FILE
    return meta.stat().st_mtime if dataset not in BUILTIN_PAIR_DATASETS and meta.is_file() else 0.0


def _checked_kind(kind: str) -> str:
    if kind not in KIND_NAMES:
        raise UserError(f"{kind!r} is not a kind of image-text dataset; use {CONTRASTIVE!r} or {FUSION!r}.")
    return kind


def _locate(dataset: str, progress: Progress = no_progress) -> tuple[Path, str]:
    """The folder holding the dataset's table (a built-in is stored on first use) and its kind."""
    if dataset in BUILTIN_PAIR_DATASETS:
        builtin = BUILTIN_PAIR_DATASETS[dataset]
        return builtin.folder(progress), builtin.kind
    kind = _registered_kind(dataset)
    if kind is not None:
        return datasets_dir() / dataset / TABLE_FOLDER, kind
    kind = _stored_files_kind(dataset)
    if kind is not None:
        return _files_folder() / dataset, kind
    known = ", ".join(info.key for each in KIND_NAMES for info in list_pair_datasets(each))
    raise UserError(f"There is no image-text dataset called {dataset!r}; choose one of {known}, give the paths of a CSV "
                    "and a zip of images as 'captions.csv + images.zip', or upload them on the Data page.")


def _open_table(folder: Path):
    from datasets import Dataset

    return Dataset.from_file(str(folder / DATA_FILE))


def _read_meta(folder: Path, dataset: str) -> dict[str, Any]:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"The description {folder / META_FILE} of the image-text dataset {dataset!r} is damaged "
                        f"({type(error).__name__}); delete that folder and load or upload the dataset again.") from None


def pair_features(extras: Iterable[str] = ()):
    """The image columns (image, label, row) plus text, and any of the ground-truth columns mask, evidence, keyword."""
    from datasets import Image as ImageFeature
    from datasets import Value

    features = image_features()
    features["text"] = Value("string")
    for name in extras:
        features[name] = ImageFeature(mode="L") if name == "mask" else Value("string")
    return features


def mask_cell(mask: np.ndarray) -> dict[str, Any]:
    """A boolean mask as the stored image cell write_table expects for columns other than `image`."""
    return {"bytes": png_bytes(Image.fromarray(mask.astype(np.uint8) * 255)), "path": None}


@contextmanager
def _staging(parent: Path, key: str) -> Iterator[Path]:
    """A hidden folder in `parent` for writing a dataset before it is renamed into place; removed whatever happens."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the stored dataset is an ordinary folder
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_current(folder: Path) -> bool:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("store_version") == STORE_VERSION and meta.get("pair_version") == PAIR_STORE_VERSION


# ---------------------------------------------------------------------------------------------
# Built-in datasets


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
        return DatasetInfo(key=self.key, title=self.title, task=self.kind, source=self.source,
                           description=self.description, builtin=True)

    def is_ready(self) -> bool:
        """Whether loading needs no generation or conversion (so a page can skip a progress bar)."""
        return _is_current(self._target())

    def folder(self, progress: Progress = no_progress) -> Path:
        """cache/image_text/<key>/, written on first use (staged beside it and renamed into place)."""
        target = self._target()
        if _is_current(target):
            return target
        progress(0.0, f"Preparing the image-text dataset {self.key}")
        with _staging(target.parent, self.key) as staging:
            meta = {"key": self.key, "kind": self.kind, "source": self.source, "prompt_template": self.prompt_template,
                    "pair_version": PAIR_STORE_VERSION}
            write_table(staging, self.records(progress), pair_features(self.extras), meta, progress, total=self.size)
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.rename(target)
            except OSError:
                if not _is_current(target):  # another process stored it first: use that one
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
        yield {"image": png_bytes(example.image), "text": example.caption, "label": f"{example.colour} {example.shape}",
               "mask": mask_cell(example.mask)}


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
    """FASHION_PER_CLASS seeded training images per class, each with a generated caption."""
    pool: dict[str, list[bytes]] = {label: [] for label in FASHION_MNIST_LABELS}
    for record in fashion_mnist_records(progress):
        if record["split"] != "train":
            break  # the official test images come last; the training pool is plenty
        pool[record["label"]].append(record["image"])
    rng = random.Random(FASHION_CAPTIONS_SEED)
    for label in FASHION_MNIST_LABELS:
        for image in rng.sample(pool[label], FASHION_PER_CLASS):
            yield {"image": image, "text": fashion_caption(rng, label), "label": label}


# Planted pairs: the class is in exactly one modality --------------------------------------------

PLANTED_PAIRS_ROWS = 800
PLANTED_PAIRS_SEED = 11
# Each class's evidence: the colour of the one square (planted_squares_image's classes) or a keyword.
PLANTED_PAIR_SQUARES = {"warm": "red square", "cold": "blue square"}
PLANTED_PAIR_KEYWORDS = {"warm": ("sunny", "scorching", "tropical"), "cold": ("icy", "frozen", "snowy")}
NEUTRAL_WORDS = ("the", "a", "street", "table", "window", "photo", "of", "with", "near", "old", "house", "road", "chair",
                 "people", "walk", "car", "wall", "picture", "shows", "some", "door", "quiet", "small", "open", "corner")


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
    return {"image": png_bytes(image), "text": " ".join(words), "label": label, "mask": mask_cell(mask),
            "evidence": evidence, "keyword": keyword}


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
        "corner, captioned in varied phrasing (\"a red circle in the top left\"); each keeps the shape's mask — a known "
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
        "with a caption from per-class phrases and varied templates (\"product shot: an ankle boot\"), so captions are "
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
    source=f"generated in code (core/image_text/data.py, seed {PLANTED_PAIRS_SEED})",
    records=planted_pair_records,
    size=PLANTED_PAIRS_ROWS,
    prompt_template="a {label} scene",
    extras=("mask", "evidence", "keyword"),
)
BUILTIN_PAIR_DATASETS: dict[str, BuiltinPairDataset] = {
    dataset.key: dataset for dataset in (SHAPES_CAPTIONS, FASHION_CAPTIONS, PLANTED_PAIRS)
}


# ---------------------------------------------------------------------------------------------
# Uploads


def register_pair_dataset(name: str, kind: str, zip_filename: str, zip_data: bytes, csv_filename: str, csv_data: bytes,
                          progress: Progress = no_progress) -> DatasetInfo:
    """Check a zip of images and a CSV of pairs fully, then store them as datasets/<name>/ (nothing is written before)."""
    _checked_kind(kind)
    _check_sizes(((zip_filename, len(zip_data)), (csv_filename, len(csv_data))))
    key = _new_image_key(name)  # the naming rules of every upload: sanitised, no built-in of any kind, not taken
    upload = _checked_pairs(kind, zip_filename, zip_data, csv_filename, csv_data)
    source = (f"uploaded {upload.meta['original_filename']} with pairs from {upload.meta['csv_filename']} "
              f"(workspace/datasets/{key}/{TABLE_FOLDER}/{DATA_FILE})")
    spec = {  # the fields core.data.registry.DatasetSpec reads, so the registry lists it under its task
        "name": key, "file": f"{TABLE_FOLDER}/{DATA_FILE}", "text_column": REQUIRED_COLUMNS[kind][1], "label_column": "label",
        "original_filename": upload.meta["original_filename"], "rows": len(upload.records),
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"), "task": kind,
    }
    with _staging(datasets_dir(), key) as staging:
        write_table(staging / TABLE_FOLDER, upload.records, pair_features(), {"key": key, "source": source, **upload.meta},
                    progress, total=len(upload.records))
        (staging / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        try:
            staging.rename(datasets_dir() / key)  # fails if another save claimed the name meanwhile
        except OSError:
            raise UserError(f"A dataset named {key!r} already exists; choose another name, such as {key + '-2'!r}.") from None
    return _registered_info(key)


def pair_files_key(dataset: str, kind: str, progress: Progress = no_progress) -> str | None:
    """The key of the pair files `dataset` names by path, "captions.csv + images.zip", or None when it names none.

    The files are read exactly as a Data page upload of `kind` (the same checks, sentences and limits) and
    stored once under workspace/cache/image_text/files/<key>/, the key made from the kind and the files'
    checksum, so a run config can name them by path and a run's pair references stay valid.
    """
    named = named_files(dataset)
    if named is None:
        return None
    archive, table = named
    header = ",".join(REQUIRED_COLUMNS[_checked_kind(kind)])
    if table is None:
        raise UserError(f"A zip alone is not an image-text dataset; name the CSV of pairs ({header}) with it, "
                        f"as 'pairs.csv + {archive.name}'.")
    zip_data, csv_data = read_named_file(archive), read_named_file(table)
    key = FILE_KEY_PREFIX + _checksum(kind.encode(), zip_data, csv_data)
    target = _files_folder() / key
    if not _is_current(target):
        _check_sizes(((archive.name, len(zip_data)), (table.name, len(csv_data))))
        upload = _checked_pairs(kind, archive.name, zip_data, table.name, csv_data)
        source = (f"file {archive.resolve()} with pairs from {table.resolve()} "
                  f"(stored as workspace/cache/image_text/{FILES_FOLDER}/{key})")
        meta = {"key": key, "source": source, "pair_version": PAIR_STORE_VERSION, **upload.meta}
        with _staging(target.parent, key) as staging:
            write_table(staging, upload.records, pair_features(), meta, progress, total=len(upload.records))
            try:
                staging.rename(target)
            except OSError:
                if not _is_current(target):  # else another process stored the same files meanwhile: the same dataset
                    raise
    return key


def _files_folder() -> Path:
    return cache_dir() / "image_text" / FILES_FOLDER


def _stored_files_kind(dataset: str) -> str | None:
    """The kind of the pair files stored from a path under the key `dataset`, else None."""
    folder = _files_folder() / dataset
    if not dataset.startswith(FILE_KEY_PREFIX) or dataset != safe_name(dataset, fallback="") or not _is_current(folder):
        return None
    return _read_meta(folder, dataset).get("kind")


@dataclass(frozen=True)
class _CheckedPairs:
    """A zip of images and a CSV of pairs that passed every check, decoded and ready to store."""

    records: list[dict[str, Any]]  # {"image": bytes as stored, "text": str, "label": str}
    meta: dict[str, Any]  # kind, labels, counts and file names for meta.json (the writer adds key and source)


def _checked_pairs(kind: str, zip_filename: str, zip_data: bytes, csv_filename: str, csv_data: bytes) -> _CheckedPairs:
    original, csv_name = (Path(filename.replace("\\", "/")).name for filename in (zip_filename, csv_filename))
    archive = _open_zip(zip_data, original)
    members = _usable_members(archive, original)
    pairs, dropped = _pairs_from_csv(csv_data, csv_name, kind, _member_lookup(members), original)
    labels = [label for _, _, label in pairs]
    # The checks load_pair_splits applies (classes, every split gets rows), so a stored dataset always loads.
    split_rows(labels, where=f"the upload {csv_name}", source=csv_name)
    images: dict[str, bytes] = {}  # an image with several captions is read (and checked) once
    for member, _, _ in pairs:
        if member not in images:
            images[member] = _read_image(archive, members[member], member, original)
    records = [{"image": images[member], "text": text, "label": label} for member, text, label in pairs]
    meta = {"kind": kind, "prompt_template": DEFAULT_PROMPT, "label_names": sorted(set(labels) - {""}), "images": len(images),
            "duplicates_dropped": dropped, "original_filename": original, "csv_filename": csv_name}
    return _CheckedPairs(records=records, meta=meta)


def _member_lookup(members: dict[str, Any]) -> dict[str, str]:
    """CSV path -> zip member: the path inside the zip, or the path below the folder every image sits in (photos/1.jpg as 1.jpg)."""
    folders = [PurePosixPath(name).parts[:-1] for name in members]
    depth = 0
    while all(len(parts) > depth for parts in folders) and len({parts[depth] for parts in folders}) == 1:
        depth += 1
    lookup = {str(PurePosixPath(*PurePosixPath(name).parts[depth:])): name for name in members}
    return lookup | {name: name for name in members}


def _pairs_from_csv(csv_data: bytes, csv_name: str, kind: str, lookup: dict[str, str],
                    original: str) -> tuple[list[tuple[str, str, str]], int]:
    """(zip member, text, label) per distinct CSV line, and how many exact duplicate lines were dropped."""
    table = _read_csv(csv_data, csv_name, kind)
    columns = {str(column).strip().lower(): column for column in table.columns}
    image_column, text_column = REQUIRED_COLUMNS[kind][:2]
    labels = table[columns["label"]] if "label" in columns else [""] * len(table)
    pairs, seen, missing = [], {}, []
    for line, (path, text, label) in enumerate(zip(table[columns[image_column]], table[columns[text_column]], labels), start=2):
        wanted = path.strip().replace("\\", "/").removeprefix("./")
        if not wanted:
            raise UserError(f"Line {line} of {csv_name} has no image path; write the image's path inside {original} or delete the line.")
        if wanted not in lookup:
            missing.append((line, path))
            continue
        text, label = text.strip(), label.strip()
        if not text:
            raise UserError(f"Line {line} of {csv_name} ({path!r}) has an empty {text_column}; write one or delete the line.")
        if "label" in columns and not label:
            raise UserError(f"Line {line} of {csv_name} ({path!r}) has no label; fill it in or delete the line"
                            + (", or drop the label column." if kind == CONTRASTIVE else "."))
        pair = (lookup[wanted], text)
        if pair in seen:
            first_line, first_label = seen[pair]
            if first_label != label:
                raise UserError(f"Lines {first_line} and {line} of {csv_name} give {path!r} the same {text_column} but the labels "
                                f"{first_label!r} and {label!r}; keep the line with the right label.")
            continue
        seen[pair] = (line, label)
        pairs.append((lookup[wanted], text, label))
    if missing:
        line, path = missing[0]
        what = (f"Line {line} of {csv_name} names {path!r}, which is not an image in {original}" if len(missing) == 1 else
                f"{len(missing)} lines of {csv_name} name images that are not in {original}, the first line {line} ({path!r})")
        raise UserError(f"{what}; write each path as it appears inside the zip (folder/name.jpg).")
    dropped = len(table) - len(pairs)
    if len(pairs) < MIN_PAIRS:
        raise UserError(f"{csv_name} has {len(pairs)} distinct pairs" + (f" ({dropped} duplicate lines dropped)" if dropped else "")
                        + f", fewer than the {MIN_PAIRS} needed to fill train, validation and test; add more lines.")
    return pairs, dropped


def _read_csv(csv_data: bytes, csv_name: str, kind: str) -> pd.DataFrame:
    header = ",".join(REQUIRED_COLUMNS[kind])
    try:
        table = pd.read_csv(io.BytesIO(csv_data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserError(f"{csv_name} could not be read as a CSV ({error}); save it as UTF-8 CSV with the header row {header}.") from None
    present = {str(column).strip().lower() for column in table.columns}
    lacking = [column for column in REQUIRED_COLUMNS[kind] if column not in present]
    if lacking:
        raise UserError(f"{csv_name} lacks the column{'s' if len(lacking) > 1 else ''} {', '.join(lacking)} (it has "
                        f"{', '.join(map(str, table.columns)) or 'none'}); name the header row {header}.")
    return table


def _registered_kind(name: str) -> str | None:
    """The pair kind of a registered dataset whose table is complete, else None (text, image, NER or half-written)."""
    if not is_registered(name) or not (datasets_dir() / name / TABLE_FOLDER / DATA_FILE).is_file():
        return None
    try:
        task = read_spec(name).task
    except UserError:
        return None
    return task if task in KIND_NAMES else None


def _registered_info(name: str) -> DatasetInfo:
    folder = datasets_dir() / name
    kind = read_spec(name).task
    try:
        meta = json.loads((folder / TABLE_FOLDER / META_FILE).read_text(encoding="utf-8"))
        names = meta["label_names"]
        classes = (f"{len(names)} classes ({', '.join(names[:6])}{'…' if len(names) > 6 else ''})" if names else "no labels")
        dropped = meta["duplicates_dropped"]
        description = (f"{meta['rows']:,} pairs of {meta['images']:,} images, {classes}, uploaded from "
                       f"{meta['original_filename']} with {meta['csv_filename']}; "
                       + (f"{dropped:,} duplicate lines dropped." if dropped else "no duplicate lines."))
        source = meta["source"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        description, source = f"The description of this dataset is damaged ({type(error).__name__}); delete {folder} and upload it again.", str(folder)
    return DatasetInfo(key=name, title=name, task=kind, source=source, description=description, builtin=False)
