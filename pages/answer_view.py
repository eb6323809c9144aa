"""The answers view of Inspect (instruction-tuning runs): each prompt's reference and generated answer with its match
and loss, filterable; for a picked row, which prompt words made the model answer so (for the whole answer, and token
by token as a grid); any typed prompt, generated and explained at once; and the same prompt under another stage.

It reads state, calls `core` (`core.inspect` for the frame, `core.explain` for the maps) and draws with `core.viz`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import viz
from core.checkpoints import available_stages, latest_stage
from core.errors import UserError
from core.stages import SPLITS
from core.store import Run
from pages import get_explainer, keep_valid, load_predictions, method_picker, sanity_panel, show_delta, stop_with
from pages.compare import compare_panel, flip_tables

TABLE_ROWS = 200  # rows of the predictions table drawn at once (the filters narrow the rest)


def answer_inspector(run: Run, pick_stage, pick_split) -> None:
    """Inspect one instruction-tuning run (the Inspect page hands it the run and its stage and split columns)."""
    stages = available_stages(run)
    if not stages:
        stop_with(UserError(f"Run {run.id} has no model to inspect yet; wait until it has saved one."))
    keep_valid("inspect_stage", stages)
    stage = pick_stage.selectbox(
        "Stage",
        stages,
        index=stages.index(latest_stage(run)),
        key="inspect_stage",
        help="The model before training, a checkpoint, or the final one.",
    )
    split = pick_split.selectbox("Split", SPLITS, key="inspect_split")
    try:
        frame = load_predictions(run, split, stage)
    except UserError as problem:
        stop_with(problem)
    headline(frame)
    prompt_format_note(run)
    row = predictions_table(run, frame, stage, split)
    settings = answer_settings()
    if row is not None:
        explain_row(run, stage, frame.loc[row], settings)
    st.divider()
    typed_prompt(run, stage, settings, stages)
    st.divider()
    st.subheader("Compare models")
    compare_panel(run, stage, split, frame, draw_answer_flips)


def draw_answer_flips(comparison, first: tuple, second: tuple) -> None:
    """The prompts one model answers right and the other wrong, side by side, with both answers."""
    columns = ["prompt", "reference", f"answer ({first[2]})", f"answer ({second[2]})"]
    flip_tables(comparison, first, second, columns, "answers_compare")


def headline(frame: pd.DataFrame) -> None:
    left, middle, right = st.columns(3)
    left.metric("Exact match", f"{frame['match'].mean():.1%}" if len(frame) else "—")
    middle.metric("Token F1", f"{frame['token_f1'].mean():.3f}" if len(frame) else "—")
    right.metric("Reference loss (mean)", f"{frame['loss'].mean():.3f}" if len(frame) else "—")


def prompt_format_note(run: Run) -> None:
    """How this run's prompts reached the model: its chat template or a plain line, and how many were cut to fit."""
    from core.run_files import summary

    facts = summary(run) or {}
    cut = int(facts.get("prompts_cut", 0) or 0)
    note = f"Prompt format: {facts.get('prompt_format', 'unknown')}."
    if cut:
        note += f" {cut} prompts were longer than the max length and lost their first words, in training and here."
    st.caption(note)


def predictions_table(run: Run, frame: pd.DataFrame, stage: str, split: str) -> int | None:
    """The filterable table; returns the picked row (its index in `frame`), or None."""
    st.subheader("Answers")
    left, middle, right = st.columns([1.2, 3, 1.3])
    wrong = left.toggle("Wrong answers only", key="answers_wrong")
    contains = middle.text_input("Prompt contains", key="answers_contains", placeholder="a word or phrase (any case)")
    hardest = right.toggle(
        "Hardest first", value=True, key="answers_hardest", help="Sort by the reference's loss, highest first."
    )
    shown = frame
    if wrong:
        shown = shown[~shown["match"]]
    if contains.strip():
        shown = shown[shown["prompt"].str.contains(contains.strip(), case=False, regex=False)]
    if hardest:
        shown = shown.sort_values("loss", ascending=False, kind="stable")
    st.caption(
        f"{len(shown):,} of {len(frame):,} prompts" + (f" · the first {TABLE_ROWS} drawn" if len(shown) > TABLE_ROWS else "")
    )
    drawn = shown.head(TABLE_ROWS)
    event = st.dataframe(
        drawn[["prompt", "reference", "answer", "match", "token_f1", "loss"]],
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key=f"answers_table_{run.id}_{stage}_{split}",
        column_config={"match": st.column_config.CheckboxColumn("match")},
    )
    picked = event.selection.rows if event is not None else []
    if picked:
        return int(drawn.index[picked[0]])
    return int(drawn.index[0]) if len(drawn) else None


def answer_settings() -> dict[str, Any]:
    """The attribution method and its parameters, for every map on this view."""
    with st.expander("Explanation settings", expanded=False):
        method, params = method_picker(
            "tokens", "answers_method", "answers_param", "Method", help="How each prompt token's share in the answer is computed."
        )
        st.caption(
            "A decoder has no [MASK] token: 'pad' replaces each prompt word by the end-of-text token, 'zero' by a zero "
            "embedding, and occlusion removes words one window at a time."
        )
        grid = st.toggle("Token by token (a grid, one attribution per answer token)", value=True, key="answers_grid")
    return {"method": method, "params": params, "grid": grid}


def explain_row(run: Run, stage: str, row: pd.Series, settings: dict[str, Any]) -> None:
    st.subheader("Why this answer")
    st.markdown(f"**Prompt**\n\n{row['prompt']}")
    verdict = ":material/check: matches" if row["match"] else ":material/close: differs from"
    st.markdown(f"**Answer** `{row['answer']}` {verdict} the reference `{row['reference']}`")
    explainer = get_explainer(run, stage)
    if explainer is None or not str(row["answer"]).strip():
        if explainer is not None:
            st.info("The model gave an empty answer here, so there is nothing to explain.")
        return
    draw_answer_maps(explainer, row["prompt"], row["answer"], settings)
    checked = {**settings, "params": {**settings["params"], "answer": row["answer"]}}
    sanity_panel(explainer, row["prompt"], None, checked, (run.id, stage, row["prompt"]), draw_sanity_map)


def draw_sanity_map(explanation, heading: str, slot: str) -> None:
    st.html(
        viz.token_attribution_html(
            explanation.units, explanation.scores, caption=heading, signed=explanation.signed, explained="the answer"
        )
    )


def draw_answer_maps(explainer, prompt: str, answer: str, settings: dict[str, Any]) -> None:
    """The whole answer's map over the prompt, then the answer-token x prompt-token grid when asked."""
    from core.explain import describe

    try:
        with st.spinner("Explaining the answer…"):
            whole = explainer.explain(prompt, settings["method"], answer=answer, **settings["params"])
            rows = (
                explainer.explain_grid(prompt, settings["method"], answer=answer, **settings["params"])
                if settings["grid"]
                else []
            )
    except UserError as problem:
        st.error(str(problem))
        return
    caption = f"{describe(whole.method, whole.params)} · the whole answer '{answer}' · {whole.seconds:.2f}s"
    st.html(viz.token_attribution_html(whole.units, whole.scores, caption=caption, signed=whole.signed, explained="the answer"))
    show_delta(whole)
    if whole.truncated:
        st.info("This prompt was longer than the run's max length: its first words were cut, as in training.")
    if rows:
        tokens = [explanation.target_label for explanation in rows]
        st.plotly_chart(
            viz.answer_attribution_heatmap(rows[0].units, tokens, [explanation.scores for explanation in rows]),
            key=f"answers_grid_{hash((prompt, answer, settings['method']))}",
            width="stretch",
        )
        st.caption("Each row explains one answer token's log-probability given the prompt and the answer before it.")


def typed_prompt(run: Run, stage: str, settings: dict[str, Any], stages: list[str]) -> None:
    """Any prompt: generate (greedy, or sampled) and explain at once, and the same prompt under another stage."""
    st.subheader("Ask your own prompt")
    prompt = st.text_area(
        "Prompt", key="answers_prompt", placeholder="Type a prompt in the run's format, e.g. one from the table."
    )
    left, middle, right = st.columns(3)
    temperature = left.number_input("Temperature (0 = greedy)", 0.0, 2.0, 0.0, 0.1, key="answers_temperature")
    top_p = middle.number_input("Top-p", 0.05, 1.0, 1.0, 0.05, key="answers_top_p", disabled=temperature == 0)
    others = [other for other in stages if other != stage]
    versus = right.selectbox("Compare with stage", [None, *others], key="answers_versus", format_func=lambda s: s or "— none —")
    if not st.button("Generate and explain", key="answers_go", type="primary") or not prompt.strip():
        return
    columns = st.columns(2 if versus else 1)
    for column, which in zip(columns, [stage, versus] if versus else [stage]):
        with column:
            st.markdown(f"**{which}**")
            explainer = get_explainer(run, which)
            if explainer is None:
                continue
            try:
                answer = generated(explainer, prompt, temperature, top_p)
            except UserError as problem:
                st.error(str(problem))
                continue
            st.markdown(f"Answer: `{answer}`" if answer else "The model answered nothing.")
            if answer:
                draw_answer_maps(explainer, prompt, answer, settings)


def generated(explainer, prompt: str, temperature: float, top_p: float) -> str:
    from core.instructions.generation import Sampling, generate_answers

    if temperature == 0:
        return explainer.answer(prompt)
    sampling = Sampling(explainer.max_new_tokens, temperature=temperature, top_p=top_p)
    return generate_answers(explainer.model, explainer.tokenizer, [prompt], explainer.max_length, sampling)[0]
