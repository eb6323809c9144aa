"""The seam every task plugs into: data -> model -> collate -> metrics -> predictions.

The trainer knows only this interface. Adding a task (image classification, token tagging,
image-text alignment) is one module implementing `Task` plus one line in `core/tasks/__init__.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from core.assets import Progress
from core.config import RunConfig


@dataclass
class Prepared:
    """Everything the trainer needs for one run, built by a task."""

    model: Any
    processor: Any  # tokenizer or image processor, saved beside the model
    datasets: dict[str, Any]  # split name -> encoded datasets.Dataset ("train", "validation", "test")
    raw: dict[str, pd.DataFrame]  # split name -> the rows as the user sees them
    collator: Callable | None
    label_names: list[str]
    head_names: tuple[str, ...]  # module names of the new head (always trained)
    extras: dict[str, Any] = field(default_factory=dict)


PREDICT_BATCH = 64


@dataclass
class StageModel:
    """One stage of a run, opened once (`core.stages.open_stage`): the model (eval mode, no parameter gradients),
    what prepares its inputs (`preprocessor`: a tokenizer, an image processor, or a pair model's both), its class
    names, the run's `max_length`, and `extras` a task keeps (a pair model's kind). `logits_of(stage, rows)` is the
    task's batched forward pass."""

    run: Any
    stage: str
    model: Any
    preprocessor: Any
    label_names: list[str]
    logits_of: Callable[[StageModel, pd.DataFrame], np.ndarray]
    max_length: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def predict(self, rows: pd.DataFrame, progress: Progress | None = None, batch_size: int = PREDICT_BATCH):
        """Logits for rows shaped as the task's `split_rows` gives them, in batches: (len(rows), classes), or for a
        tagger one (words, tags) array per sentence."""
        import torch

        parts: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                logits = self.logits_of(self, rows.iloc[start : start + batch_size])
                parts.extend(np.asarray(row, dtype=np.float32) for row in logits)
                done = min(len(rows), start + batch_size)
                if progress:
                    progress(done / max(1, len(rows)), f"Predicted {done} of {len(rows)} examples")
        if not parts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        # A tagger's rows are (words, tags) of each sentence's own length: those stay a list.
        return np.stack(parts) if len({part.shape for part in parts}) == 1 else parts


def config_labels(model) -> list[str]:
    """Class names in index order from a model's config (what the trainer saved as id2label)."""
    id2label = getattr(model.config, "id2label", None) or {}
    return [str(id2label.get(index, f"LABEL_{index}")) for index in range(model.config.num_labels)]


class Task(ABC):
    key: str
    title: str
    modality: str
    primary_metric: str  # the eval metric named on the Runs page and used for best checkpoints
    # The eval metrics this task logs (without the `eval_` prefix), the primary one first: what a sweep may optimise.
    objectives: tuple[str, ...] = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "loss")
    # Where adversarial training perturbs inputs ("embeddings" or "pixel_values"); None: not supported.
    adversarial_space: str | None = None
    # Whether the Trainer may drop dataset columns the model's forward does not name (False when a
    # transform builds the model's inputs from other columns).
    remove_unused_columns: bool = True
    # The Train page's setting groups this task uses beyond the common hyperparameters, in order:
    # "strategy" (what trains), "subtokens" (NER labelling), "images" (size, augmentation), "towers"
    # (per-tower train/freeze/LoRA and learning rates), "fusion" (how two embeddings combine).
    settings: tuple[str, ...] = ("strategy",)
    # The Train page's common hyperparameters this task's inputs give no meaning to; the page hides them.
    unused_knobs: tuple[str, ...] = ()
    # The optimum ONNX Runtime class that loads this task's int8 ONNX export (its AutoModel twin loads the
    # fp32 folder); None: the export writes no int8 variant.
    onnx_model_class: str | None = None
    # How the exported folder loads, for its model card (FOLDER stands for the folder's path).
    loading_snippet: str = ""
    # After training, named as what comes before is: the input its explanations attribute over (an input of
    # core.explain.methods: "tokens", "patches" or "pairs") and the view that inspects and explains its runs
    # ("text", "tags", "image" or "pairs": the Inspect page's view and the explain command's example reader).
    explains: str = "tokens"
    view: str = "text"
    # Where `core.adversarial.evaluate_robustness` may attack this task's runs, the first being the default
    # ("embeddings", "pixel_values"); empty: runs are not checked. Such a task implements `model_inputs`.
    attack_spaces: tuple[str, ...] = ()
    # Whether its training passes record each example's gold-label probability per epoch (`core.dynamics`: the data
    # map); a task whose batches carry `labels` (N,) and whose model returns `logits` (N, classes) can.
    records_dynamics: bool = False
    # Settings the Train page fills in when this task is picked, where the common defaults (an encoder's) do not suit it.
    suggested: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def datasets(self) -> list:
        """The datasets this task can train on (built-in first, then registered): `DatasetInfo`s."""

    @abstractmethod
    def preflight(self, config: RunConfig) -> None:
        """Cheap checks before queueing (model source, dataset name, limits); raise UserError."""

    @abstractmethod
    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        """Load data and the pretrained model with its new head, and encode the splits."""

    @abstractmethod
    def split_rows(self, run, split: str) -> tuple[pd.DataFrame, list[str]]:
        """After training: the run's exact split (its dataset, columns, seed and row limit) as the rows people see
        (text, tokens, image reference, ...) with the gold label, and the class names."""

    @abstractmethod
    def open_stage(self, run, stage: str) -> StageModel:
        """After training: one stage's model with its preprocessor and class names (`core.stages.open_stage`)."""

    @abstractmethod
    def stage_logits(self, stage: StageModel, rows: pd.DataFrame):
        """After training: the stage's logits for a batch of `split_rows` rows (what `StageModel.predict` batches)."""

    def model_inputs(self, stage: StageModel, rows: pd.DataFrame) -> dict:
        """After training: the model's inputs for a batch of `split_rows` rows, on its device: what `stage_logits`
        feeds it and what `core.adversarial.evaluate_robustness` attacks (in one of `attack_spaces`). A task whose
        runs are checked for robustness implements it."""
        raise NotImplementedError(f"{self.title} runs do not build model inputs from rows.")

    def attack_inputs(self, stage: StageModel, rows: pd.DataFrame, label_ids: dict[str, int]) -> dict:
        """After training: `model_inputs` plus the "labels" the robustness check scores, one class id per row; a
        task whose labels are per position (a tagger's) puts -100 where nothing is scored."""
        import torch

        inputs = self.model_inputs(stage, rows)
        inputs["labels"] = torch.tensor([label_ids[label] for label in rows["label"]], device=stage.model.device)
        return inputs

    def stage_predictions(self, stage: StageModel, rows: pd.DataFrame, progress: Progress) -> pd.DataFrame | None:
        """After training: the prediction frame of a stage on `split_rows` rows, for a task whose frame is not a
        classifier's (`core.predictions.prediction_frame` over `stage_logits`, what None asks for)."""
        return None

    @abstractmethod
    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Metrics for one evaluation, without the `eval_` prefix the Trainer adds."""

    @abstractmethod
    def report(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        """The held-out report (per-class precision/recall/F1/support and averages) as plain data."""

    @abstractmethod
    def predictions(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        """One row per example: the input as shown to people, gold, predicted, confidence, loss."""

    def trainable(self, prepared: Prepared, config: RunConfig, total_steps: int):
        """The model to train, with `requires_grad` set or adapters added; called after the before-model is saved."""
        from core.strategies import apply_strategy

        return apply_strategy(prepared.model, config, prepared.head_names, total_steps)

    def trainer_class(self, base: type, config: RunConfig, prepared: Prepared) -> type:
        """The Trainer class this task trains with; a task with its own loss or evaluation subclasses `base`."""
        return base

    def records_dynamics_of(self, config: RunConfig) -> bool:
        """Whether this run's training passes record the data map: `records_dynamics`, unless its settings rule it out."""
        return self.records_dynamics

    def finished_model(self, model):
        """The model to save at the end: LoRA adapters merged in, so the folder loads with from_pretrained."""
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    def chance_level(self, prepared: Prepared) -> float | None:
        """The primary metric a model that learned nothing reaches on validation; None where not judged.

        For accuracy that is the majority class's share: always answering it scores exactly that.
        """
        frame = prepared.raw.get("validation")
        if self.primary_metric != "accuracy" or frame is None or frame.empty or "label" not in frame:
            return None
        return float(frame["label"].value_counts(normalize=True).iloc[0])

    def headline(self, report: dict[str, Any]) -> dict[str, float | None]:
        """The few numbers of a held-out report that the Runs page compares before and after training."""
        return {
            "accuracy": report.get("accuracy"),
            "macro F1": report.get("macro avg", {}).get("f1-score"),
            "weighted F1": report.get("weighted avg", {}).get("f1-score"),
        }

    def class_report(self, report: dict[str, Any]) -> dict[str, Any]:
        """The per-class part of a held-out report (sklearn's dict shape), shown as a table."""
        return report
