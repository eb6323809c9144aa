"""Loading a checkpoint's weights back into the training model with the key names its class expects.

transformers 5 renames some architectures' weights when it loads them (`from_pretrained` maps the names on disk to
the modules' names: a ViT inside a dual encoder is written as `vision_model.encoder.layer.0.attention.attention.key`
and lives as `vision_model.layers.0.attention.q_proj`), but Trainer's best-model reload and its resume load the saved
state dict with a plain non-strict `load_state_dict`. The renamed weights then do not load, silently, and the model
keeps the last step's (or the fresh start's) vision tower beside the best step's text tower. This loads the checkpoint
through `from_pretrained`, which applies the renaming, whenever the plain load would miss weights.
"""

from __future__ import annotations

from pathlib import Path


def misses_weights(model, folder: Path) -> bool:
    """Whether the plain load of `folder`'s model.safetensors into `model` would leave some of its weights out."""
    from safetensors import safe_open

    weights = folder / "model.safetensors"
    if not weights.exists():
        return False  # sharded, or an adapter: Trainer's own path handles those
    with safe_open(str(weights), framework="pt") as saved:
        names = set(saved.keys())
    return any(name not in names for name in model.state_dict())


def reload_through_from_pretrained(model, folder: Path) -> None:
    """Load `folder`'s weights into `model` in place, named as `from_pretrained` names them (strict: every weight)."""
    loaded = type(model).from_pretrained(str(folder), config=model.config)
    model.load_state_dict(loaded.state_dict(), strict=True)


def renaming_reload(base: type) -> type:
    """`base` Trainer whose best-model reload and resume load renamed weights too."""

    class RenamingReload(base):
        def _load_best_model(self):
            super()._load_best_model()
            self._reload_if_missed(Path(self.state.best_model_checkpoint))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            self._reload_if_missed(Path(resume_from_checkpoint), model)

        def _reload_if_missed(self, folder: Path, model=None) -> None:
            from transformers import PreTrainedModel

            model = model if model is not None else self.model
            # peft adapters and the workbench's own modules keep their names on disk: Trainer's load is right for them.
            if isinstance(model, PreTrainedModel) and misses_weights(model, folder):
                reload_through_from_pretrained(model, folder)

    return RenamingReload
