"""The stored form of an image dataset: one Arrow file of rows (image, label, row[, bbox]) plus meta.json.

Built-ins, uploads and image files named by path are all written by `write_table`, streamed to
disk in batches, and read back memory-mapped through the `datasets` library; a row is named
'<dataset>#<row>' (`reference`) wherever a prediction or a page points at one image.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from core.assets import Progress, no_progress

IMAGE_CLASSIFICATION = "image_classification"
DATA_FILE = "images.arrow"

META_FILE = "meta.json"

STORE_VERSION = 1  # bump when a built-in's stored form changes, so old caches are rebuilt

WRITE_BATCH = 500


def reference(dataset: str, row: int) -> str:
    """How a prediction names its image: '<dataset>#<row>'; `open_image` turns it back into the image."""
    return f"{dataset}#{int(row)}"


def image_features(with_bbox: bool = False, with_split: bool = False):
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature

    columns = {"image": ImageFeature(mode="RGB"), "label": Value("string"), "row": Value("int64")}
    if with_bbox:
        columns["bbox"] = Sequence(Value("int32"), length=4)
    if with_split:
        columns["split"] = Value("string")
    return Features(columns)


def write_table(
    target: Path,
    records: Iterable[dict[str, Any]],
    features,
    meta: dict[str, Any],
    progress: Progress = no_progress,
    total: int | None = None,
) -> int:
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
    (target / META_FILE).write_text(
        json.dumps({**meta, "rows": rows, "store_version": STORE_VERSION}, indent=2), encoding="utf-8"
    )
    return rows


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def open_table_file(path: Path):
    """A stored table as a memory-mapped `datasets.Dataset`.

    datasets fingerprints every table it opens, and its hasher reads `transformers.PreTrainedTokenizerBase` whenever
    transformers is in `sys.modules`, even while another thread (Streamlit starts a rerun while the last run may
    still be importing) is still importing it: an AttributeError on the page. Resolving it here first waits for that
    import to finish, under Python's per-module import lock."""
    import transformers
    from datasets import Dataset

    transformers.PreTrainedTokenizerBase  # noqa: B018 - resolved now, not mid-hash
    return Dataset.from_file(str(path))
