"""One built-in model of the catalog: what it is, and how its folder is made on this machine.

Its own module, below every catalog module, so that the image entries (`core.catalog_images`) and
the catalog (`core.catalog`) both build on it without importing each other's halves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.assets import PipAsset, Progress, is_prepared, no_progress, prepare


@dataclass(frozen=True)
class BuiltinModel:
    key: str
    title: str
    modality: str
    hub_id: str
    description: str
    asset: PipAsset  # the package carrying the weights (as they are, or the originals a conversion starts from)
    # Fetches, converts or assembles once, and returns the transformers folder; None: the package's
    # `model/` folder is the model as it is.
    build: Callable[[Progress], Path] | None = None
    tasks: tuple[str, ...] | None = None  # the task keys it serves; None: every task of its modality
    built: Callable[[], bool] | None = None  # whether `build` has made its folder (None: the asset is the model)

    def serves(self, task_key: str, modality: str) -> bool:
        return self.modality == modality and (self.tasks is None or task_key in self.tasks)

    def local_dir(self, progress: Progress = no_progress) -> Path:
        """The prepared model folder (config, weights, tokenizer or processor), ready for `from_pretrained`."""
        if self.build is not None:
            return self.build(progress)
        return prepare(self.asset, progress) / "model"

    def is_ready(self) -> bool:
        """Whether the model folder can be read at once: its weights fetched and, for a slow conversion, converted."""
        return is_prepared(self.asset) and (self.built is None or self.built())
