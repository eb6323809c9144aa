"""Image-text alignment (CLIP-style): a dual encoder trained on image-caption pairs with its own loss.

The built-in dual encoder and CLIP use the symmetric InfoNCE loss with a learnable temperature
(each image must pick its caption among the batch's captions and each caption its image); SigLIP
models use their sigmoid loss. Every other pair in the batch is a negative, so the batch size sets
the number of negatives: `batch_size - 1` per example. Gradient accumulation adds steps, not
negatives: each micro-batch's loss sees only its own batch, and the Trainer averages the
micro-batch losses (`loss_is_scaled_for_ga = False`).

Evaluation embeds every validation image and caption and reports recall@1/5/10 and the median
rank in both directions (`core.image_text.metrics`), plus zero-shot classification from class
prompts ("a {label}") when the dataset has labels; all of it at step 0 too, so before-vs-after is
visible. The towers train, freeze or take LoRA adapters each on its own, at their own learning rates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.config import RunConfig
from core.image_text.data import CONTRASTIVE
from core.task_keys import IMAGE_TEXT_CONTRASTIVE
from core.tasks.base import Prepared
from core.tasks.pair_task import PairTask

EMBEDDING_COLUMNS = ("image_embedding", "text_embedding")


class ImageTextContrastive(PairTask):
    key = IMAGE_TEXT_CONTRASTIVE
    title = "Image-text alignment (CLIP-style)"
    primary_metric = "recall@1"
    objectives = ("recall@1", "image_to_text_recall@1", "text_to_image_recall@1", "zero_shot_accuracy", "loss")
    loading_snippet = (
        "from transformers import AutoModel, AutoProcessor\n"
        "model = AutoModel.from_pretrained(FOLDER)  # a VisionTextDualEncoderModel (or CLIP / SigLIP)\n"
        "processor = AutoProcessor.from_pretrained(FOLDER)\n"
        'scores = model(**processor(text=captions, images=images, return_tensors="pt", padding=True)).logits_per_image'
    )
    settings = ("towers", "images")
    with_caption_groups = True

    pair_kind = "similarity"
    dataset_kind = CONTRASTIVE

    def extras(self, config: RunConfig, splits) -> dict[str, Any]:
        return {
            "prompt_template": splits.prompt_template,
            "in_batch_negatives": config.batch_size - 1,
            "gradient_accumulation": "adds optimizer steps, not negatives: each loss sees only its own batch",
        }

    def trainer_class(self, base: type, config: RunConfig, prepared: Prepared) -> type:
        prompts = [prepared.extras["prompt_template"].format(label=name) for name in prepared.label_names]
        tokenizer = prepared.processor.tokenizer
        prompt_inputs = (
            tokenizer(prompts, padding=True, truncation=True, max_length=config.max_length, return_tensors="pt")
            if prompts
            else None
        )
        return contrastive_trainer(base, prompt_inputs, {"vision": config.vision_lr, "text": config.text_lr})

    def compute_metrics(self, logits, labels: np.ndarray) -> dict[str, float]:
        from core.image_text.metrics import retrieval_metrics, zero_shot_metrics

        image_embeds, text_embeds, zero_shot = logits
        metrics = retrieval_metrics(image_embeds @ text_embeds.T, groups=labels[:, 0])
        metrics.update(zero_shot_metrics(zero_shot, labels[:, 1]))
        return metrics

    def report(self, logits, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        """Retrieval metrics, chance level, and the zero-shot classification report (when the data has labels)."""
        from core.image_text.metrics import chance_recall
        from core.metrics import classification_report

        _image_embeds, _text_embeds, zero_shot = logits
        labelled = labels[:, 1] >= 0
        zero_shot_report = (
            classification_report(zero_shot[labelled], labels[labelled, 1], prepared.label_names)
            if prepared.label_names and labelled.any()
            else {}
        )
        return {
            "retrieval": self.compute_metrics(logits, labels),
            "chance_recall@1": chance_recall(labels[:, 0], 1),
            "pairs": len(labels),
            "zero_shot": zero_shot_report,
        }

    def headline(self, report: dict[str, Any]) -> dict[str, float | None]:
        retrieval = report.get("retrieval", {})
        names = {
            "recall@1": "R@1 (mean of both directions)",
            "image_to_text_recall@1": "image→text R@1",
            "text_to_image_recall@1": "text→image R@1",
            "recall@5": "R@5",
            "recall@10": "R@10",
            "image_to_text_median_rank": "image→text median rank",
            "text_to_image_median_rank": "text→image median rank",
            "zero_shot_accuracy": "zero-shot accuracy",
        }
        return {label: retrieval.get(key) for key, label in names.items() if key in retrieval}

    def class_report(self, report: dict[str, Any]) -> dict[str, Any]:
        return report.get("zero_shot") or {}

    def predictions(self, logits, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        """One row per pair: its image and caption, where each finds the other, zero-shot class, and both embeddings."""
        from core.image_text.metrics import match_ranks
        from core.metrics import softmax

        image_embeds, text_embeds, zero_shot = logits
        similarity = image_embeds @ text_embeds.T
        raw = prepared.raw[split]
        frame = pd.DataFrame(
            {
                "image": raw["image"].tolist(),
                "text": raw["text"].tolist(),
                "gold": raw["label"].tolist(),
                "image_to_text_rank": match_ranks(similarity, labels[:, 0]),
                "text_to_image_rank": match_ranks(similarity.T, labels[:, 0]),
                "top_caption": raw["text"].to_numpy()[similarity.argmax(axis=1)],
                "similarity": np.diag(similarity).astype(float),
            }
        )
        if zero_shot.shape[-1]:
            probabilities = softmax(zero_shot)
            frame["predicted"] = [prepared.label_names[i] for i in probabilities.argmax(axis=1)]
            frame["confidence"] = probabilities.max(axis=1)
            frame["correct"] = frame["predicted"] == frame["gold"]
        for column, embeds in zip(EMBEDDING_COLUMNS, (image_embeds, text_embeds)):
            frame[column] = list(embeds.astype(np.float32))
        return frame


def contrastive_trainer(base: type, prompt_inputs, tower_lrs: dict[str, float]) -> type:
    """`base` Trainer that trains with the model's own contrastive loss and evaluates into embeddings.

    Evaluation returns (image embeddings, text embeddings, zero-shot logits) per batch instead of
    logits; the class prompts are embedded once per evaluation with the current weights.
    """
    import torch

    from core.image_text.models import logit_scale, parameter_groups, temperature, text_embeddings

    class ContrastiveTrainer(base):
        loss_is_scaled_for_ga = False  # the model's loss is a per-batch mean: the Trainer averages over accumulation
        prompt_embeddings = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {key: value for key, value in inputs.items() if key != "labels"}
            outputs = model(**inputs, return_loss=True)
            return (outputs.loss, outputs) if return_outputs else outputs.loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
            if prediction_loss_only:
                return loss.detach(), None, None
            images = outputs.image_embeds.detach()
            zero_shot = (
                images @ self.prompt_embeddings.T * logit_scale(model).detach()
                if self.prompt_embeddings is not None
                else images[:, :0]
            )
            return loss.detach(), (images, outputs.text_embeds.detach(), zero_shot), inputs["labels"]

        def evaluation_loop(self, *args, **kwargs):
            if prompt_inputs is not None:
                model = self.model
                was_training = model.training
                model.eval()
                with torch.no_grad():
                    on_device = {k: v.to(self.args.device) for k, v in prompt_inputs.items()}
                    self.prompt_embeddings = text_embeddings(model, **on_device)
                model.train(was_training)
            return super().evaluation_loop(*args, **kwargs)

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                groups = parameter_groups(self.model, self.args.learning_rate, tower_lrs, self.args.weight_decay)
                optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                optimizer_kwargs.pop("lr", None)
                self.optimizer = optimizer_class(groups, **optimizer_kwargs)
            return self.optimizer

        def log(self, logs, *args, **kwargs):
            if "loss" in logs:  # a training log line: the temperature moves with every step
                logs["temperature"] = temperature(self.model)
            return super().log(logs, *args, **kwargs)

    return ContrastiveTrainer
