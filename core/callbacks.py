"""Trainer callbacks: the only bridge from Hugging Face's training loop to the run store.

They add no per-step device synchronisation: metrics arrive through `on_log`, which the Trainer
calls only every `logging_steps` with values it has already moved to the CPU; progress is
written at most once a second; the cancel check is a file-existence test.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from transformers import TrainerCallback

from core.distributed import is_main
from core.errors import UserError
from core.store import RunStore


class StoreMetrics(TrainerCallback):
    """Copy every logged value (loss, learning rate, eval metrics) into the run store."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {key: value for key, value in (logs or {}).items() if isinstance(value, (int, float))}
        # The end-of-training summary's "train_loss" is the mean over all steps, not a point on the curve.
        if "train_loss" in numbers:
            numbers["train_loss_mean"] = numbers.pop("train_loss")
            if state.global_step == self.start_step:
                # Resumed from the final checkpoint: no step ran, and Trainer reports a mean of 0.0.
                numbers.pop("train_loss_mean")
        # Trainer names the per-step train loss plain "loss"; say which split it is, like the eval metrics.
        if "loss" in numbers:
            numbers["train_loss"] = numbers.pop("loss")
        for noise in ("total_flos", "eval_model_preparation_time"):
            numbers.pop(noise, None)
        if numbers:
            self.store.log_metrics(self.run_id, state.global_step, numbers)


class Progress(TrainerCallback):
    """Write step / max steps to the store, throttled, so the Runs page can show progress and ETA.

    It is also the trainer's heartbeat: evaluation batches and saves count as signs of life too,
    so a long evaluation is not mistaken for a stall (`core.jobs.stall_of`).
    """

    def __init__(self, store: RunStore, run_id: str, every_seconds: float = 1.0):
        self.store, self.run_id, self.every = store, run_id, every_seconds
        self.last_write = 0.0
        self.last_beat = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        now = time.time()
        self.store.update(
            self.run_id,
            step=state.global_step,
            max_steps=state.max_steps,
            train_started_at=now,
            train_start_step=state.global_step,
            progress_at=now,
            heartbeat_at=now,
        )
        self.last_write = self.last_beat = now

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if now - self.last_write >= self.every or state.global_step >= state.max_steps:
            self.store.update(self.run_id, step=state.global_step, progress_at=now, heartbeat_at=now)
            self.last_write = self.last_beat = now

    def on_prediction_step(self, args, state, control, **kwargs):
        self._beat()

    def on_save(self, args, state, control, **kwargs):
        self._beat()

    def _beat(self) -> None:
        now = time.time()
        if now - self.last_beat >= self.every:
            self.store.update(self.run_id, heartbeat_at=now)
            self.last_beat = now


class LossHealth(TrainerCallback):
    """Say in words when training goes wrong instead of letting a run end "completed" on nonsense.

    - A loss that is NaN or infinite stops the run at once (every later step would be NaN too).
    - Divergence: the training loss above `FACTOR` times where it started (and at least one nat
      above it) for `PATIENCE` logs in a row. It warns, or stops the run when asked to.
    - Chance level after training (`judge_final`): the validation metric no better than a model
      that learned nothing.
    Warnings go to the run's `warning` in the store (the Runs page shows it) and to its summary.
    """

    FACTOR = 2.0
    MARGIN = 1.0
    PATIENCE = 3
    CHANCE_TOLERANCE = 0.02

    def __init__(self, store: RunStore, run_id: str, stop_on_divergence: bool = False, start: float | None = None):
        self.store, self.run_id, self.stop_on_divergence = store, run_id, stop_on_divergence
        # Where the loss started: the step-0 validation loss (seen in on_log, or passed in on resume).
        # The first logged training loss is no reference: it already averages `logging_steps` updates,
        # which at a far too high learning rate have blown up.
        self.start = start
        self.warnings: list[str] = []
        self.above: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key, what in (("loss", "training loss"), ("eval_loss", "validation loss")):
            value = logs.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise UserError(
                    f"The {what} became {'NaN' if math.isnan(value) else 'infinite'} at step {state.global_step}; "
                    "lower the learning rate or turn gradient clipping on (max_grad_norm 1.0), then start a new run "
                    "(resuming would repeat the same steps)."
                )
        if state.global_step == 0 and isinstance(logs.get("eval_loss"), (int, float)):
            self.start = float(logs["eval_loss"])
        if isinstance(logs.get("loss"), (int, float)):
            self._watch_divergence(state, float(logs["loss"]))

    def _watch_divergence(self, state, loss: float) -> None:
        if self.start is None:
            self.start = loss
        start = self.start
        if loss <= max(self.FACTOR * start, start + self.MARGIN):
            self.above = []
            return
        self.above.append((state.global_step, loss))
        if len(self.above) != self.PATIENCE:
            return
        sentence = (
            f"The training loss diverged: it started at {start:.3g} and stayed above {self.FACTOR:g}× that for "
            f"{self.PATIENCE} logs (steps {self.above[0][0]}–{self.above[-1][0]}, last {loss:.3g}). Lower the learning "
            "rate (fine-tuning wants about 2e-5 to 5e-5) or turn gradient clipping on (max_grad_norm 1.0)."
        )
        if self.stop_on_divergence:
            raise UserError(sentence + " The run was stopped because 'stop when the loss diverges' is on.")
        self.warn(sentence)

    def judge_final(self, metrics: dict, primary: str, chance: float | None) -> None:
        value = metrics.get(f"eval_{primary}")
        if chance is None or not isinstance(value, (int, float)) or value > chance + self.CHANCE_TOLERANCE:
            return
        self.warn(
            f"After training, the validation {primary} is {value:.3f}, no better than chance ({chance:.3f}, always "
            "answering the most common class): the model learned nothing useful. Check the loss curve and the labels, "
            "and try a lower learning rate or more steps."
        )

    def warn(self, sentence: str) -> None:
        self.warnings.append(sentence)
        self.store.update(self.run_id, warning=" ".join(self.warnings))
        if is_main():
            print(f"[{time.strftime('%H:%M:%S')}] Warning: {sentence}", flush=True)


class CancelledRun(Exception):
    """Raised to abandon work that has no step boundary to stop at (an evaluation)."""


class CancelOnFlag(TrainerCallback):
    """Stop politely when the cancel flag file appears: save a checkpoint, then end training."""

    def __init__(self, flag: Path, abandon_evaluations: bool = True):
        self.flag = flag
        self.abandon_evaluations = abandon_evaluations

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
        if self.abandon_evaluations and self.requested:
            raise CancelledRun()


class LogLines(TrainerCallback):
    """A readable line in the run's log for each logged step (the log tail on the Runs page)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return  # a run of several processes logs each line once
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


class AgreeToStop(TrainerCallback):
    """At each step's end, every rank stops (and saves) when any rank wants to: the callbacks before this one decide on
    their own rank (a cancel flag seen a moment later, a warning only rank 0 judges)."""

    def on_step_end(self, args, state, control, **kwargs):
        import torch
        import torch.distributed as dist

        wanted = torch.tensor([int(control.should_training_stop), int(control.should_save)], dtype=torch.int32)
        dist.all_reduce(wanted, op=dist.ReduceOp.MAX)
        control.should_training_stop, control.should_save = bool(wanted[0]), bool(wanted[1])
        if control.should_training_stop:
            control.should_evaluate = False
