"""Export a finished run for deployment: a Hugging Face model folder with a model card, and an
int8 dynamically quantized variant whose size, CPU latency and accuracy change are measured first.

The fp32 folder loads with `transformers.pipeline("text-classification", model=FOLDER)`. The int8
variant holds only quantized weights (`int8_state_dict.pt`) beside the config and tokenizer; its
model card shows the three lines that load it.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from core.checkpoints import FINAL_MODEL, load_sequence_classifier
from core.errors import UserError
from core.run_files import run_config, summary, test_report
from core.store import Run, RunStore

INT8_WEIGHTS = "int8_state_dict.pt"
INT8_LOADER = """```python
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(FOLDER))
model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
model.load_state_dict(torch.load(f"{FOLDER}/int8_state_dict.pt"))
tokenizer = AutoTokenizer.from_pretrained(FOLDER)
```"""


@dataclass
class QuantizationReport:
    fp32_megabytes: float
    int8_megabytes: float
    fp32_ms_per_example: float
    int8_ms_per_example: float
    fp32_accuracy: float
    int8_accuracy: float
    examples: int

    @property
    def accuracy_change(self) -> float:
        return self.int8_accuracy - self.fp32_accuracy


def exportable_run(run_id: str, store: RunStore | None = None) -> Run:
    run = (store or RunStore()).get(run_id)
    if run is None:
        raise UserError(f"There is no run with id {run_id}; `python -m core runs` lists them.")
    if run.status != "completed" or not (run.directory / FINAL_MODEL / "config.json").exists():
        raise UserError(f"Run {run_id} is {run.status}; only a completed run has a final model to export.")
    return run


def quantize(model):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its eager quantization API deprecated; it still works
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def state_dict_megabytes(model) -> float:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def measure_quantization(run: Run, max_examples: int = 200) -> QuantizationReport:
    """fp32 vs int8 on the run's own test split (first `max_examples` rows), on this CPU."""
    import copy

    import torch

    from core.data import load_splits

    from core.tasks import TASKS

    config = run_config(run)
    task = TASKS[config.task]
    if not task.quantizable:
        raise UserError(f"int8 quantization is measured for text classification runs; this is {task.title.lower()}. "
                        "Export the fp32 folder instead.")
    model, tokenizer = load_sequence_classifier(run, "after")
    int8 = quantize(copy.deepcopy(model))
    splits = load_splits(config.dataset, text_column=config.text_column or None, label_column=config.label_column or None,
                         seed=config.seed, max_rows=config.max_rows or None)
    test = splits.test.head(max_examples)
    label_ids = {name: index for index, name in enumerate(splits.label_names)}
    gold = torch.tensor([label_ids[label] for label in test["label"]])
    encoded = tokenizer(test["text"].tolist(), truncation=True, max_length=config.max_length, padding=True, return_tensors="pt")

    def accuracy_and_ms(candidate) -> tuple[float, float]:
        with torch.inference_mode():
            candidate(**{k: v[:2] for k, v in encoded.items()})  # warm-up
            started = time.perf_counter()
            predicted = torch.cat([
                candidate(**{k: v[i:i + 1] for k, v in encoded.items()}).logits.argmax(-1) for i in range(len(test))
            ])
            elapsed = time.perf_counter() - started
        return float((predicted == gold).float().mean()), 1000 * elapsed / len(test)

    fp32_accuracy, fp32_ms = accuracy_and_ms(model)
    int8_accuracy, int8_ms = accuracy_and_ms(int8)
    return QuantizationReport(
        fp32_megabytes=state_dict_megabytes(model), int8_megabytes=state_dict_megabytes(int8),
        fp32_ms_per_example=fp32_ms, int8_ms_per_example=int8_ms,
        fp32_accuracy=fp32_accuracy, int8_accuracy=int8_accuracy, examples=len(test),
    )


def export_run(run_id: str, target: Path, int8: bool = False, store: RunStore | None = None) -> Path:
    """Write the run's final model (and, with int8, the quantized variant) with model cards to `target`."""
    import torch

    run = exportable_run(run_id, store)
    target = writable_empty_folder(Path(target))
    shutil.copytree(run.directory / FINAL_MODEL, target, dirs_exist_ok=True)
    (target / "README.md").write_text(model_card(run), encoding="utf-8")
    if int8:
        report = measure_quantization(run)
        model, tokenizer = load_sequence_classifier(run, "after")
        folder = target / "int8"
        folder.mkdir()
        model.config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        torch.save(quantize(model).state_dict(), folder / INT8_WEIGHTS)
        (folder / "quantization.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
        (folder / "README.md").write_text(model_card(run, report), encoding="utf-8")
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
            f"The export folder {target} cannot be created or written ({error.strerror or error}); choose a folder you can write to."
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
    config = run_config(run)
    facts = summary(run) or {}
    report = test_report(run, "after") or {}
    before = test_report(run, "before") or {}
    from core.tasks import TASKS

    task = TASKS[config.task]
    lines = [
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
        *[f"- {name}: {number(value)} → {number(task.headline(report).get(name))}" for name, value in task.headline(before).items()],
        "",
    ]
    if quantization:
        lines += [
            "## int8 dynamic quantization (measured on this machine's CPU)",
            f"- size: {quantization.fp32_megabytes:.1f} MB → {quantization.int8_megabytes:.1f} MB",
            f"- latency: {quantization.fp32_ms_per_example:.1f} → {quantization.int8_ms_per_example:.1f} ms per example",
            f"- accuracy on {quantization.examples} test examples: {quantization.fp32_accuracy:.3f} → {quantization.int8_accuracy:.3f}",
            "",
            "Load it:",
            "",
            INT8_LOADER,
            "",
        ]
    else:
        lines += ["Load it:", "", "```python", task.loading_snippet.replace("FOLDER", '"PATH/TO/THIS/FOLDER"'), "```", ""]
    lines += ["## Training config", "", "```yaml", config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
