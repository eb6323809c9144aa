"""Export a finished run for deployment: a Hugging Face model folder (safetensors) with a model card,
and an int8 ONNX variant whose size, CPU latency and accuracy change are measured before download.

The fp32 folder loads with `transformers.pipeline(...)`, as its card shows. The int8 variant is the
model's ONNX graph (torch's `torch.export`-based exporter) quantized by ONNX Runtime's dynamic
quantization: weights stored as int8, activations quantized batch by batch as it runs, so no
calibration data is needed. It sits in optimum's layout (`model.onnx` beside the config and the
tokenizer or image processor), so the task's `ORTModelFor…` class loads it and `transformers.pipeline`
runs it, and anything that runs ONNX (ONNX Runtime from C++, C#, Java or a browser, Triton) serves it.
Nothing is pickled: weights travel as safetensors or ONNX.

The int8 variant is made once per run, inside the run's folder (`int8/`), and measured there: the
figures shown before a download are those of the very file the download holds.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import shutil
import statistics
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core.checkpoints import ADAPTER_FOLDER, FINAL_MODEL, publish_folder
from core.errors import UserError
from core.run_files import read_json, run_config, summary, test_report
from core.store import Run, RunStore

INT8_FOLDER = "int8"  # in a run's folder and in an export
ONNX_FILE = "model.onnx"  # the name optimum's ORTModel classes look for first
REPORT_FILE = "quantization.json"
IGNORE_INDEX = -100  # labels the loss and the scores skip (padding, a word's later pieces)
BATCH = 32
SINGLE_EXAMPLES = 64  # batch-1 latency: the median over this many test examples, one at a time
MAX_EXAMPLES = 500  # accuracy and batch-32 latency: at most this many test examples
ONNX_OPSET = 18


@dataclass
class QuantizationReport:
    """fp32 (the PyTorch folder) vs int8 (the ONNX Runtime folder) on the run's test split, on this CPU."""

    fp32_megabytes: float
    int8_megabytes: float
    fp32_ms_batch1: float  # median milliseconds for one example
    int8_ms_batch1: float
    fp32_ms_batch32: float  # median milliseconds for a batch of 32 examples
    int8_ms_batch32: float
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float  # share of scored predictions where int8 predicts what fp32 predicts
    examples: int
    scored: int  # predictions scored: one per example, or one per labelled word for token classification
    threads: int  # CPU threads both runtimes used

    @property
    def accuracy_change(self) -> float:
        return self.int8_accuracy - self.fp32_accuracy

    def accuracy_label(self) -> str:
        words = f", {self.scored} labelled words" if self.scored != self.examples else ""
        return f"accuracy ({self.examples} test examples{words})"

    def table(self) -> pd.DataFrame:
        """fp32 vs int8 with the change, as the Runs page shows it before a download."""
        rows = {
            "size (MB)": (self.fp32_megabytes, self.int8_megabytes),
            "CPU latency, batch 1 (ms)": (self.fp32_ms_batch1, self.int8_ms_batch1),
            f"CPU latency, batch {BATCH} (ms)": (self.fp32_ms_batch32, self.int8_ms_batch32),
            self.accuracy_label(): (self.fp32_accuracy, self.int8_accuracy),
        }
        table = pd.DataFrame(rows, index=["fp32", "int8"]).T
        table["change"] = table["int8"] - table["fp32"]
        return table


def exportable_run(run_id: str, store: RunStore | None = None) -> Run:
    run = (store or RunStore()).get(run_id)
    if run is None:
        raise UserError(f"There is no run with id {run_id}; `python -m core runs` lists them.")
    if run.status != "completed" or not (run.directory / FINAL_MODEL / "config.json").exists():
        raise UserError(f"Run {run_id} is {run.status}; only a completed run has a final model to export.")
    return run


def quantizable_task(run: Run):
    """The run's task, when it has an ONNX Runtime class for its int8 variant; UserError otherwise."""
    from core.tasks import TASKS

    task = TASKS[run_config(run).task]
    if task.onnx_model_class is None:
        # Every task with an ONNX Runtime class, as "text classification runs, … runs".
        kinds = [f"{other.title.lower()} runs" for other in TASKS.values() if other.onnx_model_class]
        raise UserError(
            f"int8 quantization is measured for {', '.join(kinds[:-1])} and {kinds[-1]}; this is "
            f"{task.title.lower()}. Export the fp32 folder instead."
        )
    return task


def measure_quantization(run: Run) -> QuantizationReport:
    """The figures of the run's int8 variant, made and measured on first use."""
    return int8_variant(run)[1]


def existing_report(run: Run) -> QuantizationReport | None:
    """The figures of an int8 variant made earlier, without making one."""
    path = run.directory / INT8_FOLDER / REPORT_FILE
    return QuantizationReport(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def int8_variant(run: Run) -> tuple[Path, QuantizationReport]:
    """The run's int8 folder and its figures; made once, published whole (a kill leaves none, not half)."""
    folder = run.directory / INT8_FOLDER
    if existing_report(run) is None:
        task = quantizable_task(run)
        try:
            publish_folder(lambda staging: write_int8(run, task, staging), folder)
        except OSError as error:
            raise UserError(
                f"The int8 variant cannot be written into the run's folder {run.directory} "
                f"({error.strerror or error}); free some space or fix its permissions."
            ) from None
    return folder, existing_report(run)


def write_int8(run: Run, task, folder: Path) -> None:
    """Export the final model to ONNX, quantize it, measure both on the test split and write the folder."""
    import torch

    with quiet_libraries():
        fp32, names, rows, batches, singles = measurement_inputs(run, task)
        folder.mkdir(parents=True)
        for path in (run.directory / FINAL_MODEL).iterdir():  # config, tokenizer or image processor: all but weights
            if path.is_file() and ".safetensors" not in path.name:
                shutil.copy2(path, folder / path.name)
        with tempfile.TemporaryDirectory() as scratch:
            fp32_onnx = Path(scratch) / "fp32.onnx"
            export_onnx(fp32, inputs(batches[0], names), fp32_onnx)
            quantize_onnx(fp32_onnx, folder / ONNX_FILE)
    session = onnx_session(folder / ONNX_FILE)

    def run_fp32(batch: dict) -> np.ndarray:
        with torch.inference_mode():
            return fp32(**inputs(batch, names)).logits.float().numpy()

    def run_int8(batch: dict) -> np.ndarray:
        return session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs(batch, names).items()})[0]

    (fp32_predictions, fp32_batch), (int8_predictions, int8_batch) = predict_and_time((run_fp32, run_int8), batches)
    (_, fp32_single), (_, int8_single) = predict_and_time((run_fp32, run_int8), singles)
    gold = np.concatenate([scored(batch["labels"].numpy(), batch["labels"].numpy()) for batch in batches])
    report = QuantizationReport(
        fp32_megabytes=sum(path.stat().st_size for path in (run.directory / FINAL_MODEL).glob("*.safetensors")) / 1e6,
        int8_megabytes=(folder / ONNX_FILE).stat().st_size / 1e6,
        fp32_ms_batch1=fp32_single,
        int8_ms_batch1=int8_single,
        fp32_ms_batch32=fp32_batch,
        int8_ms_batch32=int8_batch,
        fp32_accuracy=float((fp32_predictions == gold).mean()),
        int8_accuracy=float((int8_predictions == gold).mean()),
        agreement=float((fp32_predictions == int8_predictions).mean()),
        examples=len(rows),
        scored=len(gold),
        threads=torch.get_num_threads(),
    )
    (folder / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    (folder / "README.md").write_text(int8_card(run, report), encoding="utf-8")


class MeasurementInputs(NamedTuple):
    model: Any  # the fp32 final model
    names: list[str]  # the input names its forward takes
    rows: list  # the test rows measured
    batches: list[dict]  # those rows collated BATCH at a time
    singles: list[dict]  # the first SINGLE_EXAMPLES rows, one at a time


def measurement_inputs(run: Run, task) -> MeasurementInputs:
    """The fp32 model and the test split encoded by the task's own `prepare` and collator (what the trainer saw)."""
    prepared = task.prepare(run_config(run), lambda fraction, message: None)
    fp32 = load_final_model(run, task.onnx_model_class)
    rows = test_rows(prepared.datasets["test"])
    return MeasurementInputs(
        fp32,
        model_input_names(fp32, prepared),
        rows,
        [prepared.collator(rows[start : start + BATCH]) for start in range(0, len(rows), BATCH)],
        [prepared.collator([row]) for row in rows[:SINGLE_EXAMPLES]],
    )


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """No progress bars or notes between an export command and its answer: datasets' "Map:" bars,
    transformers' load report (about the fresh head `prepare` builds and drops), the exporter's notes on
    torchvision ops it skips, ONNX Runtime's advice to pre-process (which fails on this graph). Errors pass."""
    import datasets
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    map_bars = datasets.is_progress_bar_enabled()
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        if map_bars:
            datasets.enable_progress_bars()
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def load_final_model(run: Run, onnx_model_class: str):
    """The fp32 final model through the Auto class the ORTModel class mirrors (ORTModelForX -> AutoModelForX)."""
    import transformers

    from core.models import SAFE_LOADING

    auto_class = getattr(transformers, onnx_model_class.replace("ORTModel", "AutoModel", 1))
    return auto_class.from_pretrained(run.directory / FINAL_MODEL, **SAFE_LOADING).eval()


def model_input_names(model, prepared) -> list[str]:
    """The collated batch's keys the model's forward takes (the ONNX graph's inputs), labels aside."""
    sample = prepared.collator([prepared.datasets["test"][0]])
    accepted = inspect.signature(model.forward).parameters
    return [name for name in sample if name in accepted and name != "labels"]


def test_rows(test) -> list[dict[str, Any]]:
    """Up to MAX_EXAMPLES rows of the encoded test split, as the trainer's collator takes them."""
    count = min(len(test), MAX_EXAMPLES)
    if count < 2:
        raise UserError("The test split has fewer than 2 examples; int8 needs a few to be measured against fp32.")
    return [test[index] for index in range(count)]


def inputs(batch: dict, names: list[str]) -> dict:
    return {name: batch[name] for name in names}


def export_onnx(model, sample: dict, target: Path) -> None:
    """The model's ONNX graph, with the batch (and, for token ids, the sequence) left free."""
    import torch

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # Token ids and masks are (batch, sequence); pixels keep the size the image processor fixes.
    shapes = {name: {0: batch, 1: sequence} if tensor.dim() == 2 else {0: batch} for name, tensor in sample.items()}
    # The exporter narrates every phase on stdout and warns about axis names it merges: noise for a user.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (), kwargs=sample, dynamic_shapes=shapes, output_names=["logits"], opset_version=ONNX_OPSET, dynamo=True
        )
    program.save(str(target), external_data=False)


def quantize_onnx(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # One scale per output channel keeps each row's range: on MiniLM movie reviews it agreed with fp32 on
    # 98.5 % of test sentences against 96.3 % with one scale per tensor.
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)


def onnx_session(path: Path):
    """An ONNX Runtime CPU session with as many threads as torch uses, so the timings compare like with like."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # Idle ONNX Runtime threads spin for a while after each call, taking the CPU from the torch model
    # that is timed next; without spinning the two take turns fairly.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict_and_time(models: tuple[Callable[[dict], np.ndarray], ...], batches: list[dict]) -> list[tuple[np.ndarray, float]]:
    """Each model's scored predictions over the batches and its median milliseconds per batch (after one
    warm-up call). The models take turns on every batch, so a busy moment of a shared CPU slows them alike."""
    for predict in models:
        predict(batches[0])
    predictions: list[list[np.ndarray]] = [[] for _ in models]
    timings: list[list[float]] = [[] for _ in models]
    for batch in batches:
        for index, predict in enumerate(models):
            started = time.perf_counter()
            logits = predict(batch)
            timings[index].append(1000 * (time.perf_counter() - started))
            predictions[index].append(scored(logits.argmax(-1), batch["labels"].numpy()))
    return [(np.concatenate(found), statistics.median(times)) for found, times in zip(predictions, timings)]


def scored(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`values` at the labelled positions: every example, or each word's labelled piece for token tagging."""
    return values[labels != IGNORE_INDEX]


def export_run(run_id: str, target: Path, int8: bool = False, store: RunStore | None = None) -> Path:
    """Write the run's final model (and, with int8, its int8 ONNX variant in `int8/`) with model cards to `target`."""
    run = exportable_run(run_id, store)
    if int8:
        quantizable_task(run)  # refuse before anything is written
    target = writable_empty_folder(Path(target))
    shutil.copytree(run.directory / FINAL_MODEL, target, dirs_exist_ok=True)
    if (run.directory / ADAPTER_FOLDER).is_dir():
        shutil.copytree(run.directory / ADAPTER_FOLDER, target / ADAPTER_FOLDER)
    report = None
    if int8:
        folder, report = int8_variant(run)
        shutil.copytree(folder, target / INT8_FOLDER)
    (target / "README.md").write_text(model_card(run, report), encoding="utf-8")
    return target


def writable_empty_folder(target: Path) -> Path:
    """`target`, made if missing, once it is known to be an empty folder this process can write; UserError otherwise."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file, not a folder; choose a new folder to export into.")
    if target.exists() and any(target.iterdir()):
        raise UserError(f"The folder {target} is not empty; choose a new folder so nothing is overwritten.")
    try:
        target.mkdir(parents=True, exist_ok=True)
        # Creating a file is the only honest test of writability (mode bits lie for root).
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-check-"):
            pass
    except OSError as error:
        raise UserError(
            f"The export folder {target} cannot be created or written ({error.strerror or error}); choose a folder you can write "
            "to."
        ) from None
    return target


def export_zip(run_id: str, int8: bool = False, store: RunStore | None = None) -> bytes:
    """The exported folder as zip bytes, for a download button."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = export_run(run_id, Path(scratch) / run_id, int8=int8, store=store)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    bundle.write(path, Path(run_id) / path.relative_to(folder))
        return buffer.getvalue()


def number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def model_card(run: Run, quantization: QuantizationReport | None = None) -> str:
    """The exported folder's card: results and how to load it, plus the int8 variant's figures when it is there."""
    task = run_task(run)
    lines = card_header(run) + ["Load it:", "", code(task.loading_snippet, "PATH/TO/THIS/FOLDER"), ""]
    if (run.directory / ADAPTER_FOLDER).is_dir():
        lines += adapter_section(run)
    if quantization:
        lines += int8_section(run, quantization, "PATH/TO/THIS/FOLDER/int8", f"In the folder `{INT8_FOLDER}/`. ")
    return "\n".join(lines + config_section(run))


def adapter_section(run: Run) -> list[str]:
    """How to load the LoRA adapters alone (`adapter/`) onto the pretrained model they were trained on, with the model
    class this folder's config names (a classifier's head is among the adapter's saved modules)."""
    facts = summary(run) or {}
    config = read_json(run.directory / FINAL_MODEL / "config.json") or {}
    model_class = (config.get("architectures") or ["AutoModel"])[0]
    sized = "" if model_class.endswith("ForCausalLM") else f", num_labels={len(facts.get('label_names', [])) or 2}"
    base = facts.get("model_source", "THE/PRETRAINED/MODEL")
    return [
        f"The LoRA adapters alone are in `{ADAPTER_FOLDER}/` (this folder has them merged in); they load onto the "
        "pretrained model with peft:",
        "",
        "```python",
        "from peft import PeftModel",
        f"from transformers import {model_class}",
        f'base = {model_class}.from_pretrained("{base}"{sized})',
        f'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER/{ADAPTER_FOLDER}")',
        "```",
        "",
    ]


def int8_card(run: Run, quantization: QuantizationReport) -> str:
    """The int8 folder's own card: the same results, the int8 figures and how to load it."""
    return "\n".join(card_header(run) + int8_section(run, quantization, "PATH/TO/THIS/FOLDER", "") + config_section(run))


def run_task(run: Run):
    from core.tasks import TASKS

    return TASKS[run_config(run).task]


def card_header(run: Run) -> list[str]:
    config = run_config(run)
    facts = summary(run) or {}
    report = test_report(run, "after") or {}
    before = test_report(run, "before") or {}
    task = run_task(run)
    return [
        f"# {run.name}",
        "",
        f"Fine-tuned with the fine-tune & explain workbench (run `{run.id}`) for {task.title.lower()}.",
        "",
        "## Data",
        f"- dataset: `{config.dataset}` — {facts.get('data_source', '')}",
        f"- labels: {', '.join(facts.get('label_names', []))}",
        f"- rows: {facts.get('rows', {})}",
        "",
        "## Results on the held-out test split (before → after fine-tuning)",
        *[
            f"- {name}: {number(value)} → {number(task.headline(report).get(name))}"
            for name, value in task.headline(before).items()
        ],
        "",
    ]


def int8_section(run: Run, report: QuantizationReport, folder: str, where: str) -> list[str]:
    task = run_task(run)
    return [
        "## int8 ONNX variant (ONNX Runtime dynamic quantization)",
        "",
        f"{where}Measured on the exporting machine's CPU ({report.threads} threads), against the fp32 PyTorch "
        f"model, on the run's test split:",
        "",
        "| | fp32 (PyTorch, safetensors) | int8 (ONNX Runtime) |",
        "|---|---|---|",
        f"| size | {report.fp32_megabytes:.1f} MB | {report.int8_megabytes:.1f} MB |",
        f"| latency, batch 1 (median) | {report.fp32_ms_batch1:.1f} ms | {report.int8_ms_batch1:.1f} ms |",
        f"| latency, batch {BATCH} (median) | {report.fp32_ms_batch32:.1f} ms | {report.int8_ms_batch32:.1f} ms |",
        f"| {report.accuracy_label()} | {report.fp32_accuracy:.3f} | {report.int8_accuracy:.3f} |",
        "",
        f"int8 predicts what fp32 predicts for {report.agreement:.1%} of the {report.scored} test predictions.",
        "",
        f"Load it with optimum's `{task.onnx_model_class}` and run it in a pipeline (`pip install "
        "optimum-onnx[onnxruntime]`; its 0.1.0 release needs transformers < 4.58, and on transformers 5 its fork "
        "`optimum-onnx-naf` loads it), or feed `model.onnx` to ONNX Runtime directly (inputs as the tokenizer or "
        "image processor names them; output `logits`):",
        "",
        code(int8_snippet(task), folder),
        "",
    ]


def int8_snippet(task) -> str:
    """The task's pipeline snippet with the ONNX Runtime model in place of the folder (a pipeline handed a
    model object cannot guess its tokenizer or image processor, so the folder is named for that)."""
    processor = "image_processor" if task.modality == "image" else "tokenizer"
    pipeline = task.loading_snippet.replace(
        "model=FOLDER", f"model={task.onnx_model_class}.from_pretrained(FOLDER), {processor}=FOLDER"
    )
    return f"from optimum.onnxruntime import {task.onnx_model_class}\n{pipeline}"


def code(snippet: str, folder: str) -> str:
    return "\n".join(["```python", snippet.replace("FOLDER", f'"{folder}"'), "```"])


def config_section(run: Run) -> list[str]:
    return ["## Training config", "", "```yaml", run_config(run).to_yaml().rstrip(), "```", ""]
