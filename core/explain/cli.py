"""The `explain` command: which tokens a run's model relied on, from the shell.

    python -m core explain RUN_ID --text "a superb film" [--method ig] [--target positive] [--stage after] [--json]
    python -m core explain RUN_ID --split test --index 17 --method occlusion --param window=2
    python -m core explain PAIR_RUN_ID --image photo.png --text "a red circle" [--grid 7] [--word red]

`--split/--index` takes the row from the run's own data split (the dataset arguments the trainer
used), so index 17 is row 17 of that split and its gold label is shown. Without --json it prints
the prediction, each token with its score, and the convergence delta where the method has one.
`--image` explains an image-text run's score of the pair (image, --text): tokens and patches at once,
or with `--word` which patches make that word of the text count.
`add_explain_parser(subparsers)` plugs the command into `core/cli.py`; `main()` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from core.errors import UserError

SPLITS = ("train", "validation", "test")


def add_explain_parser(subparsers) -> argparse.ArgumentParser:
    from core.explain.methods import METHODS, methods_for

    epilog = "methods:\n" + "\n".join(
        f"  {key:17} {method.title}; parameters: "
        + (", ".join(shown_param(method, name, value) for name, value in method.defaults.items()) or "none")
        for key, method in METHODS.items()
    )
    parser = subparsers.add_parser(
        "explain", help="show which tokens a run's model relied on for one text",
        description="Attribute a run's prediction for one text to its tokens.", epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_id")
    source = parser.add_argument_group("the text (give --text, or --split with --index; --image with --text for an image-text run)")
    source.add_argument("--text", help="the text to explain")
    source.add_argument("--split", choices=SPLITS, help="take the text from this split of the run's data")
    source.add_argument("--index", type=int, help="row number within --split (0-based)")
    source.add_argument("--image", help="an image file: explain an image-text run's score of this image with --text")
    parser.add_argument("--grid", type=int, default=7, help="with --image: patches per side of the image (default 7)")
    parser.add_argument("--word", help="with --image: show which patches make this word of --text count")
    parser.add_argument("--method", default="ig", help=f"attribution method: {', '.join(METHODS)} (default ig); "
                                                       f"with --image: {', '.join(methods_for('pairs'))}")
    parser.add_argument("--target", help="class to explain, by name or index (default: the predicted class)")
    parser.add_argument("--stage", help="which model: before, checkpoint-N or after (default: the latest)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a method parameter, e.g. --param steps=100 --param baseline=mask (repeatable)")
    parser.add_argument("--merge-words", action="store_true", help="join word pieces into words, summing their scores")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.set_defaults(handler=command_explain)
    return parser


def shown_param(method, name: str, default) -> str:
    """`steps=50 (1-1000)`: a parameter's default, and its range when it is a number."""
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        low, high = method.bounds(name)
        return f"{name}={default} ({low}-{high})"
    return f"{name}={default}"


def command_explain(arguments) -> int:
    from core.explain.methods import get_method
    from core.explain.text import load_text_explainer

    params = parse_params(arguments.param)
    # Refuse unknown or out-of-range parameters before a model loads (seconds) or an explanation runs (maybe forever).
    method = "ig" if arguments.image is not None and arguments.word else arguments.method
    get_method(method, "pairs" if arguments.image is not None else "tokens").check_params(params)
    quiet_transformers()
    if arguments.image is not None:
        return explain_pair(arguments, params)
    explainer = load_text_explainer(arguments.run_id, arguments.stage)
    text, gold = example_text(arguments)
    explanation = explainer.explain(text, arguments.method, arguments.target, merge_words=arguments.merge_words, **params)
    if arguments.json:
        payload = explanation.to_dict()
        payload.update(run_id=explainer.run_id, stage=explainer.stage, gold_label=gold)
        print(json.dumps(payload, indent=2))
    else:
        print(render(explanation, gold=gold, stage=explainer.stage, colour=use_colour()))
    return 0


def explain_pair(arguments, params: dict[str, str]) -> int:
    """`--image`: the image-text run's score of (image, text) attributed to tokens and patches, or one word's patches."""
    from core.explain.pairs import load_pair_explainer

    if not arguments.text or arguments.split or arguments.index is not None:
        raise UserError("With --image, give the text to pair it with as --text \"…\" (not --split/--index).")
    explainer = load_pair_explainer(arguments.run_id, arguments.stage)
    if arguments.word:
        explanation = explainer.explain_word(arguments.image, arguments.text, arguments.word, arguments.target,
                                             grid=arguments.grid, **params)
    else:
        explanation = explainer.explain(arguments.image, arguments.text, arguments.method, arguments.target,
                                        grid=arguments.grid, **params)
    if arguments.json:
        print(json.dumps({**explanation.to_dict(), "run_id": explainer.run_id, "stage": explainer.stage}, indent=2))
    elif arguments.word:
        print(render_word(explanation, stage=explainer.stage))
    else:
        print(render_pair(explanation, stage=explainer.stage, colour=use_colour()))
    return 0


def quiet_transformers() -> None:
    """No weight-loading progress bars or load reports between the command and its answer."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"Write method parameters as NAME=VALUE, like --param steps=100 (got {pair!r}).")
        params[name.strip()] = value.strip()
    return params


def example_text(arguments) -> tuple[str, str | None]:
    """(text, gold label or None) from --text or from --split/--index of the run's data."""
    if arguments.text is not None:
        if arguments.split or arguments.index is not None:
            raise UserError("Give either --text or --split with --index, not both.")
        return arguments.text, None
    if not arguments.split or arguments.index is None:
        raise UserError("Say what to explain: --text \"…\", or --split test --index N for a row of the run's data.")
    from core.data import load_splits
    from core.run_files import run_config
    from core.store import RunStore

    run = RunStore().get(arguments.run_id)
    config = run_config(run)
    splits = load_splits(
        config.dataset, text_column=config.text_column or None, label_column=config.label_column or None,
        seed=config.seed, max_rows=config.max_rows or None,
    )
    frame = splits.split(arguments.split)
    if not 0 <= arguments.index < len(frame):
        raise UserError(f"The {arguments.split} split of run {run.id} has {len(frame)} rows; choose an index from 0 to {len(frame) - 1}.")
    row = frame.iloc[arguments.index]
    return str(row["text"]), str(row["label"])


def use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def render(explanation, gold: str | None = None, stage: str | None = None, colour: bool = False) -> str:
    """Readable lines: the prediction, `token(+0.42)` for every unit, the top tokens and the delta."""
    from core.explain.methods import describe

    e = explanation
    probability = e.probabilities[e.predicted]
    lines = [
        f"prediction: {e.predicted_label} ({probability:.0%})"
        + (f" · gold: {gold}" if gold is not None else "")
        + (f" · model: {stage}" if stage else ""),
        f"explaining: {e.target_label} with {describe(e.method, e.params)} in {e.seconds:.2f} s"
        + (" · word pieces merged into words" if e.params.get("merged_word_pieces") else "")
        + ("" if e.signed else " · unsigned: scores are magnitudes"),
    ]
    if e.truncated:
        lines.append("note: the text was longer than the model's max length and was cut; only the kept tokens are scored.")
    lines.append(scored_units(e.units, e.scores, colour))
    lines.append("top: " + ", ".join(f"{unit} ({score:+.{decimals_for(e.scores) + 1}f})" for unit, score in e.top(3)))
    return "\n".join(lines + delta_lines(e))


def render_pair(explanation, stage: str | None = None, colour: bool = False) -> str:
    """Readable lines for a PairExplanation: the score, each token's score, the top patches, the shares, the delta."""
    from core.explain.methods import describe

    e = explanation
    what = f"{e.target_label} logit" if e.kind == "classification" else "similarity (scaled cosine)"
    return "\n".join([
        f"score: {e.score:+.3g} ({what})" + (f" · model: {stage}" if stage else ""),
        (f"explaining with {describe(e.method, e.params, 'pairs')} over a {e.grid[0]}x{e.grid[1]} grid in {e.seconds:.2f} s"
         f" · text {e.text_share:.0%}, image {e.image_share:.0%} of the attribution"),
        scored_units(e.tokens, e.token_scores, colour),
        top_patches_line(e.top_patches(3)),
    ] + delta_lines(e))


def render_word(explanation, stage: str | None = None) -> str:
    """Readable lines for `explain_word`'s patch map: the word, its effect on the score, the top patches, the delta."""
    e, word = explanation, explanation.params["word"]
    return "\n".join([
        f"word: {word} (tokens {' '.join(e.params['word_tokens'])}) in \"{e.text}\"" + (f" · model: {stage}" if stage else ""),
        f"with the word the score is {e.params['effect_on_image']:+.3g} higher on this image; the patches that make it count:",
        top_patches_line(e.top(3)),
    ] + delta_lines(e))


def top_patches_line(top: list[tuple[str, float]]) -> str:
    return "top patches (r = row, c = column from the top left): " + ", ".join(f"{unit} ({score:+.3g})" for unit, score in top)


def scored_units(units: list[str], scores: list[float], colour: bool) -> str:
    """`token(+0.42)` for every unit, coloured by its score relative to the largest |score|."""
    peak, decimals = max((abs(s) for s in scores), default=0.0) or 1.0, decimals_for(scores)
    return " ".join(paint(unit, score, score / peak, colour, decimals) for unit, score in zip(units, scores))


def decimals_for(scores: list[float]) -> int:
    """Enough decimals that small scores keep two significant digits."""
    return max(2, 1 - math.floor(math.log10(max((abs(s) for s in scores), default=0.0) or 1.0)))


def delta_lines(e) -> list[str]:
    """The convergence delta against f(x) - f(baseline) (flagged when large), or that difference alone."""
    if e.delta is not None:
        size = f"{abs(e.delta) / max(abs(e.output_difference or 0), 1e-6):.1%} of f(x)-f(baseline) = {e.output_difference:+.3g}"
        warning = " — large: raise --param steps" if e.delta_is_large() and e.method == "ig" else (" — large" if e.delta_is_large() else "")
        return [f"delta: {e.delta:+.2e} ({size}){warning}"]
    if e.output_difference is not None:
        return [f"f(x)-f(baseline): {e.output_difference:+.3g}"]
    return []


def paint(unit: str, score: float, relative: float, colour: bool, decimals: int = 2) -> str:
    text = f"{unit}({score:+.{decimals}f})"
    if not colour or abs(relative) < 0.15:
        return text
    # green for evidence for the target, red against; bold when strong
    code = "32" if score > 0 else "31"
    if abs(relative) >= 0.5:
        code += ";1"
    return f"\033[{code}m{text}\033[0m"


def main(argv: list[str] | None = None) -> int:
    """`python -m core.explain.cli RUN_ID …`: the command on its own, with core/cli.py's error handling."""
    parser = argparse.ArgumentParser(prog="python -m core")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["explain", *(sys.argv[1:] if argv is None else argv)])
    from core.cli import run_command

    return run_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
