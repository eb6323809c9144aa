"""Reading token-tagged sentences: CoNLL-style text, or JSON lines / JSON array / Parquet tables of lists.

- CoNLL text (.conll, .txt, .tsv, .iob, .bio): one `token tag` per line, separated by spaces or a
  tab; a blank (or whitespace-only) line between sentences; `-DOCSTART-` lines are skipped. A line
  with one field or three and more is refused with its line number.
- JSON lines / JSON array / Parquet: one sentence per row, a list of tokens and a list of tags in
  configurable columns ("tokens" and "tags" by default); an optional "split" column is kept.

Every source becomes a frame of sentences with two list columns, `tokens` and `tags` (and `lines`
for messages); `core.ner.schemes.check_tags` checks it against its tag scheme.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.data.tables import parse_table
from core.errors import UserError

CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".bio")
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
NER_SUFFIXES = CONLL_SUFFIXES + TABLE_SUFFIXES
DOCSTART = "-DOCSTART-"
DEFAULT_TOKENS_COLUMN, DEFAULT_TAGS_COLUMN = "tokens", "tags"


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
        return sentences_from_table(
            parse_table(data, filename), tokens_column or DEFAULT_TOKENS_COLUMN, tags_column or DEFAULT_TAGS_COLUMN, filename
        )
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
            hint = (
                "add the missing tag, or leave the line empty if it should end the sentence"
                if len(fields) == 1
                else "remove the space inside a token, or keep only the first (token) and last (tag) columns of a file "
                "with more, such as CoNLL-2003's token, POS, chunk, tag"
            )
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
    return pd.DataFrame(
        {"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences], "lines": [s[2] for s in sentences]}
    )


def sentences_from_table(table: pd.DataFrame, tokens_column: str, tags_column: str, filename: str) -> pd.DataFrame:
    """Sentences from a table whose cells hold lists of tokens and of tags (one sentence per row)."""
    missing = [column for column in (tokens_column, tags_column) if column not in table.columns]
    if missing:
        raise UserError(
            f"{filename} has no column named {' or '.join(repr(column) for column in missing)}; its columns are "
            f"{', '.join(repr(str(column)) for column in table.columns)} — choose the token and tag list columns from those."
        )
    if tokens_column == tags_column:
        raise UserError(
            f"The token column and the tag column of {filename} are both {tokens_column!r}; choose two different columns."
        )
    tokens = [_string_list(cell, row, tokens_column, filename) for row, cell in enumerate(table[tokens_column], 1)]
    tags = [_string_list(cell, row, tags_column, filename) for row, cell in enumerate(table[tags_column], 1)]
    for row, (words, labels) in enumerate(zip(tokens, tags), 1):
        if not words:
            raise UserError(
                f"Row {row} of {filename} is an empty sentence (no tokens); delete that row or give it tokens and tags."
            )
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
