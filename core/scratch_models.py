"""Randomly initialised BERT models built from a config, with the built-in MiniLM tokenizer.

They need no download, so tests, benchmarks and the GPU check can exercise the real code paths
(tokenizer, safetensors, every strategy) at any size, from tiny to BERT-base.
"""

from __future__ import annotations

from pathlib import Path

from core.catalog import MINILM_L6

SIZES = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def write_random_bert(target: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random BERT of the named size (plus tokenizer) to `target`; returns the folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(MINILM_L6.local_dir(), trust_remote_code=False)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **SIZES[size])
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return Path(target)


def write_random_dual_encoder(target: Path, image_size: int = 32, seed: int = 0) -> Path:
    """Save a random CLIP-style dual encoder (tiny ViT + tiny BERT, MiniLM tokenizer) with its processor to `target`.

    For tests and benchmarks of the image-text tasks: a model built from configs, no download, that
    trains in seconds; the same `VisionTextDualEncoderModel` class as the built-in dual encoder.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        VisionTextDualEncoderConfig,
        VisionTextDualEncoderModel,
        VisionTextDualEncoderProcessor,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(MINILM_L6.local_dir(), trust_remote_code=False)
    vision = ViTConfig(
        image_size=image_size,
        patch_size=image_size // 4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    text = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **SIZES["tiny"])
    torch.manual_seed(seed)
    model = VisionTextDualEncoderModel(VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=32))
    model.save_pretrained(target)
    image_processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)
    return Path(target)
