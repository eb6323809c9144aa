"""`core.checkpoint_reload`: a checkpoint of a dual encoder whose ViT transformers 5 renames on load comes back whole
into the training model, where Trainer's own non-strict load leaves the vision tower as it was."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from safetensors.torch import load_file

from core.checkpoint_reload import misses_weights, renaming_reload


def saved_then_changed(folder, tmp_path):
    """The tiny dual encoder saved as a checkpoint, and the same model in memory with every weight moved since."""
    from transformers import VisionTextDualEncoderModel

    model = VisionTextDualEncoderModel.from_pretrained(str(folder))
    checkpoint = tmp_path / "checkpoint-3"
    model.save_pretrained(checkpoint)
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)
    return model, checkpoint, saved


def unchanged(model, saved) -> dict[str, bool]:
    return {name: bool(torch.equal(tensor, saved[name])) for name, tensor in model.state_dict().items()}


def test_trainers_plain_load_misses_the_renamed_vision_weights_and_the_reload_brings_them_back(tiny_dual_encoder, tmp_path):
    model, checkpoint, saved = saved_then_changed(tiny_dual_encoder, tmp_path)
    model.load_state_dict(load_file(checkpoint / "model.safetensors"), False)  # what Trainer does
    after_plain = unchanged(model, saved)
    missed = [name for name, back in after_plain.items() if not back]
    assert missed and all(name.startswith("vision_model.") for name in missed)  # the text tower did load
    assert misses_weights(model, checkpoint)

    renaming_reload(object)._reload_if_missed(SimpleNamespace(model=model), checkpoint)
    assert all(unchanged(model, saved).values())


def test_a_checkpoint_whose_names_match_is_left_to_trainers_own_load(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    model.save_pretrained(tmp_path / "checkpoint-1")
    assert not misses_weights(model, tmp_path / "checkpoint-1")
    assert not misses_weights(model, tmp_path)  # no model.safetensors (an adapter or a sharded checkpoint)
