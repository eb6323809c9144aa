"""Instruction tuning a causal LM: training tokens/s against a plain HF Trainer script, generation tokens/s, and how
long an answer's attribution takes.

Prints figures; it is not a test. Both trainings use the same model (LoRA on q_proj, v_proj unless --strategy full),
the same examples (the dataset's training split, encoded by `core.instructions.encoding`: prompt masked, response and
end-of-text learned) and the same number of optimizer steps:

  (a) plain Trainer  transformers.Trainer + DataCollatorForSeq2Seq, random sampling, no callbacks
  (b) workbench      `core.trainer.train` in this process (config -> task -> Trainer with the run store's callbacks,
                     length-grouped batches); no evaluation inside the timed steps

Each figure is Trainer's own `train_samples_per_second`, turned into tokens/s with the mean tokens per training
example. Then the pretrained model generates greedy answers to validation prompts (batched, KV cache), and the
answer explainer attributes a few answers with Integrated Gradients and occlusion.

    HF_HUB_OFFLINE=1 python bench/instruction_throughput.py                      # SmolLM2-135M, 20 steps x 4, CPU
    HF_HUB_OFFLINE=1 python bench/instruction_throughput.py --model tiny --steps 40   # a random 2-layer LLaMA
    python bench/instruction_throughput.py --device cuda --batch-size 16 --steps 50
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="a built-in key, a folder, or 'tiny' (a random LLaMA)")
    parser.add_argument("--dataset", default="sentiment-instructions")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--strategy", default="lora", choices=("lora", "full"))
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--prompts", type=int, default=16, help="validation prompts answered for generation tokens/s")
    parser.add_argument("--explained", type=int, default=3, help="answers attributed for the attribution time")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["WORKBENCH_WORKSPACE"] = str(Path(scratch) / "workspace")
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(scratch) / "tensorboard")
        source = model_source(args, Path(scratch))
        config = run_config(args, source)
        from core.tasks import TASKS

        prepared = TASKS["instruction_tuning"].prepare(config, progress=lambda fraction, message: None)
        tokens = mean_tokens(prepared.datasets["train"])
        print(f"model {args.model} · {len(prepared.datasets['train'])} training examples of {tokens:.0f} tokens on average")
        plain = plain_trainer(args, config, prepared, Path(scratch) / "plain")
        ours = workbench(config, Path(scratch))
        print(f"(a) plain Trainer : {plain:7.2f} samples/s  {plain * tokens:8.0f} tokens/s")
        print(f"(b) workbench     : {ours:7.2f} samples/s  {ours * tokens:8.0f} tokens/s")
        print(f"workbench / plain Trainer: {ours / plain:.2f}x (aim: at least 1.0)")
        generation(args, prepared)
        attribution(args, prepared)
    return 0


def model_source(args: argparse.Namespace, scratch: Path) -> str:
    if args.model != "tiny":
        from core.models import resolve_model

        return resolve_model(args.model)
    from core.instructions.data import load_instruction_splits
    from core.scratch_models import write_random_decoder

    rows = load_instruction_splits(args.dataset).all_rows()
    return str(write_random_decoder(scratch / "tiny", "llama", texts=(rows["prompt"] + " " + rows["response"]).tolist()))


def run_config(args: argparse.Namespace, source: str):
    from core.config import RunConfig

    rows = math.ceil(args.steps * args.batch_size / 0.8)  # the training split is 80 % of the rows
    return RunConfig(
        name="bench",
        task="instruction_tuning",
        model=source,
        dataset=args.dataset,
        max_rows=max(rows, 40),
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        strategy=args.strategy,
        lora_targets=["q_proj", "v_proj"],
        max_length=args.max_length,
        eval_steps=args.steps + 1,  # no evaluation inside the timed steps; the final one comes after them
        logging_steps=max(1, args.steps // 4),
        best_checkpoint=False,
        device=args.device,
    )


def mean_tokens(dataset) -> float:
    return sum(len(ids) for ids in dataset["input_ids"]) / max(1, len(dataset))


def plain_trainer(args: argparse.Namespace, config, prepared, output: Path) -> float:
    """What a user's own script does: the same encoded examples, Trainer with its defaults, the same LoRA."""
    import copy

    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from core.strategies import apply_strategy

    model = apply_strategy(copy.deepcopy(prepared.model), config, (), args.steps)
    arguments = TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        logging_steps=max(1, args.steps // 4),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        seed=config.seed,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=prepared.datasets["train"],
        data_collator=DataCollatorForSeq2Seq(prepared.processor, label_pad_token_id=-100, padding=True),
    )
    return float(trainer.train().metrics["train_samples_per_second"])


def workbench(config, scratch: Path) -> float:
    from core.store import RunStore
    from core.trainer import train

    store = RunStore()
    directory = store.path.parent / "runs" / "bench"
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    store.create(
        "bench",
        name="bench",
        task=config.task,
        model=config.model,
        dataset=config.dataset,
        device=config.device,
        config_yaml=config.to_yaml(),
    )
    run = store.claim_next(config.device, slots=1)
    train(config, run, store)
    metrics = store.metrics("bench")
    return float(metrics[metrics["name"] == "train_samples_per_second"]["value"].iloc[-1])


def generation(args: argparse.Namespace, prepared) -> None:
    from core.instructions.generation import Sampling, generate_answers

    prompts = prepared.raw["validation"]["prompt"].head(args.prompts).tolist()
    tokenizer, model = prepared.processor, prepared.model.to(args.device)
    budget = Sampling(max_new_tokens=32)
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, args.max_length, budget)
    seconds = time.perf_counter() - started
    made = sum(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers)
    print(
        f"generation (pretrained model, greedy, batches of 16, KV cache): {made} tokens for {len(prompts)} prompts in "
        f"{seconds:.1f} s = {made / seconds:.1f} tokens/s"
    )


def attribution(args: argparse.Namespace, prepared) -> None:
    from core.explain.answers import AnswerExplainer

    explainer = AnswerExplainer(prepared.model, prepared.processor, args.max_length, max_new_tokens=8, cache_size=0)
    prompts = prepared.raw["validation"]["prompt"].head(args.explained).tolist()
    references = prepared.raw["validation"]["response"].head(args.explained).tolist()
    for method in ("ig", "occlusion"):
        times = [explainer.explain(prompt, method, answer=answer).seconds for prompt, answer in zip(prompts, references)]
        print(f"answer attribution, {method:9}: {sum(times) / len(times):.2f} s per answer (mean of {len(times)})")


if __name__ == "__main__":
    raise SystemExit(main())
