"""Inspect: where a run's model errs and why — metrics, a clickable confusion matrix, the examples
behind each cell, token attributions (text) or patch overlays (images), a sanity check, and
before/after (or run vs run) flips. Sections 1–2 are shared; a modality's own view (MODALITY_VIEWS)
draws the rest, and text keeps the table-based script below.

The page only reads state, calls `core.inspect` / `core.explain` and draws with `core.viz`.
torch, transformers and captum load inside the explanation functions, so the metrics, matrix and
table appear before the first model is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
from functools import partial
from typing import Any

import pandas as pd
import streamlit as st

from core import inspect, viz
from core.errors import UserError
from core.store import Run
from pages import PAGE_ICONS, VERDICTS, method_picker, open_store, run_label, show_delta

FILTER_KEYS = ("inspect_misclassified", "inspect_gold", "inspect_predicted", "inspect_confidence", "inspect_contains", "inspect_lengths")

st.title("Inspect")
store = open_store()


# --- helpers (drawing and session state only; the logic lives in core.inspect) ----------------


def stop_with(problem: UserError) -> None:
    st.error(str(problem))
    st.stop()


def load_predictions(run: Run, split: str, stage: str) -> pd.DataFrame:
    """Stored predictions, or predict once (with a progress bar) and store them for next time."""
    if inspect.predictions_path(run, split, stage).is_file():
        return inspect.predictions(run, split, stage)
    bar = st.progress(0.0, text=f"Predicting the {split} split with the '{stage}' model (once; kept for next time)…")
    try:
        return inspect.predictions(run, split, stage, progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    finally:
        bar.empty()


@st.cache_resource(max_entries=4, show_spinner="Loading the model for explanations…")
def explainer_for(run_id: str, stage: str, written_at: int | None, modality: str):
    """One explainer per (run, stage, time its model was written): a re-saved model gets a fresh one."""
    from core.explain import load_image_explainer, load_text_explainer

    return {"text": load_text_explainer, "image": load_image_explainer}[modality](run_id, stage)


def get_explainer(run: Run, stage: str, modality: str = "text"):
    try:
        return explainer_for(run.id, stage, inspect.stage_stamp(run, stage), modality)
    except UserError as problem:
        st.error(str(problem))
    except Exception as problem:  # noqa: BLE001 - a checkpoint a running trainer is still writing, or rotated away
        st.error(f"The '{stage}' model of run {run.id} could not be read ({type(problem).__name__}); "
                 "a running run may still be writing it. Pick another stage or try again in a moment.")
    return None


def explanation_settings(picker, names: list[str]) -> tuple[dict[str, Any], Any]:
    """Method, optional second method and target class, the same for every modality; `picker` is the
    modality's method picker. Returns the settings and the third column, for the modality's extras."""
    settings: dict[str, Any] = {}
    left, right, third = st.columns(3)
    with left:
        settings["method"], settings["params"] = picker("a", "Method")
    with right:
        settings["method_b"], settings["params_b"] = picker("b", "Second method, side by side (optional)", optional=True)
    with third:
        settings["target"] = st.selectbox(
            "Class to explain", ["predicted", "gold", *names], key="inspect_target",
            format_func=lambda choice: {"predicted": "the predicted class", "gold": "the gold class"}.get(choice, choice),
        )
    return settings, third


def reset_page() -> None:
    st.session_state["inspect_page"] = 1


def clear_filters() -> None:
    for key in FILTER_KEYS:
        st.session_state.pop(key, None)
    reset_page()


def show_cell(gold: str, predicted: str) -> None:
    """What a click on a confusion cell does: the table shows exactly that cell's examples."""
    clear_filters()
    st.session_state["inspect_gold"] = [gold]
    st.session_state["inspect_predicted"] = [predicted]
    st.session_state.pop("inspect_example", None)


def on_cell_click(chart_key: str, names: list[str]) -> None:
    cell = inspect.cell_from_selection(st.session_state.get(chart_key), names)
    if cell:
        show_cell(*cell)


def on_row_click(table_key: str, row_ids: list[int]) -> None:
    rows = ((st.session_state.get(table_key) or {}).get("selection") or {}).get("rows") or []
    if rows and rows[0] < len(row_ids):
        st.session_state["inspect_example"] = row_ids[rows[0]]


def keep_valid(key: str, allowed: list) -> None:
    """Drop remembered choices that the current run does not have (another run, other classes)."""
    if key in st.session_state:
        st.session_state[key] = [value for value in st.session_state[key] if value in allowed]


def text_method_picker(slot: str, label: str, optional: bool = False) -> tuple[str | None, dict[str, Any]]:
    return method_picker("tokens", f"inspect_method_{slot}", f"inspect_param_{slot}", label, optional,
                         "How token importance is computed; each method's description appears below.")


def explain(explainer, text: str, method: str, target: str | None, params: dict[str, Any], merge: bool):
    try:
        return explainer.explain(text, method=method, target=target, merge_words=merge, **params)
    except UserError as problem:
        st.error(str(problem))
        return None


def draw_explanation(explanation, heading: str = "") -> None:
    """A token map with its caption, IG's convergence delta and the truncation note."""
    from core.explain import describe

    caption = (
        f"{heading + ' · ' if heading else ''}{describe(explanation.method, explanation.params)} · explaining "
        f"'{explanation.target_label}' · predicted '{explanation.predicted_label}' "
        f"({max(explanation.probabilities):.1%}) · {explanation.seconds:.2f}s"
    )
    st.html(viz.token_attribution_html(explanation.units, explanation.scores, caption=caption, signed=explanation.signed))
    show_delta(explanation)
    if explanation.truncated:
        st.info(f"This text is longer than the model's limit of {settings['max_length']} tokens; only the first ones were explained (as in training).")


def explain_pair(explainer, text: str, target: str | None, merge: bool) -> None:
    """The chosen method, and the second one beside it when one is picked."""
    chosen = [(settings["method"], settings["params"])]
    if settings["method_b"]:
        chosen.append((settings["method_b"], settings["params_b"]))
    columns = st.columns(len(chosen))
    for column, (method, params) in zip(columns, chosen):
        with column:
            explanation = explain(explainer, text, method, target, params, merge)
            if explanation is not None:
                draw_explanation(explanation)


# --- the image modality: a gallery instead of a table, patch overlays instead of token maps -------

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
    return method_picker("patches", f"inspect_image_method_{slot}", f"inspect_image_param_{slot}", label, optional,
                         "How patch importance is computed; each method's description appears below.")


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

    caption = (f"{heading + ' · ' if heading else ''}{describe(explanation.method, explanation.params)} · "
               f"explaining '{explanation.target_label}'")
    with st.container(key=f"inspect_overlay_{slot}"):
        st.image(viz.patch_overlay(picture, explanation, opacity, size=size), caption=caption, width=size, output_format="PNG")
        st.html(viz.overlay_legend_html(explanation))
    show_delta(explanation)


def image_gallery(shown: pd.DataFrame, workspace: str, key_prefix: str, selectable: bool = True) -> None:
    """Thumbnails in rows with gold / predicted / confidence captions; a button under each selects it."""
    rows = list(shown.index)
    for start in range(0, len(rows), GALLERY_COLUMNS):
        for column, row in zip(st.columns(GALLERY_COLUMNS), rows[start:start + GALLERY_COLUMNS]):
            record = shown.loc[row]
            mark = VERDICTS[bool(record["correct"])]
            column.image(image_png(workspace, record["image"], THUMBNAIL), width=THUMBNAIL,
                         caption=f"{mark} #{row} {record['gold']} → {record['predicted']} · {record['confidence']:.0%}")
            if selectable:
                column.button("Explain", key=f"{key_prefix}_{row}", on_click=select_image, args=(int(row),),
                              help="Show this image's probabilities and attribution map below.")


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
    hardest = row1[4].toggle("Hardest first", value=True, key="inspect_hardest", on_change=reset_page,
                             help="Sort by loss, highest first: the images the model is most confidently wrong about lead.")
    row1[5].button("Show all", key="inspect_clear", on_click=clear_filters, help="Clear every filter (and the clicked cell).")
    return inspect.Filters(misclassified_only=misclassified, gold=gold, predicted=predicted, confidence=tuple(confidence),
                           hardest_first=hardest)


def image_view(run: Run, stage: str, split: str, frame: pd.DataFrame, names: list[str], stages: list[str]) -> None:
    """Sections 3–8 for an image run: gallery, selected image with overlays, sanity check, selection, compare."""
    from core.workspace import workspace_root

    workspace = str(workspace_root())
    st.subheader("Predictions")
    filtered = inspect.filter_predictions(frame, image_filters(names))
    pages = inspect.page_count(len(filtered), inspect.IMAGE_PAGE_SIZE)
    if st.session_state.get("inspect_page", 1) > pages:
        reset_page()
    count_column, pager_column = st.columns([2, 3])
    count_column.caption(f"{len(filtered):,} of {len(frame):,} images" + (f" · {inspect.IMAGE_PAGE_SIZE} a page" if pages > 1 else ""))
    with pager_column:
        page = st.pagination(pages, key="inspect_page") if pages > 1 else 1
    shown = inspect.page_of(filtered, page, inspect.IMAGE_PAGE_SIZE)
    row_ids = [int(row) for row in shown.index]
    with st.container(key="inspect_gallery_grid"):
        image_gallery(shown, workspace, "inspect_pick")

    with st.expander("Explanation settings: method, its parameters, a second method, target class, opacity", expanded=False):
        settings, third = explanation_settings(patch_method_picker, names)
        with third:
            grid = st.number_input("Patch grid (cells per side)", min_value=2, max_value=32, value=7, step=1, key="inspect_image_grid",
                                   help="For convolutional models, the grid the map is summed over; a ViT always uses its own patches.")
    # The grid travels with each method's parameters (a ViT ignores it and uses its own patch grid).
    settings["params"] = {**settings["params"], "grid": int(grid)}
    settings["params_b"] = {**settings["params_b"], "grid": int(grid)}
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key="inspect_opacity",
                        help="How strongly the attribution colours cover the image (the strongest patch at this opacity).")

    example_tab, gallery_tab, compare_tab = st.tabs(["Selected image", "Explain this selection", "Compare stages"])
    with example_tab:
        selected_image(run, stage, split, frame, names, filtered, row_ids, settings, opacity)
    with gallery_tab:
        selection_overlays(run, stage, split, frame, filtered, settings, opacity)
    with compare_tab:
        compare_stages(run, stage, split, frame, stages, workspace)


def selected_image(run, stage, split, frame, names, filtered, row_ids, settings, opacity) -> None:
    if not row_ids:
        st.info("No image matches these filters; loosen them or press Show all.")
        return
    if st.session_state.get("inspect_example") not in list(filtered.index):
        st.session_state["inspect_example"] = row_ids[0]
    example_id = st.selectbox(
        "Image (or press Explain under a thumbnail)", [int(row) for row in filtered.index], key="inspect_example",
        format_func=lambda row: f"#{row} · gold {frame.at[row, 'gold']} → predicted {frame.at[row, 'predicted']} ({frame.at[row, 'confidence']:.0%})",
    )
    example = frame.loc[example_id]
    st.markdown(f"**#{example_id}** · gold **{example['gold']}** · predicted **{example['predicted']}** "
                f"({example['confidence']:.1%}) · loss {example['loss']:.3f}" + ("" if example["correct"] else " · :material/close: misclassified"))
    picture = open_picture(example["image"])
    probabilities_column, map_column = st.columns([1, 2])
    with probabilities_column:
        st.image(viz.thumbnail_png(picture, 160), caption=f"{example['image']} ({picture.width}×{picture.height})", width=160)
        st.plotly_chart(
            viz.probability_bars(names, [float(example[f"p({name})"]) for name in names], example["predicted"], example["gold"]),
            key="inspect_probabilities", width="stretch", config={"displayModeBar": False},
        )
    if settings["method"] is None:
        map_column.info("Image explanations are not available yet in this installation.")
        return
    explainer = get_explainer(run, stage, "image")
    if explainer is None:
        return
    target = inspect.target_for(settings["target"], example["gold"])
    seen = model_view(explainer, picture)
    chosen = [(settings["method"], settings["params"])] + ([(settings["method_b"], settings["params_b"])] if settings["method_b"] else [])
    with map_column, st.container(key="inspect_overlay_area"):
        for column, (method, params), slot in zip(st.columns(len(chosen)), chosen, "ab"):
            with column:
                explanation = explain_image(explainer, picture, method, target, params)
                if explanation is not None:
                    draw_overlay(explanation, seen, opacity, size=OVERLAY if len(chosen) == 1 else 200, slot=slot)
    with st.container(border=True):
        st.markdown("**Sanity check** — does the map change when the learned weights are randomised?")
        scope_column, button_column = st.columns([3, 1])
        scope = scope_column.radio("Randomise", ["head", "all"], horizontal=True, key="inspect_sanity_scope",
                                   format_func=lambda s: {"head": "the classifier head", "all": "every layer"}[s])
        context = (run.id, stage, split, example_id, settings["method"], str(settings["params"]), target, scope)
        if button_column.button("Sanity check", key="inspect_sanity_go"):
            from core.explain import randomization_check

            with st.spinner("Explaining again with randomised weights…"):
                try:
                    st.session_state["inspect_sanity_result"] = (
                        context, randomization_check(explainer, picture, settings["method"], target, scope=scope, **settings["params"]))
                except UserError as problem:
                    st.error(str(problem))
        remembered = st.session_state.get("inspect_sanity_result")
        if remembered and remembered[0] == context:
            result = remembered[1]
            st.metric("Spearman rank correlation", f"{result['spearman']:+.2f}")
            (st.success if abs(result["spearman"]) < 0.5 else st.warning)(result["verdict"])
            pair = [(result.get("original"), "trained model", "sanity_trained"), (result.get("randomized"), "randomised " + scope, "sanity_random")]
            for column, (explanation, heading, slot) in zip(st.columns(2), pair):
                if explanation is not None:
                    with column:
                        draw_overlay(explanation, seen, opacity, heading, size=200, slot=slot)


def selection_overlays(run, stage, split, frame, filtered, settings, opacity) -> None:
    capped_rows, capped = inspect.gallery_rows(filtered, inspect.IMAGE_PAGE_SIZE)
    st.caption(f"Explains the {len(capped_rows)} images of the filtered gallery in its order"
               + (f" (the first {inspect.IMAGE_PAGE_SIZE} of {len(filtered):,}; narrow the filters to see others)" if capped else "")
               + ", with the method and class chosen above. Explanations are cached: a second look is instant.")
    request = {"context": (run.id, stage, split), "rows": [int(row) for row in capped_rows.index], "method": settings["method"],
               "params": dict(settings["params"]), "target": settings["target"]}
    if st.button("Explain this selection", key="inspect_gallery_go", disabled=capped_rows.empty or settings["method"] is None):
        st.session_state["inspect_gallery"] = request
    wanted = st.session_state.get("inspect_gallery")
    if not wanted or wanted["context"] != request["context"]:
        return
    if wanted != request:
        st.caption("The filters or settings changed since: press the button again to explain the current selection.")
    rows = frame.loc[wanted["rows"]]
    explainer = get_explainer(run, stage, "image")
    if explainer is None or rows.empty:
        return
    pictures = [open_picture(reference) for reference in rows["image"]]
    targets = [inspect.target_for(wanted["target"], gold) for gold in rows["gold"]]
    bar = st.progress(0.0, text="Explaining…")
    try:
        explanations = explainer.explain_many(
            pictures, wanted["method"], target=targets if wanted["target"] == "gold" else targets[0],
            progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message), **wanted["params"],
        )
    except UserError as problem:
        st.error(str(problem))
        explanations = []
    bar.empty()
    items = list(zip(rows.index, pictures, explanations))
    with st.container(key="inspect_selection_overlays"):
        for start in range(0, len(items), 4):
            for column, (row, picture, explanation) in zip(st.columns(4), items[start:start + 4]):
                mark = VERDICTS[bool(rows.at[row, "correct"])]
                column.image(viz.patch_overlay(model_view(explainer, picture), explanation, opacity, size=160), width=160, output_format="PNG",
                             caption=f"{mark} #{row} · gold {rows.at[row, 'gold']} → {rows.at[row, 'predicted']} · explaining '{explanation.target_label}'")


def compare_stages(run, stage, split, frame, stages, workspace) -> None:
    others = [s for s in stages if s != stage]
    if not others:
        st.info("This run has only one stage with a model, so there is nothing to compare it with.")
        return
    other = st.selectbox("Stage to compare with", others, key="inspect_compare_stage")
    first, second = sorted([stage, other], key=stages.index)
    try:
        frame_a = frame if first == stage else load_predictions(run, split, first)
        frame_b = frame if second == stage else load_predictions(run, split, second)
        comparison = inspect.compare(frame_a, frame_b, (first, second))
    except UserError as problem:
        st.error(str(problem))
        return
    a_column, b_column, changed_column = st.columns(3)
    a_column.metric(f"Accuracy · {first}", f"{comparison.accuracy_a:.1%}")
    b_column.metric(f"Accuracy · {second}", f"{comparison.accuracy_b:.1%}",
                    delta=f"{(comparison.accuracy_b - comparison.accuracy_a) * 100:+.1f} points")
    changed_column.metric("Predictions that changed", f"{comparison.changed:,}")
    for title, flips in ((f"**Fixed** — wrong under {first}, right under {second}", comparison.fixed),
                         (f"**Broken** — right under {first}, wrong under {second}", comparison.broken)):
        st.markdown(f"{title}: {len(flips)}")
        shown = frame_b.loc[flips.index[:inspect.IMAGE_PAGE_SIZE]]
        if not shown.empty:
            image_gallery(shown, workspace, f"inspect_flip_{title[:7]}", selectable=False)
            if len(flips) > len(shown):
                st.caption(f"The first {len(shown)} of {len(flips)} shown.")


MODALITY_VIEWS = {"image": image_view}  # text is drawn by the rest of this script
# Tasks whose runs the page hands over whole (module, function), imported only when such a run is picked.
TASK_VIEWS = {"token_classification": ("pages.ner_view", "ner_inspector"),
              "image_text_contrastive": ("pages.pair_view", "pair_inspector"),
              "image_text_fusion": ("pages.pair_view", "pair_inspector")}


# --- 1. run, stage, split --------------------------------------------------------------------

runs = store.list()
if not runs:
    st.info("No runs yet. Train a model on the Train page; then come back here to see where it errs and why.")
    st.page_link("pages/views/train.py", label="Go to Train", icon=PAGE_ICONS["pages/views/train.py"])
    st.stop()

by_id = {run.id: run for run in runs}
pick_run, pick_stage, pick_split = st.columns([3, 2, 1])
run_id = pick_run.selectbox(
    "Run", list(by_id), format_func=lambda key: run_label(by_id[key]), key="inspect_run", persist_state="session",
    help="A finished run, or a running one (its latest checkpoint).",
)
run = by_id[run_id]
if run.task in TASK_VIEWS:  # tasks with their own view: entity tagging, image-text pairs
    module, view = TASK_VIEWS[run.task]
    getattr(importlib.import_module(module), view)(run, pick_stage, pick_split)
    st.stop()
try:
    stages = inspect.stages(run)
except UserError as problem:
    stop_with(problem)
stage = pick_stage.selectbox(
    "Stage", stages, index=len(stages) - 1, key=f"inspect_stage_{run.id}",
    help="Which model of the run: 'before' is the pretrained encoder with its untrained head, checkpoints are saved "
         "during training, 'after' is the final model.",
)
split = pick_split.selectbox("Split", inspect.SPLITS, key="inspect_split", persist_state="session",
                             help="The run's own held-out test split by default; the same split as in training.")
if run.status == "running":
    st.caption(f"This run is still training; you are looking at its '{stage}' model.")

try:
    frame = load_predictions(run, split, stage)
    names = inspect.label_names(run, frame)
except UserError as problem:
    stop_with(problem)

# --- 2. metrics, report, confusion matrix ----------------------------------------------------

headline = inspect.headline(frame, names)
accuracy, macro_f1, examples, errors = st.columns(4)
accuracy.metric("Accuracy", f"{headline['accuracy']:.1%}")
macro_f1.metric("Macro F1", f"{headline['macro F1']:.3f}")
examples.metric("Examples", f"{headline['examples']:,}")
errors.metric("Errors", f"{headline['errors']:,}")

matrix_column, report_column = st.columns([3, 2])
with matrix_column:
    st.markdown("**Confusion matrix** — click a cell to list its examples below")
    chart_key = f"inspect_confusion_{run.id}_{stage}_{split}"
    st.plotly_chart(
        viz.confusion_matrix(inspect.confusion_counts(frame, names)), key=chart_key, width="content",
        on_select=partial(on_cell_click, chart_key, names), selection_mode="points",
        config={"displayModeBar": False},
    )
with report_column:
    st.markdown("**Classification report**")
    st.dataframe(viz.report_table(inspect.classification_report(frame, names)), width="stretch")

if inspect.modality(run) in MODALITY_VIEWS:
    MODALITY_VIEWS[inspect.modality(run)](run, stage, split, frame, names, stages)
    st.stop()

# --- 3. the predictions table ----------------------------------------------------------------

st.subheader("Predictions")
keep_valid("inspect_gold", names)
keep_valid("inspect_predicted", names)
bins = [name for name, _, _ in inspect.LENGTH_BINS]
keep_valid("inspect_lengths", bins)
row1 = st.columns([1.2, 2, 2, 2])
misclassified = row1[0].toggle("Errors only", key="inspect_misclassified", on_change=reset_page)
gold = row1[1].multiselect("Gold class", names, key="inspect_gold", on_change=reset_page, placeholder="any")
predicted = row1[2].multiselect("Predicted class", names, key="inspect_predicted", on_change=reset_page, placeholder="any")
confidence = row1[3].slider("Confidence", 0.0, 1.0, (0.0, 1.0), step=0.01, key="inspect_confidence", on_change=reset_page)
row2 = st.columns([3, 2, 1.3, 0.9])
contains = row2[0].text_input("Text contains", key="inspect_contains", on_change=reset_page, placeholder="a word or phrase (any case)")
lengths = row2[1].multiselect("Length", bins, key="inspect_lengths", on_change=reset_page, placeholder="any length")
hardest = row2[2].toggle("Hardest first", value=True, key="inspect_hardest", on_change=reset_page,
                         help="Sort by loss, highest first: the examples the model is most confidently wrong about lead.")
row2[3].button("Show all", key="inspect_clear", on_click=clear_filters, help="Clear every filter (and the clicked cell).")

filters = inspect.Filters(misclassified_only=misclassified, gold=gold, predicted=predicted, confidence=tuple(confidence),
                          contains=contains, lengths=lengths, hardest_first=hardest)
filtered = inspect.filter_predictions(frame, filters)
pages = inspect.page_count(len(filtered))
if st.session_state.get("inspect_page", 1) > pages:
    reset_page()
count_column, pager_column = st.columns([2, 3])
count_column.caption(f"{len(filtered):,} of {len(frame):,} examples" + (f" · {inspect.PAGE_SIZE} a page" if pages > 1 else ""))
with pager_column:
    page = st.pagination(pages, key="inspect_page") if pages > 1 else 1
shown = inspect.page_of(filtered, page)
row_ids = [int(row) for row in shown.index]
table_key = "inspect_table_" + hashlib.sha1(f"{run.id}{stage}{split}{row_ids}".encode()).hexdigest()[:12]
st.dataframe(
    shown[list(inspect.TABLE_COLUMNS)], key=table_key, on_select=partial(on_row_click, table_key, row_ids),
    selection_mode="single-row", width="stretch", height=min(38 + 35 * max(1, len(shown)), 420),
    column_config={
        "text": st.column_config.TextColumn("text", width="large"),
        "confidence": st.column_config.NumberColumn("confidence", format="%.3f"),
        "loss": st.column_config.NumberColumn("loss", format="%.3f"),
    },
)

# --- 4. explanation settings -----------------------------------------------------------------

with st.expander("Explanation settings: method, its parameters, a second method, target class", expanded=False):
    settings, third = explanation_settings(text_method_picker, names)
    with third:
        settings["merge"] = st.toggle("Merge word pieces into words", key="inspect_merge",
                                      help="Sum the scores of the pieces of a word (un ##believ ##able → unbelievable).")
try:
    from core.run_files import run_config

    settings["max_length"] = run_config(run).max_length
except UserError:
    settings["max_length"] = "its"

example_tab, sentence_tab, gallery_tab, compare_tab = st.tabs(
    ["Selected example", "Your sentence", "Explain this selection", "Compare models"]
)

# --- 5. the selected example: probabilities, attribution, sanity check -------------------------

with example_tab:
    if shown.empty:
        st.info("No example matches these filters; loosen them or press Show all.")
        example_id = None
    else:
        if st.session_state.get("inspect_example") not in row_ids:
            st.session_state["inspect_example"] = row_ids[0]
        example_id = st.selectbox(
            "Example (or click a row of the table)", row_ids, key="inspect_example",
            format_func=lambda row: f"#{row} · gold {frame.at[row, 'gold']} → predicted {frame.at[row, 'predicted']} · {frame.at[row, 'text'][:80]}",
        )
    if example_id is not None:
        example = frame.loc[example_id]
        st.markdown(f"**#{example_id}** · gold **{example['gold']}** · predicted **{example['predicted']}** "
                    f"({example['confidence']:.1%}) · loss {example['loss']:.3f}" + ("" if example["correct"] else " · :material/close: misclassified"))
        probabilities_column, map_column = st.columns([1, 2])
        with probabilities_column:
            st.plotly_chart(
                viz.probability_bars(names, [float(example[f"p({name})"]) for name in names], example["predicted"], example["gold"]),
                key="inspect_probabilities", width="stretch", config={"displayModeBar": False},
            )
        with map_column:
            explainer = get_explainer(run, stage)
            if explainer is not None:
                target = inspect.target_for(settings["target"], example["gold"])
                explain_pair(explainer, example["text"], target, settings["merge"])
        if explainer is not None:
            with st.container(border=True):
                st.markdown("**Sanity check** — does the map change when the learned weights are randomised?")
                scope_column, button_column = st.columns([3, 1])
                scope = scope_column.radio(
                    "Randomise", ["head", "all"], horizontal=True, key="inspect_sanity_scope",
                    format_func=lambda s: {"head": "the classifier head", "all": "every layer"}[s],
                )
                context = (run.id, stage, split, example_id, settings["method"], str(settings["params"]), target, scope)
                if button_column.button("Sanity check", key="inspect_sanity_go"):
                    from core.explain import randomization_check

                    with st.spinner("Explaining again with randomised weights…"):
                        try:
                            st.session_state["inspect_sanity_result"] = (
                                context, randomization_check(explainer, example["text"], settings["method"], target, scope=scope, **settings["params"]))
                        except UserError as problem:
                            st.error(str(problem))
                remembered = st.session_state.get("inspect_sanity_result")
                if remembered and remembered[0] == context:
                    result = remembered[1]
                    st.metric("Spearman rank correlation", f"{result['spearman']:+.2f}")
                    (st.success if abs(result["spearman"]) < 0.5 else st.warning)(result["verdict"])
                    trained_map, randomised_map = st.columns(2)
                    with trained_map:
                        draw_explanation(result["original"], "trained model")
                    with randomised_map:
                        draw_explanation(result["randomized"], "randomised " + ("head" if scope == "head" else "model"))

# --- 6. any sentence ---------------------------------------------------------------------------

with sentence_tab:
    text = st.text_area("Type any sentence", key="inspect_free_text", height=80,
                        placeholder="e.g. an excellent film with a terrible ending")
    if st.button("Predict and explain", key="inspect_free_go", type="primary"):
        if not text.strip():
            st.error("The text is empty: type a sentence first, then press Predict and explain.")
            st.session_state.pop("inspect_free_shown", None)
        else:
            st.session_state["inspect_free_shown"] = text
    typed = st.session_state.get("inspect_free_shown")
    if typed and typed == text:
        explainer = get_explainer(run, stage)
        if explainer is not None:
            target_choice = settings["target"]
            if target_choice == "gold":
                st.caption("A typed sentence has no gold label: explaining the predicted class.")
                target_choice = "predicted"
            try:
                probabilities = explainer.predict_proba([typed])[0]
            except UserError as problem:
                st.error(str(problem))
            else:
                best = explainer.label_names[int(probabilities.argmax())]
                st.markdown(f"Predicted **{best}** ({probabilities.max():.1%})")
                left, right = st.columns([1, 2])
                with left:
                    st.plotly_chart(viz.probability_bars(explainer.label_names, [float(p) for p in probabilities], best),
                                    key="inspect_free_probabilities", width="stretch", config={"displayModeBar": False})
                with right:
                    explain_pair(explainer, typed, inspect.target_for(target_choice, None), settings["merge"])

# --- 7. the gallery: every example of the current selection ----------------------------------

with gallery_tab:
    capped_rows, capped = inspect.gallery_rows(filtered)
    st.caption(
        f"Explains the {len(capped_rows)} examples of the filtered table in its order"
        + (f" (the first {inspect.GALLERY_CAP} of {len(filtered):,}; narrow the filters to see others)" if capped else "")
        + ", with the method and class chosen above. Explanations are cached: a second look is instant."
    )
    request = {
        "context": (run.id, stage, split), "rows": [int(row) for row in capped_rows.index], "method": settings["method"],
        "params": dict(settings["params"]), "target": settings["target"], "merge": settings["merge"],
    }
    if st.button("Explain this selection", key="inspect_gallery_go", disabled=capped_rows.empty):
        st.session_state["inspect_gallery"] = request
    wanted = st.session_state.get("inspect_gallery")
    if wanted and wanted["context"] == request["context"]:
        if wanted != request:
            st.caption("The filters or settings changed since: press the button again to explain the current selection.")
        rows = frame.loc[wanted["rows"]]
        explainer = get_explainer(run, stage)
        if explainer is not None and not rows.empty:
            targets = [inspect.target_for(wanted["target"], gold_label) for gold_label in rows["gold"]]
            bar = st.progress(0.0, text="Explaining…")
            try:
                gallery = explainer.explain_many(
                    rows["text"].tolist(), wanted["method"], target=targets, merge_words=wanted["merge"],
                    progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message), **wanted["params"],
                )
            except UserError as problem:
                st.error(str(problem))
                gallery = []
            bar.empty()
            for row, explanation in zip(rows.index, gallery):
                mark = VERDICTS[bool(rows.at[row, "correct"])]
                draw_explanation(explanation, f"{mark} #{row} · gold {rows.at[row, 'gold']}")

# --- 8. compare two stages or two runs on the same split -------------------------------------

with compare_tab:
    mode = st.radio("Compare with", ["another stage of this run", "another run"], horizontal=True, key="inspect_compare_mode")
    other_run, other_stage = run, None
    if mode == "another stage of this run":
        others = [s for s in stages if s != stage]
        if not others:
            st.info("This run has only one stage with a model; compare it with another run instead.")
        else:
            other_stage = st.selectbox("Stage to compare with", others, key="inspect_compare_stage")
    else:
        candidates = [r.id for r in runs if r.id != run.id]
        if not candidates:
            st.info("There is no other run to compare with yet.")
        else:
            other_id = st.selectbox("Run to compare with", candidates, format_func=lambda key: run_label(by_id[key]), key="inspect_compare_run")
            other_run = by_id[other_id]
            try:
                other_stages = inspect.stages(other_run)
            except UserError as problem:
                st.error(str(problem))
            else:
                other_stage = st.selectbox("Its stage", other_stages, index=len(other_stages) - 1, key=f"inspect_compare_stage_{other_id}")
    if other_stage is not None:
        # A = the earlier model (the other run, or the earlier stage), B = the later one.
        ours, theirs = (run, stage), (other_run, other_stage)
        if other_run.id == run.id:
            first, second = sorted([ours, theirs], key=lambda pair: stages.index(pair[1]))
            label_a, label_b = first[1], second[1]
        else:
            first, second = theirs, ours
            label_a, label_b = f"{other_run.name} · {other_stage}", f"{run.name} · {stage}"
        try:
            frame_a = frame if first == ours else load_predictions(first[0], split, first[1])
            frame_b = frame if second == ours else load_predictions(second[0], split, second[1])
            comparison = inspect.compare(frame_a, frame_b, (label_a, label_b))
        except UserError as problem:
            st.error(str(problem))
        else:
            a_column, b_column, changed_column = st.columns(3)
            a_column.metric(f"Accuracy · {label_a}", f"{comparison.accuracy_a:.1%}")
            b_column.metric(f"Accuracy · {label_b}", f"{comparison.accuracy_b:.1%}",
                            delta=f"{(comparison.accuracy_b - comparison.accuracy_a) * 100:+.1f} points")
            changed_column.metric("Predictions that changed", f"{comparison.changed:,}")
            flip_columns = ["text", "gold", f"predicted ({label_a})", f"predicted ({label_b})", f"confidence ({label_b})"]
            fixed_column, broken_column = st.columns(2)
            with fixed_column:
                st.markdown(f"**Fixed** — wrong under {label_a}, right under {label_b}: {len(comparison.fixed)}")
                st.dataframe(comparison.fixed[flip_columns], width="stretch", height=min(38 + 35 * max(1, len(comparison.fixed)), 300), key="inspect_compare_fixed")
            with broken_column:
                st.markdown(f"**Broken** — right under {label_a}, wrong under {label_b}: {len(comparison.broken)}")
                st.dataframe(comparison.broken[flip_columns], width="stretch", height=min(38 + 35 * max(1, len(comparison.broken)), 300), key="inspect_compare_broken")
            flipped = [int(row) for row in comparison.fixed.index] + [int(row) for row in comparison.broken.index]
            choices = flipped + ([example_id] if example_id is not None and example_id not in flipped else [])
            if choices:
                # Opt-in: explaining under both models loads a second model.
                chosen = st.selectbox(
                    "Example to explain under both models", choices, index=None, key="inspect_compare_example",
                    placeholder="pick a flipped example to see its attribution under both models",
                    format_func=lambda row: ("fixed · " if row in comparison.fixed.index else "broken · " if row in comparison.broken.index else "selected · ")
                    + f"#{row} · gold {frame.at[row, 'gold']} · {frame.at[row, 'text'][:80]}",
                )
            if choices and chosen is not None:
                target = inspect.target_for(settings["target"], frame.at[chosen, "gold"])
                if target is None:
                    st.caption("Each model explains its own predicted class; pick a class in the explanation settings to explain the same one under both.")
                side_a, side_b = st.columns(2)
                for column, (which_run, which_stage), label in ((side_a, first, label_a), (side_b, second, label_b)):
                    with column:
                        explainer = get_explainer(which_run, which_stage)
                        if explainer is not None:
                            explanation = explain(explainer, frame.at[chosen, "text"], settings["method"], target, settings["params"], settings["merge"])
                            if explanation is not None:
                                draw_explanation(explanation, label)
