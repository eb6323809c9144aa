"""Adversarial training (FGM, PGD) and robustness evaluation (FGSM, PGD).

A perturbation `delta` is added either to the word-embedding output (text) or to the pixel values
(images), chosen by the task's `adversarial_space`. Epsilon is relative: each example's perturbation
has an L2 norm of at most epsilon times the L2 norm of that example's own input (over all its
positions), so 0.05 means "5 % of the input" for any model size, batch size or modality.

Training (Miyato et al. 2017; Madry et al. 2018): after the usual backward pass, build delta from
the gradient of the loss (one normalised step for FGM; several projected steps for PGD), then add
the loss on the perturbed input to the same update.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

EMBEDDINGS = "embeddings"
PIXELS = "pixel_values"
SPACE_NAMES = {EMBEDDINGS: "the word embeddings", PIXELS: "the pixels"}
IGNORE_INDEX = -100  # a label the loss and the robustness check skip (a tagger's later word pieces, padding)


class Perturbation:
    """Holds the delta added on the next forward passes; `None` leaves inputs untouched."""

    def __init__(self) -> None:
        self.delta: torch.Tensor | None = None
        self.track = False  # when True, a zero delta is created to receive the input gradient
        self.clean: torch.Tensor | None = None  # the unperturbed input, whose norm scales epsilon

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        self.clean = tensor.detach()
        if self.track and self.delta is None:
            self.delta = torch.zeros_like(tensor, requires_grad=True)
        return tensor if self.delta is None else tensor + self.delta


@contextmanager
def perturbed(model: nn.Module, space: str, perturbation: Perturbation) -> Iterator[None]:
    """While open, the model's embedding output (text) is shifted by the perturbation."""
    if space != EMBEDDINGS:
        yield
        return
    handle = model.get_input_embeddings().register_forward_hook(lambda module, args, output: perturbation.apply(output))
    try:
        yield
    finally:
        handle.remove()


def normalise(gradient: torch.Tensor) -> torch.Tensor:
    """Each example's gradient scaled to unit L2 norm (over all its positions and channels)."""
    flat = gradient.flatten(1)
    norms = flat.norm(dim=1).clamp_min(1e-12)
    return (flat / norms[:, None]).view_as(gradient)


def per_example(radius: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return radius.view(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Shrink each example's delta back onto its L2 ball of the given radius."""
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * per_example(torch.clamp(radius / norms, max=1.0), delta)


def input_gradient(
    model: nn.Module, inputs: dict, space: str, delta: torch.Tensor | None, loss_of
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of the loss w.r.t. the perturbed input, per-example norm of the clean input).

    Parameter gradients are not touched: only the input's gradient is taken."""
    perturbation = Perturbation()
    if delta is not None:
        perturbation.delta = delta.detach().clone().requires_grad_(True)
    else:
        perturbation.track = True
    batch = dict(inputs)
    # Attacks need input gradients even when the caller evaluates under torch.no_grad().
    with torch.enable_grad(), perturbed(model, space, perturbation):
        if space == PIXELS:
            perturbation.clean = batch[PIXELS].detach()
            if perturbation.delta is None:
                perturbation.delta = torch.zeros_like(batch[PIXELS], requires_grad=True)
            batch[PIXELS] = batch[PIXELS] + perturbation.delta
        loss = loss_of(model, batch)
    (gradient,) = torch.autograd.grad(loss, perturbation.delta)
    return gradient, perturbation.clean.flatten(1).norm(dim=1)


def attack(model: nn.Module, inputs: dict, space: str, method: str, epsilon: float, steps: int, loss_of) -> torch.Tensor:
    """The perturbation FGM/FGSM (one step) or PGD (several projected steps) finds for this batch."""
    gradient, clean_norm = input_gradient(model, inputs, space, None, loss_of)
    radius = epsilon * clean_norm
    if method != "pgd":
        return (per_example(radius, gradient) * normalise(gradient)).detach()
    # Madry et al.: steps of 2.5·epsilon/steps, each projected back onto the epsilon ball.
    step = per_example(2.5 * radius / max(steps, 1), gradient)
    delta = project(step * normalise(gradient), radius)
    for _ in range(steps - 1):
        gradient, _ = input_gradient(model, inputs, space, delta, loss_of)
        delta = project(delta + step * normalise(gradient), radius)
    return delta.detach()


def loss_on(model: nn.Module, inputs: dict, space: str, delta: torch.Tensor, loss_of):
    """`loss_of(model, batch)` with `delta` added to the input (gradients reach the parameters, not delta).

    Any function of (model, batch) works, e.g. one returning predictions instead of a loss."""
    perturbation = Perturbation()
    perturbation.delta = delta
    batch = dict(inputs)
    if space == PIXELS:
        batch[PIXELS] = batch[PIXELS] + delta
    with perturbed(model, space, perturbation):
        return loss_of(model, batch)


def adversarial_trainer(base, space: str, method: str, epsilon: float, steps: int):
    """A Trainer subclass whose every training step also learns from an adversarial copy of the batch."""

    class AdversarialTrainer(base):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            inputs = self._prepare_inputs(inputs)

            def loss_of(module, batch):
                return self.compute_loss(module, batch, num_items_in_batch=num_items_in_batch)

            delta = attack(model, inputs, space, method, epsilon, steps, loss_of)
            adversarial_loss = loss_on(model, inputs, space, delta, loss_of)
            if self.args.gradient_accumulation_steps > 1 and num_items_in_batch is None:
                adversarial_loss = adversarial_loss / self.args.gradient_accumulation_steps
            self.accelerator.backward(adversarial_loss)
            return loss

    return AdversarialTrainer


@torch.no_grad()
def _predict(model: nn.Module, inputs: dict) -> torch.Tensor:
    return model(**inputs).logits.argmax(-1)


def robust_accuracy(model: nn.Module, batches, space: str, method: str, epsilon: float, steps: int = 5) -> dict[str, float]:
    """Accuracy on clean inputs and under an FGSM / PGD attack of L2 size epsilon, over `batches`.

    `batches` yields dicts of model inputs with "labels": one class per example, or per position with -100 where
    nothing is scored (then the accuracy is over the scored positions: a tagger's words). The model is left in eval mode.
    """
    model.eval()

    def loss_of(module, batch):
        return module(**batch).loss

    clean = attacked = total = 0
    for inputs in batches:
        labels = inputs["labels"]
        scored = labels != IGNORE_INDEX  # a tagger's labels are per piece: only each word's first piece counts
        clean += int(((_predict(model, inputs) == labels) & scored).sum())
        delta = attack(model, inputs, space, "pgd" if method == "pgd" else "fgm", epsilon, steps, loss_of)
        attacked += int(((loss_on(model, inputs, space, delta, _predict) == labels) & scored).sum())
        total += int(scored.sum())
    return {
        "clean_accuracy": clean / max(total, 1),
        "attacked_accuracy": attacked / max(total, 1),
        "examples": total,
        "epsilon": epsilon,
        "method": method,
        "space": space,
    }


def evaluate_robustness(
    run,
    stage: str,
    split: str = "test",
    method: str = "fgm",
    epsilon: float = 0.05,
    steps: int = 5,
    max_examples: int = 200,
    batch_size: int = 16,
    space: str | None = None,
) -> dict[str, float]:
    """Clean vs attacked accuracy of one run's model (a stage) on its own split, attacked in one of the spaces its
    task names (`Task.attack_spaces`, the first by default): the word embeddings of a text classifier or a tagger
    (whose accuracy is over words), the processed pixels of an image classifier, either for a fusion classifier.

    Comparing stage "before" with "after", or a plain run with an adversarially trained one, shows
    whether training made the model harder to fool at this epsilon.
    """
    from core.errors import UserError
    from core.stages import open_stage, split_rows, task_of

    if epsilon <= 0:
        raise UserError(f"The attack's epsilon must be above 0 (got {epsilon}); try 0.05.")
    task = task_of(run)
    if not task.attack_spaces:
        checked = ", ".join(sorted({known.title.lower() for known in attackable_tasks()}))
        raise UserError(f"The robustness check covers {checked} runs, not {task.title.lower()}; pick one of those.")
    space = space or task.attack_spaces[0]
    if space not in task.attack_spaces:
        raise UserError(
            f"{task.title} runs are attacked in {' or '.join(SPACE_NAMES[name] for name in task.attack_spaces)}, "
            f"not in {SPACE_NAMES.get(space, space)}; pick one of those."
        )
    opened = open_stage(run, stage)
    rows, label_names = split_rows(run, split)
    frame = rows.head(max_examples)
    label_ids = {name: index for index, name in enumerate(label_names)}

    def batches():
        for start in range(0, len(frame), batch_size):
            yield task.attack_inputs(opened, frame.iloc[start : start + batch_size], label_ids)

    return robust_accuracy(opened.model, batches(), space, method, epsilon, steps)


def attackable_tasks() -> list:
    from core.tasks import TASKS

    return [task for task in TASKS.values() if task.attack_spaces]
