"""The text modality: a sequence classifier plus its tokenizer, explained token by token.

    explainer = load_text_explainer(run_id)            # the run's latest model (or stage="before")
    explanation = explainer.explain("a superb film", method="ig")
    explanation.units, explanation.scores              # word pieces and one signed score each

`TextExplainer` owns tokenisation (a long text read as its run reads it, `core.long_texts`), the baselines
(pad / mask / zero), the forward pass on word embeddings that every method differentiates, and a
per-explainer LRU cache keyed by (text, method, target, merge_words, params), so looking at the
same example twice is instant. A sliding-window run's long text is explained window by window towards the class of
the pooled prediction, and the windows' maps are stitched into one map over the whole text (overlaps averaged).
The methods themselves live in `core/explain/methods.py`; a run's explainer comes from `core/explain/loading.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import UserError
from core.explain.base import (
    BASELINES,
    AttributionMethod,
    Explanation,
    InputSpec,
    explain_each,
    internal_batch_size,
    make_parts,
    register_input,
)
from core.explain.cache import LRUCache
from core.explain.methods import get_method, methods_for
from core.long_texts import (
    HEAD_TAIL,
    LONG_TEXTS,
    LongTexts,
    encode_head_tail,
    encode_windows,
    long_text_logits,
    stitch_windows,
    window_starts,
)
from core.viz import NEWLINE, WORD_START_MARKS

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_CACHE_SIZE = 512


def embeddings_problem(model) -> str | None:
    """None for a model every token method can read (it takes word embeddings), else the sentence why not."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    if embeddings is None or not hasattr(embeddings, "weight"):
        return "Token explanations need a model with a word-embedding layer; this one has none."
    import inspect

    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        return "Token explanations feed word embeddings to the model, and this model's forward takes no inputs_embeds."
    return None


# Text (and a tagger's word): the word embeddings, baselines of [PAD] / [MASK] tokens or zero vectors.
TOKENS = register_input(
    InputSpec(
        modality="tokens",
        baselines={"baseline": ("pad", BASELINES)},
        preferred={"smoothgrad": {"stdevs": 0.02}},
        problem=embeddings_problem,
    )
)


@dataclass
class EncodedText:
    """One tokenised text, batch of one. `logits` is filled by the first forward pass on it."""

    text: str
    input_ids: torch.Tensor  # (1, L) long
    attention_mask: torch.Tensor  # (1, L)
    token_type_ids: torch.Tensor | None  # (1, L) or None when the model has no segments
    tokens: list[str]  # all L tokens, special ones included
    special: list[bool]  # True for [CLS], [SEP], ... (never shown, never replaced by a baseline)
    truncated: bool  # the text had more than max_length tokens and was cut
    logits: torch.Tensor | None = None  # (C,)

    @property
    def shown(self) -> list[int]:
        return [i for i, special in enumerate(self.special) if not special]


class TextExplainer:
    """Explanations for one text classifier: `explain(text, method)` returns an `Explanation`.

    `model` is a Hugging Face sequence classifier (put in eval mode here); `label_names[i]` names
    class i (default: the model config's id2label); texts are cut to `max_length` tokens (default:
    the tokenizer's limit, at most 512). `long_texts` is how a longer text is read (default: cut as the tokenizer
    cuts). `cache_size` 0 turns the explanation cache off.
    """

    modality = "tokens"

    def __init__(
        self,
        model,
        tokenizer,
        label_names: Sequence[str] | None = None,
        max_length: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        name: str = "",
        long_texts: LongTexts | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        if label_names is None:
            id2label = getattr(model.config, "id2label", None) or {}
            label_names = [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]
        self.label_names = [str(name) for name in label_names]
        limit = getattr(tokenizer, "model_max_length", 512) or 512
        self.max_length = int(max_length or min(limit, 512))
        self.long_texts = replace(long_texts or LongTexts(), max_length=self.max_length)
        self.name = name
        self.run_id: str | None = None
        self.stage: str | None = None
        self._cache = LRUCache(cache_size)
        self._lock = threading.RLock()

    @classmethod
    def from_stage(cls, stage, word: int | None = None) -> TextExplainer:
        """The explainer of one opened stage of a text classification run (`core.stages.open_stage`)."""
        return cls(
            stage.model,
            stage.preprocessor,
            stage.label_names,
            stage.max_length,
            name=f"{stage.run.name} ({stage.run.id}, {stage.stage})",
            long_texts=stage.extras.get(LONG_TEXTS),
        )

    def __repr__(self) -> str:
        return f"TextExplainer({self.name or type(self.model).__name__}, labels={self.label_names}, max_length={self.max_length})"

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -- the public verbs ------------------------------------------------------------------------

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape (len(texts), number of classes); a window run's from each text's pooled logits."""
        from core.metrics import softmax

        texts = [str(text) for text in texts]
        parts = []
        with self._lock:
            for start in range(0, len(texts), batch_size):
                logits = long_text_logits(self.model, self.tokenizer, texts[start : start + batch_size], self.long_texts)
                parts.append(softmax(logits))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.label_names)), dtype=np.float32)

    def explain(
        self, text: str, method: str = "ig", target: int | str | None = None, merge_words: bool = False, **params
    ) -> Explanation:
        """Attribution scores for every shown token of `text` towards `target`.

        `target` None explains the predicted class; a string names a class; an int is its index.
        `params` are the method's parameters (see `METHODS[method].defaults`); unknown ones are
        refused. The same call twice returns the same (cached) object.
        """
        text = self._check_text(text)
        attribution = get_method(method, self.modality)
        reason = attribution.applies_to(self.model)
        if reason:
            raise UserError(reason)
        used = attribution.check_params(params)
        target_index = self.target_index(target)
        key = (text, attribution.key, target_index, tuple(sorted(used.items())))
        with self._lock:
            found = self._cache.get((key, bool(merge_words)))
            if found is not None:
                return found
            explanation = self._cache.get((key, False))
            if explanation is None:
                explanation = self._cache.put((key, False), self._compute(text, attribution, target_index, used))
            if merge_words:
                explanation = self._cache.put((key, True), merge_word_pieces(explanation))
            return explanation

    def explain_many(
        self,
        texts: Sequence[str],
        method: str = "ig",
        target: int | str | Sequence | None = None,
        progress: Callable[[float, str], None] | None = None,
        merge_words: bool = False,
        **params,
    ) -> list[Explanation]:
        """`explain` for each text; `target` is one value for all, or a sequence (list, array, Series) with one per text.

        `progress(fraction, message)` is called after each text, e.g. to move a progress bar.
        """
        return explain_each(
            lambda text, one: self.explain(text, method, one, merge_words=merge_words, **params), texts, target, progress, "texts"
        )

    def faithfulness_input(self, text: str, explanation: Explanation) -> tuple:
        """(prepared input, grid, adapter unit ids in the explanation's unit order) for `core.explain.faithfulness`."""
        windows = explanation.params.get("windows", 1)
        if windows > 1:
            raise UserError(
                f"This text is read as {windows} windows whose logits are pooled, and a faithfulness card removes tokens "
                f"from one model input; pick a text of at most {self.max_length} tokens (one window) to score the maps."
            )
        encoded = self.encode(text)
        return encoded, None, list(encoded.shown)

    def method_availability(self) -> dict[str, str | None]:
        """Method key -> None when it can explain this model, else the sentence why not."""
        return {key: method.applies_to(self.model) for key, method in methods_for(self.modality).items()}

    def with_model(self, model, cache_size: int = 0) -> TextExplainer:
        """The same tokenizer, labels and max length around another model (e.g. a randomised copy)."""
        twin = TextExplainer(
            model,
            self.tokenizer,
            self.label_names,
            self.max_length,
            cache_size=cache_size,
            name=self.name,
            long_texts=self.long_texts,
        )
        twin.run_id, twin.stage = self.run_id, self.stage
        return twin

    def clear_cache(self) -> None:
        self._cache.clear()

    def target_index(self, target: int | str | None) -> int | None:
        """A class index from a label name or index (None stays None); UserError when there is no such class."""
        if target is None:
            return None
        if isinstance(target, str):
            if target in self.label_names:
                return self.label_names.index(target)
            if target.strip().lstrip("-").isdigit():
                return self.target_index(int(target))
            raise UserError(f"There is no class '{target}'; this model's classes are {', '.join(self.label_names)}.")
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise UserError(f"The target must be a class name or index, not {target!r}.")
        if not 0 <= int(target) < len(self.label_names):
            raise UserError(
                f"There is no class {int(target)}: this model has {len(self.label_names)} classes, numbered 0 to "
                f"{len(self.label_names) - 1} ({', '.join(self.label_names)})."
            )
        return int(target)

    # -- the input adapter (what every method calls; see core/explain/methods.py) ----------------

    def inputs(self, encoded: EncodedText) -> tuple[torch.Tensor]:
        return (self.embeddings(encoded),)

    def baseline_inputs(self, encoded: EncodedText, used: dict[str, Any]) -> tuple[torch.Tensor]:
        return (self.baseline_embeddings(encoded, used["baseline"]),)

    def outputs(self, encoded: EncodedText, embeddings: torch.Tensor) -> torch.Tensor:
        return self.forward(embeddings, *self.forward_args(encoded))

    def remember(self, encoded: EncodedText, row: torch.Tensor) -> None:
        encoded.logits = row

    def unit_maps(self, encoded: EncodedText, grid=None) -> tuple[torch.Tensor]:
        import torch

        length = encoded.input_ids.shape[1]  # every position is a unit: special tokens equal their baseline
        return (torch.arange(length, device=encoded.input_ids.device).view(1, length, 1),)

    def unit_layouts(self, encoded: EncodedText, grid=None) -> tuple[tuple[int]]:
        return ((int(encoded.input_ids.shape[1]),),)

    def fold(self, raw: tuple, signed: bool) -> tuple[np.ndarray]:
        """(L,) per token: the attribution summed over the embedding, or its L2 norm for a magnitude."""
        (tokens,) = raw
        return ((tokens.sum(-1) if signed else tokens.norm(dim=-1))[0].cpu().numpy(),)

    def batch_rows(self, encoded: EncodedText, rows: int) -> int:
        return internal_batch_size(encoded.input_ids.shape[1], rows)

    def feature_map_layer(self, prepared):
        return None

    # -- what the adapter builds on --------------------------------------------------------------

    def encode(self, text: str) -> EncodedText:
        """The text as one model input, cut as the run cuts it (a window run's: its first window; `windows` has all)."""
        if self.long_texts.mode == HEAD_TAIL:
            features, cut = encode_head_tail(self.tokenizer, [text], self.max_length, special_tokens_mask=True)
            return self.encoded_row(text, features, 0, cut[0])
        if self.long_texts.windowed:
            return self.windows(text)[0]
        encoding = self.tokenizer(
            text, truncation=True, max_length=self.max_length, return_overflowing_tokens=True, return_special_tokens_mask=True
        )
        return self.encoded_row(text, encoding, 0, len(encoding["input_ids"]) > 1)

    def windows(self, text: str) -> list[EncodedText]:
        """A window run's text as its windows, in order; each is `truncated` when there are several."""
        features = encode_windows(self.tokenizer, [text], self.max_length, self.long_texts.overlap, special_tokens_mask=True)
        count = len(features["input_ids"])
        return [self.encoded_row(text, features, row, count > 1) for row in range(count)]

    def encoded_row(self, text: str, features, row: int, truncated: bool) -> EncodedText:
        """Row `row` of a tokenizer's (unpadded) features, with their special-tokens mask, as an `EncodedText`."""
        import torch

        ids = features["input_ids"][row]
        device = self.device
        types = features.get("token_type_ids")
        return EncodedText(
            text=text,
            input_ids=torch.tensor([ids], device=device),
            attention_mask=torch.tensor([features["attention_mask"][row]], device=device),
            token_type_ids=torch.tensor([types[row]], device=device) if types is not None else None,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            special=[bool(flag) for flag in features["special_tokens_mask"][row]],
            truncated=truncated,
        )

    def embeddings(self, encoded: EncodedText, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Word embeddings (1, L, H) of the text (or of other token ids), without gradient history."""
        import torch

        with torch.no_grad():
            return self.model.get_input_embeddings()(encoded.input_ids if ids is None else ids).detach()

    def baseline_ids(self, encoded: EncodedText, kind: str) -> torch.Tensor:
        """The text's ids with every non-special token replaced by [PAD] ("pad") or [MASK] ("mask")."""
        token_id = {"pad": self.tokenizer.pad_token_id, "mask": self.tokenizer.mask_token_id}[kind]
        if token_id is None:
            raise UserError(f"This model's tokenizer has no {kind} token; choose another baseline (pad, mask or zero).")
        ids = encoded.input_ids.clone()
        for position in encoded.shown:
            ids[0, position] = token_id
        return ids

    def baseline_embeddings(self, encoded: EncodedText, kind: str) -> torch.Tensor:
        """Baseline word embeddings (1, L, H): pad / mask tokens, or zero vectors, at every shown position."""
        if kind == "zero":
            reference = self.embeddings(encoded).clone()
            reference[0, encoded.shown] = 0.0
            return reference
        return self.embeddings(encoded, self.baseline_ids(encoded, kind))

    def forward_args(self, encoded: EncodedText) -> tuple:
        return (encoded.attention_mask, encoded.token_type_ids)

    def forward(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N, C) for word embeddings (N, L, H); masks of batch 1 are broadcast to N."""
        rows = embeddings.shape[0]
        if attention_mask.shape[0] != rows:
            attention_mask = attention_mask.expand(rows, -1)
        extra = {}
        if token_type_ids is not None:
            extra["token_type_ids"] = token_type_ids if token_type_ids.shape[0] == rows else token_type_ids.expand(rows, -1)
        return self.model(inputs_embeds=embeddings, attention_mask=attention_mask, **extra).logits

    def logits(self, encoded: EncodedText) -> torch.Tensor:
        """The model's logits (C,) on the text; computed once per encoded text."""
        import torch

        if encoded.logits is None:
            with torch.no_grad():
                encoded.logits = self.forward(self.embeddings(encoded), *self.forward_args(encoded))[0].detach()
        return encoded.logits

    def resolve_target(self, encoded: EncodedText, target: int | None) -> int:
        return int(self.logits(encoded).argmax()) if target is None else int(target)

    # -- internals -------------------------------------------------------------------------------

    def _check_text(self, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise UserError("The text is empty; type or pick a sentence to explain.")
        return text

    def _compute(self, text: str, attribution: AttributionMethod, target: int | None, used: dict[str, Any]) -> Explanation:
        import torch

        started = time.perf_counter()
        if self.long_texts.windowed:
            windows = self.windows(text)
            if len(windows) > 1:
                return self._compute_stitched(text, windows, attribution, target, used, started)
        encoded = self.encode(text)
        if not encoded.shown:
            raise UserError("The text has no tokens once tokenised; type a sentence with words in it.")
        with torch.enable_grad():  # a caller inside torch.no_grad() still gets gradients
            (scores,), delta, difference = attribution.attribute(self, encoded, target, None, **used)
        target = self.resolve_target(encoded, target)
        probabilities = self.logits(encoded).float().softmax(-1).cpu().numpy()
        shown = encoded.shown
        tokens, scores = [encoded.tokens[i] for i in shown], np.asarray(scores, dtype=np.float64)[shown]
        exactness = (delta, difference)
        return self._explanation(
            text, attribution, tokens, scores, target, probabilities, exactness, started, dict(used), encoded.truncated
        )

    def _compute_stitched(self, text: str, windows: list[EncodedText], attribution: AttributionMethod, target: int | None,
                          used: dict[str, Any], started: float) -> Explanation:  # fmt: skip
        """A window run's long text: each window explained towards the pooled prediction's class (or `target`), the
        windows' maps stitched into one over the whole text, which is then read in full (`truncated` False)."""
        import torch

        pooling = self.long_texts.pooling
        logits = torch.stack([self.logits(window) for window in windows]).float()
        pooled = logits.max(0).values if pooling == "max" else logits.mean(0)
        target = int(pooled.argmax()) if target is None else int(target)
        maps, exactness = [], []
        with torch.enable_grad():
            for window in windows:
                (scores,), delta, difference = attribution.attribute(self, window, target, None, **used)
                maps.append(np.asarray(scores, dtype=np.float64)[window.shown])
                exactness.append((delta, difference))
        units = [[window.tokens[i] for i in window.shown] for window in windows]
        tokens, scores = stitch_windows(window_starts([len(part) for part in units], self.long_texts.overlap), units, maps)
        # Each window's integral has its own error: the least exact window's delta is the one worth a warning.
        delta, difference = max(exactness, key=relative_delta)
        probabilities = pooled.softmax(-1).cpu().numpy()
        params = {**used, "windows": len(windows), "pooling": pooling}
        return self._explanation(
            text, attribution, tokens, scores, target, probabilities, (delta, difference), started, params, False
        )

    def _explanation(self, text: str, attribution: AttributionMethod, tokens: list[str], scores, target: int, probabilities,
                     exactness: tuple, started: float, params: dict[str, Any], truncated: bool) -> Explanation:  # fmt: skip
        """One map over `tokens`, with the prediction its `probabilities` make and the integral's (delta, difference)."""
        delta, difference = exactness
        predicted = int(np.asarray(probabilities).argmax())
        return Explanation(
            parts=make_parts(("tokens", tokens, scores, [len(tokens)])),
            method=attribution.key,
            target=target,
            target_label=self.label_names[target],
            predicted=predicted,
            predicted_label=self.label_names[predicted],
            probabilities=[float(p) for p in probabilities],
            delta=None if delta is None else float(delta),
            output_difference=None if difference is None else float(difference),
            seconds=time.perf_counter() - started,
            params=params,
            truncated=truncated,
            modality=self.modality,
            signed=attribution.signed,
            text=text,
        )


def relative_delta(exactness: tuple[float | None, float | None]) -> float:
    """|delta| over |f(x) - f(baseline)|: how far a window's attribution is from its own output change (0 without one)."""
    delta, difference = exactness
    return 0.0 if delta is None else abs(delta) / max(abs(difference or 0.0), 1e-6)


# ---------------------------------------------------------------------------------------------


def merge_word_pieces(explanation: Explanation) -> Explanation:
    """Word pieces joined into words, with their scores summed.

    WordPiece marks continuations ("un", "##believ", "##able" -> "unbelievable"); byte-level BPE
    ("Ġ") and SentencePiece ("▁") mark word starts instead; both conventions are recognised.
    Sums keep Integrated Gradients' completeness (the word scores still add up to f(x) - f(b)).
    """
    units, scores = explanation.units, explanation.scores
    starts_marked = any(unit.startswith(WORD_START_MARKS) for unit in units)
    words: list[str] = []
    totals: list[float] = []
    for index, (unit, score) in enumerate(zip(units, scores)):
        if starts_marked:
            # A byte-level newline ("Ċ") ends a line, so the piece after it starts a word too.
            begins = index == 0 or unit.startswith(WORD_START_MARKS) or units[index - 1].endswith(NEWLINE)
            piece = unit.replace(NEWLINE, "").lstrip("".join(WORD_START_MARKS))
        else:
            begins = index == 0 or not unit.startswith("##")
            piece = unit if begins else unit[2:]
        if (begins and not (words and words[-1] == "")) or not words:  # a bare newline's word takes the next piece
            words.append(piece)
            totals.append(float(score))
        else:
            words[-1] += piece
            totals[-1] += float(score)
    (part,) = explanation.parts
    merged = replace(part, units=words, scores=totals, layout=[len(words)])
    return replace(explanation, parts=[merged], params={**explanation.params, "merged_word_pieces": True})
