"""Image classification: a fresh linear head on a pretrained image model (MobileNetV2, ViT, …).

Images stay in their Arrow file; each batch is decoded, augmented (training split only) and
preprocessed on the fly by a `datasets` transform, so nothing is held in memory as tensors and
every epoch sees new augmentations. Preprocessing is the model's own image processor
(resize, crop, normalise); `image_size` in the config shrinks it for speed on convolutional models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.assets import Progress
from core.config import RunConfig
from core.errors import UserError
from core.images.augment import AugmentParams, augment, params_from_config
from core.images.processing import load_processor, steady_batchnorm
from core.metrics import classification_metrics, classification_report
from core.models import head_names, load_model_config, load_with_new_head, resolve_model, with_new_head
from core.predictions import prediction_frame
from core.task_keys import IMAGE_CLASSIFICATION
from core.tasks.base import Prepared, StageModel, Task, config_labels

# Dropout knobs have different names across architectures; set whichever the config has.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


class ImageClassification(Task):
    key = IMAGE_CLASSIFICATION
    title = "Image classification"
    modality = "image"
    explains = "patches"
    view = "image"
    primary_metric = "accuracy"
    records_dynamics = True
    onnx_model_class = "ORTModelForImageClassification"
    loading_snippet = 'from transformers import pipeline\nclassify = pipeline("image-classification", model=FOLDER)'
    adversarial_space = "pixel_values"  # core.adversarial perturbs the processed pixels
    attack_spaces = ("pixel_values",)
    settings = ("strategy", "images")
    unused_knobs = ("max_length", "group_by_length")  # no text to cut or to batch by length

    def datasets(self) -> list:
        from core.images.datasets import list_image_datasets

        return list_image_datasets()

    def preflight(self, config: RunConfig) -> None:
        from core.images.datasets import BUILTIN_IMAGE_DATASETS, is_image_dataset, list_image_datasets, load_image_splits

        if not is_image_dataset(config.dataset):
            known = ", ".join(info.key for info in list_image_datasets())
            raise UserError(
                f"There is no image dataset '{config.dataset}'. Choose one of {known}, or upload a zip of images on "
                "the Data page."
            )
        problems = params_from_config(config).problems()
        if problems:
            raise UserError(" ".join(problems))
        model_config = image_model_config(resolve_model(config.model))
        check_image_size(model_config, image_size_of(config))
        if config.dataset not in BUILTIN_IMAGE_DATASETS:  # built-ins are known good, and may need building first
            # The split checks (classes, row limit) read only the stored labels: cheap. The images were all
            # decoded when the set was stored, so no image is opened here.
            load_image_splits(config.dataset, seed=config.seed, max_rows=config.max_rows or None)

    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        from core.images.datasets import load_image_splits

        self.preflight(config)
        splits = load_image_splits(config.dataset, seed=config.seed, max_rows=config.max_rows or None, progress=progress)
        source = resolve_model(config.model, progress)
        processor = load_processor(source, image_size_of(config))
        model = load_model(source, splits.label_names, config.dropout)
        label_ids = {name: index for index, name in enumerate(splits.label_names)}
        params = params_from_config(config)
        datasets = {
            split: encode(splits.split(split), processor, label_ids, params if split == "train" else None, config.seed)
            for split in ("train", "validation", "test")
        }
        return Prepared(
            model=model,
            processor=processor,
            datasets=datasets,
            raw={split: splits.frame(split) for split in ("train", "validation", "test")},
            collator=collate,
            label_names=splits.label_names,
            head_names=head_names(model),
            extras={
                "data_source": splits.source,
                "model_source": source,
                "image_size": processed_size(processor),
                "augmentation": params.to_dict() if params.active else "none",
            },
        )

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification_metrics(logits, labels)

    def report(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        return classification_report(logits, labels, prepared.label_names)

    def predictions(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        """One row per image: image (a reference like 'digits#12' for core.images.open_image), gold, predicted, …"""
        references = prepared.raw[split]["image"].tolist()
        return prediction_frame(references, logits, labels, prepared.label_names).rename(columns={"text": "image"})

    # -- after training ------------------------------------------------------------------------------

    def split_rows(self, run, split: str) -> tuple[pd.DataFrame, list[str]]:
        from core.images.datasets import load_image_splits
        from core.run_files import run_config

        config = run_config(run)
        splits = load_image_splits(config.dataset, seed=config.seed, max_rows=config.max_rows or None)
        return splits.frame(split), splits.label_names

    def open_stage(self, run, stage: str) -> StageModel:
        """The stage's classifier (a LoRA checkpoint merged onto the before-model) with the processor sized as the run
        trained: a checkpoint's saved processor, else the before-model's, at the run's image size either way."""
        from transformers import AutoModelForImageClassification

        from core.checkpoints import BEFORE_MODEL, stage_folder
        from core.models import SAFE_LOADING
        from core.run_files import run_config

        folder = stage_folder(run, stage)
        processor_folder = folder if (folder / "preprocessor_config.json").is_file() else run.directory / BEFORE_MODEL
        processor = load_processor(str(processor_folder), image_size_of(run_config(run)))
        if (folder / "adapter_config.json").exists():
            from peft import PeftModel

            base = AutoModelForImageClassification.from_pretrained(run.directory / BEFORE_MODEL, **SAFE_LOADING)
            model = PeftModel.from_pretrained(base, folder).merge_and_unload()
        else:
            model = AutoModelForImageClassification.from_pretrained(folder, **SAFE_LOADING)
        return StageModel(run, stage, model, processor, config_labels(model), self.stage_logits)

    def model_inputs(self, stage: StageModel, rows: pd.DataFrame) -> dict:
        from core.images import open_image

        pictures = [open_image(reference).convert("RGB") for reference in rows["image"]]
        return {"pixel_values": stage.preprocessor(images=pictures, return_tensors="pt")["pixel_values"].to(stage.model.device)}

    def stage_logits(self, stage: StageModel, rows: pd.DataFrame):
        return stage.model(**self.model_inputs(stage, rows)).logits.float().cpu().numpy()


def image_size_of(config: RunConfig) -> int:
    """The image size the config asks for; 0 (or no such field yet) means the processor's own."""
    return int(getattr(config, "image_size", 0) or 0)


def image_model_config(source: str):
    """The model's config, refusing models that are not image classifiers (a text model, say)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    model_config = load_model_config(source)
    if model_config.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise UserError(
            f"The model at {source} is a {model_config.model_type} model, which cannot classify images; choose an image "
            "model such as mobilenet-v2, a hub id like google/vit-base-patch16-224, or a folder saved from one."
        )
    return model_config


def check_image_size(model_config, image_size: int) -> None:
    if not image_size:
        return
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(
            f"The image size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels (got {image_size}); "
            "use 0 for the model's own size."
        )
    fixed = getattr(model_config, "image_size", None)
    if getattr(model_config, "patch_size", None) and fixed and image_size != fixed:
        # Patch models (ViT and kin) learned one position embedding per patch of a fixed grid.
        raise UserError(
            f"This {model_config.model_type} model takes images of exactly {fixed} pixels; set the image size to 0 (or "
            f"{fixed}), or choose a convolutional model such as mobilenet-v2, which takes any size."
        )


def processed_size(processor) -> str:
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = dict(crop or processor.size or {})
    if "height" in size:
        return f"{size['height']}x{size['width']}"
    return str(size)


def load_model(source: str, label_names: list[str], dropout: float):
    from transformers import AutoModelForImageClassification

    model_config = image_model_config(source)
    with_new_head(model_config, label_names, dropout)
    model = load_with_new_head(AutoModelForImageClassification, source, model_config, "image classification")
    steady_batchnorm(model)
    return model


def encode(split, processor, label_ids: dict[str, int], params: AugmentParams | None, seed: int):
    """The split as the Trainer sees it: rows of (pixel_values, label) made on the fly from the stored images.

    The image column is renamed `pixel_values` so the Trainer's removal of columns the model does not
    take keeps it; the transform replaces the PIL images by the processor's tensor. Augmentation
    (training only) draws from one generator seeded by the run's seed, so a run repeats exactly.
    """
    table = split.select_columns(["image", "label"]).rename_column("image", "pixel_values")
    rng = np.random.default_rng(seed)
    augmenting = params is not None and params.active

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        images = batch["pixel_values"]
        if augmenting:
            images = [augment(image, params, rng) for image in images]
        return {
            "pixel_values": processor(images=images, return_tensors="pt")["pixel_values"],
            "labels": [label_ids[label] for label in batch["label"]],
        }

    return table.with_transform(transform)


def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {
        "pixel_values": torch.stack([feature["pixel_values"] for feature in features]),
        "labels": torch.tensor([int(feature["labels"]) for feature in features], dtype=torch.long),
    }
