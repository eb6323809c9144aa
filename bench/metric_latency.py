"""Metric latency: from the trainer writing a value into the run store until a polling reader sees it.

Prints figures; it is not a test. In a throwaway workspace it creates one run, fills it with
--rows metric rows (a long run's worth; default 5,000), then:

  1. starts a reader in another process that polls `RunStore.metrics(run_id)` every --poll
     seconds (default 0.25), as a page does, and notes when each new probe value first appears;
  2. writes --writes probe values (default 20) with `RunStore.log_metrics`, at random moments
     (so writes fall at every phase of the poll), each carrying its own write time;
  3. prints the median / p95 / max latency (write call start -> seen by the reader),
     and the cost of one `log_metrics` call and one `metrics()` read with those rows present.

The Runs page itself refreshes every 1.0 s while a run is live (pages/views/runs.py,
LIVE_REFRESH_SECONDS); pass --poll 1.0 to see that case.

    python bench/metric_latency.py
    python bench/metric_latency.py --poll 1.0 --writes 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PROBE = "latency_probe"
# What the trainer's StoreMetrics writes at a logging step.
TYPICAL_LOG = {"train_loss": 0.52, "learning_rate": 4.1e-5, "grad_norm": 3.2, "epoch": 1.25}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=20, help="probe values to time (default 20)")
    parser.add_argument("--poll", type=float, default=0.25, help="reader poll interval in seconds (default 0.25)")
    parser.add_argument("--rows", type=int, default=5000, help="metric rows in the run before measuring (default 5000)")
    parser.add_argument("--reader", metavar="RUN_ID", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reader:
        return reader(args.reader, args.writes, args.poll)
    workspace = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)
    try:
        return measure(args)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def measure(args: argparse.Namespace) -> int:
    from core.store import RunStore, new_run_id

    store = RunStore()
    run_id = new_run_id()
    store.create(
        run_id, name="bench: metric latency", task="text_classification", model="-", dataset="-", device="cpu", config_yaml=""
    )
    fill = fill_rows(store, run_id, args.rows)
    rows = len(store.metrics(run_id))
    print(
        f"store {store.path}; run {run_id} holds {rows:,} metric rows "
        f"(filled with {fill['calls']} log_metrics calls, {fill['per_call_ms']:.2f} ms each on average)"
    )

    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--reader",
        run_id,
        "--writes",
        str(args.writes),
        "--poll",
        str(args.poll),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ), cwd=REPO_ROOT)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit("the reader process did not start")
    write_ms = []
    for index in range(args.writes):
        # A random gap, so writes land at every point of the reader's poll cycle.
        time.sleep(random.uniform(0.5, 1.0) * max(args.poll, 0.2) * 2)
        written = time.time()
        store.log_metrics(run_id, 1_000_000 + index, {PROBE: written})
        write_ms.append((time.time() - written) * 1000)
    output, _ = process.communicate(timeout=max(30, args.poll * 10))
    report = json.loads(output.strip().splitlines()[-1])
    latencies = sorted(report["latencies"])
    missing = args.writes - len(latencies)

    log_ms, read_ms = call_costs(store, run_id)
    print()
    print(
        f"latency, log_metrics -> seen by a reader polling every {args.poll:g} s in another process "
        f"({len(latencies)} writes{f', {missing} never seen' if missing else ''}):"
    )
    print(
        f"  median {ms(percentile(latencies, 50))}   p95 {ms(percentile(latencies, 95))}   max {ms(latencies[-1])}"
        f"   (min {ms(latencies[0])})"
    )
    print(f"  reader: {report['polls']} polls, one metrics() read took {report['read_ms_median']:.1f} ms (median)")
    print(f"cost with {len(store.metrics(run_id)):,} rows in the run:")
    print(
        f"  one log_metrics call ({len(TYPICAL_LOG)} values): median {log_ms[0]:.2f} ms, p95 {log_ms[1]:.2f} ms"
        f"   (probe writes during the latency test: median {statistics.median(write_ms):.2f} ms)"
    )
    print(f"  one metrics(run_id) read:          median {read_ms[0]:.1f} ms, p95 {read_ms[1]:.1f} ms")
    return 0 if not missing else 1


def fill_rows(store, run_id: str, rows: int) -> dict:
    """About `rows` rows in the shape a trainer leaves: a few values per logged step."""
    per_step = len(TYPICAL_LOG)
    calls = max(1, rows // per_step)
    begin = time.perf_counter()
    for step in range(calls):
        store.log_metrics(run_id, step * 10, {k: v + step * 1e-4 for k, v in TYPICAL_LOG.items()})
    return {"calls": calls, "per_call_ms": (time.perf_counter() - begin) * 1000 / calls}


def call_costs(store, run_id: str, repeats: int = 30) -> tuple[tuple[float, float], tuple[float, float]]:
    log_ms, read_ms = [], []
    for index in range(repeats):
        begin = time.perf_counter()
        store.log_metrics(run_id, 2_000_000 + index, TYPICAL_LOG)
        log_ms.append((time.perf_counter() - begin) * 1000)
    for _ in range(repeats):
        begin = time.perf_counter()
        store.metrics(run_id)
        read_ms.append((time.perf_counter() - begin) * 1000)
    return (statistics.median(log_ms), percentile(log_ms, 95)), (statistics.median(read_ms), percentile(read_ms, 95))


def reader(run_id: str, expected: int, poll: float) -> int:
    """Poll like a page; print one JSON line with the latency of every probe value seen."""
    from core.store import RunStore

    store = RunStore()
    store.metrics(run_id)  # warm the imports (pandas) before saying ready
    print("ready", flush=True)
    seen: dict[int, float] = {}
    read_ms = []
    polls = 0
    deadline = time.time() + expected * max(poll, 0.2) * 2 * 1.0 + 30
    while len(seen) < expected and time.time() < deadline:
        begin = time.perf_counter()
        frame = store.metrics(run_id)
        now = time.time()
        read_ms.append((time.perf_counter() - begin) * 1000)
        polls += 1
        probes = frame[frame["name"] == PROBE]
        for step, value in zip(probes["step"], probes["value"]):
            if int(step) not in seen:
                seen[int(step)] = now - float(value)
        time.sleep(poll)
    summary = {"latencies": list(seen.values()), "polls": polls, "read_ms_median": statistics.median(read_ms)}
    print(json.dumps(summary), flush=True)
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
