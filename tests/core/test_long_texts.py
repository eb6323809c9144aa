"""Long texts: a document longer than the max length keeps its head or its tail, as the run's config says, in training
and in every later read of the run (the tokenizer saved with each stage carries the side).

The documents are synthetic: sixty filler words, then the one word that decides the class, at the very end. Cut to
32 tokens, the head holds only filler (a model can do no better than chance) and the tail holds the evidence.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest
from test_training import tiny_config, train_here

from core.store import RunStore

FILLER = "the a story went on and then it was told again by someone who had seen it all before".split()
EVIDENCE = {"positive": ("superb", "wonderful", "excellent"), "negative": ("awful", "dreadful", "boring")}


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
    """One tiny-BERT run per truncation side on the same long documents."""
    from core.trainer import record_ending

    documents = long_documents(tmp_path_factory.mktemp("long") / "long.csv")
    finished = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("long-workspace")))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        store = RunStore()
        for side in ("head", "tail"):
            config = tiny_config(tiny_bert, name=side, dataset=str(documents), max_rows=0, epochs=6, truncation=side)
            run = train_here(config, store, f"long-{side}")
            record_ending(store, run.id, "completed", None)
            finished[side] = store.get(run.id)
        yield finished


def test_the_tail_keeps_the_evidence_at_the_end_and_the_head_loses_it(runs):
    from core.run_files import test_report

    head, tail = (test_report(runs[side], "after")["accuracy"] for side in ("head", "tail"))
    assert head <= 0.65 and tail >= 0.9, (head, tail)


def test_every_later_read_cuts_where_training_did(runs, monkeypatch):
    """Inspect's predictions and the explanation of a long document use the saved side: the tail run's map ends
    with the deciding word, the head run's never reaches it."""
    from core.explain import load_text_explainer
    from core.stages import open_stage, split_rows

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(runs["tail"].directory.parents[1]))
    rows, _ = split_rows(runs["tail"], "test")
    document, label = rows["text"].iloc[0], rows["label"].iloc[0]
    for side, run in runs.items():
        assert open_stage(run, "after").preprocessor.truncation_side == ("left" if side == "tail" else "right")
        explanation = load_text_explainer(run.id, "after").explain(document, "ig")
        assert explanation.truncated
        reaches_the_end = document.split()[-1] in explanation.units
        assert reaches_the_end == (side == "tail"), (side, explanation.units[-3:], label)
