"""Image + text classification (fusion): a product photo and its title -> its category, say.

The dual encoder's two towers embed the image and the text; `core.image_text.fusion` fuses the two
embeddings (concatenated, or a learned gate) under a new linear classifier, trained with
cross-entropy by the Trainer's own loop. Each tower trains, freezes or takes LoRA adapters on its
own, at its own learning rate, as for alignment; the fusion head always trains.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.config import RunConfig
from core.image_text.data import FUSION
from core.metrics import classification_metrics, classification_report
from core.predictions import prediction_frame
from core.task_keys import IMAGE_TEXT_FUSION
from core.tasks.base import Prepared
from core.tasks.pair_task import PairTask


class ImageTextFusion(PairTask):
    key = IMAGE_TEXT_FUSION
    title = "Image + text classification (fusion)"
    primary_metric = "accuracy"
    loading_snippet = (
        "from transformers import AutoProcessor\n"
        "from core.image_text.fusion import FusionClassifier  # the workbench's module: dual encoder + fusion head\n"
        "model = FusionClassifier.from_pretrained(FOLDER)\n"
        "processor = AutoProcessor.from_pretrained(FOLDER)"
    )
    settings = ("towers", "fusion", "images")
    # Either input can be attacked: the image's pixels, or the text's word embeddings (through the text tower).
    attack_spaces = ("pixel_values", "embeddings")
    with_caption_groups = False

    pair_kind = "classification"
    dataset_kind = FUSION

    def build_model(self, encoder, config: RunConfig, label_names: list[str]):
        from core.image_text.fusion import FusionClassifier

        return FusionClassifier(encoder, label_names, config.fusion, config.dropout)

    def extras(self, config: RunConfig, splits) -> dict[str, Any]:
        return {"fusion": config.fusion}

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification_metrics(logits, labels)

    def report(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        return classification_report(logits, labels, prepared.label_names)

    def predictions(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        """One row per pair: image reference, text, gold, predicted, confidence, loss, correct, p(class)…"""
        raw = prepared.raw[split]
        frame = prediction_frame(raw["text"].tolist(), logits, labels, prepared.label_names)
        frame.insert(0, "image", raw["image"].tolist())
        return frame
