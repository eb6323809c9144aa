"""What the two image-text tasks share as tasks: their datasets, checks, preparation and model handling.

A subclass names its dataset kind, builds its model from the loaded dual encoder (`build_model`),
and says whether its labels carry caption groups (alignment) or class ids (fusion).
"""

from __future__ import annotations

from typing import Any

from core.assets import Progress
from core.config import RunConfig
from core.image_text.training import (
    PairCollator,
    check_pair_config,
    encode_pairs,
    load_pairs_and_processors,
    pair_processor_for,
    trainable_pair_model,
)
from core.tasks.base import Prepared, StageModel, Task


class PairTask(Task):
    modality = "image_text"
    explains = "pairs"
    view = "pairs"
    remove_unused_columns = False  # the transform reads image, text and label; none is a forward argument
    unused_knobs = ("group_by_length",)  # captions are cut to the max length, but batches are never grouped by it
    dataset_kind: str  # core.image_text.data.CONTRASTIVE or FUSION
    pair_kind: str  # what its model scores: "similarity" (a dual encoder) or "classification" (a fusion classifier)
    with_caption_groups: bool  # labels as [caption group, class id] (alignment) or the class id (fusion)

    def datasets(self) -> list:
        from core.image_text.data import list_pair_datasets

        return list_pair_datasets(self.dataset_kind)

    def preflight(self, config: RunConfig) -> None:
        from core.image_text.data import BUILTIN_PAIR_DATASETS, load_pair_splits
        from core.image_text.models import dual_encoder_config, resolve_dual_encoder

        check_pair_config(config, self.dataset_kind)
        dual_encoder_config(resolve_dual_encoder(config.model))
        if config.dataset not in BUILTIN_PAIR_DATASETS:  # built-ins are known good, and may need building first
            # The split checks (classes, row limit) read only the stored labels: cheap. Every image and caption
            # was checked when the set was stored, so no image is opened here.
            load_pair_splits(config.dataset, kind=self.dataset_kind, seed=config.seed, max_rows=config.max_rows or None)

    def build_model(self, encoder, config: RunConfig, label_names: list[str]):
        """The model to train on top of the loaded dual encoder (the dual encoder itself by default)."""
        return encoder

    def extras(self, config: RunConfig, splits) -> dict[str, Any]:
        """Facts for the run's summary beyond the data and model sources."""
        return {}

    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        from core.image_text.models import load_dual_encoder

        self.preflight(config)
        splits, source, image_processor, tokenizer = load_pairs_and_processors(config, self.dataset_kind, progress)
        model = self.build_model(load_dual_encoder(source, config.dropout), config, splits.label_names)
        label_ids = {name: index for index, name in enumerate(splits.label_names)}
        datasets = {
            split: encode_pairs(
                splits.split(split),
                image_processor,
                tokenizer,
                config,
                label_ids,
                augmenting=split == "train",
                with_caption_groups=self.with_caption_groups,
            )
            for split in ("train", "validation", "test")
        }
        return Prepared(
            model=model,
            processor=pair_processor_for(image_processor, tokenizer),
            datasets=datasets,
            raw={split: splits.frame(split) for split in ("train", "validation", "test")},
            collator=PairCollator(tokenizer),
            label_names=splits.label_names,
            head_names=(),
            extras={
                "data_source": splits.source,
                "model_source": source,
                "towers": f"vision {config.vision_tower}, text {config.text_tower}",
                **self.extras(config, splits),
            },
        )

    def trainable(self, prepared: Prepared, config: RunConfig, total_steps: int):
        return trainable_pair_model(prepared.model, config)

    def finished_model(self, model):
        from core.image_text.models import merge_adapters

        return merge_adapters(model)

    # -- after training ------------------------------------------------------------------------------

    def split_rows(self, run, split: str):
        from core.image_text.data import load_pair_splits
        from core.run_files import run_config

        config = run_config(run)
        splits = load_pair_splits(config.dataset, kind=self.dataset_kind, seed=config.seed, max_rows=config.max_rows or None)
        return splits.frame(split), list(splits.label_names)

    def open_stage(self, run, stage: str) -> StageModel:
        from core.image_text.stages import load_pair_stage
        from core.run_files import run_config

        pair = load_pair_stage(run, stage, self.pair_kind)
        return StageModel(
            run,
            stage,
            pair.model,
            (pair.image_processor, pair.tokenizer),
            list(pair.label_names),
            self.stage_logits,
            max_length=run_config(run).max_length,
            extras={"kind": pair.kind, "prompt_template": pair.prompt_template},
        )

    def model_inputs(self, stage: StageModel, rows) -> dict:
        """Each row's processed image ("pixel_values") and its padded, cut text, on the model's device."""
        from core.image_text.data import open_pair_record

        image_processor, tokenizer = stage.preprocessor
        pictures = [open_pair_record(reference)["image"] for reference in rows["image"]]
        pixels = image_processor(images=pictures, return_tensors="pt")["pixel_values"].to(stage.model.device)
        text = tokenizer(
            rows["text"].astype(str).tolist(), padding=True, truncation=True, max_length=stage.max_length, return_tensors="pt"
        ).to(stage.model.device)
        return {"pixel_values": pixels, **text}

    def stage_logits(self, stage: StageModel, rows):
        """A classifier's logits for each row's (image, text), or a dual encoder's score of each row's pair as (N, 1)."""
        from core.image_text.models import pair_scores

        inputs = self.model_inputs(stage, rows)
        if stage.extras["kind"] == "similarity":
            return pair_scores(stage.model, **inputs)[:, None].float().cpu().numpy()
        return stage.model(**inputs).logits.float().cpu().numpy()
