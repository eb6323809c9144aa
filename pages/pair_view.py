"""The Inspect page's view of an image-text run: retrieval metrics, a retrieval browser, cross-modal maps.

Type a query and see the split's best-matching images; pick an image and see its best captions and
zero-shot classes; then explain one (image, text) pair: which words and which patches raise its
score, drawn side by side with each modality's share. Logic lives in `core.pair_runs` and
`core.explain.pairs`; this file only draws.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import viz
from core.errors import UserError
from core.store import Run
from pages import VERDICTS, method_params, show_delta
from pages.compare import compare_panel, flip_tables

SPLITS = ("test", "validation", "train")
RESULTS = 8
GALLERY_COLUMNS = 4
THUMBNAIL = 112
OVERLAY = 256
# The grey copy of the picture as the joint map's starting point: on the trained shapes run the top IG patch
# lay on the shape for 20 of 20 test pairs from grey, 11-13 of 20 from a blur and 1 of 20 from the mean colour.
JOINT_MAP_DEFAULTS = {"image_baseline": "grey"}


def pair_model(run: Run, stage: str):
    """The stage's model, opened once for this view and the explanations alike (`core.stages.open_stage`)."""
    from core.pair_runs import stage_pair_model

    with st.spinner("Loading the model…"):
        return stage_pair_model(run, stage)


@st.cache_data(show_spinner=False, max_entries=1024)
def thumbnail(workspace: str, reference: str, size: int) -> bytes:
    from core.image_text.data import open_pair_record

    return viz.thumbnail_png(open_pair_record(reference)["image"], size)


def pair_inspector(run: Run, stage_column, split_column) -> None:
    """Stage and split pickers for an image-text run, then retrieval and cross-modal attribution."""
    from core.pair_runs import pair_stages
    from core.workspace import workspace_root

    try:
        stages = pair_stages(run)
    except UserError as problem:
        st.error(str(problem))
        return
    stage = stage_column.selectbox(
        "Stage",
        stages,
        index=len(stages) - 1,
        key=f"inspect_pair_stage_{run.id}",
        help="'before' is the pretrained towers with untrained projections, 'after' the final model.",
    )
    split = split_column.selectbox("Split", SPLITS, key="inspect_pair_split", help="The pairs to search and explain.")
    if run.status == "running":
        st.caption(f"This run is still training; you are looking at its '{stage}' model.")
    try:
        pair = pair_model(run, stage)
        frame, picked = KIND_VIEWS[pair.kind](run, stage, split, pair, str(workspace_root()))
    except UserError as problem:
        st.error(str(problem))
        return
    st.subheader("Cross-modal attribution")
    cross_modal_map(run, stage, pair, frame, picked)
    st.subheader("Compare models")
    compare_pairs(run, stage, split, str(workspace_root()))


def compare_pairs(run: Run, stage: str, split: str, workspace: str) -> None:
    """Another stage or run on the same pairs: a fusion model's classes, or an aligned model's caption ranks."""
    from core.comparisons import comparison_frame

    bar, progress = progress_bar("Reading the split's predictions…")
    try:
        frame = comparison_frame(run, split, stage, progress)
    except UserError as problem:
        st.error(str(problem))
        return
    finally:
        bar.empty()
    compare_panel(run, stage, split, frame, draw_pair_flips(workspace))


def draw_pair_flips(workspace: str):
    """Draws a comparison's fixed and broken pairs as tables, and the fixed ones' images (for `compare_panel`)."""

    def draw(comparison, first: tuple, second: tuple) -> None:
        label_a, label_b = first[2], second[2]
        measured = "rank" if "rank (" + label_a + ")" in comparison.fixed.columns else "predicted"
        columns = [column for column in ("image", "text", "gold") if column in comparison.fixed.columns]
        flip_tables(
            comparison, first, second, [*columns, f"{measured} ({label_a})", f"{measured} ({label_b})"], "inspect_pair_compare"
        )
        fixed = comparison.fixed.head(GALLERY_COLUMNS * 2)
        for column, (_, row) in zip(st.columns(GALLERY_COLUMNS) * 2, fixed.iterrows()):
            column.image(thumbnail(workspace, row["image"], THUMBNAIL), caption=f"fixed · {row['text'][:40]}", width=THUMBNAIL)

    return draw


def progress_bar(text: str):
    bar = st.progress(0.0, text=text)
    return bar, lambda fraction, message: bar.progress(min(1.0, fraction), text=message)


def retrieval_view(run: Run, stage: str, split: str, pair, workspace: str) -> tuple[pd.DataFrame, str]:
    """Alignment runs: retrieval metrics on the split, search by words, search by image."""
    from core.pair_runs import split_embeddings

    bar, progress = progress_bar("Embedding the split (once per stage; kept for next time)…")
    frame, image_embeds, text_embeds = split_embeddings(run, pair, stage, split, progress=progress)
    bar.empty()
    retrieval_summary(frame, image_embeds, text_embeds)
    st.subheader("Retrieval browser")
    search_by_text(pair, frame, image_embeds, workspace)
    return frame, search_by_image(pair, frame, text_embeds, workspace)


def classification_view(run: Run, stage: str, split: str, pair, workspace: str) -> tuple[pd.DataFrame, str]:
    """Fusion runs: accuracy, confusion matrix and report on the split, then one pair to explain."""
    from core import inspect
    from core.pair_runs import fusion_predictions

    bar, progress = progress_bar("Classifying the split (once per stage; kept for next time)…")
    frame = fusion_predictions(run, pair, stage, split, progress=progress)
    bar.empty()
    names = pair.label_names
    headline = inspect.headline(frame, names)
    columns = st.columns(4)
    columns[0].metric("Accuracy", f"{headline['accuracy']:.1%}")
    columns[1].metric("Macro F1", f"{headline['macro F1']:.3f}")
    columns[2].metric("Pairs", f"{headline['examples']:,}")
    columns[3].metric("Errors", f"{headline['errors']:,}")
    left, right = st.columns([3, 2])
    left.plotly_chart(
        viz.confusion_matrix(inspect.confusion_counts(frame, names)),
        key=f"inspect_pair_confusion_{stage}_{split}",
        config={"displayModeBar": False},
    )
    right.dataframe(viz.report_table(inspect.classification_report(frame, names)), width="stretch")
    errors_only = st.toggle(
        "Errors only", key="inspect_pair_errors", help="List only the pairs the model gets wrong, hardest first."
    )
    shown = frame[~frame["correct"]] if errors_only else frame
    shown = shown.sort_values("loss", ascending=False)
    if shown.empty:
        st.info("No pairs to show: the model gets every pair of this split right.")
        shown = frame
    references = shown["image"].tolist()
    if st.session_state.get("inspect_pair_image") not in references:
        st.session_state["inspect_pair_image"] = references[0]
    rows = shown.set_index("image")
    reference = st.selectbox(
        "Pick a pair",
        references,
        key="inspect_pair_image",
        format_func=lambda ref: (
            f"{VERDICTS[bool(rows.loc[ref, 'correct'])]} · {ref} · {rows.loc[ref, 'text'][:40]} · "
            f"{rows.loc[ref, 'gold']} → {rows.loc[ref, 'predicted']} ({rows.loc[ref, 'confidence']:.0%})"
        ),
    )
    st.image(thumbnail(workspace, reference, 2 * THUMBNAIL), width=2 * THUMBNAIL, caption=rows.loc[reference, "text"])
    return frame, reference


KIND_VIEWS = {"similarity": retrieval_view, "classification": classification_view}


def retrieval_summary(frame: pd.DataFrame, image_embeds, text_embeds) -> None:
    from core.image_text.metrics import caption_groups, chance_recall, retrieval_metrics

    groups = caption_groups(frame["text"].tolist())
    metrics = retrieval_metrics(image_embeds @ text_embeds.T, groups=groups)
    columns = st.columns(5)
    columns[0].metric("Pairs", f"{len(frame):,}")
    columns[1].metric("Image→text R@1", f"{metrics['image_to_text_recall@1']:.1%}")
    columns[2].metric("Text→image R@1", f"{metrics['text_to_image_recall@1']:.1%}")
    columns[3].metric("R@5 (mean)", f"{metrics['recall@5']:.1%}")
    columns[4].metric("Median rank (image→text)", f"{metrics['image_to_text_median_rank']:.0f}")
    st.caption(
        f"Chance level for R@1 on this split: {chance_recall(groups, 1):.1%}. Equal captions count as matches "
        "of each other, so a repeated caption does not cap recall."
    )


def search_by_text(pair, frame: pd.DataFrame, image_embeds, workspace: str) -> None:
    from core.pair_runs import search_images

    query = st.text_input(
        "Search the images with words",
        key="inspect_pair_query",
        placeholder="blue square",
        help="Your words are embedded by the text tower and compared with every image of the split.",
    )
    if not query.strip():
        st.caption("Type a query such as 'blue square' to see the images the model finds for it.")
        return
    try:
        found = search_images(pair, frame, image_embeds, query, k=RESULTS)
    except UserError as problem:
        st.error(str(problem))
        return
    st.caption(f"The {len(found)} images most similar to '{query}' (cosine similarity of the embeddings).")
    with st.container(key="inspect_pair_results"):
        for start in range(0, len(found), GALLERY_COLUMNS):
            for column, (_, row) in zip(st.columns(GALLERY_COLUMNS), found.iloc[start : start + GALLERY_COLUMNS].iterrows()):
                column.image(
                    thumbnail(workspace, row["image"], THUMBNAIL), width=THUMBNAIL, caption=f"{row['score']:.3f} · {row['text']}"
                )
                column.button(
                    "Explain with the query",
                    key=f"inspect_pair_use_{row['image']}",
                    on_click=choose_pair,
                    args=(row["image"], query),
                )


def choose_pair(reference: str, text: str) -> None:
    """A search result's button: explain that image with the query instead of its own caption."""
    st.session_state["inspect_pair_image"] = reference
    st.session_state["inspect_pair_for"] = reference
    st.session_state["inspect_pair_text"] = text


def search_by_image(pair, frame: pd.DataFrame, text_embeds, workspace: str) -> str:
    """Pick an image of the split; its best captions and zero-shot classes. Returns the picked reference."""
    from core.image_text.data import open_pair_record
    from core.pair_runs import search_captions, zero_shot

    references = frame["image"].tolist()
    if st.session_state.get("inspect_pair_image") not in references:
        st.session_state["inspect_pair_image"] = references[0]
    captions = dict(zip(frame["image"], frame["text"]))
    left, right = st.columns([1, 2])
    with left:
        reference = st.selectbox(
            "Pick an image", references, key="inspect_pair_image", format_func=lambda ref: f"{ref} · {captions[ref][:40]}"
        )
        st.image(
            thumbnail(workspace, reference, 2 * THUMBNAIL), width=2 * THUMBNAIL, caption=f"its caption: {captions[reference]}"
        )
    picture = open_pair_record(reference)["image"]
    with right:
        st.markdown("**Captions of the split that fit it best**")
        st.dataframe(
            search_captions(pair, frame, text_embeds, picture, k=RESULTS),
            hide_index=True,
            width="stretch",
            column_config={"score": st.column_config.NumberColumn("score", format="%.3f")},
        )
        if pair.label_names:
            st.markdown(
                f"**Zero-shot classes** (class prompts such as '{pair.prompt_template.format(label=pair.label_names[0])}')"
            )
            st.dataframe(
                zero_shot(pair, picture).head(5),
                hide_index=True,
                width="stretch",
                column_config={"probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0)},
            )
    return reference


def cross_modal_map(run: Run, stage: str, pair, frame: pd.DataFrame, reference: str) -> None:
    """Which words and which patches raise the pair's score: token map beside patch overlay, with shares;
    then, for one word, the patches that make it count."""
    from core.image_text.data import open_pair_record

    if st.session_state.get("inspect_pair_for") != reference:  # a newly picked image starts from its own caption
        st.session_state["inspect_pair_text"] = dict(zip(frame["image"], frame["text"]))[reference]
        st.session_state["inspect_pair_for"] = reference
    text = st.text_input(
        "Text of the pair",
        key="inspect_pair_text",
        help="The picked image's own caption, the query you explained with, or any words you type.",
    )
    target = None
    if pair.kind == "classification":
        choice = st.selectbox(
            "Explain the class",
            ["predicted", *pair.label_names],
            key="inspect_pair_target",
            help="Which class score to attribute: the model's prediction, or any class by name.",
        )
        target = None if choice == "predicted" else choice
    from core.explain.methods import methods_for

    methods = methods_for("pairs")
    left, middle, right = st.columns(3)
    method = left.selectbox("Method", list(methods), format_func=lambda key: methods[key].title, key="inspect_pair_method")
    grid = int(
        middle.number_input("Patch grid (cells a side)", min_value=2, max_value=16, value=4, step=1, key="inspect_pair_grid")
    )
    opacity = right.slider("Overlay opacity", 0.0, 1.0, 0.6, step=0.05, key="inspect_pair_opacity")
    st.caption(methods[method].description)
    with st.expander("Method settings"):
        params = method_params(methods[method], f"inspect_pair_param_{method}", preferred=JOINT_MAP_DEFAULTS)
    try:
        from core.explain.loading import load_pair_explainer

        explainer = load_pair_explainer(run.id, stage)
        picture = explainer.input_image(open_pair_record(reference)["image"])  # as the model sees it, so patches line up
    except UserError as problem:
        st.error(str(problem))
        return
    settings = (run.id, stage, reference, text, method, grid, target, tuple(sorted(params.items())))
    if st.button("Explain this pair", type="primary", key="inspect_pair_explain"):
        try:
            with st.spinner("Attributing the score to words and patches…"):
                st.session_state["inspect_pair_result"] = (
                    settings,
                    explainer.explain(picture, text, method=method, target=target, grid=grid, **params),
                )
        except UserError as problem:
            st.error(str(problem))
            return
    shown = st.session_state.get("inspect_pair_result")
    if shown and shown[0] == settings:
        draw_pair_explanation(shown[1], picture, opacity)
        word_map(explainer, picture, text, grid, target, opacity)


def word_map(explainer, picture, text: str, grid: int, target, opacity: float) -> None:
    """The patches that make one word of the text count: IG of the score's change when that word is hidden."""
    words = list(dict.fromkeys(word.strip(".,:;!?\"'()").lower() for word in text.split()))
    words = [word for word in words if word]
    st.markdown("**Patches for one word** — where in the image is what this word names?")
    left, middle, right = st.columns([2, 2, 1])
    word = left.selectbox("Word", words, key="inspect_pair_word")
    baseline = middle.selectbox(
        "Image baseline",
        ("grey", "blur", "mean", "black"),
        key="inspect_pair_word_baseline",
        help="What the image fades in from: grey removes colours (for colour words), blur removes "
        "shapes and edges (for shape and object words).",
    )
    if not right.button("Show", key="inspect_pair_word_show"):
        return
    try:
        with st.spinner(f"Finding the patches that make '{word}' count…"):
            explanation = explainer.explain_word(picture, text, word, target=target, grid=grid, image_baseline=baseline)
    except UserError as problem:
        st.error(str(problem))
        return
    with st.container(key="inspect_pair_word_map"):
        st.image(
            viz.patch_overlay(picture, explanation, opacity, size=OVERLAY),
            width=OVERLAY,
            output_format="PNG",
            caption=f"'{word}' adds {explanation.output_difference:+.3f} to the score here",
        )
        st.html(viz.overlay_legend_html(explanation, explained=f"'{word}' in the match"))


def explained_by(explanation) -> str:
    """What red stands for: the pair's match (a dual encoder) or the explained class (a fusion classifier)."""
    return f"the class '{explanation.target_label}'" if explanation.kind == "classification" else "the match"


def draw_pair_explanation(explanation, picture, opacity: float) -> None:
    tokens, cells = explanation.part("tokens"), explanation.part("patches")
    words, patches = st.columns([3, 2])
    with words.container(key="inspect_pair_words"):
        st.markdown("**Words**")
        st.html(
            viz.token_attribution_html(
                tokens.units,
                tokens.scores,
                signed=explanation.signed,
                caption=f"text share {tokens.share:.0%}",
                explained=explained_by(explanation),
            )
        )
    with patches.container(key="inspect_pair_patches"):
        st.markdown("**Patches**")
        st.image(
            viz.patch_overlay(picture, explanation, opacity, size=OVERLAY),
            caption=f"image share {cells.share:.0%}",
            width=OVERLAY,
            output_format="PNG",
        )
        st.html(viz.overlay_legend_html(explanation, explained=explained_by(explanation)))
    st.plotly_chart(
        viz.modality_shares(explanation),
        key="inspect_pair_shares",
        config={"displayModeBar": False},
    )
    score_text = f"score {explanation.score:.3f}"
    if explanation.baseline_score is not None:
        score_text += f" (baseline pair {explanation.baseline_score:.3f})"
    st.caption(score_text)
    show_delta(explanation)
