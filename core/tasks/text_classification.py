"""Text classification: a linear classifier on a BERT-family encoder ([CLS] pooled) or a GPT-style decoder (its
last token pooled, as transformers' *ForSequenceClassification do; the end-of-text token pads)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.assets import Progress, no_progress
from core.catalog import BUILTIN_MODELS
from core.config import RunConfig
from core.errors import UserError
from core.long_texts import DOCUMENT, LONG_TEXTS, LongTexts, long_text_logits, padded, window_pooling_trainer
from core.metrics import classification_metrics, classification_report
from core.models import (
    check_max_length,
    head_names,
    load_model_config,
    load_with_new_head,
    pad_with_end_of_text,
    resolve_model,
    with_new_head,
)
from core.predictions import prediction_frame
from core.task_keys import TEXT_CLASSIFICATION
from core.tasks.base import Prepared, StageModel, Task, config_labels


class TextClassification(Task):
    key = TEXT_CLASSIFICATION
    title = "Text classification"
    modality = "text"
    attack_spaces = ("embeddings",)
    settings = ("strategy", "long_texts")
    primary_metric = "accuracy"
    records_dynamics = True
    onnx_model_class = "ORTModelForSequenceClassification"
    loading_snippet = 'from transformers import pipeline\nclassify = pipeline("text-classification", model=FOLDER)'
    adversarial_space = "embeddings"

    def datasets(self) -> list:
        from core.data import list_datasets

        return [info for info in list_datasets() if info.task == self.key]

    def preflight(self, config: RunConfig) -> None:
        from core.data import BUILTIN_DATASETS

        check_names_and_limits(config)
        if config.dataset not in BUILTIN_DATASETS:  # built-ins are known good, and may need a download first
            load_text_splits(config)  # every data check the trainer makes, so a bad file is refused before it is queued

    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        check_names_and_limits(config)
        splits = load_text_splits(config, progress)  # the preflight's data checks, run once more on the data trained on
        source = resolve_model(config.model, progress)
        tokenizer, model = load_model(source, splits.label_names, config.dropout)
        long_texts = LongTexts.of(config)
        # The tokenizer keeps the side it cuts and is saved with every stage: Inspect, the explanations and the
        # exported pipeline then cut a long text where training did (head+tail and windows are cut by core.long_texts).
        tokenizer.truncation_side = long_texts.truncation_side()
        label_ids = {name: index for index, name in enumerate(splits.label_names)}
        raw = {"train": splits.train, "validation": splits.validation, "test": splits.test}
        datasets = {split: encode(frame, tokenizer, label_ids, long_texts) for split, frame in raw.items()}
        from transformers import DataCollatorWithPadding

        return Prepared(
            model=model,
            processor=tokenizer,
            datasets=datasets,
            raw=raw,
            collator=DataCollatorWithPadding(tokenizer),
            label_names=splits.label_names,
            head_names=head_names(model),
            extras={"data_source": splits.source, "model_source": source, **window_note(long_texts, raw, datasets)},
        )

    def records_dynamics_of(self, config: RunConfig) -> bool:
        """The data map shows one row per training text, and a window run trains on windows: it records none."""
        return not LongTexts.of(config).windowed

    def trainer_class(self, base: type, config: RunConfig, prepared: Prepared) -> type:
        long_texts = LongTexts.of(config)
        return window_pooling_trainer(base, long_texts.pooling) if long_texts.windowed else base

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification_metrics(logits, labels)

    def report(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        return classification_report(logits, labels, prepared.label_names)

    def predictions(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        return prediction_frame(prepared.raw[split]["text"].tolist(), logits, labels, prepared.label_names)

    # -- after training ------------------------------------------------------------------------------

    def split_rows(self, run, split: str) -> tuple[pd.DataFrame, list[str]]:
        from core.run_files import run_config

        splits = load_text_splits(run_config(run))
        return splits.split(split), splits.label_names

    def open_stage(self, run, stage: str) -> StageModel:
        from core.checkpoints import load_stage_model
        from core.run_files import run_config

        model, tokenizer = load_stage_model(run, stage, "AutoModelForSequenceClassification")
        config = run_config(run)
        return StageModel(
            run,
            stage,
            model,
            tokenizer,
            config_labels(model),
            self.stage_logits,
            max_length=config.max_length,
            extras={LONG_TEXTS: LongTexts.of(config)},
        )

    def model_inputs(self, stage: StageModel, rows: pd.DataFrame) -> dict:
        """The inputs of the rows' texts as the run reads them: one row per text, or for a window run one per window."""
        return self.inputs_of(stage, rows)[0]

    def stage_logits(self, stage: StageModel, rows: pd.DataFrame):
        """One row of logits per text; a window run's pooled over each text's windows."""
        return long_text_logits(stage.model, stage.preprocessor, rows["text"].astype(str).tolist(), long_texts_of(stage))

    def attack_inputs(self, stage: StageModel, rows: pd.DataFrame, label_ids: dict[str, int]) -> dict:
        """`model_inputs` with each row's class; a window run's windows are attacked each with its text's class, so its
        robust accuracy is over windows."""
        import torch

        inputs, documents = self.inputs_of(stage, rows)
        classes = [label_ids[label] for label in rows["label"]]
        inputs["labels"] = torch.tensor([classes[document] for document in documents], device=stage.model.device)
        return inputs

    def inputs_of(self, stage: StageModel, rows: pd.DataFrame) -> tuple[dict, list[int]]:
        """(padded inputs on the model's device, each input row's position among `rows`)."""
        features, documents = long_texts_of(stage).encode(stage.preprocessor, rows["text"].astype(str).tolist())
        return padded(stage.preprocessor, features, slice(None), stage.model.device), documents


def long_texts_of(stage: StageModel) -> LongTexts:
    """The stage's run's way of reading long texts; a stage opened without one cuts as its tokenizer does."""
    return stage.extras.get(LONG_TEXTS) or LongTexts(max_length=stage.max_length)


def window_note(long_texts: LongTexts, raw: dict[str, pd.DataFrame], datasets: dict) -> dict[str, str]:
    """For a window run's summary: how many windows each split's texts make."""
    if not long_texts.windowed:
        return {}
    counts = ", ".join(f"{split} {len(datasets[split]):,} from {len(frame):,}" for split, frame in raw.items())
    return {
        "windows": f"{counts} texts ({long_texts.describe()}, overlap {long_texts.overlap}); no data map: "
        "the training examples are windows"
    }


def check_names_and_limits(config: RunConfig) -> None:
    """The checks that need no data: the dataset exists, the max length fits the model. A built-in model that is
    not made yet (SmolLM2 downloads and converts for a minute or two) is checked by the trainer, which makes it
    with its progress in the run's log, rather than while the page waits."""
    check_dataset_exists(config.dataset)
    builtin = BUILTIN_MODELS.get(config.model)
    if builtin is None or builtin.is_ready():
        check_max_length(resolve_model(config.model), config.max_length)


def load_text_splits(config: RunConfig, progress: Progress = no_progress):
    """The run's checked splits: the one loader both the submit-time checks and the trainer use."""
    from core.data import load_splits

    return load_splits(
        config.dataset,
        text_column=config.text_column or None,
        label_column=config.label_column or None,
        seed=config.seed,
        max_rows=config.max_rows or None,
        progress=progress,
    )


def check_dataset_exists(dataset: str) -> None:
    """Catch a mistyped dataset name first, with the list to choose from."""
    from pathlib import Path

    known = [info.key for info in TextClassification().datasets()]
    if dataset not in known and not Path(dataset).expanduser().is_file():
        raise UserError(
            f"There is no dataset '{dataset}'. Choose one of {', '.join(known)}, or give the path of a "
            "CSV/TSV/JSONL/Parquet file."
        )


def load_model(source: str, label_names: list[str], dropout: float):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_config = with_new_head(load_model_config(source), label_names, dropout)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    pad_with_end_of_text(tokenizer, model_config)
    return tokenizer, load_with_new_head(AutoModelForSequenceClassification, source, model_config, "text classification")


def encode(frame: pd.DataFrame, tokenizer, label_ids: dict[str, int], long_texts: LongTexts):
    """The split's texts as the model's rows (one per window for a window run, with its text's `DOCUMENT` position),
    each with its text's class."""
    from datasets import Dataset

    table = Dataset.from_dict({"text": frame["text"].tolist(), "labels": [label_ids[label] for label in frame["label"]]})

    def encode_batch(batch: dict, positions: list[int]) -> dict:
        features, documents = long_texts.encode(tokenizer, batch["text"])
        features["labels"] = [batch["labels"][document] for document in documents]
        if long_texts.windowed:
            features[DOCUMENT] = [positions[document] for document in documents]
        return features

    # A window run's batch has more rows out than in, so every input column goes.
    return table.map(encode_batch, batched=True, with_indices=True, remove_columns=["text", "labels"])
