"""The Inspect page's view of a token-classification run: entity report and per-type confusion for entity tags,
per-tag report and confusion for plain tags (part of speech, say), then the sentences gold vs predicted."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core import run_files, viz
from core.errors import UserError
from core.explain.methods import methods_for
from core.ner.inspect import (
    MISSING,
    entities,
    filter_sentences,
    ner_predictions,
    readable_flips,
    run_scheme,
    type_confusion,
)
from core.ner.schemes import is_entity_scheme
from core.store import Run
from pages import faithfulness_panel, method_params, show_delta
from pages.compare import compare_panel, flip_tables
from pages.drift import drift_panel

PAGE_SIZE = 25


def ner_inspector(run: Run, stage_column, split_column) -> None:
    """Stage and split pickers for a NER run (its stored predictions), then the NER view."""
    from core.checkpoints import available_stages

    stored = (
        sorted(p.stem for p in (run.directory / "predictions").glob("*.parquet"))
        if (run.directory / "predictions").is_dir()
        else []
    )
    stages = [stage for stage in available_stages(run) if any(name.endswith(f"_{stage}") for name in stored)]
    if not stages:
        st.info(f"Run {run.id} has no stored predictions yet: they are written at step 0 and when training ends.")
        return
    stage = stage_column.selectbox(
        "Stage",
        stages,
        index=len(stages) - 1,
        key=f"inspect_ner_stage_{run.id}",
        help="'before' is the model before its first update, 'after' the final model.",
    )
    splits = [name.rsplit("_", 1)[0] for name in stored if name.endswith(f"_{stage}")]
    split = split_column.selectbox("Split", splits, key=f"inspect_ner_split_{run.id}", help="The held-out split to look at.")
    render_ner(run, split, stage)


def render_ner(run: Run, split: str, stage: str) -> None:
    try:
        frame = ner_predictions(run, split, stage)
    except UserError as problem:
        st.error(str(problem))
        return
    report = run_files.test_report(run, "after" if stage == "after" else "before") if split == "test" else None
    spans_are_entities = is_entity_scheme(run_scheme(run, frame))
    types = sorted({kind for cell in frame["gold_entities"] for kind, _, _ in entities(cell)})
    columns = st.columns(4)
    columns[0].metric("Sentences", len(frame))
    columns[1].metric("Sentences with errors", int((~frame["correct"]).sum()))
    if report:
        scores = report_metrics(report, spans_are_entities)
        for column, (label, value) in zip(columns[2:], scores.items()):
            column.metric(label, f"{value:.3f}")
        st.markdown(
            "**Entity-level report** (seqeval, strict: precision, recall, F1 per entity type; the micro F1 is "
            "the run's logged f1)"
            if spans_are_entities
            else "**Per-tag report** (scikit-learn, over words: precision, recall, F1 per tag; the macro F1 is the "
            "run's logged f1)"
        )
        st.dataframe(viz.report_table(report), width="content")
    confusion = type_confusion(frame)
    if not confusion.empty:
        st.markdown(
            f"**Per-type confusion** — same span, gold type vs predicted type; *{MISSING}* = missed or spurious"
            if spans_are_entities
            else f"**Per-tag confusion** — each word's gold tag (rows) vs predicted tag (columns); *{MISSING}* = a word "
            "cut off by the max length"
        )
        st.dataframe(confusion, width="content")
    st.subheader("Sentences")
    one, two, three = st.columns(3)
    errors_only = one.toggle(
        "Errors only",
        key="inspect_ner_errors",
        help=f"Only sentences whose {'entities' if spans_are_entities else 'tags'} differ from the gold ones.",
    )
    error_type = two.selectbox(
        "Errors of type" if spans_are_entities else "Errors on tag",
        ["any", *types],
        key="inspect_ner_type",
        help="Only sentences with a missed or spurious entity of this type."
        if spans_are_entities
        else "Only sentences with a word whose gold or predicted tag is this one, and wrong.",
    )
    contains = three.text_input("Text contains", key="inspect_ner_contains")
    shown = filter_sentences(
        frame, errors_only=errors_only, error_type=None if error_type == "any" else error_type, contains=contains
    )
    st.caption(f"{len(shown)} of {len(frame)} sentences, hardest first; gold above, predicted below.")
    explain_a_tag(run, stage, shown)
    for _, row in shown.head(PAGE_SIZE).iterrows():
        tokens = list(row["tokens"])
        marker = ":material/check_circle:" if row["correct"] else ":material/cancel:"
        st.markdown(
            f"{marker} gold: " + viz.entity_spans_html(tokens, entities(row["gold_entities"]), types), unsafe_allow_html=True
        )
        st.markdown(
            "&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;predicted: "
            + viz.entity_spans_html(tokens, entities(row["predicted_entities"]), types),
            unsafe_allow_html=True,
        )
    st.subheader("Compare models")
    compare_panel(run, stage, split, frame, draw_sentence_flips)


def draw_sentence_flips(comparison, first: tuple, second: tuple) -> None:
    """The sentences one model tags right and the other wrong, with the gold spans and both models' (for `compare_panel`)."""
    label_a, label_b = first[2], second[2]
    columns = ["text", "gold", f"predicted ({label_a})", f"predicted ({label_b})", f"loss ({label_a})", f"loss ({label_b})"]
    readable = replace(comparison, fixed=readable_flips(comparison.fixed), broken=readable_flips(comparison.broken))
    flip_tables(readable, first, second, columns, "inspect_ner_compare")


def report_metrics(report: dict, spans_are_entities: bool) -> dict[str, float]:
    """The two numbers above the report: the logged f1 (entity micro F1, or tag macro F1) and token accuracy."""
    if spans_are_entities:
        return {"Entity F1 (micro)": report["micro avg"]["f1-score"], "Token accuracy": report["accuracy"]}
    return {"Tag F1 (macro)": report["macro avg"]["f1-score"], "Token accuracy": report["accuracy"]}


def explain_a_tag(run: Run, stage: str, shown) -> None:
    """Pick a sentence and one of its words: which tokens drove the tag the model gave that word."""
    if shown.empty:
        return
    with st.expander("Why this tag? Attribution for one word"):
        choices = shown.head(PAGE_SIZE)
        index = st.selectbox(
            "Sentence", list(range(len(choices))), key="inspect_ner_sentence", format_func=lambda i: choices.iloc[i]["text"][:90]
        )
        row = choices.iloc[index]
        tokens = list(row["tokens"])
        word = st.selectbox(
            "Word",
            list(range(len(tokens))),
            key="inspect_ner_word",
            format_func=lambda i: f"{tokens[i]}  (gold {row['gold_tags'][i]}, predicted {row['predicted_tags'][i]})",
        )
        methods = methods_for("tokens")
        method = st.selectbox(
            "Method",
            list(methods),
            key="inspect_ner_method",
            format_func=lambda k: methods[k].title,
            help="How token importance is computed; each method's description appears below.",
        )
        st.caption(methods[method].description)
        params = method_params(methods[method], f"inspect_ner_param_{method}")
        if st.button("Explain this word's tag", key="inspect_ner_explain"):
            from core.explain.loading import load_tag_explainer

            try:
                with st.spinner("Attributing…"):
                    explanation = load_tag_explainer(run.id, word, stage).explain(row["text"], method=method, **params)
            except UserError as problem:
                st.error(str(problem))
                return
            caption = f"evidence for tag {explanation.target_label} on '{tokens[word]}'"
            st.markdown(
                viz.token_attribution_html(explanation.units, explanation.scores, caption=caption, signed=explanation.signed),
                unsafe_allow_html=True,
            )
            show_delta(explanation)
        from core.explain.loading import load_tag_explainer

        try:
            tagger = load_tag_explainer(run.id, word, stage)
        except UserError as problem:
            st.error(str(problem))
            return
        faithfulness_panel(tagger, row["text"], None, (run.id, stage, index, word))
        drift_panel(run, row["text"], None, {"method": method, "params": params}, (run.id, index), word=word)
