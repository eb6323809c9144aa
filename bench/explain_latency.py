"""Explanation latency: `TextExplainer.explain` against a bare Captum call doing the same work.

Prints figures; it is not a test. In a throwaway workspace it loads MiniLM-L6 as a 2-class
`AutoModelForSequenceClassification` (random head; no training needed, the cost is the same) and,
for each attribution method, times on one movie-review sentence:

  (w) the workbench: `TextExplainer.explain(text, method, target=t)` with the explanation cache
      off, so every call computes (tokenising, prediction, attribution, plain-data result);
  (b) bare Captum: the call a person would write by hand for the same method and parameters on
      the same model and input, tokenising included, reducing to one score per token:
        ig                LayerIntegratedGradients on get_input_embeddings(), [PAD] baseline ids,
                          n_steps 50, return_convergence_delta=True (the workbench reports the delta too)
        saliency          Saliency on the word embeddings (inputs_embeds), abs=False, L2 norm per token
        input_x_gradient  InputXGradient on the word embeddings, summed per token
        occlusion         Occlusion on the word embeddings, window (1, H), [PAD] baseline, every
                          occluded copy in one batch (the workbench's batching; Captum's default
                          of one copy per forward pass would be several times slower)
        gradient_shap     GradientShap on the word embeddings, n_samples 20, stdevs 0.01, no delta (Captum's
                          per-sample delta costs 2 × n_samples forward passes; the workbench reports
                          sum(scores) - (f(x) - f(b)) from one extra batched pass instead)
        kernel_shap/lime  KernelShap / Lime on the word embeddings, one feature per token, 200 samples

Both get the same explicit target class. Calls alternate (w, b, w, b, …) after one warm-up each,
and the medians are compared: the ratio w / b is the workbench's overhead (goal ≤ 1.1×).
Then `explain_many` explains --batch different sentences with --batch-method and reports the total.

    HF_HUB_OFFLINE=1 python bench/explain_latency.py
    HF_HUB_OFFLINE=1 python bench/explain_latency.py --repeats 3 --methods ig,occlusion --batch 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
FALLBACK_SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "it's a cookie-cutter movie , a cut-and-paste job .",
    "a thoughtful , provocative , insistently humanizing film .",
    "the acting , costumes , music , cinematography and sound are all astounding given the production's austere locales .",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed calls per side and method (default 7; 3 for LIME/Kernel SHAP)"
    )
    parser.add_argument("--methods", default="", help="comma-separated method keys (default: all)")
    parser.add_argument("--batch", type=int, default=100, help="sentences for the explain_many timing (0 skips it)")
    parser.add_argument("--batch-method", default="ig", help="method for the explain_many timing (default ig)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workspace = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    os.environ["WORKBENCH_WORKSPACE"] = str(workspace)
    try:
        return measure(args)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def measure(args) -> int:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from core.catalog import MINILM_L6
    from core.explain import TextExplainer

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    source = MINILM_L6.local_dir()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    explainer = TextExplainer(model, tokenizer, ["negative", "positive"], max_length=128, cache_size=0)
    tokens = len(tokenizer(SENTENCE)["input_ids"])
    load = os.getloadavg()
    print(
        f"MiniLM-L6 (2-class head), one sentence of {tokens} tokens; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print("note: the machine is busy; absolute times are noisy, the alternating medians and ratios less so")
    target = int(model(**tokenizer(SENTENCE, return_tensors="pt")).logits.argmax())
    keys = [key for key in (args.methods.split(",") if args.methods else BARE) if key]
    figures = {"tokens": tokens, "load_before": load, "methods": {}}
    print(f"{'method':17} {'workbench':>10} {'bare captum':>12} {'ratio':>7}")
    for key in keys:
        bare = BARE[key]
        repeats = args.repeats if key not in ("lime", "kernel_shap") else min(args.repeats, 3)
        ours = lambda: explainer.explain(SENTENCE, key, target=target)  # noqa: E731
        theirs = lambda: bare(model, tokenizer, SENTENCE, target)  # noqa: E731
        ours(), theirs()  # warm-up: imports, allocator, first-call costs
        ours_times, their_times = [], []
        for _ in range(repeats):
            ours_times.append(timed(ours))
            their_times.append(timed(theirs))
        w, b = statistics.median(ours_times), statistics.median(their_times)
        figures["methods"][key] = {"workbench_s": w, "bare_s": b, "ratio": w / b, "repeats": repeats}
        print(f"{key:17} {w * 1000:8.1f}ms {b * 1000:10.1f}ms {w / b:6.2f}×", flush=True)
    if args.batch:
        texts = batch_sentences(args.batch)
        started = time.perf_counter()
        explainer.explain_many(texts, args.batch_method)
        total = time.perf_counter() - started
        lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
        figures["batch"] = {
            "method": args.batch_method,
            "texts": len(texts),
            "seconds": total,
            "mean_tokens": statistics.mean(lengths),
        }
        print(
            f"explain_many: {len(texts)} sentences (mean {statistics.mean(lengths):.0f} tokens) with "
            f"{args.batch_method}: {total:.1f} s, {total / len(texts) * 1000:.0f} ms per sentence"
        )
    figures["load_after"] = os.getloadavg()
    print(f"load average after: {figures['load_after'][0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def batch_sentences(count: int) -> list[str]:
    """`count` different movie-review sentences: the built-in corpus, or the fallback ones varied."""
    try:
        from core.data import load_splits

        frame = load_splits("movie-reviews").test
        texts = frame["text"].tolist()
    except Exception as problem:  # noqa: BLE001 - offline without the corpus: say so and go on
        print(f"(movie-reviews unavailable: {problem}; using {len(FALLBACK_SENTENCES)} sentences, varied)")
        texts = []
    while len(texts) < count:
        texts.append(f"{FALLBACK_SENTENCES[len(texts) % len(FALLBACK_SENTENCES)]} ({len(texts)})")
    return texts[:count]


# ---------------------------------------------------------------------------------------------
# Bare Captum, as written by hand


def _inputs(model, tokenizer, text):
    encoded = tokenizer(text, return_tensors="pt")
    return encoded["input_ids"], (encoded["attention_mask"], encoded["token_type_ids"])


def _pad_baseline(tokenizer, ids):
    baseline = ids.clone()
    baseline[0, 1:-1] = tokenizer.pad_token_id
    return baseline


def _on_embeddings(model):
    def forward(embeddings, mask, types):
        rows = embeddings.shape[0]
        return model(inputs_embeds=embeddings, attention_mask=mask.expand(rows, -1), token_type_ids=types.expand(rows, -1)).logits

    return forward


def bare_ig(model, tokenizer, text, target):
    from captum.attr import LayerIntegratedGradients

    ids, extra = _inputs(model, tokenizer, text)

    def forward(input_ids, mask, types):
        return model(input_ids=input_ids, attention_mask=mask, token_type_ids=types).logits

    attributions, delta = LayerIntegratedGradients(forward, model.get_input_embeddings()).attribute(
        ids,
        baselines=_pad_baseline(tokenizer, ids),
        target=target,
        additional_forward_args=extra,
        n_steps=50,
        return_convergence_delta=True,
    )
    return attributions.sum(-1)[0], delta


def bare_saliency(model, tokenizer, text, target):
    from captum.attr import Saliency

    ids, extra = _inputs(model, tokenizer, text)
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
    return (
        Saliency(_on_embeddings(model))
        .attribute(embeddings, target=target, additional_forward_args=extra, abs=False)[0]
        .norm(dim=-1)
    )


def bare_input_x_gradient(model, tokenizer, text, target):
    from captum.attr import InputXGradient

    ids, extra = _inputs(model, tokenizer, text)
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_()
    return InputXGradient(_on_embeddings(model)).attribute(embeddings, target=target, additional_forward_args=extra)[0].sum(-1)


def bare_occlusion(model, tokenizer, text, target):
    from captum.attr import Occlusion

    ids, extra = _inputs(model, tokenizer, text)
    embed = model.get_input_embeddings()
    with __import__("torch").no_grad():
        embeddings, baseline = embed(ids), embed(_pad_baseline(tokenizer, ids))
    length, hidden = embeddings.shape[1], embeddings.shape[2]
    return (
        Occlusion(_on_embeddings(model))
        .attribute(
            embeddings,
            sliding_window_shapes=(1, hidden),
            strides=(1, hidden),
            baselines=baseline,
            target=target,
            additional_forward_args=extra,
            perturbations_per_eval=length,
        )[0]
        .mean(-1)
    )


def bare_gradient_shap(model, tokenizer, text, target):
    from captum.attr import GradientShap

    ids, extra = _inputs(model, tokenizer, text)
    embed = model.get_input_embeddings()
    embeddings, baseline = embed(ids).detach(), embed(_pad_baseline(tokenizer, ids)).detach()
    return (
        GradientShap(_on_embeddings(model))
        .attribute(
            embeddings,
            baselines=baseline,
            n_samples=20,
            stdevs=0.01,
            target=target,
            additional_forward_args=extra,
        )[0]
        .sum(-1)
    )


def _bare_surrogate(name):
    def run(model, tokenizer, text, target):
        import captum.attr
        import torch

        ids, extra = _inputs(model, tokenizer, text)
        embed = model.get_input_embeddings()
        with torch.no_grad():
            embeddings, baseline = embed(ids), embed(_pad_baseline(tokenizer, ids))
        mask = torch.arange(ids.shape[1]).view(1, -1, 1).expand_as(embeddings)
        return getattr(captum.attr, name)(_on_embeddings(model)).attribute(
            embeddings,
            baselines=baseline,
            target=target,
            additional_forward_args=extra,
            feature_mask=mask,
            n_samples=200,
            perturbations_per_eval=64,
        )[0, :, 0]

    return run


BARE = {
    "ig": bare_ig,
    "saliency": bare_saliency,
    "input_x_gradient": bare_input_x_gradient,
    "occlusion": bare_occlusion,
    "gradient_shap": bare_gradient_shap,
    "kernel_shap": _bare_surrogate("KernelShap"),
    "lime": _bare_surrogate("Lime"),
}


if __name__ == "__main__":
    sys.exit(main())
