"""Prompt/response pairs as a causal language model trains on them: the prompt in the model's chat format (or a plain
line when it has none), the response and an end-of-text token after it, and the loss on the response tokens only.

A prompt longer than the room left by its response is cut from the left at a word boundary, inside the chat format
(the format's header stays), so the words nearest the answer survive; `EncodedPair.cut_words` says how many went.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError

IGNORED = -100  # the label id the loss skips (transformers' and PyTorch's cross-entropy convention)
CUT_MARK = "… "  # what stands for the words cut from a prompt's start
MIN_PROMPT_TOKENS = 4  # below this a response leaves its prompt no room worth keeping


@dataclass(frozen=True)
class EncodedPair:
    input_ids: list[int]
    labels: list[int]  # IGNORED on the prompt, the token ids on the response and its end-of-text token
    prompt_length: int  # tokens of the formatted prompt: the response starts here
    cut_words: int  # words cut from the prompt's start to fit max_length (0: none)


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, prompt: str) -> str:
    """The text the model continues: the chat template's user turn and assistant header, or the prompt and a newline."""
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return f"{prompt}\n"


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    # A chat template writes its own special tokens; a plain prompt gets the tokenizer's (a LLaMA BOS, say).
    return tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]


def response_ids(tokenizer, response: str) -> list[int]:
    """The response's tokens and the end-of-text token that teaches the model to stop."""
    if tokenizer.eos_token_id is None:
        raise UserError("This model's tokenizer has no end-of-text token, so it cannot learn where an answer stops.")
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def fit_prompt(tokenizer, prompt: str, room: int) -> tuple[list[int], int]:
    """The formatted prompt's ids within `room` tokens, and how many words were cut from its start to fit.

    Binary search over the first kept word: a few tokenizations, not one per word."""
    ids = prompt_ids(tokenizer, prompt)
    if len(ids) <= room:
        return ids, 0
    words = prompt.split()
    low, high = 1, len(words)  # cutting `high` words (all) always fits if anything does
    while low < high:
        middle = (low + high) // 2
        if len(prompt_ids(tokenizer, CUT_MARK + " ".join(words[middle:]))) <= room:
            high = middle
        else:
            low = middle + 1
    kept = prompt_ids(tokenizer, CUT_MARK + " ".join(words[low:]))
    if len(kept) > room:
        raise UserError(
            f"Even with every word of a prompt cut, its chat format takes {len(kept)} tokens, more than the {room} left: "
            "raise the max length."
        )
    return kept, low


def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> EncodedPair:
    """One training example: prompt tokens masked out of the loss, response tokens and end-of-text learned."""
    answer = response_ids(tokenizer, response)
    room = max_length - len(answer)
    if room < MIN_PROMPT_TOKENS:
        raise UserError(
            f"A response of {len(answer)} tokens leaves its prompt {max(room, 0)} of the max length's {max_length} tokens; "
            "raise the max length or shorten the responses."
        )
    question, cut = fit_prompt(tokenizer, prompt, room)
    return EncodedPair(
        input_ids=question + answer, labels=[IGNORED] * len(question) + answer, prompt_length=len(question), cut_words=cut
    )


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int):
    """A `datasets.Dataset` of input_ids / attention_mask / labels, and how many prompts were cut to fit."""
    from datasets import Dataset

    encoded = [encode_pair(tokenizer, prompt, response, max_length) for prompt, response in zip(prompts, responses)]
    table = Dataset.from_dict(
        {
            "input_ids": [pair.input_ids for pair in encoded],
            "attention_mask": [[1] * len(pair.input_ids) for pair in encoded],
            "labels": [pair.labels for pair in encoded],
        }
    )
    return table, sum(pair.cut_words > 0 for pair in encoded)
