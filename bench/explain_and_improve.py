"""The explain-and-improve loop's costs: recording training dynamics, drift over checkpoints, the class summary.

Prints figures; it is not a test. In a throwaway workspace, on planted keywords, with a tiny random BERT (or
`--model minilm-l6`; the figures below scale with the model):

  (1) dynamics   the same run trained in this process twice, with and without recording each training example's
                 gold-label probability (`core.dynamics`), and the training time of each (Trainer's train_runtime)
  (2) drift      `attribution_drift` of one example over every kept stage of that run (before, 10+ checkpoints,
                 after), each stage's model loaded from disk
  (3) summary    `class_summary` over 1,000 training examples (input × gradient), the first time (computed) and
                 the second (read from the run folder)

    HF_HUB_OFFLINE=1 python bench/explain_and_improve.py
    HF_HUB_OFFLINE=1 python bench/explain_and_improve.py --model minilm-l6 --rows 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_here(config, store, record: bool) -> tuple[str, float]:
    """Train `config` in this process (no worker), with dynamics recording on or off; (run id, train_runtime)."""
    from core.store import new_run_id, run_directory
    from core.tasks import TASKS
    from core.trainer import train

    task = TASKS[config.task]
    run_id = new_run_id()  # recorded as submit records it, but never queued: this process trains it
    run_directory(run_id).mkdir(parents=True)
    (run_directory(run_id) / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    run = store.create(
        run_id, name=config.name, task=config.task, model=config.model, dataset=config.dataset, device="cpu",
        config_yaml=config.to_yaml(),
    )  # fmt: skip
    store.transition(run.id, ("queued",), status="running", started_at=time.time())
    task.records_dynamics = record
    try:
        train(config, store.get(run.id), store)
    finally:
        task.records_dynamics = True
    metrics = store.metrics(run.id)
    runtime = float(metrics[metrics["name"] == "train_runtime"]["value"].iloc[-1])
    store.transition(run.id, ("running",), status="completed", finished_at=time.time())
    return run.id, runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="", help="a model key or folder (default: a tiny random BERT)")
    parser.add_argument("--rows", type=int, default=1250, help="planted-keyword rows (80 % train)")
    parser.add_argument("--epochs", type=float, default=3)
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-improve-"))
    os.environ["WORKBENCH_WORKSPACE"] = str(root / "workspace")
    from core.config import RunConfig
    from core.explain.drift import attribution_drift
    from core.explain.summary import class_summary
    from core.scratch_models import write_random_bert
    from core.store import RunStore

    model = arguments.model or str(write_random_bert(root / "tiny-bert", "tiny"))
    store = RunStore()
    steps = int(arguments.rows * 0.8 / 16 * arguments.epochs)
    config = RunConfig(
        name="bench", model=model, dataset="planted-keywords", max_rows=arguments.rows, epochs=arguments.epochs,
        learning_rate=0.003 if not arguments.model else 5e-5, eval_steps=max(1, steps // 12), max_length=32,
        keep_checkpoints=0, best_checkpoint=False,
    )  # fmt: skip
    _, without = train_here(config, store, record=False)
    run_id, with_dynamics = train_here(config, store, record=True)
    print(f"(1) dynamics: train_runtime {without:.1f} s without, {with_dynamics:.1f} s with ({with_dynamics / without - 1:+.1%})")
    started = time.perf_counter()
    drift = attribution_drift(run_id, "the film was superb and the actress was wonderful", "ig")
    print(f"(2) drift: {len(drift.stages)} stages ({len(drift.stages) - 2} checkpoints), {time.perf_counter() - started:.1f} s")
    for attempt in ("computed", "cached"):
        started = time.perf_counter()
        found = class_summary(run_id, "train", limit=1000)
        examples = sum(entry["examples"] for entry in found["classes"].values())
        print(f"(3) class summary over {examples} examples ({attempt}): {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
