"""Two per-step costs of Hugging Face `Trainer` that a step does not need, removed without changing what it computes.

- **Clipping folded into the optimizer.** `clip_grad_norm_` computes the gradients' norm, then multiplies every
  gradient by min(1, max_norm / norm), a full pass over all of them, even when that factor is 1. A fused torch
  Adam/AdamW already reads every gradient in its one kernel and divides it by its `grad_scale` tensor (the hook
  `GradScaler` uses to unscale), so the clip factor is handed to it there: the same update, one pass fewer. The
  factor stays a tensor on the device, so a GPU is never asked to synchronise for it.
- **Parameters counted once.** Trainer's FLOP estimate (`total_flos`) walks every module to count the parameters at
  each step; the count does not change while a run trains.

Measured in `bench/train_throughput.py` (MiniLM-L6 on this 2-core CPU): the gradients' multiply is about 2.8 ms of a
190 ms step.
"""

from __future__ import annotations

from typing import Any

# Where accelerate leaves the gradients whole on this process (no sharding, no engine of its own).
PLAIN_DISTRIBUTED_TYPES = {"NO", "MULTI_CPU", "MULTI_GPU"}
CLIP_EPSILON = 1e-6  # as torch.nn.utils.clip_grad_norm_: max_norm / (norm + 1e-6)


def fused_optimizer(trainer) -> Any | None:
    """The torch optimizer under accelerate's wrapper, when it is a fused Adam/AdamW that can take the clip factor."""
    import torch

    accelerator = trainer.accelerator
    if accelerator.scaler is not None or accelerator.distributed_type.value not in PLAIN_DISTRIBUTED_TYPES:
        return None  # fp16's GradScaler owns grad_scale; DeepSpeed and FSDP clip in their own way
    if reads_gradients_after_the_step(trainer):
        return None  # e.g. AdaLoRA's budget reads them there: it must see them clipped, as Trainer leaves them
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    if not isinstance(optimizer, torch.optim.Adam) or not optimizer.defaults.get("fused"):
        return None  # the foreach and for-loop Adam paths refuse a grad_scale
    return optimizer


def reads_gradients_after_the_step(trainer) -> bool:
    """Whether a callback acts between the optimizer step and the zeroing of the gradients (`on_optimizer_step`)."""
    from transformers import TrainerCallback

    return any(
        type(callback).on_optimizer_step is not TrainerCallback.on_optimizer_step
        for callback in trainer.callback_handler.callbacks
    )


def lean_trainer(base: type) -> type:
    """`base` with the clip folded into a fused optimizer's step and the parameters counted once."""
    import torch

    class LeanTrainer(base):
        def _clip_grad_norm(self, model):
            optimizer = fused_optimizer(self)
            gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
            if optimizer is None or not gradients or len({gradient.device for gradient in gradients}) > 1:
                return super()._clip_grad_norm(model)
            norm = torch.nn.utils.get_total_norm(gradients, 2.0, False, None)
            # The fused step divides each gradient by this: (norm + eps) / max_norm when above the limit, else 1.
            optimizer.grad_scale = torch.clamp((norm + CLIP_EPSILON) / self.args.max_grad_norm, min=1.0).to(torch.float32)
            return norm

        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            main_input = getattr(self.model, "main_input_name", "input_ids")
            if main_input not in inputs or not hasattr(self.model, "num_parameters"):
                return 0
            if getattr(self, "_parameters_counted", None) is None:
                self._parameters_counted = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main_input].numel() * self._parameters_counted

    return LeanTrainer
