"""An image-text run after training: which task and stages it has, its model by stage, and retrieval over a split.

`load_stage_pair_model(run, stage)` gives the model with its image processor and tokenizer, as the
run trained them (`core.image_text.stages`).

Retrieval (`split_embeddings`, `search_images`, `search_captions`) embeds a split once per stage
and keeps the embeddings under the run's inspect cache, so a typed query costs one text forward.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.assets import Progress, no_progress
from core.checkpoints import available_stages, latest_stage, stage_folder
from core.errors import UserError
from core.image_text.stages import PairModel, load_pair_stage
from core.store import Run

EMBED_BATCH = 64


def pair_task(run: Run):
    """The run's image-text task; a sentence when the run is of another task."""
    from core.tasks import TASKS
    from core.tasks.pair_task import PairTask

    task = TASKS.get(run.task)
    if not isinstance(task, PairTask):
        raise UserError(
            f"Run {run.id} is a {run.task.replace('_', ' ')} run; pick an image-text run for retrieval and cross-modal maps."
        )
    return task


def check_pair_run(run: Run) -> str:
    """The run's kind of pair model ("similarity" or "classification"); a sentence when it is not an image-text run."""
    return pair_task(run).pair_kind


def pair_stages(run: Run) -> list[str]:
    """The run's stages with a model, in training order; a sentence when there is none yet."""
    check_pair_run(run)
    if not run.directory.is_dir():
        raise UserError(f"The directory of run {run.id} was deleted, so its models are gone. Pick another run.")
    found = available_stages(run)
    if not found:
        raise UserError(
            f"Run {run.id} ({run.status}) has no model to inspect yet: it saves one before its first update. "
            "Wait until it is running, or pick a finished run."
        )
    return found


def stage_pair_model(run: Run, stage: str) -> PairModel:
    """The run's model at `stage` as retrieval reads it, from the stage `core.stages.open_stage` keeps open."""
    from core.stages import open_stage

    check_pair_run(run)
    opened = open_stage(run, stage)
    image_processor, tokenizer = opened.preprocessor
    return PairModel(
        opened.model,
        image_processor,
        tokenizer,
        opened.extras["kind"],
        list(opened.label_names),
        opened.extras["prompt_template"],
    )


def load_stage_pair_model(run: Run, stage: str | None = None) -> PairModel:
    """The run's model at `stage` (None: the latest) in eval mode, with the processors it trained with; a sentence
    when the run is not an image-text run or has no such stage."""
    return load_pair_stage(run, stage or latest_stage(run), check_pair_run(run))


# --- Retrieval ------------------------------------------------------------------------------------


def embed_images(pair: PairModel, images: list, batch_size: int = EMBED_BATCH) -> np.ndarray:
    import torch

    from core.image_text.models import image_embeddings

    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = pair.image_processor(images=images[start : start + batch_size], return_tensors="pt")["pixel_values"]
            parts.append(image_embeddings(pair.model, pixels).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def embed_texts(pair: PairModel, texts: list[str], batch_size: int = EMBED_BATCH) -> np.ndarray:
    import torch

    from core.image_text.models import text_embeddings

    if any(not text.strip() for text in texts):
        raise UserError("Type some words to search for, such as 'blue square'.")
    parts = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = pair.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt"
            )
            parts.append(text_embeddings(pair.model, **encoded).numpy())
    return np.concatenate(parts)


def split_embeddings(
    run: Run, pair: PairModel, stage: str, split: str, progress: Progress = no_progress
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(pairs frame, image embeddings, caption embeddings) of a split at a stage, cached beside the run."""
    from core.image_text.data import open_pair_record
    from core.stages import split_rows

    frame, _ = split_rows(run, split)
    cache = run.directory / "inspect" / f"embeddings_{split}_{stage}.npz"
    if cache.is_file() and cache.stat().st_mtime >= stage_folder(run, stage).stat().st_mtime:
        stored = np.load(cache)
        if len(stored["images"]) == len(frame):
            return frame, stored["images"], stored["texts"]
    progress(0.1, f"Embedding the {len(frame)} {split} images and captions")
    images = [open_pair_record(ref)["image"] for ref in frame["image"]]
    image_embeds, text_embeds = embed_images(pair, images), embed_texts(pair, frame["text"].tolist())
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=image_embeds, texts=text_embeds)
    progress(1.0, "Embedded")
    return frame, image_embeds, text_embeds


def retrieval_frame(run: Run, pair: PairModel, stage: str, split: str, progress: Progress = no_progress) -> pd.DataFrame:
    """One row per pair of the split, as a comparison reads an aligned model: image, text (its caption), retrieved
    (the caption its image ranks first), rank (its own caption's rank among the split's, equal captions counting as
    it) and correct (rank 1)."""
    from core.image_text.metrics import caption_groups, match_ranks

    frame, image_embeds, text_embeds = split_embeddings(run, pair, stage, split, progress)
    similarity = image_embeds @ text_embeds.T
    texts = frame["text"].astype(str).to_numpy()
    ranks = match_ranks(similarity, caption_groups(texts.tolist()))
    return pd.DataFrame(
        {
            "image": frame["image"].to_numpy(),
            "text": texts,
            "retrieved": texts[similarity.argmax(axis=1)],
            "rank": ranks,
            "correct": ranks == 1,
        }
    )


def search_images(pair: PairModel, frame: pd.DataFrame, image_embeds: np.ndarray, query: str, k: int = 8) -> pd.DataFrame:
    """The k images most similar to a typed query: image reference, its caption, score (cosine)."""
    scores = image_embeds @ embed_texts(pair, [query])[0]
    order = np.argsort(-scores)[:k]
    return frame.iloc[order][["image", "text", "label"]].assign(score=scores[order]).reset_index(drop=True)


def search_captions(pair: PairModel, frame: pd.DataFrame, text_embeds: np.ndarray, image, k: int = 8) -> pd.DataFrame:
    """The k captions of the split most similar to one image, deduplicated: caption, score (cosine)."""
    scores = text_embeds @ embed_images(pair, [image])[0]
    ranked = frame.assign(score=scores).sort_values("score", ascending=False)
    ranked = ranked.drop_duplicates(subset="text")
    return ranked.head(k)[["text", "label", "score"]].reset_index(drop=True)


def zero_shot(pair: PairModel, image) -> pd.DataFrame:
    """Each class prompt's probability for one image (softmax over the scaled cosines)."""
    import torch

    from core.image_text.models import logit_scale

    if not pair.label_names:
        raise UserError("This dataset has no class labels, so there are no class prompts to classify with.")
    prompts = [pair.prompt_template.format(label=name) for name in pair.label_names]
    scores = embed_texts(pair, prompts) @ embed_images(pair, [image])[0]
    with torch.no_grad():
        scale = float(logit_scale(pair.model))
    logits = scores * scale
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    return pd.DataFrame({"class": pair.label_names, "prompt": prompts, "probability": probabilities}).sort_values(
        "probability", ascending=False, ignore_index=True
    )


# --- Fusion classification ------------------------------------------------------------------------


def fusion_predictions(run: Run, pair: PairModel, stage: str, split: str, progress: Progress = no_progress) -> pd.DataFrame:
    """One row per pair (image, text, gold, predicted, confidence, loss, correct, p(class)…): the trainer's
    stored predictions when it wrote this split and stage, else predicted once and kept beside the run."""
    stored = run.directory / "predictions" / f"{split}_{stage}.parquet"
    cache = run.directory / "inspect" / f"fusion_{split}_{stage}.parquet"
    for path in (stored, cache):
        if path.is_file() and path.stat().st_mtime >= stage_folder(run, stage).stat().st_mtime:
            return pd.read_parquet(path)
    from core.stages import split_rows

    frame, _ = split_rows(run, split)
    logits = classify(pair, frame, progress)
    from core.predictions import prediction_frame

    label_ids = {name: index for index, name in enumerate(pair.label_names)}
    gold = np.array([label_ids[label] for label in frame["label"]])
    predicted = prediction_frame(frame["text"].tolist(), logits, gold, pair.label_names)
    predicted.insert(0, "image", frame["image"].tolist())
    cache.parent.mkdir(parents=True, exist_ok=True)
    predicted.to_parquet(cache)
    return predicted


def classify(pair: PairModel, frame: pd.DataFrame, progress: Progress = no_progress, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """The fusion model's logits for every (image, text) row of a frame."""
    import torch

    from core.image_text.data import open_pair_record

    parts = []
    with torch.no_grad():
        for start in range(0, len(frame), batch_size):
            rows = frame.iloc[start : start + batch_size]
            progress(start / max(1, len(frame)), f"Classifying pairs {start + 1}–{start + len(rows)} of {len(frame)}")
            images = [open_pair_record(ref)["image"] for ref in rows["image"]]
            pixels = pair.image_processor(images=images, return_tensors="pt")["pixel_values"]
            text = pair.tokenizer(rows["text"].tolist(), padding=True, truncation=True, max_length=64, return_tensors="pt")
            parts.append(pair.model(pixel_values=pixels, **text).logits.numpy())
    progress(1.0, "Classified")
    return np.concatenate(parts)
