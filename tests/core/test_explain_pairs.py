"""Cross-modal explanations (image-text pairs), checked against known answers: real Captum, offline.

The mechanics run on the built-in dual encoder as built (ImageNet MobileNetV2 + MiniLM-L6 joined by fresh
projections) at 64 px; the faithfulness checks, which train it first, are in test_pair_faithfulness.py.
"""

import json
import os

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.explain import (
    METHODS,
    Explanation,
    PairExplainer,
    describe,
    methods_for,
    pair_randomization_check,
    patches,
)
from core.image_text.shapes import shapes_examples

SIZE = 64
GRID = 8  # 8 px cells: a shape covers 2 to 9 of the 64
CAPTION = "a red circle in the top left"  # one word piece per word


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """The root conftest pins one thread for tiny models; this module's models are not tiny. Under xdist the other workers
    have the second core, and a second thread would only contend for it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """(model folder, image processor at 64 px, tokenizer) of the built-in dual encoder, built in its own workspace."""
    from core.image_text.models import BUILTIN_KEY, load_tokenizer, resolve_dual_encoder
    from core.tasks.image_classification import load_processor

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("pairs-workspace")))
        source = resolve_dual_encoder(BUILTIN_KEY)
    return source, load_processor(source, SIZE), load_tokenizer(source)


def dual_encoder(builtin):
    from core.image_text.models import load_dual_encoder

    return load_dual_encoder(builtin[0])


@pytest.fixture(scope="module")
def untrained(builtin):
    return PairExplainer(dual_encoder(builtin), builtin[1], builtin[2])


def shapes_image(seed=5):
    return shapes_examples(1, seed=seed, size=SIZE)[0]


# ---------------------------------------------------------------------------------------------
# The mechanics, on the built-in model as built


PAIR_METHODS = methods_for("pairs")


def test_pair_methods_are_registered_with_descriptions():
    assert set(PAIR_METHODS) == set(METHODS) - {"grad_cam"}  # Grad-CAM needs one image's feature map
    for method in PAIR_METHODS.values():
        assert method.modality == "pairs" and len(method.description) > 60
    assert (
        describe("ig", PAIR_METHODS["ig"].defaults, "pairs")
        == "Integrated Gradients (steps 128, text_baseline pad, image_baseline blur)"
    )


def test_ig_scores_add_up_to_the_change_in_score(untrained):
    example = shapes_image()
    explanation = untrained.explain(example.image, example.caption, "ig", grid=(4, 6), steps=128, image_baseline="mean")
    assert explanation.kind == "similarity" and explanation.target is None and explanation.probabilities == []
    assert explanation.score == pytest.approx(untrained.score(example.image, example.caption), abs=1e-5)
    assert explanation.output_difference == pytest.approx(explanation.score - explanation.baseline_score, abs=1e-5)
    tokens, cells = explanation.part("tokens"), explanation.part("patches")
    assert [part.input for part in explanation.parts] == ["tokens", "patches"] and explanation.modality == "pairs"
    assert sum(explanation.scores) - explanation.output_difference == pytest.approx(explanation.delta, abs=1e-6)
    assert abs(explanation.delta) < 0.05 * abs(explanation.output_difference) and not explanation.delta_is_large()
    assert tokens.share + cells.share == pytest.approx(1.0)
    assert tokens.share == pytest.approx(sum(map(abs, tokens.scores)) / sum(map(abs, explanation.scores)))
    assert tokens.units == untrained.tokenizer.tokenize(example.caption)  # no [CLS] / [SEP]
    assert tokens.layout == [len(tokens.units)] and explanation.units == tokens.units + cells.units
    assert cells.layout == [4, 6] and len(cells.scores) == 24 and cells.units[:2] == ["r0c0", "r0c1"]
    coarse = untrained.explain(example.image, example.caption, "ig", grid=(4, 6), steps=4, image_baseline="mean")
    assert coarse.delta_is_large()  # a too-coarse integral is flagged


def test_explanation_is_plain_data_with_a_view_of_each_part(untrained):
    from core.viz import patch_overlay

    example = shapes_image()
    explanation = untrained.explain(example.image, example.caption, "occlusion", grid=GRID)
    payload = json.loads(json.dumps(explanation.to_dict()))
    assert Explanation.from_dict(payload) == explanation and payload["modality"] == "pairs"
    assert [part["input"] for part in payload["parts"]] == ["tokens", "patches"]
    tokens, cells = explanation.only("tokens"), explanation.only("patches")
    assert tokens.units == explanation.part("tokens").units and tokens.modality == "tokens" and tokens.target_label == "match"
    assert cells.parts[0].layout == [GRID, GRID] and cells.units == patches.unit_names((GRID, GRID))
    assert tokens.parts[0].share == 1.0 and tokens.delta is None and tokens.method == explanation.method
    assert cells.top(1)[0] == max(zip(cells.units, cells.scores), key=lambda pair: pair[1])
    shown = untrained.input_image(example.image)
    assert shown.size == (SIZE, SIZE)
    for drawn in (
        patch_overlay(shown, explanation),
        patch_overlay(shown, scores=cells.scores, grid=[GRID, GRID], signed=explanation.signed),
    ):
        assert drawn.size == (256, 256)
    assert untrained.explain(example.image, example.caption, "occlusion", grid=GRID) is explanation  # cached


@pytest.mark.parametrize("method", list(PAIR_METHODS))
def test_every_method_scores_both_halves(untrained, method):
    """Each method is written once over input adapters, so each one explains a pair's tokens and patches too."""
    example = shapes_image()
    params = {
        "ig": {"steps": 16},
        "gradient_shap": {"n_samples": 4},
        "kernel_shap": {"n_samples": 32},
        "lime": {"n_samples": 32},
        "smoothgrad": {"nt_samples": 4},
    }.get(method, {})
    explanation = untrained.explain(example.image, CAPTION, method, grid=4, **params)
    tokens, cells = explanation.part("tokens"), explanation.part("patches")
    assert explanation.method == method and tokens.units == CAPTION.split()
    assert len(cells.scores) == 16 and np.isfinite(explanation.scores).all()
    assert explanation.signed == PAIR_METHODS[method].signed
    assert tokens.share + cells.share == pytest.approx(1.0)
    if method != "lime":  # LIME's Lasso may zero every coefficient of a random model
        assert any(tokens.scores) and any(cells.scores)


def test_occlusion_drop_is_the_score_without_that_token_or_patch(untrained):
    example = shapes_image()
    explanation = untrained.explain(example.image, CAPTION, "occlusion", grid=GRID, image_baseline="mean")
    words, tokens, cells = CAPTION.split(), explanation.part("tokens"), explanation.part("patches")
    assert tokens.units == words and len(tokens.scores) == len(words)
    assert explanation.delta is None and explanation.output_difference == pytest.approx(
        explanation.score - explanation.baseline_score
    )
    for index in (1, 2):  # "[PAD]" in a text is the pad token: the same ids the occluded copy had
        hidden = " ".join(words[:index] + ["[PAD]"] + words[index + 1 :])
        drop = explanation.score - untrained.score(example.image, hidden)
        assert tokens.scores[index] == pytest.approx(drop, abs=1e-4)
    assert len(cells.scores) == GRID * GRID and np.isfinite(cells.scores).all()


def test_embeddings_go_in_as_inputs_embeds_would(untrained):
    """Gradient x input through the forward hook equals a hand-written pass with `inputs_embeds` on the text tower."""
    import torch.nn.functional as F

    from core.image_text.models import image_embeddings, logit_scale

    model, example = untrained.model, shapes_image()
    explanation = untrained.explain(example.image, CAPTION, "input_x_gradient", grid=GRID)
    text = untrained.tokenizer(CAPTION, return_tensors="pt")
    pixels = untrained.image_processor(images=example.image, return_tensors="pt")["pixel_values"].requires_grad_(True)
    embeddings = model.text_model.get_input_embeddings()(text["input_ids"]).detach().requires_grad_(True)
    pooled = model.text_model(
        inputs_embeds=embeddings, attention_mask=text["attention_mask"], token_type_ids=text["token_type_ids"]
    ).pooler_output
    texts = F.normalize(model.text_projection(pooled), dim=-1)
    score = (image_embeddings(model, pixels) * texts).sum() * logit_scale(model)
    score.backward()
    score = score.detach()
    by_hand_tokens = (embeddings * embeddings.grad).sum(-1)[0, 1:-1]
    by_hand_cells = patches.aggregate((pixels * pixels.grad)[0].detach().numpy(), GRID).ravel()
    assert explanation.score == pytest.approx(score.item(), abs=1e-4)
    assert np.allclose(explanation.part("tokens").scores, by_hand_tokens.detach().numpy(), atol=1e-4)
    assert np.allclose(explanation.part("patches").scores, by_hand_cells, atol=1e-4)


@pytest.fixture(scope="module")
def fusion(builtin):
    """A fusion classifier (gated) on the built-in towers, with a fresh head over three classes."""
    from core.image_text.fusion import FusionClassifier

    torch.manual_seed(0)
    model = FusionClassifier(dual_encoder(builtin), ["cat", "dog", "bird"], fusion="gated")
    return PairExplainer(model, builtin[1], builtin[2], kind="classification", label_names=model.label_names)


def test_a_fusion_classifier_is_explained_towards_a_class(fusion):
    explainer, example = fusion, shapes_image()
    explanation = explainer.explain(example.image, CAPTION, "ig", target="dog", grid=4)
    assert explanation.kind == "classification" and explanation.target == 1 and explanation.target_label == "dog"
    assert sum(explanation.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert explanation.predicted_label == max(explainer.probabilities(example.image, CAPTION).items(), key=lambda kv: kv[1])[0]
    assert explanation.score == pytest.approx(explainer.score(example.image, CAPTION, "dog"), abs=1e-5)
    total = sum(explanation.scores)  # the bookkeeping over both parts; convergence is tested above
    assert total - explanation.output_difference == pytest.approx(explanation.delta, abs=1e-6)
    assert explainer.explain(example.image, CAPTION, "occlusion", grid=4).target == explanation.predicted
    with pytest.raises(UserError, match="There is no class 'fish'; this model's classes are cat, dog, bird"):
        explainer.explain(example.image, CAPTION, target="fish")
    with pytest.raises(UserError, match="no class 7"):
        explainer.explain(example.image, CAPTION, target=7)


def test_bad_input_is_a_sentence(untrained, tmp_path):
    example = shapes_image()
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    cases = [
        (lambda: untrained.explain(example.image, "   "), "The text is empty"),
        (lambda: untrained.explain(str(not_an_image), CAPTION), "is not an image that can be read"),
        (lambda: untrained.explain(str(tmp_path / "missing.png"), CAPTION), "There is no image file"),
        (lambda: untrained.explain(42, CAPTION), "Pick an image to explain"),
        (lambda: untrained.explain(example.image, CAPTION, grid=SIZE + 1), "patch grid must have between 1 and 64 rows"),
        (lambda: untrained.explain(example.image, CAPTION, "grad_cam"), "no attribution method 'grad_cam'"),
        (lambda: untrained.explain(example.image, CAPTION, window=3), "has no parameter window"),
        (lambda: untrained.explain(example.image, CAPTION, image_baseline="noise"), "must be one of mean, black, blur, grey"),
        (lambda: untrained.explain_word(example.image, CAPTION, "blue"), "'blue' is not a word of the text"),
        (lambda: untrained.explain_word(example.image, CAPTION, " "), "Type a word of the text"),
        (lambda: untrained.probabilities(example.image, CAPTION), "has no classes"),
        (
            lambda: PairExplainer(torch.nn.Linear(2, 2), untrained.image_processor, untrained.tokenizer),
            "not a dual encoder or fusion model",
        ),
        (
            lambda: PairExplainer(untrained.model, untrained.image_processor, untrained.tokenizer, kind="ranking"),
            "must be similarity or classification",
        ),
        (lambda: pair_randomization_check(untrained, example.image, CAPTION, scope="half"), "scope must be one of head, all"),
        (lambda: pair_randomization_check(untrained, example.image, "red", grid=GRID), "at least 3 patches and 3 tokens"),
    ]
    for call, phrase in cases:
        with pytest.raises(UserError, match=phrase):
            call()


def test_word_map_adds_up_to_the_words_effect(untrained):
    example = shapes_image()
    word_map = untrained.explain_word(example.image, example.caption, example.shape, grid=GRID, steps=128, image_baseline="mean")
    assert word_map.modality == "patches" and word_map.params["word_tokens"] == [example.shape]
    assert word_map.params["grid"] == [GRID, GRID] and len(word_map.scores) == GRID * GRID
    assert abs(word_map.delta) < 0.05 * abs(word_map.output_difference)
    assert (
        untrained.explain_word(example.image, example.caption, example.shape, grid=GRID, steps=128, image_baseline="mean")
        is word_map
    )


@pytest.mark.parametrize("kind", ["similarity", "classification"])
def test_head_randomisation_leaves_the_towers_and_the_model_alone(kind, untrained, fusion):
    """Above the towers: a dual encoder's projections; a fusion model's projections, gate and classifier."""
    from core.explain.sanity import randomized_pair_copy

    model = untrained.model if kind == "similarity" else fusion.model
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    twin = randomized_pair_copy(model, "head", seed=1)  # the fusion head was made with seed 0: that would redraw it
    for name, parameter in twin.named_parameters():
        above_towers = (
            not any(f"{tower}." in f".{name}" for tower in ("vision_model", "text_model")) and "logit_scale" not in name
        )
        assert torch.equal(parameter, before[name]) != above_towers, name
    assert all(torch.equal(parameter, before[name]) for name, parameter in model.named_parameters())


def test_cli_explains_a_pair(untrained, tmp_path, monkeypatch, capsys):
    import core.explain.loading
    from core.explain.cli import main

    monkeypatch.setattr(core.explain.loading, "load_pair_explainer", lambda run_id, stage=None: untrained)
    path = tmp_path / "shape.png"
    shapes_image().image.save(path)
    assert main(["run", "--image", str(path), "--text", CAPTION, "--grid", "4", "--param", "steps=8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("score: ") and "similarity (scaled cosine)" in lines[0]
    assert "Integrated Gradients (steps 8, text_baseline pad, image_baseline blur)" in lines[1] and "4x4 grid" in lines[1]
    assert "text " in lines[1] and " of the attribution" in lines[1]
    assert lines[2].startswith("a(") and lines[3].startswith("top: ")
    assert lines[4].startswith("r0c0(") and lines[8].startswith("top patches") and lines[-1].startswith("delta: ")
    assert main(["run", "--image", str(path), "--text", CAPTION, "--method", "occlusion", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    tokens, cells = payload["parts"]
    assert tokens["units"] == CAPTION.split() and len(cells["scores"]) == 49 and payload["method"] == "occlusion"
    assert main(["run", "--image", str(path), "--text", CAPTION, "--word", "circle", "--param", "steps=8"]) == 0
    assert capsys.readouterr().out.startswith("word: circle (tokens circle)")
    assert main(["run", "--image", str(path), "--split", "test", "--index", "1"]) == 2
    assert "--split with --index, not both" in capsys.readouterr().err


def test_loader_refuses_a_run_that_does_not_exist(workspace):
    from core.explain import load_pair_explainer

    with pytest.raises(UserError, match="There is no run 'nope'"):
        load_pair_explainer("nope")
