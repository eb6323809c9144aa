"""Built-in image models, for `core.catalog.BUILTIN_MODELS`: made by converting another library's weights."""

from __future__ import annotations

from core.catalog_entry import BuiltinModel
from core.images import mobilenet

MOBILENET_V2 = BuiltinModel(
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

BUILTIN_IMAGE_MODELS = {model.key: model for model in (MOBILENET_V2,)}
DEFAULT_IMAGE_MODEL = MOBILENET_V2.key
