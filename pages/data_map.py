"""Inspect's data map and error slice → retrain: pick training rows (a data-map region, a lasso, the mislabel
candidates, or the filtered predictions of the train split), relabel, drop, up-weight or augment them, and queue a
child run on the new dataset version; the child's Compare tab then shows it against its parent.

It draws what `core.dynamics` and `core.retrain` compute; nothing here changes data itself.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import viz
from core.errors import UserError
from core.store import Run

ACTION_LABELS = {"relabel": "Relabel", "drop": "Drop", "upweight": "Up-weight", "augment": "Augment"}


def data_map_panel(run: Run, shown: str) -> None:
    """The training data map (`core.dynamics`): lasso or box-select points, or pick a region, to list those training
    examples; and the mislabel candidates (confident-never, stable: the model never came round to their label).
    Either list can be edited into a new dataset version and retrained on (text runs)."""
    from core.dynamics import REGIONS, data_map
    from core.label_check import checked_candidates

    try:
        frame = data_map(run)
    except UserError as problem:
        st.info(str(problem))
        return
    st.caption(
        f"Each point is one of {len(frame)} training examples: how sure the model was of its gold label over the "
        "epochs (confidence) and how much that moved (variability), from the training passes themselves."
    )
    event = st.plotly_chart(
        viz.data_map(frame, shown), key="inspect_data_map", on_select="rerun", selection_mode=("box", "lasso"),
        width="stretch",
    )  # fmt: skip
    picked = [point["customdata"] for point in (event.selection.points if event and event.selection else [])]
    counts = frame["region"].value_counts()
    region = st.radio(
        "Region",
        ["all", *REGIONS],
        horizontal=True,
        key="inspect_map_region",
        format_func=lambda name: name if name == "all" else f"{name} ({counts.get(name, 0)})",
        help="Show the training examples of one region; a lasso or box on the map picks points instead.",
    )
    chosen = frame[frame["example"].isin(picked)] if picked else frame if region == "all" else frame[frame["region"] == region]
    columns = ["example", shown, "label", "confidence", "variability", "correctness", "region"]
    st.markdown(f"**{len(chosen)} training example(s)**" + (" picked on the map" if picked else ""))
    st.dataframe(chosen[columns].sort_values("confidence"), hide_index=True, width="stretch", key="inspect_map_rows")
    k = st.number_input(
        "Mislabel candidates to list", min_value=1, max_value=len(frame), value=min(20, len(frame)), key="inspect_map_k"
    )
    st.markdown("**Mislabel candidates** — lowest confidence first: check their labels.")
    candidates, agreement = checked_candidates(run, frame, int(k))
    st.dataframe(
        candidates[[*columns, *(["cleanlab"] if "cleanlab" in candidates else [])]],
        hide_index=True,
        width="stretch",
        key="inspect_map_candidates",
        column_config={"cleanlab": st.column_config.CheckboxColumn("cleanlab", help="cleanlab's find_label_issues flags it too")},
    )
    st.caption(agreement)
    if "cleanlab" not in candidates:
        cross_check_button(run)
    if shown == "text":
        source = st.radio(
            "Rows to edit",
            ["the mislabel candidates", "the rows listed above"],
            horizontal=True,
            key="inspect_map_edit_rows",
        )
        rows = candidates if source == "the mislabel candidates" else chosen
        edit_panel(run, rows[["example", "text", "label"]], key="inspect_map_edit")


def cross_check_button(run: Run) -> None:
    """Start (or show) the fold runs whose out-of-sample probabilities cleanlab's cross-check reads."""
    from core.label_check import needs_start, start_cross_check
    from core.retrain import VERSIONED_TASKS

    if run.status != "completed" or run.task not in VERSIONED_TASKS or not needs_start(run):
        return
    if st.button(
        "Cross-check with cleanlab", key="inspect_map_cross_check", help="Queues the fold runs; come back when they finish."
    ):
        try:
            runs = start_cross_check(run.id)
        except UserError as problem:
            st.error(str(problem))
            return
        st.success(f"Queued the fold runs {', '.join(fold.id for fold in runs)}; the Runs page shows them training.")


def edit_panel(run: Run, rows: pd.DataFrame, key: str, predicted: pd.Series | None = None) -> None:
    """Relabel, drop, up-weight or augment `rows` (example, text, label: positions in the run's training split) into a
    new dataset version and queue a child run on it. A relabel starts from `predicted` (by example: the class the
    model predicts for a slice of its predictions) or, for the data map's rows, from the class the model proposed while
    it trained (`core.retrain.proposed_labels`)."""
    from core.data.versions import MAX_COPIES, Edit, proposed_name
    from core.retrain import VERSIONED_TASKS, retrain
    from core.run_files import run_config

    with st.expander(f"Edit these {len(rows)} training rows and retrain", expanded=False):
        if run.task not in VERSIONED_TASKS or run.status != "completed":
            st.caption("Dataset versions are made from completed text classification runs.")
            return
        st.caption(
            "The edits go into a new dataset version (this run's exact splits, the original untouched), and a run with "
            "this run's settings trains on it; its Compare tab then shows what the edits fixed and broke."
        )
        action = st.radio("Action", list(ACTION_LABELS), format_func=ACTION_LABELS.get, horizontal=True, key=f"{key}_action")
        examples = tuple(int(example) for example in rows["example"])
        if action == "relabel":
            edits = relabel_edits(run, rows, key, predicted)
        elif action == "drop":
            edits = [Edit("drop", examples)]
        else:
            copies = st.number_input(
                "More copies of each row", min_value=1, max_value=MAX_COPIES, value=1, key=f"{key}_copies",
                help="Up-weight: exact copies, so each row counts that many more times; augment: copies with a word "
                "dropped and two words swapped.",
            )  # fmt: skip
            edits = [Edit(action, examples, copies=int(copies))]
        name = st.text_input("Name of the new dataset version", value=proposed_name(run_config(run).dataset), key=f"{key}_name")
        if st.button("Write the version and retrain", type="primary", key=f"{key}_go", disabled=not edits):
            try:
                version, child = retrain(run.id, edits, name.strip() or None)
            except UserError as problem:
                st.error(str(problem))
                return
            st.success(
                f"Wrote the dataset version {version.name} ({version.summary()}) and queued run {child.id}. When it "
                "finishes, pick it here and open Compare models → its parent run."
            )


def relabel_edits(run: Run, rows: pd.DataFrame, key: str, predicted: pd.Series | None) -> list:
    """An editable table of the rows with a "new label" column; the relabel edits it asks for (one per new class)."""
    from core.data.versions import Edit

    start = "the class the model predicts"
    if predicted is None:
        from core.inspect import label_names
        from core.retrain import proposed_labels

        start = "the class the model predicted instead while it trained, where it did"
        try:
            proposed = proposed_labels(run).reindex(rows["example"])
            names = label_names(run)
        except UserError as problem:
            st.error(str(problem))
            return []
        predicted = proposed.fillna(rows.set_index("example")["label"])
    else:
        names = sorted(set(predicted) | set(rows["label"]))
    table = rows.assign(**{"new label": predicted.reindex(rows["example"]).to_numpy()}).reset_index(drop=True)
    edited = st.data_editor(
        table,
        disabled=["example", "text", "label"],
        hide_index=True,
        width="stretch",
        key=f"{key}_table",
        column_config={
            "text": st.column_config.TextColumn("text", width="large"),
            "new label": st.column_config.SelectboxColumn("new label", options=names, required=True),
        },
    )
    changed = edited[edited["new label"] != edited["label"]]
    st.caption(f"{len(changed)} of {len(edited)} rows get a new label (it starts as {start}).")
    return [
        Edit("relabel", tuple(int(example) for example in group["example"]), label=str(label))
        for label, group in changed.groupby("new label", sort=True)
    ]


def parent_panel(run: Run, split: str, stage: str, draw_flips):
    """A run trained on a dataset version against the run the version was made from: lineage, accuracy overall and per
    class, the edited training rows, and the fixed and broken examples (drawn by the view's `draw_flips`). Returns
    (comparison, first, second) as `compare_panel` does, or None when there is nothing to compare."""
    from core.retrain import compare_with_parent, edited_rows, lineage

    try:
        steps = lineage(run.id)
        outcome = compare_with_parent(run.id, split=split, stage=stage)
    except UserError as problem:
        st.error(str(problem))
        return None
    st.markdown("**Lineage** — " + " → ".join(step.text if step.exists else f"~~{step.text}~~" for step in steps))
    comparison = outcome.comparison
    before, after = st.columns(2)
    before.metric(f"Accuracy · parent {outcome.parent.id}", f"{comparison.accuracy_a:.1%}")
    after.metric(
        "Accuracy · this run", f"{comparison.accuracy_b:.1%}",
        delta=f"{(comparison.accuracy_b - comparison.accuracy_a) * 100:+.1f} points",
    )  # fmt: skip
    slices = outcome.slices.assign(change=outcome.slices["change"] * 100)
    st.dataframe(
        slices,
        hide_index=True,
        width="stretch",
        key="inspect_parent_slices",
        column_config={
            "accuracy (parent)": st.column_config.NumberColumn(format="percent"),
            "accuracy (child)": st.column_config.NumberColumn(format="percent"),
            "change": st.column_config.NumberColumn("change (points)", format="%+.1f"),
        },
    )
    if st.button("Check the edited training rows under both models", key="inspect_parent_edited"):
        with st.spinner("Predicting the edited rows with both models…"):
            st.dataframe(edited_rows(outcome, stage), hide_index=True, width="stretch", key="inspect_parent_edited_rows")
    # The labels are the names `compare_with_parent` gave the two sides' columns.
    compared = (comparison, (outcome.parent, stage, "parent"), (run, stage, "child"))
    draw_flips(*compared)
    return compared
