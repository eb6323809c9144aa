"""Cross-modal explanation latency: `PairExplainer` on the built-in dual encoder, per image-caption pair.

Prints figures; it is not a test. In a throwaway workspace it builds the built-in dual encoder
(MobileNetV2 + MiniLM-L6 with fresh projections: untrained, which costs the same), shrinks its image
processor to --sizes (default 96 and 224 px, as `image_size` does for a run) and times, with the
explanation cache off so that every call computes:

  ig                joint Integrated Gradients over pixels and word embeddings, default parameters
                    (128 steps, blur and [PAD] baselines): 128 pair forward and backward passes in batches
  occlusion         one token at a time and one grid cell at a time, every occluded copy batched
  input_x_gradient  one forward and backward pass
  word              `explain_word`: Integrated Gradients of the word's effect over the image (twice the
                    pairs of `ig` per step: the caption with and without the word)

on one synthetic shapes image (drawn at the model input size) and its caption, over a 7x7 grid.
Calls run after one warm-up; the median of --repeats is shown, with IG's convergence delta as a
share of f(x) - f(baseline), so the default steps' accuracy is seen next to its cost.

    HF_HUB_OFFLINE=1 python bench/explain_pair_latency.py
    HF_HUB_OFFLINE=1 python bench/explain_pair_latency.py --sizes 96 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

METHOD_KEYS = ("ig", "occlusion", "input_x_gradient", "word")
GRID = 7


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="96,224", help="model input sizes in pixels (default 96,224)")
    parser.add_argument("--methods", default=",".join(METHOD_KEYS), help="comma-separated: ig, occlusion, input_x_gradient, word")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method and size (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="bench-explain-pairs-") as workspace:  # the built-in is built there
        os.environ["WORKBENCH_WORKSPACE"] = workspace
        return measure(args)


def measure(args) -> int:
    import torch
    from transformers.utils import logging

    from core.explain import PairExplainer
    from core.image_text.models import (
        BUILTIN_KEY,
        load_dual_encoder,
        load_tokenizer,
        resolve_dual_encoder,
    )
    from core.image_text.shapes import shapes_examples
    from core.tasks.image_classification import load_processor

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    source = resolve_dual_encoder(BUILTIN_KEY)
    model = load_dual_encoder(source).eval()
    for parameter in model.parameters():  # as load_pair_explainer does: only input gradients are needed
        parameter.requires_grad_(False)
    tokenizer = load_tokenizer(source)
    methods = [key for key in args.methods.split(",") if key]
    figures = []
    print(
        f"built-in dual encoder ({BUILTIN_KEY}), torch threads {torch.get_num_threads()}, {args.repeats} timed calls; "
        f"median seconds per pair, {GRID}x{GRID} grid"
    )
    print(f"{'size':>5} {'method':<17} {'seconds':>8} {'delta / (f(x)-f(b))':>20}")
    for size in (int(value) for value in args.sizes.split(",")):
        explainer = PairExplainer(model, load_processor(source, size), tokenizer, cache_size=0)
        example = shapes_examples(1, seed=0, size=size)[0]
        for method in methods:
            result = explain_once(explainer, example, method)  # warm-up
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                explain_once(explainer, example, method)
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            share = abs(result.delta) / max(abs(result.output_difference), 1e-6) if result.delta is not None else None
            print(f"{size:>5} {method:<17} {seconds:>8.3f} {'' if share is None else f'{share:.1%}':>20}")
            figures.append({"size": size, "method": method, "seconds": seconds, "relative_delta": share})
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def explain_once(explainer, example, method: str):
    """One explanation of the example's caption: `method`'s joint map, or for "word" the map of its shape word."""
    if method == "word":
        return explainer.explain_word(example.image, example.caption, example.shape, grid=GRID)
    return explainer.explain(example.image, example.caption, method, grid=GRID)


if __name__ == "__main__":
    raise SystemExit(main())
