"""Randomly initialised models built from a config: BERTs with the built-in MiniLM tokenizer, CLIP-style dual
encoders, and GPT-style decoders (GPT-2, LLaMA) with a small byte-level BPE tokenizer trained here.

They need no download, so tests, benchmarks and the GPU check can exercise the real code paths
(tokenizer, safetensors, every strategy) at any size, from tiny to BERT-base.
"""

from __future__ import annotations

from collections.abc import Sequence
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


END_OF_TEXT = "<|endoftext|>"
DECODER_ARCHITECTURES = ("gpt2", "llama")


def write_random_decoder(
    target: Path, architecture: str = "llama", seed: int = 0, vocab_size: int = 512, texts: Sequence[str] = ()
) -> Path:
    """Save a random 2-layer causal LM (GPT-2 or LLaMA, hidden 32) to `target` with a byte-level BPE tokenizer that,
    like theirs, has an end-of-text token and no padding or [MASK] token; returns the folder.

    The tokenizer is trained on the planted-keywords sentences and `texts`, so their words are single tokens
    ("Ġexcellent"); any other text still tokenises, byte by byte.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    from core.data.builtin import planted_keywords_frame

    if architecture not in DECODER_ARCHITECTURES:
        raise ValueError(f"architecture must be one of {DECODER_ARCHITECTURES}, not {architecture!r}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([*planted_keywords_frame()["text"].tolist(), *texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT)
    shared = {"vocab_size": bpe.get_vocab_size(), "bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if architecture == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **shared)
    else:
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **shared,
        )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return Path(target)
