"""The models a run leaves behind, by stage, and how to load one for inspection.

Stages: "before" (the pretrained encoder with its fresh head, saved before the first update),
"checkpoint-N" (the Trainer's checkpoints, full weights or LoRA adapters), and "after" (the final
model, LoRA merged). Inspect compares any two of them on the same examples.

A trainer can be killed, or the disk fill, in the middle of writing any of these. The model
folders are written beside their place and renamed into it (a rename is atomic), so "before" and
"after" either exist whole or not at all. A Trainer checkpoint is written file by file into its
final folder, with `trainer_state.json` last; so a checkpoint counts as complete only when that
file parses and every weight and state file in it reads back whole (a safetensors file's size
matches its header; a torch file's zip directory, which is written last, is there). A torn
checkpoint is never offered as a stage nor resumed from.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

from core.errors import UserError
from core.models import SAFE_LOADING
from core.store import Run

BEFORE_MODEL = "model_before"
FINAL_MODEL = "model"
ADAPTER_FOLDER = "adapter"  # a LoRA run's adapters alone, beside the merged model (and in an export)
TRAINER_STATE = "trainer_state.json"
# What resuming restores beyond the weights, by file: lost when the file is missing.
RESUMABLE_STATE = {
    "optimizer.pt": "optimizer state (Adam's moments)",
    "scheduler.pt": "learning-rate schedule position",
    "rng_state.pth": "random-number state (data order and dropout)",
}
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")


def checkpoint_step(folder: Path) -> int | None:
    tail = folder.name.removeprefix("checkpoint-")
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def checkpoint_folders(run_directory: Path) -> list[Path]:
    """Every checkpoint folder, complete or not, oldest step first."""
    root = run_directory / "checkpoints"
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None] if root.is_dir() else []
    return sorted(found, key=checkpoint_step)


def is_complete_checkpoint(folder: Path) -> bool:
    """Whether the Trainer finished writing this checkpoint and every file in it reads back whole."""
    try:
        json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return False
    return all(_file_is_whole(path) for path in folder.iterdir() if path.is_file())


def _file_is_whole(path: Path) -> bool:
    try:
        if path.suffix == ".safetensors":
            return _safetensors_is_whole(path)
        if path.suffix in (".pt", ".pth", ".bin"):
            return zipfile.is_zipfile(path)  # torch.save's format; the zip directory is written last
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, struct.error):
        return False
    return True


def _safetensors_is_whole(path: Path) -> bool:
    size = path.stat().st_size
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > size:
            return False
        header = json.loads(handle.read(header_size))
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return size == 8 + header_size + max(ends, default=0)


def complete_checkpoints(run_directory: Path) -> list[Path]:
    return [folder for folder in checkpoint_folders(run_directory) if is_complete_checkpoint(folder)]


def lost_state(checkpoint: Path) -> list[str]:
    """What resuming from this checkpoint cannot restore (missing state files), in words."""
    return [what for name, what in RESUMABLE_STATE.items() if not (checkpoint / name).is_file()]


def remove_torn_checkpoints(run_directory: Path) -> list[str]:
    """Delete checkpoint folders whose writing was interrupted; only while no trainer writes them."""
    torn = [folder for folder in checkpoint_folders(run_directory) if not is_complete_checkpoint(folder)]
    for folder in torn:
        shutil.rmtree(folder, ignore_errors=True)
    return [folder.name for folder in torn]


def publish_folder(save, target: Path) -> None:
    """Write a model folder beside `target` with `save(folder)`, then rename it into place at once,
    so a reader never sees half of it and a kill leaves the previous state (none, or the old folder)."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def available_stages(run: Run) -> list[str]:
    """Stages with a loadable model, in training order (checkpoints only when complete)."""
    stages = ["before"] if (run.directory / BEFORE_MODEL / "config.json").exists() else []
    stages += [folder.name for folder in complete_checkpoints(run.directory)]
    if (run.directory / FINAL_MODEL / "config.json").exists():
        stages.append("after")
    return stages


def stage_folder(run: Run, stage: str) -> Path:
    if stage == "before":
        return run.directory / BEFORE_MODEL
    if stage == "after":
        return run.directory / FINAL_MODEL
    return run.directory / "checkpoints" / stage


def latest_stage(run: Run) -> str:
    """The final model when there is one, else the newest checkpoint (a running run), else before."""
    stages = available_stages(run)
    if not stages:
        raise UserError(
            f"Run {run.id} has no model to inspect yet: it saves one before its first update. "
            "Wait until it is running, or start it again."
        )
    return stages[-1]


def load_sequence_classifier(run: Run, stage: str):
    """(model in eval mode, tokenizer) for a stage; LoRA checkpoints are merged onto the before-model."""
    return load_stage_model(run, stage, "AutoModelForSequenceClassification")


def load_stage_model(run: Run, stage: str, auto_class: str):
    """(model in eval mode, tokenizer) of any head (`auto_class` names a transformers Auto class)."""
    import transformers
    from transformers import AutoTokenizer

    if not run.directory.exists():
        raise UserError(f"The directory of run {run.id} was deleted; its models are gone. Pick another run.")
    folder = stage_folder(run, stage)
    if stage not in available_stages(run):
        raise UserError(f"Run {run.id} has no '{stage}' model; available: {', '.join(available_stages(run)) or 'none'}.")
    model_class = getattr(transformers, auto_class)
    tokenizer = AutoTokenizer.from_pretrained(run.directory / BEFORE_MODEL, trust_remote_code=False)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        base = model_class.from_pretrained(run.directory / BEFORE_MODEL, **SAFE_LOADING)
        model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    else:
        model = model_class.from_pretrained(folder, **SAFE_LOADING)
    return model.eval(), tokenizer
