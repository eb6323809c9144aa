"""Strategies: which weights train (full / head / freeze N / LoRA), checked with real optimizer steps."""

import pytest
import torch

from core.config import RunConfig
from core.errors import UserError
from core.strategies import apply_strategy, encoder_layers, trainable_parameters
from core.tasks.text_classification import load_model

HEAD = ("classifier",)
LABELS = ["negative", "positive"]


@pytest.fixture
def model(tiny_bert):
    torch.manual_seed(0)
    _, model = load_model(str(tiny_bert), LABELS, dropout=0.0)
    return model


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(1000, 2000, (8, 12), generator=generator),
        "attention_mask": torch.ones(8, 12, dtype=torch.long),
        "labels": torch.tensor([0, 1] * 4),
    }


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def train_steps(model, batch, steps: int = 3, lr: float = 1e-2) -> None:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()


def changed(before, model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if not torch.equal(before[name], parameter.detach())}


def test_full_trains_everything(model, batch):
    result = apply_strategy(model, RunConfig(strategy="full"), HEAD)
    assert result is model
    trainable, total = trainable_parameters(model)
    assert trainable == total > 0


def test_head_only_trains_the_classifier(model, batch):
    apply_strategy(model, RunConfig(strategy="head"), HEAD)
    hidden = model.config.hidden_size
    trainable, total = trainable_parameters(model)
    assert trainable == hidden * len(LABELS) + len(LABELS)
    assert trainable < total
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    before = snapshot(model)
    train_steps(model, batch)
    assert changed(before, model) == {"classifier.weight", "classifier.bias"}


def test_freeze_keeps_embeddings_and_bottom_layers_fixed(model, batch):
    apply_strategy(model, RunConfig(strategy="freeze", freeze_layers=1), HEAD)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names, "something must train"
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in names)
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight"} <= names
    layer_one = sum(p.numel() for p in model.bert.encoder.layer[1].parameters())
    pooler = sum(p.numel() for p in model.bert.pooler.parameters())
    classifier = sum(p.numel() for p in model.classifier.parameters())
    assert trainable_parameters(model)[0] == layer_one + pooler + classifier

    before = snapshot(model)
    train_steps(model, batch)
    moved = changed(before, model)
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in moved)
    assert any(n.startswith("bert.encoder.layer.1.") for n in moved)
    assert "classifier.weight" in moved


def test_freeze_zero_layers_still_freezes_nothing_but_embeddings(model):
    apply_strategy(model, RunConfig(strategy="freeze", freeze_layers=0), HEAD)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("bert.embeddings.") for n in frozen)


def test_freeze_all_layers_leaves_pooler_and_head(model):
    apply_strategy(model, RunConfig(strategy="freeze", freeze_layers=2), HEAD)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


def test_freeze_more_layers_than_the_model_has(model):
    with pytest.raises(UserError, match="Cannot freeze 3 layers: this model has 2 encoder layers"):
        apply_strategy(model, RunConfig(strategy="freeze", freeze_layers=3), HEAD)


def test_encoder_layers_found_by_shape(model):
    layers = encoder_layers(model)
    assert len(layers) == 2 and layers[0] is model.bert.encoder.layer[0]
    with pytest.raises(UserError, match="no recognisable stack of layers"):
        encoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_lora_adds_adapters_and_trains_only_them_and_the_head(model, batch):
    config = RunConfig(strategy="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_targets=["query", "value"])
    base_total = trainable_parameters(model)[1]
    peft_model = apply_strategy(model, config, HEAD)
    names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    lora_names = {n for n in names if "lora_" in n}
    # One A and one B matrix per targeted linear layer: 2 layers x (query, value).
    assert len(lora_names) == 2 * 2 * 2
    assert all((".query." in n or ".value." in n) for n in lora_names)
    head_names = names - lora_names
    assert head_names and all("classifier" in n for n in head_names)
    hidden = model.config.hidden_size
    expected = 2 * 2 * (4 * hidden + hidden * 4) + hidden * 2 + 2
    assert trainable_parameters(peft_model)[0] == expected
    assert trainable_parameters(peft_model)[1] > base_total  # adapters (and a head copy) were added

    before = snapshot(peft_model)
    train_steps(peft_model, batch)
    moved = changed(before, peft_model)
    assert any("lora_B" in n for n in moved)
    assert not any(n.endswith(("query.base_layer.weight", "value.base_layer.weight", "key.weight")) for n in moved)
    assert not any("embeddings" in n for n in moved)


def test_lora_final_model_is_merged_and_loads_as_a_plain_model(model, batch, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.tasks import TASKS
    from core.trainer import save_model_folder

    config = RunConfig(strategy="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    peft_model = apply_strategy(model, config, HEAD)
    train_steps(peft_model, batch, steps=5)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    target = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    save_model_folder(TASKS["text_classification"].finished_model(peft_model), tokenizer, target)
    assert (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()
    assert not (target / "adapter_config.json").exists()

    loaded = AutoModelForSequenceClassification.from_pretrained(target)
    assert type(loaded).__name__ == "BertForSequenceClassification"
    assert not any("lora" in n or "modules_to_save" in n for n, _ in loaded.named_parameters())
    loaded.eval()
    with torch.no_grad():
        got = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Same outputs as the adapter model: the adapters were merged and the trained head kept.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert loaded.config.id2label == {0: "negative", 1: "positive"}


def test_unknown_lora_target_lists_the_linear_layers(model):
    config = RunConfig(strategy="lora", lora_targets=["query", "q_proj", "attn"])
    with pytest.raises(UserError) as caught:
        apply_strategy(model, config, HEAD)
    message = str(caught.value)
    assert "q_proj, attn" in message
    for name in ("query", "key", "value", "dense", "classifier"):
        assert name in message.split("named:")[1]
    assert "LayerNorm" not in message and "embeddings" not in message
