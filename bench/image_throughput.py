"""Image and image-text training throughput: MobileNetV2, or the MobileNetV2 + MiniLM dual encoder, by image size.

Prints figures; it is not a test. For each image size, two measurements of full fine-tuning
(AdamW, fp32, train mode), a few steps each after one warm-up step: image classification on the
textile-defects images (250x250 JPEGs), or with `--task image_text_contrastive` CLIP-style
alignment on the shapes captions (pairs/s; every pair is scored against the batch's other pairs),
or `--task image_text_fusion` on planted pairs:

  model   forward + backward + optimizer step on a batch already preprocessed (the compute alone)
  task    the real data path as well: the image-classification task's prepared training split
          (decode JPEG -> augment -> image processor -> collate) feeding the same steps

    HF_HUB_OFFLINE=1 python bench/image_throughput.py                     # 96 and 224 px, 5 steps, CPU
    HF_HUB_OFFLINE=1 python bench/image_throughput.py --steps 2 --sizes 96
    python bench/image_throughput.py --device cuda --batch-size 64 --steps 20
    HF_HUB_OFFLINE=1 python bench/image_throughput.py --task image_text_contrastive --sizes 64 96 224 --batch-size 32

The workspace defaults to ./workspace (the converted model and stored images are reused); the
first run fetches and converts MobileNetV2 and stores the textile images (a minute or so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task", default="image_classification", choices=sorted(DEFAULT_DATASETS))
    parser.add_argument("--dataset", default="", help="default: textile-defects, shapes-captions or planted-pairs by task")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    arguments = parser.parse_args()

    import torch

    from core.config import RunConfig
    from core.models import resolve_model
    from core.tasks import TASKS

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    dataset = arguments.dataset or DEFAULT_DATASETS[arguments.task]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {arguments.device}, task {arguments.task}, "
        f"batch {arguments.batch_size}, {arguments.steps} timed steps, dataset {dataset}"
    )
    print(f"{'size':>5} {'what':>6} {'examples/s':>10} {'s/step':>7}")
    model_dir = resolve_model(DEFAULT_MODELS[arguments.task])
    for size in arguments.sizes:
        config = RunConfig(
            task=arguments.task,
            model=model_dir,
            dataset=dataset,
            max_rows=400,
            batch_size=arguments.batch_size,
            device=arguments.device,
        )
        config.image_size = size
        config.aug_flip, config.aug_crop_scale = 0.5, 0.8
        prepared = TASKS[arguments.task].prepare(config, progress=lambda fraction, message: None)
        model = prepared.model.to(arguments.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train = prepared.datasets["train"]

        def batches():
            start = 0
            while True:
                rows = [(start + i) % len(train) for i in range(arguments.batch_size)]
                start += arguments.batch_size
                yield prepared.collator(train.__getitems__(rows))

        def step(batch) -> None:
            batch = {key: value.to(arguments.device) for key, value in batch.items()}
            if arguments.task == "image_text_contrastive":  # the pairing is the target: no labels, the model's own loss
                batch = {key: value for key, value in batch.items() if key != "labels"}
                batch["return_loss"] = True
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def synchronise() -> None:
            if arguments.device == "cuda":
                torch.cuda.synchronize()

        source = batches()
        fixed = next(source)
        step(fixed)  # warm-up
        synchronise()
        started = time.perf_counter()
        for _ in range(arguments.steps):
            step(fixed)
        synchronise()
        report(size, "model", arguments, time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(arguments.steps):
            step(next(source))
        synchronise()
        report(size, "task", arguments, time.perf_counter() - started)
    return 0


DEFAULT_DATASETS = {
    "image_classification": "textile-defects",
    "image_text_contrastive": "shapes-captions",
    "image_text_fusion": "planted-pairs",
}
DEFAULT_MODELS = {
    "image_classification": "mobilenet-v2",
    "image_text_contrastive": "mobilenet-minilm-clip",
    "image_text_fusion": "mobilenet-minilm-clip",
}


def report(size: int, what: str, arguments, seconds: float) -> None:
    per_step = seconds / arguments.steps
    print(f"{size:>5} {what:>6} {arguments.batch_size / per_step:>10.1f} {per_step:>7.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
