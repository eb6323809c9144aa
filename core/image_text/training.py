"""What the two image-text tasks share: checks, data and processors, tower settings, encoding, batching."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.assets import Progress
from core.config import RunConfig
from core.errors import UserError


def check_pair_config(config: RunConfig, kind: str) -> None:
    """Cheap checks: the dataset exists, the per-tower settings are used instead of the strategy."""
    from core.image_text.data import is_pair_dataset, list_pair_datasets

    if not is_pair_dataset(config.dataset, kind):
        known = ", ".join(info.key for info in list_pair_datasets(kind))
        raise UserError(
            f"There is no image-text dataset '{config.dataset}' for this task. Choose one of {known}, "
            "or upload a CSV with a zip of images on the Data page (Image + text)."
        )
    if config.strategy != "full":
        raise UserError(
            "Image-text tasks choose what trains per tower: set the vision tower and the text tower to train, "
            "freeze or lora, and leave the strategy at full."
        )
    if config.adversarial != "none":
        raise UserError("Adversarial training is not available for image-text tasks yet; set adversarial to none.")


def load_pairs_and_processors(config: RunConfig, kind: str, progress: Progress):
    """(splits, model source, image processor, tokenizer) for a run on a pair dataset."""
    from core.image_text.data import load_pair_splits
    from core.image_text.models import load_tokenizer, resolve_dual_encoder
    from core.images.processing import load_processor

    splits = load_pair_splits(config.dataset, kind=kind, seed=config.seed, max_rows=config.max_rows or None, progress=progress)
    source = resolve_dual_encoder(config.model, progress)
    return splits, source, load_processor(source, int(config.image_size or 0)), load_tokenizer(source)


def with_tower_modes(model, config: RunConfig):
    from core.image_text.models import apply_tower_modes

    lora = {"targets": list(config.lora_targets), "r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
    return apply_tower_modes(model, {"vision": config.vision_tower, "text": config.text_tower}, lora)


def trainable_pair_model(model, config: RunConfig):
    """The model as it trains: per-tower settings applied, and BatchNorm running statistics that average.

    MobileNetV2's port keeps TensorFlow's BatchNorm momentum (0.997), which in PyTorch makes the
    running statistics those of the last batch alone; an epoch ending in a batch of two pairs then
    wrecks every later evaluation (seen: validation R@1 0.48 at step 90, 0.09 at step 93).
    """
    from core.images.processing import steady_batchnorm

    steady_batchnorm(model)
    return with_tower_modes(model, config)


def pair_processor_for(image_processor, tokenizer):
    from core.image_text.models import pair_processor

    return pair_processor(image_processor, tokenizer)


def encode_pairs(
    split, image_processor, tokenizer, config: RunConfig, label_ids: dict[str, int], augmenting: bool, with_caption_groups: bool
):
    """Rows of (pixel_values, input_ids, attention_mask, labels) made on the fly from the stored pairs.

    `labels` is the class id for fusion. For alignment it is [caption group, class id]: the group
    marks equal captions for the retrieval metrics and the class id (-1 without labels) scores
    zero-shot classification; neither reaches the model, whose loss needs only the pairing itself.
    """
    from core.image_text.metrics import caption_groups
    from core.images.augment import augment, params_from_config

    table = split.select_columns(["image", "text", "label"])
    texts = table["text"]
    group_of = dict(zip((text.strip().lower() for text in texts), caption_groups(texts).tolist()))
    params = params_from_config(config)
    augmenting = augmenting and params.active
    rng = np.random.default_rng(config.seed)

    def labels_of(text: str, label: str):
        class_id = label_ids.get(label, -1)
        return [group_of[text.strip().lower()], class_id] if with_caption_groups else class_id

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        images = [augment(image, params, rng) for image in batch["image"]] if augmenting else batch["image"]
        encoded = tokenizer(batch["text"], truncation=True, max_length=config.max_length)
        return {
            "pixel_values": image_processor(images=images, return_tensors="pt")["pixel_values"],
            **{name: encoded[name] for name in encoded},
            "labels": [labels_of(text, label) for text, label in zip(batch["text"], batch["label"])],
        }

    return table.with_transform(transform)


class PairCollator:
    """Stacks pixels, pads token ids to the batch's longest text, keeps labels (class ids, or (B, 2) for alignment)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        text_keys = [key for key in features[0] if key not in ("pixel_values", "labels")]
        batch = self.tokenizer.pad([{key: feature[key] for key in text_keys} for feature in features], return_tensors="pt")
        batch["pixel_values"] = torch.stack([feature["pixel_values"] for feature in features])
        batch["labels"] = torch.tensor([feature["labels"] for feature in features], dtype=torch.long)
        return dict(batch)
