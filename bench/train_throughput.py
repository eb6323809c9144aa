"""Training throughput: a seed-style PyTorch loop vs a plain HF Trainer vs this workbench's trainer.

Prints figures; it is not a test. All three train the same model on the same examples (the
movie-review training split, shuffled with --seed, first steps x batch rows) for the same
number of optimizer steps, one after another:

  (a) seed loop    plain PyTorch: every batch padded to --max-length, fp32, AdamW, loss.item() each step
  (b) plain Trainer  transformers.Trainer, DataCollatorWithPadding (dynamic padding), random sampling
  (c) workbench    the real path: RunConfig -> core.jobs.submit -> trainer process -> run store;
                   its figure is the `train_samples_per_second` our StoreMetrics callback logs

(a) is timed over its training loop only; (b) and (c) report Trainer's own
`train_samples_per_second` (time inside `trainer.train()`: no process start-up, data preparation
or the step-0 evaluation). Both (b) and (c) save a checkpoint at the last step inside that time;
(c) also runs its end-of-training evaluation there (a 32-row validation split here, so it is small).

    HF_HUB_OFFLINE=1 python bench/train_throughput.py                 # MiniLM-L6, 60 steps, CPU
    HF_HUB_OFFLINE=1 python bench/train_throughput.py --steps 10      # quick check that it works
    python bench/train_throughput.py --device cuda --model-size base --batch-size 32 --steps 100
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LEARNING_RATE = 5e-5
HELD_OUT_ROWS = 32  # validation/test rows handed to the workbench: its end-of-training eval stays small


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps for each of the three (default 60)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--dataset",
        default="movie-reviews",
        help="built-in dataset to draw the training rows from (default movie-reviews; planted-keywords needs no download)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--model-size",
        choices=("minilm", "tiny", "small", "base"),
        default="minilm",
        help="minilm: the built-in all-MiniLM-L6-v2; tiny/small/base: a random BERT from core.scratch_models",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="the workbench run's precision (auto = bf16 on a GPU that has it, fp32 on CPU); (a) and (b) stay fp32",
    )
    parser.add_argument(
        "--workbench-data",
        choices=("subset", "builtin"),
        default="subset",
        help="subset (default): the workbench trains on the same rows as (a) and (b), handed to it as a table "
        "file with a split column; builtin: the --dataset key as is (its whole training split, and its whole "
        "validation split evaluated at the last step, inside the timed train())",
    )
    parser.add_argument("--only", default="abc", help="which of a, b, c to run (default abc)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no GPU", file=sys.stderr)
            return 2
    workspace = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    # Everything (asset cache, run store, run folders) goes into this throwaway workspace.
    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)
    try:
        return run_all(args, workspace)
    finally:
        if args.keep:
            print(f"workspace kept at {workspace}")
        else:
            shutil.rmtree(workspace, ignore_errors=True)


def run_all(args: argparse.Namespace, workspace: Path) -> int:
    import torch

    started = time.time()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
    )
    model_dir = model_source(args, workspace)
    texts, labels, label_names, held_out = training_subset(args)
    epochs = args.steps * args.batch_size / len(texts)
    print(
        f"model {args.model_size} ({model_dir}); {args.steps} steps x batch {args.batch_size} over {len(texts)} training rows"
        f" ({epochs:.2g} epoch{'s' if epochs != 1 else ''}), max length {args.max_length}, seed {args.seed}",
        flush=True,
    )
    results: dict[str, float] = {}
    details: dict[str, object] = {}
    if "a" in args.only:
        results["seed_loop"] = seed_loop(args, model_dir, texts, labels, len(label_names))
        print(f"(a) seed loop:      {results['seed_loop']:7.1f} samples/s", flush=True)
        release()
    if "b" in args.only:
        results["plain_trainer"] = plain_trainer(args, model_dir, texts, labels, len(label_names), workspace)
        print(f"(b) plain Trainer:  {results['plain_trainer']:7.1f} samples/s", flush=True)
        release()
    if "c" in args.only:
        figure, steady = workbench(args, model_dir, texts, labels, label_names, held_out, workspace)
        results["workbench"] = figure
        details["workbench_between_logs"] = steady
        print(f"(c) workbench:      {figure:7.1f} samples/s", flush=True)
        if steady:
            print(
                f"    (workbench between its first and last logged train loss, from the store's timestamps:"
                f" {steady['samples_per_second']:.1f} samples/s over steps {steady['from_step']}-{steady['to_step']};"
                " excludes its first steps and the final eval + checkpoint)"
            )
    print()
    print(f"{'':22}{'samples/s':>10}")
    for key, label in (("seed_loop", "(a) seed loop"), ("plain_trainer", "(b) plain Trainer"), ("workbench", "(c) workbench")):
        if key in results:
            print(f"{label:22}{results[key]:10.1f}")
    ratios = {}
    if "seed_loop" in results and "plain_trainer" in results:
        ratios["plain_trainer_over_seed_loop"] = results["plain_trainer"] / results["seed_loop"]
        print(f"plain Trainer / seed loop:   {ratios['plain_trainer_over_seed_loop']:.2f}x")
    if "plain_trainer" in results and "workbench" in results:
        ratios["workbench_over_plain_trainer"] = results["workbench"] / results["plain_trainer"]
        verdict = "meets" if ratios["workbench_over_plain_trainer"] >= 1.2 else "below"
        print(f"workbench / plain Trainer:   {ratios['workbench_over_plain_trainer']:.2f}x ({verdict} the 1.2x aim)")
    print(f"total wall time {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "samples_per_second": results, "ratios": ratios, **details},
                indent=2,
            )
        )
    return 0


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Shared inputs


def model_source(args: argparse.Namespace, workspace: Path) -> Path:
    if args.model_size == "minilm":
        from core.catalog import MINILM_L6

        return MINILM_L6.local_dir()
    from core.scratch_models import write_random_bert

    return write_random_bert(workspace / f"random-bert-{args.model_size}", args.model_size, seed=args.seed)


def training_subset(args: argparse.Namespace):
    """The first steps x batch rows of the shuffled training split (all of it, repeated, if that is fewer)."""
    from core.data import load_splits

    splits = load_splits(args.dataset, seed=args.seed)
    wanted = args.steps * args.batch_size
    frame = splits.train.sample(frac=1.0, random_state=args.seed).head(wanted).reset_index(drop=True)
    label_ids = {name: index for index, name in enumerate(splits.label_names)}
    # A random sample: the first rows of a split can be mostly one class.
    held_out = {
        name: splits.split(name).sample(n=min(HELD_OUT_ROWS, len(splits.split(name))), random_state=args.seed)
        for name in ("validation", "test")
    }
    return frame["text"].tolist(), [label_ids[label] for label in frame["label"]], list(splits.label_names), held_out


def load_classifier(model_dir: Path, num_labels: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    return tokenizer, model


# ---------------------------------------------------------------------------------------------
# (a) what a naive tutorial does


def seed_loop(args, model_dir: Path, texts: list[str], labels: list[int], num_labels: int) -> float:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(args.seed)
    tokenizer, model = load_classifier(model_dir, num_labels)
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
    names = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in encoded]
    tensors = TensorDataset(*(encoded[name] for name in names), torch.tensor(labels))
    loader = DataLoader(tensors, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    device = torch.device(args.device)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    losses = []
    step = 0
    begin = time.perf_counter()
    while step < args.steps:
        for batch in loader:
            *inputs, target = (tensor.to(device) for tensor in batch)
            output = model(**dict(zip(names, inputs)), labels=target)
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(output.loss.item())  # a device sync every step, as tutorials print it
            step += 1
            if step == args.steps:
                break
    elapsed = time.perf_counter() - begin
    print(f"    seed loop: {step} steps in {elapsed:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    del model, optimizer
    return step * args.batch_size / elapsed


# ---------------------------------------------------------------------------------------------
# (b) a plain Trainer script


def plain_trainer(args, model_dir: Path, texts: list[str], labels: list[int], num_labels: int, workspace: Path) -> float:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    tokenizer, model = load_classifier(model_dir, num_labels)
    dataset = Dataset.from_dict({"text": texts, "labels": labels}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
        batched=True,
        remove_columns=["text"],
    )
    training_args = TrainingArguments(
        output_dir=str(workspace / "plain-trainer"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=LEARNING_RATE,
        seed=args.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    result = trainer.train()
    print(
        f"    plain Trainer: {result.global_step} steps in {result.metrics['train_runtime']:.1f} s, loss "
        f"{result.training_loss:.3f}"
    )
    del trainer, model
    return float(result.metrics["train_samples_per_second"])


# ---------------------------------------------------------------------------------------------
# (c) this workbench, through the job manager and the trainer process


def workbench(args, model_dir: Path, texts, labels, label_names, held_out, workspace: Path):
    import pandas as pd

    from core import jobs
    from core.config import RunConfig
    from core.store import RunStore

    if args.workbench_data == "subset":
        # The same rows as (a) and (b), in a table file with its own split column, so the trainer
        # neither re-splits them nor samples from rows the others never saw.
        rows = pd.DataFrame({"text": texts, "label": [label_names[i] for i in labels], "split": "train"})
        parts = [rows] + [frame[["text", "label"]].assign(split=name) for name, frame in held_out.items()]
        dataset = workspace / f"bench-{args.dataset}.csv"
        pd.concat(parts, ignore_index=True).to_csv(dataset, index=False)
        dataset = str(dataset)
    else:
        dataset = args.dataset
    config = RunConfig(
        name="bench: train throughput",
        model="minilm-l6" if args.model_size == "minilm" else str(model_dir),
        dataset=dataset,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=LEARNING_RATE,
        seed=args.seed,
        eval_steps=args.steps,  # one evaluation and one checkpoint, at the end
        device=args.device,
        precision=args.precision,
    )
    store = RunStore()
    begin = time.time()
    run = jobs.submit(config, store)
    run = jobs.wait(run.id, store, timeout=3600)
    print(
        f"    workbench: run {run.id} {run.status} after {time.time() - begin:.0f} s wall"
        " (process start, data prep, step-0 eval, training, final eval, predictions, saving)"
    )
    if run.status != "completed":
        print(jobs.log_tail(run.id, 30), file=sys.stderr)
        raise SystemExit(f"the workbench run {run.status}: {run.error}")
    metrics = store.metrics(run.id)
    speed = metrics[metrics["name"] == "train_samples_per_second"]
    if speed.empty:
        raise SystemExit("the workbench run logged no train_samples_per_second; its log:\n" + jobs.log_tail(run.id, 30))
    losses = metrics[metrics["name"] == "train_loss"].sort_values("step")
    steady = None
    if len(losses) >= 2:
        first, last = losses.iloc[0], losses.iloc[-1]
        steady = {
            "from_step": int(first["step"]),
            "to_step": int(last["step"]),
            "samples_per_second": (last["step"] - first["step"])
            * args.batch_size
            * config.grad_accum
            / (last["recorded_at"] - first["recorded_at"]),
        }
    return float(speed["value"].iloc[-1]), steady


if __name__ == "__main__":
    sys.exit(main())
