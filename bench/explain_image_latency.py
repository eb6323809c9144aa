"""Image explanation latency: `ImageExplainer.explain` against a bare Captum call doing the same work.

Prints figures; it is not a test. Uses the built-in MobileNetV2 (ImageNet weights, converted once into
the current workspace by `core.catalog_images.MOBILENET_V2.local_dir()`), with its processor shrunk to
--sizes (default 96 and 224 px, as `image_size` does for a run), and times per image, for each method:

  (w) the workbench: `ImageExplainer.explain(image, method, target=t, grid=g)` with the explanation
      cache off, so every call computes (preprocessing, baseline, prediction, attribution, the grid
      sums, the plain-data result);
  (b) bare Captum: what a person would write by hand for the same method and parameters, preprocessing
      included, reduced to the same grid (a reshape-sum):
        ig             IntegratedGradients on pixel_values, zero (= mean colour) baseline, n_steps 32,
                       the workbench's internal batch, return_convergence_delta=True
        occlusion      Occlusion, window = stride = one grid cell (3, H/g, W/g), zero baseline, all cells
                       in batches as the workbench
        gradient_shap  GradientShap, n_samples 20, stdevs 0.1, zero baseline (no delta)
        saliency       Saliency, abs=True
        grad_cam       LayerGradCam on the conv_1x1 block, ReLU, bilinear upsampling to the input

Grid: 7x7 at 224 px (32 px cells), 8x8 at 96 px (12 px cells), so Captum's Occlusion windows tile exactly.
Calls alternate (w, b, w, b, …) after one warm-up each; medians are compared (ratio w / b).

    HF_HUB_OFFLINE=1 python bench/explain_image_latency.py
    HF_HUB_OFFLINE=1 python bench/explain_image_latency.py --sizes 96 --repeats 5 --methods ig,occlusion
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

METHOD_KEYS = ("ig", "occlusion", "gradient_shap", "saliency", "grad_cam")
PARAMS = {"ig": {"steps": 32}, "occlusion": {}, "gradient_shap": {"n_samples": 20, "stdevs": 0.1}, "saliency": {}, "grad_cam": {}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="96,224", help="model input sizes in pixels (default 96,224)")
    parser.add_argument("--methods", default=",".join(METHOD_KEYS), help="comma-separated method keys (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side, method and size (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return parser.parse_args(argv)


def test_image():
    import numpy as np
    from PIL import Image

    try:
        import skimage.data

        return Image.fromarray(skimage.data.chelsea())
    except ImportError:  # pragma: no cover
        return Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8))


def bare(method: str, model, processor, image, target: int, grid: int, batch: int):
    """The hand-written Captum call for `method`, preprocessing included; returns the (grid, grid) sums."""
    import torch
    from captum.attr import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    def forward(pixel_values):
        return model(pixel_values=pixel_values).logits

    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    zero = torch.zeros_like(pixels)
    _, _, height, width = pixels.shape
    if method == "ig":
        attributions, _ = IntegratedGradients(forward).attribute(
            pixels, baselines=zero, target=target, n_steps=32, internal_batch_size=batch, return_convergence_delta=True
        )
    elif method == "occlusion":
        window = (3, height // grid, width // grid)
        with torch.no_grad():
            attributions = Occlusion(forward).attribute(
                pixels,
                sliding_window_shapes=window,
                strides=window,
                baselines=0.0,
                target=target,
                perturbations_per_eval=min(grid * grid, batch),
            )
    elif method == "gradient_shap":
        attributions = GradientShap(forward).attribute(pixels, baselines=zero, n_samples=20, stdevs=0.1, target=target)
    elif method == "saliency":
        attributions = Saliency(forward).attribute(pixels.clone().requires_grad_(True), target=target, abs=True)
    else:
        coarse = LayerGradCam(forward, model.mobilenet_v2.conv_1x1).attribute(pixels, target=target, relu_attributions=True)
        attributions = LayerAttribution.interpolate(coarse.detach(), (height, width), interpolate_mode="bilinear")
    pixel_map = attributions.detach()[0].sum(0)
    return pixel_map.reshape(grid, height // grid, grid, width // grid).sum((1, 3)).numpy()


def main(argv=None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForImageClassification

    from core.catalog_images import MOBILENET_V2
    from core.explain import ImageExplainer
    from core.tasks.image_classification import load_processor

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = MOBILENET_V2.local_dir()
    model = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    image = test_image()
    methods = [key for key in args.methods.split(",") if key]
    figures = []
    print(
        f"MobileNetV2 ({folder}), torch threads {torch.get_num_threads()}, {args.repeats} timed calls per side; "
        "median seconds per image"
    )
    print(f"{'size':>5} {'grid':>5} {'method':<14} {'workbench':>10} {'captum':>10} {'ratio':>6}")
    for size in (int(value) for value in args.sizes.split(",")):
        grid = 7 if size % 7 == 0 else 8
        processor = load_processor(str(folder), size)
        explainer = ImageExplainer(model, processor, cache_size=0)
        prepared = explainer.prepare(image)
        target = explainer.resolve_target(prepared, None)
        batch = explainer.internal_batch_size(prepared, 32)
        for method in methods:
            ours = lambda: explainer.explain(image, method, target=target, grid=grid, **PARAMS[method])  # noqa: E731
            theirs = lambda: bare(method, model, processor, image, target, grid, batch)  # noqa: E731
            explanation, reference = ours(), theirs()  # warm-up (and a sanity check of the numbers)
            agree = None
            if method in ("saliency", "grad_cam", "occlusion", "ig"):
                import numpy as np

                agree = float(np.corrcoef(np.asarray(explanation.scores), reference.ravel())[0, 1])
            times = {"w": [], "b": []}
            for _ in range(args.repeats):
                for side, call in (("w", ours), ("b", theirs)):
                    started = time.perf_counter()
                    call()
                    times[side].append(time.perf_counter() - started)
            w, b = statistics.median(times["w"]), statistics.median(times["b"])
            note = f"  (maps agree r={agree:.3f})" if agree is not None else ""
            print(f"{size:>5} {grid:>3}x{grid:<1} {method:<14} {w:>10.3f} {b:>10.3f} {w / b:>6.2f}{note}")
            figures.append(
                {
                    "size": size,
                    "grid": grid,
                    "method": method,
                    "workbench_s": w,
                    "captum_s": b,
                    "ratio": w / b,
                    "correlation": agree,
                }
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
