"""What every image tower needs, whichever task trains it: its image processor at the run's size, and
BatchNorm statistics that average over batches.

Image classification and both image-text tasks (and Inspect, opening their stages) use these, so they
live with the image modality rather than in one task's module.
"""

from __future__ import annotations

from typing import Any

from core.errors import UserError


def load_processor(source: str, image_size: int = 0):
    """The model's image processor (PIL backend: torchvision is not used here), resized to `image_size` if given.

    A processor that resizes then centre-crops (MobileNetV2: 256 then 224) keeps its ratio (96 -> 110 then 96).
    """
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(source, backend="pil", trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise UserError(
            f"The model at {source} has no usable image processor (preprocessor_config.json): {error}. "
            "Save one with image_processor.save_pretrained next to the model."
        ) from None
    if not image_size:
        return processor
    size, crop = dict(processor.size or {}), dict(getattr(processor, "crop_size", None) or {})
    overrides: dict[str, Any] = {}
    if getattr(processor, "do_center_crop", False) and crop:
        crop_side = min(crop["height"], crop["width"])
        if "shortest_edge" in size:
            overrides["size"] = {"shortest_edge": round(image_size * size["shortest_edge"] / crop_side)}
        else:
            overrides["size"] = {
                "height": round(image_size * size["height"] / crop_side),
                "width": round(image_size * size["width"] / crop_side),
            }
        overrides["crop_size"] = {"height": image_size, "width": image_size}
    elif "shortest_edge" in size:
        overrides["size"] = {"shortest_edge": image_size}
    else:
        overrides["size"] = {"height": image_size, "width": image_size}
    return AutoImageProcessor.from_pretrained(source, backend="pil", trust_remote_code=False, **overrides)


def steady_batchnorm(model) -> None:
    """Give BatchNorm layers PyTorch's usual momentum (0.1) where a port copied TensorFlow's decay.

    transformers' MobileNetV2 sets `momentum=0.997`, TensorFlow's decay; in PyTorch momentum is the
    weight of the *new* batch, so the running statistics would become those of the last batch alone
    and evaluation after fine-tuning would swing with it. (Training only: not saved in the config.)
    """
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None and module.momentum > 0.5:
            module.momentum = 0.1
