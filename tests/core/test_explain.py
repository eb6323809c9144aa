"""Explanations, checked against known answers: real runs, real Captum, offline.

One tiny BERT is fine-tuned on "planted-keywords" (labels decided only by planted words) through
the job manager, once for the module. The run uses learning rate 0.002, not the 0.005 of the
training tests: at 0.005 the tiny model saturates (every text gets the same 0.991 / 0.009
probabilities, the [CLS] pooler's tanh is flat), its gradients vanish, and it learns "positive
keyword or not", so a *faithful* map of a negative example has no evidence to show. At 0.002
it reaches 100 % accuracy while staying differentiable, which is what an explanation test needs.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stop_trainers
from core import jobs
from core.config import RunConfig
from core.data import PLANTED_KEYWORDS, load_splits
from core.errors import UserError
from core.explain import (
    METHODS,
    AttributionMethod,
    Explanation,
    TextExplainer,
    clear_explainer_cache,
    load_text_explainer,
    merge_word_pieces,
    methods_for,
    randomization_check,
    randomized_copy,
)
from core.explain.base import Attribution, make_parts
from core.store import RunStore

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 240  # generous for a busy 2-core machine; the run itself takes well under a minute
TEXT = "the film was superb and the actress was wonderful"


def explain_config(model_dir) -> RunConfig:
    return RunConfig(
        name="explain",
        model=str(model_dir),
        dataset="planted-keywords",
        max_rows=300,
        epochs=4,
        batch_size=16,
        learning_rate=0.002,
        eval_steps=10,
        logging_steps=5,
        max_length=32,
        # The checks below describe the model at the end of training; kept-best would be the first
        # checkpoint that reached accuracy 1.0, long before the encoder settled.
        best_checkpoint=False,
        keep_checkpoints=0,  # every checkpoint, for the drift of the maps over training
    )


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        config = explain_config(tiny_bert)
        run = jobs.submit(config)
        try:
            run = jobs.wait(run.id, timeout=RUN_TIMEOUT)
        finally:
            stop_trainers(root)
        assert run.status == "completed", jobs.log_tail(run.id)
        yield {"run": run, "root": root, "config": config}
    clear_explainer_cache()


@pytest.fixture(scope="module")
def explainer(trained) -> TextExplainer:
    return load_text_explainer(trained["run"].id)


@pytest.fixture(scope="module")
def correct(trained, explainer) -> list[tuple[str, str]]:
    """Held-out (test + validation) rows the trained model classifies correctly, as (text, label)."""
    config = trained["config"]
    splits = load_splits(config.dataset, seed=config.seed, max_rows=config.max_rows)
    rows = list(splits.test.itertuples()) + list(splits.validation.itertuples())
    predicted = explainer.predict_proba([row.text for row in rows]).argmax(axis=1)
    kept = [(row.text, row.label) for row, index in zip(rows, predicted) if explainer.label_names[index] == row.label]
    assert len(kept) >= 0.9 * len(rows)  # the model learned the task; otherwise nothing below means much
    return kept


def shown_tokens(explainer: TextExplainer, text: str) -> list[str]:
    encoding = explainer.tokenizer(text, truncation=True, max_length=explainer.max_length)
    ids = encoding["input_ids"]
    special = set(explainer.tokenizer.all_special_ids)
    return [token for token, i in zip(explainer.tokenizer.convert_ids_to_tokens(ids), ids) if i not in special]


# ---------------------------------------------------------------------------------------------
# Shape, plain data, errors


def test_importing_core_explain_does_not_import_torch():
    code = "import sys, core.explain; print(sorted(m for m in ('torch', 'captum', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


TOKEN_METHODS = methods_for("tokens")


@pytest.mark.parametrize("method", list(TOKEN_METHODS))
def test_every_method_scores_each_shown_token_as_plain_data(explainer, method):
    explanation = explainer.explain(TEXT, method)
    assert explanation.units == shown_tokens(explainer, TEXT)
    assert len(explanation.scores) == len(explanation.units)
    assert all(math.isfinite(score) for score in explanation.scores)
    assert any(score != 0 for score in explanation.scores)
    assert explanation.method == method and explanation.modality == "tokens" and not explanation.truncated
    assert explanation.params == TOKEN_METHODS[method].defaults
    assert explanation.signed == TOKEN_METHODS[method].signed
    assert math.isclose(sum(explanation.probabilities), 1.0, rel_tol=1e-5)
    assert explanation.predicted_label == "positive" and explanation.target == explanation.predicted
    assert explanation.seconds > 0
    payload = json.loads(json.dumps(explanation.to_dict(), allow_nan=False))
    (part,) = payload["parts"]
    assert part["input"] == "tokens" and part["units"] == explanation.units and part["scores"] == explanation.scores
    assert part["layout"] == [len(explanation.units)] and part["share"] == 1.0
    assert Explanation.from_dict(payload) == explanation


def test_ig_delta_is_small_shown_and_equal_to_captum(explainer, correct):
    """Completeness: sum(scores) = f(x) - f(baseline) up to the delta; same numbers as LayerIntegratedGradients."""
    import torch
    from captum.attr import LayerIntegratedGradients

    model, tokenizer = explainer.model, explainer.tokenizer
    for text, _ in correct[:5]:
        explanation = explainer.explain(text, "ig", steps=50)
        assert explanation.delta is not None and explanation.output_difference is not None
        assert abs(explanation.delta) <= 0.05 * abs(explanation.output_difference)
        assert not explanation.delta_is_large()
        assert math.isclose(sum(explanation.scores), explanation.output_difference, rel_tol=0.05, abs_tol=1e-6)

        encoded = tokenizer(text, return_tensors="pt")
        baseline = encoded["input_ids"].clone()
        baseline[0, 1:-1] = tokenizer.pad_token_id

        def forward(ids, mask, types):
            return model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

        attributions, delta = LayerIntegratedGradients(forward, model.get_input_embeddings()).attribute(
            encoded["input_ids"],
            baselines=baseline,
            target=explanation.target,
            n_steps=50,
            additional_forward_args=(encoded["attention_mask"], encoded["token_type_ids"]),
            return_convergence_delta=True,
        )
        expected = attributions.sum(-1)[0, 1:-1]
        assert torch.allclose(torch.tensor(explanation.scores, dtype=expected.dtype), expected, atol=1e-5, rtol=1e-4)
        assert abs(explanation.delta - float(delta)) < 1e-4


def test_large_delta_is_flagged():
    base = {
        "parts": make_parts(("tokens", ["a"], [1.0], [1])),
        "method": "ig",
        "target": 0,
        "target_label": "x",
        "predicted": 0,
        "predicted_label": "x",
        "probabilities": [1.0],
        "seconds": 0.1,
        "params": {},
        "truncated": False,
    }
    assert Explanation(delta=0.2, output_difference=1.0, **base).delta_is_large()
    assert not Explanation(delta=0.01, output_difference=1.0, **base).delta_is_large()
    assert not Explanation(delta=None, output_difference=None, **base).delta_is_large()


def test_saliency_and_input_x_gradient_equal_captum(explainer):
    import torch
    from captum.attr import InputXGradient, Saliency

    model = explainer.model
    encoded = explainer.tokenizer(TEXT, return_tensors="pt")
    embeddings = model.get_input_embeddings()(encoded["input_ids"]).detach()
    arguments = (encoded["attention_mask"], encoded["token_type_ids"])

    def forward(x, mask, types):
        return model(inputs_embeds=x, attention_mask=mask, token_type_ids=types).logits

    target = explainer.explain(TEXT, "saliency").target
    gradient = Saliency(forward).attribute(embeddings, target=target, additional_forward_args=arguments, abs=False)
    ours = torch.tensor(explainer.explain(TEXT, "saliency").scores)
    assert torch.allclose(ours, gradient[0].norm(dim=-1)[1:-1], atol=1e-6, rtol=1e-4)
    product = InputXGradient(forward).attribute(embeddings, target=target, additional_forward_args=arguments)
    ours = torch.tensor(explainer.explain(TEXT, "input_x_gradient").scores)
    assert torch.allclose(ours, product[0].sum(-1)[1:-1], atol=1e-6, rtol=1e-4)


def test_target_by_name_index_or_predicted(explainer):
    predicted = explainer.explain(TEXT, "occlusion")
    assert predicted.target == predicted.predicted == explainer.label_names.index("positive")
    by_name = explainer.explain(TEXT, "occlusion", target="negative")
    by_index = explainer.explain(TEXT, "occlusion", target=explainer.label_names.index("negative"))
    assert by_name.target == by_index.target == explainer.label_names.index("negative")
    assert by_name.target_label == "negative" and by_name.predicted_label == "positive"
    assert by_name.scores == by_index.scores
    # Hiding "superb" lowers the positive logit and raises the negative one.
    superb = by_name.units.index("superb")
    assert predicted.scores[superb] > 0 > by_name.scores[superb]
    with pytest.raises(UserError, match=r"no class 7: this model has 2 classes, numbered 0 to 1 \(negative, positive\)"):
        explainer.explain(TEXT, "ig", target=7)
    with pytest.raises(UserError, match=r"no class 'neutral'.*negative, positive"):
        explainer.explain(TEXT, "ig", target="neutral")


def test_bad_requests_are_sentences(explainer):
    for empty in ("", "   \n"):
        with pytest.raises(UserError, match="The text is empty"):
            explainer.explain(empty)
    with pytest.raises(UserError, match=r"no attribution method 'shap'; choose one of ig, saliency, .*occlusion"):
        explainer.explain(TEXT, "shap")
    with pytest.raises(UserError, match="Integrated Gradients has no parameter window; it takes: steps, baseline"):
        explainer.explain(TEXT, "ig", window=2)
    with pytest.raises(UserError, match="'steps' must be at least 1"):
        explainer.explain(TEXT, "ig", steps=0)
    with pytest.raises(UserError, match="'baseline' must be one of pad, mask, zero"):
        explainer.explain(TEXT, "ig", baseline="unk")
    with pytest.raises(UserError, match="'steps' must be a int"):
        explainer.explain(TEXT, "ig", steps="many")


def test_long_text_is_cut_and_flagged(explainer):
    long = " ".join(["the movie was superb"] * 20)
    explanation = explainer.explain(long, "ig")
    assert explanation.truncated
    assert len(explanation.units) == explainer.max_length - 2  # [CLS] and [SEP] are not shown
    assert not explainer.explain(TEXT, "ig").truncated


def test_baselines_and_method_params_are_used(explainer):
    for baseline in ("pad", "mask", "zero"):
        explanation = explainer.explain(TEXT, "ig", baseline=baseline, steps=64)
        assert explanation.params == {"steps": 64, "baseline": baseline}
        assert not explanation.delta_is_large()
    windowed = explainer.explain(TEXT, "occlusion", window=3, measure="probability")
    assert windowed.params == {"window": 3, "baseline": "pad", "measure": "probability"}
    assert all(-1 <= score <= 1 for score in windowed.scores)
    same_seed = [explainer.explain(TEXT, "gradient_shap", seed=3, n_samples=8) for _ in range(2)]
    assert same_seed[0] is same_seed[1]
    explainer.clear_cache()
    assert explainer.explain(TEXT, "gradient_shap", seed=3, n_samples=8).scores == same_seed[0].scores


# ---------------------------------------------------------------------------------------------
# Word pieces


def hand_made(units, scores) -> Explanation:
    return Explanation(
        parts=make_parts(("tokens", units, scores, [len(units)])),
        method="ig",
        target=1,
        target_label="positive",
        predicted=1,
        predicted_label="positive",
        probabilities=[0.2, 0.8],
        delta=0.0,
        output_difference=1.0,
        seconds=0.01,
        params={"steps": 50},
        truncated=False,
    )


def test_merge_word_pieces_joins_pieces_and_sums_scores():
    merged = merge_word_pieces(hand_made(["an", "un", "##believ", "##able", "film"], [0.5, 0.1, 0.2, 0.3, -0.4]))
    assert merged.units == ["an", "unbelievable", "film"]
    assert merged.scores == pytest.approx([0.5, 0.6, -0.4])
    assert merged.params == {"steps": 50, "merged_word_pieces": True}
    sentencepiece = merge_word_pieces(hand_made(["▁an", "▁un", "believ", "able", "▁film"], [0.5, 0.1, 0.2, 0.3, -0.4]))
    assert sentencepiece.units == ["an", "unbelievable", "film"]
    assert sentencepiece.scores == pytest.approx([0.5, 0.6, -0.4])


def test_explain_can_merge_words(explainer):
    text = "the film was superbly dreadfully unbelievably good"
    pieces = explainer.explain(text, "ig")
    words = explainer.explain(text, "ig", merge_words=True)
    assert "##ly" in pieces.units
    assert words.units == text.split()
    assert sum(words.scores) == pytest.approx(sum(pieces.scores))
    assert words.delta == pieces.delta


# ---------------------------------------------------------------------------------------------
# Faithfulness: the known answer


@pytest.mark.parametrize("method", ["ig", "occlusion", "gradient_shap"])
def test_top_token_is_a_planted_keyword_of_the_predicted_class(explainer, correct, method):
    """On correctly classified held-out rows, the highest-scoring token is one of the predicted class's keywords.

    The predicted class's keywords, not any class's: a sentence holds only its own class's
    keywords, so this is the stricter reading, and the top *signed* score must be evidence *for*
    the prediction, which a keyword of the other class would not be.
    """
    hits = [explainer.explain(text, method).top(1)[0][0] in PLANTED_KEYWORDS[label] for text, label in correct]
    assert sum(hits) / len(hits) >= 0.9, f"{method}: {sum(hits)} of {len(hits)}"


def test_every_planted_keyword_outranks_the_filler(explainer, correct):
    """IG ranks each planted keyword of a sentence above every filler word of it."""
    for text, label in correct[:20]:
        explanation = explainer.explain(text, "ig")
        keywords = [s for u, s in zip(explanation.units, explanation.scores) if u in PLANTED_KEYWORDS[label]]
        filler = [s for u, s in zip(explanation.units, explanation.scores) if u not in PLANTED_KEYWORDS[label]]
        assert keywords and min(keywords) > max(filler), (text, explanation.top(3))


# ---------------------------------------------------------------------------------------------
# Randomisation sanity check (Adebayo et al., 2018)


def test_randomising_every_layer_scrambles_the_ig_map(explainer, correct):
    checks = [randomization_check(explainer, text, "ig", scope="all") for text, _ in correct[:6]]
    for check in checks:
        assert check["original"].scores == explainer.explain(check["original"].text, "ig").scores
        assert check["randomized"].target == check["original"].target
        assert check["spearman"] < 1.0
    assert sum(abs(c["spearman"]) for c in checks) / len(checks) < 0.5
    assert sum(abs(c["spearman_abs"]) for c in checks) / len(checks) < 0.5
    assert sum("changed a lot" in c["verdict"] for c in checks) >= len(checks) // 2


def test_randomising_the_head_changes_the_signed_map(explainer, correct):
    """With the head (pooler + classifier) re-initialised the signed map is no longer the trained one.

    On this 2-class model the fine-tuned encoder carries the decision along one direction of [CLS],
    so any head ranks the same tokens first, often with the sign flipped: the *signed* correlation
    averages well below 0.5 while the magnitudes keep their order. The check reports both, and its
    verdict (which needs both to drop) says the evidence lives below the head.
    """
    checks = [randomization_check(explainer, text, "ig", scope="head") for text, _ in correct[:6]]
    assert all(c["spearman"] < 1.0 - 1e-6 for c in checks)
    assert sum(c["spearman"] for c in checks) / len(checks) < 0.5
    for check in checks:
        if abs(check["spearman"]) >= 0.5 or abs(check["spearman_abs"]) >= 0.5:
            assert "barely changed" in check["verdict"] and "encoder" in check["verdict"]


def test_a_model_independent_method_fails_the_check(explainer, monkeypatch):
    """The check can fail: a 'method' that scores tokens by their length ignores the weights entirely."""

    class TokenLength(AttributionMethod):
        key, title, description, defaults = "token_length", "Token length", "Longer tokens score higher.", {}
        modalities = ("tokens",)

        def attribute(self, adapter, encoded, target, grid):
            return Attribution(([float(len(token)) for token in encoded.tokens],))

    monkeypatch.setitem(METHODS, "token_length", TokenLength())  # adding a method: one class, one line
    check = randomization_check(explainer, TEXT, "token_length", scope="all")
    assert check["spearman"] == pytest.approx(1.0) and check["top_k_overlap"] == 1.0
    assert "barely changed" in check["verdict"]


def test_randomized_copy_leaves_the_model_alone(explainer):
    import torch

    model = explainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    head = randomized_copy(model, "head", seed=1)
    everything = randomized_copy(model, "all", seed=1)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    changed = {name for name, p in head.named_parameters() if not torch.equal(before[name], p)}
    assert {"bert.pooler.dense.weight", "classifier.weight"} <= changed
    assert all(name.startswith(("bert.pooler.", "classifier.")) for name in changed)
    assert any(name.startswith("bert.encoder") for name, p in everything.named_parameters() if not torch.equal(before[name], p))
    assert torch.equal(randomized_copy(model, "head", seed=1).classifier.weight, head.classifier.weight)
    with pytest.raises(UserError, match="scope must be one of head, all"):
        randomization_check(explainer, TEXT, scope="layer3")


# ---------------------------------------------------------------------------------------------
# Caching, batches, loading


def test_second_identical_call_is_the_cached_object(explainer):
    text = "a dreadful evening at the theater"
    first = explainer.explain(text, "ig", target="negative")
    assert explainer.explain(text, "ig", target="negative") is first
    assert explainer.explain(text, "ig", target=0, steps=50, baseline="pad") is first  # same request, spelled out
    merged = explainer.explain(text, "ig", target="negative", merge_words=True)
    assert explainer.explain(text, "ig", target="negative", merge_words=True) is merged
    assert explainer.explain(text, "ig", target="positive") is not first
    uncached = explainer.with_model(explainer.model, cache_size=0)
    assert uncached.explain(text, "ig") is not uncached.explain(text, "ig")


def test_explain_many_reports_progress_and_takes_one_target_per_text(explainer, correct):
    texts = [text for text, _ in correct[:3]]
    seen = []
    results = explainer.explain_many(
        texts, "occlusion", target=["negative", "positive", 0], progress=lambda f, m: seen.append((f, m))
    )
    assert [r.target_label for r in results] == ["negative", "positive", "negative"]
    assert [f for f, _ in seen] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert seen[-1][1] == "Explained 3 of 3 texts"
    with pytest.raises(UserError, match="one target per text"):
        explainer.explain_many(texts, "ig", target=[0, 1])


def test_predict_proba_agrees_with_explanations(explainer, correct):
    texts = [text for text, _ in correct[:4]]
    probabilities = explainer.predict_proba(texts, batch_size=3)
    assert probabilities.shape == (4, 2)
    for row, text in zip(probabilities, texts):
        assert row.tolist() == pytest.approx(explainer.explain(text, "saliency").probabilities, abs=1e-5)
    assert explainer.predict_proba([]).shape == (0, 2)


def test_load_text_explainer_caches_and_refuses_with_sentences(trained, explainer):
    run = trained["run"]
    assert load_text_explainer(run.id) is explainer
    assert load_text_explainer(run.id, "after") is explainer and explainer.stage == "after"
    assert explainer.max_length == 32 and explainer.label_names == ["negative", "positive"]
    before = load_text_explainer(run.id, "before")
    assert before is not explainer and before.stage == "before"
    assert before.predict_proba([TEXT])[0].tolist() != pytest.approx(explainer.predict_proba([TEXT])[0].tolist())
    with pytest.raises(UserError, match="There is no run 'nope'"):
        load_text_explainer("nope")
    with pytest.raises(UserError, match="has no 'checkpoint-999' model; available: before, checkpoint-"):
        load_text_explainer(run.id, "checkpoint-999")
    store = RunStore()
    for run_id, make_directory in (("20990101-000000-gone", False), ("20990101-000000-none", True)):
        store.create(
            run_id, name="x", task="text_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml()
        )
        if make_directory:
            (trained["root"] / "runs" / run_id).mkdir(parents=True)
    with pytest.raises(UserError, match="directory of run 20990101-000000-gone was deleted"):
        load_text_explainer("20990101-000000-gone")
    with pytest.raises(UserError, match="has no model to inspect yet"):
        load_text_explainer("20990101-000000-none")


# ---------------------------------------------------------------------------------------------
# The command line


def explain_cli(*arguments, workspace, timeout=180):
    """`python -m core explain …`, as a user types it."""
    command = ["-m", "core", "explain"]
    env = dict(os.environ, WORKBENCH_WORKSPACE=str(workspace), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, *command, *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_core_cli_has_the_explain_command():
    from core.cli import build_parser

    arguments = build_parser().parse_args(["explain", "run", "--text", "a sentence"])
    assert arguments.command == "explain" and arguments.text == "a sentence"


def test_cli_prints_json_with_units_and_scores(trained):
    result = explain_cli(trained["run"].id, "--text", TEXT, "--json", "--target", "positive", workspace=trained["root"])
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    (part,) = payload["parts"]
    assert part["units"][:3] == ["the", "film", "was"] and len(part["scores"]) == len(part["units"])
    assert payload["method"] == "ig" and payload["target_label"] == "positive" and payload["stage"] == "after"
    assert max(zip(part["scores"], part["units"]))[1] in PLANTED_KEYWORDS["positive"]


def test_cli_explains_a_row_of_the_runs_split_readably(trained):
    config = trained["config"]
    row = load_splits(config.dataset, seed=config.seed, max_rows=config.max_rows).test.iloc[3]
    result = explain_cli(
        trained["run"].id,
        "--split",
        "test",
        "--index",
        "3",
        "--method",
        "occlusion",
        "--param",
        "window=1",
        workspace=trained["root"],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("prediction: ") and f"gold: {row['label']}" in lines[0]
    assert "Occlusion (window 1, baseline pad, measure logit)" in lines[1]
    first_word = row["text"].split()[0]
    assert lines[2].startswith(f"{first_word}(") and "\033[" not in result.stdout  # no colour when piped
    assert lines[-1].startswith("f(x)-f(baseline): ")
    ig = explain_cli(trained["run"].id, "--text", TEXT, workspace=trained["root"])
    assert ig.returncode == 0 and "delta: " in ig.stdout.splitlines()[-1]


def test_cli_refuses_with_exit_2_and_a_sentence(trained):
    result = explain_cli("no-such-run", "--text", "hello", workspace=trained["root"])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "There is no run 'no-such-run'" in result.stderr
    assert "Traceback" not in result.stderr
    result = explain_cli(trained["run"].id, "--split", "test", "--index", "999", workspace=trained["root"])
    assert result.returncode == 2 and "has 30 rows; choose an index from 0 to 29" in result.stderr


# ---------------------------------------------------------------------------------------------
# The faithfulness card: deletion / insertion curves, AOPC against random orderings, NAOPC.


def test_the_curves_run_from_the_input_to_the_baseline_and_back(explainer, correct):
    from core.explain.faithfulness import explainer_card

    text, _ = correct[0]
    (card,) = explainer_card(explainer, text, ["ig"])
    explanation = explainer.explain(text, "ig")
    whole = explanation.probabilities[explanation.target]
    curves = card.curves
    assert curves.fractions[0] == 0 and curves.fractions[-1] == 1
    assert curves.deletion[0] == pytest.approx(whole, abs=1e-5)  # nothing removed yet: the input itself
    assert curves.insertion[-1] == pytest.approx(whole, abs=1e-5)  # everything put back: the input again
    assert curves.deletion[-1] == pytest.approx(curves.insertion[0], abs=1e-5)  # all removed = nothing inserted
    assert card.random.deletion[0] == pytest.approx(whole, abs=1e-5)
    assert 0 <= card.naopc <= 1
    assert json.loads(json.dumps(card.to_dict()))["method"] == "ig"


def faithfulness_gain(explainer, texts, method: str = "ig") -> tuple[float, float]:
    """(mean AOPC of deletion in the map's order, the same in random orders) over `texts`."""
    from core.explain.faithfulness import explainer_card

    cards = [explainer_card(explainer, text, [method])[0] for text in texts]
    return (
        sum(card.comprehensiveness for card in cards) / len(cards),
        sum(card.random_comprehensiveness for card in cards) / len(cards),
    )


def test_ig_removes_what_the_model_needs_far_faster_than_random_and_a_randomised_models_maps_do_not(explainer, correct):
    texts = [text for text, _ in correct[:12]]
    ig, random = faithfulness_gain(explainer, texts)
    # Measured here: AOPC 0.26 in IG's order vs 0.13 in random ones (removing the keywords first drops p fast);
    # the randomised model's outputs barely move at all (both about 1e-6).
    assert ig > random + 0.08 and ig > 1.5 * random
    scrambled = explainer.with_model(randomized_copy(explainer.model, "all", seed=1))
    ig_random_model, random_random_model = faithfulness_gain(scrambled, texts)
    assert ig_random_model < random_random_model + 0.05


def test_a_card_compares_methods_on_the_same_class_and_refuses_a_one_unit_input(explainer, correct):
    from core.explain.faithfulness import explainer_card

    text, _ = correct[1]
    cards = explainer_card(explainer, text, ["ig", "saliency", "occlusion"])
    assert [card.method for card in cards] == ["ig", "saliency", "occlusion"]
    assert len({card.random_comprehensiveness for card in cards}) == 1  # one random bar for all methods
    with pytest.raises(UserError, match="at least two units"):
        explainer_card(explainer, text.split()[0], ["ig"])


# ---------------------------------------------------------------------------------------------
# Attribution drift: the same example's map under every kept stage.


def test_the_planted_keyword_climbs_to_the_top_of_the_map_over_the_checkpoints(trained, correct):
    from core.explain.drift import attribution_drift

    run = trained["run"]
    texts = correct[:10]
    first_at_the_end = climbed = 0
    for text, label in texts:
        drift = attribution_drift(run.id, text, "ig", target=label)
        assert drift.stages[0] == "before" and drift.stages[-1] == "after" and len(drift.stages) >= 5
        assert drift.steps == sorted(drift.steps) and drift.steps[0] == 0
        assert drift.spearman_to_final[-1] == pytest.approx(1.0)
        keywords = [i for i, unit in enumerate(drift.units) if unit in PLANTED_KEYWORDS[label]]
        ranks = [min(row[i] for i in keywords) for row in drift.ranks()]  # the best-placed keyword of the class
        first_at_the_end += ranks[-1] == 1
        climbed += ranks[-1] < ranks[0]
        if drift.top_unit in PLANTED_KEYWORDS[label]:
            settled = drift.steps.index(drift.settled_step)
            assert all(rank == 1 for rank in drift.top_ranks[settled:]) and (settled == 0 or drift.top_ranks[settled - 1] > 1)
    assert first_at_the_end >= 0.9 * len(texts)
    assert climbed >= 0.9 * len(texts)


def test_drift_refuses_a_run_with_one_model_on_disk(trained, tmp_path, monkeypatch):
    from core.explain.drift import attribution_drift

    run = trained["run"]
    copy = tmp_path / "workspace"
    shutil.copytree(trained["root"], copy)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(copy))
    for folder in (copy / "runs" / run.id / "checkpoints").iterdir():
        shutil.rmtree(folder)
    shutil.rmtree(copy / "runs" / run.id / "model_before")
    with pytest.raises(UserError, match="checkpoints were not kept"):
        attribution_drift(run.id, TEXT, "saliency")


# ---------------------------------------------------------------------------------------------
# What drives each class: the words that carry the most attribution over a split.


def test_each_class_is_driven_by_its_planted_keywords_and_the_summary_is_cached(trained, monkeypatch):
    from core.explain import summary

    run = trained["run"]
    steps = []
    found = summary.class_summary(run.id, "test", progress=lambda done, text: steps.append(done))
    assert steps[-1] == 1.0 and len(steps) == sum(entry["examples"] for entry in found["classes"].values())
    for label, entry in found["classes"].items():
        top = [item["word"] for item in entry["top"][:3]]
        assert set(top) == set(PLANTED_KEYWORDS[label]), (label, entry["top"][:5])
    assert summary.summary_path(RunStore().get(run.id), found["stage"], "test", summary.DEFAULT_METHOD).exists()
    monkeypatch.setattr("core.explain.loading.load_explainer", lambda *a, **k: pytest.fail("recomputed"))
    assert summary.class_summary(run.id, "test") == found
