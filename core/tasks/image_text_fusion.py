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

from core.assets import Progress
from core.config import RunConfig
from core.image_text.training import (
    PairCollator, check_pair_config, encode_pairs, load_pairs_and_processors, pair_processor_for, trainable_pair_model,
)
from core.metrics import classification_metrics, classification_report
from core.tasks.base import Prepared, Task


class ImageTextFusion(Task):
    key = "image_text_fusion"
    title = "Image + text classification (fusion)"
    modality = "image_text"
    primary_metric = "accuracy"
    loading_snippet = (
        "from transformers import AutoProcessor\n"
        "from core.image_text.fusion import FusionClassifier  # the workbench's module: dual encoder + fusion head\n"
        "model = FusionClassifier.from_pretrained(FOLDER)\n"
        "processor = AutoProcessor.from_pretrained(FOLDER)"
    )
    remove_unused_columns = False  # the transform reads image, text and label; none is a forward argument
    settings = ("towers", "fusion", "images")

    def datasets(self) -> list:
        from core.image_text.data import FUSION, list_pair_datasets

        return list_pair_datasets(FUSION)

    def preflight(self, config: RunConfig) -> None:
        from core.image_text.data import FUSION
        from core.image_text.models import dual_encoder_config, resolve_dual_encoder

        check_pair_config(config, FUSION)
        dual_encoder_config(resolve_dual_encoder(config.model))

    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        from core.image_text.data import FUSION
        from core.image_text.fusion import FusionClassifier
        from core.image_text.models import load_dual_encoder

        self.preflight(config)
        splits, source, image_processor, tokenizer = load_pairs_and_processors(config, FUSION, progress)
        model = FusionClassifier(load_dual_encoder(source, config.dropout), splits.label_names, config.fusion, config.dropout)
        label_ids = {name: index for index, name in enumerate(splits.label_names)}
        datasets = {split: encode_pairs(splits.split(split), image_processor, tokenizer, config, label_ids,
                                        augmenting=split == "train", with_caption_groups=False)
                    for split in ("train", "validation", "test")}
        return Prepared(
            model=model,
            processor=pair_processor_for(image_processor, tokenizer),
            datasets=datasets,
            raw={split: splits.frame(split) for split in ("train", "validation", "test")},
            collator=PairCollator(tokenizer),
            label_names=splits.label_names,
            head_names=(),
            extras={"data_source": splits.source, "model_source": source, "fusion": config.fusion,
                    "towers": f"vision {config.vision_tower}, text {config.text_tower}"},
        )

    def trainable(self, prepared: Prepared, config: RunConfig, total_steps: int):
        return trainable_pair_model(prepared.model, config)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification_metrics(logits, labels)

    def report(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        return classification_report(logits, labels, prepared.label_names)

    def predictions(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        """One row per pair: image reference, text, gold, predicted, confidence, loss, correct, p(class)…"""
        from core.tasks.text_classification import prediction_frame

        raw = prepared.raw[split]
        frame = prediction_frame(raw["text"].tolist(), logits, labels, prepared.label_names)
        frame.insert(0, "image", raw["image"].tolist())
        return frame

    def finished_model(self, model):
        from core.image_text.models import merge_adapters

        return merge_adapters(model)
