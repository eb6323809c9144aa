"""Dataset versions: a run's exact splits with edits to its training rows, written once and never changed.

A version lives in workspace/datasets/<name>/ like any upload: `rows.parquet` holds every row of the
parent run's three splits in the order the run saw them (a `split` column, the text and label, and for
training rows `example`, the row's position in the parent's training split, and `origin`), and
spec.yaml records the parent (dataset and run), the edits and a checksum of the rows. A run names
it like any dataset, so "retrain on the fixed data" is an ordinary run.

Validation and test rows are the parent's, in the parent's order, so the child run's predictions on
them pair row by row with the parent's (`core.inspect.compare`): fixed and broken examples are read
off directly. The edits only touch the training split:

    relabel   give the rows a class of the dataset
    drop      leave the rows out
    upweight  repeat the rows `copies` more times (Trainer weighs every row the same, so a row seen
              three times an epoch counts three times)
    augment   add `copies` perturbed copies of each row (a word dropped, two words swapped; seeded)

A version keeps its own copy of the rows, so deleting the parent dataset or run does not break it;
the checksum is checked on every load, so a file changed by hand is refused rather than trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.info import TEXT_CLASSIFICATION, DatasetInfo
from core.data.registry import already_exists, check_dataset_name, free_name, is_taken, read_spec, write_spec
from core.data.splits import SPLIT_NAMES, DataSplits, check_labels, stratified_sample
from core.errors import UserError
from core.workspace import datasets_dir, safe_name

ROWS_FILE = "rows.parquet"
ACTIONS = ("relabel", "drop", "upweight", "augment")
ACTION_WORDS = {"relabel": "relabelled", "drop": "dropped", "upweight": "up-weighted", "augment": "augmented"}
MAX_COPIES = 10  # more copies than this swamp the rest of the training split


@dataclass(frozen=True)
class Edit:
    """One action on some of the parent's training rows (`examples`: positions in its training split)."""

    action: str
    examples: tuple[int, ...]
    label: str | None = None  # relabel: the new class
    copies: int = 1  # upweight and augment: how many more of each row

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Edit:
        try:
            return cls(
                action=str(fields["action"]),
                examples=tuple(int(example) for example in fields["examples"]),
                label=None if fields.get("label") is None else str(fields["label"]),
                copies=int(fields.get("copies", 1)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"The edit {fields!r} cannot be read ({type(error).__name__}: {error}); an edit names an action "
                f"({', '.join(ACTIONS)}), its examples (positions in the training split), and a label or copies."
            ) from None

    def as_dict(self) -> dict[str, Any]:
        fields = {"action": self.action, "examples": list(self.examples)}
        if self.action == "relabel":
            fields["label"] = self.label
        if self.action in ("upweight", "augment"):
            fields["copies"] = self.copies
        return fields

    def describe(self) -> str:
        rows = f"{len(self.examples)} row{'s' if len(self.examples) != 1 else ''}"
        detail = {"relabel": f" as {self.label!r}", "upweight": f" ×{self.copies + 1}", "augment": f" (+{self.copies} each)"}
        return f"{rows} {ACTION_WORDS[self.action]}{detail.get(self.action, '')}"


@dataclass(frozen=True)
class VersionSpec:
    """What a version's spec.yaml records."""

    name: str
    parent_dataset: str
    parent_run: str
    edits: list[dict[str, Any]]
    checksum: str
    rows: dict[str, int]  # rows per split
    label_names: list[str]
    created_at: str
    task: str = TEXT_CLASSIFICATION
    kind: str = "version"
    seed: int = 42  # the augmentation's seed

    @property
    def source(self) -> str:
        return f"dataset version of {self.parent_dataset} made from run {self.parent_run} (workspace/datasets/{self.name}/)"

    def edit_list(self) -> list[Edit]:
        return [Edit.from_dict(edit) for edit in self.edits]

    def summary(self) -> str:
        return "; ".join(edit.describe() for edit in self.edit_list()) or "no edits"

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            key=self.name,
            title=self.name,
            task=self.task,
            source=self.source,
            description=f"Version of {self.parent_dataset} from run {self.parent_run}: {self.summary()}; "
            f"{sum(self.rows.values()):,} rows, checksum {self.checksum[:12]}.",
            builtin=False,
        )


def is_version(name: str) -> bool:
    """Whether the registered dataset `name` is a dataset version (rather than an uploaded file)."""
    try:
        return read_spec(name).get("kind") == "version"
    except UserError:
        return False


def version_spec(name: str) -> VersionSpec:
    fields = read_spec(name)
    if fields.get("kind") != "version":
        raise UserError(f"The dataset {name!r} is an upload, not a dataset version; versions are made from a run's edits.")
    try:
        return VersionSpec(**fields)
    except TypeError as error:
        raise UserError(
            f"The description of the dataset version {name!r} is damaged ({error}); delete it and make it again from "
            "its parent run."
        ) from None


# ---------------------------------------------------------------------------------------------
# Applying edits


def apply_edits(train: pd.DataFrame, edits: list[Edit], label_names: list[str], seed: int = 42) -> pd.DataFrame:
    """The training rows after `edits`: text, label, `example` (the parent row it comes from) and `origin`.

    Relabels apply first, then drops; up-weighted and augmented copies are of the relabelled rows and
    follow the parent's rows. Every problem is one sentence: an unknown action or class, an example
    outside the split, a row edited in two ways that contradict, a class left with no training row.
    """
    if not edits:
        raise UserError("There are no edits: pick some training rows and choose relabel, drop, up-weight or augment.")
    check_edits(edits, len(train), label_names)
    rows = train[["text", "label"]].reset_index(drop=True).copy()
    rows["example"] = range(len(rows))
    rows["origin"] = "parent"
    for edit in edits:
        if edit.action == "relabel":
            changed = rows["example"].isin(edit.examples) & (rows["label"] != edit.label)
            rows.loc[changed, "label"] = edit.label
            rows.loc[changed, "origin"] = "relabelled"
    dropped = {example for edit in edits if edit.action == "drop" for example in edit.examples}
    kept = rows[~rows["example"].isin(dropped)]
    extra = [copies_of(kept, edit, seed + number) for number, edit in enumerate(edits) if edit.action in ("upweight", "augment")]
    result = pd.concat([kept, *extra], ignore_index=True)
    check_classes_left(result, train, label_names)
    return result


def check_edits(edits: list[Edit], rows: int, label_names: list[str]) -> None:
    relabelled: dict[int, str] = {}
    dropped: set[int] = set()
    for edit in edits:
        if edit.action not in ACTIONS:
            raise UserError(f"There is no edit {edit.action!r}; choose one of {', '.join(ACTIONS)}.")
        if not edit.examples:
            raise UserError(f"The {edit.action} edit names no rows; pick the training rows it applies to.")
        outside = sorted({example for example in edit.examples if not 0 <= example < rows})
        if outside:
            raise UserError(
                f"The training split has {rows:,} rows (0 to {rows - 1}), so {', '.join(map(str, outside[:5]))} "
                "name none; pick rows of the run's training split."
            )
        if edit.action == "relabel":
            if edit.label not in label_names:
                raise UserError(
                    f"{edit.label!r} is not a class of this dataset; relabel to one of {', '.join(map(repr, label_names))} "
                    "(a new class needs a new dataset, registered on the Data page)."
                )
            clash = sorted(example for example in edit.examples if relabelled.get(example, edit.label) != edit.label)
            if clash:
                raise UserError(f"Row {clash[0]} is relabelled to two different classes; give each row one new label.")
            relabelled.update(dict.fromkeys(edit.examples, edit.label))
        if edit.action == "drop":
            dropped.update(edit.examples)
        if edit.action in ("upweight", "augment") and not 1 <= edit.copies <= MAX_COPIES:
            raise UserError(f"Copies must be between 1 and {MAX_COPIES} (got {edit.copies}); 1 or 2 is a good start.")
    for edit in edits:
        both = sorted(dropped & set(edit.examples)) if edit.action != "drop" else []
        if both:
            raise UserError(f"Row {both[0]} is both dropped and {ACTION_WORDS[edit.action]}; choose one for each row.")


def check_classes_left(result: pd.DataFrame, train: pd.DataFrame, label_names: list[str]) -> None:
    """Every class the parent trained on keeps at least one training row (the test split still asks for it)."""
    left = result["label"].value_counts()
    emptied = [name for name in label_names if name in set(train["label"]) and left.get(name, 0) == 0]
    if emptied:
        raise UserError(
            f"These edits leave no training row of the class {emptied[0]!r}; the test split still has it, so the model "
            "could never learn it. Keep some of its rows (drop or relabel fewer)."
        )


def copies_of(kept: pd.DataFrame, edit: Edit, seed: int) -> pd.DataFrame:
    """The extra rows of an up-weight (exact copies) or an augmentation (perturbed copies) of the kept rows."""
    chosen = kept[kept["example"].isin(edit.examples)]
    repeated = chosen.loc[chosen.index.repeat(edit.copies)].copy()
    if edit.action == "augment":
        generator = random.Random(seed)
        repeated["text"] = [perturbed(text, generator) for text in repeated["text"]]
        repeated["origin"] = "augmented"
    else:
        repeated["origin"] = "copy"
    return repeated


def perturbed(text: str, generator: random.Random) -> str:
    """The text with one word dropped and two words swapped (EDA's random deletion and swap, Wei & Zou 2019);
    a text of one or two words keeps them all and only swaps."""
    words = text.split()
    if len(words) > 2:
        words.pop(generator.randrange(len(words)))
    if len(words) > 1:
        first, second = generator.sample(range(len(words)), 2)
        words[first], words[second] = words[second], words[first]
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Writing and reading


def proposed_name(parent_dataset: str) -> str:
    """A free name for a version of `parent_dataset`: its name (a file's stem) plus "-edit", numbered when taken."""
    stem = safe_name(Path(parent_dataset).stem if Path(parent_dataset).suffix else parent_dataset, fallback="dataset")
    base = f"{stem}-edit"
    return base if not is_taken(base) else free_name(base)


def write_version(
    name: str | None,
    *,
    parent_dataset: str,
    parent_run: str,
    splits: dict[str, pd.DataFrame],
    edits: list[Edit],
    label_names: list[str],
    seed: int = 42,
) -> VersionSpec:
    """Apply `edits` to `splits["train"]` and store the three splits as a new dataset version named `name`."""
    train = apply_edits(splits["train"], edits, label_names, seed)
    key = check_dataset_name(name) if name else proposed_name(parent_dataset)
    rows = version_rows(train, splits)
    spec = VersionSpec(
        name=key,
        parent_dataset=parent_dataset,
        parent_run=parent_run,
        edits=[edit.as_dict() for edit in edits],
        checksum=rows_checksum(rows),
        rows={split: int((rows["split"] == split).sum()) for split in SPLIT_NAMES},
        label_names=list(label_names),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seed=seed,
    )
    folder = datasets_dir() / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()  # exclusive: a save racing this one for the name gets a sentence, not a mix of both
    except FileExistsError:
        raise already_exists(key) from None
    rows.to_parquet(folder / ROWS_FILE, index=False)
    (folder / "edits.json").write_text(json.dumps(spec.edits, indent=2), encoding="utf-8")
    write_spec(folder, asdict(spec))  # last: a folder without a spec is not listed, so a crash leaves no half version
    return spec


def version_rows(train: pd.DataFrame, splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = [train.assign(split="train")]
    for split in ("validation", "test"):
        held_out = splits[split][["text", "label"]].reset_index(drop=True)
        parts.append(held_out.assign(split=split, example=range(len(held_out)), origin="parent"))
    rows = pd.concat(parts, ignore_index=True)
    return rows[["split", "text", "label", "example", "origin"]].astype({"example": "int64"})


def rows_checksum(rows: pd.DataFrame) -> str:
    """sha256 over the rows in order (split, text, label): the same rows give the same sum on any machine."""
    digest = hashlib.sha256()
    for split, text, label in zip(rows["split"], rows["text"], rows["label"]):
        digest.update(json.dumps([split, text, label], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def read_version_rows(name: str) -> pd.DataFrame:
    """The version's rows (split, text, label, example, origin), checked against its checksum."""
    spec = version_spec(name)
    path = datasets_dir() / name / ROWS_FILE
    try:
        rows = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise UserError(
            f"The rows of the dataset version {name!r} cannot be read ({type(error).__name__}); delete it and make it "
            "again from its parent run."
        ) from None
    if rows_checksum(rows) != spec.checksum:
        raise UserError(
            f"The rows of the dataset version {name!r} have changed since it was written (their checksum differs); a "
            "version is read-only. Delete it and make it again from its parent run."
        )
    return rows


def load_version_splits(name: str, *, seed: int = 42, max_rows: int | None = None) -> DataSplits:
    """The version's splits, in the order stored; `max_rows` subsamples the training rows only, so validation and
    test stay the parent's and its runs still pair with the parent's predictions."""
    spec = version_spec(name)
    rows = read_version_rows(name)
    parts = {split: rows[rows["split"] == split][["text", "label"]].reset_index(drop=True) for split in SPLIT_NAMES}
    check_labels(parts["train"], f"the training rows of the dataset version {name!r}")
    if max_rows is not None:
        parts["train"] = stratified_sample(parts["train"], max_rows, seed, by=["label"]).reset_index(drop=True)
    return DataSplits(**parts, label_names=list(spec.label_names), source=spec.source)
