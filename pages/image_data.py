"""The image view of the Data page: class folders or a CSV plus a zip, thumbnails per class, sizes and the split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import viz
from core.data import (
    SPLIT_NAMES,
)
from core.data.registry import dataset_kind
from core.errors import UserError
from core.images.store import IMAGE_CLASSIFICATION
from core.workspace import workspace_root
from pages import SAVE_MESSAGE_KEY, choose_dataset, dataset_source, prepare_with_bar

IMAGE_UPLOADS = ("Zip of class folders", "CSV of path,label + zip")
THUMBNAILS_PER_CLASS = 6
THUMBNAIL_SIZE = 96
SIZE_SAMPLE = 300  # images whose size is read for the size table
DEFAULT_SUBSAMPLE = 2000


@st.cache_resource(show_spinner="Loading and splitting the images…", max_entries=8)
def cached_image_splits(workspace: str, dataset: str, seed: int, max_rows: int | None, stamp: float):
    """Splits of an image dataset (memory-mapped, so a resource, not pickled); `stamp` notices a re-upload."""
    from core.images import load_image_splits

    return load_image_splits(dataset, seed=seed, max_rows=max_rows)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_thumbnails(
    workspace: str, dataset: str, seed: int, max_rows: int | None, stamp: float, per_class: int
) -> dict[str, list[tuple[str, bytes]]]:
    """A few training images per class as small PNGs: {label: [(reference, png bytes), …]}."""
    splits = cached_image_splits(workspace, dataset, seed, max_rows, stamp)
    train = splits.split("train")
    labels = train["label"]
    chosen: dict[str, list[int]] = {name: [] for name in splits.label_names}
    for index, label in enumerate(labels):
        if len(chosen[label]) < per_class:
            chosen[label].append(index)
        if all(len(found) >= per_class for found in chosen.values()):
            break
    thumbnails: dict[str, list[tuple[str, bytes]]] = {}
    for label, indices in chosen.items():
        rows = train.select(indices)
        thumbnails[label] = [
            (f"{dataset}#{row}", viz.thumbnail_png(image, THUMBNAIL_SIZE)) for image, row in zip(rows["image"], rows["row"])
        ]
    return thumbnails


@st.cache_data(show_spinner=False, max_entries=16)
def cached_image_sizes(workspace: str, dataset: str, seed: int, max_rows: int | None, stamp: float) -> pd.DataFrame:
    """Width × height of up to SIZE_SAMPLE images of every split, counted."""
    splits = cached_image_splits(workspace, dataset, seed, max_rows, stamp)
    sizes: dict[str, int] = {}
    seen = 0
    for name in SPLIT_NAMES:
        part = splits.split(name)
        take = min(len(part), max(0, SIZE_SAMPLE - seen))
        for image in part.select(range(take))["image"]:
            key = f"{image.width}×{image.height}"
            sizes[key] = sizes.get(key, 0) + 1
        seen += take
    return pd.DataFrame({"size (width×height)": list(sizes), "images": list(sizes.values())}).sort_values(
        "images", ascending=False
    )


def image_main() -> None:
    st.caption("Choose the images and classes an image classifier will learn from, and look at them before training.")
    source = dataset_source(
        "Image dataset source",
        "data_image_source",
        "Built-in image datasets are ready to use; Upload adds a zip of images; Registered lists uploads saved earlier.",
    )
    if source == "Upload":
        image_upload_section()
        return
    builtin = source == "Built-in"
    dataset = choose_dataset(
        IMAGE_CLASSIFICATION,
        builtin,
        "image dataset",
        "data_image_builtin" if builtin else "data_image_registered",
        "Planted squares has a known answer for explanations; "
        "digits and Fashion-MNIST are classic small sets; textile defects is an inspection task.",
        "No image datasets are registered yet: choose Upload above to add a zip of class folders.",
    )
    if dataset is not None:
        show_image_overview(dataset)


def image_upload_section() -> None:
    how = st.radio(
        "What you upload",
        IMAGE_UPLOADS,
        key="data_image_upload_kind",
        horizontal=True,
        help="A zip with one folder per class (cats/1.jpg, dogs/2.png …), "
        "or a CSV with the columns path,label plus a zip holding those paths.",
    )
    archive = st.file_uploader(
        "Zip of images", type=["zip"], key="data_image_zip", help="JPEG, PNG, BMP, GIF, WebP or TIFF images in a .zip file."
    )
    table = None
    if how == IMAGE_UPLOADS[1]:
        table = st.file_uploader(
            "CSV of path,label",
            type=["csv"],
            key="data_image_csv",
            help="One row per image: its path inside the zip, and its class.",
        )
    if archive is None or (how == IMAGE_UPLOADS[1] and table is None):
        st.info(
            "Upload a zip with one folder per class"
            + (", and the CSV naming each image's class." if table is None and how == IMAGE_UPLOADS[1] else ".")
        )
        return
    name_key = f"data_image_name_{archive.file_id}"  # a new upload proposes its own file name
    st.text_input(
        "Dataset name",
        value=Path(archive.name).stem,
        key=name_key,
        help="The name the dataset is saved under; letters, digits, dots, dashes and underscores.",
    )
    csv = (table.name, table.getvalue()) if table is not None else (None, None)
    st.button(
        "Save image dataset",
        key="data_image_save",
        type="primary",
        on_click=save_image_upload,
        args=(name_key, archive.name, archive.getvalue(), *csv),
        help="Checks every image and class and saves the dataset to the workspace if it is usable.",
    )


def save_image_upload(name_key: str, filename: str, data: bytes, csv_filename: str | None, csv_data: bytes | None) -> None:
    from core.images import register_image_dataset

    state = st.session_state
    try:
        info = register_image_dataset(
            state.get(name_key) or Path(filename).stem, filename, data, csv_filename=csv_filename, csv_data=csv_data
        )
    except UserError as error:
        state[SAVE_MESSAGE_KEY] = ("error", str(error))
        return
    state[SAVE_MESSAGE_KEY] = ("success", f"Saved {info.key!r}: {info.description}")
    state["data_image_source"] = "Registered"
    state["data_image_registered"] = info.key


def image_settings(dataset: str) -> dict:
    with st.expander("Split settings", expanded=dataset == "fashion-mnist"):
        seed = st.number_input(
            "Seed",
            min_value=0,
            value=42,
            step=1,
            key="data_image_seed",
            help="The same seed always puts the same images in the same split.",
        )
        default = DEFAULT_SUBSAMPLE if dataset == "fashion-mnist" else 0
        max_rows = st.number_input(
            "Subsample size (0 = all images)",
            min_value=0,
            value=default,
            step=500,
            key=f"data_image_max_rows_{dataset}",
            help="A stratified sample of this many images, for quick experiments (Fashion-MNIST has 70,000).",
        )
    return {"seed": int(seed), "max_rows": int(max_rows) or None}


def dataset_stamp(dataset: str) -> float:
    if dataset in dataset_kind(IMAGE_CLASSIFICATION).builtins:
        return 0.0
    marker = Path(workspace_root()) / "datasets" / dataset / "meta.json"
    return marker.stat().st_mtime if marker.exists() else 0.0


def show_image_overview(dataset: str) -> None:
    settings = image_settings(dataset)
    prepare_with_bar(dataset_kind(IMAGE_CLASSIFICATION), dataset)
    key = (str(workspace_root()), dataset, settings["seed"], settings["max_rows"], dataset_stamp(dataset))
    splits = cached_image_splits(*key)
    sizes = splits.sizes()
    st.markdown(f"**{sum(sizes.values()):,} images** in {len(splits.label_names)} classes: {', '.join(splits.label_names)}")
    st.caption(f"Source: {splits.source}")
    for column, name in zip(st.columns(len(SPLIT_NAMES)), SPLIT_NAMES):
        column.metric(f"{name} images", f"{sizes[name]:,}")
    st.subheader("A few training images per class")
    for label, thumbnails in cached_thumbnails(*key, THUMBNAILS_PER_CLASS).items():
        st.markdown(f"**{label}**")
        if thumbnails:
            st.image(
                [png for _, png in thumbnails],
                caption=["#" + ref.rpartition("#")[2] for ref, _ in thumbnails],
                width=THUMBNAIL_SIZE,
            )
        else:
            st.caption("No training images of this class.")
    balance_column, size_column = st.columns([3, 2])
    with balance_column:
        st.subheader("Class balance")
        st.plotly_chart(viz.image_class_balance(splits.class_balance()), key="data_image_balance")
    with size_column:
        st.subheader("Image sizes")
        st.caption(f"Read from up to {SIZE_SAMPLE} images; the model's processor resizes them for training.")
        st.dataframe(cached_image_sizes(*key), hide_index=True, key="data_image_sizes")
