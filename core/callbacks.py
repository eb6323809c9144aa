"""Trainer callbacks: the only bridge from Hugging Face's training loop to the run store.

They add no per-step device synchronisation: metrics arrive through `on_log`, which the Trainer
calls only every `logging_steps` with values it has already moved to the CPU; progress is
written at most once a second; the cancel check is a file-existence test.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from core.store import RunStore


class StoreMetrics(TrainerCallback):
    """Copy every logged value (loss, learning rate, eval metrics) into the run store."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {key: value for key, value in (logs or {}).items() if isinstance(value, (int, float))}
        # The end-of-training summary's "train_loss" is the mean over all steps, not a point on the curve.
        if "train_loss" in numbers:
            numbers["train_loss_mean"] = numbers.pop("train_loss")
        # Trainer names the per-step train loss plain "loss"; say which split it is, like the eval metrics.
        if "loss" in numbers:
            numbers["train_loss"] = numbers.pop("loss")
        for noise in ("total_flos", "eval_model_preparation_time"):
            numbers.pop(noise, None)
        if numbers:
            self.store.log_metrics(self.run_id, state.global_step, numbers)


class Progress(TrainerCallback):
    """Write step / max steps to the store, throttled, so the Runs page can show progress and ETA."""

    def __init__(self, store: RunStore, run_id: str, every_seconds: float = 1.0):
        self.store, self.run_id, self.every = store, run_id, every_seconds
        self.last_write = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        now = time.time()
        self.store.update(
            self.run_id, step=state.global_step, max_steps=state.max_steps,
            train_started_at=now, train_start_step=state.global_step, progress_at=now,
        )
        self.last_write = now

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if now - self.last_write >= self.every or state.global_step >= state.max_steps:
            self.store.update(self.run_id, step=state.global_step, progress_at=now)
            self.last_write = now


class CancelledRun(Exception):
    """Raised to abandon work that has no step boundary to stop at (an evaluation)."""


class CancelOnFlag(TrainerCallback):
    """Stop politely when the cancel flag file appears: save a checkpoint, then end training."""

    def __init__(self, flag: Path):
        self.flag = flag

    @property
    def requested(self) -> bool:
        return self.flag.exists()

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
            # An evaluation due at this step would be abandoned by on_prediction_step before the save.
            control.should_evaluate = False

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.requested:
            raise CancelledRun()


class LogLines(TrainerCallback):
    """A readable line in the run's log for each logged step (the log tail on the Runs page)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        shown = ", ".join(
            f"{key} {value:.4g}" for key, value in (logs or {}).items() if isinstance(value, (int, float)) and key != "total_flos"
        )
        print(f"[{time.strftime('%H:%M:%S')}] step {state.global_step}/{state.max_steps}: {shown}", flush=True)


class AdaLoraBudget(TrainerCallback):
    """Drive AdaLoRA's rank reallocation each optimizer step and record its budget schedule.

    peft's AdaLoRA only moves its budget when `update_and_allocate` is called after the backward
    pass and before the gradients are zeroed; Trainer's `on_optimizer_step` is that moment.
    """

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)

    def on_log(self, args, state, control, model=None, **kwargs):
        budget, _ = model.base_model.rankallocator.budget_schedule(state.global_step)
        self.store.log_metrics(self.run_id, state.global_step, {"adalora_rank_budget": float(budget)})
