"""The Data page's image + text mode: caption sets for alignment and labelled pairs for fusion.

Built-in sets, pair datasets saved earlier, or a zip of images with a CSV of pairs. The overview
shows the split sizes, a few training pairs with their captions, and how long the captions are.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import viz
from core.data.registry import dataset_kind
from core.data.splits import SPLIT_NAMES
from core.errors import UserError
from core.image_text.data import CONTRASTIVE, FUSION, REQUIRED_COLUMNS, register_pair_dataset, version_stamp
from core.workspace import workspace_root
from pages import SAVE_MESSAGE_KEY, choose_dataset, dataset_source, prepare_with_bar

KINDS = {"Captions for alignment": CONTRASTIVE, "Labelled pairs for fusion": FUSION}
PAIR_THUMBNAILS = 12
THUMBNAIL_SIZE = 96


@st.cache_resource(show_spinner="Loading and splitting the pairs…", max_entries=8)
def cached_pair_splits(workspace: str, dataset: str, kind: str, seed: int, max_rows: int | None, stamp: float):
    """Splits of a pair dataset (memory-mapped, so a resource, not pickled); `stamp` notices a re-upload."""
    return dataset_kind(kind).load(dataset, seed=seed, max_rows=max_rows)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_pair_thumbnails(
    workspace: str, dataset: str, kind: str, seed: int, max_rows: int | None, stamp: float
) -> list[tuple[bytes, str]]:
    """The first training pairs as small PNGs, each with its caption (label first when there is one)."""
    train = cached_pair_splits(workspace, dataset, kind, seed, max_rows, stamp).train
    rows = train.select(range(min(PAIR_THUMBNAILS, len(train))))
    return [
        (viz.thumbnail_png(image, THUMBNAIL_SIZE), f"{label}: {text}" if label else text)
        for image, text, label in zip(rows["image"], rows["text"], rows["label"])
    ]


def pair_main() -> None:
    st.caption(
        "Images paired with text: captions to align an image and a text encoder (CLIP-style), "
        "or labelled pairs to classify from both at once."
    )
    kind = KINDS[
        st.radio(
            "What the pairs are for",
            list(KINDS),
            key="data_pair_kind",
            horizontal=True,
            help="Captions teach two encoders to agree (retrieval, zero-shot); labelled pairs train one "
            "classifier that reads the image and the text together.",
        )
    ]
    source = dataset_source(
        "Pair dataset source",
        "data_pair_source",
        "Built-in sets are ready to use; Upload adds a zip of images with a CSV of pairs; "
        "Registered lists uploads saved earlier.",
    )
    if source == "Upload":
        upload_section(kind)
        return
    builtin = source == "Built-in"
    dataset = choose_dataset(
        kind,
        builtin,
        "pair dataset",
        f"data_pair_{'builtin' if builtin else 'registered'}_{kind}",
        "Synthetic sets have known answers for explanations; Fashion-MNIST captions are real images.",
        "No pair datasets of this kind are registered yet: choose Upload above to add a zip of images with a CSV of pairs.",
    )
    if dataset is not None:
        show_overview(dataset, kind)


def show_overview(dataset: str, kind: str) -> None:
    with st.expander("Split settings"):
        seed = st.number_input(
            "Seed",
            min_value=0,
            value=42,
            step=1,
            key="data_pair_seed",
            help="The same seed always puts the same pairs in the same split.",
        )
        max_rows = st.number_input(
            "Subsample size (0 = all pairs)",
            min_value=0,
            value=0,
            step=100,
            key="data_pair_max_rows",
            help="A sample of this many pairs (keeping each class's share) for quick experiments.",
        )
    prepare_with_bar(dataset_kind(kind), dataset)
    key = (str(workspace_root()), dataset, kind, int(seed), int(max_rows) or None, version_stamp(dataset))
    splits = cached_pair_splits(*key)
    sizes = splits.sizes()
    classes = f"{len(splits.label_names)} classes: {', '.join(splits.label_names)}" if splits.label_names else "no labels"
    st.markdown(f"**{sum(sizes.values()):,} pairs**, {classes}")
    st.caption(f"Source: {splits.source}" + (f" · zero-shot prompt: “{splits.prompt_template}”" if splits.label_names else ""))
    for column, name in zip(st.columns(len(SPLIT_NAMES)), SPLIT_NAMES):
        column.metric(f"{name} pairs", f"{sizes[name]:,}")
    st.subheader("A few training pairs")
    thumbnails = cached_pair_thumbnails(*key)
    st.image([png for png, _ in thumbnails], caption=[caption for _, caption in thumbnails], width=THUMBNAIL_SIZE)
    st.subheader("Caption length")
    captions = pd.concat([splits.frame(name)[["text"]].assign(split=name) for name in SPLIT_NAMES])
    st.plotly_chart(viz.caption_lengths(captions), key="data_pair_lengths")


def upload_section(kind: str) -> None:
    header = ",".join(REQUIRED_COLUMNS[kind])
    archive = st.file_uploader(
        "Zip of images",
        type=["zip"],
        key="data_pair_zip",
        help="JPEG, PNG, BMP, GIF, WebP or TIFF images in a .zip file, in any folders.",
    )
    table = st.file_uploader(
        f"CSV of {header}",
        type=["csv"],
        key="data_pair_csv",
        help="One row per pair: the image's path inside the zip and its text"
        + (" (a label column is kept for zero-shot prompts)." if kind == CONTRASTIVE else " and class."),
    )
    if archive is None or table is None:
        st.info(f"Upload a zip of images and a CSV with the header row {header}; an image may have several lines.")
        return
    name_key = f"data_pair_name_{archive.file_id}"  # a new upload proposes its own file name
    st.text_input(
        "Dataset name",
        value=Path(archive.name).stem,
        key=name_key,
        help="The name the dataset is saved under; letters, digits, dots, dashes and underscores.",
    )
    st.button(
        "Save pair dataset",
        key="data_pair_save",
        type="primary",
        on_click=save_upload,
        args=(kind, name_key, archive.name, archive.getvalue(), table.name, table.getvalue()),
        help="Checks every line and image (exact duplicate pairs are dropped) and saves the dataset if it is usable.",
    )


def save_upload(kind: str, name_key: str, zip_name: str, zip_data: bytes, csv_name: str, csv_data: bytes) -> None:
    """Button callback: runs before the rerun, so it may switch the mode to the saved dataset."""
    state = st.session_state
    try:
        info = register_pair_dataset(state.get(name_key) or Path(zip_name).stem, kind, zip_name, zip_data, csv_name, csv_data)
    except UserError as error:
        state[SAVE_MESSAGE_KEY] = ("error", str(error))
        return
    state[SAVE_MESSAGE_KEY] = ("success", f"Saved {info.key!r}: {info.description}")
    state["data_pair_source"] = "Registered"
    state[f"data_pair_registered_{kind}"] = info.key
