"""Token attribution for one word's tag in a named-entity (token classification) model.

A token classifier gives every word piece its own class scores. Picking one word turns it into a
classifier of that word's tag: its first word piece's logits stand in for the class scores, and
every text method in the registry (IG, occlusion, ...) then explains them over the sentence's tokens.
"""

from __future__ import annotations

from core.errors import UserError
from core.explain.cache import LRUCache
from core.explain.text import EXPLAINER_CACHE_SIZE, EncodedText, TextExplainer

WORD_EXPLAINERS = 64  # words whose explanations stay cached (each shares its stage's one model)


class TagExplainer(TextExplainer):
    """Explains the tag a NER model gives word `word_index` of a whitespace-separated sentence."""

    def __init__(self, model, tokenizer, word_index: int, label_names=None, max_length: int | None = None, name: str = ""):
        super().__init__(model, tokenizer, label_names=label_names, max_length=max_length, name=name)
        self.word_index = word_index
        self.position: int | None = None  # the word's first word piece in the last encoded sentence

    def encode(self, text: str) -> EncodedText:
        import torch

        words = text.split()
        if not 0 <= self.word_index < len(words):
            raise UserError(f"There is no word {self.word_index} in a sentence of {len(words)} words; pick a word of the sentence.")
        encoding = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length,
                                  return_special_tokens_mask=True)
        word_ids = encoding.word_ids()
        if self.word_index not in word_ids:
            raise UserError(f"Word {self.word_index} ('{words[self.word_index]}') was cut off at the max length of "
                            f"{self.max_length} tokens; pick an earlier word.")
        self.position = word_ids.index(self.word_index)
        ids = encoding["input_ids"]
        types = encoding.get("token_type_ids")
        device = self.device
        return EncodedText(
            text=text,
            input_ids=torch.tensor([ids], device=device),
            attention_mask=torch.tensor([encoding["attention_mask"]], device=device),
            token_type_ids=torch.tensor([types], device=device) if types is not None else None,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            special=[bool(flag) for flag in encoding["special_tokens_mask"]],
            truncated=max(i for i in word_ids if i is not None) < len(words) - 1,
        )

    def forward(self, embeddings, attention_mask, token_type_ids=None):
        """Logits (N, tags) of the chosen word, for word embeddings (N, L, H)."""
        return super().forward(embeddings, attention_mask, token_type_ids)[:, self.position, :]


# The stage's model, loaded once for every word of every sentence; and the explainer of each word (with its cache).
_MODELS = LRUCache(EXPLAINER_CACHE_SIZE)
_EXPLAINERS = LRUCache(WORD_EXPLAINERS)


def load_tag_explainer(run_id: str, word_index: int, stage: str | None = None) -> TagExplainer:
    """An explainer for one word's tag under a NER run's model (`stage` None: the latest), kept for the next call.

    The model is loaded once per (workspace, run, stage, time the stage's model was written); picking another word
    or sentence reuses it, so a page calling this on every click loads the model once.
    """
    from core.checkpoints import latest_stage, stage_folder
    from core.store import RunStore
    from core.workspace import workspace_root

    run = RunStore().get(run_id)
    if run is None:
        raise UserError(f"There is no run '{run_id}' in this workspace; `python -m core runs` lists the runs there are.")
    if run.task != "token_classification":
        raise UserError(f"Run {run_id} is not a named-entity run; tag explanations need a token classification run.")
    stage = stage or latest_stage(run)
    written = stage_folder(run, stage) / "config.json"
    key = (str(workspace_root()), run_id, stage, written.stat().st_mtime_ns if written.exists() else None)
    found = _EXPLAINERS.get((key, word_index))
    if found is not None:
        return found
    model, tokenizer, max_length = _MODELS.get(key) or _MODELS.put(key, stage_tagger(run, stage))
    explainer = TagExplainer(model, tokenizer, word_index, max_length=max_length, name=f"{run.name} ({run.id}, {stage})")
    explainer.run_id, explainer.stage = run_id, stage
    return _EXPLAINERS.put((key, word_index), explainer)


def stage_tagger(run, stage: str) -> tuple:
    """(token classifier without parameter gradients, tokenizer, the run's max length) of one stage."""
    from core.checkpoints import load_stage_model
    from core.run_files import run_config

    model, tokenizer = load_stage_model(run, stage, "AutoModelForTokenClassification")
    for parameter in model.parameters():  # only input gradients are needed
        parameter.requires_grad_(False)
    return model, tokenizer, run_config(run).max_length


def clear_tag_explainer_cache() -> None:
    _MODELS.clear()
    _EXPLAINERS.clear()
