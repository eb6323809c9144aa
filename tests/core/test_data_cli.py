"""`python -m core data …` for every kind the Data page takes, and run configs naming the raw files by path.

Each kind goes the whole way: add -> list -> show --json -> a run config naming it passes the
task's preflight (what `core.jobs.submit` runs before queueing) -> the same files named by path in
a YAML pass it too and load the same splits -> delete. The data is made here: 4x4 PNGs, a few
CoNLL sentences, a small CSV.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from core.cli import main
from core.config import RunConfig
from core.errors import UserError
from core.tasks import TASKS


def cli(capsys, *arguments: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m core …`, run in this process."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def refused(capsys, *arguments: str) -> str:
    status, out, err = cli(capsys, *arguments)
    assert status == 2 and err.startswith("error: ") and "Traceback" not in err, (status, out, err)
    return err


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


# ---------------------------------------------------------------------------------------------
# One small dataset of each kind: (the file `data add` takes, the --images zip or None)


def text_files(folder: Path) -> tuple[Path, None]:
    path = folder / "reviews.csv"
    path.write_text(
        "sentence,sentiment\n" + "".join(f"a fine film {i},pos\na dull film {i},neg\n" for i in range(10)), encoding="utf-8"
    )
    return path, None


def image_files(folder: Path) -> tuple[Path, None]:
    files = {
        f"photos/{label}/{i}.png": png((200, 20 * i, 0) if label == "cat" else (0, 20 * i, 200))
        for label in ("cat", "dog")
        for i in range(6)
    }
    return write_zip(folder / "pets.zip", files), None


def conll_files(folder: Path) -> tuple[Path, None]:
    sentences = [f"Ada\tB-PER\nvisited\tO\nNew\tB-LOC\nYork\tI-LOC\non\tO\nday\tO\n{i}\tO" for i in range(7)]
    sentences += [f"nothing\tO\nhappened\tO\nto\tO\nBob\tB-PER\n{i}\tO" for i in range(3)]
    path = folder / "people.conll"
    path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return path, None


def caption_files(folder: Path) -> tuple[Path, Path]:
    colours = {"red": (220, 30, 30), "blue": (30, 60, 220)}
    images = {
        f"shots/{colour}{i}.png": png(tuple(min(255, value + i) for value in rgb))
        for colour, rgb in colours.items()
        for i in range(6)
    }
    table = folder / "captions.csv"
    table.write_text(
        "image,caption\n"
        + "".join(f"{name.removeprefix('shots/')},a {name[6:-5]} square number {name[-5]}\n" for name in images),
        encoding="utf-8",
    )
    return table, write_zip(folder / "shots.zip", images)


@dataclass(frozen=True)
class Kind:
    task: str
    make: object  # folder -> (file, zip or None)
    model: str  # the fixture giving a model folder the task's preflight accepts
    rows: int
    classes: list[str]
    yaml: str = ""  # what a config naming the file by path adds: a table's columns unless they are text and label


KINDS = [
    Kind(
        "text_classification",
        text_files,
        "tiny_bert",
        rows=20,
        classes=["neg", "pos"],
        yaml="text_column: sentence\nlabel_column: sentiment\n",
    ),
    Kind("image_classification", image_files, "tiny_vit", rows=12, classes=["cat", "dog"]),
    Kind("token_classification", conll_files, "tiny_bert", rows=10, classes=["LOC", "PER"]),
    Kind("image_text_contrastive", caption_files, "tiny_dual_encoder", rows=12, classes=[]),
]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    from core.images.scratch import write_random_vit

    return write_random_vit(tmp_path_factory.mktemp("tiny-vit"), "tiny")


def add_arguments(kind: Kind, file: Path, archive: Path | None, name: str) -> list[str]:
    return ["data", "add", str(file), "--task", kind.task, "--name", name, *(["--images", str(archive)] if archive else [])]


def preflight_yaml(folder: Path, task: str, model: Path, dataset: str, extra: str = "") -> RunConfig:
    """The YAML a user writes, loaded and checked as `python -m core train` does before queueing."""
    path = folder / "run.yaml"
    path.write_text(
        f"name: by path\ntask: {task}\nmodel: {model}\ndataset: '{dataset}'\nmax_length: 32\n{extra}", encoding="utf-8"
    )
    config = RunConfig.load(path)
    config.raise_if_invalid()
    TASKS[task].preflight(config)
    return config


def loaded_splits(task: str, dataset: str, config: RunConfig | None = None) -> dict[str, list[str]]:
    """Each split's labels (text: its texts; NER: each sentence's tags joined), loaded as the task loads its data."""
    from core.data import load_splits
    from core.image_text.data import load_pair_splits
    from core.images.datasets import load_image_splits
    from core.ner.data import load_ner_splits

    if task == "text_classification":
        columns = {"text_column": config.text_column or None, "label_column": config.label_column or None} if config else {}
        splits = load_splits(dataset, **columns)
        return {name: splits.split(name)["text"].tolist() for name in ("train", "validation", "test")}
    if task == "token_classification":
        splits = load_ner_splits(dataset)
        return {name: [" ".join(tags) for tags in splits.split(name)["tags"]] for name in ("train", "validation", "test")}
    splits = load_image_splits(dataset) if task == "image_classification" else load_pair_splits(dataset, kind=task)
    return {
        name: splits.frame(name)["text" if task != "image_classification" else "label"].tolist()
        for name in ("train", "validation", "test")
    }


@pytest.mark.parametrize("kind", KINDS, ids=[kind.task for kind in KINDS])
def test_add_list_show_train_config_and_delete(kind, workspace, tmp_path, capsys, request):
    model = request.getfixturevalue(kind.model)
    file, archive = kind.make(tmp_path)

    status, out, err = cli(capsys, *add_arguments(kind, file, archive, "mine"))
    assert status == 0, err
    assert out.startswith(f"registered mine ({kind.task}): ")

    status, out, _ = cli(capsys, "data", "list")
    listed = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
    assert listed["mine"] == [kind.task, "registered"]
    assert "digits" in listed and "tweet-ner" in listed and "shapes-captions" in listed  # every kind's built-ins too

    status, out, _ = cli(capsys, "data", "show", "mine", "--json")
    shown = json.loads(out)
    assert shown["task"] == kind.task and not shown["builtin"]
    assert sum(shown["rows"].values()) == kind.rows and all(shown["rows"][name] > 0 for name in ("train", "validation", "test"))
    assert shown["classes"] == kind.classes and shown["preview"]
    if kind.classes:  # entity types for NER; every split's counts are there
        assert set(shown["balance"]) == {"train", "validation", "test"}
        assert all(set(counts) == set(kind.classes) for counts in shown["balance"].values())
    status, out, _ = cli(capsys, "data", "show", "mine")
    assert status == 0 and f"rows per split: train {shown['rows']['train']} · validation" in out and "preview:" in out

    by_name = preflight_yaml(tmp_path, kind.task, model, "mine")
    path = f"{file} + {archive}" if archive else str(file)
    by_path = preflight_yaml(tmp_path, kind.task, model, path, kind.yaml)
    # The path is read exactly as the upload was: the same rows land in the same splits.
    assert loaded_splits(kind.task, path, by_path) == loaded_splits(kind.task, by_name.dataset)

    status, out, _ = cli(capsys, "data", "delete", "mine")
    assert status == 0 and out.strip() == "deleted dataset mine"
    status, out, _ = cli(capsys, "data", "list")
    assert "mine" not in {line.split()[0] for line in out.splitlines()}
    assert "There is no dataset called 'mine'" in refused(capsys, "data", "show", "mine")
    assert not (workspace / "datasets" / "mine").exists()


def test_text_columns_are_guessed_or_named(workspace, tmp_path, capsys):
    path = tmp_path / "odd.csv"
    path.write_text("body_text,verdict\n" + "".join(f"row {i},{'a' if i % 2 else 'b'}\n" for i in range(20)), encoding="utf-8")
    assert "Which column of odd.csv holds the text? Name it with --text-column (its columns: body_text, verdict)" in refused(
        capsys, "data", "add", str(path), "--task", "text_classification"
    )
    status, out, err = cli(
        capsys,
        "data",
        "add",
        str(path),
        "--task",
        "text_classification",
        "--text-column",
        "body_text",
        "--label-column",
        "verdict",
    )
    assert status == 0 and "text column 'body_text', label column 'verdict'" in out, err
    shown = json.loads(cli(capsys, "data", "show", "odd", "--json")[1])
    assert shown["classes"] == ["a", "b"] and shown["preview"][0]["text"].startswith("row ")


def test_an_image_csv_with_a_zip_is_added_and_named_by_path(workspace, tmp_path, capsys, tiny_vit):
    archive = write_zip(tmp_path / "flat.zip", {f"{i}.png": png((10 * i, 0, 0)) for i in range(12)})
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{i}.png,{'odd' if i % 2 else 'even'}\n" for i in range(12)), encoding="utf-8")
    status, out, err = cli(capsys, "data", "add", str(labels), "--images", str(archive), "--task", "image_classification")
    assert status == 0 and out.startswith("registered flat (image_classification): 12 images in 2 classes"), err
    assert json.loads(cli(capsys, "data", "show", "flat", "--json")[1])["classes"] == ["even", "odd"]
    # Either order in a YAML; stored once in the cache under the files' checksum.
    for dataset in (f"{labels} + {archive}", f"{archive}+{labels}"):
        preflight_yaml(tmp_path, "image_classification", tiny_vit, dataset)
    stored = sorted(path.name for path in (workspace / "cache" / "images" / "files").iterdir())
    assert len(stored) == 1 and stored[0].startswith("file-")
    assert loaded_splits("image_classification", f"{labels} + {archive}") == loaded_splits("image_classification", "flat")
    # A changed file is another dataset: the old key (which a finished run's references name) stays.
    labels.write_text(
        labels.read_text(encoding="utf-8").replace("0.png,even", "0.png,odd").replace("1.png,odd", "1.png,even"), encoding="utf-8"
    )
    preflight_yaml(tmp_path, "image_classification", tiny_vit, f"{labels} + {archive}")
    assert len(list((workspace / "cache" / "images" / "files").iterdir())) == 2


def test_bad_input_is_one_sentence_and_exit_2(workspace, tmp_path, capsys):
    pets, _ = image_files(tmp_path)
    table, _ = text_files(tmp_path)
    not_a_zip = tmp_path / "fake.zip"
    not_a_zip.write_bytes(b"PK but not really")
    assert "There is no task 'images' with datasets; use one of text_classification, image_classification" in refused(
        capsys, "data", "add", str(pets), "--task", "images"
    )
    assert f"There is no file at {tmp_path / 'gone.zip'}" in refused(
        capsys, "data", "add", str(tmp_path / "gone.zip"), "--task", "image_classification"
    )
    assert "fake.zip is not a zip file" in refused(capsys, "data", "add", str(not_a_zip), "--task", "image_classification")
    assert cli(capsys, "data", "add", str(pets), "--task", "image_classification")[0] == 0
    assert "A dataset named 'pets' already exists; choose another name, such as 'pets-2'" in refused(
        capsys, "data", "add", str(table), "--task", "text_classification", "--name", "pets"
    )
    for taken, task, file in (
        ("digits", "text_classification", table),
        ("tweet-ner", "image_classification", pets),
        ("shapes-captions", "text_classification", table),
    ):
        assert f"'{taken}' is the name of a built-in dataset" in refused(
            capsys, "data", "add", str(file), "--task", task, "--name", taken
        )
    assert "There is no registered dataset called 'nope'; the registered ones are pets." in refused(
        capsys, "data", "delete", "nope"
    )
    assert "There is no registered dataset called '../runs'" in refused(capsys, "data", "delete", "../runs")
    assert "'digits' is a built-in dataset and cannot be deleted" in refused(capsys, "data", "delete", "digits")
    assert "give the zip as --images ZIP" in refused(capsys, "data", "add", str(table), "--task", "image_text_fusion")
    assert "--images is for image and image-text datasets" in refused(
        capsys, "data", "add", str(table), "--task", "text_classification", "--images", str(pets)
    )
    assert "--text-column and --label-column name the columns of a text or NER table" in refused(
        capsys, "data", "add", str(pets), "--task", "image_classification", "--text-column", "x"
    )
    assert sorted(path.name for path in (workspace / "datasets").iterdir()) == ["pets"]


def test_a_config_naming_bad_files_is_refused_at_preflight(workspace, tmp_path, tiny_vit, tiny_dual_encoder):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(UserError, match=f"There is no file at {tmp_path / 'gone.zip'}"):
        preflight_yaml(tmp_path, "image_classification", tiny_vit, str(tmp_path / "gone.zip"))
    with pytest.raises(UserError, match=r"fake.zip is not a zip file"):
        preflight_yaml(tmp_path, "image_classification", tiny_vit, str(fake))
    _, shots = caption_files(tmp_path)
    with pytest.raises(UserError, match="A zip alone is not an image-text dataset; name the CSV of pairs"):
        preflight_yaml(tmp_path, "image_text_contrastive", tiny_dual_encoder, str(shots))
    with pytest.raises(UserError, match=r"captions.csv lacks the columns text, label"):
        preflight_yaml(tmp_path, "image_text_fusion", tiny_dual_encoder, f"{tmp_path / 'captions.csv'} + {shots}")
    assert not (workspace / "datasets").exists() or not list((workspace / "datasets").iterdir())
