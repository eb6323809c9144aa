"""Token-tagged sentences (NER or plain tags) as a kind of the dataset registry: what `data add` and `data show` do."""

from __future__ import annotations

from typing import Any

from core.data.info import DatasetInfo, split_counts
from core.data.registry import DatasetFiles, DatasetKind, read_named_file, register_kind
from core.ner.data import (
    BUILTIN_NER_DATASETS,
    TOKEN_CLASSIFICATION,
    load_ner_splits,
    register_ner_dataset,
    registered_ner_info,
)
from core.ner.parsing import DEFAULT_TAGS_COLUMN, DEFAULT_TOKENS_COLUMN

PREVIEW_SENTENCES = 8  # the Data page's preview size


def add_sentences(files: DatasetFiles) -> DatasetInfo:
    """CoNLL text, or a JSONL / Parquet table whose token and tag list columns the text and label columns name."""
    return register_ner_dataset(
        files.name,
        files.file.name,
        read_named_file(files.file),
        tokens_column=files.text_column or DEFAULT_TOKENS_COLUMN,
        tags_column=files.label_column or DEFAULT_TAGS_COLUMN,
    )


def show_sentences(name: str) -> dict[str, Any]:
    from seqeval.metrics.sequence_labeling import get_entities

    splits = load_ner_splits(name)
    preview = [
        {"tokens": list(row.tokens), "tags": list(row.tags), "entities": [list(span) for span in get_entities(list(row.tags))]}
        for row in splits.train.head(PREVIEW_SENTENCES).itertuples()
    ]
    return {
        "source": splits.source,
        "rows": splits.sizes(),
        "classes": splits.entity_types,
        "scheme": splits.scheme,
        "tags": splits.label_names,
        "balance": split_counts(splits.entity_counts(), "type"),
        "preview": preview,
    }


def sentence_preview(preview: list[dict[str, Any]]) -> list[str]:
    """Each sentence with its entities bracketed and typed: [New York]LOC."""
    lines = []
    for sentence in preview:
        words = list(sentence["tokens"])
        for kind, start, end in sentence["entities"]:
            words[start] = f"[{words[start]}"
            words[end] = f"{words[end]}]{kind}"
        lines.append(" ".join(words))
    return lines


TAGGED_SENTENCES = register_kind(
    DatasetKind(
        task=TOKEN_CLASSIFICATION,
        modality="NER",
        builtins=BUILTIN_NER_DATASETS,
        registered_info=registered_ner_info,
        load=load_ner_splits,
        add=add_sentences,
        show=show_sentences,
        preview_lines=sentence_preview,
        files="CoNLL text, or JSONL / Parquet with token and tag lists",
        columns=True,
        classes="entity types",
    )
)
