"""`compare` and `robustness`: two models on the same split, and a run under attack, as the Inspect and Runs pages
show them.

    python -m core compare RUN_A[:STAGE] RUN_B[:STAGE] [--split test] [--json]   # share right, fixed and broken
    python -m core robustness RUN_ID [--method fgm|pgd] [--epsilon 0.05] [--space pixel_values] [--json]

A stage defaults to the run's last ("after" once it finished); the earlier model goes first, so "fixed" means wrong
under A and right under B. Any task compares by its own notion of right (`core.comparisons`).
"""

from __future__ import annotations

import json

import pandas as pd

FLIPS_SHOWN = 10  # fixed and broken examples printed in text mode; --json lists them all


def add_compare_parsers(commands) -> None:
    compare = commands.add_parser("compare", help="two runs or stages on the same split: share right, fixed and broken")
    compare.add_argument("first", help="the earlier model: RUN_ID or RUN_ID:STAGE (before, step-N, after)")
    compare.add_argument("second", help="the later model, the same way")
    compare.add_argument("--split", default="test", help="the split both are read on (default test)")
    compare.add_argument("--json", action="store_true", help="print it as JSON, with every flipped example")
    compare.set_defaults(handler=command_compare)

    robustness = commands.add_parser("robustness", help="a completed run's accuracy under attack, before and after training")
    robustness.add_argument("run_id")
    robustness.add_argument("--method", choices=("fgm", "pgd"), default="fgm", help="FGSM (one step, default) or PGD")
    robustness.add_argument("--epsilon", type=float, default=0.05, help="attack size relative to the input (default 0.05)")
    robustness.add_argument("--steps", type=int, default=5, help="PGD steps (default 5)")
    robustness.add_argument("--space", help="what to attack, where a task offers two: pixel_values or embeddings")
    robustness.add_argument("--json", action="store_true", help="print it as JSON")
    robustness.set_defaults(handler=command_robustness)


def model_of(argument: str):
    """(run, stage) from RUN_ID or RUN_ID:STAGE; the stage defaults to the run's last."""
    from core.checkpoints import latest_stage
    from core.retrain import existing_run
    from core.store import RunStore

    run_id, _, stage = argument.partition(":")
    run = existing_run(RunStore(), run_id)
    return run, stage or latest_stage(run)


def command_compare(arguments) -> int:
    from core.comparisons import compare_stages

    first, second = model_of(arguments.first), model_of(arguments.second)
    comparison, measure = compare_stages(first, second, arguments.split)
    record = {
        "split": arguments.split,
        "measure": measure,
        "first": {"run": first[0].id, "stage": first[1], "share_right": comparison.accuracy_a},
        "second": {"run": second[0].id, "stage": second[1], "share_right": comparison.accuracy_b},
        "changed": comparison.changed,
        "fixed": rows_of(comparison.fixed),
        "broken": rows_of(comparison.broken),
    }
    print(json.dumps(record, indent=2, ensure_ascii=False, default=str) if arguments.json else render(record))
    return 0


def rows_of(flips: pd.DataFrame) -> list[dict]:
    return [{"row": int(row), **values} for row, values in flips.to_dict(orient="index").items()]


def render(record: dict) -> str:
    from core.cli_support import shown

    first, second = record["first"], record["second"]
    lines = [
        f"{record['measure']} on {record['split']}: {first['run']}:{first['stage']} {first['share_right']:.1%} → "
        f"{second['run']}:{second['stage']} {second['share_right']:.1%}; {record['changed']} predictions changed",
    ]
    for title in ("fixed", "broken"):
        flips = record[title]
        lines.append(f"{title} ({'wrong then right' if title == 'fixed' else 'right then wrong'}): {len(flips)}")
        for flip in flips[:FLIPS_SHOWN]:
            name = flip.get("text", flip.get("prompt", flip.get("image", "")))
            lines.append(f"  row {flip['row']}: {shown(str(name))[:70]}")
        if len(flips) > FLIPS_SHOWN:
            lines.append(f"  … and {len(flips) - FLIPS_SHOWN} more (--json lists them all)")
    return "\n".join(lines)


def command_robustness(arguments) -> int:
    from core.adversarial import SPACE_NAMES, evaluate_robustness
    from core.errors import UserError
    from core.retrain import existing_run
    from core.store import RunStore

    run = existing_run(RunStore(), arguments.run_id)
    if run.status != "completed":
        raise UserError(f"Run {run.id} is {run.status}; the robustness check reads a completed run's before and after models.")
    results = {
        stage: evaluate_robustness(
            run, stage, method=arguments.method, epsilon=arguments.epsilon, steps=arguments.steps, space=arguments.space
        )
        for stage in ("before", "after")
    }
    if arguments.json:
        print(json.dumps(results, indent=2))
        return 0
    for stage, result in results.items():
        print(
            f"{stage}: accuracy {result['clean_accuracy']:.1%} clean, {result['attacked_accuracy']:.1%} under "
            f"{result['method']} at epsilon {result['epsilon']} on {SPACE_NAMES[result['space']]} "
            f"({result['examples']} scored)"
        )
    return 0
