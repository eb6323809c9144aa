"""Answers of a causal language model to prompts: batched generation with the KV cache (greedy unless a temperature
is given), and each reference answer's loss under the model (teacher-forced, response tokens only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.instructions.encoding import IGNORED, encode_pair, fit_prompt

GENERATE_BATCH = 16
DEFAULT_NEW_TOKENS = 32


@dataclass(frozen=True)
class Sampling:
    """How answers are drawn: greedy (temperature 0) by default; temperature and top-p sample."""

    max_new_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    max_length: int,
    sampling: Sampling = Sampling(),
    batch_size: int = GENERATE_BATCH,
    progress: Callable[[float, str], None] | None = None,
) -> list[str]:
    """The model's answer to each prompt, in order. Prompts are left-padded so every row's answer starts at the same
    column, and cut from the left to leave room for `sampling.max_new_tokens` within `max_length`."""
    import torch

    room = max(1, max_length - sampling.max_new_tokens)
    answers: list[str] = []
    was_training = model.training
    model.eval()
    if sampling.temperature > 0:
        torch.manual_seed(sampling.seed)
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [fit_prompt(tokenizer, prompt, room)[0] for prompt in prompts[start : start + batch_size]]
            input_ids, attention_mask = left_padded(rows, tokenizer.pad_token_id, model.device)
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature if sampling.temperature > 0 else None,
                    top_p=sampling.top_p if sampling.temperature > 0 else None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    use_cache=True,
                )
            new = output[:, input_ids.shape[1] :]
            answers += [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
            if progress:
                progress(len(answers) / max(1, len(prompts)), f"Generated {len(answers)} of {len(prompts)} answers")
    finally:
        model.train(was_training)
    return answers


def left_padded(rows: list[list[int]], pad_id: int, device):
    """(input_ids, attention_mask) with each row's tokens at the right end: generation continues every row at once."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row)
        mask[index, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def answer_losses(
    model, tokenizer, prompts: list[str], responses: list[str], max_length: int, batch_size: int = GENERATE_BATCH
) -> np.ndarray:
    """Each reference response's mean cross-entropy per token given its prompt (what training minimises)."""
    import torch

    losses: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            pairs = [
                encode_pair(tokenizer, prompt, response, max_length)
                for prompt, response in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
            ]
            width = max(len(pair.input_ids) for pair in pairs)
            ids = torch.full((len(pairs), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(pairs), width), IGNORED, dtype=torch.long)
            mask = torch.zeros((len(pairs), width), dtype=torch.long)
            for index, pair in enumerate(pairs):
                ids[index, : len(pair.input_ids)] = torch.tensor(pair.input_ids)
                labels[index, : len(pair.labels)] = torch.tensor(pair.labels)
                mask[index, : len(pair.input_ids)] = 1
            with torch.inference_mode():
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
            # Position t predicts token t + 1.
            shifted, targets = logits[:, :-1], labels[:, 1:].to(logits.device)
            token_loss = torch.nn.functional.cross_entropy(
                shifted.transpose(1, 2), targets, ignore_index=IGNORED, reduction="none"
            )
            counted = (targets != IGNORED).sum(1).clamp(min=1)
            losses += (token_loss.sum(1) / counted).cpu().tolist()
    finally:
        model.train(was_training)
    return np.asarray(losses, dtype=np.float32)
