"""Token classification beyond BIO: plain tag sets (part of speech) are detected, train as per-word tagging with
token accuracy and a per-tag report, show on the Data and Inspect pages, and every data check runs at submit."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_ner import one_hot_logits

from core.errors import UserError
from core.ner.align import piece_tags
from core.ner.data import load_ner_splits, register_ner_dataset
from core.ner.parsing import parse_conll
from core.ner.schemes import BIOES, IOB2, PLAIN, check_tags, detect_scheme
from core.tasks.base import Prepared
from core.tasks.token_classification import TokenClassification, tag_metrics, tag_report

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["Pierre", "Vinken", "Mary", "John", "Anna", "Lucas"]
VERBS = ["likes", "sees", "reads", "buys", "paints", "wants"]
DETERMINERS = ["the", "a", "this", "every"]
NOUNS = ["dog", "book", "car", "apple", "house", "song"]
# Three word orders, so a tag follows from the word, not from its position alone.
PATTERNS = [["NNP", "VBZ", "DT", "NN", "."], ["DT", "NN", "VBZ", "NNP", "."], ["NNP", "VBZ", "NNP", "."]]
WORDS = {"NNP": NAMES, "VBZ": VERBS, "DT": DETERMINERS, "NN": NOUNS, ".": ["."]}


def pos_conll(sentences: int = 60, seed: int = 5) -> str:
    """Short sentences of names, verbs, determiners and nouns with Penn Treebank tags, one `word TAG` per line."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(sentences):
        tags = rng.choice(PATTERNS)
        blocks.append("\n".join(f"{rng.choice(WORDS[tag])} {tag}" for tag in tags))
    return "\n\n".join(blocks) + "\n"


def conll(*sentences: list[tuple[str, str]]) -> str:
    return "\n\n".join("\n".join(f"{token} {tag}" for token, tag in sentence) for sentence in sentences) + "\n"


BIO_TEXT = conll(
    [("Ada", "B-PER"), ("Lovelace", "I-PER"), ("visits", "O"), ("Paris", "B-LOC")],
    [("Bob", "B-PER"), ("sings", "O")],
    [("in", "O"), ("Rome", "B-LOC")],
)
BIOES_TEXT = conll(
    [("Ada", "B-PER"), ("Lovelace", "E-PER"), ("visits", "O"), ("Paris", "S-LOC")],
    [("Bob", "S-PER"), ("sings", "O")],
    [("in", "O"), ("Rome", "S-LOC")],
)


# --- detection -----------------------------------------------------------------------------


def test_pos_bio_and_bioes_files_are_told_apart(tmp_path):
    found = {}
    for name, text in (("pos.conll", pos_conll()), ("bio.conll", BIO_TEXT), ("bioes.conll", BIOES_TEXT)):
        (tmp_path / name).write_text(text, encoding="utf-8")
        found[name] = load_ner_splits(str(tmp_path / name))
    assert {name: splits.scheme for name, splits in found.items()} == {
        "pos.conll": PLAIN,
        "bio.conll": IOB2,
        "bioes.conll": BIOES,
    }
    pos = found["pos.conll"]
    assert pos.label_names == [".", "DT", "NN", "NNP", "VBZ"]  # no "O" invented for a tag set without one
    assert not pos.has_entities and pos.entity_types == []
    counts = pos.tag_counts()
    assert set(counts["tag"]) == set(pos.label_names) and counts["count"].sum() == sum(
        len(t) for t in parse_conll(pos_conll(), "x")["tags"]
    )
    assert found["bio.conll"].entity_types == ["LOC", "PER"]


def test_plain_and_mixed_tag_sets():
    assert detect_scheme([["NNP", "VBZ", "."], ["-LRB-", "PRP$", "-RRB-"]]) == PLAIN  # Penn tags with dashes are not prefixes
    assert detect_scheme([["O", "PER", "PER"], ["LOC"]]) == PLAIN  # IO tags mark no entity boundaries: per-word tagging
    assert detect_scheme([["O"], ["O"]]) == IOB2  # all O is an entity file without entities, refused by check_tags
    # A prefix-less tag among BIO tags is a mistake in a BIO file, not a plain tag set.
    mixed = parse_conll(conll([("Ada", "B-PER"), ("codes", "O")], [("Bob", "PER")]), "mixed.conll")
    with pytest.raises(
        UserError,
        match=r"^The tag 'PER' at sentence 2, token 1 \('Bob', line 4\) of the file mixed\.conll is outside "
        r"the BIO/BIOES tag scheme that its other tags use; .*no tag may start with B-, I-, E- or S-\.$",
    ):
        check_tags(mixed, "the file mixed.conll")
    single = parse_conll(conll([("dog", "NN"), ("cat", "NN")]), "one.conll")
    with pytest.raises(UserError, match=r"^Every word in the file one\.conll has the tag 'NN', so there is nothing to learn"):
        check_tags(single, "the file one.conll")
    blank = pd.DataFrame({"tokens": [["dog", "runs"]], "tags": [["NN", ""]]})
    with pytest.raises(UserError, match=r"^The tag at sentence 1, token 2 \('runs'\) of the table is empty"):
        check_tags(blank, "the table")
    assert piece_tags("NNP", 3, PLAIN) == ["NNP", "NNP", "NNP"]  # every piece of a word keeps a plain tag


def test_registered_plain_dataset_describes_its_tags(workspace):
    info = register_ner_dataset("pos", "pos.conll", pos_conll().encode())
    assert "60 sentences" in info.description and "plain tags" in info.description
    assert "tags: ., DT, NN, NNP, VBZ" in info.description and "entities" not in info.description
    assert load_ner_splits("pos").scheme == PLAIN


# --- scores --------------------------------------------------------------------------------

NAMES_OF_TAGS = [".", "DT", "NN", "NNP", "VBZ"]


def test_per_word_scores_and_report_on_a_hand_made_prediction():
    gold = [["NNP", "VBZ", "DT", "NN", "."], ["DT", "NN", "VBZ", "NNP", "."]]
    predicted = [["NNP", "VBZ", "DT", "NNP", "."], ["DT", "NN", "NN", "NNP", "."]]
    metrics = tag_metrics(gold, predicted)
    # NN: precision 1/2, recall 1/2; NNP: 2/3 and 1; VBZ: 1 and 1/2; DT and . perfect.
    f1 = {".": 1.0, "DT": 1.0, "NN": 0.5, "NNP": 0.8, "VBZ": 2 / 3}
    assert metrics == pytest.approx(
        {
            "accuracy": 0.8,
            "precision": (1 + 1 + 0.5 + 2 / 3 + 1) / 5,
            "recall": (1 + 1 + 0.5 + 1 + 0.5) / 5,
            "f1": sum(f1.values()) / 5,
        }
    )
    report = tag_report(gold, predicted, NAMES_OF_TAGS + ["JJ"])
    assert list(report) == NAMES_OF_TAGS + ["JJ", "accuracy", "macro avg", "weighted avg"]
    assert report["NNP"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1-score": 0.8, "support": 2})
    assert report["JJ"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1-score": 0.0,
        "support": 0,
    }  # a tag absent here: listed, not averaged
    assert report["macro avg"]["f1-score"] == pytest.approx(metrics["f1"]) and report["accuracy"] == pytest.approx(0.8)
    assert json.loads(json.dumps(report)) == report
    headline = TokenClassification().headline(report)
    assert headline == pytest.approx(
        {
            "tag F1 (macro; logged f1)": metrics["f1"],
            "token accuracy": 0.8,
            "tag F1 (weighted)": report["weighted avg"]["f1-score"],
        }
    )


def test_predictions_of_plain_tags_are_one_span_per_word():
    from core.ner.inspect import MISSING, type_confusion

    raw = pd.DataFrame(
        {
            "tokens": [["Mary", "reads", "."], ["the", "dog", "sees", "John", "."]],
            "tags": [["NNP", "VBZ", "."], ["DT", "NN", "VBZ", "NNP", "."]],
        }
    )
    # Sentence 2 lost its last word to truncation; "dog" is tagged NNP instead of NN.
    logits, labels = one_hot_logits(
        [[None, "NNP", "VBZ", ".", None], [None, "DT", "NN/NNP", "VBZ", "NNP", None]], NAMES_OF_TAGS, width=6
    )
    task = TokenClassification()
    task._tagging = (NAMES_OF_TAGS, PLAIN)
    assert task.compute_metrics(logits, labels)["accuracy"] == pytest.approx(6 / 7)
    prepared = Prepared(
        model=None,
        processor=None,
        datasets={},
        raw={"test": raw},
        collator=None,
        label_names=NAMES_OF_TAGS,
        head_names=("classifier",),
        extras={"tag_scheme": PLAIN},
    )
    frame = task.predictions(logits, labels, prepared, "test")
    assert frame["predicted_tags"].tolist() == [
        ["NNP", "VBZ", "."],
        ["DT", "NNP", "VBZ", "NNP", ""],
    ]  # no tag for the unseen word
    assert json.loads(frame["gold_entities"][0]) == [["NNP", 0, 0], ["VBZ", 1, 1], [".", 2, 2]]
    assert frame["correct"].tolist() == [True, False] and frame["unseen_words"].tolist() == [0, 1]
    assert json.loads(frame["errors_by_type"][1]) == {
        ".": {"missed": 1, "spurious": 0},
        "NN": {"missed": 1, "spurious": 0},
        "NNP": {"missed": 0, "spurious": 1},
    }
    confusion = type_confusion(frame)  # per tag: gold rows, predicted columns
    assert confusion.loc["NN", "NNP"] == 1 and confusion.loc["NNP", "NNP"] == 2 and confusion.loc[".", MISSING] == 1
    assert confusion.values.sum() == 8
    assert "micro avg" not in task.report(logits, labels, prepared)


# --- training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pos_run(tiny_bert, tmp_path_factory):
    """The tiny BERT learning the POS pattern, trained in this process through the real trainer (a few seconds)."""
    from test_training import train_here

    from core.config import RunConfig
    from core.store import RunStore

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("pos-training")
        patch.setenv("WORKBENCH_WORKSPACE", str(root / "workspace"))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        data = root / "pos.conll"
        data.write_text(pos_conll(), encoding="utf-8")
        config = RunConfig(
            name="pos",
            task="token_classification",
            model=str(tiny_bert),
            dataset=str(data),
            epochs=8,
            batch_size=8,
            learning_rate=0.005,
            eval_steps=12,
            logging_steps=6,
            max_length=32,
            device="cpu",
        )
        store = RunStore()
        run = train_here(config, store, "pos-run")
        yield {"run": run, "store": store, "metrics": store.metrics(run.id), "workspace": root / "workspace"}


def series(metrics: pd.DataFrame, name: str) -> pd.Series:
    return metrics[metrics["name"] == name].sort_values(["step", "recorded_at"]).set_index("step")["value"]


def test_training_raises_token_accuracy_and_tag_f1(pos_run):
    metrics = pos_run["metrics"]
    assert pos_run["run"].step == 48  # 48 sentences / 8 x 8 epochs
    accuracy, f1 = series(metrics, "eval_accuracy"), series(metrics, "eval_f1")
    assert accuracy.index.tolist() == [0, 12, 24, 36, 48]
    print(
        f"validation token accuracy {accuracy.iloc[0]:.3f} -> {accuracy.iloc[-1]:.3f}"
        f", tag macro F1 {f1.iloc[0]:.3f} -> {f1.iloc[-1]:.3f}"
    )
    assert accuracy.iloc[0] < 0.5 and accuracy.iloc[-1] >= 0.9
    assert f1.iloc[-1] > f1.iloc[0] + 0.4
    assert not series(metrics, "eval_precision").empty and not series(metrics, "eval_recall").empty
    assert series(metrics, "eval_f1_lenient").empty  # an entity-only score


def test_report_is_per_tag_and_the_summary_names_the_scheme(pos_run):
    directory = pos_run["run"].directory
    before = json.loads((directory / "reports" / "test_before.json").read_text())["report"]
    after = json.loads((directory / "reports" / "test_after.json").read_text())["report"]
    for report in (before, after):
        assert list(report) == NAMES_OF_TAGS + ["accuracy", "macro avg", "weighted avg"]
        assert set(report["NNP"]) == {"precision", "recall", "f1-score", "support"}
    print(f"test token accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
    assert after["accuracy"] > before["accuracy"] and after["accuracy"] >= 0.9
    test_f1 = series(pos_run["metrics"], "test_f1")
    assert test_f1.iloc[-1] == pytest.approx(after["macro avg"]["f1-score"])  # the logged f1 is the report's macro F1
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["tag_scheme"] == PLAIN and summary["label_names"] == NAMES_OF_TAGS and "entity_types" not in summary
    frame = pd.read_parquet(directory / "predictions" / "test_after.parquet")
    assert all(len(json.loads(cell)) == len(tokens) for cell, tokens in zip(frame["gold_entities"], frame["tokens"]))


def test_inspect_page_shows_per_tag_report_and_confusion(pos_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(pos_run["workspace"]))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    app.switch_page("pages/views/inspect.py").run()
    assert not app.exception, [e.message for e in app.exception]
    labels = {m.label for m in app.metric}
    assert {"Tag F1 (macro)", "Token accuracy"} <= labels and "Entity F1 (micro)" not in labels
    text = " ".join(m.value for m in app.markdown)
    assert "Per-tag report" in text and "Per-tag confusion" in text and "Entity-level report" not in text
    assert 'title="NNP"' in text  # every word drawn with its tag
    confusion = next(frame.value for frame in app.dataframe if "NNP" in frame.value.index and "NNP" in frame.value.columns)
    assert confusion.loc["NNP", "NNP"] > 0


# --- every data check at submit ------------------------------------------------------------


def token_config(tiny_bert, dataset: str, **values):
    from core.config import RunConfig

    return RunConfig(name="tagger", task="token_classification", model=str(tiny_bert), dataset=dataset, device="cpu", **values)


@pytest.mark.parametrize(
    "text, message",
    [
        ("Mary NNP\nreads VBZ\n\nthe DT\ndog\n", r"^Line 5 of bad\.conll has 1 field \('dog'\) but needs exactly two"),
        (
            "Ada B-PER\ncodes O\n\nin O\nLovelace I-PER\n",
            r"^I-PER after O at sentence 2, token 2 \('Lovelace', line 5\) of the file bad\.conll",
        ),
    ],
)
def test_submit_refuses_a_bad_file_before_queueing(workspace, tiny_bert, text, message):
    from core.jobs import submit
    from core.store import RunStore

    path = workspace.parent / "bad.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        submit(token_config(tiny_bert, str(path)))
    assert RunStore().list() == [] and not (workspace / "runs").exists()


def test_submit_refuses_a_row_limit_a_registered_set_cannot_split(workspace, tiny_bert):
    from core.jobs import submit
    from core.store import RunStore
    from core.tasks import TASKS

    register_ner_dataset("pos", "pos.conll", pos_conll().encode())
    TASKS["token_classification"].preflight(token_config(tiny_bert, "pos"))  # the whole set is fine
    with pytest.raises(UserError, match=r"too few sentences \(2\)"):
        submit(token_config(tiny_bert, "pos", max_rows=2))
    assert RunStore().list() == []


def test_text_classification_refuses_a_bad_file_at_submit_too(workspace, tiny_bert):
    from core.config import RunConfig
    from core.jobs import submit
    from core.store import RunStore

    table = workspace.parent / "one-class.csv"
    table.write_text("text,label\n" + "".join(f"review number {i},good\n" for i in range(20)), encoding="utf-8")
    with pytest.raises(UserError, match=r"^Every row of the file one-class\.csv has the label 'good'"):
        submit(RunConfig(name="one class", model=str(tiny_bert), dataset=str(table), device="cpu"))
    assert RunStore().list() == []


def test_image_and_pair_tasks_check_a_stored_sets_splits_at_submit(workspace, tiny_dual_encoder, tmp_path):
    """A row limit the stored labels cannot split is refused by submit, from the labels alone (no image is opened)."""
    from test_image_text_data import csv, fusion_lines, photos
    from test_images import class_folders, make_zip

    from core.config import RunConfig
    from core.image_text import data as pairs
    from core.images.datasets import register_image_dataset
    from core.images.scratch import write_random_vit
    from core.jobs import submit
    from core.store import RunStore

    register_image_dataset("pets", "pets.zip", make_zip(class_folders()))
    pairs.register_pair_dataset(
        "pairs", pairs.FUSION, "shots.zip", make_zip(photos()), "pairs.csv", csv("image,text,label", fusion_lines())
    )
    vit = write_random_vit(tmp_path / "tiny-vit", "tiny")
    for config in (
        RunConfig(name="pets", task="image_classification", model=str(vit), dataset="pets", max_rows=3, device="cpu"),
        RunConfig(
            name="pairs", task="image_text_fusion", model=str(tiny_dual_encoder), dataset="pairs", max_rows=3, device="cpu"
        ),
    ):
        with pytest.raises(
            UserError,
            match=r"^The image(-text)? dataset '(pets|pairs)' has too few rows \(4\) to fill the validation and test split",
        ):
            submit(config)
    assert RunStore().list() == []


def test_cli_refuses_a_bad_file_with_the_sentence(workspace, tiny_bert):
    path = workspace.parent / "bad.conll"
    path.write_text("Mary NNP\nreads VBZ\n\nthe DT\ndog\n", encoding="utf-8")
    config = workspace.parent / "run.yaml"
    config.write_text(token_config(tiny_bert, str(path)).to_yaml(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "core", "train", str(config), "--detach"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "WORKBENCH_WORKSPACE": str(workspace)},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: Line 5 of bad.conll has 1 field" in result.stderr + result.stdout
    from core.store import RunStore

    assert RunStore().list() == []


# --- the Data page -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename, text, scheme, sentence, table",
    [
        ("pos.conll", pos_conll(), "plain tags", "Found plain tags", "Words per tag"),
        ("bio.conll", BIO_TEXT, "IOB2", "Found IOB2 (BIO) entity tags", "Entities per type"),
    ],
)
def test_data_page_says_which_scheme_it_found(workspace, filename, text, scheme, sentence, table):
    from streamlit.testing.v1 import AppTest

    key = register_ner_dataset(Path(filename).stem, filename, text.encode()).key
    at = AppTest.from_file(str(ROOT / "pages" / "views" / "data.py"), default_timeout=120)
    at.session_state["data_modality"] = "NER"
    at.session_state["data_ner_dataset"] = key
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Tag scheme"] == scheme
    assert any(info.value.startswith(sentence) for info in at.info)
    assert table in [header.value for header in at.subheader]
    assert any("<sub" in m.value for m in at.markdown)
