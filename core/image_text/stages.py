"""An image-text run's model at one stage, as the run trained it (its image size, its towers' adapters merged).

A checkpoint of a run whose towers had LoRA adapters holds the adapters beside the base weights; it is
rebuilt with the same adapters and merged, so every stage loads as a plain model. The run-level layer
(which task, which stages, retrieval over a split) is `core.pair_runs`; the task's `open_stage` calls this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.checkpoints import BEFORE_MODEL, available_stages, stage_folder
from core.config import RunConfig
from core.errors import UserError
from core.run_files import run_config
from core.store import Run


@dataclass
class PairModel:
    model: Any
    image_processor: Any
    tokenizer: Any
    kind: str  # "similarity" (dual encoder) or "classification" (fusion)
    label_names: list[str]
    prompt_template: str = "a {label}"


def summary_of(run: Run) -> dict[str, Any]:
    path = run.directory / "summary.json"
    if not path.is_file():
        raise UserError(f"Run {run.id} has not written its summary yet; wait until it starts training.")
    return json.loads(path.read_text(encoding="utf-8"))


def load_pair_stage(run: Run, stage: str, kind: str) -> PairModel:
    """A pair run's model at `stage` in eval mode, with the processors it trained with (its image size); `kind` is
    what its task's model scores ("similarity" or "classification")."""
    from core.image_text.models import load_tokenizer
    from core.images.processing import load_processor

    if stage not in available_stages(run):
        raise UserError(f"Run {run.id} has no '{stage}' model; available: {', '.join(available_stages(run)) or 'none'}.")
    config = run_config(run)
    before = run.directory / BEFORE_MODEL
    folder = stage_folder(run, stage)
    model = load_pair_folder(before if is_checkpoint(folder) else folder, kind)
    if is_checkpoint(folder):  # the Trainer's checkpoint: weights only (adapters too, when a tower had LoRA)
        model = with_checkpoint_weights(model, config, folder)
    summary = summary_of(run)
    return PairModel(
        model=model.eval(),
        image_processor=load_processor(str(before), int(config.image_size or 0)),
        tokenizer=load_tokenizer(str(before)),
        kind=kind,
        label_names=list(summary.get("label_names", [])),
        prompt_template=prompt_template_of(summary),
    )


def prompt_template_of(summary: dict[str, Any]) -> str:
    return summary.get("prompt_template") or "a {label}"


def load_pair_folder(folder, kind: str):
    """A saved dual encoder, or a fusion classifier (a dual encoder folder plus its head)."""
    from core.image_text.fusion import FusionClassifier
    from core.image_text.models import load_dual_encoder

    return FusionClassifier.from_pretrained(folder) if kind == "classification" else load_dual_encoder(str(folder))


def is_checkpoint(folder) -> bool:
    return folder.parent.name == "checkpoints"


def with_checkpoint_weights(model, config: RunConfig, folder):
    """The before-model with the checkpoint's weights; LoRA adapters injected first when it holds any, then merged."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from core.image_text.models import merge_adapters
    from core.image_text.training import with_tower_modes

    weights = folder / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        adapters = any("lora_" in key for key in handle.keys())
    if adapters:
        model = with_tower_modes(model, config)
    model.load_state_dict(load_file(str(weights)), strict=False)
    return merge_adapters(model) if adapters else model
