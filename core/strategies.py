"""Which weights train: full fine-tuning, head only, freeze the bottom N layers, or LoRA (peft)."""

from __future__ import annotations

from torch import nn

from core.config import RunConfig
from core.errors import UserError


def apply_strategy(model: nn.Module, config: RunConfig, head_names: tuple[str, ...], total_steps: int | None = None) -> nn.Module:
    """Return the model to train, with `requires_grad` set (or adapters added) per the strategy.

    `head_names` are the module names of the new task head (e.g. "classifier"), which always train.
    `total_steps` is needed by AdaLoRA, whose rank budget shrinks on a schedule over training.
    """
    if config.strategy == "full":
        return model
    if config.strategy in ("lora", "adalora"):
        return _with_lora(model, config, head_names, total_steps)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = _is_head(name, head_names)
    if config.strategy == "freeze":
        layers = encoder_layers(model)
        if config.freeze_layers > len(layers):
            raise UserError(f"Cannot freeze {config.freeze_layers} layers: this model has {len(layers)} encoder layers.")
        for layer in layers[config.freeze_layers :]:
            for parameter in layer.parameters():
                parameter.requires_grad = True
        # Whatever sits above the stack (BERT's pooler, ViT's final norm, MobileNet's last 1x1 conv)
        # trains with the unfrozen top: every parameter registered after the last layer's.
        top = {id(parameter) for parameter in layers[-1].parameters()}
        above = False
        for parameter in model.parameters():
            if id(parameter) in top:
                above = True
            elif above:
                parameter.requires_grad = True
    return model


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The stack of transformer blocks, found by shape rather than by architecture name."""
    best: list[nn.Module] = []
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and name.split(".")[-1] in ("layer", "layers", "h", "blocks")
            and len(module) > len(best)
        ):
            best = list(module)
    if not best:
        raise UserError("This model has no recognisable stack of layers to freeze; use the head or LoRA strategy.")
    return best


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _is_head(name: str, head_names: tuple[str, ...]) -> bool:
    return any(name == head or name.startswith(head + ".") for head in head_names)


def _with_lora(model: nn.Module, config: RunConfig, head_names: tuple[str, ...], total_steps: int | None) -> nn.Module:
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    module_names = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [target for target in config.lora_targets if target not in module_names]
    if missing:
        # GPT-2 keeps its projections in transformers' Conv1D (a transposed linear layer), which LoRA adapts too.
        linear = sorted(
            {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"}
        )
        raise UserError(
            f"LoRA target modules {', '.join(missing)} do not exist in this model; "
            f"its linear layers are named: {', '.join(linear)}."
        )
    shared = {
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": list(config.lora_targets),
        "modules_to_save": list(head_names),
    }
    if config.strategy == "lora":
        return get_peft_model(model, LoraConfig(r=config.lora_r, **shared))
    if not total_steps or total_steps < 10:
        raise UserError("AdaLoRA needs at least 10 training steps to prune its rank budget; train longer or use LoRA.")
    # Full budget for the first 10 % of steps, pruning in the middle, fixed ranks for the last 20 %.
    adalora = AdaLoraConfig(
        init_r=config.adalora_init_r,
        target_r=config.adalora_target_r,
        total_step=total_steps,
        tinit=total_steps // 10,
        tfinal=total_steps // 5,
        deltaT=1,
        **shared,
    )
    return get_peft_model(model, adalora)
