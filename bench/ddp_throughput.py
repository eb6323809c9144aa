"""Data-parallel training on the CPU: one process vs `devices: 2` (torchrun, gloo), through the job manager.

Prints figures; it is not a test. Each run is the real path: a `RunConfig` -> `core.jobs.submit` -> the trainer
process (one `python -m core worker RUN_ID`, or `python -m torch.distributed.run --standalone --nproc_per_node 2
-m core worker RUN_ID`) -> the run store, and `core.jobs.wait`. Both train MiniLM-L6 on the movie-review training
split for the same number of optimizer steps at the same batch per process (so two processes see twice the
examples per step: a global batch of 2 x --batch-size), with 32-row validation and test splits so the step-0 and
final evaluations stay small.

For each run it prints:
  samples/s       examples per second over the training steps, all processes together: steps x global batch over
                  the store's train_started_at -> progress_at (our Progress callback writes them in on_train_begin
                  and at the last step's on_step_end, on rank 0), and Trainer's own `train_samples_per_second`
                  (the whole train(): the final evaluation and checkpoint too). Trainer counts every process's
                  examples (its `total_train_batch_size` is batch x processes x accumulation): the figure is global.
  start-up        seconds from submit to: the launcher process started; the trainer process(es) started (under
                  torchrun: its ranks, once torchrun itself is up); the worker recorded its first heartbeat (Python
                  and the store reached); the training loop began (data prepared, model loaded, step-0 evaluation
                  and test predictions done); the loss at step 10 logged. The store is polled every 0.05 s until then.

Rounds alternate the order (1 2, 2 1, ...): a 2-core machine shared with other work moves single figures a lot, so
each round also says how much CPU other processes used meanwhile.

    HF_HUB_OFFLINE=1 python bench/ddp_throughput.py                  # 60 steps x 16 per process, 2 rounds: ~6 min
    HF_HUB_OFFLINE=1 python bench/ddp_throughput.py --steps 10 --rounds 1    # quick check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The same noise measure and exit wait as the single-process benchmark.
from train_throughput import OtherLoad, wait_for_exit, wait_for_quiet, wait_for_supervisor  # noqa: E402

LEARNING_RATE = 5e-5
HELD_OUT_ROWS = 32
WARM_STEPS = 10  # logging_steps: the first logged training loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of each run (default 60)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per process per step (default 16)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--processes", default="1,2", help="the process counts to compare (default 1,2)")
    parser.add_argument("--rounds", type=int, default=2, help="how many times each runs, interleaved (default 2)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for a 3-second spell in which other processes use under 10%% of the CPU",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = parser.parse_args(argv)
    args.processes = [int(part) for part in args.processes.split(",") if part]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workspace = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)  # asset cache, run store and run folders: all thrown away
    try:
        return run_all(args, workspace)
    finally:
        if args.keep:
            print(f"workspace kept at {workspace}")
        else:
            shutil.rmtree(workspace, ignore_errors=True)


def run_all(args: argparse.Namespace, workspace: Path) -> int:
    import torch

    from core.catalog import MINILM_L6

    started = time.time()
    MINILM_L6.local_dir()  # prepared once, before any timing
    dataset = write_rows(args, workspace)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs; MiniLM-L6, {args.steps} steps x {args.batch_size} per process,"
        f" max length {args.max_length}; processes {args.processes}, {args.rounds} round(s)",
        flush=True,
    )
    results: dict[int, list[dict]] = {}
    for round_index in range(args.rounds):
        order = args.processes if round_index % 2 == 0 else args.processes[::-1]
        for processes in order:
            if args.wait_quiet:
                wait_for_quiet(args.wait_quiet)
            with OtherLoad() as other:
                figure = one_run(args, dataset, processes)
            figure["others_cpu_share"] = other.share
            results.setdefault(processes, []).append(figure)
            print(f"  round {round_index + 1}, {processes} process(es): {describe(figure)}", flush=True)
    print()
    print(
        f"{'processes':>10}{'samples/s':>11}{'Trainer s/s':>13}{'s/step':>8}{'submit':>8}{'ranks':>7}"
        f"{'heartbeat':>11}{'loop starts':>13}{'step 10':>9}   (medians; start-up in s after submit; ranks: after the launcher)"
    )
    for processes, figures in results.items():

        def median(key: str, figures=figures) -> float:
            values = [figure[key] for figure in figures if figure.get(key) is not None]
            return statistics.median(values) if values else float("nan")

        print(
            f"{processes:>10}{median('samples_per_second'):11.1f}{median('trainer_samples_per_second'):13.1f}"
            f"{median('later_s_per_step'):8.2f}{median('submit_returned'):8.1f}{median('ranks_after_launcher'):7.1f}"
            f"{median('first_heartbeat'):11.1f}{median('train_started'):13.1f}{median('first_logged_step'):9.1f}"
        )
    if 1 in results and len(results) > 1:
        base = results[1]
        for processes, figures in results.items():
            if processes == 1:
                continue
            speedups = [high["samples_per_second"] / low["samples_per_second"] for high, low in zip(figures, base)]
            extra = [high["train_started"] - low["train_started"] for high, low in zip(figures, base)]
            print(
                f"{processes} processes / 1: {statistics.median(speedups):.2f}x samples/s"
                f" (rounds: {', '.join(f'{value:.2f}' for value in speedups)});"
                f" the launch path costs {statistics.median(extra):+.1f} s more before the first step"
                f" (rounds: {', '.join(f'{value:+.1f}' for value in extra)})"
            )
    print(f"total wall time {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "figures": results}, indent=2, default=str)
        )
    return 0


def write_rows(args: argparse.Namespace, workspace: Path) -> str:
    """The whole shuffled training split (enough for both runs' examples) and 32-row held-out splits, as a table file
    with its own split column."""
    import pandas as pd

    from core.data import load_splits

    splits = load_splits("movie-reviews", seed=args.seed)
    parts = [splits.train.sample(frac=1.0, random_state=args.seed)[["text", "label"]].assign(split="train")]
    for name in ("validation", "test"):
        frame = splits.split(name)
        parts.append(frame.sample(n=min(HELD_OUT_ROWS, len(frame)), random_state=args.seed)[["text", "label"]].assign(split=name))
    path = workspace / "ddp-rows.csv"
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return str(path)


def one_run(args: argparse.Namespace, dataset: str, processes: int) -> dict:
    import psutil

    from core import jobs
    from core.config import RunConfig
    from core.store import RunStore

    config = RunConfig(
        name=f"bench: ddp throughput, {processes} process(es)",
        model="minilm-l6",
        dataset=dataset,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=LEARNING_RATE,
        seed=args.seed,
        eval_steps=args.steps,  # one evaluation and one checkpoint, at the end
        device="cpu",
        devices=processes,
    )
    store = RunStore()
    submitted = time.time()
    run = jobs.submit(config, store)
    # The launcher is started inside submit(); the ranks' start is told from its own (process start times share a
    # clock with each other, to a few ms, but not with time.time(): /proc counts from a boot time rounded to seconds).
    seen: dict[str, float] = {"submit_returned": time.time()}
    launcher = None
    # Until the loop has begun: poll often, note when each sign first shows.
    while "train_started" not in seen and time.time() - submitted < 900:
        current = store.get(run.id)
        if current.finished:
            break
        if current.pid and launcher is None:
            try:
                launcher = psutil.Process(current.pid)
            except psutil.NoSuchProcess:
                pass
        if launcher is not None and "ranks_after_launcher" not in seen:
            try:
                ranks = launcher.children() if processes > 1 else [launcher]
                if len(ranks) >= processes:
                    seen["ranks_after_launcher"] = max(rank.create_time() for rank in ranks) - launcher.create_time()
            except psutil.NoSuchProcess:
                pass
        if current.heartbeat_at and "first_heartbeat" not in seen:
            seen["first_heartbeat"] = current.heartbeat_at
        if current.train_started_at:
            seen["train_started"] = current.train_started_at
        time.sleep(0.05)
    run = jobs.wait(run.id, store, timeout=3600)
    wait_for_exit(run.pid)
    wait_for_supervisor()
    if run.status != "completed":
        print(jobs.log_tail(run.id, 40), file=sys.stderr)
        raise SystemExit(f"the {processes}-process run {run.status}: {run.error}")
    metrics = store.metrics(run.id)
    speed = metrics[metrics["name"] == "train_samples_per_second"]["value"]
    first_loss = metrics[(metrics["name"] == "train_loss") & (metrics["step"] == WARM_STEPS)]["recorded_at"]
    summary = json.loads((run.directory / "summary.json").read_text())
    global_batch = summary["global_batch"]
    steps = run.step - run.train_start_step
    loop = run.progress_at - run.train_started_at
    figure = {
        "processes": summary["processes"],
        "global_batch": global_batch,
        "samples_per_second": steps * global_batch / loop,
        "trainer_samples_per_second": float(speed.iloc[-1]) if len(speed) else None,
        "loop_seconds": loop,
        "wall_seconds": (run.finished_at or time.time()) - submitted,
        **{key: value if key == "ranks_after_launcher" else value - submitted for key, value in seen.items()},
    }
    if len(first_loss):
        logged = float(first_loss.iloc[0])
        figure["first_logged_step"] = logged - submitted
        if steps > WARM_STEPS:
            figure["later_s_per_step"] = (run.progress_at - logged) / (steps - WARM_STEPS)
            figure["first_steps_s_per_step"] = (logged - run.train_started_at) / WARM_STEPS
    threads = [line for line in jobs.log_tail(run.id, 400).splitlines() if "processes (data-parallel)" in line]
    if threads:
        figure["log_line"] = threads[0].strip()
    return figure


def describe(figure: dict) -> str:
    text = (
        f"{figure['samples_per_second']:.1f} samples/s over the steps (global batch {figure['global_batch']}; Trainer says"
        f" {figure['trainer_samples_per_second']:.1f})"
    )
    if figure.get("later_s_per_step"):
        text += (
            f", {figure['first_steps_s_per_step']:.2f} s/step over steps 1-{WARM_STEPS}, {figure['later_s_per_step']:.2f} after"
        )
    marks = [
        (label, figure.get(key))
        for key, label in (
            ("submit_returned", "submit returned (launcher started)"),
            ("ranks_after_launcher", "ranks started after the launcher by"),
            ("first_heartbeat", "heartbeat"),
            ("train_started", "loop begins"),
            ("first_logged_step", f"step {WARM_STEPS} logged"),
        )
    ]
    text += "; after submit: " + ", ".join(f"{label} {value:.1f} s" for label, value in marks if value is not None)
    text += f"; other work {figure['others_cpu_share']:.0%} of the CPU"
    return text


if __name__ == "__main__":
    sys.exit(main())
