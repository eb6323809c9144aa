"""A randomly initialised ViT built from a config, saved with an image processor: no download needed.

Tests and benchmarks use it to run the real image path (processor, safetensors, the ViT head and
layer stack, every strategy) in seconds.
"""

from __future__ import annotations

from pathlib import Path

SIZES = {
    "tiny": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "small": {
        "image_size": 64,
        "patch_size": 8,
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 512,
    },
}


def write_random_vit(target: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random ViT backbone of the named size (plus its image processor) to `target`; returns the folder."""
    import torch
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit import ViTImageProcessorPil

    settings = SIZES[size]
    config = ViTConfig(**settings)
    torch.manual_seed(seed)
    ViTModel(config, add_pooling_layer=False).save_pretrained(target)
    side = settings["image_size"]
    ViTImageProcessorPil(size={"height": side, "width": side}).save_pretrained(target)
    return Path(target)


def write_random_cnn(target: Path, image_size: int = 64, seed: int = 0) -> Path:
    """Save a random 2-stage ResNet (basic blocks, 16 and 32 channels) with its image processor to `target`: a
    convolutional image classifier as small as the tiny ViT, for the pixel methods and Grad-CAM. At 64 px its
    pooled feature map is 8 x 8 (at 32 px only 4 x 4, too coarse for Grad-CAM to point at a small square)."""
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetModel

    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", downsample_in_first_stage=False
    )
    torch.manual_seed(seed)
    ResNetModel(config).save_pretrained(target)
    ConvNextImageProcessorPil(size={"shortest_edge": image_size}, crop_pct=1.0).save_pretrained(target)
    return Path(target)
