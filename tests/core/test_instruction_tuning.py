"""Instruction tuning a causal LM: the response-only loss, prompts cut from the left, the chat format, training that
generates at every evaluation, answers explained over the prompt, the CLI, and the exported folder.

The model is a random 2-layer LLaMA (SmolLM2's architecture) whose tokenizer knows the planted-answers words; it is
trained in this process on the built-in planted-answers set, where the answer is the word marked in the prompt.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_training import tiny_config, train_here

from core.errors import UserError
from core.instructions.encoding import IGNORED, encode_pair, format_prompt, prompt_ids
from core.scratch_models import END_OF_TEXT, write_random_decoder
from core.store import RunStore

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}" + END_OF_TEXT + "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def planted_texts() -> list[str]:
    from core.instructions.data import load_instruction_splits

    rows = load_instruction_splits("planted-answers").all_rows()
    return [f"{prompt} {response}" for prompt, response in zip(rows["prompt"], rows["response"])]


@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    return write_random_decoder(tmp_path_factory.mktemp("answers-llama"), "llama", texts=planted_texts())


@pytest.fixture(scope="session")
def tokenizer(llama):
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(llama)
    loaded.pad_token = loaded.eos_token
    return loaded


@pytest.fixture(scope="session")
def answers_run(llama, tmp_path_factory):
    """A finished run: the tiny LLaMA instruction-tuned on planted-answers (every weight trains), 3 epochs."""
    from core.trainer import record_ending

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("answers-workspace")))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        store = RunStore()
        config = tiny_config(
            llama,
            name="answers",
            task="instruction_tuning",
            dataset="planted-answers",
            max_rows=0,
            epochs=3,
            max_length=64,
            learning_rate=3e-3,
            eval_steps=30,
        )
        run = train_here(config, store, "answers-run")
        record_ending(store, run.id, "completed", None)
        yield store.get(run.id)


def test_the_loss_counts_the_response_tokens_only(llama, tokenizer):
    """Labels mask the formatted prompt exactly; the model's loss on a padded batch is the cross-entropy of the
    response tokens (and the end-of-text token after them) alone, computed here by hand."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    pairs = [
        encode_pair(tokenizer, "Copy the marked word. the [amber] river", "amber", 64),
        encode_pair(tokenizer, "hi", "a b", 64),
    ]
    for pair, (prompt, response) in zip(pairs, [("Copy the marked word. the [amber] river", "amber"), ("hi", "a b")]):
        question = prompt_ids(tokenizer, prompt)
        answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert pair.input_ids == question + answer
        assert pair.labels == [IGNORED] * len(question) + answer
        assert pair.prompt_length == len(question) and pair.cut_words == 0
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORED, padding=True)
    batch = collate([{"input_ids": p.input_ids, "attention_mask": [1] * len(p.input_ids), "labels": p.labels} for p in pairs])
    short = len(pairs[1].input_ids)
    assert batch["labels"][1, short:].eq(IGNORED).all() and batch["attention_mask"][1, short:].eq(0).all()
    model = AutoModelForCausalLM.from_pretrained(llama).eval()
    with torch.no_grad():
        output = model(**batch)
    logits, labels = output.logits[:, :-1], batch["labels"][:, 1:]
    counted = labels != IGNORED
    by_hand = torch.nn.functional.cross_entropy(logits[counted], labels[counted])
    assert counted.sum() == sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in ("amber", "a b"))
    assert torch.allclose(output.loss, by_hand, atol=1e-6)


def test_a_long_prompt_is_cut_from_the_left_and_a_long_answer_is_refused(tokenizer):
    words = [f"w{index}" for index in range(300)]
    pair = encode_pair(tokenizer, " ".join(words), "amber", 40)
    assert len(pair.input_ids) <= 40 and pair.cut_words > 0
    kept = tokenizer.decode(pair.input_ids[: pair.prompt_length])
    assert kept.startswith("…") and kept.rstrip().endswith("w299") and "w0 " not in kept
    with pytest.raises(UserError, match="raise the max length or shorten the responses"):
        encode_pair(tokenizer, "a prompt", " ".join(words), 40)


def test_a_chat_template_formats_the_prompt_and_only_the_users_words_are_explained(tokenizer):
    from core.explain.answers import content_positions

    chat = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    chat.pad_token = chat.eos_token
    chat.chat_template = CHAT_TEMPLATE
    formatted = format_prompt(chat, "the quiet [amber] river")
    assert formatted == f"<|user|>the quiet [amber] river{END_OF_TEXT}<|assistant|>"
    assert format_prompt(tokenizer, "the quiet [amber] river") == "the quiet [amber] river\n"
    ids = prompt_ids(chat, "the quiet [amber] river")
    shown = content_positions(chat, ids)
    assert chat.decode([ids[i] for i in shown]) == "the quiet [amber] river"


def test_training_generates_at_every_evaluation_and_learns_the_planted_answers(answers_run):
    from core.run_files import generations, test_report

    after, before = test_report(answers_run, "after"), test_report(answers_run, "before")
    assert after["exact_match"] >= 0.9 and before["exact_match"] <= 0.2, (before, after)
    assert set(after["classes"]) >= {"amber", "macro avg"}  # answers that are labels get a class report
    metrics = RunStore().metrics(answers_run.id)
    curve = metrics[metrics["name"] == "eval_exact_match"].sort_values("step")
    losses = metrics[metrics["name"] == "eval_loss"].sort_values("step")["value"].tolist()
    assert curve["value"].iloc[0] <= 0.2 and curve["value"].iloc[-1] >= 0.9 and losses[-1] < losses[0] / 5
    assert set(metrics["name"]) >= {"eval_perplexity", "eval_token_f1", "test_exact_match"}
    samples = generations(answers_run)
    steps = sorted(samples["step"].unique())
    assert steps[0] == 0 and steps[-1] == curve["step"].iloc[-1] and len(steps) == len(curve)
    last = samples[samples["step"] == steps[-1]]
    assert len(last) == 4 and (last["answer"] == last["reference"]).sum() >= 3
    assert (samples[samples["step"] == 0]["answer"] != samples[samples["step"] == 0]["reference"]).all()


def test_a_stage_predicts_by_generating_and_the_frame_scores_each_answer(answers_run):
    from core import inspect

    frame = inspect.predictions(answers_run, "validation", "before")
    assert list(frame.columns) == ["prompt", "reference", "answer", "match", "token_f1", "loss"]
    after = inspect.predictions(answers_run, "validation", "after")
    assert after["match"].mean() >= 0.9 > frame["match"].mean()
    assert after["loss"].mean() < frame["loss"].mean()


def test_the_marked_word_carries_the_answer_for_ig_and_occlusion(answers_run):
    """Of the correct answers, the top-attributed prompt word is the marked one (>= 90 %), for Integrated Gradients
    and for occlusion, which removes words; IG's delta is small, and the grid has one row per answer token."""
    from core.explain import load_explainer
    from core.stages import split_rows

    explainer = load_explainer(answers_run.id, "after")
    rows, _ = split_rows(answers_run, "test")
    hits = {"ig": [], "occlusion": []}
    for prompt, response in zip(rows["prompt"].head(30), rows["response"].head(30)):
        if explainer.answer(prompt) != response:
            continue
        for method in hits:
            explanation = explainer.explain(prompt, method, merge_words=True)
            hits[method].append(explanation.top(1)[0][0] == f"[{response}]")
    assert len(hits["ig"]) >= 25 and all(np.mean(found) >= 0.9 for found in hits.values()), hits
    whole = explainer.explain(rows["prompt"].iloc[0], "ig")
    assert whole.target_label == "whole answer" and not whole.delta_is_large()
    assert all(unit != END_OF_TEXT for unit in whole.units)  # the answer's and the format's tokens are not units
    grid = explainer.explain_grid(rows["prompt"].iloc[0])
    assert len(grid) == len(whole.params["answer_tokens"]) and all(e.units == whole.units for e in grid)
    with pytest.raises(UserError, match="has no mask token"):
        explainer.explain(rows["prompt"].iloc[0], "ig", baseline="mask")


def test_the_explain_command_answers_for_an_instruction_run(answers_run, monkeypatch, capsys):
    """`python -m core explain` (its main, in this process: the command line's parsing and printing)."""
    from core.explain.cli import main
    from core.stages import split_rows

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(answers_run.directory.parents[1]))
    rows, _ = split_rows(answers_run, "test")
    row = [answers_run.id, "--split", "test", "--index", "0"]
    assert main([*row, "--json", "--merge-words"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["gold_label"] == rows["response"].iloc[0] and payload["kind"] == "generation"
    assert payload["parts"][0]["input"] == "tokens" and f"[{rows['response'].iloc[0]}]" in payload["parts"][0]["units"]
    assert main([*row, "--target", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("answer: ") and f"gold: {rows['response'].iloc[0]}" in printed and "explaining: " in printed


def test_the_exported_folder_generates_the_same_answers_through_pipeline(answers_run, tmp_path, monkeypatch):
    from transformers import pipeline

    from core.export import export_run
    from core.instructions.generation import generate_answers
    from core.stages import open_stage, split_rows

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(answers_run.directory.parents[1]))
    folder = export_run(answers_run.id, tmp_path / "export")
    rows, _ = split_rows(answers_run, "test")
    prompts = rows["prompt"].head(8).tolist()
    stage = open_stage(answers_run, "after")
    ours = generate_answers(stage.model, stage.preprocessor, prompts, stage.max_length)
    generate = pipeline("text-generation", model=str(folder))
    theirs = [
        generate(format_prompt(generate.tokenizer, prompt), max_new_tokens=32, do_sample=False, return_full_text=False)[0][
            "generated_text"
        ].strip()
        for prompt in prompts
    ]
    assert theirs == ours and sum(a == r for a, r in zip(ours, rows["response"])) >= 7
    assert 'pipeline("text-generation"' in (folder / "README.md").read_text()


def test_an_encoder_is_refused_for_instruction_tuning_with_a_sentence(tmp_path):
    from core.config import RunConfig
    from core.scratch_models import write_random_bert
    from core.tasks import TASKS

    bert = write_random_bert(tmp_path / "bert", "tiny")
    config = RunConfig(task="instruction_tuning", model=str(bert), dataset="planted-answers")
    with pytest.raises(UserError, match="is not a causal language model"):
        TASKS["instruction_tuning"].preflight(config)
    with pytest.raises(UserError, match="no instruction dataset 'movie-reviews'"):
        TASKS["instruction_tuning"].preflight(RunConfig(task="instruction_tuning", model=str(bert), dataset="movie-reviews"))


def test_packing_joins_a_batch_into_one_row_where_each_example_sees_only_itself(llama, tokenizer):
    """The packed row gives the padded batch's loss and each example's own logits (no attention across examples)."""
    from transformers import AutoModelForCausalLM

    from core.config import RunConfig
    from core.tasks.instruction_tuning import collator

    model = AutoModelForCausalLM.from_pretrained(llama).eval()
    examples = [("Copy the marked word. the [amber] river", "amber"), ("a dull [cobalt] story", "cobalt"), ("hi there", "a b")]
    pairs = [encode_pair(tokenizer, prompt, response, 64) for prompt, response in examples]
    features = [{"input_ids": p.input_ids, "attention_mask": [1] * len(p.input_ids), "labels": p.labels} for p in pairs]
    padded = collator(RunConfig(packing=False), tokenizer, model)(features)
    packed = collator(RunConfig(packing=True), tokenizer, model)(features)
    assert packed["input_ids"].shape == (1, sum(len(p.input_ids) for p in pairs)) and "attention_mask" not in packed
    assert model.config.use_cache is False  # packing's per-example masking needs the forward pass without a cache
    with torch.no_grad():
        assert torch.allclose(model(**packed).loss, model(**padded).loss, atol=1e-5)
        row = model(**packed).logits[0]
        start = 0
        for pair in pairs:
            alone = model(input_ids=torch.tensor([pair.input_ids])).logits[0]
            assert torch.allclose(row[start : start + len(pair.input_ids)], alone, atol=1e-5)
            start += len(pair.input_ids)


def test_occlusion_of_an_answer_equals_captums_llm_attribution_with_feature_ablation(answers_run):
    """Captum's own LLM attribution (`LLMAttribution` over `FeatureAblation`, each prompt token replaced by the end-of-
    text token, the answer's summed log-probability) gives the whole-answer occlusion map of the answers view."""
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    from core.explain import load_explainer
    from core.stages import split_rows

    explainer = load_explainer(answers_run.id, "after")
    rows, _ = split_rows(answers_run, "test")
    prompt, answer = rows["prompt"].iloc[3], rows["response"].iloc[3]
    ours = explainer.explain(prompt, "occlusion", answer=answer, window=1)
    tokenizer = explainer.tokenizer
    captum = LLMAttribution(FeatureAblation(explainer.model), tokenizer)
    text = format_prompt(tokenizer, prompt)
    result = captum.attribute(TextTokenInput(text, tokenizer, baselines=tokenizer.eos_token_id), target=answer)
    assert result.input_tokens[: len(ours.units)] == ours.units  # every prompt token but the format's final newline
    np.testing.assert_allclose(ours.scores, result.seq_attr[: len(ours.units)].cpu().numpy(), rtol=1e-4, atol=1e-5)
