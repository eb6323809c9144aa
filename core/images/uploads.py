"""Reading a zip of images (class folders, or a CSV of path,label) in memory, checked before anything is written.

The zip is never extracted: `__MACOSX`, hidden files and non-image files are skipped; paths with
`..` or a leading `/`, a zip whose unpacked size is far beyond its packed size, an empty or
undecodable image, a CSV path missing from the zip, or a single class are refused with a sentence.
`checked_upload` returns the decoded images only once every one of them has been read, and
`write_upload` stores them (images.arrow, meta.json, spec.yaml) in a staging folder renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from core.assets import Progress
from core.data.registry import check_upload_size, staging_folder, write_spec
from core.data.splits import make_splits
from core.errors import UserError
from core.images.store import DATA_FILE, IMAGE_CLASSIFICATION, image_features, png_bytes, write_table

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KEPT_FORMATS = ("JPEG", "PNG", "WEBP")  # stored as uploaded when already RGB; anything else becomes PNG
JUNK_NAMES = {"thumbs.db", "desktop.ini"}
MAX_PIXELS = 40_000_000  # one image above this many pixels is refused (decompression bomb)
MAX_UNPACKED_ENV = "WORKBENCH_MAX_UNPACKED_MB"
DEFAULT_MAX_UNPACKED_MB = 1024.0
# Photos barely compress; a zip that unpacks to over this many times its size is refused once it is big.
MAX_PACKING_RATIO = 100
RATIO_CHECK_FROM = 64 * 2**20
FILES_FOLDER = "files"  # cache/images/files/<key>/: image files a run config names by path
FILE_KEY_PREFIX = "file-"  # such a key is "file-" and 16 hex digits of the files' checksum


def max_unpacked_bytes() -> int:
    raw = os.environ.get(MAX_UNPACKED_ENV, "")
    try:
        megabytes = float(raw) if raw.strip() else DEFAULT_MAX_UNPACKED_MB
    except ValueError:
        raise UserError(
            f"{MAX_UNPACKED_ENV} is set to {raw!r}, which is not a number; set it to a size in MB such as 1024."
        ) from None
    return int(megabytes * 2**20)


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


def checksum(*contents: bytes) -> str:
    """16 hex digits of SHA-256 over the contents' own digests (so no two splits of the bytes collide)."""
    return hashlib.sha256(b"".join(hashlib.sha256(content).digest() for content in contents)).hexdigest()[:16]


def check_sizes(files: Iterable[tuple[str, int]]) -> None:
    """Each (file name, size) against the upload limit every kind shares."""
    for label, size in files:
        check_upload_size(label, size)


@dataclass(frozen=True)
class CheckedUpload:
    """A zip of images (with its labels CSV, if any) that passed every check, decoded and ready to store."""

    records: list[dict[str, Any]]  # {"image": bytes as stored, "label": str}
    label_names: list[str]
    original: str  # the zip's file name
    csv_name: str | None
    how: str  # for the source line: "pets.zip (one folder per class)" or "images.zip with labels from labels.csv"


def checked_upload(filename: str, data: bytes, csv_filename: str | None, csv_data: bytes | None) -> CheckedUpload:
    original = Path(filename.replace("\\", "/")).name
    archive = open_zip(data, original)
    members = usable_members(archive, original)
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
    make_splits(
        pd.DataFrame({"text": [str(i) for i in range(len(entries))], "label": labels}),
        where=f"the upload {original}",
        source=original,
    )
    records = [{"image": read_image(archive, members[member], member, original), "label": label} for member, label in entries]
    return CheckedUpload(records=records, label_names=sorted(set(labels)), original=original, csv_name=csv_name, how=how)


def write_upload(target: Path, upload: CheckedUpload, source: str, progress: Progress) -> None:
    """Store a checked upload as `target`/ (images.arrow, meta.json, spec.yaml), written in a hidden staging folder
    beside it and renamed into place; FileExistsError when `target` exists by then."""
    staging = staging_folder(target.parent, target.name)
    try:
        rows = write_table(
            staging,
            upload.records,
            image_features(),
            {
                "key": target.name,
                "source": source,
                "label_names": upload.label_names,
                "original_filename": upload.original,
                "csv_filename": upload.csv_name,
                "official_split": False,
            },
            progress,
            total=len(upload.records),
        )
        spec = {  # every kind's spec fields; the registry lists it by its task
            "name": target.name,
            "file": DATA_FILE,
            "text_column": "image",
            "label_column": "label",
            "original_filename": upload.original,
            "rows": rows,
            "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "task": IMAGE_CLASSIFICATION,
        }
        write_spec(staging, spec)
        try:
            staging.rename(target)
        except OSError:
            raise FileExistsError(target) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_zip(data: bytes, original: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UserError(
            f"{original} is not a zip file; zip the class folders (or the images for the CSV) and upload the .zip."
        ) from None
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


def usable_members(archive: zipfile.ZipFile, original: str) -> dict[str, zipfile.ZipInfo]:
    """Image members by normalised path, junk skipped; an unsafe path refuses the whole zip."""
    members = {}
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if name.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise UserError(
                f"{original} contains the unsafe path {info.filename!r} (it points outside the zip's folder); "
                "zip the folders again with relative paths."
            )
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


def _entries_from_csv(
    csv_data: bytes, csv_name: str, members: dict[str, zipfile.ZipInfo], original: str
) -> list[tuple[str, str]]:
    try:
        table = pd.read_csv(io.BytesIO(csv_data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserError(
            f"{csv_name} could not be read as a CSV ({error}); save it as UTF-8 CSV with a header row path,label."
        ) from None
    columns = {column.strip().lower(): column for column in table.columns}
    if "path" not in columns or "label" not in columns:
        raise UserError(
            f"{csv_name} needs the columns path and label (it has {', '.join(map(str, table.columns)) or 'none'}); "
            "name the header row path,label."
        )
    root = _common_root(members)
    by_name = {name: name for name in members}
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
        raise UserError(
            f"Every image in {original} has the class {counts.index[0]!r}; a classifier needs at least two classes — "
            "add a folder (or CSV labels) for another class."
        )
    lonely = sorted(counts[counts < 2].index)
    if lonely:
        raise UserError(
            f"The class {lonely[0]!r} in {original} has only one image; add at least one more per class "
            "so every class can appear in both training and evaluation."
        )


def read_image(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, original: str) -> bytes:
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
                raise UserError(
                    f"{member} in {original} is {image.width}x{image.height} pixels, over the "
                    f"{MAX_PIXELS // 1_000_000} megapixel limit; downscale it first."
                )
            image_format = image.format
            image.load()
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UserError(
            f"{member} in {original} is not a readable image ({type(error).__name__}: {error}); it may be "
            "truncated or corrupt — replace or remove it."
        ) from None
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
