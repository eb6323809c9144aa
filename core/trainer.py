"""The trainer process: `python -m core worker RUN_ID`, started by the job manager.

Reads the run's config from its directory, asks the task for data and model, trains with
Hugging Face `Trainer`, and writes everything a page may want into the run store and the run
directory: metrics (step 0 before any update, during training, and final), the held-out report
before and after, predictions as Parquet, checkpoints with optimizer state, TensorBoard events,
and the final model folder. It reports its own ending (completed / cancelled / failed with a
sentence) and then starts the next queued job on its device.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from core.allocator import allocator_in_use, allocator_sentence
from core.checkpoints import ADAPTER_FOLDER, BEFORE_MODEL, FINAL_MODEL
from core.config import RunConfig
from core.distributed import ReadOnlyStore, is_main, launched_by_torchrun, trainer_pid, world_size
from core.errors import UserError
from core.jobs import CANCEL_FLAG, dispatch, process_start_ticks, stopped_ending, write_ending
from core.precision import mixed_precision
from core.scheduler_runs import is_scheduler_run, plain_device
from core.store import Run, RunStore


def say(message: str) -> None:
    """One line in the run's log (stdout is the log file), from the process that writes: rank 0 of several."""
    if is_main():
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_worker(run_id: str) -> int:
    """One trainer process: the whole run, or one rank of a run that torchrun started (`core.distributed`)."""
    store = RunStore() if is_main() else ReadOnlyStore(RunStore())
    run = store.get(run_id)
    if run is None:
        say(f"No run {run_id} in the store.")
        return 2
    flag = run.directory / CANCEL_FLAG
    signal.signal(signal.SIGTERM, lambda *_: flag.touch())
    outcome, error = "failed", None
    try:
        if is_scheduler_run(run):
            if not start_scheduled(store, run):
                return 0  # cancelled before its scheduler started it
        elif not launched_by_torchrun():  # under torchrun the store already knows the launcher, every rank's parent
            store.update(run_id, pid=os.getpid(), pid_ticks=process_start_ticks(os.getpid()))
        store.update(run_id, heartbeat_at=time.time())
        run = store.get(run_id)
        if is_scheduler_run(run):
            run = dataclasses.replace(run, device=plain_device(run))
        config = RunConfig.load(run.directory / "config.yaml")
        train(config, run, store)
        outcome, error = stopped_ending(run.directory) if flag.exists() else ("completed", None)
    except Exception as problem:  # noqa: BLE001 - every failure must end as a status with a reason
        outcome, error = ending_of(problem, run.directory)
    say(f"Run {outcome}." + (f" {error}" if error else ""))
    if is_main():
        record_ending(store, run_id, outcome, error)
    return 0 if outcome != "failed" else 1


SCHEDULED_START_SECONDS = 120.0  # how long the other ranks of a scheduler's run wait for rank 0 to start it


def start_scheduled(store, run: Run) -> bool:
    """A run another scheduler launched: rank 0 moves it from queued to running, and the other ranks wait until it has
    (none may train alone: the others would wait for it in a collective); False when it was cancelled meanwhile."""
    if is_main():
        store.transition(run.id, ("queued",), status="running", started_at=time.time())
    deadline = time.time() + SCHEDULED_START_SECONDS
    while (status := store.get(run.id).status) == "queued" and time.time() < deadline:
        time.sleep(0.5)
    return status == "running"


def ending_of(problem: Exception, directory: Path) -> tuple[str, str | None]:
    """How training that raised `problem` ends: a user's mistake and any other failure end failed with a sentence (the
    latter's traceback goes to the log), an evaluation abandoned for a cancel ends as the stop that was asked for."""
    from core.callbacks import CancelledRun

    if isinstance(problem, UserError):
        return "failed", str(problem)
    if isinstance(problem, CancelledRun):
        return stopped_ending(directory)
    traceback.print_exc()
    return "failed", describe_failure(problem)


def record_ending(store: RunStore, run_id: str, outcome: str, error: str | None) -> None:
    """Tell the store how the run ended, and start the next queued run.

    The ending goes into the run directory first: if the store cannot be written now, the next
    reconcile (once it can) records it from there. `finish` also overrides a "lost" verdict that a
    reader reached while this trainer was in fact alive (see `core.jobs.is_alive`).
    """
    try:
        write_ending(run_id, outcome, error, trainer_pid())
    except OSError as problem:
        say(f"Could not write the run's ending into its directory ({problem}).")
    try:
        store.finish(run_id, trainer_pid(), status=outcome, error=error, finished_at=time.time())
        dispatch(store)
    except UserError as problem:
        say(f"The run store could not record this ending: {problem}")


def describe_failure(problem: Exception) -> str:
    text = str(problem)
    if "out of memory" in text.lower():
        return (
            "The model did not fit in the device's memory. Lower the batch size and raise gradient accumulation to keep "
            "the same global batch, shorten the max length, or train LoRA adapters instead of every weight (strategy "
            "lora); bf16 precision halves the activations on a GPU that has it."
        )
    if (isinstance(problem, OSError) and problem.errno == errno.ENOSPC) or "no space left" in text.lower():
        return (
            "The disk is full: a save could not be written. Free some space (the run's folder is "
            f"{os.environ.get('WORKBENCH_WORKSPACE', 'workspace')}/runs), then resume: it continues from the last complete "
            "checkpoint."
        )
    return f"Training stopped with an error ({type(problem).__name__}: {text[:300]}). The log has the full traceback."


def train(config: RunConfig, run: Run, store: RunStore) -> None:
    from datasets import disable_progress_bars as disable_datasets_progress_bars
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed
    from transformers.utils import logging as transformers_logging

    from core.callbacks import AdaLoraBudget, AgreeToStop, CancelOnFlag, LogLines, LossHealth, Progress, StoreMetrics
    from core.checkpoints import publish_folder
    from core.strategies import trainable_parameters
    from core.tasks import TASKS

    directory = run.directory
    # The log is read by people on the Runs page: one line per logged step, no progress bars
    # (neither Trainer's nor datasets' "Map: 21%|██…" while encoding), and no transformers load
    # reports: the new head is missing from every checkpoint by design, and the strategy line
    # below says what trains. Errors (a size mismatch stops the load) still come through.
    transformers_logging.disable_progress_bar()
    disable_datasets_progress_bars()
    transformers_logging.set_verbosity_error()
    set_seed(config.seed)
    task = TASKS[config.task]
    say(f"Preparing {task.title}: model {config.model}, dataset {config.dataset}.")
    prepared = task.prepare(config, progress=lambda fraction, message: say(f"{message} ({fraction:.0%})"))
    if is_main() and (not run.resume or not (directory / BEFORE_MODEL).exists()):
        # The model before any update (pretrained encoder + fresh head): the baseline Inspect compares with.
        publish_folder(lambda folder: save_model_folder(prepared.model, prepared.processor, folder), directory / BEFORE_MODEL)
    model = task.trainable(prepared, config, total_steps(config, len(prepared.datasets["train"])))
    trainable, total = trainable_parameters(model)
    say(f"Strategy {config.strategy}: {trainable:,} of {total:,} parameters train ({trainable / total:.1%}).")
    if plain_device(run) == "cpu":
        say(allocator_sentence(allocator_in_use()))
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(directory / "tensorboard")
    arguments = training_arguments(config, run, directory, task)
    if config.best_checkpoint and not reloads_best(config):
        say("AdaLoRA prunes its ranks while it trains, so an earlier checkpoint cannot be loaded back: the last model is kept.")
    processes = world_size()
    # An evaluation cannot be abandoned by one rank alone: the others would wait for its share of the predictions.
    cancel = CancelOnFlag(directory / CANCEL_FLAG, abandon_evaluations=processes == 1)
    health = LossHealth(store, run.id, stop_on_divergence=config.stop_on_divergence, start=stored_start_loss(store, run.id))
    callbacks = [StoreMetrics(store, run.id), Progress(store, run.id), LogLines(), cancel, health]
    if config.strategy == "adalora":
        callbacks.append(AdaLoraBudget(store, run.id))
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    if processes > 1:
        say(f"Training with {processes} processes (data-parallel): each takes batches of {config.batch_size}.")
        callbacks.append(AgreeToStop())  # last: it reads what the callbacks before it decided
    trainer_type, train_dataset, collator = trainer_class(config, task, prepared), prepared.datasets["train"], prepared.collator
    records_dynamics = task.records_dynamics_of(config)
    if records_dynamics and processes > 1:
        say("The data map is not recorded: each process sees only its share of the training examples.")
    elif records_dynamics:
        from core.dynamics import (
            DYNAMICS_FILE,
            DynamicsRecorder,
            IndexedDataset,
            dynamics_callback,
            dynamics_trainer,
            indexed_collator,
        )

        recorder = DynamicsRecorder(directory / DYNAMICS_FILE)
        trainer_type = dynamics_trainer(trainer_type, recorder)
        train_dataset, collator = IndexedDataset(train_dataset), indexed_collator(collator)
        callbacks.append(dynamics_callback(recorder))
    trainer = trainer_type(
        model=model,
        args=arguments,
        train_dataset=train_dataset,
        eval_dataset=prepared.datasets["validation"],
        data_collator=collator,
        processing_class=prepared.processor,
        compute_metrics=lambda output: task.compute_metrics(output.predictions, output.label_ids),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    checkpoint = resume_point(directory) if run.resume else None
    if checkpoint:
        store.forget_metrics_after(run.id, checkpoint_step(checkpoint))
    else:
        store.forget_metrics_after(run.id, -1)
        say("Evaluating before the first update (step 0).")
        trainer.evaluate()
        evaluate_test(trainer, task, prepared, store, run, directory, stage="before")
    if is_main():
        write_json(directory / "summary.json", summary(config, prepared, trainable, total, arguments))
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if cancel.requested:
        say("Cancelled; the last checkpoint is kept for resume.")
        return
    say(f"Trained {result.global_step} steps at {result.metrics.get('train_samples_per_second', 0):.1f} samples/s.")
    final_eval = last_evaluation(trainer.state) if evaluated_at(trainer.state, trainer.state.global_step) else trainer.evaluate()
    health.judge_final(final_eval, task.primary_metric, task.chance_level(prepared))
    evaluate_test(trainer, task, prepared, store, run, directory, stage="after")
    save_predictions(trainer, task, prepared, directory, "validation")
    if not is_main():
        return  # the model folders and the summary are rank 0's to write
    if config.strategy == "lora" and hasattr(trainer.model, "peft_config"):
        # The adapters alone (megabytes, not the whole model), for loading onto the pretrained model with peft; saved
        # before they are merged into the model below. Not AdaLoRA's: its pruned ranks leave zero-sized tensors that
        # peft saves with a warning and cannot load back as they are.
        publish_folder(lambda folder: save_model_folder(trainer.model, prepared.processor, folder), directory / ADAPTER_FOLDER)
    publish_folder(
        lambda folder: save_model_folder(task.finished_model(trainer.model), prepared.processor, folder), directory / FINAL_MODEL
    )
    say(f"Saved the fine-tuned model to {directory / FINAL_MODEL}.")
    if health.warnings:
        written = json.loads((directory / "summary.json").read_text())
        write_json(directory / "summary.json", {**written, "health": health.warnings})
    store.update(run.id, step=trainer.state.global_step)


def resume_point(directory: Path) -> Path | None:
    """The newest complete checkpoint, after clearing torn ones; says in the log what resuming restores."""
    from core.checkpoints import complete_checkpoints, lost_state, remove_torn_checkpoints

    torn = remove_torn_checkpoints(directory)
    if torn:
        say(f"Removed {', '.join(torn)}: its writing was interrupted (a kill or a full disk), so it is incomplete.")
    complete = complete_checkpoints(directory)
    if not complete:
        say("No complete checkpoint to resume from: training starts again from the pretrained model.")
        return None
    checkpoint = complete[-1]
    lost = lost_state(checkpoint)
    if lost:
        say(
            f"Resuming from {checkpoint.name}; not restored, because its files are missing: {'; '.join(lost)}. "
            "Training goes on from its weights, with those parts starting fresh."
        )
    else:
        say(f"Resuming from {checkpoint.name} (optimizer, scheduler and data order restored).")
    return checkpoint


def stored_start_loss(store: RunStore, run_id: str) -> float | None:
    """The step-0 validation loss of an earlier attempt of this run (a resume does not evaluate step 0 again)."""
    metrics = store.metrics(run_id)
    start = metrics[(metrics["name"] == "eval_loss") & (metrics["step"] == 0)]["value"]
    return float(start.iloc[0]) if len(start) else None


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def last_evaluation(state) -> dict[str, float]:
    """The metrics of the newest validation evaluation in the Trainer's log history."""
    return next((entry for entry in reversed(state.log_history) if "eval_loss" in entry), {})


def trainer_class(config: RunConfig, task, prepared):
    """Hugging Face Trainer (lean steps, evaluating in order), as the task adapts it, plus adversarial steps when asked."""
    from transformers import Trainer

    from core.checkpoint_reload import renaming_reload
    from core.lean_steps import lean_trainer

    trainer = task.trainer_class(in_order_trainer(renaming_reload(lean_trainer(Trainer))), config, prepared)
    if config.adversarial == "none":
        return trainer
    if task.adversarial_space is None:
        raise UserError(f"Adversarial training is not available for {task.title}; set adversarial to none.")
    from core.adversarial import adversarial_trainer

    return adversarial_trainer(trainer, task.adversarial_space, config.adversarial, config.adv_epsilon, config.adv_steps)


def total_steps(config: RunConfig, train_rows: int) -> int:
    """Optimizer steps the run will take (Trainer's own arithmetic), for schedules that need it."""
    if config.max_steps:
        return config.max_steps
    per_epoch = max(1, math.ceil(train_rows / config.batch_size) // config.grad_accum)
    return math.ceil(config.epochs * per_epoch)


def in_order_trainer(base):
    """`Trainer` whose evaluation and prediction keep the dataset's row order.

    transformers 5 applies `train_sampling_strategy="group_by_length"` to the evaluation sampler too,
    so `predict()` would return rows shuffled by length, and the prediction frames (which pair each
    output with `prepared.raw[split]`, in dataset order) would give every text another row's label.
    """
    from torch.utils.data import SequentialSampler

    class InOrderTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Trainer assumes a model whose forward takes **kwargs normalises its loss by the batch's
            # token count (`num_items_in_batch`) and so skips dividing by the accumulation steps. The
            # heads here average over their batch: left as it was, gradient accumulation N made the
            # logged train loss (and the gradients) N times too large.
            self.model_accepts_loss_kwargs = False

        def _get_eval_sampler(self, eval_dataset):
            if eval_dataset is None or self.args.world_size > 1:
                return None  # what transformers does without length grouping
            return SequentialSampler(eval_dataset)

    return InOrderTrainer


def evaluated_at(state, step: int) -> bool:
    """Whether the validation split was already evaluated at `step` (the last step often is)."""
    return any(entry.get("step") == step and "eval_loss" in entry for entry in state.log_history)


def training_arguments(config: RunConfig, run: Run, directory: Path, task):
    from transformers import TrainingArguments

    bf16, fp16 = mixed_precision(config.precision, run.device)
    keep_best = config.best_checkpoint or config.early_stopping_patience > 0
    return TrainingArguments(
        output_dir=str(directory / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler if config.scheduler != "constant" else "constant_with_warmup",
        # transformers 5 reads a float below 1 as a fraction of the total steps.
        warmup_steps=float(config.warmup_ratio),
        weight_decay=config.weight_decay,
        gradient_accumulation_steps=config.grad_accum,
        seed=config.seed,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.keep_checkpoints or None,
        report_to=report_to(config, run, task.title),
        run_name=f"{run.name} ({run.id})",
        project=task.title,  # Trackio's project: runs of one task share their metrics
        trackio_static_space_id=False,  # never make a Hugging Face Space of the logs
        disable_tqdm=True,
        use_cpu=run.device == "cpu",
        bf16=bf16,
        fp16=fp16,
        # Only texts differ in length; for images grouping would just decode every image up front.
        train_sampling_strategy="group_by_length" if config.group_by_length and task.modality == "text" else "random",
        label_smoothing_factor=config.label_smoothing,
        max_grad_norm=config.max_grad_norm,  # 0 turns clipping off
        # Trainer would replace a NaN or infinite step loss by the running mean: a curve that lies, and
        # a divergence nobody sees. The loss-health callback turns a non-finite loss into a sentence.
        logging_nan_inf_filter=False,
        # Early stopping needs the best checkpoint to go back to. Without either, no metric is named:
        # Trainer would otherwise keep the best checkpoint too, not only the latest ones.
        load_best_model_at_end=keep_best and reloads_best(config),
        metric_for_best_model=f"eval_{task.primary_metric}" if keep_best else None,
        greater_is_better=True if keep_best else None,
        remove_unused_columns=task.remove_unused_columns,
        **device_settings(config, run.device),
    )


def device_settings(config: RunConfig, device: str) -> dict[str, Any]:
    """The Trainer settings that differ between a GPU and the CPU.

    On a GPU: TF32 matmuls (Ampere and later; exact enough for fine-tuning, several times faster than fp32), the
    fused AdamW kernel (one launch for every parameter instead of several each), pinned host memory and two loader
    processes (the next batches are collated and copied while the GPU computes), and evaluation batches four times
    the training batch (no gradients or optimizer state to hold). On the CPU, loader processes would only take cores
    from the model's own threads. `compile` (opt-in: the first steps compile for a minute) runs torch.compile.
    """
    if device != "cuda":
        return {"per_device_eval_batch_size": config.batch_size * 2, "dataloader_num_workers": 0, "torch_compile": config.compile}
    return {
        "per_device_eval_batch_size": config.batch_size * 4,
        "tf32": tf32_supported(),
        "optim": "adamw_torch_fused",
        "dataloader_pin_memory": True,
        "dataloader_num_workers": 2,
        "torch_compile": config.compile,
    }


def tf32_supported() -> bool:
    """TF32 matmuls exist from Ampere (compute capability 8) on."""
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def report_to(config: RunConfig, run: Run, experiment: str) -> list[str]:
    """TensorBoard, plus the trackers the config names, each pointed at a local store unless the user
    chose otherwise (an MLflow tracking URI, WANDB_MODE=online): nothing leaves the machine by default.
    `experiment` (the task's title) groups runs whose metrics compare: MLflow's experiment, W&B's project.
    The integrations read these variables when training starts; the worker process trains one run."""
    from core.workspace import workspace_root

    if "mlflow" in config.trackers:
        os.environ["MLFLOW_TRACKING_URI"] = config.mlflow_tracking_uri or (workspace_root() / "mlruns").as_uri()
        if not config.mlflow_tracking_uri:
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless allowed; plain files need
            # no database packages (mlflow-skinny has no SQLAlchemy) and live in the workspace like everything else.
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment
    if "trackio" in config.trackers:
        os.environ["TRACKIO_DIR"] = str(workspace_root() / "trackio")
    if "wandb" in config.trackers:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ["WANDB_DIR"] = str(run.directory)
        os.environ["WANDB_PROJECT"] = experiment
    return ["tensorboard", *config.trackers]


def reloads_best(config: RunConfig) -> bool:
    """Whether the best checkpoint can be loaded back at the end.

    AdaLoRA prunes its adapters' ranks as it trains, so an earlier checkpoint's adapters no longer fit
    the final model (peft refuses the shapes): its runs keep the last model, and say so.
    """
    return config.strategy != "adalora"


def evaluate_test(trainer, task, prepared, store: RunStore, run: Run, directory: Path, stage: str) -> None:
    """Test-split report and predictions; 'before' at step 0, 'after' once training ends."""
    output = trainer.predict(prepared.datasets["test"])
    step = trainer.state.global_step
    scores = {
        k: v
        for k, v in output.metrics.items()
        if isinstance(v, (int, float)) and k.startswith("test_") and "runtime" not in k and "per_second" not in k
    }
    store.log_metrics(run.id, step, scores)
    say(f"Test {stage} training: {task.primary_metric} {output.metrics.get(f'test_{task.primary_metric}', float('nan')):.3f}.")
    if not is_main():
        return  # every rank predicts (each its share), rank 0 writes
    report = task.report(output.predictions, output.label_ids, prepared)
    write_json(directory / "reports" / f"test_{stage}.json", {"step": step, "report": report})
    frame = task.predictions(output.predictions, output.label_ids, prepared, "test")
    path = directory / "predictions" / f"test_{stage}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)


def save_predictions(trainer, task, prepared, directory: Path, split: str) -> None:
    output = trainer.predict(prepared.datasets[split])
    if not is_main():
        return
    frame = task.predictions(output.predictions, output.label_ids, prepared, split)
    frame.to_parquet(directory / "predictions" / f"{split}_after.parquet")


def save_model_folder(model, processor, target: Path) -> None:
    """A plain transformers folder (LoRA merged in by the task), loadable with from_pretrained or pipeline."""
    model.save_pretrained(target)
    processor.save_pretrained(target)


def summary(config: RunConfig, prepared, trainable: int, total: int, arguments) -> dict[str, Any]:
    return {
        "label_names": prepared.label_names,
        "rows": {split: len(frame) for split, frame in prepared.raw.items()},
        "trainable_parameters": trainable,
        "total_parameters": total,
        "precision": "bf16" if arguments.bf16 else "fp16" if arguments.fp16 else "fp32",
        "attention": attention_implementation(prepared.model),
        "tf32": bool(getattr(arguments, "tf32", False)),
        "optimizer": str(getattr(arguments.optim, "value", arguments.optim)),
        "compiled": bool(arguments.torch_compile),
        "allocator": allocator_in_use(),
        "processes": arguments.world_size,
        # Examples per optimizer update: every process's batch, times the steps accumulated.
        "global_batch": arguments.per_device_train_batch_size * arguments.world_size * arguments.gradient_accumulation_steps,
        **{key: str(value) for key, value in prepared.extras.items()},
    }


def attention_implementation(model) -> str:
    """How the model computes attention ("sdpa": PyTorch's fused kernels, transformers' default where the
    architecture has them; "eager"), or "none" for a model without attention (a CNN)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "none")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
