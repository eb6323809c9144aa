"""A causal language model's answer, explained over the prompt's tokens: which prompt words made it answer so.

    explainer = load_explainer(run_id)                      # an instruction-tuning run's answers view
    explanation = explainer.explain("Review: a superb film\\nIs this review positive or negative?")
    explanation.target_label                                # "whole answer"; target=j explains the j-th answer token
    grid = explainer.explain_grid(prompt)                   # answer tokens x prompt tokens, one explanation per row

The answer (generated greedily when not given) is fed back after the prompt, and the explained output is its log-
probability: of one answer token (`target` j) or of the whole answer (`target` None, the sum over its tokens, as
Captum's `LLMAttribution` totals its per-token attributions). It is the text adapter with other outputs: the chat
format's own tokens and the answer's are held at their values, so only the prompt's words are attributed, and every
token method (IG, occlusion, LIME, ...) works unchanged. A decoder has no [MASK] token: its baselines are the end-of-
text token that pads it ("pad"), zero embeddings, or removing words one at a time (occlusion).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import UserError
from core.explain.base import Explanation, make_parts
from core.explain.methods import get_method
from core.explain.text import EncodedText, TextExplainer

WHOLE_ANSWER = "whole answer"
MAX_GRID_TOKENS = 16  # answer tokens explained one by one in a grid (each costs one attribution)


@dataclass
class EncodedAnswer(EncodedText):
    """A formatted prompt followed by its answer: `answer_ids` start at `prompt_length`."""

    answer: str = ""
    answer_ids: list[int] | None = None
    prompt_length: int = 0


class AnswerExplainer(TextExplainer):
    """Explanations of a causal LM's answers; `max_length` bounds prompt plus answer, as in training."""

    def __init__(self, model, tokenizer, max_length: int | None = None, max_new_tokens: int = 32, **kwargs):
        super().__init__(model, tokenizer, label_names=[], max_length=max_length, **kwargs)
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_stage(cls, stage, word: int | None = None) -> AnswerExplainer:
        return cls(
            stage.model,
            stage.preprocessor,
            stage.max_length,
            max_new_tokens=int(stage.extras.get("max_new_tokens", 32)),
            name=f"{stage.run.name} ({stage.run.id}, {stage.stage})",
        )

    def with_model(self, model, cache_size: int = 0) -> AnswerExplainer:
        """The same tokenizer and limits around another model (e.g. a randomised copy for the sanity check, which then
        explains the trained model's answer: pass it as `answer=`)."""
        twin = AnswerExplainer(model, self.tokenizer, self.max_length, self.max_new_tokens, cache_size=cache_size, name=self.name)
        twin.run_id, twin.stage = self.run_id, self.stage
        return twin

    def answer(self, prompt: str) -> str:
        """The model's greedy answer to `prompt`."""
        from core.instructions.generation import Sampling, generate_answers

        prompt = self._check_text(prompt)
        with self._lock:
            return generate_answers(self.model, self.tokenizer, [prompt], self.max_length, Sampling(self.max_new_tokens))[0]

    def explain(
        self,
        prompt: str,
        method: str = "ig",
        target: int | str | None = None,
        merge_words: bool = False,
        answer: str | None = None,
        **params,
    ) -> Explanation:
        """Attribution of the answer (`answer`, or the model's greedy one) to each prompt token. `target` None (or the
        answer's token count) explains the whole answer, an int the answer's token of that index."""
        from core.explain.text import merge_word_pieces

        prompt = self._check_text(prompt)
        attribution = get_method(method, self.modality)
        reason = attribution.applies_to(self.model)
        if reason:
            raise UserError(reason)
        used = attribution.check_params(params)
        answer = self.answer(prompt) if answer is None else answer
        key = (prompt, answer, attribution.key, target, tuple(sorted(used.items())))
        with self._lock:
            explanation = self._cache.get((key, False))
            if explanation is None:
                encoded = self.encode_answer(prompt, answer)
                explanation = self._cache.put((key, False), self._explain_answer(encoded, attribution, target, used))
            return merge_word_pieces(explanation) if merge_words else explanation

    def faithfulness_input(self, prompt: str, explanation: Explanation) -> tuple:
        raise UserError(
            "The faithfulness card measures a class probability; an answer's maps have none yet. Use the sanity check."
        )

    def explain_grid(self, prompt: str, method: str = "ig", answer: str | None = None, **params) -> list[Explanation]:
        """One explanation per answer token (at most MAX_GRID_TOKENS), in order: the rows of a tokens x tokens map."""
        answer = self.answer(prompt) if answer is None else answer
        tokens = len(self.encode_answer(prompt, answer).answer_ids)
        return [self.explain(prompt, method, index, answer=answer, **params) for index in range(min(tokens, MAX_GRID_TOKENS))]

    # -- the input adapter: the text adapter's, with the answer's log-probabilities as outputs ----------------

    def encode_answer(self, prompt: str, answer: str) -> EncodedAnswer:
        """Ids of the formatted prompt (cut from the left to leave the answer room) and the answer; only the prompt's
        own words are shown, the chat format's tokens and the answer's are held fixed."""
        import torch

        from core.instructions.encoding import fit_prompt

        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not answer_ids:
            raise UserError("The answer is empty, so there is nothing to explain; generate one or type an answer.")
        question, cut = fit_prompt(self.tokenizer, prompt, self.max_length - len(answer_ids))
        ids = question + answer_ids
        shown = set(content_positions(self.tokenizer, question))
        device = self.device
        return EncodedAnswer(
            text=prompt,
            input_ids=torch.tensor([ids], device=device),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
            token_type_ids=None,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            special=[index not in shown for index in range(len(ids))],
            truncated=cut > 0,
            answer=answer,
            answer_ids=answer_ids,
            prompt_length=len(question),
        )

    def forward(self, embeddings, attention_mask, token_type_ids=None, encoded: EncodedAnswer | None = None):
        """(N, answer tokens + 1): each answer token's log-probability after what precedes it, and their sum."""
        import torch

        rows = embeddings.shape[0]
        mask = attention_mask.expand(rows, -1) if attention_mask.shape[0] != rows else attention_mask
        logits = self.model(inputs_embeds=embeddings, attention_mask=mask).logits.float()
        start = encoded.prompt_length
        # Position t predicts token t + 1: the answer's tokens are predicted from one position earlier.
        predicting = logits[:, start - 1 : start - 1 + len(encoded.answer_ids)].log_softmax(-1)
        wanted = torch.tensor(encoded.answer_ids, device=logits.device).view(1, -1, 1).expand(rows, -1, 1)
        per_token = predicting.gather(-1, wanted).squeeze(-1)
        return torch.cat([per_token, per_token.sum(-1, keepdim=True)], dim=-1)

    def forward_args(self, encoded: EncodedText) -> tuple:
        return (encoded.attention_mask, None, encoded)

    def resolve_target(self, encoded: EncodedAnswer, target: int | None) -> int:
        return len(encoded.answer_ids) if target is None else int(target)

    def answer_tokens(self, encoded: EncodedAnswer) -> list[str]:
        return [self.tokenizer.decode([token]) for token in encoded.answer_ids]

    def _explain_answer(self, encoded: EncodedAnswer, attribution, target: int | str | None, used: dict[str, Any]) -> Explanation:
        import torch

        index = self.answer_index(encoded, target)
        started = time.perf_counter()
        if not encoded.shown:
            raise UserError("The prompt has no words once tokenised; type a prompt with words in it.")
        with torch.enable_grad():
            (scores,), delta, difference = attribution.attribute(self, encoded, index, None, **used)
        outputs = self.logits(encoded)
        scores = np.asarray(scores, dtype=np.float64)
        shown = encoded.shown
        pieces = self.answer_tokens(encoded)
        label = WHOLE_ANSWER if index == len(pieces) else pieces[index]
        return Explanation(
            parts=make_parts(("tokens", [encoded.tokens[i] for i in shown], scores[shown], [len(shown)])),
            method=attribution.key,
            target=index,
            target_label=label,
            predicted=None,
            predicted_label=encoded.answer,
            probabilities=[float(np.exp(value)) for value in outputs[:-1].cpu().numpy()],
            delta=None if delta is None else float(delta),
            output_difference=None if difference is None else float(difference),
            seconds=time.perf_counter() - started,
            params={**used, "answer_tokens": pieces},
            truncated=encoded.truncated,
            modality=self.modality,
            signed=attribution.signed,
            text=encoded.text,
            kind="generation",
            score=float(outputs[index]),
        )

    def answer_index(self, encoded: EncodedAnswer, target: int | str | None) -> int:
        count = len(encoded.answer_ids)
        if target is None or target == WHOLE_ANSWER:
            return count
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target)
        # The index one past the last token is the whole answer, as an explanation's `target` records it.
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= int(target) <= count:
            raise UserError(
                f"The answer '{encoded.answer}' has {count} tokens, numbered 0 to {count - 1}; pick one of them, or "
                f"{count} (or none) for the whole answer."
            )
        return int(target)


def content_positions(tokenizer, question_ids: list[int]) -> list[int]:
    """Positions of the prompt's own text within its formatted ids (the chat format's tokens around it excluded):
    the tokens whose characters fall inside the user's text, found through the fast tokenizer's offsets."""
    from core.instructions.encoding import uses_chat_template

    text = tokenizer.decode(question_ids)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoding["input_ids"] != question_ids or not uses_chat_template(tokenizer):
        # A plain prompt is its text and a newline (and a BOS): every token but the special ones and that newline.
        special = set(tokenizer.all_special_ids)
        last = len(question_ids) - 1
        return [i for i, token in enumerate(question_ids) if token not in special and i != last]
    start, end = user_span(tokenizer, text)
    return [index for index, (low, high) in enumerate(encoding["offset_mapping"]) if low >= start and high <= end and high > low]


def user_span(tokenizer, text: str) -> tuple[int, int]:
    """The character span of the (last) user message in a formatted chat prompt: between the user turn's header and
    the assistant header that the template writes after it."""
    marker = "\x00PROMPT\x00"
    template = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True)
    before, after = template.split(marker)
    return len(before), len(text) - len(after)
