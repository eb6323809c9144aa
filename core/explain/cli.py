"""The `explain` command: which tokens, patches or words a run's model relied on, from the shell.

    python -m core explain RUN_ID --text "a superb film" [--method ig] [--target positive] [--stage after] [--json]
    python -m core explain RUN_ID --split test --index 17 --method occlusion --param window=2
    python -m core explain IMAGE_RUN_ID --image photo.png | --split test --index 3  [--grid 7] [--method grad_cam]
    python -m core explain NER_RUN_ID --split test --index 4 --token 2   (or --text "Ada lives in Paris" --token 3)
    python -m core explain PAIR_RUN_ID --image photo.png --text "a red circle" [--grid 7] [--word red]
    python -m core explain LM_RUN_ID --split test --index 2 [--target 0]   (or --text "a prompt"; --target: answer token)

What is explained follows the run's task: a text classifier's class over the tokens; an image
classifier's class over a grid of patches (`core.explain.image`); a NER model's tag for the word
`--token` picks, over the sentence's tokens (`core.explain.tags`); an image-text run's score of the
pair (image, --text) over tokens and patches at once, or with `--word` which patches make that word
count (`core.explain.pairs`); an instruction-tuned model's greedy answer to the prompt (--text or the row's), over
the prompt's tokens: the whole answer, or with `--target J` its J-th token (`core.explain.answers`).
`--split/--index` takes the row from the run's own data split (the dataset arguments the trainer used), so index 17
is row 17 of that split and its gold label, tag or reference answer is shown. Without --json it prints the
prediction, each unit with its score, and the convergence delta where the method has one.
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
# The flags that only some views of a run take (`Task.view`), and which runs those are (refused elsewhere).
FLAG_KINDS = {
    "--image": (("image", "pairs"), "image classification and image-text runs"),
    "--token": (("tags",), "named-entity runs"),
    "--word": (("pairs",), "image-text runs"),
    "--merge-words": (("text", "tags", "answers"), "text classification, named-entity and instruction-tuning runs"),
}
METHOD_RUNS = {
    "tokens": "text classification, named-entity and instruction-tuning runs",
    "patches": "image classification runs",
    "pairs": "image-text runs",
}
LISTED_WORDS = 30  # words named in the sentence asking which --token to explain


def add_explain_parser(subparsers) -> argparse.ArgumentParser:
    from core.explain.methods import methods_for

    epilog = "\n\n".join(
        f"methods for {runs}:\n"
        + "\n".join(
            f"  {key:17} {method.title}; parameters: "
            + (", ".join(shown_param(method, name, value) for name, value in method.defaults.items()) or "none")
            for key, method in methods_for(modality).items()
        )
        for modality, runs in METHOD_RUNS.items()
    )
    parser = subparsers.add_parser(
        "explain",
        help="show which tokens, patches or words a run's model relied on for one example",
        description="Attribute a run's prediction for one example to its tokens (text), patches (images), the tokens "
        "around one word (NER) or both (image-text).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_id")
    source = parser.add_argument_group(
        "the example (--text, --image, or --split with --index; an image-text run takes "
        "--image with --text, or --split with --index)"
    )
    source.add_argument("--text", help="the text (NER: a sentence, words separated by spaces) to explain")
    source.add_argument("--split", choices=SPLITS, help="take the example from this split of the run's data")
    source.add_argument("--index", type=int, help="row number within --split (0-based)")
    source.add_argument(
        "--image",
        help="an image file: explain an image classification run's prediction for it, or "
        "with --text an image-text run's score of the pair",
    )
    parser.add_argument("--token", type=int, help="NER runs: the word (0-based) whose tag is explained")
    parser.add_argument("--grid", type=int, default=7, help="image runs and --image: patches per side of the image (default 7)")
    parser.add_argument("--word", help="with --image: show which patches make this word of --text count")
    parser.add_argument(
        "--method",
        default="ig",
        help=f"attribution method: {', '.join(methods_for('patches'))} (default ig; Grad-CAM for image classification runs only)",
    )
    parser.add_argument("--target", help="class (NER: tag) to explain, by name or index (default: the predicted one)")
    parser.add_argument("--stage", help="which model: before, checkpoint-N or after (default: the latest)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method parameter, e.g. --param steps=100 --param baseline=mask (repeatable)",
    )
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
    from core.store import RunStore

    params = parse_params(arguments.param)
    run = RunStore().get(arguments.run_id)
    view, explains = explanation_kind(run, arguments)
    # Refuse unknown or out-of-range parameters before a model loads (seconds) or an explanation runs (maybe forever).
    method = "ig" if view == "pairs" and arguments.word else arguments.method
    get_method(method, explains).check_params(params)
    quiet_transformers()
    return EXPLAINERS[view](arguments, params, run)


def explanation_kind(run, arguments) -> tuple[str, str]:
    """(the run's view, the input its explanations attribute over), as its task names them (`Task.view`,
    `Task.explains`). A run the store does not have is judged by the flags (--image: a pair), so a bad parameter is
    still named first and the loader then says the run is missing."""
    from core.tasks import TASKS

    if run is None:
        return ("pairs", "pairs") if arguments.image is not None else ("text", "tokens")
    task = TASKS.get(run.task)
    if task is None:
        raise UserError(f"Run {run.id} is a run of the task '{run.task}', which this version of the workbench does not know.")
    kind = task.view
    given = {
        "--image": arguments.image is not None,
        "--token": arguments.token is not None,
        "--word": bool(arguments.word),
        "--merge-words": arguments.merge_words,
    }
    for flag, (kinds, runs) in FLAG_KINDS.items():
        if given[flag] and kind not in kinds:
            what = f"a {task.title.lower()}"
            raise UserError(f"{flag} is for {runs}; run {run.id} is {what} run.")
    return kind, task.explains


def explain_text(arguments, params: dict[str, str], run) -> int:
    """A text classifier's class, over the tokens of --text or of a row of the run's split. `run` may be None: the
    loader then says the run is missing."""
    from core.explain.loading import load_text_explainer

    explainer = load_text_explainer(arguments.run_id, arguments.stage)
    text, gold = example_text(arguments, run)
    explanation = explainer.explain(text, arguments.method, arguments.target, merge_words=arguments.merge_words, **params)
    show(arguments, explanation, run_id=explainer.run_id, stage=explainer.stage, gold_label=gold)
    return 0


def explain_tag(arguments, params: dict[str, str], run) -> int:
    """A NER model's tag for the word --token picks, over the sentence's tokens (core.explain.tags)."""
    from core.checkpoints import latest_stage
    from core.explain.loading import load_tag_explainer

    words, tags = example_sentence(arguments, run)
    word = chosen_word(arguments.token, words)
    stage = arguments.stage or latest_stage(run)
    explainer = load_tag_explainer(run.id, word, stage)
    explanation = explainer.explain(
        " ".join(words), arguments.method, arguments.target, merge_words=arguments.merge_words, **params
    )
    show(
        arguments,
        explanation,
        run_id=run.id,
        stage=stage,
        gold_label=tags[word] if tags else None,
        word_index=word,
        word=words[word],
    )
    return 0


def explain_image(arguments, params: dict[str, str], run) -> int:
    """An image classifier's class, over a grid of patches of --image or of a row of the run's split (core.explain.image)."""
    from core.explain.loading import load_image_explainer

    if arguments.text is not None:
        raise UserError(f"Run {run.id} is an image classification run: give --image FILE or --split with --index, not --text.")
    image, gold = example_image(arguments, run)
    explainer = load_image_explainer(run.id, arguments.stage)
    explanation = explainer.explain(image, arguments.method, arguments.target, grid=arguments.grid, **params)
    show(
        arguments,
        explanation,
        run_id=run.id,
        stage=explainer.stage,
        gold_label=gold,
        image=arguments.image if arguments.image is not None else image,
    )
    return 0


def explain_answer(arguments, params: dict[str, str], run) -> int:
    """An instruction-tuned model's answer to a prompt (--text, or a row's prompt with its reference), over the prompt's
    tokens: the whole answer, or the answer token --target names (core.explain.answers)."""
    from core.explain.loading import load_explainer

    if arguments.text is not None:
        if arguments.split or arguments.index is not None:
            raise UserError("Give either --text or --split with --index, not both.")
        prompt, reference = arguments.text, None
    else:
        row = split_row(arguments, run)
        prompt, reference = str(row["prompt"]), str(row["response"])
    explainer = load_explainer(run.id, arguments.stage)
    explanation = explainer.explain(prompt, arguments.method, arguments.target, merge_words=arguments.merge_words, **params)
    show(arguments, explanation, run_id=run.id, stage=explainer.stage, gold_label=reference)
    return 0


def show(arguments, explanation, **facts) -> None:
    """Print an Explanation as JSON (its fields plus `facts`: run, stage, gold, …) or as readable lines."""
    if arguments.json:
        print(json.dumps({**explanation.to_dict(), **facts}, indent=2))
        return
    subject = f" of word {facts['word_index']} ({facts['word']!r})" if "word_index" in facts else ""
    print(render(explanation, gold=facts["gold_label"], stage=facts["stage"], colour=use_colour(), subject=subject))


def explain_pair(arguments, params: dict[str, str], run) -> int:
    """An image-text run's score of a pair (--image with --text, or a row of its split) attributed to tokens and
    patches, or one word's patches. `run` may be None: the loader then says the run is missing."""
    from core.explain.loading import load_pair_explainer

    image, text, gold = example_pair(arguments, run)
    explainer = load_pair_explainer(arguments.run_id, arguments.stage)
    if arguments.word:
        explanation = explainer.explain_word(image, text, arguments.word, arguments.target, grid=arguments.grid, **params)
    else:
        explanation = explainer.explain(image, text, arguments.method, arguments.target, grid=arguments.grid, **params)
    if arguments.word and not arguments.json:
        print(render_word(explanation, stage=explainer.stage))
    else:
        show(arguments, explanation, run_id=explainer.run_id, stage=explainer.stage, gold_label=gold)
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


def example_text(arguments, run) -> tuple[str, str | None]:
    """(text, gold label or None) from --text or from --split/--index of the run's data."""
    if arguments.text is not None:
        if arguments.split or arguments.index is not None:
            raise UserError("Give either --text or --split with --index, not both.")
        return arguments.text, None
    row = split_row(arguments, run)
    return str(row["text"]), str(row["label"])


def example_sentence(arguments, run) -> tuple[list[str], list[str] | None]:
    """(words, gold tags or None) from --text (split at spaces) or from --split/--index of the NER run's data."""
    if arguments.text is not None:
        if arguments.split or arguments.index is not None:
            raise UserError("Give either --text or --split with --index, not both.")
        return arguments.text.split(), None
    row = split_row(arguments, run)
    return [str(word) for word in row["tokens"]], [str(tag) for tag in row["tags"]]


def example_image(arguments, run) -> tuple[object, str | None]:
    """(PIL image or dataset reference, gold label or None) from --image FILE or --split/--index of the image run's data."""
    if arguments.image is not None:
        if arguments.split or arguments.index is not None:
            raise UserError("Give either --image or --split with --index, not both.")
        return image_file(arguments.image), None
    row = split_row(arguments, run)
    return str(row["image"]), str(row["label"])


def example_pair(arguments, run) -> tuple[object, str, str | None]:
    """(image file or pair reference, text, gold label or None) from --image with --text, or from --split/--index of
    the image-text run's pairs (the row's own image and caption)."""
    if arguments.image is not None:
        if arguments.split or arguments.index is not None:
            raise UserError("Give either --image with --text or --split with --index, not both.")
        if not arguments.text:
            raise UserError('With --image, give the text to pair it with as --text "…".')
        return arguments.image, arguments.text, None
    if arguments.text is not None:
        raise UserError(
            f'Run {arguments.run_id} is an image-text run: explain a pair with --image FILE --text "…", '
            "or a pair of its data with --split test --index N."
        )
    if run is None:
        raise UserError(
            f"There is no run '{arguments.run_id}' in this workspace; `python -m core runs` lists the runs there are."
        )
    row = split_row(arguments, run)
    label = row.get("label")
    return str(row["image"]), str(row["text"]), None if label is None or label != label else str(label)


def split_row(arguments, run):
    """Row --index of --split of the run's own data, as its task rebuilds the split (`core.stages.split_rows`)."""
    from core.stages import split_rows

    split, index = chosen_row(arguments)
    rows, _ = split_rows(run, split)
    return row_of(rows, split, index, run)


def chosen_row(arguments) -> tuple[str, int]:
    if not arguments.split or arguments.index is None:
        raise UserError(
            'Say what to explain: --text "…" (an image run: --image FILE), or --split test --index N '
            "for a row of the run's data."
        )
    return arguments.split, arguments.index


def row_of(frame, split: str, index: int, run):
    if not 0 <= index < len(frame):
        raise UserError(f"The {split} split of run {run.id} has {len(frame)} rows; choose an index from 0 to {len(frame) - 1}.")
    return frame.iloc[index]


def chosen_word(token: int | None, words: list[str]) -> int:
    """--token, checked against the sentence; the sentence's words are listed when it is missing or out of range."""
    if token is not None and 0 <= token < len(words):
        return token
    listed = ", ".join(f"{number} {word}" for number, word in enumerate(words[:LISTED_WORDS]))
    listed += ", …" if len(words) > LISTED_WORDS else ""
    asked = (
        "Say which word's tag to explain" if token is None else f"There is no word {token} in this sentence of {len(words)} words"
    )
    raise UserError(f"{asked}: give --token K, 0-based ({listed}).")


def image_file(path: str):
    """The RGB picture in an image file, or a sentence saying why there is none."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"There is no image file {path}; give the path of a PNG or JPEG file.") from None
    except (UnidentifiedImageError, OSError):
        raise UserError(f"{path} is not an image that can be read; pick a PNG or JPEG file.") from None


def use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def render(explanation, gold: str | None = None, stage: str | None = None, colour: bool = False, subject: str = "") -> str:
    """Readable lines for an explanation of any task: the prediction (or a similarity model's score), what is
    explained with which method, then each part — `token(+0.42)` for every token, a patch map one grid row per
    line — with its top units, and the delta. `subject` follows the explained class, e.g. " of word 3 ('Paris')"
    for a NER tag."""
    from core.explain.methods import describe

    e = explanation
    several = len(e.parts) > 1
    grid = e.params.get("grid")
    lines = [
        headline(e) + (f" · gold: {gold}" if gold is not None else "") + (f" · model: {stage}" if stage else ""),
        f"explaining: {e.target_label}{subject} with {describe(e.method, e.params, e.modality)}"
        + (f" over a {grid[0]}x{grid[1]} grid" if several and grid else "")
        + f" in {e.seconds:.2f} s"
        + (" · " + ", ".join(f"{PART_NAMES[p.input]} {p.share:.0%}" for p in e.parts) + " of the attribution" if several else "")
        + (" · word pieces merged into words" if e.params.get("merged_word_pieces") else "")
        + ("" if e.signed else " · unsigned: scores are magnitudes"),
    ]
    if e.truncated:
        lines.append("note: the text was longer than the model's max length and was cut; only the kept tokens are scored.")
    if e.params.get("grid_note"):
        lines.append(f"note: {e.params['grid_note']}")
    for part in e.parts:
        lines += part_lines(e.only(part.input) if several else e, colour)
    return "\n".join(lines + delta_lines(e))


PART_NAMES = {"tokens": "text", "patches": "image"}


def headline(e) -> str:
    """The prediction with its probability; a similarity model, which has no classes, gives its score instead."""
    if e.kind == "generation":
        return f"answer: {e.predicted_label!r} · log-probability of the explained part {e.score:+.3g}"
    if e.predicted is None:
        return f"score: {e.score:+.3g} (similarity (scaled cosine))"
    prediction = f"prediction: {e.predicted_label} ({e.probabilities[e.predicted]:.0%})"
    return prediction + (f" · score {e.score:+.3g} ({e.target_label} logit)" if e.modality == "pairs" else "")


def part_lines(e, colour: bool) -> list[str]:
    """One part's scored units and its top three: tokens on one line, patches one grid row per line."""
    (part,) = e.parts
    if part.input == "patches":
        return [scored_units(part.units, part.scores, colour, per_line=part.layout[1]), top_patches_line(e.top(3))]
    top = ", ".join(f"{unit} ({score:+.{decimals_for(part.scores) + 1}f})" for unit, score in e.top(3))
    return [scored_units(part.units, part.scores, colour), "top: " + top]


def render_word(explanation, stage: str | None = None) -> str:
    """Readable lines for `explain_word`'s patch map: the word, its effect on the score, the top patches, the delta."""
    e, word = explanation, explanation.params["word"]
    return "\n".join(
        [
            f'word: {word} (tokens {" ".join(e.params["word_tokens"])}) in "{e.text}"' + (f" · model: {stage}" if stage else ""),
            f"with the word the score is {e.params['effect_on_image']:+.3g} higher on this image; "
            f"the patches that make it count:",
            top_patches_line(e.top(3)),
        ]
        + delta_lines(e)
    )


def top_patches_line(top: list[tuple[str, float]]) -> str:
    return "top patches (r = row, c = column from the top left): " + ", ".join(f"{unit} ({score:+.3g})" for unit, score in top)


def scored_units(units: list[str], scores: list[float], colour: bool, per_line: int | None = None) -> str:
    """`token(+0.42)` for every unit, coloured by its score relative to the largest |score|; `per_line` units a line."""
    peak, decimals = max((abs(s) for s in scores), default=0.0) or 1.0, decimals_for(scores)
    painted = [paint(unit, score, score / peak, colour, decimals) for unit, score in zip(units, scores)]
    width = per_line or max(len(painted), 1)
    return "\n".join(" ".join(painted[start : start + width]) for start in range(0, len(painted), width))


def decimals_for(scores: list[float]) -> int:
    """Enough decimals that small scores keep two significant digits."""
    return max(2, 1 - math.floor(math.log10(max((abs(s) for s in scores), default=0.0) or 1.0)))


def delta_lines(e) -> list[str]:
    """The convergence delta against f(x) - f(baseline) (flagged when large), or that difference alone."""
    if e.delta is not None:
        size = f"{abs(e.delta) / max(abs(e.output_difference or 0), 1e-6):.1%} of f(x)-f(baseline) = {e.output_difference:+.3g}"
        warning = (
            " — large: raise --param steps"
            if e.delta_is_large() and e.method == "ig"
            else (" — large" if e.delta_is_large() else "")
        )
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


EXPLAINERS = {  # by Task.view
    "text": explain_text,
    "tags": explain_tag,
    "image": explain_image,
    "pairs": explain_pair,
    "answers": explain_answer,
}


def main(argv: list[str] | None = None) -> int:
    """`python -m core.explain.cli RUN_ID …`: the command on its own, with core/cli.py's error handling."""
    parser = argparse.ArgumentParser(prog="python -m core")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["explain", *(sys.argv[1:] if argv is None else argv)])
    from core.cli_support import run_command

    return run_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
