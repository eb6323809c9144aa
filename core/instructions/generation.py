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
            rows = [{"input_ids": fit_prompt(tokenizer, prompt, room)[0]} for prompt in prompts[start : start + batch_size]]
            # Left padding: every row's answer starts at the same column, so generation continues them all at once.
            batch = tokenizer.pad(rows, padding=True, padding_side="left", return_tensors="pt").to(model.device)
            input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
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


def answer_losses(
    model, tokenizer, prompts: list[str], responses: list[str], max_length: int, batch_size: int = GENERATE_BATCH
) -> np.ndarray:
    """Each reference response's mean cross-entropy per token given its prompt (what training minimises)."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORED, padding=True, return_tensors="pt")
    losses: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            pairs = [
                encode_pair(tokenizer, prompt, response, max_length)
                for prompt, response in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
            ]
            batch = collate(
                [{"input_ids": p.input_ids, "attention_mask": [1] * len(p.input_ids), "labels": p.labels} for p in pairs]
            ).to(model.device)
            with torch.inference_mode():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            # Position t predicts token t + 1.
            shifted, targets = logits[:, :-1], batch["labels"][:, 1:]
            token_loss = torch.nn.functional.cross_entropy(
                shifted.transpose(1, 2), targets, ignore_index=IGNORED, reduction="none"
            )
            counted = (targets != IGNORED).sum(1).clamp(min=1)
            losses += (token_loss.sum(1) / counted).cpu().tolist()
    finally:
        model.train(was_training)
    return np.asarray(losses, dtype=np.float32)
