"""fp32 vs int8 dynamic quantization: size, CPU latency (and accuracy, for a finished run).

Prints figures; it is not a test.

    HF_HUB_OFFLINE=1 python bench/export_int8.py                 # MiniLM-L6 with a fresh 2-class head
    HF_HUB_OFFLINE=1 WORKBENCH_WORKSPACE=ws python bench/export_int8.py RUN_ID   # a finished run, with accuracy
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def latency_ms(model, encoded, repeats: int) -> list[float]:
    import torch

    timings = []
    with torch.inference_mode():
        model(**encoded)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(**encoded)
            timings.append(1000 * (time.perf_counter() - started))
    return timings


def builtin_minilm(repeats: int) -> None:
    import copy

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.catalog import MINILM_L6
    from core.export import quantize, state_dict_megabytes

    folder = MINILM_L6.local_dir()
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    int8 = quantize(copy.deepcopy(model))
    encoded = tokenizer("a gripping , funny and surprisingly tender film about growing up .", return_tensors="pt")
    fp32_times, int8_times = latency_ms(model, encoded, repeats), latency_ms(int8, encoded, repeats)
    print(f"MiniLM-L6, one sentence of {encoded['input_ids'].shape[1]} tokens, {repeats} repeats, median:")
    print(f"  size     fp32 {state_dict_megabytes(model):7.1f} MB   int8 {state_dict_megabytes(int8):7.1f} MB")
    print(f"  latency  fp32 {statistics.median(fp32_times):7.1f} ms   int8 {statistics.median(int8_times):7.1f} ms"
          f"   speed-up {statistics.median(fp32_times) / statistics.median(int8_times):.2f}x")


def finished_run(run_id: str) -> None:
    from core.export import exportable_run, measure_quantization

    report = measure_quantization(exportable_run(run_id))
    print(f"run {run_id}, {report.examples} test examples, one at a time:")
    print(f"  size     fp32 {report.fp32_megabytes:7.1f} MB   int8 {report.int8_megabytes:7.1f} MB")
    print(f"  latency  fp32 {report.fp32_ms_per_example:7.1f} ms   int8 {report.int8_ms_per_example:7.1f} ms")
    print(f"  accuracy fp32 {report.fp32_accuracy:7.3f}      int8 {report.int8_accuracy:7.3f}      change {report.accuracy_change:+.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id", nargs="?", help="a completed run to measure (with accuracy); default: bare MiniLM")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if args.run_id:
        finished_run(args.run_id)
    else:
        builtin_minilm(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
