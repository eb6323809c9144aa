"""`core.lean_steps`: the clip folded into the fused optimizer gives the same weights as Trainer's own clip-then-step,
the FLOP estimate is the same, and an optimizer that cannot take the clip factor gets Trainer's own clip."""

from __future__ import annotations

import pytest
import torch

from core.lean_steps import fused_optimizer, lean_trainer

ROWS, FEATURES = 24, 8


class Regressor(torch.nn.Module):
    """A linear model whose loss Trainer reads from its output and whose parameters it counts, like a Hugging Face
    model's."""

    main_input_name = "inputs"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(FEATURES, 1)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def forward(self, inputs, targets):
        return {"loss": torch.nn.functional.mse_loss(self.layer(inputs).squeeze(-1), targets)}


class Rows(torch.utils.data.Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(1)
        self.inputs = torch.randn(ROWS, FEATURES, generator=generator) * 10  # large: the gradients need clipping
        self.targets = torch.randn(ROWS, generator=generator) * 10

    def __len__(self):
        return ROWS

    def __getitem__(self, index):
        return {"inputs": self.inputs[index], "targets": self.targets[index]}


def trained(trainer_type: type, folder, optim: str, max_grad_norm: float):
    from transformers import TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=4, max_steps=6, learning_rate=0.05, weight_decay=0.1,
        max_grad_norm=max_grad_norm, optim=optim, save_strategy="no", report_to="none", use_cpu=True, logging_steps=1,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = trainer_type(model=Regressor(), args=arguments, train_dataset=Rows())
    trainer.train()
    return trainer


@pytest.mark.parametrize("max_grad_norm", [0.5, 1e6])  # clipped at every step; never clipped
def test_the_folded_clip_trains_the_same_weights_as_clip_then_step(tmp_path, max_grad_norm):
    from transformers import Trainer

    stock = trained(Trainer, tmp_path / "stock", "adamw_torch_fused", max_grad_norm)
    lean = trained(lean_trainer(Trainer), tmp_path / "lean", "adamw_torch_fused", max_grad_norm)
    assert fused_optimizer(lean) is not None  # the folded path ran, not the fallback
    torch.testing.assert_close(lean.model.layer.weight, stock.model.layer.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lean.model.layer.bias, stock.model.layer.bias, rtol=1e-5, atol=1e-6)
    norms = [[entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry] for trainer in (stock, lean)]
    assert norms[0] == pytest.approx(norms[1], rel=1e-5) and len(norms[0]) == 6
    if max_grad_norm < 1:
        assert min(norms[0]) > max_grad_norm  # the clip really scaled every step
    assert lean.state.total_flos == stock.state.total_flos == 6 * ROWS * FEATURES * (FEATURES + 1)


def test_an_optimizer_that_cannot_take_the_clip_factor_gets_trainers_own_clip(tmp_path):
    from transformers import Trainer

    stock = trained(Trainer, tmp_path / "stock", "adamw_torch", 0.5)
    lean = trained(lean_trainer(Trainer), tmp_path / "lean", "adamw_torch", 0.5)
    assert fused_optimizer(lean) is None and not hasattr(lean.optimizer.optimizer, "grad_scale")
    torch.testing.assert_close(lean.model.layer.weight, stock.model.layer.weight)


def test_a_callback_that_reads_the_gradients_after_the_step_sees_them_clipped(tmp_path):
    from transformers import Trainer, TrainerCallback

    seen = []

    class ReadsGradients(TrainerCallback):  # as AdaLoRA's budget does (core.callbacks.AdaLoraBudget)
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            seen.append(float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))))

    lean = lean_trainer(Trainer)
    trainer = trained(lambda **kwargs: lean(callbacks=[ReadsGradients()], **kwargs), tmp_path, "adamw_torch_fused", 0.5)
    assert fused_optimizer(trainer) is None
    assert seen and max(seen) == pytest.approx(0.5, rel=1e-4)  # clipped to max_grad_norm before the callback ran
