"""Token attribution for one word's tag in a named-entity (token classification) model.

A token classifier gives every word piece its own class scores. Picking one word turns it into a
classifier of that word's tag: its first word piece's logits stand in for the class scores, and
every text method in the registry (IG, occlusion, ...) then explains them over the sentence's tokens.
"""

from __future__ import annotations

from core.errors import UserError
from core.explain.text import EncodedText, TextExplainer


class TagExplainer(TextExplainer):
    """Explains the tag a NER model gives word `word_index` of a whitespace-separated sentence."""

    def __init__(self, model, tokenizer, word_index: int, label_names=None, max_length: int | None = None, name: str = ""):
        super().__init__(model, tokenizer, label_names=label_names, max_length=max_length, name=name)
        self.word_index = word_index
        self.position: int | None = None  # the word's first word piece in the last encoded sentence

    @classmethod
    def from_stage(cls, stage, word: int | None = None) -> TagExplainer:
        """The explainer of word `word`'s tag under one opened stage of a NER run (`core.stages.open_stage`)."""
        if word is None:
            raise UserError(f"Run {stage.run.id} is a named-entity run: say which word's tag to explain.")
        return cls(
            stage.model,
            stage.preprocessor,
            word,
            stage.label_names,
            stage.max_length,
            name=f"{stage.run.name} ({stage.run.id}, {stage.stage})",
        )

    def encode(self, text: str) -> EncodedText:
        import torch

        words = text.split()
        if not 0 <= self.word_index < len(words):
            raise UserError(
                f"There is no word {self.word_index} in a sentence of {len(words)} words; pick a word of the sentence."
            )
        encoding = self.tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=self.max_length, return_special_tokens_mask=True
        )
        word_ids = encoding.word_ids()
        if self.word_index not in word_ids:
            raise UserError(
                f"Word {self.word_index} ('{words[self.word_index]}') was cut off at the max length of "
                f"{self.max_length} tokens; pick an earlier word."
            )
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
