"""Reading user tables (CSV, TSV, JSON lines, Parquet) into pandas, with errors a learner can act on.

Everything is parsed from bytes so an upload can be checked before anything is written to disk;
`read_table(path)` is the same parser fed from a file. Text formats are decoded as strict UTF-8
first, because a silent wrong decoding would corrupt the text the model learns from.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd

from core.errors import UserError

CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = tuple(CSV_SEPARATORS) + JSON_SUFFIXES + PARQUET_SUFFIXES

# Column names tried, in order, when guessing which column holds the text or the label.
TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "content", "document", "body", "comment", "message")
LABEL_COLUMN_GUESSES = ("label", "labels", "class", "category", "target", "sentiment", "y")


def read_table(path: str | Path) -> pd.DataFrame:
    """The table in a .csv, .tsv, .txt (tab-separated), .jsonl/.json (JSON lines) or .parquet file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"There is no file at {path}; check the path or pick a dataset from the list.")
    return parse_table(path.read_bytes(), path.name)


def parse_table(data: bytes, filename: str) -> pd.DataFrame:
    """The table held in `data`, whose format is decided by the suffix of `filename`."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UserError(f"{filename} has an unsupported file type; save it as one of {', '.join(SUPPORTED_SUFFIXES)}.")
    if not data.strip():
        raise UserError(f"{filename} is empty; choose a file that holds a header row and data rows.")
    if suffix in PARQUET_SUFFIXES:
        table = _parse_parquet(data, filename)
    elif suffix in JSON_SUFFIXES:
        table = _parse_json(_decode_utf8(data, filename), filename)
    else:
        table = _parse_csv(_decode_utf8(data, filename), CSV_SEPARATORS[suffix], filename)
    if table.empty:
        raise UserError(f"{filename} has no data rows; add rows under the header and try again.")
    table.columns = [str(column).strip() for column in table.columns]
    return table


def _decode_utf8(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")  # "-sig" drops the byte-order mark that Excel writes
    except UnicodeDecodeError as error:
        raise UserError(
            f"{filename} is not UTF-8 text (byte {error.start} cannot be decoded); "
            "open it in a text editor or spreadsheet and re-save it with UTF-8 encoding."
        ) from None


def _parse_csv(text: str, separator: str, filename: str) -> pd.DataFrame:
    try:
        # Everything as strings, and empty cells stay "": labels like "-1" or "NA" must not be
        # reinterpreted as numbers or missing values behind the user's back.
        return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        kind = "tab" if separator == "\t" else "comma"
        raise UserError(
            f"{filename} could not be read as a {kind}-separated table "
            f"({reason}); check that every row has the same number of columns and quotes are closed."
        ) from None


def _parse_json(text: str, filename: str) -> pd.DataFrame:
    """JSON lines (one object per line), or a single JSON array of objects."""
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{filename} is not valid JSON ({error.msg} at line {error.lineno}); fix it or save it as JSON lines."
            ) from None
    else:
        records = [_parse_json_line(line, number, filename) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not all(isinstance(record, dict) for record in records):
        raise UserError(f'{filename} must hold one JSON object per row, like {{"text": "...", "label": "..."}}.')
    return pd.DataFrame.from_records(records)


def _parse_json_line(line: str, number: int, filename: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(
            f"Line {number} of {filename} is not valid JSON ({error.msg}); each line must be one JSON object."
        ) from None


def _parse_parquet(data: bytes, filename: str) -> pd.DataFrame:
    import pyarrow
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(io.BytesIO(data)).to_pandas()
    except (pyarrow.ArrowException, OSError) as error:
        raise UserError(f"{filename} could not be read as a Parquet file ({error}); re-export it or upload it as CSV.") from None


def guess_columns(columns: list[str]) -> tuple[str | None, str | None]:
    """The most likely text and label columns among `columns` (None where nothing fits)."""
    lowered = {column.lower(): column for column in columns}
    text = next((lowered[name] for name in TEXT_COLUMN_GUESSES if name in lowered), None)
    label = next((lowered[name] for name in LABEL_COLUMN_GUESSES if name in lowered), None)
    return text, label


def select_columns(table: pd.DataFrame, text_column: str, label_column: str, where: str) -> pd.DataFrame:
    """A frame with string columns "text" and "label" (and "split" if the table has one)."""
    missing = [column for column in (text_column, label_column) if column not in table.columns]
    if missing:
        raise UserError(
            f"{where[:1].upper() + where[1:]} has no column named {' or '.join(repr(column) for column in missing)}; "
            f"its columns are {', '.join(repr(column) for column in table.columns)} "
            f"— choose the text and label columns from those."
        )
    if text_column == label_column:
        raise UserError(
            f"The text column and the label column of {where} are both {text_column!r}; choose two different columns."
        )
    frame = pd.DataFrame({"text": _as_strings(table[text_column]), "label": _as_strings(table[label_column])})
    if "split" in table.columns and "split" not in (text_column, label_column):
        frame["split"] = _as_strings(table["split"]).str.lower()
    return frame


def _as_strings(values: pd.Series) -> pd.Series:
    return values.map(cell_to_string).astype(str)


def cell_to_string(value: object) -> str:
    """A cell as stripped text: missing -> "", 1.0 -> "1" (JSON nulls turn integer columns into floats)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
