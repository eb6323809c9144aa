"""The models a run leaves behind, by stage, and how to load one for inspection.

Stages: "before" (the pretrained encoder with its fresh head, saved before the first update),
"checkpoint-N" (the Trainer's checkpoints, full weights or LoRA adapters), and "after" (the final
model, LoRA merged). Inspect compares any two of them on the same examples.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.models import SAFE_LOADING
from core.store import Run

BEFORE_MODEL = "model_before"
FINAL_MODEL = "model"


def available_stages(run: Run) -> list[str]:
    """Stages with a loadable model, in training order."""
    stages = ["before"] if (run.directory / BEFORE_MODEL / "config.json").exists() else []
    checkpoints = run.directory / "checkpoints"
    if checkpoints.is_dir():
        found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        stages += [p.name for p in sorted(found, key=lambda p: int(p.name.split("-")[-1]))]
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
