"""Image-text pairs as two kinds of the dataset registry (captions for alignment, labelled pairs for fusion):
what `data add` and `data show` do with them."""

from __future__ import annotations

from functools import partial
from typing import Any

from core.data.info import DatasetInfo, split_counts
from core.data.registry import DatasetFiles, DatasetKind, read_named_file, register_kind
from core.image_text.builtin import BUILTIN_PAIR_DATASETS
from core.image_text.data import load_pair_splits, register_pair_dataset, registered_pair_info
from core.image_text.store import CONTRASTIVE, FUSION

PREVIEW_PAIRS = 12  # the Data page's preview size


def add_pairs(kind: str, files: DatasetFiles) -> DatasetInfo:
    """A CSV of pairs (`file`) and the zip of images it names (`images`, required for pairs)."""
    return register_pair_dataset(
        files.name, kind, files.images.name, read_named_file(files.images), files.file.name, read_named_file(files.file)
    )


def show_pairs(kind: str, name: str) -> dict[str, Any]:
    splits = load_pair_splits(name, kind=kind)
    train = splits.frame("train").head(PREVIEW_PAIRS)
    return {
        "source": splits.source,
        "rows": splits.sizes(),
        "classes": splits.label_names,
        "balance": split_counts(splits.class_balance(), "label") if splits.label_names else {},
        "prompt_template": splits.prompt_template,
        "preview": train[["image", "text", "label"]].to_dict("records"),
    }


def pair_preview(preview: list[dict[str, str]]) -> list[str]:
    return [f"{row['image']}: " + (f"{row['label']}: " if row["label"] else "") + row["text"] for row in preview]


def pair_kind(kind: str, files: str) -> DatasetKind:
    return DatasetKind(
        task=kind,
        modality="Image + text",
        builtins={key: dataset for key, dataset in BUILTIN_PAIR_DATASETS.items() if dataset.kind == kind},
        registered_info=registered_pair_info,
        load=partial(load_pair_splits, kind=kind),
        add=partial(add_pairs, kind),
        show=partial(show_pairs, kind),
        preview_lines=pair_preview,
        files=files,
        images="required",
    )


CAPTIONS = register_kind(pair_kind(CONTRASTIVE, "a CSV of image,caption[,label] with --images ZIP"))
LABELLED_PAIRS = register_kind(pair_kind(FUSION, "a CSV of image,text,label with --images ZIP"))
