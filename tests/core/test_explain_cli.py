"""`python -m core explain` for image classification, NER and image-text runs, on runs the suite already trains.

The image run is the session's tiny ViT on planted-squares (tests/test_image_pages.py, trained once
through the job manager); the NER run is tests/test_ner.py's tiny BERT on planted names and cities.
The command runs in this process through `core.cli.main`, as `python -m core` calls it.
"""

from __future__ import annotations

import json

import pytest
from test_image_pages import trained_image_run
from test_ner import ner_run  # noqa: F401 - the fixture, trained once for this module

from core.cli import main
from core.run_files import run_config
from core.store import RunStore


def cli(capsys, *arguments: str) -> tuple[int, str, str]:
    status = main(["explain", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def refused(capsys, *arguments: str) -> str:
    status, out, err = cli(capsys, *arguments)
    assert status == 2 and err.startswith("error: ") and "Traceback" not in err, (status, out, err)
    return err


# ---------------------------------------------------------------------------------------------
# Image classification


@pytest.fixture
def image_run(tmp_path_factory, monkeypatch):
    root, run_id = trained_image_run(tmp_path_factory)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return RunStore().get(run_id)


def test_split_row_scores_every_patch_of_the_grid_as_json(image_run, capsys):
    from core.images.datasets import load_image_splits

    config = run_config(image_run)
    row = load_image_splits(config.dataset, seed=config.seed, max_rows=config.max_rows).frame("test").iloc[2]
    status, out, err = cli(capsys, image_run.id, "--split", "test", "--index", "2", "--method", "occlusion", "--json")
    assert status == 0, err
    payload = json.loads(out)
    rows, cols = payload["params"]["grid"]
    (cells,) = payload["parts"]
    assert cells["input"] == "patches" and cells["layout"] == [rows, cols]
    assert cells["units"] == [f"r{r}c{c}" for r in range(rows) for c in range(cols)] and len(cells["scores"]) == rows * cols
    assert payload["gold_label"] == row["label"] and payload["image"] == row["image"] == payload["text"]
    assert payload["target_label"] == payload["predicted_label"] in ("blue square", "red square")
    assert payload["method"] == "occlusion" and payload["stage"] == "after" and payload["run_id"] == image_run.id
    assert any(score != 0 for score in cells["scores"])


def test_an_image_file_explains_as_its_dataset_row_does(image_run, tmp_path, capsys):
    from core.images import open_image

    status, out, _ = cli(capsys, image_run.id, "--split", "test", "--index", "0", "--method", "occlusion", "--json")
    from_split = json.loads(out)
    picture = tmp_path / "square.png"
    open_image(from_split["image"]).save(picture)  # PNG keeps every pixel
    status, out, err = cli(
        capsys, image_run.id, "--image", str(picture), "--method", "occlusion", "--json", "--target", "red square"
    )
    assert status == 0, err
    from_file = json.loads(out)
    assert from_file["target_label"] == "red square" and from_file["gold_label"] is None and from_file["image"] == str(picture)
    if from_split["target_label"] == "red square":
        assert from_file["parts"][0]["scores"] == pytest.approx(from_split["parts"][0]["scores"], abs=1e-5)
    assert from_file["probabilities"] == pytest.approx(from_split["probabilities"], abs=1e-5)


def test_readable_lines_name_the_class_and_draw_the_grid(image_run, capsys):
    status, out, err = cli(capsys, image_run.id, "--split", "test", "--index", "1", "--param", "steps=8")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("prediction: ") and " · gold: " in lines[0] and "model: after" in lines[0]
    explained = lines[1].removeprefix("explaining: ").split(" with ")[0]
    assert explained in ("blue square", "red square") and "Integrated Gradients (steps 8, baseline mean" in lines[1]
    grid_lines = [line for line in lines if line.startswith("r") and line[1].isdigit()]
    assert grid_lines and all(line.count("(") == grid_lines[0].count("(") for line in grid_lines)
    assert grid_lines[0].startswith("r0c0(") and grid_lines[1].startswith("r1c0(")
    assert any(line.startswith("top patches") for line in lines) and lines[-1].startswith("delta: ")


def test_image_runs_refuse_what_they_cannot_explain(image_run, tmp_path, capsys):
    assert "has 20 rows; choose an index from 0 to 19" in refused(capsys, image_run.id, "--split", "test", "--index", "20")
    assert "is an image classification run: give --image FILE or --split with --index, not --text" in refused(
        capsys, image_run.id, "--text", "a red square"
    )
    assert "--token is for named-entity runs" in refused(capsys, image_run.id, "--split", "test", "--index", "0", "--token", "1")
    assert f"There is no image file {tmp_path / 'gone.png'}" in refused(
        capsys, image_run.id, "--image", str(tmp_path / "gone.png")
    )
    assert "There is no attribution method 'anchors'" in refused(capsys, image_run.id, "--image", "x.png", "--method", "anchors")


# ---------------------------------------------------------------------------------------------
# Named-entity recognition


@pytest.fixture
def ner(ner_run, monkeypatch):  # noqa: F811 - the imported fixture
    """(run, test sentences) of the NER run, with its workspace as this test's."""
    from core.ner.data import load_ner_splits

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(ner_run["store"].path.parent))
    config = ner_run["config"]
    test = load_ner_splits(config.dataset, seed=config.seed).test
    return ner_run["run"], test


def entity_word(test) -> tuple[int, int]:
    """(sentence index, word index) of the first test word tagged as the start of an entity."""
    for sentence, tags in enumerate(test["tags"]):
        for word, tag in enumerate(tags):
            if tag.startswith("B-"):
                return sentence, word
    raise AssertionError("the synthetic test split has entities")


def test_a_words_tag_is_explained_over_the_sentence_as_json(ner, capsys):
    run, test = ner
    sentence, word = entity_word(test)
    tokens, tags = list(test.iloc[sentence]["tokens"]), list(test.iloc[sentence]["tags"])
    status, out, err = cli(capsys, run.id, "--split", "test", "--index", str(sentence), "--token", str(word), "--json")
    assert status == 0, err
    payload = json.loads(out)
    assert payload["word_index"] == word and payload["word"] == tokens[word] and payload["gold_label"] == tags[word]
    assert payload["target_label"] == payload["predicted_label"] and payload["target_label"] in ("O", "B-PER", "B-LOC", "I-LOC")
    (part,) = payload["parts"]
    assert len(part["scores"]) == len(part["units"]) and "[CLS]" not in part["units"]
    assert tokens[word].lower() in " ".join(part["units"]).replace(" ##", "")
    assert payload["method"] == "ig" and payload["delta"] is not None and payload["stage"] == "after"


def test_a_typed_sentence_and_a_chosen_tag_read_as_lines(ner, capsys):
    run, _ = ner
    status, out, err = cli(
        capsys, run.id, "--text", "yesterday Alice flew to Paris", "--token", "4", "--target", "B-LOC", "--method", "occlusion"
    )
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("prediction: ") and "gold" not in lines[0]
    assert lines[1].startswith("explaining: B-LOC of word 4 ('Paris') with Occlusion")
    assert lines[2].startswith("yesterday(") and " paris(" in lines[2]
    assert lines[3].startswith("top: ") and lines[-1].startswith("f(x)-f(baseline): ")


def test_ner_runs_ask_for_the_word_and_refuse_images(ner, capsys):
    run, test = ner
    words = list(test.iloc[0]["tokens"])
    assert f"Say which word's tag to explain: give --token K, 0-based (0 {words[0]}, 1 {words[1]}" in refused(
        capsys, run.id, "--split", "test", "--index", "0"
    )
    assert f"There is no word {len(words)} in this sentence of {len(words)} words" in refused(
        capsys, run.id, "--split", "test", "--index", "0", "--token", str(len(words))
    )
    assert "--image is for image classification and image-text runs; run" in refused(
        capsys, run.id, "--image", "x.png", "--token", "0"
    )
    assert "There is no class 'B-ORG'" in refused(capsys, run.id, "--text", "Alice is here", "--token", "0", "--target", "B-ORG")


# ---------------------------------------------------------------------------------------------
# Image-text


@pytest.fixture
def pair_run(tmp_path_factory, monkeypatch):
    from test_pair_pages import trained_pair_run

    root, run_id = trained_pair_run(tmp_path_factory)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return RunStore().get(run_id)


def test_a_pair_of_the_runs_split_is_explained_over_tokens_and_patches(pair_run, capsys):
    from core.stages import split_rows

    row = split_rows(pair_run, "test")[0].iloc[2]
    status, out, err = cli(
        capsys,
        pair_run.id,
        "--split",
        "test",
        "--index",
        "2",
        "--grid",
        "4",
        "--method",
        "smoothgrad",
        "--param",
        "nt_samples=4",
        "--json",
    )
    assert status == 0, err
    payload = json.loads(out)
    assert payload["method"] == "smoothgrad" and payload["text"] == row["text"] and payload["image"] == row["image"]
    tokens, cells = payload["parts"]
    assert tokens["input"] == "tokens" and len(tokens["units"]) == len(tokens["scores"]) > 0 and tokens["share"] > 0
    assert cells["input"] == "patches" and len(cells["scores"]) == 16 and cells["layout"] == [4, 4]
    assert payload["run_id"] == pair_run.id and payload["signed"] is False
    assert "--split with --index, not both" in refused(capsys, pair_run.id, "--image", "x.png", "--split", "test", "--index", "1")
    assert "or a pair of its data with --split test --index N" in refused(capsys, pair_run.id, "--text", "a red circle")
    assert "has no parameter window" in refused(
        capsys, pair_run.id, "--split", "test", "--index", "0", "--method", "ig", "--param", "window=2"
    )
