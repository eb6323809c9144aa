"""The Data page's instructions mode: prompt/response pairs a language model is tuned on.

A built-in set, a registered one, or an upload (prompt and response columns mapped, or a chat messages column).
The overview shows the split sizes, a preview, how long prompts and responses are in the tokens of a built-in
language model (in words when none is ready), and how many pairs a max length would cut.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.data.registry import SPEC_FILE, dataset_kind
from core.data.splits import SPLIT_NAMES
from core.data.tables import SUPPORTED_SUFFIXES, parse_table
from core.errors import UserError
from core.instructions.data import (
    MESSAGES,
    PROMPT,
    RESPONSE,
    InstructionSplits,
    answers_are_labels,
    register_instruction_dataset,
)
from core.task_keys import INSTRUCTION_TUNING
from core.workspace import datasets_dir, workspace_root
from pages import SAVE_MESSAGE_KEY, choose_dataset, dataset_source, prepare_with_bar

PREVIEW_ROWS = 20
DEFAULT_MAX_LENGTH = 256
WORDS = "words"  # the length unit when no tokenizer is ready
PROMPT_GUESSES = (PROMPT, "instruction", "question", "input", "query")
RESPONSE_GUESSES = (RESPONSE, "answer", "output", "completion", "target")
COLUMN_MODES = ("Prompt and response columns", "Chat messages column")


@st.cache_data(show_spinner="Loading and splitting the pairs…", max_entries=16)
def cached_instruction_splits(workspace: str, dataset: str, seed: int, max_rows: int | None, stamp: float) -> InstructionSplits:
    """Splits keyed on every argument; `workspace` keeps two workspaces apart, `stamp` notices a re-registered name."""
    return dataset_kind(INSTRUCTION_TUNING).load(dataset, seed=seed, max_rows=max_rows)


@st.cache_data(show_spinner="Reading the file…", max_entries=4)
def cached_table(filename: str, data: bytes) -> pd.DataFrame:
    return parse_table(data, filename)


@st.cache_resource(show_spinner="Loading the tokenizer…", max_entries=2)
def cached_tokenizer(workspace: str, model: str):
    from transformers import AutoTokenizer

    from core.catalog import BUILTIN_MODELS

    return AutoTokenizer.from_pretrained(BUILTIN_MODELS[model].local_dir())


@st.cache_data(show_spinner="Counting tokens…", max_entries=8)
def cached_lengths(workspace: str, dataset: str, seed: int, max_rows: int | None, stamp: float, unit: str) -> pd.DataFrame:
    """Per pair: split, prompt and response length in `unit` (a built-in model's tokens, or words)."""
    rows = cached_instruction_splits(workspace, dataset, seed, max_rows, stamp).all_rows()
    if unit == WORDS:
        prompts = rows[PROMPT].str.split().str.len()
        responses = rows[RESPONSE].str.split().str.len()
    else:
        # Counted as training encodes them: the prompt in the model's chat format, the response with its end-of-text token.
        from core.instructions.encoding import prompt_ids, response_ids

        tokenizer = cached_tokenizer(workspace, unit)
        prompts = [len(prompt_ids(tokenizer, prompt)) for prompt in rows[PROMPT]]
        responses = [len(response_ids(tokenizer, response)) for response in rows[RESPONSE]]
    return pd.DataFrame({"split": rows["split"], PROMPT: prompts, RESPONSE: responses})


def version_stamp(dataset: str) -> float:
    spec = datasets_dir() / dataset / SPEC_FILE
    return spec.stat().st_mtime if spec.is_file() else 0.0


def guess_pair_columns(columns: list[str]) -> tuple[str | None, str | None]:
    """The likely prompt and response columns (None where no name fits: the selectbox then asks)."""
    lowered = {column.lower(): column for column in columns}
    prompt = next((lowered[name] for name in PROMPT_GUESSES if name in lowered), None)
    response = next((lowered[name] for name in RESPONSE_GUESSES if name in lowered and lowered[name] != prompt), None)
    return prompt, response


def ready_models() -> dict[str, str]:
    """Key -> title of the built-in language models this task trains whose files are ready (no download to count)."""
    from core.catalog import BUILTIN_MODELS

    return {
        key: model.title for key, model in BUILTIN_MODELS.items() if model.serves(INSTRUCTION_TUNING, "text") and model.is_ready()
    }


def instruction_main() -> None:
    st.caption(
        "Prompts and the responses a language model should learn to give (instruction tuning): pick a set, "
        "check its pairs and how long they are before training."
    )
    source = dataset_source(
        "Instruction dataset source",
        "data_instr_source",
        "Built-in sets are ready to use; Upload adds a table of prompt/response pairs or chat conversations; "
        "Registered lists uploads saved earlier.",
    )
    if source == "Upload":
        upload_section()
        return
    builtin = source == "Built-in"
    dataset = choose_dataset(
        INSTRUCTION_TUNING,
        builtin,
        "instruction dataset",
        "data_instr_builtin" if builtin else "data_instr_registered",
        "Sentiment questions and tweet people and places are real text; planted answers is synthetic, "
        "with a known answer for explanations.",
        "No instruction datasets are registered yet: choose Upload above to add a CSV, TSV, JSON lines or Parquet file.",
    )
    if dataset is not None:
        show_overview(dataset)


def show_overview(dataset: str) -> None:
    with st.expander("Split settings"):
        seed = st.number_input(
            "Seed",
            min_value=0,
            value=42,
            step=1,
            key="data_instr_seed",
            help="The same seed always puts the same pairs in the same split.",
        )
        max_rows = st.number_input(
            "Row limit (0 = all pairs)",
            min_value=0,
            value=0,
            step=100,
            key="data_instr_max_rows",
            help="A sample of this many pairs (keeping each answer's share when answers are labels) for quick experiments.",
        )
    prepare_with_bar(dataset_kind(INSTRUCTION_TUNING), dataset)
    key = (str(workspace_root()), dataset, int(seed), int(max_rows) or None, version_stamp(dataset))
    splits = cached_instruction_splits(*key)
    sizes = splits.sizes()
    labels = answers_are_labels(splits.all_rows())
    answers = f"{len(labels)} distinct answers: {', '.join(labels)}" if labels else "free-text answers"
    st.markdown(f"**{sum(sizes.values()):,} prompt/response pairs**, {answers}")
    st.caption(f"Source: {splits.source}")
    for column, name in zip(st.columns(len(SPLIT_NAMES)), SPLIT_NAMES):
        column.metric(f"{name} pairs", f"{sizes[name]:,}")
    st.subheader("Preview")
    st.dataframe(splits.all_rows().head(PREVIEW_ROWS)[[PROMPT, RESPONSE, "split"]], hide_index=True)
    show_lengths(key)


def show_lengths(key: tuple) -> None:
    st.subheader("Length")
    models = ready_models()
    left, right = st.columns(2)
    if models:
        unit = left.selectbox(
            "Count tokens of",
            list(models),
            format_func=models.get,
            key="data_instr_tokenizer",
            help="The built-in language model whose tokenizer counts the lengths, with its chat format and "
            "end-of-text token, as training encodes the pairs.",
        )
        noun = "tokens"
    else:
        unit, noun = WORDS, WORDS
        left.caption(
            "No built-in language model is ready yet, so lengths are counted in words (a token is a word or a piece of "
            "one, so there are at least as many tokens); pick SmolLM2 on the Train page once to count its tokens."
        )
    max_length = int(
        right.number_input(
            f"Max length ({noun})",
            min_value=8,
            value=DEFAULT_MAX_LENGTH,
            step=32,
            key="data_instr_max_length",
            help="The run's max length: a prompt plus its response longer than this has its prompt cut from the left.",
        )
    )
    try:
        lengths = cached_lengths(*key, unit)
    except UserError as problem:
        st.error(str(problem))
        return
    total = lengths[PROMPT] + lengths[RESPONSE]
    over = int((total > max_length).sum())
    sentence = (
        f"{over:,} of {len(lengths):,} prompts + responses are longer than {max_length} {noun}; "
        "their prompts are cut from the left when training."
    )
    (st.warning if over else st.success)(sentence)
    prompt_column, response_column = st.columns(2)
    prompt_column.plotly_chart(length_figure(lengths, PROMPT, noun), key="data_instr_prompt_lengths")
    response_column.plotly_chart(length_figure(lengths, RESPONSE, noun), key="data_instr_response_lengths")


def length_figure(lengths: pd.DataFrame, column: str, noun: str):
    import plotly.graph_objects as go

    figure = go.Figure(
        [go.Histogram(x=part[column], name=name, opacity=0.6) for name, part in lengths.groupby("split", sort=False)]
    )
    figure.update_layout(
        barmode="overlay",
        title=f"{noun.capitalize()} per {column}, by split",
        xaxis_title=f"{noun} per {column}",
        yaxis_title=f"{column}s",
        legend_title="split",
    )
    return figure


def upload_section() -> None:
    uploaded = st.file_uploader(
        "Upload prompt/response pairs",
        type=[suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES],
        key="data_instr_upload",
        help="One row per example: a prompt column and a response column, or (JSON lines / Parquet) a messages column "
        'of chat turns such as [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}].',
    )
    if uploaded is None:
        st.info(
            "Upload a file with a prompt column and a response column (e.g. a CSV with the header prompt,response), "
            "or JSON lines with a messages column of chat turns; the last assistant turn is the response."
        )
        return
    upload_form(uploaded.name, uploaded.getvalue())


def upload_form(filename: str, data: bytes) -> None:
    """Column mapping (or the chat column), a preview, the name and Save for one uploaded file."""
    try:
        table = cached_table(filename, data)
    except UserError as error:
        st.error(str(error))
        return
    columns = [str(column) for column in table.columns]
    mode = st.radio(
        "The pairs are in",
        COLUMN_MODES,
        index=1 if MESSAGES in columns and PROMPT not in columns else 0,
        key="data_instr_mode",
        horizontal=True,
        help="Two columns of text, or one column of chat conversations (a list of role/content turns per row).",
    )
    if mode == COLUMN_MODES[1]:
        st.selectbox(
            "Messages column",
            columns,
            index=columns.index(MESSAGES) if MESSAGES in columns else 0,
            key="data_instr_messages_column",
            help="The column whose rows are chat turns; the last assistant turn is the response, the turns before it the "
            "prompt (a system message becomes its first line).",
        )
    else:
        prompt_guess, response_guess = guess_pair_columns(columns)
        st.selectbox(
            "Prompt column",
            columns,
            index=columns.index(prompt_guess) if prompt_guess else None,
            placeholder="Choose the prompt column",
            key="data_instr_prompt_column",
            help="The column holding what the model reads: the instruction or question.",
        )
        st.selectbox(
            "Response column",
            columns,
            index=columns.index(response_guess) if response_guess else None,
            placeholder="Choose the response column",
            key="data_instr_response_column",
            help="The column holding the answer the model should learn to write.",
        )
    st.text_input(
        "Dataset name",
        value=Path(filename).stem,
        key="data_instr_name",
        help="The name the dataset is saved under; letters, digits, dots, dashes and underscores.",
    )
    st.caption(f"First {min(PREVIEW_ROWS, len(table))} of {len(table):,} rows of {filename}:")
    st.dataframe(table.head(PREVIEW_ROWS).astype(str), hide_index=True)
    st.button(
        "Save dataset",
        key="data_instr_save",
        on_click=save_upload,
        args=(filename, data),
        type="primary",
        help="Checks every row (columns, empty responses, chat turns) and saves the dataset if it is usable.",
    )


def save_upload(filename: str, data: bytes) -> None:
    """Button callback: runs before the rerun, so it may switch the page to the saved dataset."""
    state = st.session_state
    chat = state.get("data_instr_mode") == COLUMN_MODES[1]
    try:
        if chat:
            info = register_instruction_dataset(
                state["data_instr_name"], filename, data, messages_column=state["data_instr_messages_column"]
            )
        else:
            info = register_instruction_dataset(
                state["data_instr_name"],
                filename,
                data,
                # Left unchosen: the default name, so the sentence says the file has no such column and lists its own.
                prompt_column=state.get("data_instr_prompt_column") or PROMPT,
                response_column=state.get("data_instr_response_column") or RESPONSE,
            )
    except UserError as error:
        state[SAVE_MESSAGE_KEY] = ("error", str(error))
        return
    state[SAVE_MESSAGE_KEY] = ("success", f"Saved {info.key!r}: {info.description}")
    state["data_instr_source"] = "Registered"
    state["data_instr_registered"] = info.key
