"""The pair modality: a model that reads an image and a text together, explained token by token and patch by patch.

    explainer = PairExplainer(model, image_processor, tokenizer, kind="similarity")
    explanation = explainer.explain(image, "a red circle in the top left", method="ig", grid=7)
    explanation.only("tokens").top(3), explanation.only("patches").top(3), explanation.part("tokens").share
    explainer.explain_word(image, "a red circle in the top left", "red")   # which patches make "red" count here
    pair_randomization_check(explainer, image, caption, scope="all")       # do the maps depend on the weights?
    methods_for("pairs")                                                    # the methods that apply to pairs

Two kinds of model, both with a `vision_model` and a `text_model` tower:
- "similarity": a dual encoder (VisionTextDualEncoderModel, CLIP, SigLIP); f(x) is the pair's scaled cosine
  (`core.image_text.models.pair_scores`).
- "classification": a fusion classifier called with pixel_values and the text; f(x) is the target class logit.

Every method works on what the towers see: the processed image x_i (1, 3, H, W) and the text tower's word
embeddings x_t (1, L, D). The embeddings go in by replacing the output of `text_model.get_input_embeddings()`
with a forward hook rather than through `inputs_embeds`, so towers that also read input_ids (CLIP pools at the
end-of-text token) keep working. Pixel scores are summed over channels and then over the cells of a rows x cols
grid (`core/explain/patches.py`: cell sums keep Integrated Gradients' completeness), token scores over D.

Baselines, what "absent" means for each half: for the text [PAD] / [MASK] at every shown token, or zero
vectors (as in `core/explain/text.py`); for the image its mean colour, black, or a blur (as in
`core/explain/image.py`), or "grey", the image without its colours. The same code does it: a `TextExplainer`
over the text tower and an `ImageExplainer` over the vision tower tokenise, preprocess and make baselines;
they never run their own forward. Special tokens keep their embedding in every baseline, so they get no
attribution and are not shown.

The image baseline decides what a map can show, so the default is "blur", not the image modality's "mean":
from a flat colour every background pixel changes, and on a convolutional tower (the built-in MobileNetV2)
the map of a caption is then spread over the background (on the synthetic shapes its top patch fell on the
shape in under 5% of correctly matched pairs). A blur removes shapes and keeps colours and layout, so it
suits shape and object words; "grey" removes colours only, so it suits colour words
(tests/core/test_explain_pairs.py measures both, against an untrained model as the control).

Nothing here imports torch, transformers or captum at module level.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import UserError
from core.explain import patches
from core.explain.base import (
    BASELINES,
    TOKENS_PER_BATCH,
    AttributionMethod,
    Explanation,
    InputSpec,
    make_parts,
    register_input,
    replaced_output,
)
from core.explain.cache import LRUCache
from core.explain.image import (
    IMAGE_BASELINES,
    PIXELS_PER_BATCH,
    ImageExplainer,
    PreparedImage,
)
from core.explain.methods import get_method
from core.explain.text import EncodedText, TextExplainer

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

KINDS = ("similarity", "classification")
TOWER_NAMES = ("vision_model", "text_model")
DEFAULT_CACHE_SIZE = 128
SIMILARITY_LABEL = "match"  # what the one "class" of a similarity model is called in the per-half views
# The image modality's baselines plus "grey": the same image without its colours, the absence of colour words.
PAIR_IMAGE_BASELINES = (*IMAGE_BASELINES, "grey")


@dataclass
class PreparedPair:
    """One image and one text, batch of one, as the towers see them. `outputs` is filled by the first forward."""

    image: PreparedImage
    text: EncodedText
    outputs: torch.Tensor | None = None  # (C,) logits of a classifier, (1,) the score of a similarity model


def tower_problem(model) -> str | None:
    """None for a model with both towers and a word-embedding layer, else the sentence why it cannot be explained."""
    missing = [name for name in TOWER_NAMES if getattr(model, name, None) is None]
    if missing:
        return (
            f"This {type(model).__name__} is not a dual encoder or fusion model: it has no {' or '.join(missing)}; "
            "pick an image-text model (a dual encoder such as CLIP, or a fusion classifier)."
        )
    if getattr(model.text_model, "get_input_embeddings", lambda: None)() is None:
        return f"The text tower of this {type(model).__name__} has no word-embedding layer to attribute to."
    return None


# Image and text together: the pixels and the text tower's word embeddings; a baseline for each half.
PAIRS = register_input(
    InputSpec(
        modality="pairs",
        baselines={"text_baseline": ("pad", BASELINES), "image_baseline": ("blur", PAIR_IMAGE_BASELINES)},
        # 128 steps, not the 32-50 of one input: along a path through MobileNetV2 and a text tower at once the integral
        # converges slowly (convergence delta often 10-100 % of the score change at 32 steps, 5-20 % at 128).
        preferred={"ig": {"steps": 128}, "gradient_shap": {"stdevs": 0.05}, "smoothgrad": {"stdevs": 0.05}},
        problem=tower_problem,
        measures=("logit",),
    )
)


# ---------------------------------------------------------------------------------------------
# The explainer


class PairExplainer:
    """Explanations for one image-text model: `explain(image, text, method, grid=...)` returns an `Explanation` with a tokens
    part and a patches part.

    `model` has a `vision_model` and a `text_model` (put in eval mode here); `image_processor` makes its
    pixel_values (PIL backend), `tokenizer` its text input; texts are cut to `max_length` tokens.
    `kind` "similarity" scores a pair by its scaled cosine; "classification" by a class logit, with
    `label_names[i]` naming class i. `cache_size` 0 turns the explanation cache off.
    """

    modality = "pairs"

    def __init__(
        self,
        model,
        image_processor,
        tokenizer,
        kind: str = "similarity",
        label_names: Sequence[str] | None = None,
        max_length: int = 64,
        cache_size: int = DEFAULT_CACHE_SIZE,
        name: str = "",
    ):
        problem = tower_problem(model)
        if problem:
            raise UserError(problem)
        if kind not in KINDS:
            raise UserError(f"The kind of pair model must be {' or '.join(KINDS)} (got {kind!r}).")
        if kind == "classification" and not label_names:
            raise UserError("A fusion classifier needs its class names (label_names) to be explained.")
        self.model = model.eval()
        self.kind = kind
        self.label_names = [str(label) for label in label_names] if kind == "classification" else [SIMILARITY_LABEL]
        self.image_processor, self.tokenizer = image_processor, tokenizer
        # Tokenising, preprocessing and baselines only, from the one-modality explainers: the towers carry a config.
        self.texts = TextExplainer(model.text_model, tokenizer, self.label_names, max_length, cache_size=0)
        self.images = ImageExplainer(model.vision_model, image_processor, self.label_names, cache_size=0)
        self.max_length = self.texts.max_length
        self.word_embedding_layer = model.text_model.get_input_embeddings()
        self.name, self.run_id, self.stage = name, None, None  # load_pair_explainer sets the run and stage
        self._cache, self._lock = LRUCache(cache_size), threading.RLock()

    @classmethod
    def from_stage(cls, stage, word: int | None = None) -> PairExplainer:
        """The explainer of one opened stage of an image-text run (`core.stages.open_stage`)."""
        image_processor, tokenizer = stage.preprocessor
        kind = stage.extras["kind"]
        return cls(
            stage.model,
            image_processor,
            tokenizer,
            kind,
            stage.label_names if kind == "classification" else None,
            name=f"{stage.run.name} ({stage.run.id}, {stage.stage})",
        )

    def __repr__(self) -> str:
        return f"PairExplainer({self.name or type(self.model).__name__}, {self.kind})"

    # -- the public verbs ------------------------------------------------------------------------

    def explain(
        self, image, text: str, method: str = "ig", target: int | str | None = None, grid: int | Sequence[int] = 7, **params
    ) -> Explanation:
        """Attribution scores for every shown token of `text` and every cell of a grid over `image`, together.

        `image` is a PIL image, an (H, W, 3) uint8 array, a file path, or a pair reference like
        "shapes-captions#12". `target` (classification only) names a class or gives its index; None explains
        the predicted class. `params` are the method's (see `methods_for("pairs")[method].defaults`). Cached.
        """
        attribution = get_method(method, self.modality)
        used = attribution.check_params(params)
        target_index = self.target_index(target)
        with self._lock:
            prepared = self.prepare(image, text)
            cells = patches.as_grid(grid, *prepared.image.size)
            key = (
                "pair",
                prepared.image.key,
                prepared.text.text,
                attribution.key,
                target_index,
                cells,
                tuple(sorted(used.items())),
            )
            found = self._cache.get(key)
            if found is None:
                found = self._cache.put(key, self._compute(prepared, attribution, target_index, cells, used))
            return found

    def explain_word(
        self, image, text: str, word: str, target: int | str | None = None, grid: int | Sequence[int] = 7, **params
    ) -> Explanation:
        """Which patches make `word` count in this caption: a patch `Explanation` (draw it with `patch_overlay`).

        With c the caption and c-w the caption with every piece of `word` replaced by the text baseline, the
        word's effect on an image is g(image) = f(image, c) - f(image, c-w); the map is Integrated Gradients of g
        over the image, from the image baseline to the image, the text held fixed (`params` as for "ig": steps,
        text_baseline for the hidden word, image_baseline). A patch scores high when its pixels are what makes
        this word raise the score, and by completeness the patch scores add up to g(x) - g(b)
        (`output_difference`), up to `delta`. The baseline should remove what the word names: "grey" for a
        colour word (a blur keeps colours), the default "blur" for a shape or object word.
        Why this and not the alternatives: the joint map of the full caption gives each patch one number for all
        words together (completeness splits the score over units, not over word-patch pairs), and the map of
        the pair (image, the word alone) asks the model about a one-word text it was never trained on, away from
        the caption it actually read.
        """
        attribution = get_method("ig", "pairs")
        used = attribution.check_params(params)
        target_index = self.target_index(target)
        with self._lock:
            prepared = self.prepare(image, text)
            cells = patches.as_grid(grid, *prepared.image.size)
            positions = self.word_positions(prepared.text, word)
            key = (
                "word",
                prepared.image.key,
                prepared.text.text,
                tuple(positions),
                target_index,
                cells,
                tuple(sorted(used.items())),
            )
            found = self._cache.get(key)
            if found is None:
                found = self._cache.put(key, self._word_map(prepared, word, positions, target_index, cells, used))
            return found

    def score(self, image, text: str, target: int | str | None = None) -> float:
        """f(image, text): the scaled cosine of a similarity model; a classifier's logit of `target` (None: predicted)."""
        with self._lock:
            prepared = self.prepare(image, text)
            outputs = self.logits(prepared)
            return float(outputs[self.resolve_target(prepared, self.target_index(target)) or 0])

    def probabilities(self, image, text: str) -> dict[str, float]:
        """Class name -> probability for a fusion classifier (a similarity model has no classes)."""
        if self.kind != "classification":
            raise UserError("A similarity model scores a pair, it has no classes; use score() for its scaled cosine.")
        with self._lock:
            probabilities = self.logits(self.prepare(image, text)).float().softmax(-1).cpu().numpy()
        return {label: float(p) for label, p in zip(self.label_names, probabilities)}

    def input_image(self, image) -> Image.Image:
        """The image resized and cropped exactly as the model sees it, for `core.viz.patch_overlay`."""
        return self.images.input_image(self.picture(image)[0])

    def with_model(self, model, cache_size: int = 0) -> PairExplainer:
        """The same processors, kind and labels around another model (e.g. a randomised copy)."""
        twin = PairExplainer(
            model,
            self.image_processor,
            self.tokenizer,
            self.kind,
            self.label_names if self.kind == "classification" else None,
            self.max_length,
            cache_size,
            self.name,
        )
        twin.run_id, twin.stage = self.run_id, self.stage
        return twin

    def clear_cache(self) -> None:
        self._cache.clear()

    def target_index(self, target: int | str | None) -> int | None:
        """A class index for a classifier (same rules and sentences as text); a similarity model has no target."""
        return self.texts.target_index(target) if self.kind == "classification" else None

    # -- what the methods call -------------------------------------------------------------------

    def prepare(self, image, text: str) -> PreparedPair:
        if not isinstance(text, str) or not text.strip():
            raise UserError("The text is empty; type a caption or question to pair with the image.")
        picture, reference = self.picture(image)
        prepared_image = self.images.prepare(picture)
        prepared_image.reference = reference
        encoded = self.texts.encode(text)
        if not encoded.shown:
            raise UserError("The text has no tokens once tokenised; type words to pair with the image.")
        return PreparedPair(prepared_image, encoded)

    def picture(self, image) -> tuple[Any, str]:
        """(the image, its path or reference): a file path or a pair reference is opened here; a PIL image or an
        array is passed on as it is, for the image modality's own rules and sentences."""
        if not isinstance(image, (str, Path)):
            return image, ""
        reference = str(image)
        if Path(reference).is_file():
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(reference) as opened:
                    return opened.convert("RGB"), reference
            except (UnidentifiedImageError, OSError):
                raise UserError(f"{reference} is not an image that can be read; pick a PNG or JPEG file.") from None
        if "#" in reference:
            from core.image_text.data import open_pair_record

            return open_pair_record(reference)["image"], reference
        raise UserError(f"There is no image file {reference}; give the path of a PNG or JPEG file.")

    def inputs(self, prepared: PreparedPair) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values (1, 3, H, W), word embeddings (1, L, D)), without gradient history."""
        return prepared.image.pixels, self.texts.embeddings(prepared.text)

    def baseline_inputs(self, prepared: PreparedPair, used: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.baselines(prepared, used["image_baseline"], used["text_baseline"])

    def outputs(self, prepared: PreparedPair, pixel_values: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, C) for N pairs: a classifier's logits, or a similarity model's one score as a column."""
        outputs = self.forward(pixel_values, embeddings, prepared.text)
        return outputs if self.kind == "classification" else outputs.unsqueeze(-1)

    def remember(self, prepared: PreparedPair, row: torch.Tensor) -> None:
        prepared.outputs = row.reshape(-1)

    def unit_maps(self, prepared: PreparedPair, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's cells (ids 0 .. rows * cols - 1), then the text's positions (ids after them)."""
        import torch

        device = prepared.image.pixels.device
        cells = torch.from_numpy(patches.cell_mask(*prepared.image.size, grid)).to(device).view(1, 1, *prepared.image.size)
        length = prepared.text.input_ids.shape[1]
        return cells, grid[0] * grid[1] + torch.arange(length, device=device).view(1, length, 1)

    def unit_layouts(self, prepared: PreparedPair, grid: tuple[int, int]) -> tuple[tuple[int, int], tuple[int]]:
        return tuple(grid), (int(prepared.text.input_ids.shape[1]),)

    def fold(self, raw: tuple, signed: bool) -> tuple[np.ndarray, np.ndarray]:
        """(an (H, W) pixel map, channels summed; (L,) token scores over the embedding), or their magnitudes."""
        pixels, tokens = raw
        pixel_map = (pixels[0] if signed else pixels[0].abs()).sum(0)
        token_scores = tokens[0].sum(-1) if signed else tokens[0].norm(dim=-1)
        return pixel_map.double().cpu().numpy(), token_scores.double().cpu().numpy()

    def feature_map_layer(self, prepared):
        return None

    def baselines(self, prepared: PreparedPair, image_kind: str, text_kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The baseline pair: the image's (mean / black / blur / grey) and the text's (pad / mask / zero)."""
        return self.image_baseline(prepared.image, image_kind), self.texts.baseline_embeddings(prepared.text, text_kind)

    def image_baseline(self, prepared: PreparedImage, kind: str) -> torch.Tensor:
        """(1, 3, H, W): the image modality's baselines, and "grey", the image desaturated by the processor's own path."""
        if kind != "grey":
            return self.images.baseline(prepared, kind)
        if kind not in prepared.baselines:
            from PIL import ImageOps

            grey = ImageOps.grayscale(prepared.image).convert("RGB")
            prepared.baselines[kind] = self.image_processor(images=grey, return_tensors="pt")["pixel_values"].to(prepared.pixels)
        return prepared.baselines[kind]

    def forward(self, pixel_values: torch.Tensor, embeddings: torch.Tensor, encoded: EncodedText) -> torch.Tensor:
        """Scores (N,) of a similarity model or logits (N, C) of a classifier for N pairs; a batch of one is repeated."""
        from core.image_text.models import pair_scores

        rows = max(pixel_values.shape[0], embeddings.shape[0])
        text = {"input_ids": encoded.input_ids.expand(rows, -1), "attention_mask": encoded.attention_mask.expand(rows, -1)}
        if encoded.token_type_ids is not None:
            text["token_type_ids"] = encoded.token_type_ids.expand(rows, -1)
        pixel_values = pixel_values.expand(rows, -1, -1, -1)
        with replaced_output(self.word_embedding_layer, embeddings.expand(rows, -1, -1)):
            if self.kind == "similarity":
                return pair_scores(self.model, pixel_values, **text)
            return self.model(pixel_values=pixel_values, **text).logits

    def scorer(self, prepared: PreparedPair, target: int | None):
        """f as Captum wants it: (pixel_values, embeddings) -> (N,) scores of this text's pairs."""

        def score(pixel_values, embeddings):
            outputs = self.forward(pixel_values, embeddings, prepared.text)
            return outputs if target is None else outputs[:, target]

        return score

    def logits(self, prepared: PreparedPair) -> torch.Tensor:
        """(C,) logits of a classifier, (1,) the score of a similarity model; computed once per prepared pair."""
        import torch

        if prepared.outputs is None:
            with torch.no_grad():
                prepared.outputs = self.forward(*self.inputs(prepared), prepared.text).reshape(-1).detach()
        return prepared.outputs

    def resolve_target(self, prepared: PreparedPair, target: int | None) -> int | None:
        if self.kind == "similarity":
            return None
        return int(self.logits(prepared).argmax()) if target is None else int(target)

    def batch_rows(self, prepared: PreparedPair, rows: int) -> int:
        height, width = prepared.image.size
        length = prepared.text.input_ids.shape[1]
        return max(1, min(rows, PIXELS_PER_BATCH // max(height * width, 1), TOKENS_PER_BATCH // max(length, 1)))

    def word_positions(self, encoded: EncodedText, word: str) -> list[int]:
        """Positions of every piece of every occurrence of `word` in the text (as it starts a word or stands alone)."""
        if not isinstance(word, str) or not word.strip():
            raise UserError("Type a word of the text to see which patches match it.")
        ids = encoded.input_ids[0].tolist()
        shown = set(encoded.shown)
        found: set[int] = set()
        for variant in (word.strip(), " " + word.strip()):  # byte-level BPE spells a word after a space differently
            pieces = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
            for start in range(len(ids) - len(pieces) + 1) if pieces else ():
                span = range(start, start + len(pieces))
                if ids[start : start + len(pieces)] == pieces and shown.issuperset(span):
                    found.update(span)
        if not found:
            raise UserError(f"'{word.strip()}' is not a word of the text '{encoded.text}'; pick one of its words.")
        return sorted(found)

    # -- internals -------------------------------------------------------------------------------

    def _compute(
        self,
        prepared: PreparedPair,
        attribution: AttributionMethod,
        target: int | None,
        grid: tuple[int, int],
        used: dict[str, Any],
    ) -> Explanation:
        import torch

        started = time.perf_counter()
        target = self.resolve_target(prepared, target)
        with torch.enable_grad():  # a caller inside torch.no_grad() still gets gradients
            (values, token_scores), delta, difference = attribution.attribute(self, prepared, target, grid, **used)
        values = np.asarray(values, dtype=np.float64)
        cells = values if values.shape == grid else patches.aggregate(values, grid)  # a pixel map, or already cells
        shown = prepared.text.shown
        token_scores = np.asarray(token_scores, dtype=np.float64)[shown]
        score = float(self.logits(prepared)[target or 0])
        return Explanation(
            parts=make_parts(
                ("tokens", [prepared.text.tokens[i] for i in shown], token_scores, [len(shown)]),
                ("patches", patches.unit_names(grid), cells.ravel(), grid),
            ),
            method=attribution.key,
            modality=self.modality,
            kind=self.kind,
            score=score,
            baseline_score=None if difference is None else score - difference,
            delta=None if delta is None else float(delta),
            output_difference=None if difference is None else float(difference),
            seconds=time.perf_counter() - started,
            params={**used, "grid": [grid[0], grid[1]], "input_size": list(prepared.image.size)},
            signed=attribution.signed,
            text=prepared.text.text,
            image=prepared.image.reference,
            truncated=prepared.text.truncated,
            **self._target_fields(prepared, target),
        )

    def _word_map(
        self,
        prepared: PreparedPair,
        word: str,
        positions: list[int],
        target: int | None,
        grid: tuple[int, int],
        used: dict[str, Any],
    ) -> Explanation:
        import torch
        from captum.attr import IntegratedGradients

        started = time.perf_counter()
        target = self.resolve_target(prepared, target)
        pixels, embeddings = self.inputs(prepared)
        blank_pixels, blank_embeddings = self.baselines(prepared, used["image_baseline"], used["text_baseline"])
        without = embeddings.clone()
        without[0, positions] = blank_embeddings[0, positions]
        both_texts = torch.cat([embeddings, without])
        forward = self.scorer(prepared, target)

        def effect(pixel_values):  # g: the word's effect on the score, for each image in the batch
            rows = pixel_values.shape[0]
            scores = forward(pixel_values.repeat(2, 1, 1, 1), both_texts.repeat_interleave(rows, dim=0))
            return scores[:rows] - scores[rows:]

        with torch.no_grad():
            real, blank = effect(torch.cat([pixels, blank_pixels])).double().tolist()
        with torch.enable_grad():
            attributions = IntegratedGradients(effect).attribute(
                pixels,
                baselines=blank_pixels,
                n_steps=used["steps"],
                internal_batch_size=max(1, self.batch_rows(prepared, used["steps"]) // 2),
            )
        cells = patches.aggregate(attributions[0].detach().double().cpu().numpy(), grid)
        difference = real - blank
        return Explanation(
            parts=make_parts(("patches", patches.unit_names(grid), cells.ravel(), grid)),
            method="ig",
            modality="patches",
            kind=self.kind,
            score=real,
            baseline_score=blank,
            delta=float(cells.sum()) - difference,
            output_difference=difference,
            seconds=time.perf_counter() - started,
            params={
                **used,
                "grid": list(grid),
                "input_size": list(prepared.image.size),
                "word": word.strip(),
                "word_tokens": [prepared.text.tokens[i] for i in positions],
                "effect_on_image": real,
            },
            truncated=prepared.text.truncated,
            signed=True,
            text=prepared.text.text,
            image=prepared.image.reference,
            **self._target_fields(prepared, target),
        )

    def _target_fields(self, prepared: PreparedPair, target: int | None) -> dict[str, Any]:
        if self.kind == "similarity":  # one output, the match
            return {
                "target": None,
                "target_label": SIMILARITY_LABEL,
                "predicted": None,
                "predicted_label": SIMILARITY_LABEL,
                "probabilities": [],
            }
        probabilities = self.logits(prepared).float().softmax(-1).cpu().numpy()
        predicted = int(probabilities.argmax())
        return {
            "target": target,
            "target_label": self.label_names[target],
            "predicted": predicted,
            "predicted_label": self.label_names[predicted],
            "probabilities": [float(p) for p in probabilities],
        }


# ---------------------------------------------------------------------------------------------
# Loading a run's model


__all__ = [
    "KINDS",
    "PAIRS",
    "PairExplainer",
    "PreparedPair",
]
