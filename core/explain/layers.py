"""Where in an image model the explanations look: a ViT's patch embeddings, a CNN's last convolution.

Read by the image adapter (which space to attribute in) and by Grad-CAM (which feature map to weigh), so it
lives beside both rather than in either. Nothing here imports torch at module level.
"""

from __future__ import annotations

from typing import Any


def patch_embedding_layer(model) -> tuple[str, Any] | None:
    """(name, module) of a ViT-like model's patch embeddings (output (N, patches, D)); None for other models."""
    if not getattr(model.config, "patch_size", None):
        return None
    for name, module in model.named_modules():
        if name.endswith("patch_embeddings"):
            return name, module
    return None


def last_convolution(model) -> tuple[str, Any] | None:
    """(name, module) of the last 2-D convolution, or of its conv + norm + activation block when it has one.

    In MobileNetV2 that is `mobilenet_v2.conv_1x1` (Conv2d 1x1 to 1280 channels, BatchNorm, ReLU6): the
    activated feature map the classifier pools, which is what Grad-CAM (Selvaraju et al., 2017) weighs.
    """
    from torch import nn

    convolutions = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        return None
    name, module = convolutions[-1]
    parent_name = name.rpartition(".")[0]
    if parent_name:
        parent = model.get_submodule(parent_name)
        simple = (
            nn.Conv2d,
            nn.modules.batchnorm._NormBase,
            nn.GroupNorm,
            nn.LayerNorm,
            nn.Identity,
            nn.Dropout,
            nn.ReLU,
            nn.ReLU6,
            nn.GELU,
            nn.SiLU,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Sigmoid,
            nn.Tanh,
        )
        children = list(parent.children())
        activation_named = type(parent).__name__.endswith(("ConvLayer", "ConvBlock", "ConvNormActivation"))
        if children and (activation_named or all(isinstance(child, simple) for child in children)):
            return parent_name, parent
    return name, module


def pooled_feature_map(model, pixel_values) -> tuple[str, Any] | None:
    """(name, module) of the feature map the classifier pools: the last module, in the order a forward pass over
    `pixel_values` finishes them, whose output is a spatial map (N, C, h, w) with h * w > 1.

    Traced rather than read from the module tree, so that a residual network gives its block's output (after
    the shortcut is added and activated) rather than its last convolution, which sees only the residual branch;
    in MobileNetV2 it is `mobilenet_v2.conv_1x1`, as `last_convolution` finds. None for a model with no such map.
    """
    import torch

    finished: list[str] = []

    def record(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1:
                finished.append(name)

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for handle in handles:
            handle.remove()
    return (finished[-1], model.get_submodule(finished[-1])) if finished else None


def grad_cam_problem(model) -> str | None:
    """None when Grad-CAM has a convolutional feature map to weigh in `model`, else the sentence why not."""
    if patch_embedding_layer(model) is not None:
        return (
            "Grad-CAM needs a convolutional feature map, and this is a ViT-like model made of patch tokens; use "
            "Integrated Gradients or Occlusion, which score its patches directly."
        )
    if last_convolution(model) is None:
        return "Grad-CAM needs a convolution layer, and this model has none."
    return None
