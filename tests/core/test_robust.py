"""Robust fine-tuning: FGM/PGD perturbations, robustness evaluation, AdaLoRA budget, early stopping."""

import pytest
import torch
from test_training import series, tiny_config, train_here

from core.adversarial import EMBEDDINGS, attack, loss_on, robust_accuracy
from core.config import RunConfig
from core.store import RunStore


@pytest.fixture(scope="module")
def classifier(tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    batch = dict(tokenizer(["a wonderful film", "an awful , dreadful mess of a film"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    return model.eval(), batch


def loss_of(model, batch):
    return model(**batch).loss


def clean_embedding_norms(model, batch):
    return model.get_input_embeddings()(batch["input_ids"]).flatten(1).norm(dim=1)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_attack_keeps_shape_stays_in_the_ball_and_raises_the_loss(classifier, method):
    model, batch = classifier
    delta = attack(model, batch, EMBEDDINGS, method, epsilon=0.1, steps=3, loss_of=loss_of)
    embedded = model.get_input_embeddings()(batch["input_ids"])
    assert delta.shape == embedded.shape
    norms, limits = delta.flatten(1).norm(dim=1), 0.1 * clean_embedding_norms(model, batch)
    assert torch.all(norms <= limits * 1.001)
    if method == "fgm":
        assert torch.allclose(norms, limits, rtol=1e-4)
    with torch.no_grad():
        clean = loss_of(model, batch)
        attacked = loss_on(model, batch, EMBEDDINGS, delta, loss_of)
    assert attacked > clean
    # The hook is gone afterwards: the model answers as before.
    with torch.no_grad():
        assert torch.isclose(loss_of(model, batch), clean)


def test_pgd_finds_a_loss_at_least_as_high_as_fgm(classifier):
    model, batch = classifier
    with torch.no_grad():
        fgm = loss_on(model, batch, EMBEDDINGS, attack(model, batch, EMBEDDINGS, "fgm", 0.2, 1, loss_of), loss_of)
        pgd = loss_on(model, batch, EMBEDDINGS, attack(model, batch, EMBEDDINGS, "pgd", 0.2, 5, loss_of), loss_of)
    assert pgd >= fgm * 0.99


def test_robust_accuracy_never_exceeds_clean_accuracy(classifier):
    model, batch = classifier
    result = robust_accuracy(model, [batch], EMBEDDINGS, "fgm", epsilon=0.5)
    assert result["examples"] == 2
    assert result["attacked_accuracy"] <= result["clean_accuracy"]


@pytest.mark.parametrize(
    "changes, sentence",
    [
        ({"adversarial": "fgm", "adv_epsilon": 0}, "epsilon must be above 0"),
        ({"adversarial": "fgm", "adv_epsilon": -1}, "epsilon must be above 0"),
        ({"adversarial": "magic"}, "Unknown adversarial training"),
        ({"strategy": "adalora", "adalora_target_r": 20}, "target rank"),
        ({"label_smoothing": 1.0}, "Label smoothing"),
        ({"early_stopping_patience": -1}, "patience"),
    ],
)
def test_robust_options_are_validated(changes, sentence):
    assert any(sentence in problem for problem in RunConfig(**changes).validate())


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
    return RunStore()


def test_adversarial_training_still_learns(tiny_bert, fresh_store):
    config = tiny_config(tiny_bert, adversarial="fgm", adv_epsilon=0.05, epochs=8)
    run = train_here(config, fresh_store, "fgm-run")
    accuracy = series(fresh_store.metrics(run.id), "eval_accuracy")["value"]
    assert accuracy.iloc[-1] >= 0.9 > accuracy.iloc[0]


def test_adalora_moves_its_rank_budget_down(tiny_bert, fresh_store):
    run = train_here(tiny_config(tiny_bert, strategy="adalora", learning_rate=0.01), fresh_store, "adalora-run")
    budget = series(fresh_store.metrics(run.id), "adalora_rank_budget")["value"]
    assert budget.iloc[0] > budget.iloc[-1]


def test_early_stopping_ends_before_the_planned_steps(tiny_bert, fresh_store):
    # With a constant, tiny learning rate nothing improves, so patience 1 stops at the second evaluation.
    config = tiny_config(tiny_bert, learning_rate=1e-7, scheduler="constant", early_stopping_patience=1, epochs=10)
    run = train_here(config, fresh_store, "early-run")
    assert run.step < run.max_steps


def test_robustness_evaluation_of_a_run_before_and_after(tiny_bert, fresh_store):
    from core.adversarial import evaluate_robustness
    from core.errors import UserError

    run = train_here(tiny_config(tiny_bert, learning_rate=0.002), fresh_store, "robust-eval")
    after = evaluate_robustness(run, "after", method="pgd", epsilon=0.3, steps=3)
    assert after["examples"] == 30
    assert after["clean_accuracy"] >= 0.9
    assert after["attacked_accuracy"] <= after["clean_accuracy"]
    with pytest.raises(UserError, match="epsilon must be above 0"):
        evaluate_robustness(run, "after", epsilon=0)


# ---------------------------------------------------------------------------------------------
# Images: the same check and the same training, in pixel space


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from core.images.scratch import write_random_vit

    return write_random_vit(tmp_path_factory.mktemp("robust-vit"), "tiny")


def test_an_image_run_is_attacked_in_pixel_space_before_and_after(tiny_vit, fresh_store):
    from test_images import image_config

    from core.adversarial import evaluate_robustness

    run = train_here(image_config(tiny_vit, epochs=3), fresh_store, "image-robust-eval")
    results = {stage: evaluate_robustness(run, stage, method="pgd", epsilon=0.2, steps=3) for stage in ("before", "after")}
    after = results["after"]
    assert after["examples"] == 20 and after["clean_accuracy"] >= 0.9, results
    assert after["attacked_accuracy"] < after["clean_accuracy"], results  # 20 % of the pixels' norm fools it
    assert evaluate_robustness(run, "after", method="pgd", epsilon=1e-4, steps=3)["attacked_accuracy"] == after["clean_accuracy"]


def test_adversarial_training_in_pixel_space_makes_an_image_model_harder_to_fool(tiny_vit, fresh_store):
    """Same data, seed and steps; the PGD-trained run also learns from attacked copies of each batch."""
    from test_images import image_config

    from core.adversarial import evaluate_robustness

    plain = train_here(image_config(tiny_vit, epochs=3), fresh_store, "image-plain")
    adversarial = image_config(tiny_vit, epochs=3, adversarial="pgd", adv_epsilon=0.05, adv_steps=3)
    robust = train_here(adversarial, fresh_store, "image-pgd")
    losses = [series(fresh_store.metrics(run.id), "train_loss")["value"].tolist() for run in (plain, robust)]
    assert losses[0] != losses[1]  # the adversarial copies change what is learned
    results = {run.id: evaluate_robustness(run, "after", method="pgd", epsilon=0.05, steps=3) for run in (plain, robust)}
    attacked = {key: result["attacked_accuracy"] for key, result in results.items()}
    # Measured at the trained epsilon: 1.00 against 0.55 for the plain run (both clean at 0.95-1.00).
    assert attacked["image-pgd"] >= attacked["image-plain"] + 0.2, results
