"""The sweep commands, plugged into `core/cli.py` by `add_sweep_parser`:

python -m core sweep SWEEP.yaml [--detach]      start a sweep (the YAML the Train page downloads) and follow it
python -m core sweeps [SWEEP_ID] [--json]        list sweeps, or one sweep's trials
python -m core sweep-repeat SWEEP_ID [--seeds 3] train the best trial again under other seeds
python -m core cancel SWEEP_ID                   (the cancel command) cancel a sweep and its trials
python -m core sweep-driver SWEEP_ID             (internal) the driver process a sweep starts
"""

from __future__ import annotations

import json
import time

from core.cli_support import shown


def add_sweep_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="search hyperparameters: queue a sweep of trials from a sweep YAML")
    sweep.add_argument("spec")
    sweep.add_argument("--detach", action="store_true", help="return once started instead of following its trials")
    sweep.set_defaults(handler=command_sweep)

    listing = commands.add_parser("sweeps", help="list sweeps, or one sweep's trials")
    listing.add_argument("sweep_id", nargs="?")
    listing.add_argument("--json", action="store_true", help="print the trials as JSON")
    listing.set_defaults(handler=command_sweeps)

    repeat = commands.add_parser("sweep-repeat", help="train a sweep's best trial again with other seeds (mean ± std)")
    repeat.add_argument("sweep_id")
    repeat.add_argument("--seeds", type=int, default=3)
    repeat.add_argument("--detach", action="store_true")
    repeat.set_defaults(handler=command_repeat)

    driver = commands.add_parser("sweep-driver")
    driver.add_argument("sweep_id")
    driver.set_defaults(handler=command_driver)


def command_sweep(arguments) -> int:
    from core.sweeps.driver import submit_sweep
    from core.sweeps.spec import load_spec

    sweep = submit_sweep(load_spec(arguments.spec))
    print(f"started sweep {sweep.id} ({shown(sweep.name)})")
    return 0 if arguments.detach else follow_sweep(sweep.id)


def command_repeat(arguments) -> int:
    from core.sweeps.results import repeat_best

    sweep = repeat_best(arguments.sweep_id, seeds=arguments.seeds)
    print(f"started sweep {sweep.id} ({shown(sweep.name)})")
    return 0 if arguments.detach else follow_sweep(sweep.id)


def follow_sweep(sweep_id: str) -> int:
    """Print each trial's status as it changes until the sweep ends; exit 0 when it completed."""
    from core.jobs import reconcile
    from core.store import RunStore
    from core.sweeps.driver import reconcile_sweeps

    store = RunStore()
    seen: dict[str, str] = {}
    try:
        while True:
            reconcile(store)
            reconcile_sweeps(store)
            for run in store.trials(sweep_id):
                if seen.get(run.id) != run.status:
                    seen[run.id] = run.status
                    reason = f": {run.error}" if run.error and run.status in ("pruned", "failed") else ""
                    print(f"trial {run.trial} (run {run.id}) {run.status}{reason}", flush=True)
            sweep = store.sweep(sweep_id)
            if sweep.finished:
                print_trials(sweep_id)
                print(f"sweep {sweep_id} {sweep.status}" + (f": {sweep.error}" if sweep.error else ""))
                return 0 if sweep.status == "completed" else 1
            time.sleep(1)
    except KeyboardInterrupt:
        print(f"\nstopped following sweep {sweep_id}; it keeps going (`python -m core cancel {sweep_id}` stops it).")
        return 130


def command_sweeps(arguments) -> int:
    from core.store import FINISHED, RunStore
    from core.sweeps.driver import reconcile_sweeps
    from core.sweeps.results import best_trial, sweep_spec, trial_frame

    store = RunStore()
    reconcile_sweeps(store)
    if arguments.sweep_id:
        return print_trials(arguments.sweep_id, as_json=arguments.json)
    sweeps = store.sweeps()
    if not sweeps:
        print("no sweeps yet; start one with `python -m core sweep SWEEP.yaml` or from the Train page")
        return 0
    rows = []
    for sweep in sweeps:
        spec = sweep_spec(sweep)
        frame = trial_frame(sweep.id, store)
        best = best_trial(frame, spec.maximize)
        rows.append(
            {
                "id": sweep.id,
                "status": sweep.status,
                "trials": f"{int(frame['status'].isin(FINISHED).sum())}/{spec.budget()}",
                "best": None if best is None else best["objective"],
                "objective": spec.objective_metric,
                "name": sweep.name,
            }
        )
    if arguments.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':29} {'status':10} {'trials':>7} {'best':>8} objective / name")
    for row in rows:
        best = "—" if row["best"] is None else f"{row['best']:.4g}"
        print(f"{row['id']:29} {row['status']:10} {row['trials']:>7} {best:>8} {row['objective']} / {shown(row['name'])}")
    return 0


def print_trials(sweep_id: str, as_json: bool = False) -> int:
    from core.sweeps.results import trial_frame

    frame = trial_frame(sweep_id)
    if as_json:
        print(frame.to_json(orient="records", indent=2))
    else:
        print(frame.drop(columns=["reason"]).to_string(index=False))
    return 0


def command_driver(arguments) -> int:
    from core.sweeps.driver import run_driver

    return run_driver(arguments.sweep_id)
