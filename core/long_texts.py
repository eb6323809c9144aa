"""How a text classification run reads a text longer than its max length: in training, and in every later read of the run
(Inspect's predictions, the explanations, the robustness check), so that each reads a text as training did.

- **head** / **tail**: the tokenizer cuts the other end (its `truncation_side`, saved with every stage).
- **head_tail**: a quarter of the token budget from the text's start and the rest from its end (Sun et al. 2019, "How to
  fine-tune BERT for text classification?", kept 128 + 382 of 512 tokens). No tokenizer setting cuts a text so; it is
  cut here from the whole text's tokens.
- **window**: the text is read as overlapping windows of max_length tokens (the tokenizer's overflowing tokens), each
  trained with the document's label; a document's logits are its windows' pooled (mean, or each class's max).

`LongTexts.of(config)` is the run's choice and `LongTexts.encode` is the one place that applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.config import HEAD_TAIL, WINDOW, RunConfig
from core.errors import UserError

HEAD_SHARE = 0.25  # of a head+tail run's token budget; the tail, where verdicts and requests sit, gets the rest
DOCUMENT = "document"  # a window's column in a window run's encoded splits: the position of the text it reads
LONG_TEXTS = "long_texts"  # a text classification stage's extras key for its run's LongTexts
FORWARD_BATCH = 64  # windows per forward pass: a batch of long documents can make many


@dataclass(frozen=True)
class LongTexts:
    """A run's way of reading long texts (`mode` one of `core.config.TRUNCATIONS`); head and tail are the tokenizer's own
    cut. `max_length` None means the tokenizer's limit."""

    mode: str = "head"
    max_length: int | None = None
    overlap: int = 0  # window runs: tokens consecutive windows share
    pooling: str = "mean"  # window runs: how a document's window logits combine

    @classmethod
    def of(cls, config: RunConfig) -> LongTexts:
        return cls(config.truncation, config.max_length, config.window_overlap, config.window_pooling)

    @property
    def windowed(self) -> bool:
        return self.mode == WINDOW

    def truncation_side(self) -> str:
        """The side the run's tokenizer cuts, saved with each stage. A head+tail run's keeps the tail (the larger part it
        trained on) for a reader that can only cut one end, such as a pipeline of the exported folder; a window run's
        cuts on the right, so its windows run from the text's start."""
        return "left" if self.mode in ("tail", HEAD_TAIL) else "right"

    def describe(self, windows: int | None = None) -> str:
        """A few words for a page: which part of a long text the run reads."""
        if self.windowed:
            counted = f"{windows} windows" if windows is not None else "overlapping windows"
            return f"sliding window: {counted} pooled by {self.pooling}"
        return {"head": "its head", "tail": "its tail", HEAD_TAIL: "its head and its tail"}.get(self.mode, self.mode)

    def encode(self, tokenizer, texts: Sequence[str], special_tokens_mask: bool = False) -> tuple[dict, list[int]]:
        """The model's features for `texts` (unpadded lists of ids, masks, token types), and per row the position of the
        text it reads: one row per text, or for a window run one per window."""
        texts = [str(text) for text in texts]
        if self.mode == HEAD_TAIL:
            features, _ = encode_head_tail(tokenizer, texts, self.budget(tokenizer), special_tokens_mask)
            return features, list(range(len(texts)))
        if self.windowed:
            features = encode_windows(tokenizer, texts, self.budget(tokenizer), self.overlap, special_tokens_mask)
            return features, [int(document) for document in features.pop("overflow_to_sample_mapping")]
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length, return_special_tokens_mask=special_tokens_mask)
        return dict(encoded), list(range(len(texts)))

    def budget(self, tokenizer) -> int:
        """Tokens one model input may hold: the max length, or the tokenizer's limit (at most 512) without one."""
        return int(self.max_length or min(getattr(tokenizer, "model_max_length", 512) or 512, 512))


def head_length(room: int) -> int:
    """Text tokens a head+tail cut takes from the start when `room` text tokens fit; the rest come from the end."""
    return int(room * HEAD_SHARE)


def head_tail_positions(special: Sequence[int], max_length: int) -> list[int]:
    """The positions of a whole text's encoding (`special`: its special-tokens mask) that a head+tail cut keeps: every
    special token where it is, then the first `head_length` text tokens and the last ones up to `max_length` in all."""
    text = [position for position, flag in enumerate(special) if not flag]
    room = max_length - (len(special) - len(text))
    if len(text) <= room:
        return list(range(len(special)))
    head = head_length(room)
    kept = set(text[:head]) | set(text[len(text) - (room - head) :])
    return [position for position, flag in enumerate(special) if flag or position in kept]


def encode_head_tail(tokenizer, texts: Sequence[str], max_length: int, special_tokens_mask: bool = False):
    """(features, cut): each text encoded whole, then cut to its head and tail (`head_tail_positions`); `cut[i]` says
    whether text i lost tokens. Special tokens keep their place and token types, whatever the tokenizer's layout."""
    whole = tokenizer(list(texts), return_special_tokens_mask=True)  # no truncation: every token, framed by the specials
    names = [name for name in whole if name != "special_tokens_mask" or special_tokens_mask]
    features: dict[str, list[list[int]]] = {name: [] for name in names}
    cut = []
    for row, special in enumerate(whole["special_tokens_mask"]):
        kept = head_tail_positions(special, max_length)
        for name in names:
            values = whole[name][row]
            features[name].append([values[position] for position in kept])
        cut.append(len(kept) < len(special))
    return features, cut


def encode_windows(tokenizer, texts: Sequence[str], max_length: int, overlap: int, special_tokens_mask: bool = False) -> dict:
    """Windows of at most `max_length` tokens over each text, each sharing `overlap` text tokens with the one before, with
    `overflow_to_sample_mapping` naming each window's text. The tokenizer must cut on the right (a window run's does,
    `LongTexts.truncation_side`), so a text's windows run from its start, as `window_starts` counts them."""
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        stride=overlap,
        return_overflowing_tokens=True,
        return_special_tokens_mask=special_tokens_mask,
    )
    if "overflow_to_sample_mapping" not in encoded:
        raise UserError("Sliding windows need a fast (Rust) tokenizer, and this model's has none; choose another truncation.")
    return dict(encoded)


def windows_needed(tokens: int, max_length: int, overlap: int, specials: int = 2) -> int:
    """How many windows `encode_windows` makes of a text of `tokens` tokens (`specials` of them added around each input,
    two for BERT): the first holds max_length, each next one adds max_length - specials - overlap new text tokens."""
    room, text = max_length - specials, tokens - specials
    return 1 if text <= room else 1 + -(-(text - room) // (room - overlap))


def window_starts(lengths: Sequence[int], overlap: int) -> list[int]:
    """Where each window's text tokens start among its document's, from each window's count of text tokens: a window
    begins `overlap` tokens before the one before it ended."""
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + int(length) - overlap)
    return starts[: len(lengths)]


def stitch_windows(starts: Sequence[int], units: Sequence[Sequence[str]], scores: Sequence[np.ndarray]):
    """(units, scores) over the whole document from its windows' maps of text tokens: a token read by several windows gets
    the mean of its scores there, so the overlaps weigh no more than the rest."""
    length = max(start + len(part) for start, part in zip(starts, units))
    total, count = np.zeros(length), np.zeros(length)
    whole: list[str] = [""] * length
    for start, part, values in zip(starts, units, scores):
        end = start + len(part)
        total[start:end] += np.asarray(values, dtype=np.float64)
        count[start:end] += 1
        whole[start:end] = part
    return whole, total / np.maximum(count, 1)


def pool_windows(logits: np.ndarray, documents: Sequence[int], pooling: str) -> np.ndarray:
    """(documents, classes) from (windows, classes): each document's windows' mean logits, or each class's largest.
    `documents[i]` is window i's document, numbered 0.. in order."""
    logits, documents = np.asarray(logits), np.asarray(documents, dtype=np.int64)
    if not len(documents):
        return logits[:0]
    reduce = np.max if pooling == "max" else np.mean
    return np.stack([reduce(logits[documents == document], axis=0) for document in range(int(documents.max()) + 1)])


def first_windows(documents: Sequence[int]) -> np.ndarray:
    """The row of each document's first window (documents numbered 0.. in order): where its label is read."""
    return np.unique(np.asarray(documents, dtype=np.int64), return_index=True)[1]


def long_text_logits(model, tokenizer, texts: Sequence[str], long_texts: LongTexts) -> np.ndarray:
    """The model's logits (len(texts), classes) as the run reads each text: a window run's pooled over its windows."""
    import torch

    features, documents = long_texts.encode(tokenizer, texts)
    parts = []
    with torch.no_grad():
        for start in range(0, len(documents), FORWARD_BATCH):
            batch = padded(tokenizer, features, slice(start, start + FORWARD_BATCH), model.device)
            parts.append(model(**batch).logits.float().cpu().numpy())
    logits = np.concatenate(parts) if parts else np.zeros((0, model.config.num_labels), dtype=np.float32)
    return pool_windows(logits, documents, long_texts.pooling) if long_texts.windowed else logits


def padded(tokenizer, features: dict, rows: slice, device) -> dict:
    """The rows `rows` of unpadded features as one padded batch of tensors on `device`."""
    chosen = {name: values[rows] for name, values in features.items() if name != "special_tokens_mask"}
    return dict(tokenizer.pad(chosen, return_tensors="pt").to(device))


def window_pooling_trainer(base: type, pooling: str) -> type:
    """`base` whose evaluations and predictions of a window run pool each document's windows (`pool_windows`), so the
    metrics, the report and the prediction frames have one row per document. The splits carry `DOCUMENT` per window. The
    loss stays the windows' own, the one training lowers, so the training and validation loss curves compare."""
    from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize

    class WindowPoolingTrainer(base):
        documents: np.ndarray | None = None  # the windows' documents of the split being evaluated

        def get_eval_dataloader(self, eval_dataset=None):
            self.documents = documents_of(self.eval_dataset if eval_dataset is None else eval_dataset)
            return super().get_eval_dataloader(eval_dataset)

        def get_test_dataloader(self, test_dataset):
            self.documents = documents_of(test_dataset)
            return super().get_test_dataloader(test_dataset)

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
            score, self.compute_metrics = self.compute_metrics, None  # scored below, on the documents instead of the windows
            try:
                output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
            finally:
                self.compute_metrics = score
            if output.predictions is None or output.label_ids is None:
                return output
            logits = pool_windows(output.predictions, self.documents, pooling)
            labels = np.asarray(output.label_ids)[first_windows(self.documents)]
            metrics = dict(output.metrics)
            if score is not None:
                scores = denumpify_detensorize(score(EvalPrediction(predictions=logits, label_ids=labels)))
                metrics.update({f"{metric_key_prefix}_{name}": value for name, value in scores.items()})
            return EvalLoopOutput(predictions=logits, label_ids=labels, metrics=metrics, num_samples=len(labels))

    return WindowPoolingTrainer


def documents_of(dataset) -> np.ndarray:
    return np.asarray(dataset[DOCUMENT], dtype=np.int64)
