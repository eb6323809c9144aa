"""Instruction tuning: a GPT-style decoder (a causal language model, its own LM head) learns to answer prompts.

The loss is on the response tokens only (the prompt is masked), in the model's chat format when it has one. Every
evaluation also generates: greedy answers to the first validation prompts give exact match and token F1 beside the
loss and perplexity, and the first few go to the run's generations file (`core.run_files.generations`), so the Runs
page shows the answers move from the pretrained model's ramble (step 0) to the task's. The held-out report compares
the generated answers of the test split before and after training.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.assets import Progress, no_progress
from core.config import RunConfig
from core.errors import UserError
from core.task_keys import INSTRUCTION_TUNING, TASK_SUGGESTIONS
from core.tasks.base import Prepared, StageModel, Task

SAMPLE_PROMPTS = 4  # validation prompts whose answers the Runs page shows at every evaluation
EVAL_GENERATIONS = 32  # validation prompts answered at every evaluation for exact match and token F1
ANSWER_ROOM = 8  # new tokens allowed beyond the longest reference answer
MAX_NEW_TOKENS = 64


class InstructionTuning(Task):
    key = INSTRUCTION_TUNING
    title = "Instruction tuning (causal LM)"
    modality = "text"
    primary_metric = "exact_match"
    objectives = ("exact_match", "token_f1", "perplexity", "loss")
    loading_snippet = 'from transformers import pipeline\nanswer = pipeline("text-generation", model=FOLDER)'
    explains = "tokens"  # the prompt's tokens (core.explain.answers)
    view = "answers"
    unused_knobs = ("label_smoothing",)
    settings = ("strategy", "packing")
    suggested = TASK_SUGGESTIONS[INSTRUCTION_TUNING]

    def datasets(self) -> list:
        from core.data.registry import list_datasets

        return list_datasets(self.key)

    def preflight(self, config: RunConfig) -> None:
        from core.catalog import BUILTIN_MODELS
        from core.instructions.data import BUILTIN_INSTRUCTION_DATASETS

        check_dataset(config.dataset, self.datasets())
        builtin = BUILTIN_MODELS.get(config.model)
        if builtin is None or builtin.is_ready():
            check_causal_lm(config.model)
        if config.dataset not in BUILTIN_INSTRUCTION_DATASETS:
            load_pairs(config)

    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        from core.instructions.data import answers_are_labels
        from core.instructions.encoding import encode_pairs, uses_chat_template
        from core.models import resolve_model

        check_dataset(config.dataset, self.datasets())
        splits = load_pairs(config, progress)
        source = resolve_model(config.model, progress)
        check_causal_lm(source)
        tokenizer, model = load_causal_lm(source, config.dropout)
        raw = {split: splits.split(split) for split in ("train", "validation", "test")}
        datasets, cut = {}, {}
        for split, frame in raw.items():
            datasets[split], cut[split] = encode_pairs(
                tokenizer, frame["prompt"].tolist(), frame["response"].tolist(), config.max_length
            )
        labels = answers_are_labels(raw["train"]) or []
        return Prepared(
            model=model,
            processor=tokenizer,
            datasets=datasets,
            raw=raw,
            collator=collator(config, tokenizer, model),
            label_names=labels,
            head_names=(),  # the LM head is the pretrained one: nothing new must train
            extras={
                "data_source": splits.source,
                "model_source": source,
                "prompt_format": "chat template" if uses_chat_template(tokenizer) else "plain (the model has no chat template)",
                "packing": config.packing,
                "prompts_cut": sum(cut.values()),
                "max_new_tokens": answer_budget(tokenizer, raw["train"]["response"].tolist()),
            },
        )

    def finished_model(self, model):
        # A packed run trains without the KV cache (see `collator`); the saved model generates with it again.
        model = super().finished_model(model)
        model.config.use_cache = True
        return model

    def trainer_class(self, base: type, config: RunConfig, prepared: Prepared) -> type:
        return generating_trainer(base, config, prepared)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return {}  # the generating trainer scores answers itself: token logits of a whole vocabulary are not kept

    def report(self, logits, labels, prepared: Prepared) -> dict[str, Any]:
        from core.instructions.scores import answer_report

        references = prepared.raw[logits["split"]]["response"].tolist()
        return answer_report(logits["answers"], references, prepared.label_names or None)

    def predictions(self, logits, labels, prepared: Prepared, split: str) -> pd.DataFrame:
        return answer_frame(prepared.raw[split], logits["answers"], logits["losses"])

    def headline(self, report: dict[str, Any]) -> dict[str, float | None]:
        return {"exact match": report.get("exact_match"), "token F1": report.get("token_f1")}

    def class_report(self, report: dict[str, Any]) -> dict[str, Any]:
        return report.get("classes", {})

    # -- after training ------------------------------------------------------------------------------

    def split_rows(self, run, split: str) -> tuple[pd.DataFrame, list[str]]:
        from core.instructions.data import answers_are_labels
        from core.run_files import run_config

        splits = load_pairs(run_config(run))
        return splits.split(split), answers_are_labels(splits.split("train")) or []

    def open_stage(self, run, stage: str) -> StageModel:
        from core.checkpoints import load_stage_model
        from core.run_files import run_config

        model, tokenizer = load_stage_model(run, stage, "AutoModelForCausalLM")
        config = run_config(run)
        labels = answers_are_labels_of(run)
        return StageModel(
            run,
            stage,
            model,
            tokenizer,
            labels,
            self.stage_logits,
            max_length=config.max_length,
            extras={"max_new_tokens": saved_answer_budget(run)},
        )

    def stage_predictions(self, stage: StageModel, rows: pd.DataFrame, progress: Progress) -> pd.DataFrame:
        """Greedy answers of the stage to the rows' prompts, scored against their references (what training writes)."""
        from core.instructions.generation import Sampling, answer_losses, generate_answers

        prompts, references = rows["prompt"].tolist(), rows["response"].tolist()
        sampling = Sampling(max_new_tokens=int(stage.extras["max_new_tokens"]))
        answers = generate_answers(stage.model, stage.preprocessor, prompts, stage.max_length, sampling, progress=progress)
        losses = answer_losses(stage.model, stage.preprocessor, prompts, references, stage.max_length)
        return answer_frame(rows, answers, losses)

    def stage_logits(self, stage: StageModel, rows: pd.DataFrame):
        """A generator's one number per row: the mean log-probability per token of the row's reference answer."""
        from core.instructions.generation import answer_losses

        losses = answer_losses(
            stage.model, stage.preprocessor, rows["prompt"].tolist(), rows["response"].tolist(), stage.max_length
        )
        return -losses[:, None]


def answer_frame(rows: pd.DataFrame, answers: list[str], losses) -> pd.DataFrame:
    """One row per prompt: prompt, reference, answer, match (exact, normalised), token_f1 and the reference's loss."""
    from core.instructions.scores import exact_match, token_f1

    references = rows["response"].tolist()
    return pd.DataFrame(
        {
            "prompt": rows["prompt"].tolist(),
            "reference": references,
            "answer": answers,
            "match": [exact_match(a, r) for a, r in zip(answers, references)],
            "token_f1": [token_f1(a, r) for a, r in zip(answers, references)],
            "loss": np.asarray(losses, dtype=np.float32),
        }
    )


def collator(config: RunConfig, tokenizer, model):
    """Padded batches (input ids padded with the pad token, labels with the ignored id, so padding never enters the
    loss), or with `packing` one row per batch: the examples end to end, position ids restarting at each. transformers
    then masks attention per example, but only with no KV cache in the forward pass (measured: with one, a packed
    example's logits moved by 0.26 against the example alone; without, by 6e-8), so training runs without it."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from core.instructions.encoding import IGNORED

    if not config.packing:
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORED, padding=True)
    model.config.use_cache = False
    return DataCollatorWithFlattening(separator_id=IGNORED)


def load_pairs(config: RunConfig, progress: Progress = no_progress):
    from core.instructions.data import load_instruction_splits

    return load_instruction_splits(config.dataset, seed=config.seed, max_rows=config.max_rows or None, progress=progress)


def check_dataset(name: str, known: list) -> None:
    keys = [info.key for info in known]
    if name not in keys:
        raise UserError(
            f"There is no instruction dataset '{name}'. Choose one of {', '.join(keys)}, or add prompt/response pairs on the "
            "Data page (Instructions)."
        )


def check_causal_lm(model: str) -> None:
    """Refuse a model with no language-model head that continues text (an encoder such as BERT), with a sentence."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from core.models import config_values, resolve_model

    values = config_values(resolve_model(model))
    architectures = values.get("architectures") or []
    generates = (
        any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)
        if architectures
        else values.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    )
    if not generates:
        raise UserError(
            f"{model} is not a causal language model ({', '.join(architectures) or values.get('model_type', 'unknown')}): "
            "instruction tuning needs a GPT-style decoder that continues text, such as smollm2-135m. For an encoder choose "
            "text classification."
        )


def load_causal_lm(source: str, dropout: float):
    """The tokenizer (its end-of-text token pads when it has no padding token) and the model, with dropout set."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models import load_model_config, pad_with_end_of_text, set_dropout

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    model_config = load_model_config(source)
    set_dropout(model_config, dropout)
    pad_with_end_of_text(tokenizer, model_config)
    model = AutoModelForCausalLM.from_pretrained(source, config=model_config, trust_remote_code=False)
    return tokenizer, model


def answer_budget(tokenizer, responses: list[str]) -> int:
    """New tokens generated per answer: the longest training response's tokens and some room, within a cap."""
    longest = max((len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in responses), default=0)
    return min(MAX_NEW_TOKENS, longest + ANSWER_ROOM)


def saved_answer_budget(run) -> int:
    from core.instructions.generation import DEFAULT_NEW_TOKENS
    from core.run_files import summary

    return int((summary(run) or {}).get("max_new_tokens", DEFAULT_NEW_TOKENS))


def answers_are_labels_of(run) -> list[str]:
    from core.run_files import summary

    return list((summary(run) or {}).get("label_names", []))


def generating_trainer(base: type, config: RunConfig, prepared: Prepared) -> type:
    """`base` whose evaluation keeps only the loss of its forward pass (the logits of every vocabulary token are far
    too many to keep) and then generates: answers and their scores join the metrics, sample answers go to the run's
    generations file, and `predict` returns the answers with each reference's loss for the report and the frame."""
    from transformers.trainer_utils import EvalLoopOutput

    from core.instructions.generation import Sampling, answer_losses, generate_answers
    from core.instructions.scores import answer_scores

    tokenizer = prepared.processor
    sampling = Sampling(max_new_tokens=int(prepared.extras["max_new_tokens"]))

    class GeneratingTrainer(base):
        split = "validation"

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            self.split = "validation"
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

        def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
            self.split = next(name for name, dataset in prepared.datasets.items() if dataset is test_dataset)
            return super().predict(test_dataset, ignore_keys, metric_key_prefix)

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
            output = super().evaluation_loop(dataloader, description, True, ignore_keys, metric_key_prefix)
            frame = prepared.raw[self.split]
            every_row = metric_key_prefix != "eval"
            rows = frame if every_row else frame.head(EVAL_GENERATIONS)
            started = time.perf_counter()
            answers = generate_answers(self.model, tokenizer, rows["prompt"].tolist(), config.max_length, sampling)
            seconds = time.perf_counter() - started
            references = rows["response"].tolist()
            metrics = dict(output.metrics)
            loss = metrics.get(f"{metric_key_prefix}_loss")
            if loss is not None:
                metrics[f"{metric_key_prefix}_perplexity"] = math.exp(min(loss, 50.0))
            metrics.update({f"{metric_key_prefix}_{name}": value for name, value in answer_scores(answers, references).items()})
            metrics[f"{metric_key_prefix}_generation_seconds"] = seconds
            if every_row:
                losses = answer_losses(self.model, tokenizer, rows["prompt"].tolist(), references, config.max_length)
                predictions = {"split": self.split, "answers": answers, "losses": losses}
            else:
                write_samples(self, rows.head(SAMPLE_PROMPTS), answers[:SAMPLE_PROMPTS], seconds)
                predictions = None
            return EvalLoopOutput(predictions=predictions, label_ids=None, metrics=metrics, num_samples=output.num_samples)

    return GeneratingTrainer


def write_samples(trainer, rows: pd.DataFrame, answers: list[str], seconds: float) -> None:
    """Append this evaluation's sample answers to the run directory's generations file (the checkpoints' parent)."""
    from core.run_files import GENERATIONS_FILE

    path = Path(trainer.args.output_dir).parent / GENERATIONS_FILE
    step = trainer.state.global_step
    with path.open("a", encoding="utf-8") as handle:
        for prompt, reference, answer in zip(rows["prompt"], rows["response"], answers):
            line = {"step": step, "prompt": prompt, "reference": reference, "answer": answer, "seconds": round(seconds, 3)}
            handle.write(json.dumps(line) + "\n")
