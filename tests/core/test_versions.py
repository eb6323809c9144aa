"""Dataset versions without a trainer: the edits, the sentences for bad ones, the checksum, and what loads."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from core.cli import main
from core.data import delete_dataset, list_datasets, load_splits
from core.data.versions import ROWS_FILE, Edit, apply_edits, perturbed, proposed_name, read_version_rows, write_version
from core.errors import UserError
from core.retrain_cli import parse_rows
from core.workspace import datasets_dir

NAMES = ["negative", "positive"]


def splits() -> dict[str, pd.DataFrame]:
    """Twelve training rows (alternating classes), and four validation and four test rows."""

    def rows(prefix: str, count: int) -> pd.DataFrame:
        return pd.DataFrame(
            {"text": [f"{prefix} row {i} with some words" for i in range(count)], "label": [NAMES[i % 2] for i in range(count)]}
        )

    return {"train": rows("train", 12), "validation": rows("validation", 4), "test": rows("test", 4)}


def write(edits, name: str | None = "fixed", parent: str = "reviews.csv"):
    return write_version(name, parent_dataset=parent, parent_run="run-1", splits=splits(), edits=edits, label_names=NAMES)


def test_relabel_drop_upweight_and_augment_change_only_the_training_rows(workspace):
    edits = [
        Edit("relabel", (0, 2), label="positive"),
        Edit("drop", (1,)),
        Edit("upweight", (3,), copies=2),
        Edit("augment", (4, 0), copies=1),
    ]
    spec = write(edits)
    loaded = load_splits(spec.name)
    train = read_version_rows(spec.name).query("split == 'train'")
    assert list(loaded.train["text"][:11]) == [text for i, text in enumerate(splits()["train"]["text"]) if i != 1]
    assert train.set_index("example").loc[[0, 2], "label"].eq("positive").all()  # relabelled, copies included
    assert (train["origin"] == "copy").sum() == 2 and (train["origin"] == "augmented").sum() == 2
    assert set(train.loc[train["origin"] == "augmented", "example"]) == {0, 4}
    # Copies carry the relabelled label: row 0 was relabelled positive, row 4 stays negative.
    assert train.loc[train["origin"] == "augmented", "label"].tolist() == ["positive", "negative"]
    for split in ("validation", "test"):  # the parent's rows, in the parent's order
        pd.testing.assert_frame_equal(loaded.split(split), splits()[split])
    assert loaded.label_names == NAMES and spec.rows == {"train": 15, "validation": 4, "test": 4}


def test_the_version_is_listed_with_its_parent_and_edits_and_data_show_reads_it(workspace, capsys):
    write([Edit("drop", (5,))])
    info = next(entry for entry in list_datasets() if entry.key == "fixed")
    assert "Version of reviews.csv from run run-1" in info.description and "1 row dropped" in info.description
    assert main(["data", "show", "fixed"]) == 0
    assert "rows per split: train 11 · validation 4 · test 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edits", "sentence"),
    [
        ([], "There are no edits"),
        ([Edit("relabel", (0,), label="neutral")], "'neutral' is not a class of this dataset"),
        ([Edit("drop", (12,))], "so 12 name none"),
        ([Edit("drop", tuple(range(0, 12, 2)))], "leave no training row of the class 'negative'"),
        ([Edit("relabel", (3,), label="negative"), Edit("relabel", (3,), label="positive")], "two different classes"),
        ([Edit("drop", (3,)), Edit("upweight", (3,))], "both dropped and up-weighted"),
        ([Edit("augment", (3,), copies=50)], "Copies must be between 1 and 10"),
        ([Edit("shuffle", (3,))], "There is no edit 'shuffle'"),
    ],
)
def test_an_edit_that_cannot_be_made_is_a_sentence_and_writes_nothing(workspace, edits, sentence):
    with pytest.raises(UserError, match=sentence):
        write(edits)
    assert not (datasets_dir() / "fixed").exists()


def test_a_version_changed_by_hand_is_refused_rather_than_trained_on(workspace):
    spec = write([Edit("drop", (5,))])
    path = datasets_dir() / spec.name / ROWS_FILE
    rows = pd.read_parquet(path)
    rows.loc[0, "label"] = "positive" if rows.loc[0, "label"] == "negative" else "negative"
    rows.to_parquet(path, index=False)
    with pytest.raises(UserError, match="have changed since it was written"):
        load_splits(spec.name)


def test_a_row_limit_samples_the_training_rows_only(workspace):
    spec = write([Edit("upweight", (0,))])
    loaded = load_splits(spec.name, max_rows=6)
    assert len(loaded.train) == 6 and loaded.train["label"].value_counts().min() >= 2
    assert len(loaded.validation) == 4 and len(loaded.test) == 4


def test_names_follow_the_one_rule_and_a_taken_one_is_refused(workspace):
    first = write([Edit("drop", (5,))], name=None)
    assert first.name == "reviews-edit" and proposed_name("reviews.csv") == "reviews-edit-2"
    with pytest.raises(UserError, match="already exists"):
        write([Edit("drop", (5,))], name="reviews-edit")
    with pytest.raises(UserError, match="built-in dataset"):
        write([Edit("drop", (5,))], name="planted-keywords")
    delete_dataset("reviews-edit")
    assert proposed_name("reviews.csv") == "reviews-edit"


def test_augmentation_drops_one_word_and_swaps_two_with_a_seed():
    text = "one two three four five six"
    first, again = perturbed(text, random.Random(3)), perturbed(text, random.Random(3))
    assert first == again and first != text
    assert len(first.split()) == 5 and set(first.split()) < set(text.split())
    assert perturbed("alone", random.Random(3)) == "alone"


def test_edits_apply_relabels_before_copies():
    train = splits()["train"]
    result = apply_edits(train, [Edit("upweight", (1,), copies=3), Edit("relabel", (1,), label="negative")], NAMES)
    assert result[result["example"] == 1]["label"].eq("negative").all() and (result["example"] == 1).sum() == 4


def test_row_lists_on_the_command_line():
    assert parse_rows("3,17-19, 5") == (3, 17, 18, 19, 5)
    with pytest.raises(UserError, match="not a list of rows"):
        parse_rows("3,x")


def test_data_edit_refuses_a_missing_run_and_a_malformed_relabel(workspace, capsys):
    assert main(["data", "edit", "no-such-run", "--drop", "1"]) == 2
    assert "There is no run 'no-such-run'" in capsys.readouterr().err
    assert main(["data", "edit", "no-such-run", "--relabel", "positive"]) == 2
    assert "needs ROWS=LABEL" in capsys.readouterr().err
