"""The Data page's NER mode: the built-in tweet NER set or a CoNLL / JSONL / Parquet upload, entity or plain tags."""

from __future__ import annotations

import streamlit as st

from core import viz
from core.errors import UserError
from core.workspace import workspace_root

PREVIEW_SENTENCES = 8


@st.cache_data(show_spinner="Loading and checking the tags…", max_entries=8)
def cached_ner_splits(workspace: str, dataset: str, max_rows: int | None):
    from core.ner.data import load_ner_splits

    return load_ner_splits(dataset, max_rows=max_rows)


def ner_main() -> None:
    from core.ner.data import list_ner_datasets
    from core.ner.schemes import SCHEME_NAMES, scheme_sentence, word_spans

    st.caption(
        "Sentences tagged word by word: BIO / IOB2 or BIOES entity tags for named-entity recognition, or any "
        "other tag set (part of speech, chunks without prefixes) for per-word tagging."
    )
    with st.expander("Upload a CoNLL file (one `token tag` per line, a blank line between sentences) or JSONL / Parquet"):
        upload = st.file_uploader(
            "Tagged sentences",
            type=["conll", "txt", "tsv", "iob", "bio", "jsonl", "json", "parquet"],
            key="data_ner_upload",
            help="-DOCSTART- lines are skipped; JSONL/Parquet need tokens and tags list columns.",
        )
        name = st.text_input("Name", key="data_ner_name", help="How the dataset is listed on the Train page.")
        if upload is not None and st.button("Save dataset", key="data_ner_save"):
            from core.ner.data import register_ner_dataset

            try:
                info = register_ner_dataset(name or upload.name, upload.name, upload.getvalue())
            except UserError as problem:
                st.error(str(problem))
            else:
                st.success(f"Saved as {info.key}; pick it below or on the Train page.")
    datasets = {info.key: info for info in list_ner_datasets()}
    dataset = st.selectbox(
        "Dataset",
        list(datasets),
        format_func=lambda key: datasets[key].title,
        key="data_ner_dataset",
        help="Built-in first, then the ones you saved.",
    )
    st.caption(datasets[dataset].description)
    max_rows = st.number_input(
        "Sentences to use (0 = all)",
        min_value=0,
        value=0,
        step=100,
        key="data_ner_rows",
        help="A sample of sentences for a quick look or a quick run.",
    )
    try:
        splits = cached_ner_splits(str(workspace_root()), dataset, max_rows or None)
    except UserError as problem:
        st.error(str(problem))
        return
    sizes = splits.sizes()
    columns = st.columns(4)
    for column, (split, count) in zip(columns, sizes.items()):
        column.metric(f"{split} sentences", f"{count:,}")
    columns[3].metric(
        "Tag scheme",
        splits.scheme if splits.has_entities else SCHEME_NAMES[splits.scheme],
        help="Detected from the tags: B-/I- (and E-/S-) prefixes mean entity spans; none means plain tags.",
    )
    st.info(scheme_sentence(splits.scheme))
    if splits.has_entities:
        st.subheader("Entities per type")
        counts, index, kinds = splits.entity_counts(), "type", splits.entity_types
    else:
        st.subheader("Words per tag")
        counts, index, kinds = splits.tag_counts(), "tag", splits.label_names
    st.dataframe(counts.pivot_table(index=index, columns="split", values="count", fill_value=0), width="content")
    st.subheader("Preview")
    for _, row in splits.train.head(PREVIEW_SENTENCES).iterrows():
        spans = spans_of(list(row["tags"])) if splits.has_entities else word_spans(list(row["tags"]))
        st.markdown(viz.entity_spans_html(list(row["tokens"]), spans, kinds), unsafe_allow_html=True)


def spans_of(tags: list[str]) -> list[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return [(kind, start, end) for kind, start, end in get_entities(tags)]
