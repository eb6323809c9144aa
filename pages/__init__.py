"""Page scripts live in pages/views/; this package holds the helpers they share.

Why a sub-folder: Streamlit treats any `pages/*.py` beside the entry script as a legacy
multipage app on a server's first request, which would run a page without app.py's navigation.
Keeping the page scripts one level down leaves app.py's `st.navigation` the only router.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pandas as pd
import streamlit as st

from core import inspect, viz
from core.errors import UserError
from core.store import Run, RunStore

# Material icons (Streamlit's own icon font): emoji need a colour-emoji font that a stock browser
# may lack, and then show as empty boxes. For st.navigation, st.page_link, headings and markdown.
PAGE_ICONS = {
    "pages/views/home.py": ":material/home:",
    "pages/views/data.py": ":material/table_chart:",
    "pages/views/train.py": ":material/model_training:",
    "pages/views/runs.py": ":material/monitoring:",
    "pages/views/sweeps.py": ":material/tune:",
    "pages/views/inspect.py": ":material/search_insights:",
}
# Plain-text places (table cells, select options, image captions) cannot draw Material icons:
# these marks are in WGL4, which the common fonts (Liberation, DejaVu, Arial, Segoe) all cover.
STATUS_ICONS = {"queued": "…", "running": "►", "completed": "●", "failed": "×", "cancelled": "■", "pruned": "▼"}
VERDICTS = {True: "right", False: "wrong"}  # a prediction, in image captions


def open_store() -> RunStore:
    """The run store, or a sentence and a stop when the workspace cannot be used."""
    try:
        return RunStore()
    except UserError as problem:
        st.error(str(problem))
        st.stop()


def run_label(run: Run) -> str:
    return f"{STATUS_ICONS.get(run.status, '')} {run.name} · {run.id}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def since(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "—"


def show_delta(explanation) -> None:
    """The convergence-delta caption, and a warning when it is large (`core.viz.delta_note`), under any map."""
    from core import viz

    caption, warning = viz.delta_note(explanation)
    if caption:
        st.caption(caption)
    if warning:
        st.warning(warning)


def method_picker(
    modality: str, key: str, params_key: str, label: str, optional: bool = False, help: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """A selectbox of every attribution method that applies to an input ("tokens", "patches", "pairs"), the chosen
    one's description and a widget per parameter; (None, {}) when an optional slot is left off."""
    from core.explain.methods import methods_for

    methods = methods_for(modality)
    options = ([None] if optional else []) + list(methods)
    chosen = st.selectbox(
        label,
        options,
        key=key,
        format_func=lambda k: "— none —" if k is None else methods[k].title,
        help=None if optional else help,
    )
    if chosen is None:
        return None, {}
    st.caption(methods[chosen].description)
    return chosen, method_params(methods[chosen], f"{params_key}_{chosen}")


def method_params(method, key_prefix: str, preferred: dict[str, Any] | None = None) -> dict[str, Any]:
    """One widget per parameter of an attribution method (from its defaults, choices and bounds), keyed `key_prefix_name`;
    `preferred` replaces some of the method's defaults where a view knows better."""
    choices = getattr(method, "choices", {}) or {}
    params: dict[str, Any] = {}
    for name, default in {
        **(method.defaults or {}),
        **{k: v for k, v in (preferred or {}).items() if k in (method.defaults or {})},
    }.items():
        key = f"{key_prefix}_{name}"
        if name in choices:
            params[name] = st.selectbox(name, list(choices[name]), index=list(choices[name]).index(default), key=key)
        elif isinstance(default, bool):
            params[name] = st.toggle(name, value=default, key=key)
        elif isinstance(default, int):
            low, high = method.bounds(name)
            params[name] = int(st.number_input(name, min_value=int(low), max_value=int(high), value=default, step=1, key=key))
        elif isinstance(default, float):
            low, high = method.bounds(name)
            params[name] = float(
                st.number_input(name, min_value=float(low), max_value=float(high), value=default, format="%.4f", key=key)
            )
        elif isinstance(default, (list, tuple)):
            continue  # a pair such as a fixed grid: the method's own default
        else:
            params[name] = st.text_input(name, value=str(default), key=key)
    return params


# --- Inspect widgets every classification view shares (text and image) ---------------------------

FILTER_KEYS = (
    "inspect_misclassified",
    "inspect_gold",
    "inspect_predicted",
    "inspect_confidence",
    "inspect_contains",
    "inspect_lengths",
)


def stop_with(problem: UserError) -> None:
    st.error(str(problem))
    st.stop()


def load_predictions(run: Run, split: str, stage: str) -> pd.DataFrame:
    """Stored predictions, or predict once (with a progress bar) and store them for next time."""
    if inspect.predictions_path(run, split, stage).is_file():
        return inspect.predictions(run, split, stage)
    text = f"Predicting the {split} split with the '{stage}' model (once; kept for next time)…"
    return with_bar(text, lambda progress: inspect.predictions(run, split, stage, progress=progress))


def with_bar(text: str, compute):
    """`compute(progress)` with a progress bar that follows it, gone once it returns (or raises)."""
    bar = st.progress(0.0, text=text)
    try:
        return compute(lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    finally:
        bar.empty()


def get_explainer(run: Run, stage: str):
    """The explainer of a run's stage (`core.explain.load_explainer` keeps it, and reloads a re-saved model),
    or None after saying why there is none."""
    from core.explain import load_explainer

    try:
        with st.spinner("Loading the model for explanations…"):
            return load_explainer(run.id, stage)
    except UserError as problem:
        st.error(str(problem))
    except Exception as problem:  # noqa: BLE001 - a checkpoint a running trainer is still writing, or rotated away
        st.error(
            f"The '{stage}' model of run {run.id} could not be read ({type(problem).__name__}); "
            "a running run may still be writing it. Pick another stage or try again in a moment."
        )
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
            "Class to explain",
            ["predicted", "gold", *names],
            key="inspect_target",
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


def classification_header(run: Run, pick_stage, pick_split) -> tuple[list[str], str, str, pd.DataFrame, list[str]]:
    """Stage and split pickers, then the run's metrics, clickable confusion matrix and report: what every
    classification view (text, image) draws first. Returns (stages, stage, split, predictions, class names)."""
    try:
        stages = inspect.stages(run)
    except UserError as problem:
        stop_with(problem)
    stage = pick_stage.selectbox(
        "Stage",
        stages,
        index=len(stages) - 1,
        key=f"inspect_stage_{run.id}",
        help="Which model of the run: 'before' is the pretrained encoder with its untrained head, checkpoints are saved "
        "during training, 'after' is the final model.",
    )
    split = pick_split.selectbox(
        "Split",
        inspect.SPLITS,
        key="inspect_split",
        persist_state="session",
        help="The run's own held-out test split by default; the same split as in training.",
    )
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
            viz.confusion_matrix(inspect.confusion_counts(frame, names)),
            key=chart_key,
            width="content",
            on_select=partial(on_cell_click, chart_key, names),
            selection_mode="points",
            config={"displayModeBar": False},
        )
    with report_column:
        st.markdown("**Classification report**")
        st.dataframe(viz.report_table(inspect.classification_report(frame, names)), width="stretch")
    return stages, stage, split, frame, names


# --- Data widgets the views of every kind of data share ---------------------------------------------

SOURCES = ("Built-in", "Registered", "Upload")
SAVE_MESSAGE_KEY = "data_save_message"


def prepare_with_bar(kind, key: str) -> None:
    """First use of a built-in that needs a download or conversion: do it with a progress bar, outside the caches
    (`kind` a `core.data.registry.DatasetKind`)."""
    from core.data.registry import prepare_builtin

    builtin = kind.builtins.get(key)
    if builtin is None or builtin.is_ready():
        return
    bar = st.progress(0.0, text=f"Preparing {builtin.title}…")
    prepare_builtin(kind, key, lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    bar.empty()


def dataset_source(label: str, key: str, help: str) -> str:
    """Where the dataset comes from (one of SOURCES), with the last Save's outcome under it."""
    source = st.radio(label, SOURCES, key=key, horizontal=True, help=help)
    show_save_message()
    return source


def choose_dataset(kind: str, builtin: bool, noun: str, key: str, help: str, none_yet: str) -> str | None:
    """A built-in or a registered dataset of `kind` (its key), with its description; None, said, when there is none."""
    from core.data.registry import list_datasets

    datasets = {info.key: info for info in list_datasets(kind) if info.builtin == builtin}
    if not datasets:
        st.info(none_yet)
        return None
    chosen = st.selectbox(
        f"{'Built-in' if builtin else 'Registered'} {noun}",
        list(datasets),
        key=key,
        format_func=lambda name: datasets[name].title,
        help=help if builtin else f"The {noun}s you uploaded and saved in this workspace, by the name you gave them.",
    )
    st.caption(datasets[chosen].description)
    return chosen


def show_save_message() -> None:
    """The outcome of the last Save, shown once."""
    message = st.session_state.pop(SAVE_MESSAGE_KEY, None)
    if message is None:
        return
    kind, text = message
    (st.success if kind == "success" else st.error)(text)


FAITHFUL_DEFAULTS = ("ig", "saliency", "occlusion")


def faithfulness_panel(explainer, example, target, context: tuple, **options) -> None:
    """The faithfulness card under any classifier's map: deletion and insertion curves of the chosen methods (default
    parameters) against random orderings, and their AOPC and NAOPC as a table (`core.explain.faithfulness`)."""
    from core.explain import METHODS
    from core.explain.faithfulness import card_table, explainer_card

    with st.container(border=True):
        st.markdown(
            "**Faithfulness card** — remove the units a map ranks first: does the target probability fall faster than at random?"
        )
        available = [key for key, reason in explainer.method_availability().items() if reason is None]
        picked, button_column = st.columns([3, 1])
        methods = picked.multiselect(
            "Methods to score",
            available,
            default=[key for key in FAITHFUL_DEFAULTS if key in available],
            format_func=lambda key: METHODS[key].title,
            key="inspect_faithful_methods",
            help="Each is run with its default parameters on this example and the same class.",
        )
        context = (*context, target, tuple(methods), str(options))
        if button_column.button("Score faithfulness", key="inspect_faithful_go"):
            with st.spinner("Removing and putting back units in each map's order, and in random orders…"):
                try:
                    cards = explainer_card(explainer, example, methods, target, **options)
                    st.session_state["inspect_faithful_result"] = (context, cards)
                except UserError as problem:
                    st.error(str(problem))
        remembered = st.session_state.get("inspect_faithful_result")
        if not remembered or remembered[0] != context:
            return
        cards = remembered[1]
        titles = {key: METHODS[key].title for key in methods}
        st.plotly_chart(viz.faithfulness_curves(cards, titles), key="inspect_faithful_curves", width="stretch")
        table = pd.DataFrame(card_table(cards)).assign(method=lambda frame: frame["method"].map(titles))
        st.dataframe(table, hide_index=True, width="stretch", key="inspect_faithful_table")
        best = max(cards, key=lambda card: card.comprehensiveness)
        st.caption(
            f"Deletion AOPC: the mean fall of the target probability as 10 %, 20 %, … of the units are removed (higher: "
            f"the map found what the model needs); insertion AOPC: the same with only those units kept (lower: they "
            f"suffice). For this example {titles[best.method]} is the most faithful map"
            + (
                "."
                if best.comprehensiveness > best.random_comprehensiveness
                else ", yet no better than random: none of these maps tells what this model relies on."
            )
            + " NAOPC rescales deletion AOPC between the worst and best orderings tried."
        )


def class_summary_panel(run: Run, stage: str, split: str) -> None:
    """What drives each class over the split (`core.explain.summary`): computed once with a progress bar, then cached
    in the run folder; the top words per class for text, the mean patch map per class for images."""
    from core.explain import summary

    st.caption(
        f"Every {split} example explained towards its gold class ({summary.DEFAULT_METHOD.replace('_', ' ')}), and per "
        "class the units that carry the most attribution. Computed once, then read from the run folder."
    )
    cached = summary.summary_path(run, stage, split, summary.DEFAULT_METHOD).exists()
    if not cached and not st.button("Summarise the classes", key="inspect_classes_go"):
        return
    bar = st.progress(0.0, text="Explaining the split…")
    try:
        found = summary.class_summary(
            run.id, split, stage=stage, progress=lambda done, text: bar.progress(done, text=text)
        )  # fmt: skip
    except UserError as problem:
        st.error(str(problem))
        return
    finally:
        bar.empty()
    classes = found["classes"]
    for column, (label, entry) in zip(st.columns(min(len(classes), 4) or 1), list(classes.items())[:4]):
        with column:
            st.markdown(f"**{label}** · {entry['examples']} examples")
            if found["view"] == "text":
                words = pd.DataFrame(entry["top"]).rename(columns={"weight": "attribution"})
                st.dataframe(words, hide_index=True, width="stretch", key=f"inspect_classes_{label}")
            else:
                st.plotly_chart(viz.mean_patch_map(entry["mean_map"]), key=f"inspect_classes_{label}", width="stretch")
    if len(classes) > 4:
        st.caption(f"The first 4 of {len(classes)} classes; `core.explain.summary.class_summary` returns them all.")


def sanity_panel(explainer, example, target, settings: dict[str, Any], context: tuple, draw) -> None:
    """The randomisation sanity check (Adebayo et al., 2018) under any map: explain `example` again with the head
    or every layer re-initialised, show the rank correlation and its verdict, and both maps side by side.
    `draw(explanation, heading, slot)` draws one map as the view draws its own."""
    from core.explain import randomization_check

    with st.container(border=True):
        st.markdown("**Sanity check** — does the map change when the learned weights are randomised?")
        st.caption(
            "A sanity check, not a ranking: a method that passes reacts to the model, which says nothing about which "
            "method is most faithful to it (the faithfulness card below measures that)."
        )
        scope_column, button_column = st.columns([3, 1])
        scope = scope_column.radio(
            "Randomise",
            ["head", "all"],
            horizontal=True,
            key="inspect_sanity_scope",
            format_func=lambda s: {"head": "the classifier head", "all": "every layer"}[s],
        )
        context = (*context, settings["method"], str(settings["params"]), target, scope)
        if button_column.button("Sanity check", key="inspect_sanity_go"):
            with st.spinner("Explaining again with randomised weights…"):
                try:
                    result = randomization_check(
                        explainer, example, settings["method"], target, scope=scope, **settings["params"]
                    )
                    st.session_state["inspect_sanity_result"] = (context, result)
                except UserError as problem:
                    st.error(str(problem))
        remembered = st.session_state.get("inspect_sanity_result")
        if not remembered or remembered[0] != context:
            return
        result = remembered[1]
        st.metric("Spearman rank correlation", f"{result['spearman']:+.2f}")
        (st.success if abs(result["spearman"]) < 0.5 else st.warning)(result["verdict"])
        randomised = "randomised " + ("head" if scope == "head" else "model")
        for column, (explanation, heading, slot) in zip(
            st.columns(2),
            ((result["original"], "trained model", "sanity_trained"), (result["randomized"], randomised, "sanity_random")),
        ):
            with column:
                draw(explanation, heading, slot)


def selection_request(
    run: Run,
    stage: str,
    split: str,
    filtered: pd.DataFrame,
    settings: dict[str, Any],
    what: str,
    cap: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The "Explain this selection" control every classification view shares: says which rows of the filtered
    selection (`what`, e.g. "images of the filtered gallery") will be explained, remembers the request on a click,
    and returns the remembered request for this run, stage and split (None before the first click)."""
    capped_rows, capped = inspect.gallery_rows(filtered, cap)
    st.caption(
        f"Explains the {len(capped_rows)} {what} in its order"
        + (f" (the first {cap} of {len(filtered):,}; narrow the filters to see others)" if capped else "")
        + ", with the method and class chosen above. Explanations are cached: a second look is instant."
    )
    request = {
        "context": (run.id, stage, split),
        "rows": [int(row) for row in capped_rows.index],
        "method": settings["method"],
        "params": dict(settings["params"]),
        "target": settings["target"],
        **(extra or {}),
    }
    if st.button("Explain this selection", key="inspect_gallery_go", disabled=capped_rows.empty or settings["method"] is None):
        st.session_state["inspect_gallery"] = request
    wanted = st.session_state.get("inspect_gallery")
    if not wanted or wanted["context"] != request["context"]:
        return None
    if wanted != request:
        st.caption("The filters or settings changed since: press the button again to explain the current selection.")
    return wanted
