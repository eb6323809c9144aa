"""Dual encoders: the built-in one (made offline from the two built-in towers by core.catalog_dual_encoder)
and hub CLIP / SigLIP.

A dual encoder embeds images and texts into one space; a pair's score is the cosine of the two
embeddings times a learned scale (1 / temperature). The built-in model is transformers'
`VisionTextDualEncoderModel` over MobileNetV2 (vision) and MiniLM-L6 (text) with new projection
heads. Every supported model names its towers `vision_model` and `text_model`, which is what the
per-tower settings (train / freeze / LoRA, separate learning rates) act on.
"""

from __future__ import annotations

from typing import Any

from core.assets import Progress, no_progress
from core.catalog_dual_encoder import BUILTIN_KEY  # the built-in's key, which refusals name
from core.errors import UserError
from core.models import SAFE_LOADING, load_model_config, resolve_model

# model_type values of the dual encoders this workbench trains (CLIP's symmetric InfoNCE, SigLIP's sigmoid loss).
DUAL_ENCODER_TYPES = ("vision-text-dual-encoder", "clip", "siglip", "siglip2", "chinese_clip")
TOWERS = {"vision": "vision_model", "text": "text_model"}
TOWER_MODES = ("train", "freeze", "lora")


def dual_encoder_config(source: str):
    """The model's config, refusing anything that is not an image-text dual encoder."""
    model_config = load_model_config(source)
    if model_config.model_type not in DUAL_ENCODER_TYPES:
        raise UserError(
            f"The model at {source} is a {model_config.model_type} model, not an image-text dual encoder; choose the "
            f"built-in {BUILTIN_KEY}, a hub CLIP or SigLIP id such as openai/clip-vit-base-patch32, or a folder saved from one."
        )
    return model_config


def load_dual_encoder(source: str, dropout: float | None = None):
    """The dual encoder at `source` (a folder or hub id), safely, with the run's dropout in both towers when given."""
    from transformers import AutoModel, VisionTextDualEncoderModel

    from core.models import DROPOUT_KEYS

    model_config = dual_encoder_config(source)
    if dropout is not None:
        for tower_config in (model_config.vision_config, model_config.text_config):
            for key in DROPOUT_KEYS:
                if hasattr(tower_config, key):
                    setattr(tower_config, key, dropout)
    model_class = VisionTextDualEncoderModel if model_config.model_type == "vision-text-dual-encoder" else AutoModel
    try:
        return model_class.from_pretrained(source, config=model_config, **SAFE_LOADING)
    except (OSError, ValueError) as error:
        raise UserError(
            f"The dual encoder at {source} could not be loaded ({error}); save it again with save_pretrained."
        ) from None


def resolve_dual_encoder(spec: str, progress: Progress = no_progress) -> str:
    """A folder or hub id for `load_dual_encoder` (the built-in key builds its folder on first use)."""
    return resolve_model(spec, progress)


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise UserError(f"The dual encoder at {source} has no usable tokenizer ({error}); save one beside the model.") from None


def pair_processor(image_processor, tokenizer):
    """One object that saves both halves beside the model, so the folder reloads with AutoProcessor."""
    from transformers import VisionTextDualEncoderProcessor

    return VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)


def features(output) -> Any:
    """transformers 5's get_*_features return a model output whose pooler_output is the projected embedding."""
    return getattr(output, "pooler_output", output)


def image_embeddings(model, pixel_values):
    """Unit-length image embeddings (N, D)."""
    import torch.nn.functional as F

    return F.normalize(features(model.get_image_features(pixel_values=pixel_values)), dim=-1)


def text_embeddings(model, **text):
    """Unit-length text embeddings (N, D) from tokenizer output (input_ids, attention_mask, …)."""
    import torch.nn.functional as F

    return F.normalize(features(model.get_text_features(**text)), dim=-1)


def logit_scale(model):
    """exp(logit_scale): the factor that turns cosines into logits (1 / temperature)."""
    return model.logit_scale.exp()


def temperature(model) -> float:
    return float(1.0 / logit_scale(model).detach().float())


def pair_scores(model, pixel_values, **text):
    """Row-wise scores of matched pairs: image i with text i (N,), as the contrastive loss sees them."""
    images, texts = image_embeddings(model, pixel_values), text_embeddings(model, **text)
    return (images * texts).sum(dim=-1) * logit_scale(model)


# --- What trains: per-tower modes and learning rates ---------------------------------------------


def tower_of(parameter_name: str) -> str | None:
    """'vision', 'text', or None (projections, temperature, fusion head) for a parameter name."""
    for tower, prefix in TOWERS.items():
        if parameter_name.startswith(prefix + ".") or f".{prefix}." in parameter_name:
            return tower
    return None


def apply_tower_modes(model, modes: dict[str, str], lora: dict[str, Any]):
    """Freeze a tower, add LoRA adapters to it, or leave it training; the rest (projections) always trains.

    LoRA adapters are injected in place (peft's `inject_adapter_in_model`), so the model keeps its own
    class, its checkpoints hold every weight (adapters included) and resume works unchanged;
    `merge_adapters` folds them in before the final save.
    """
    from torch import nn

    lora_towers = [tower for tower, mode in modes.items() if mode == "lora"]
    if lora_towers:
        from peft import LoraConfig, inject_adapter_in_model

        targets = []
        for tower in lora_towers:
            prefix = TOWERS[tower]
            tower_names = [name for name, module in model.named_modules() if tower_of(name + ".") == tower]
            found = [target for target in lora["targets"] if any(name.split(".")[-1] == target for name in tower_names)]
            if not found:
                layers = sorted(
                    {
                        name.split(".")[-1]
                        for name, module in model.named_modules()
                        if tower_of(name + ".") == tower and isinstance(module, (nn.Linear, nn.Conv2d))
                    }
                )
                raise UserError(
                    f"None of the LoRA target modules ({', '.join(lora['targets'])}) is in the {tower} tower; its linear and "
                    f"convolution layers are named: {', '.join(layers[:20])}. Add one to the LoRA targets, or train or freeze "
                    "that tower."
                )
            targets += [rf"(.*\.)?{prefix}\..*\.{target}" for target in found]  # a fusion model nests the towers in `encoder`
        pattern = "^(" + "|".join(targets) + ")$"
        inject_adapter_in_model(
            LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules=pattern), model
        )
    for name, parameter in model.named_parameters():
        mode = modes.get(tower_of(name) or "", "train")
        parameter.requires_grad = mode == "train" or (mode == "lora" and "lora_" in name)
    return model


def merge_adapters(model):
    """Fold injected LoRA adapters into their base layers and drop them: a plain model for save_pretrained."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    return model


def parameter_groups(model, base_lr: float, tower_lrs: dict[str, float], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: each tower at its own learning rate (0 = the run's), the rest at the run's;
    no weight decay on biases, norms and the temperature, as Trainer does for its single group."""
    groups: dict[tuple[float, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        tower = tower_of(name)
        lr = (tower_lrs.get(tower) or base_lr) if tower else base_lr
        decays = parameter.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((lr, decays), []).append(parameter)
    return [
        {"params": params, "lr": lr, "weight_decay": weight_decay if decays else 0.0} for (lr, decays), params in groups.items()
    ]
