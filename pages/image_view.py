"""The image classification view of Inspect: a gallery instead of a table, patch overlays instead of token maps,
the sanity check, the whole selection explained, and stage-vs-stage or run-vs-run flips as galleries."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import inspect, viz
from core.errors import UserError
from core.store import Run
from pages import (
    VERDICTS,
    class_summary_panel,
    classification_header,
    clear_filters,
    explanation_settings,
    faithfulness_panel,
    get_explainer,
    keep_valid,
    method_picker,
    reset_page,
    sanity_panel,
    selection_request,
    show_delta,
)
from pages.compare import compare_panel
from pages.data_map import data_map_panel
from pages.drift import drift_panel

IMAGE_FILTER_KEYS = ("inspect_misclassified", "inspect_gold", "inspect_predicted", "inspect_confidence")
GALLERY_COLUMNS = 6
THUMBNAIL = 96
OVERLAY = 256


@st.cache_data(show_spinner=False, max_entries=2048)
def image_png(workspace: str, reference: str, size: int) -> bytes:
    """A small PNG of one image of a prediction frame (by reference), cached across reruns."""
    from core.images import open_image

    return viz.thumbnail_png(open_image(reference), size)


def open_picture(reference: str):
    from core.images import open_image

    return open_image(reference)


def patch_method_picker(slot: str, label: str, optional: bool = False) -> tuple[str | None, dict[str, Any]]:
    return method_picker(
        "patches",
        f"inspect_image_method_{slot}",
        f"inspect_image_param_{slot}",
        label,
        optional,
        "How patch importance is computed; each method's description appears below.",
    )


def model_view(explainer, picture):
    """The image as the model sees it (resized and cropped by its processor), so patches line up; else as stored."""
    try:
        return explainer.input_image(picture)
    except Exception:  # noqa: BLE001 - an explainer without input_image, or a processor that cannot skip normalising
        return picture


def explain_image(explainer, picture, method: str, target, params: dict[str, Any]):
    try:
        return explainer.explain(picture, method=method, target=target, **params)
    except UserError as problem:
        st.error(str(problem))
        return None


def draw_overlay(explanation, picture, opacity: float, heading: str = "", size: int = OVERLAY, slot: str = "a") -> None:
    """The patch map over the image, its caption, and IG's convergence delta (a warning when large)."""
    from core.explain import describe

    caption = (
        f"{heading + ' · ' if heading else ''}{describe(explanation.method, explanation.params)} · "
        f"explaining '{explanation.target_label}'"
    )
    with st.container(key=f"inspect_overlay_{slot}"):
        st.image(viz.patch_overlay(picture, explanation, opacity, size=size), caption=caption, width=size, output_format="PNG")
        st.html(viz.overlay_legend_html(explanation))
    show_delta(explanation)


def image_gallery(shown: pd.DataFrame, workspace: str, key_prefix: str, selectable: bool = True) -> None:
    """Thumbnails in rows with gold / predicted / confidence captions; a button under each selects it."""
    rows = list(shown.index)
    for start in range(0, len(rows), GALLERY_COLUMNS):
        for column, row in zip(st.columns(GALLERY_COLUMNS), rows[start : start + GALLERY_COLUMNS]):
            record = shown.loc[row]
            mark = VERDICTS[bool(record["correct"])]
            column.image(
                image_png(workspace, record["image"], THUMBNAIL),
                width=THUMBNAIL,
                caption=f"{mark} #{row} {record['gold']} → {record['predicted']} · {record['confidence']:.0%}",
            )
            if selectable:
                column.button(
                    "Explain",
                    key=f"{key_prefix}_{row}",
                    on_click=select_image,
                    args=(int(row),),
                    help="Show this image's probabilities and attribution map below.",
                )


def select_image(row: int) -> None:
    st.session_state["inspect_example"] = row


def image_filters(names: list[str]) -> inspect.Filters:
    keep_valid("inspect_gold", names)
    keep_valid("inspect_predicted", names)
    row1 = st.columns([1.2, 2, 2, 2, 1.3, 0.9])
    misclassified = row1[0].toggle("Errors only", key="inspect_misclassified", on_change=reset_page)
    gold = row1[1].multiselect("Gold class", names, key="inspect_gold", on_change=reset_page, placeholder="any")
    predicted = row1[2].multiselect("Predicted class", names, key="inspect_predicted", on_change=reset_page, placeholder="any")
    confidence = row1[3].slider("Confidence", 0.0, 1.0, (0.0, 1.0), step=0.01, key="inspect_confidence", on_change=reset_page)
    hardest = row1[4].toggle(
        "Hardest first",
        value=True,
        key="inspect_hardest",
        on_change=reset_page,
        help="Sort by loss, highest first: the images the model is most confidently wrong about lead.",
    )
    row1[5].button("Show all", key="inspect_clear", on_click=clear_filters, help="Clear every filter (and the clicked cell).")
    return inspect.Filters(
        misclassified_only=misclassified, gold=gold, predicted=predicted, confidence=tuple(confidence), hardest_first=hardest
    )


def image_view(run: Run, stage: str, split: str, frame: pd.DataFrame, names: list[str]) -> None:
    """Sections 3–8 for an image run: gallery, selected image with overlays, sanity check, selection, compare."""
    from core.workspace import workspace_root

    workspace = str(workspace_root())
    st.subheader("Predictions")
    filtered = inspect.filter_predictions(frame, image_filters(names))
    pages = inspect.page_count(len(filtered), inspect.IMAGE_PAGE_SIZE)
    if st.session_state.get("inspect_page", 1) > pages:
        reset_page()
    count_column, pager_column = st.columns([2, 3])
    count_column.caption(
        f"{len(filtered):,} of {len(frame):,} images" + (f" · {inspect.IMAGE_PAGE_SIZE} a page" if pages > 1 else "")
    )
    with pager_column:
        page = st.pagination(pages, key="inspect_page") if pages > 1 else 1
    shown = inspect.page_of(filtered, page, inspect.IMAGE_PAGE_SIZE)
    row_ids = [int(row) for row in shown.index]
    with st.container(key="inspect_gallery_grid"):
        image_gallery(shown, workspace, "inspect_pick")

    with st.expander("Explanation settings: method, its parameters, a second method, target class, opacity", expanded=False):
        settings, third = explanation_settings(patch_method_picker, names)
        with third:
            grid = st.number_input(
                "Patch grid (cells per side)",
                min_value=2,
                max_value=32,
                value=7,
                step=1,
                key="inspect_image_grid",
                help="For convolutional models, the grid the map is summed over; a ViT always uses its own patches.",
            )
    # The grid travels with each method's parameters (a ViT ignores it and uses its own patch grid).
    settings["params"] = {**settings["params"], "grid": int(grid)}
    settings["params_b"] = {**settings["params_b"], "grid": int(grid)}
    opacity = st.slider(
        "Overlay opacity",
        0.0,
        1.0,
        0.55,
        0.05,
        key="inspect_opacity",
        help="How strongly the attribution colours cover the image (the strongest patch at this opacity).",
    )

    example_tab, gallery_tab, compare_tab, map_tab, classes_tab = st.tabs(
        ["Selected image", "Explain this selection", "Compare models", "Data map", "Classes"]
    )
    with example_tab:
        selected_image(run, stage, split, frame, names, filtered, row_ids, settings, opacity)
    with gallery_tab:
        selection_overlays(run, stage, split, frame, filtered, settings, opacity)
    with compare_tab:
        compare_panel(run, stage, split, frame, flip_galleries(workspace))
    with map_tab:
        data_map_panel(run, "image")
    with classes_tab:
        class_summary_panel(run, stage, split)


def selected_image(run, stage, split, frame, names, filtered, row_ids, settings, opacity) -> None:
    if not row_ids:
        st.info("No image matches these filters; loosen them or press Show all.")
        return
    if st.session_state.get("inspect_example") not in list(filtered.index):
        st.session_state["inspect_example"] = row_ids[0]
    example_id = st.selectbox(
        "Image (or press Explain under a thumbnail)",
        [int(row) for row in filtered.index],
        key="inspect_example",
        format_func=lambda row: (
            f"#{row} · gold {frame.at[row, 'gold']} → predicted {frame.at[row, 'predicted']} ({frame.at[row, 'confidence']:.0%})"
        ),
    )
    example = frame.loc[example_id]
    st.markdown(
        f"**#{example_id}** · gold **{example['gold']}** · predicted **{example['predicted']}** "
        f"({example['confidence']:.1%}) · loss {example['loss']:.3f}"
        + ("" if example["correct"] else " · :material/close: misclassified")
    )
    picture = open_picture(example["image"])
    probabilities_column, map_column = st.columns([1, 2])
    with probabilities_column:
        st.image(viz.thumbnail_png(picture, 160), caption=f"{example['image']} ({picture.width}×{picture.height})", width=160)
        st.plotly_chart(
            viz.probability_bars(names, [float(example[f"p({name})"]) for name in names], example["predicted"], example["gold"]),
            key="inspect_probabilities",
            width="stretch",
            config={"displayModeBar": False},
        )
    if settings["method"] is None:
        map_column.info("Image explanations are not available yet in this installation.")
        return
    explainer = get_explainer(run, stage)
    if explainer is None:
        return
    target = inspect.target_for(settings["target"], example["gold"])
    seen = model_view(explainer, picture)
    chosen = [(settings["method"], settings["params"])] + (
        [(settings["method_b"], settings["params_b"])] if settings["method_b"] else []
    )
    with map_column, st.container(key="inspect_overlay_area"):
        for column, (method, params), slot in zip(st.columns(len(chosen)), chosen, "ab"):
            with column:
                explanation = explain_image(explainer, picture, method, target, params)
                if explanation is not None:
                    draw_overlay(explanation, seen, opacity, size=OVERLAY if len(chosen) == 1 else 200, slot=slot)
    sanity_panel(
        explainer,
        picture,
        target,
        settings,
        (run.id, stage, split, example_id),
        lambda explanation, heading, slot: draw_overlay(explanation, seen, opacity, heading, size=200, slot=slot),
    )
    faithfulness_panel(explainer, picture, target, (run.id, stage, split, example_id), grid=settings["params"].get("grid", 7))
    drift_panel(run, picture, target, settings, (run.id, split, example_id))


def selection_overlays(run, stage, split, frame, filtered, settings, opacity) -> None:
    wanted = selection_request(run, stage, split, filtered, settings, "images of the filtered gallery", inspect.IMAGE_PAGE_SIZE)
    if wanted is None:
        return
    rows = frame.loc[wanted["rows"]]
    explainer = get_explainer(run, stage)
    if explainer is None or rows.empty:
        return
    pictures = [open_picture(reference) for reference in rows["image"]]
    targets = [inspect.target_for(wanted["target"], gold) for gold in rows["gold"]]
    bar = st.progress(0.0, text="Explaining…")
    try:
        explanations = explainer.explain_many(
            pictures,
            wanted["method"],
            target=targets if wanted["target"] == "gold" else targets[0],
            progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message),
            **wanted["params"],
        )
    except UserError as problem:
        st.error(str(problem))
        explanations = []
    bar.empty()
    items = list(zip(rows.index, pictures, explanations))
    with st.container(key="inspect_selection_overlays"):
        for start in range(0, len(items), 4):
            for column, (row, picture, explanation) in zip(st.columns(4), items[start : start + 4]):
                mark = VERDICTS[bool(rows.at[row, "correct"])]
                column.image(
                    viz.patch_overlay(model_view(explainer, picture), explanation, opacity, size=160),
                    width=160,
                    output_format="PNG",
                    caption=f"{mark} #{row} · gold {rows.at[row, 'gold']} → {rows.at[row, 'predicted']} "
                    f"· explaining '{explanation.target_label}'",
                )


def flip_galleries(workspace: str):
    """Draws the fixed and the broken images of a comparison as galleries (for `compare_panel`)."""

    def draw(comparison, first: tuple, second: tuple) -> None:
        label_a, label_b = first[2], second[2]
        for title, flips in (
            (f"**Fixed** — wrong under {label_a}, right under {label_b}", comparison.fixed),
            (f"**Broken** — right under {label_a}, wrong under {label_b}", comparison.broken),
        ):
            st.markdown(f"{title}: {len(flips)}")
            shown = flips.iloc[: inspect.IMAGE_PAGE_SIZE].rename(
                columns={f"predicted ({label_b})": "predicted", f"confidence ({label_b})": "confidence"}
            )
            if not shown.empty:
                image_gallery(
                    shown.assign(correct=shown["predicted"] == shown["gold"]), workspace, f"inspect_flip_{title[:7]}", False
                )
                if len(flips) > len(shown):
                    st.caption(f"The first {len(shown)} of {len(flips)} shown.")

    return draw


def image_inspector(run: Run, pick_stage, pick_split) -> None:
    """Inspect one image classification run (the Inspect page hands it the run and its stage and split columns)."""
    _, stage, split, frame, names = classification_header(run, pick_stage, pick_split)
    image_view(run, stage, split, frame, names)
