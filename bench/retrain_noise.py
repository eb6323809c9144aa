"""Error slice → retrain on real data: movie reviews with 10 % of the training labels flipped, the data map's mislabel
candidates relabelled (`core.retrain.candidate_edits`), and a child run on that version, against its parent.

Prints figures; it is not a test. In a throwaway workspace, with MiniLM-L6 (a real pretrained encoder) by default:
the held-out splits are clean (a `split` column keeps them so), so the test accuracy the child gains is what fixing
the training labels bought. Per round: how many candidates are flipped rows, parent → child test accuracy, fixed
and broken test examples, and both runs' times.

    HF_HUB_OFFLINE=1 python bench/retrain_noise.py                      # MiniLM, 2,000 reviews, 2 epochs
    HF_HUB_OFFLINE=1 python bench/retrain_noise.py --rounds 3 --rows 1000
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

OTHER = {"positive": "negative", "negative": "positive"}


def noisy_table(folder: Path, rows: int, share: float, seed: int):
    """A CSV of `rows` movie reviews: 70 / 10 / 20 train / validation / test, `share` of the training labels flipped."""
    from core.data.builtin import movie_reviews_frame

    frame = movie_reviews_frame().sample(n=rows, random_state=seed).reset_index(drop=True)
    frame["split"] = ["test" if row % 10 < 2 else "validation" if row % 10 == 2 else "train" for row in range(rows)]
    train = frame.index[frame["split"] == "train"]
    flipped = train[:: round(1 / share)]
    frame.loc[flipped, "label"] = frame.loc[flipped, "label"].map(OTHER)
    path = folder / f"noisy-{seed}.csv"
    frame.to_csv(path, index=False)
    return path, set(frame.loc[flipped, "text"])


def finished(run, store):
    from core import jobs

    run = jobs.wait(run.id, store, timeout=3600)
    if run.status != "completed":
        raise SystemExit(f"run {run.id} {run.status}: {jobs.log_tail(run.id, 20)}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.1, help="share of the training labels flipped")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each on another sample and seed")
    arguments = parser.parse_args()
    os.environ["WORKBENCH_WORKSPACE"] = tempfile.mkdtemp(prefix="bench-retrain-")

    from core import jobs
    from core.config import RunConfig
    from core.dynamics import data_map
    from core.retrain import candidate_edits, compare_with_parent, retrain
    from core.store import RunStore

    store = RunStore()
    print(f"model {arguments.model} · {arguments.rows} reviews · {arguments.share:.0%} of the training labels flipped")
    for seed in range(arguments.rounds):
        table, flipped = noisy_table(Path(os.environ["WORKBENCH_WORKSPACE"]), arguments.rows, arguments.share, seed)
        config = RunConfig(
            name=f"noisy {seed}", model=arguments.model, dataset=str(table), epochs=arguments.epochs, max_length=64,
            eval_steps=40, seed=seed,
        )  # fmt: skip
        started = time.perf_counter()
        parent = finished(jobs.submit(config, store), store)
        parent_time = time.perf_counter() - started
        k = int(data_map(parent)["text"].isin(flipped).sum())
        edits = candidate_edits(parent.id, k)
        relabelled = [example for edit in edits for example in edit.examples]
        mapped = data_map(parent).set_index("example")
        hits = mapped.loc[relabelled, "text"].isin(flipped).mean() if relabelled else float("nan")
        started = time.perf_counter()
        _, child = retrain(parent.id, edits)
        child = finished(child, store)
        child_time = time.perf_counter() - started
        outcome = compare_with_parent(child.id)
        comparison = outcome.comparison
        print(
            f"round {seed}: {k} flipped training rows; {len(relabelled)} relabelled, {hits:.0%} of them flipped rows · "
            f"test accuracy {comparison.accuracy_a:.1%} → {comparison.accuracy_b:.1%} "
            f"({(comparison.accuracy_b - comparison.accuracy_a) * 100:+.1f} points; {len(comparison.fixed)} fixed, "
            f"{len(comparison.broken)} broken) · runs {parent_time:.0f} s and {child_time:.0f} s"
        )


if __name__ == "__main__":
    main()
