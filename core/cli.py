"""The headless command line: the same code paths as the pages.

python -m core train CONFIG.yaml [--detach]   queue a run (and follow its log unless --detach)
python -m core train CONFIG.yaml --external  record a run for your scheduler to start; prints its id
python -m core runs                          list runs with status and progress
python -m core cancel RUN_ID|SWEEP_ID        cancel a queued or running run, or a sweep and its trials
python -m core resume RUN_ID                 resume a failed or cancelled run from its last checkpoint
python -m core export RUN_ID OUT_DIR [--int8]  export a completed run (model folder + card, int8 variant)
python -m core explain RUN_ID --text "…" | --image FILE | --split test --index N  [--token K] [--method ig] [--json]
python -m core sweep SWEEP.yaml [--detach]   search hyperparameters (Optuna); `sweeps [ID]` lists, `sweep-repeat ID`
python -m core data add FILE --task TASK [--images ZIP] | list | show NAME [--json] | delete NAME   datasets
python -m core compare RUN_A[:STAGE] RUN_B[:STAGE] [--split test] [--json]   two models on one split: fixed, broken
python -m core robustness RUN_ID [--method pgd] [--epsilon 0.05] [--space …] [--json]   accuracy under attack
python -m core worker RUN_ID                 (internal) the trainer process the job manager starts
"""

from __future__ import annotations

import argparse
import sys
import time

from core.cli_support import ERROR_LOG as ERROR_LOG  # re-exported: the log a failing command names
from core.cli_support import run_command, shown
from core.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_command(parser.parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Fine-tune & explain workbench (headless).")
    # The worker command is the job manager's, not a person's: leave it out of the listing.
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{train,runs,cancel,resume,explain,export,data,compare,robustness,sweep,sweeps,sweep-repeat}",
    )

    train = commands.add_parser("train", help="queue a run from a YAML config (as downloaded from the Train page)")
    train.add_argument("config")
    train.add_argument("--detach", action="store_true", help="return once queued instead of following the log")
    train.add_argument(
        "--external",
        action="store_true",
        help="only record the run and print its id: your scheduler (SLURM, Kubernetes) starts its worker on each node "
        "with the torchrun command printed to stderr",
    )
    train.set_defaults(handler=command_train)

    export = commands.add_parser("export", help="export a completed run as a Hugging Face model folder (plus int8)")
    export.add_argument("run_id")
    export.add_argument("out_dir")
    export.add_argument(
        "--int8",
        action="store_true",
        help="also write an int8 ONNX variant (ONNX Runtime dynamic quantization), measured against fp32",
    )
    export.set_defaults(handler=command_export)

    from core.explain.cli import add_explain_parser

    add_explain_parser(commands)
    from core.data_cli import add_data_parser

    add_data_parser(commands)
    from core.compare_cli import add_compare_parsers

    add_compare_parsers(commands)
    from core.sweeps.cli import add_sweep_parser

    add_sweep_parser(commands)

    runs = commands.add_parser("runs", help="list runs")
    runs.set_defaults(handler=command_runs)

    for name, handler, text in (
        ("cancel", command_cancel, "cancel a queued or running run, or a running sweep"),
        ("resume", command_resume, "resume a failed or cancelled run from its last checkpoint"),
        ("worker", command_worker, None),
    ):
        sub = commands.add_parser(name, help=text) if text else commands.add_parser(name)
        sub.add_argument("run_id")
        sub.set_defaults(handler=handler)
    return parser


def command_train(arguments) -> int:
    from core.config import RunConfig
    from core.jobs import submit

    config = RunConfig.load(arguments.config)
    run = submit(config, external=arguments.external)
    if arguments.external:
        from core.distributed import cluster_command

        print(run.id)  # alone on stdout, for a batch script's RUN_ID=$(…)
        per_node = max(1, config.devices)
        print(f"recorded run {run.id}; on each node run: {cluster_command(run.id, 1, per_node)}", file=sys.stderr)
        return 0
    print(f"queued run {run.id} ({shown(run.name)}) on {run.device}; status {run.status}")
    if arguments.detach:
        return 0
    return follow(run.id)


def follow(run_id: str) -> int:
    """Print the run's log as it grows until the run finishes; exit 0 only when it completed."""
    from core.jobs import LOG_FILE, reconcile
    from core.store import RunStore, run_directory

    store = RunStore()
    log = run_directory(run_id) / LOG_FILE
    position = 0
    try:
        while True:
            reconcile(store)
            run = store.get(run_id)
            if log.exists():
                with log.open("rb") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position += len(chunk)
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            if run.finished:
                print(f"run {run_id} {run.status}" + (f": {run.error}" if run.error else ""))
                return 0 if run.status == "completed" else 1
            time.sleep(1)
    except KeyboardInterrupt:
        # Ctrl-C stops the following, not the run: the trainer is its own process.
        print(f"\nstopped following run {run_id}; it keeps going (`python -m core cancel {run_id}` stops it).", file=sys.stderr)
        return 130


def command_runs(arguments) -> int:
    from core.jobs import reconcile
    from core.store import RunStore

    store = RunStore()
    try:
        reconcile(store)
    except UserError as problem:  # a read-only store: say so, and still list what it holds
        print(f"warning: {problem}", file=sys.stderr)
    runs = store.list()
    if not runs:
        print("no runs yet; start one with `python -m core train CONFIG.yaml` or from the Train page")
        return 0
    print(f"{'id':22} {'status':10} {'progress':>9} {'device':6} name")
    for run in runs:
        print(f"{run.id:22} {status_word(run):10} {run.progress:9.0%} {run.device:6} {shown(run.name)}")
    return 0


def status_word(run) -> str:
    """The status, with "stalled" for a running trainer that stopped making progress."""
    from core.jobs import stall_of

    return "stalled" if stall_of(run) else run.status


def command_cancel(arguments) -> int:
    from core.jobs import cancel
    from core.sweeps.driver import cancel_sweep, is_sweep_id

    if is_sweep_id(arguments.run_id):
        sweep = cancel_sweep(arguments.run_id)
        print(f"sweep {sweep.id}: {sweep.status} (its running trials stop at their next step)")
        return 0

    run = cancel(arguments.run_id)
    print(f"run {run.id}: {run.status}" + (" (stopping at the next step)" if run.status == "running" else ""))
    return 0


def command_resume(arguments) -> int:
    from core.jobs import resume

    run = resume(arguments.run_id)
    print(f"run {run.id}: {run.status}")
    return 0


def command_export(arguments) -> int:
    from core.export import export_run

    folder = export_run(arguments.run_id, arguments.out_dir, int8=arguments.int8)
    print(f"exported run {arguments.run_id} to {folder}")
    quantization = folder / "int8" / "quantization.json"
    if quantization.exists():
        print(quantization.read_text(encoding="utf-8"))
    return 0


def command_worker(arguments) -> int:
    from core.trainer import run_worker

    return run_worker(arguments.run_id)
