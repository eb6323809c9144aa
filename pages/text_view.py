"""The text classification view of Inspect: a filterable predictions table, token attributions for the
selected example, any typed sentence and the whole selection, a sanity check, and stage-vs-stage or run-vs-run flips.

It reads state, calls `core.inspect` / `core.explain` and draws with `core.viz`; torch, transformers and captum
load inside the explanation functions, so the metrics, matrix and table appear before the first model is loaded.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any

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
    on_row_click,
    reset_page,
    sanity_panel,
    selection_request,
    show_delta,
)
from pages.compare import compare_panel, flip_tables
from pages.data_map import data_map_panel, edit_panel
from pages.drift import drift_panel


def text_method_picker(slot: str, label: str, optional: bool = False) -> tuple[str | None, dict[str, Any]]:
    return method_picker(
        "tokens",
        f"inspect_method_{slot}",
        f"inspect_param_{slot}",
        label,
        optional,
        "How token importance is computed; each method's description appears below.",
    )


def explain(explainer, text: str, method: str, target: str | None, params: dict[str, Any], merge: bool):
    try:
        return explainer.explain(text, method=method, target=target, merge_words=merge, **params)
    except UserError as problem:
        st.error(str(problem))
        return None


def draw_explanation(explanation, heading: str = "", limit: int | str = "its", kept: str = "head") -> None:
    """A token map with its caption, IG's convergence delta and the truncation note."""
    from core.explain import describe

    caption = (
        f"{heading + ' · ' if heading else ''}{describe(explanation.method, explanation.params)} · explaining "
        f"'{explanation.target_label}' · predicted '{explanation.predicted_label}' "
        f"({max(explanation.probabilities):.1%}) · {explanation.seconds:.2f}s"
    )
    st.html(viz.token_attribution_html(explanation.units, explanation.scores, caption=caption, signed=explanation.signed))
    show_delta(explanation)
    windows = explanation.params.get("windows")
    if windows:
        st.caption(
            f"Sliding window: {windows} windows of {limit} tokens pooled by {explanation.params.get('pooling', 'mean')}, "
            "as in training. Each window was explained towards the pooled prediction's class, and the map stitches their "
            "maps over the whole text (a token two windows read gets the mean of its scores)."
        )
    elif explanation.truncated:
        which = {"tail": "last ones", "head_tail": "first quarter and the last three quarters"}.get(kept, "first ones")
        st.info(
            f"This text is longer than the model's limit of {limit} tokens; only the {which} were read and explained "
            f"(the run keeps each text's {kept.replace('_', ' and ')}, as in training)."
        )


def explain_side_by_side(explainer, text: str, target: str | None, settings: dict[str, Any]) -> None:
    """The chosen method, and the second one beside it when one is picked (`settings` from `explanation_settings`)."""
    chosen = [(settings["method"], settings["params"])]
    if settings["method_b"]:
        chosen.append((settings["method_b"], settings["params_b"]))
    columns = st.columns(len(chosen))
    for column, (method, params) in zip(columns, chosen):
        with column:
            explanation = explain(explainer, text, method, target, params, settings["merge"])
            if explanation is not None:
                draw_explanation(explanation, limit=settings["max_length"], kept=settings["kept_end"])


def text_inspector(run: Run, pick_stage, pick_split) -> None:
    """Inspect one text classification run (the Inspect page hands it the run and its stage and split columns)."""
    _, stage, split, frame, names = classification_header(run, pick_stage, pick_split)
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
    contains = row2[0].text_input(
        "Text contains", key="inspect_contains", on_change=reset_page, placeholder="a word or phrase (any case)"
    )
    lengths = row2[1].multiselect("Length", bins, key="inspect_lengths", on_change=reset_page, placeholder="any length")
    hardest = row2[2].toggle(
        "Hardest first",
        value=True,
        key="inspect_hardest",
        on_change=reset_page,
        help="Sort by loss, highest first: the examples the model is most confidently wrong about lead.",
    )
    row2[3].button("Show all", key="inspect_clear", on_click=clear_filters, help="Clear every filter (and the clicked cell).")

    filters = inspect.Filters(
        misclassified_only=misclassified,
        gold=gold,
        predicted=predicted,
        confidence=tuple(confidence),
        contains=contains,
        lengths=lengths,
        hardest_first=hardest,
    )
    filtered = inspect.filter_predictions(frame, filters)
    pages = inspect.page_count(len(filtered))
    if st.session_state.get("inspect_page", 1) > pages:
        reset_page()
    count_column, pager_column = st.columns([2, 3])
    count_column.caption(
        f"{len(filtered):,} of {len(frame):,} examples" + (f" · {inspect.PAGE_SIZE} a page" if pages > 1 else "")
    )
    with pager_column:
        page = st.pagination(pages, key="inspect_page") if pages > 1 else 1
    shown = inspect.page_of(filtered, page)
    row_ids = [int(row) for row in shown.index]
    table_key = "inspect_table_" + hashlib.sha1(f"{run.id}{stage}{split}{row_ids}".encode()).hexdigest()[:12]
    st.dataframe(
        shown[list(inspect.TABLE_COLUMNS)],
        key=table_key,
        on_select=partial(on_row_click, table_key, row_ids),
        selection_mode="single-row",
        width="stretch",
        height=min(38 + 35 * max(1, len(shown)), 420),
        column_config={
            "text": st.column_config.TextColumn("text", width="large"),
            "confidence": st.column_config.NumberColumn("confidence", format="%.3f"),
            "loss": st.column_config.NumberColumn("loss", format="%.3f"),
        },
    )

    if split == "train":  # error slice → retrain: the filtered training rows (a confusion cell, errors only, a word)
        slice_rows = filtered.assign(example=filtered.index, label=filtered["gold"])[["example", "text", "label"]]
        edit_panel(run, slice_rows, key="inspect_slice_edit", predicted=frame["predicted"])
    else:
        st.caption("To edit training rows and retrain on them, pick the train split above; the filters select the rows.")

    # --- 4. explanation settings -----------------------------------------------------------------

    with st.expander("Explanation settings: method, its parameters, a second method, target class", expanded=False):
        settings, third = explanation_settings(text_method_picker, names)
        with third:
            settings["merge"] = st.toggle(
                "Merge word pieces into words",
                key="inspect_merge",
                help="Sum the scores of the pieces of a word (un ##believ ##able → unbelievable).",
            )
    try:
        from core.run_files import run_config

        settings["max_length"], settings["kept_end"] = run_config(run).max_length, run_config(run).truncation
    except UserError:
        settings["max_length"], settings["kept_end"] = "its", "head"

    example_tab, sentence_tab, gallery_tab, compare_tab, map_tab, classes_tab = st.tabs(
        ["Selected example", "Your sentence", "Explain this selection", "Compare models", "Data map", "Classes"]
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
                "Example (or click a row of the table)",
                row_ids,
                key="inspect_example",
                format_func=lambda row: (
                    f"#{row} · gold {frame.at[row, 'gold']} → predicted {frame.at[row, 'predicted']} "
                    f"· {frame.at[row, 'text'][:80]}"
                ),
            )
        if example_id is not None:
            example = frame.loc[example_id]
            st.markdown(
                f"**#{example_id}** · gold **{example['gold']}** · predicted **{example['predicted']}** "
                f"({example['confidence']:.1%}) · loss {example['loss']:.3f}"
                + ("" if example["correct"] else " · :material/close: misclassified")
            )
            probabilities_column, map_column = st.columns([1, 2])
            with probabilities_column:
                st.plotly_chart(
                    viz.probability_bars(
                        names, [float(example[f"p({name})"]) for name in names], example["predicted"], example["gold"]
                    ),
                    key="inspect_probabilities",
                    width="stretch",
                    config={"displayModeBar": False},
                )
            with map_column:
                explainer = get_explainer(run, stage)
                if explainer is not None:
                    target = inspect.target_for(settings["target"], example["gold"])
                    explain_side_by_side(explainer, example["text"], target, settings)
            if explainer is not None:
                sanity_panel(
                    explainer,
                    example["text"],
                    target,
                    settings,
                    (run.id, stage, split, example_id),
                    lambda explanation, heading, slot: draw_explanation(
                        explanation, heading, settings["max_length"], settings["kept_end"]
                    ),
                )
                faithfulness_panel(explainer, example["text"], target, (run.id, stage, split, example_id))
                drift_panel(run, example["text"], target, settings, (run.id, split, example_id))

    # --- 6. any sentence ---------------------------------------------------------------------------

    with sentence_tab:
        text = st.text_area(
            "Type any sentence", key="inspect_free_text", height=80, placeholder="e.g. an excellent film with a terrible ending"
        )
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
                        st.plotly_chart(
                            viz.probability_bars(explainer.label_names, [float(p) for p in probabilities], best),
                            key="inspect_free_probabilities",
                            width="stretch",
                            config={"displayModeBar": False},
                        )
                    with right:
                        explain_side_by_side(explainer, typed, inspect.target_for(target_choice, None), settings)

    # --- 7. the gallery: every example of the current selection ----------------------------------

    with gallery_tab:
        wanted = selection_request(
            run,
            stage,
            split,
            filtered,
            settings,
            "examples of the filtered table",
            inspect.GALLERY_CAP,
            {"merge": settings["merge"]},
        )
        if wanted:
            rows = frame.loc[wanted["rows"]]
            explainer = get_explainer(run, stage)
            if explainer is not None and not rows.empty:
                targets = [inspect.target_for(wanted["target"], gold_label) for gold_label in rows["gold"]]
                bar = st.progress(0.0, text="Explaining…")
                try:
                    gallery = explainer.explain_many(
                        rows["text"].tolist(),
                        wanted["method"],
                        target=targets,
                        merge_words=wanted["merge"],
                        progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message),
                        **wanted["params"],
                    )
                except UserError as problem:
                    st.error(str(problem))
                    gallery = []
                bar.empty()
                for row, explanation in zip(rows.index, gallery):
                    mark = VERDICTS[bool(rows.at[row, "correct"])]
                    draw_explanation(
                        explanation, f"{mark} #{row} · gold {rows.at[row, 'gold']}", settings["max_length"], settings["kept_end"]
                    )

    # --- 8. compare two stages or two runs on the same split -------------------------------------

    with compare_tab:
        compared = compare_panel(run, stage, split, frame, draw_flip_tables)
        if compared is not None:
            explain_under_both(frame, example_id, settings, *compared)

    # --- 9. the training data map ------------------------------------------------------------------

    with map_tab:
        data_map_panel(run, "text")
    with classes_tab:
        class_summary_panel(run, stage, split)


def draw_flip_tables(comparison, first: tuple, second: tuple) -> None:
    """The fixed and the broken examples side by side, as tables of their texts."""
    label_a, label_b = first[2], second[2]
    columns = ["text", "gold", f"predicted ({label_a})", f"predicted ({label_b})", f"confidence ({label_b})"]
    flip_tables(comparison, first, second, columns, "inspect_compare")


def explain_under_both(frame, example_id: int | None, settings: dict[str, Any], comparison, first: tuple, second: tuple) -> None:
    """A flipped (or the selected) example explained under both models, side by side; opt-in, since it loads a
    second model."""
    flipped = [int(row) for row in comparison.fixed.index] + [int(row) for row in comparison.broken.index]
    choices = flipped + ([example_id] if example_id is not None and example_id not in flipped else [])
    if not choices:
        return

    def verdict(row: int) -> str:
        return "fixed" if row in comparison.fixed.index else "broken" if row in comparison.broken.index else "selected"

    chosen = st.selectbox(
        "Example to explain under both models",
        choices,
        index=None,
        key="inspect_compare_example",
        placeholder="pick a flipped example to see its attribution under both models",
        format_func=lambda row: f"{verdict(row)} · #{row} · gold {frame.at[row, 'gold']} · {frame.at[row, 'text'][:80]}",
    )
    if chosen is None:
        return
    target = inspect.target_for(settings["target"], frame.at[chosen, "gold"])
    if target is None:
        st.caption(
            "Each model explains its own predicted class; pick a class in the explanation settings to explain the same one "
            "under both."
        )
    for column, (which_run, which_stage, label) in zip(st.columns(2), (first, second)):
        with column:
            explainer = get_explainer(which_run, which_stage)
            if explainer is None:
                continue
            text = frame.at[chosen, "text"]
            explanation = explain(explainer, text, settings["method"], target, settings["params"], settings["merge"])
            if explanation is not None:
                draw_explanation(explanation, label, settings["max_length"], settings["kept_end"])
