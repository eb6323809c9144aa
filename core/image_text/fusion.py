"""Fusion classifier: an image and a text in, one class out, on top of a dual encoder's two towers.

Both towers embed their input (the dual encoder's own projections), the two embeddings are fused,
and a linear head classifies the result:

- "concat": [image ; text] -> dropout -> linear. The head sees both embeddings whole.
- "gated": g = sigmoid(W [image ; text]); fused = g * image + (1 - g) * text -> dropout -> linear.
  The gate learns, per dimension and per example, how much to trust each modality.

It is a plain `nn.Module` holding the dual encoder as `encoder` (so every tower keeps its
pretrained weights and names) and exposes `vision_model` and `text_model` like a dual encoder, which
is what the per-tower settings and the cross-modal explainer act on. `save_pretrained` writes the
dual encoder's folder plus the head (`fusion_head.safetensors`) and its settings (`fusion.json`);
`FusionClassifier.from_pretrained` reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from core.config import FUSIONS

HEAD_FILE = "fusion_head.safetensors"
SETTINGS_FILE = "fusion.json"


class FusionClassifier(nn.Module):
    def __init__(self, encoder, label_names: list[str], fusion: str = "concat", dropout: float = 0.1):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
        self.encoder = encoder
        self.label_names = list(label_names)
        self.fusion = fusion
        self.dropout_rate = dropout
        width = embedding_width(encoder)
        self.gate = nn.Linear(2 * width, width) if fusion == "gated" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width if fusion == "gated" else 2 * width, len(label_names))

    @property
    def vision_model(self):
        return self.encoder.vision_model

    @property
    def text_model(self):
        return self.encoder.text_model

    @property
    def device(self) -> torch.device:
        """Where its weights are, as a transformers model says (what batches of inputs are moved to)."""
        return self.classifier.weight.device

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's word embeddings: where `core.adversarial` perturbs the text."""
        return self.encoder.text_model.get_input_embeddings()

    def fuse(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        both = torch.cat([image_embeds, text_embeds], dim=-1)
        if self.gate is None:
            return both
        gate = torch.sigmoid(self.gate(both))
        return gate * image_embeds + (1 - gate) * text_embeds

    def forward(self, pixel_values, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_):
        from core.image_text.models import image_embeddings, text_embeddings

        text = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            text["token_type_ids"] = token_type_ids
        logits = self.classifier(
            self.dropout(self.fuse(image_embeddings(self.encoder, pixel_values), text_embeddings(self.encoder, **text)))
        )
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {name: tensor for name, tensor in self.state_dict().items() if not name.startswith("encoder.")}

    def save_pretrained(self, folder, **kwargs) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        self.encoder.save_pretrained(folder, **kwargs)
        save_file({name: tensor.contiguous() for name, tensor in self.head_state().items()}, str(folder / HEAD_FILE))
        settings = {"fusion": self.fusion, "label_names": self.label_names, "dropout": self.dropout_rate}
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, folder) -> FusionClassifier:
        from safetensors.torch import load_file

        from core.image_text.models import load_dual_encoder

        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        model = cls(load_dual_encoder(str(folder)), settings["label_names"], settings["fusion"], settings["dropout"])
        model.load_state_dict(load_file(str(folder / HEAD_FILE)), strict=False)
        return model


def embedding_width(encoder) -> int:
    """The width of the dual encoder's shared space (its projection size)."""
    width = getattr(encoder.config, "projection_dim", None)
    if width:
        return int(width)
    return int(encoder.config.text_config.hidden_size)  # SigLIP: no separate projection, the towers' own width


def is_fusion_folder(folder) -> bool:
    return (Path(folder) / SETTINGS_FILE).is_file()
