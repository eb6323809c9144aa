"""Checking an upload of pairs: a zip of images and a CSV naming each image's caption (and label), in memory.

Every row and image is checked, exact duplicate pairs are dropped and counted, and nothing is
returned (so nothing is written) until all of it passed, with the same split checks
`load_pair_splits` applies, so a stored dataset always loads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from core.errors import UserError
from core.image_text.store import CONTRASTIVE, DEFAULT_PROMPT, FUSION, split_rows
from core.images.uploads import open_zip, read_image, usable_members

# The CSV header each kind needs; a contrastive CSV may add a label column for zero-shot prompts.
REQUIRED_COLUMNS = {CONTRASTIVE: ("image", "caption"), FUSION: ("image", "text", "label")}
MIN_PAIRS = 10


@dataclass(frozen=True)
class CheckedPairs:
    """A zip of images and a CSV of pairs that passed every check, decoded and ready to store."""

    records: list[dict[str, Any]]  # {"image": bytes as stored, "text": str, "label": str}
    meta: dict[str, Any]  # kind, labels, counts and file names for meta.json (the writer adds key and source)


def checked_pairs(kind: str, zip_filename: str, zip_data: bytes, csv_filename: str, csv_data: bytes) -> CheckedPairs:
    original, csv_name = (Path(filename.replace("\\", "/")).name for filename in (zip_filename, csv_filename))
    archive = open_zip(zip_data, original)
    members = usable_members(archive, original)
    pairs, dropped = _pairs_from_csv(csv_data, csv_name, kind, _member_lookup(members), original)
    labels = [label for _, _, label in pairs]
    # The checks load_pair_splits applies (classes, every split gets rows), so a stored dataset always loads.
    split_rows(labels, where=f"the upload {csv_name}", source=csv_name)
    images: dict[str, bytes] = {}  # an image with several captions is read (and checked) once
    for member, _, _ in pairs:
        if member not in images:
            images[member] = read_image(archive, members[member], member, original)
    records = [{"image": images[member], "text": text, "label": label} for member, text, label in pairs]
    meta = {
        "kind": kind,
        "prompt_template": DEFAULT_PROMPT,
        "label_names": sorted(set(labels) - {""}),
        "images": len(images),
        "duplicates_dropped": dropped,
        "original_filename": original,
        "csv_filename": csv_name,
    }
    return CheckedPairs(records=records, meta=meta)


def _member_lookup(members: dict[str, Any]) -> dict[str, str]:
    """CSV path -> zip member: the path inside the zip, or the path below the folder every image sits in
    (photos/1.jpg as 1.jpg)."""
    folders = [PurePosixPath(name).parts[:-1] for name in members]
    depth = 0
    while all(len(parts) > depth for parts in folders) and len({parts[depth] for parts in folders}) == 1:
        depth += 1
    lookup = {str(PurePosixPath(*PurePosixPath(name).parts[depth:])): name for name in members}
    return lookup | {name: name for name in members}


def _pairs_from_csv(
    csv_data: bytes, csv_name: str, kind: str, lookup: dict[str, str], original: str
) -> tuple[list[tuple[str, str, str]], int]:
    """(zip member, text, label) per distinct CSV line, and how many exact duplicate lines were dropped."""
    table = _read_csv(csv_data, csv_name, kind)
    columns = {str(column).strip().lower(): column for column in table.columns}
    image_column, text_column = REQUIRED_COLUMNS[kind][:2]
    labels = table[columns["label"]] if "label" in columns else [""] * len(table)
    pairs, seen, missing = [], {}, []
    for line, (path, text, label) in enumerate(zip(table[columns[image_column]], table[columns[text_column]], labels), start=2):
        wanted = path.strip().replace("\\", "/").removeprefix("./")
        if not wanted:
            raise UserError(
                f"Line {line} of {csv_name} has no image path; write the image's path inside {original} or delete the line."
            )
        if wanted not in lookup:
            missing.append((line, path))
            continue
        text, label = text.strip(), label.strip()
        if not text:
            raise UserError(f"Line {line} of {csv_name} ({path!r}) has an empty {text_column}; write one or delete the line.")
        if "label" in columns and not label:
            raise UserError(
                f"Line {line} of {csv_name} ({path!r}) has no label; fill it in or delete the line"
                + (", or drop the label column." if kind == CONTRASTIVE else ".")
            )
        pair = (lookup[wanted], text)
        if pair in seen:
            first_line, first_label = seen[pair]
            if first_label != label:
                raise UserError(
                    f"Lines {first_line} and {line} of {csv_name} give {path!r} the same {text_column} but the labels "
                    f"{first_label!r} and {label!r}; keep the line with the right label."
                )
            continue
        seen[pair] = (line, label)
        pairs.append((lookup[wanted], text, label))
    if missing:
        line, path = missing[0]
        what = (
            f"Line {line} of {csv_name} names {path!r}, which is not an image in {original}"
            if len(missing) == 1
            else f"{len(missing)} lines of {csv_name} name images that are not in {original}, the first line {line} ({path!r})"
        )
        raise UserError(f"{what}; write each path as it appears inside the zip (folder/name.jpg).")
    dropped = len(table) - len(pairs)
    if len(pairs) < MIN_PAIRS:
        raise UserError(
            f"{csv_name} has {len(pairs)} distinct pairs"
            + (f" ({dropped} duplicate lines dropped)" if dropped else "")
            + f", fewer than the {MIN_PAIRS} needed to fill train, validation and test; add more lines."
        )
    return pairs, dropped


def _read_csv(csv_data: bytes, csv_name: str, kind: str) -> pd.DataFrame:
    header = ",".join(REQUIRED_COLUMNS[kind])
    try:
        table = pd.read_csv(io.BytesIO(csv_data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserError(
            f"{csv_name} could not be read as a CSV ({error}); save it as UTF-8 CSV with the header row {header}."
        ) from None
    present = {str(column).strip().lower() for column in table.columns}
    lacking = [column for column in REQUIRED_COLUMNS[kind] if column not in present]
    if lacking:
        raise UserError(
            f"{csv_name} lacks the column{'s' if len(lacking) > 1 else ''} {', '.join(lacking)} (it has "
            f"{', '.join(map(str, table.columns)) or 'none'}); name the header row {header}."
        )
    return table
