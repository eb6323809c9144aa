"""The text view of the Data page: pick a built-in, a registered table or an upload, and see how it splits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.data import (
    SPLIT_NAMES,
    SUPPORTED_SUFFIXES,
    DataSplits,
    guess_columns,
    load_splits,
    parse_table,
    register_dataset,
)
from core.data.info import TEXT_CLASSIFICATION
from core.data.registry import dataset_kind
from core.errors import UserError
from core.long_texts import windows_needed
from core.models import token_counts
from core.workspace import workspace_root
from pages import SAVE_MESSAGE_KEY, choose_dataset, dataset_source, prepare_with_bar

PREVIEW_ROWS = 20


@st.cache_data(show_spinner="Loading and splitting the dataset…", max_entries=16)
def cached_splits(
    workspace: str, dataset: str, seed: int, validation_fraction: float, test_fraction: float, max_rows: int | None
) -> DataSplits:
    """Splits keyed on every argument; `workspace` keeps registered names of two workspaces apart."""
    return load_splits(
        dataset, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction, max_rows=max_rows
    )


@st.cache_data(show_spinner="Reading the file…", max_entries=4)
def cached_table(filename: str, data: bytes) -> pd.DataFrame:
    return parse_table(data, filename)


def text_main() -> None:
    st.caption("Choose the sentences and labels the model will learn from, and check them before training.")
    source = dataset_source(
        "Dataset source",
        "data_source",
        "Built-in datasets are ready to use; Upload adds your own table; Registered lists tables you saved earlier.",
    )
    if source == "Upload":
        upload_section()
        return
    builtin = source == "Built-in"
    dataset = choose_dataset(
        TEXT_CLASSIFICATION,
        builtin,
        "dataset",
        "data_builtin" if builtin else "data_registered",
        "Movie reviews is real text; planted keywords is synthetic with a known answer for explanations.",
        "No datasets are registered yet: choose Upload above to add a CSV, TSV, JSON lines or Parquet file.",
    )
    if dataset is not None:
        show_overview(dataset)


def upload_section() -> None:
    uploaded = st.file_uploader(
        "Upload a table",
        type=[suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES],
        key="data_upload",
        help="A table with one row per example: a column of text and a column of labels (an optional 'split' column is kept).",
    )
    if uploaded is None:
        st.info("Upload a file with a text column and a label column, e.g. a CSV with the header text,label.")
        return
    upload_form(uploaded.name, uploaded.getvalue())


def upload_form(filename: str, data: bytes) -> None:
    """Column mapping, a preview, the name and Save for one uploaded file."""
    try:
        table = cached_table(filename, data)
    except UserError as error:
        st.error(str(error))
        return
    columns = [str(column) for column in table.columns]
    text_guess, label_guess = guess_columns(columns)
    text_index = columns.index(text_guess) if text_guess else 0
    label_index = columns.index(label_guess) if label_guess else min(1, len(columns) - 1)
    st.selectbox(
        "Text column",
        columns,
        index=text_index,
        key="data_text_column",
        help="The column holding the sentence or document the model reads.",
    )
    st.selectbox(
        "Label column",
        columns,
        index=label_index,
        key="data_label_column",
        help="The column holding the class the model should predict for each row.",
    )
    st.text_input(
        "Dataset name",
        value=Path(filename).stem,
        key="data_dataset_name",
        help="The name the dataset is saved under; letters, digits, dots, dashes and underscores.",
    )
    st.caption(f"First {min(PREVIEW_ROWS, len(table))} of {len(table):,} rows of {filename}:")
    st.dataframe(table.head(PREVIEW_ROWS), hide_index=True)
    st.button(
        "Save dataset",
        key="data_save",
        on_click=save_upload,
        args=(filename, data),
        type="primary",
        help="Checks the whole table (columns, labels, classes) and saves it to the workspace if it is usable.",
    )


def save_upload(filename: str, data: bytes) -> None:
    """Button callback: runs before the rerun, so it may switch the page to the saved dataset."""
    state = st.session_state
    try:
        info = register_dataset(state["data_dataset_name"], filename, data, state["data_text_column"], state["data_label_column"])
    except UserError as error:
        state[SAVE_MESSAGE_KEY] = ("error", str(error))
        return
    state[SAVE_MESSAGE_KEY] = ("success", f"Saved {info.key!r}: {info.description}")
    state["data_source"] = "Registered"
    state["data_registered"] = info.key


def split_settings() -> dict:
    with st.expander("Split settings"):
        seed = st.number_input(
            "Seed",
            min_value=0,
            value=42,
            step=1,
            key="data_seed",
            help="The same seed always puts the same rows in the same split, so results can be compared.",
        )
        validation = st.slider(
            "Validation fraction",
            0.05,
            0.4,
            0.1,
            0.05,
            key="data_validation_fraction",
            help="Share of each class held out to watch the model while it trains.",
        )
        test = st.slider(
            "Test fraction",
            0.05,
            0.4,
            0.1,
            0.05,
            key="data_test_fraction",
            help="Share of each class kept unseen until the final evaluation.",
        )
        max_rows = st.number_input(
            "Row limit (0 = all rows)",
            min_value=0,
            value=0,
            step=100,
            key="data_max_rows",
            help="Use a smaller sample, keeping each class's share, for quick experiments.",
        )
    return {"seed": int(seed), "validation_fraction": validation, "test_fraction": test, "max_rows": int(max_rows) or None}


def show_overview(dataset: str) -> None:
    settings = split_settings()
    prepare_with_bar(dataset_kind(TEXT_CLASSIFICATION), dataset)
    splits = cached_splits(str(workspace_root()), dataset, **settings)
    sizes = splits.sizes()
    st.markdown(f"**{sum(sizes.values()):,} rows** in {len(splits.label_names)} classes: {', '.join(splits.label_names)}")
    st.caption(f"Source: {splits.source}")
    for column, name in zip(st.columns(len(SPLIT_NAMES)), SPLIT_NAMES):
        column.metric(f"{name} rows", f"{sizes[name]:,}")
    st.subheader("Preview")
    st.dataframe(splits.all_rows().head(PREVIEW_ROWS), hide_index=True)
    st.subheader("Class balance")
    st.plotly_chart(class_balance_figure(splits), key="data_class_balance")
    st.subheader("Text length")
    st.plotly_chart(length_figure(splits), key="data_text_length")
    long_text_note(dataset, splits)


COUNTING_MODEL = "minilm-l6"  # the default model's tokenizer counts tokens here (when it is on this machine)


@st.cache_data(show_spinner="Counting tokens…", max_entries=8)
def cached_token_counts(workspace: str, dataset: str, texts: tuple[str, ...]) -> list[int]:
    from core.catalog import BUILTIN_MODELS

    return token_counts(str(BUILTIN_MODELS[COUNTING_MODEL].local_dir()), list(texts))


def long_text_note(dataset: str, splits: DataSplits) -> None:
    """How many texts a max length would cut, in the default model's tokens (words when it is not prepared yet)."""
    from core.catalog import BUILTIN_MODELS

    max_length = int(
        st.number_input(
            "Max length to check (tokens)",
            min_value=8,
            max_value=8192,
            value=128,
            step=16,
            key="data_max_length",
            help="The Train page's max sequence length: texts with more tokens are cut to it in training.",
        )
    )
    texts = splits.all_rows()["text"].astype(str)
    if BUILTIN_MODELS[COUNTING_MODEL].is_ready():
        counts, unit = cached_token_counts(str(workspace_root()), dataset, tuple(texts)), f"{COUNTING_MODEL} tokens"
    else:
        counts, unit = [len(text.split()) for text in texts], "words (the default model is not prepared yet: tokens are more)"
    over = sum(count > max_length for count in counts)
    message = f"{over:,} of {len(counts):,} texts are longer than {max_length} {unit}"
    if over:
        overlap = max_length // 4
        windows = sum(windows_needed(count, max_length, overlap) for count in counts)
        st.warning(
            f"{message}: training reads them as the Train page's 'Read a long text by' says, keeping their head or their "
            f"tail (or both), or reading them whole as sliding windows (overlapping by {overlap} tokens, these "
            f"{len(counts):,} texts would make about {windows:,} windows to train on)."
        )
    else:
        st.caption(message + ": none is cut.")


def class_balance_figure(splits: DataSplits):
    import plotly.graph_objects as go

    balance = splits.class_balance()
    figure = go.Figure(
        [go.Bar(x=part["label"], y=part["count"], name=name) for name, part in balance.groupby("split", sort=False)]
    )
    figure.update_layout(
        barmode="group",
        title="Examples per class in each split",
        xaxis_title="class",
        yaxis_title="examples",
        legend_title="split",
    )
    return figure


def length_figure(splits: DataSplits):
    import plotly.graph_objects as go

    lengths = splits.text_lengths()
    figure = go.Figure([go.Histogram(x=part["words"], name=label, opacity=0.6) for label, part in lengths.groupby("label")])
    figure.update_layout(
        barmode="overlay",
        title="Words per text, by class",
        xaxis_title="words per text",
        yaxis_title="texts",
        legend_title="class",
    )
    return figure
