"""fp32 vs the int8 ONNX export of a finished run: size, CPU latency at batch 1 and 32, accuracy.

Prints figures; it is not a test. Makes the run's int8 variant if the Runs page has not yet (the
figures the page and the model card show), then times three models taking turns on the same test
batches: the fp32 PyTorch folder, its fp32 ONNX graph in ONNX Runtime, and the int8 graph, so the
speed-up splits into what the runtime gives and what quantization gives.

    HF_HUB_OFFLINE=1 WORKBENCH_WORKSPACE=ws python bench/export_int8.py RUN_ID
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def onnx_model(path: Path, names: list[str]):
    from core.export import inputs, onnx_session

    session = onnx_session(path)
    return lambda batch: session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs(batch, names).items()})[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id", help="a completed run (text, token or image classification)")
    args = parser.parse_args()

    import torch

    from core.export import (
        BATCH,
        ONNX_FILE,
        export_onnx,
        exportable_run,
        inputs,
        int8_variant,
        measurement_inputs,
        predict_and_time,
        quantizable_task,
        quiet_libraries,
    )

    run = exportable_run(args.run_id)
    task = quantizable_task(run)
    folder, report = int8_variant(run)
    print(
        f"run {run.id} ({task.title.lower()}), {report.examples} test examples, {report.threads} CPU threads; the export's "
        "figures:"
    )
    print(report.table().round(3).to_string())
    print(f"int8 agrees with fp32 on {report.agreement:.1%} of {report.scored} predictions\n")

    with quiet_libraries():
        fp32, names, _, batches, singles = measurement_inputs(run, task)

    def torch_fp32(batch):
        with torch.inference_mode():
            return fp32(**inputs(batch, names)).logits.float().numpy()

    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / "fp32.onnx"
        with quiet_libraries():
            export_onnx(fp32, inputs(batches[0], names), graph)
        models = (torch_fp32, onnx_model(graph, names), onnx_model(folder / ONNX_FILE, names))
        in_batches = predict_and_time(models, batches)
        alone = predict_and_time(models, singles)
    print("taking turns on the same batches (median ms):")
    reference = in_batches[0][0]
    labels = ("fp32 PyTorch", "fp32 ONNX Runtime", "int8 ONNX Runtime")
    for label, (predictions, batch_ms), (_, single_ms) in zip(labels, in_batches, alone):
        print(
            f"  {label:18s} batch 1 {single_ms:7.1f}   batch {BATCH} {batch_ms:7.1f}   agrees with fp32 PyTorch "
            f"{(predictions == reference).mean():.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
