"""Faithfulness card cost: how long one card takes over a MiniLM map, per method and in all.

Prints figures; it is not a test. MiniLM-L6 as a 2-class classifier (random head: the cost is the same as a trained
one's) on one movie-review sentence. For each method it times the map alone (`TextExplainer.explain`, cache off)
and the card (`core.explain.faithfulness.explainer_card`: the map, then deletion and insertion curves at 10 cuts for
the map's order, its reverse, leave-one-out and its reverse, and five random orders, all batched), and prints the
card's extra time over the map.

    HF_HUB_OFFLINE=1 python bench/faithfulness_card.py
    HF_HUB_OFFLINE=1 python bench/faithfulness_card.py --methods ig,occlusion --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
SENTENCE = (
    "an utterly charming and hilarious film that reminded me of why i fell in love with the movies "
    "in the first place , even if the final act drags a little"
)


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="ig,saliency,occlusion")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["WORKBENCH_WORKSPACE"] = tempfile.mkdtemp(prefix="bench-faithfulness-")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from core.catalog import MINILM_L6
    from core.explain import TextExplainer
    from core.explain.faithfulness import explainer_card

    logging.set_verbosity_error()
    source = MINILM_L6.local_dir()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    explainer = TextExplainer(model, tokenizer, ["negative", "positive"], max_length=128, cache_size=0)
    methods = [key for key in arguments.methods.split(",") if key]
    print(f"MiniLM-L6, {len(tokenizer(SENTENCE)['input_ids'])} tokens, {torch.get_num_threads()} threads")
    for method in methods:
        explainer.explain(SENTENCE, method)  # warm-up
        alone = median_seconds(lambda: explainer.explain(SENTENCE, method), arguments.repeats)
        card = median_seconds(lambda: explainer_card(explainer, SENTENCE, [method]), arguments.repeats)
        print(f"  {method:18} map {alone:6.2f} s   card {card:6.2f} s   (+{card - alone:.2f} s for the curves)")
    everything = median_seconds(lambda: explainer_card(explainer, SENTENCE, methods), 1)
    print(f"  one card over {', '.join(methods)}: {everything:.2f} s")


if __name__ == "__main__":
    main()
