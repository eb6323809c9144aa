"""Long texts: a document longer than the max length keeps its head, its tail, or both (head + tail), or is read whole as
sliding windows whose logits are pooled, as the run's config says, in training and in every later read of the run (the
tokenizer saved with each stage carries the side; `core.long_texts` cuts head + tail and the windows).

The documents are synthetic: sixty filler words, then the one word that decides the class, at the very end. Cut to
32 tokens, the head holds only filler (a model can do no better than chance) and the tail holds the evidence.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from test_training import tiny_config, train_here

from core.config import RunConfig
from core.errors import UserError
from core.long_texts import (
    LongTexts,
    encode_head_tail,
    first_windows,
    head_tail_positions,
    pool_windows,
    stitch_windows,
    window_starts,
    windows_needed,
)
from core.store import RunStore

FILLER = "the a story went on and then it was told again by someone who had seen it all before".split()
EVIDENCE = {"positive": ("superb", "wonderful", "excellent"), "negative": ("awful", "dreadful", "boring")}
SIDES = ("head", "tail", "head_tail", "window")
OVERLAP = 8  # the window run's: 63 tokens make 3 windows of 32


def long_documents(path, rows: int = 400, seed: int = 3):
    rng = random.Random(seed)
    lines = []
    for index in range(rows):
        label = ("positive", "negative")[index % 2]
        words = [rng.choice(FILLER) for _ in range(60)] + [rng.choice(EVIDENCE[label])]
        lines.append({"text": " ".join(words), "label": label})
    pd.DataFrame(lines).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """One tiny-BERT run per way of reading long texts, on the same long documents."""
    from core.trainer import record_ending

    documents = long_documents(tmp_path_factory.mktemp("long") / "long.csv")
    finished = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("long-workspace")))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        store = RunStore()
        for side in SIDES:
            # Only one window in three holds the evidence and the others train on filler labelled at random: at the
            # one-end runs' learning rate (0.005) that noise kept the tiny model at chance.
            rate = 0.002 if side == "window" else 0.005
            config = tiny_config(
                tiny_bert,
                name=side,
                dataset=str(documents),
                max_rows=0,
                epochs=6,
                learning_rate=rate,
                truncation=side,
                window_overlap=OVERLAP,
            )
            run = train_here(config, store, f"long-{side}")
            record_ending(store, run.id, "completed", None)
            finished[side] = store.get(run.id)
        yield finished


@pytest.fixture()
def in_workspace(runs, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(runs["tail"].directory.parents[1]))
    return runs


def test_every_way_that_reads_the_end_finds_the_evidence_and_the_head_does_not(runs):
    from core.run_files import test_report

    accuracy = {side: test_report(runs[side], "after")["accuracy"] for side in SIDES}
    assert accuracy["head"] <= 0.65, accuracy
    assert all(accuracy[side] >= 0.9 for side in ("tail", "head_tail", "window")), accuracy


def test_every_later_read_cuts_where_training_did(in_workspace):
    """Inspect's predictions and the explanation of a long document read it as training did: the tail and head + tail
    maps end with the deciding word, the head run's never reaches it, the window run's covers the whole document."""
    from core.explain import load_text_explainer
    from core.stages import open_stage, split_rows

    runs = in_workspace
    rows, _ = split_rows(runs["tail"], "test")
    document, label = rows["text"].iloc[0], rows["label"].iloc[0]
    for side, run in runs.items():
        assert open_stage(run, "after").preprocessor.truncation_side == LongTexts(side).truncation_side()
        explanation = load_text_explainer(run.id, "after").explain(document, "ig")
        assert explanation.truncated == (side != "window"), side
        reaches_the_end = document.split()[-1] in explanation.units
        assert reaches_the_end == (side != "head"), (side, explanation.units[-3:], label)
    head_tail = load_text_explainer(runs["head_tail"].id, "after").explain(document, "ig")
    assert len(head_tail.units) == 30  # 32 tokens less [CLS] and [SEP]: 7 from the start, 23 from the end
    assert head_tail.units[:7] == load_text_explainer(runs["head"].id, "after").explain(document, "ig").units[:7]


def test_a_window_run_is_scored_and_predicted_one_row_per_document(in_workspace):
    from core.inspect import predictions
    from core.run_files import summary
    from core.stages import open_stage, split_rows
    from core.tasks import TASKS

    run = in_workspace["window"]
    rows, names = split_rows(run, "test")
    frame = predictions(run, "test", "after")
    assert len(frame) == len(rows)
    assert (frame["gold"] == rows["label"].to_numpy()).all()
    stage = open_stage(run, "after")
    assert stage.predict(rows.head(5)).shape == (5, len(names))
    assert "windows" in summary(run) and not (run.directory / "dynamics.parquet").exists()
    # The robustness check attacks each window, with its document's class.
    label_ids = {name: index for index, name in enumerate(names)}
    attacked = TASKS[run.task].attack_inputs(stage, rows.head(2), label_ids)
    classes = [label_ids[label] for label in rows["label"].head(2)]
    assert attacked["labels"].tolist() == [classes[0]] * 3 + [classes[1]] * 3
    assert attacked["input_ids"].shape[0] == 6


def test_a_window_runs_map_stitches_its_windows_over_the_whole_document(in_workspace):
    from core.explain import load_text_explainer
    from core.explain.faithfulness import explainer_card
    from core.stages import split_rows

    run = in_workspace["window"]
    rows, _ = split_rows(run, "test")
    document = rows["text"].iloc[0]
    explainer = load_text_explainer(run.id, "after")
    explanation = explainer.explain(document, "ig", merge_words=True)
    assert explanation.units == document.split()
    assert explanation.params["windows"] == 3 and explanation.params["pooling"] == "mean"
    assert not explanation.truncated
    assert explanation.predicted_label == explanation.target_label
    probabilities = explainer.predict_proba([document])[0]
    assert np.allclose(probabilities, explanation.probabilities, atol=1e-5)
    assert explanation.top(1)[0][0] == document.split()[-1]  # the deciding word leads the map
    with pytest.raises(UserError, match="3 windows"):
        explainer_card(explainer, document, ["ig"])


# -- the cutting and pooling, without training -----------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def numbered(count: int) -> str:
    return " ".join(f"word{index}" for index in range(count))


def test_a_head_tail_cut_keeps_a_quarter_from_the_start_and_the_rest_from_the_end():
    special = [1] + [0] * 20 + [1]
    assert head_tail_positions(special, 10) == [0, 1, 2, 15, 16, 17, 18, 19, 20, 21]  # 2 + 6 of 8 text tokens
    assert head_tail_positions(special, 22) == list(range(22))  # it fits: nothing is cut


def test_the_head_tail_encoder_frames_the_kept_tokens_with_the_special_ones(tokenizer):
    texts = [" ".join(["x"] * 3 + ["y"] * 30 + ["z"] * 7), "short one"]
    features, cut = encode_head_tail(tokenizer, texts, 12)
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    assert tokens == ["[CLS]", "x", "x", "y", *["z"] * 7, "[SEP]"]  # 2 of the 10 text tokens from the start, 8 from the end
    assert cut == [True, False]
    assert tokenizer.convert_ids_to_tokens(features["input_ids"][1]) == ["[CLS]", "short", "one", "[SEP]"]
    assert all(len(features[name][0]) == 12 for name in features)


def test_windows_cover_each_text_once_where_window_starts_says(tokenizer):
    texts = [numbered(length) for length in (3, 12, 25, 40)]
    long_texts = LongTexts("window", 16, overlap=4)
    features, documents = long_texts.encode(tokenizer, texts, special_tokens_mask=True)
    for document, text in enumerate(texts):
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        rows = [row for row, owner in enumerate(documents) if owner == document]
        assert len(rows) == windows_needed(len(whole) + 2, 16, 4)
        bodies = [
            [token for token, special in zip(features["input_ids"][row], features["special_tokens_mask"][row]) if not special]
            for row in rows
        ]
        starts = window_starts([len(body) for body in bodies], 4)
        stitched, _ = stitch_windows(starts, bodies, [np.zeros(len(body)) for body in bodies])
        assert stitched == whole


def test_stitching_averages_the_scores_of_tokens_two_windows_read():
    units, scores = stitch_windows([0, 2], [["a", "b", "c"], ["c", "d"]], [np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0])])
    assert units == ["a", "b", "c", "d"] and scores.tolist() == [1.0, 1.0, 2.0, 3.0]


def test_pooling_gives_one_row_per_document():
    logits = np.array([[0.0, 1.0], [2.0, -1.0], [5.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    documents = [0, 0, 1, 2, 2]
    assert pool_windows(logits, documents, "mean").tolist() == [[1.0, 0.0], [5.0, 0.0], [2.0, 2.5]]
    assert pool_windows(logits, documents, "max").tolist() == [[2.0, 1.0], [5.0, 0.0], [3.0, 4.0]]
    assert first_windows(documents).tolist() == [0, 2, 3]


def test_window_settings_are_checked_and_old_configs_still_load():
    problems = RunConfig(truncation="window", max_length=32, window_overlap=20, window_pooling="median").validate()
    assert any("window overlap must be from 0 to half the max length, 16 tokens" in problem for problem in problems)
    assert any("Unknown window pooling 'median'" in problem for problem in problems)
    assert any("Unknown truncation 'middle'" in problem for problem in RunConfig(truncation="middle").validate())
    old = RunConfig.from_yaml("truncation: tail\nmax_length: 64\n")
    assert (old.window_overlap, old.window_pooling) == (RunConfig().window_overlap, "mean") and not old.validate()


def test_the_pages_offer_the_window_settings_and_say_how_a_window_run_read_a_document(in_workspace):
    """Train: the overlap and pooling appear with the sliding window only. Inspect: a typed long document is
    predicted by the pooled windows, and its stitched map says how many windows it read."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app_file = str(Path(__file__).resolve().parents[2] / "app.py")
    train = AppTest.from_file(app_file, default_timeout=120).run()
    train.switch_page("pages/views/train.py").run()
    assert not [widget for widget in train.number_input if widget.key == "train_window_overlap"]
    train.selectbox(key="train_truncation").set_value("window").run()
    assert train.number_input(key="train_window_overlap").value == RunConfig().window_overlap
    assert train.selectbox(key="train_window_pooling").options == ["mean", "max"]

    window_run = in_workspace["window"]
    document = " ".join(["the story went on"] * 15 + ["superb"])  # 61 words: three windows of 32 tokens
    inspect_page = AppTest.from_file(app_file, default_timeout=120).run()
    inspect_page.switch_page("pages/views/inspect.py").run()
    inspect_page.selectbox(key="inspect_run").set_value(window_run.id).run()
    inspect_page.text_area(key="inspect_free_text").set_value(document)
    inspect_page.button(key="inspect_free_go").click().run()
    assert not inspect_page.exception, [e.message for e in inspect_page.exception]
    assert any(
        caption.value.startswith("Sliding window: 3 windows of 32 tokens pooled by mean") for caption in inspect_page.caption
    )
    assert any(m.value.startswith("Predicted **positive**") for m in inspect_page.markdown)
