"""Text classification on a GPT-style decoder (GPT-2, LLaMA): padding with the end-of-text token, last-token pooling,
training through the trainer, the stages, and token attributions without a [MASK] token.

The models are random 2-layer decoders built from a config (`core.scratch_models.write_random_decoder`), trained in
this process; the real SmolLM2 conversion is in test_smollm2.py.
"""

import json
import re

import numpy as np
import pytest
import torch
from test_training import tiny_config, train_here

from core.data import PLANTED_KEYWORDS
from core.errors import UserError
from core.scratch_models import DECODER_ARCHITECTURES, END_OF_TEXT, write_random_decoder
from core.store import RunStore

MOVED = 1.0  # logit units: a text the attribution check reads has moved its explained logit this far from the baseline


@pytest.fixture(scope="module", params=DECODER_ARCHITECTURES)
def decoder(request, tmp_path_factory):
    return write_random_decoder(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


def finished_decoder_run(decoder, tmp_path_factory):
    """One fine-tuning run of a tiny decoder on planted keywords (every layer trains), completed."""
    from core.trainer import record_ending

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("decoder-workspace")))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        store = RunStore()
        run = train_here(tiny_config(decoder, name="decoder", max_rows=600, epochs=10), store, "decoder-run")
        record_ending(store, run.id, "completed", None)  # what the worker does after the trainer body
        yield store.get(run.id)


@pytest.fixture(scope="module")
def decoder_run(decoder, tmp_path_factory):
    """A finished run of each tiny decoder (for the export test, in the slow lane)."""
    yield from finished_decoder_run(decoder, tmp_path_factory)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """A finished run of the tiny LLaMA, SmolLM2's architecture (the fast lane trains one decoder, not both)."""
    yield from finished_decoder_run(write_random_decoder(tmp_path_factory.mktemp("tiny-llama"), "llama"), tmp_path_factory)


def test_a_batch_pads_with_end_of_text_and_each_text_keeps_its_logits(decoder):
    """GPT-2 and LLaMA ship no padding token; the end-of-text token pads, and the head reads each text's own last token."""
    from core.tasks.text_classification import load_model

    tokenizer, model = load_model(str(decoder), ["negative", "positive"], dropout=0.0)
    assert tokenizer.pad_token == END_OF_TEXT and model.config.pad_token_id == tokenizer.eos_token_id
    batch, alone = padded_and_alone(model, tokenizer, ["the film was excellent", "a dull and tedious story that never ends"])
    assert torch.allclose(batch, alone, atol=1e-5)


def padded_and_alone(model, tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of `texts` as one padded batch, and each text's on its own."""
    model.eval()
    with torch.no_grad():
        batch = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = torch.cat([model(**tokenizer([text], return_tensors="pt")).logits for text in texts])
    return batch, alone


def test_a_decoder_learns_and_its_stages_reload_with_the_same_padding(llama_run):
    from core.stages import open_stage, split_rows

    summary = json.loads((llama_run.directory / "summary.json").read_text())
    assert summary["label_names"] == ["negative", "positive"]
    rows, _ = split_rows(llama_run, "test")
    accuracies = {}
    for stage in ("before", "after"):
        opened = open_stage(llama_run, stage)
        assert opened.preprocessor.pad_token == END_OF_TEXT
        predicted = np.asarray(opened.predict(rows)).argmax(-1)
        accuracies[stage] = float(np.mean(np.asarray(opened.label_names)[predicted] == rows["label"].to_numpy()))
    assert accuracies["after"] >= 0.9 and accuracies["after"] > accuracies["before"], accuracies


def test_attributions_point_at_the_planted_words_and_refuse_a_mask_baseline(llama_run):
    """Integrated Gradients from the end-of-text baseline (a decoder has no [MASK]); occlusion removes one token."""
    from core.explain import load_text_explainer, merge_word_pieces
    from core.stages import split_rows

    explainer = load_text_explainer(llama_run.id, "after")
    rows, _ = split_rows(llama_run, "test")
    keywords = {word for words in PLANTED_KEYWORDS.values() for word in words}
    # Only texts whose explained logit the words move from the end-of-text baseline: IG splits f(x) - f(b) over the
    # words, and where that is about 0 its map is noise by construction. On some CPUs (one thread) the trained model
    # made its negative class the default: negative texts moved that logit by under 0.3, positive ones by about 4.7.
    hits = []
    for text, label in zip(rows["text"], rows["label"]):
        explanation = explainer.explain(text, "ig", steps=32)
        if explanation.predicted_label != label or abs(explanation.output_difference) < MOVED:
            continue
        hits.append(merge_word_pieces(explanation).top(1)[0][0] in keywords)
        if len(hits) == 12:
            break
    assert len(hits) == 12 and np.mean(hits) >= 0.8, hits
    # The integral through a decoder converges as through an encoder: its delta shrinks as the steps grow. The median
    # over six texts, because a text whose path crosses a steep step of the trained model (measured: the logit jumps
    # by 0.5 within 1/400 of the path) needs far more than 256 steps, and which text that is depends on the CPU.
    coarse, fine = (
        np.median([abs(explainer.explain(text, "ig", steps=steps).delta) for text in rows["text"].iloc[:6]]) for steps in (8, 256)
    )
    assert fine < coarse / 4, (coarse, fine)
    occluded = explainer.explain(rows["text"].iloc[0], "occlusion")
    assert len(occluded.scores) == len(occluded.units) and any(occluded.scores)
    with pytest.raises(UserError, match="has no mask token; choose another baseline"):
        explainer.explain(rows["text"].iloc[0], "ig", baseline="mask")


def test_the_head_strategy_trains_only_the_decoders_score_head(decoder):
    from core.models import head_names
    from core.strategies import apply_strategy
    from core.tasks.text_classification import load_model

    _, model = load_model(str(decoder), ["a", "b"], dropout=0.0)
    assert head_names(model) == ("score",)
    trained = apply_strategy(model, tiny_config(decoder, strategy="head"), head_names(model))
    assert {name.split(".")[0] for name, p in trained.named_parameters() if p.requires_grad} == {"score"}


def test_lora_names_a_decoders_own_projections(decoder):
    from core.models import head_names
    from core.strategies import apply_strategy
    from core.tasks.text_classification import load_model

    _, model = load_model(str(decoder), ["a", "b"], dropout=0.0)
    projections = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}[model.config.model_type]
    with pytest.raises(UserError, match="do not exist in this model; its linear layers are named: .*" + projections[0]):
        apply_strategy(model, tiny_config(decoder, strategy="lora"), head_names(model))  # BERT's query, value
    adapted = apply_strategy(model, tiny_config(decoder, strategy="lora", lora_targets=projections), head_names(model))
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert any("lora_A" in name for name in trainable) and any("score" in name for name in trainable)


def test_submitting_with_the_built_in_decoder_does_not_convert_it_while_the_page_waits(workspace):
    """SmolLM2 downloads and converts for a minute or two: the trainer does that with its progress in the log."""
    from core.catalog_decoders import SMOLLM2_KEY, smollm2_target
    from core.config import RunConfig
    from core.tasks import TASKS

    TASKS["text_classification"].preflight(RunConfig(model=SMOLLM2_KEY, dataset="planted-keywords"))
    assert not smollm2_target().exists() and not (workspace / "cache" / "downloads").exists()
    with pytest.raises(UserError, match="There is no dataset 'nope'"):
        TASKS["text_classification"].preflight(RunConfig(model=SMOLLM2_KEY, dataset="nope"))


def test_a_decoder_run_exports_for_pipeline_and_int8_onnx_with_the_same_answers(decoder_run, tmp_path):
    """transformers' text-classification pipeline pads a decoder's batch with the saved end-of-text pad token;
    the int8 ONNX variant, loaded by optimum's ORTModelForSequenceClassification, answers as the workbench."""
    import pandas as pd
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import pipeline

    from core.export import INT8_FOLDER, export_run

    folder = export_run(decoder_run.id, tmp_path / "export", int8=True)
    saved = pd.read_parquet(decoder_run.directory / "predictions" / "test_after.parquet")
    texts = saved["text"].tolist()
    classify = pipeline("text-classification", model=str(folder), device="cpu")
    assert [result["label"] for result in classify(texts, batch_size=8)] == saved["predicted"].tolist()
    onnx = ORTModelForSequenceClassification.from_pretrained(folder / INT8_FOLDER)
    quantized = pipeline("text-classification", model=onnx, tokenizer=str(folder / INT8_FOLDER))
    agreement = np.mean([result["label"] for result in quantized(texts)] == saved["predicted"].to_numpy())
    assert agreement >= 0.9, agreement


def test_the_inspect_page_shows_a_decoder_runs_predictions_and_token_maps(llama_run, monkeypatch):
    from test_inspect import maps, open_inspect

    from core import inspect

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(llama_run.directory.parent.parent))
    app = open_inspect()
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox(key="inspect_run").value == llama_run.id
    frame = inspect.predictions(llama_run, "test", "after")
    assert {m.label: m.value for m in app.metric}["Accuracy"] == f"{frame['correct'].mean():.1%}"
    hardest = frame.sort_values("loss", ascending=False, kind="stable").index[0]
    html = maps(app)[0]
    assert "Integrated Gradients" in html and "baseline pad" in html
    # Byte-level pieces read as the text: "Ġ" marks a word's start and is not shown; unmarked pieces hug.
    visible = re.sub(r"<[^>]+>", "", html.split("</div>", 1)[1])
    assert frame.at[hardest, "text"] in visible and "Ġ" not in visible


def test_word_pieces_read_as_words_in_every_tokenizers_convention():
    from core.viz import readable_units

    assert readable_units(["un", "##believ", "##able", "film"]) == [
        (True, "un"),
        (False, "##believ"),
        (False, "##able"),
        (True, "film"),
    ]
    for mark in ("Ġ", "▁"):
        pieces = ["a", "ctor", f"{mark}said", f"{mark}it"]
        assert readable_units(pieces) == [(True, "a"), (False, "ctor"), (True, "said"), (True, "it")]


def test_a_byte_level_newline_ends_a_word_in_maps_and_merged_words():
    """SmolLM2's prompt "…film.\\nIs this…" tokenises as 'film', '.Ċ', 'Is': the newline ends the line's last word."""
    from core.explain import merge_word_pieces
    from core.explain.base import Explanation, make_parts
    from core.viz import readable_units

    pieces = ["Ġgreat", "Ġfilm", ".Ċ", "Is", "Ġthis", "Ċ", "Ġok"]
    shown = readable_units(pieces)
    assert [begins for begins, _ in shown] == [True, True, False, True, True, True, True]
    assert [text for _, text in shown] == ["great", "film", ".", "Is", "this", "Ċ", "ok"]  # a bare newline stays visible
    explanation = Explanation(
        parts=make_parts(("tokens", pieces, [1.0, 2.0, 0.5, 3.0, 0.25, 0.125, 4.0], [len(pieces)])),
        method="ig",
        target=0,
        target_label="x",
        predicted=0,
        predicted_label="x",
        probabilities=[1.0],
        delta=None,
        output_difference=None,
        seconds=0.0,
        params={},
        truncated=False,
    )
    merged = merge_word_pieces(explanation)
    assert merged.units == ["great", "film.", "Is", "this", "ok"]
    assert merged.scores == [1.0, 2.5, 3.0, 0.25, 4.125]  # the bare newline's score joins the next word: sums kept


def test_a_gguf_file_that_is_not_a_model_is_a_sentence(tmp_path):
    from core.catalog_decoders import gguf_to_folder

    (tmp_path / "notes.gguf").write_bytes(b"a text file renamed to .gguf\n" * 8)
    with pytest.raises(UserError, match=r"notes.gguf is not a GGUF model transformers can read .*; pick another file"):
        gguf_to_folder(tmp_path, "notes.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
