"""The built-in dual encoder's folder: MobileNetV2 and MiniLM-L6 joined CLIP-style, made offline.

The catalog (`core.catalog`) passes the two tower entries in, so this module imports no catalog and
`core.image_text` (whose loaders resolve models through the catalog) does not sit under it.
"""

from __future__ import annotations

from pathlib import Path

from core.assets import Progress, build_folder, is_built, no_progress
from core.catalog_entry import BuiltinModel
from core.workspace import cache_dir

BUILTIN_KEY = "mobilenet-minilm-clip"  # core.catalog lists it; resolve_model builds it on first use
BUILTIN_PROJECTION_DIM = 256
BUILD_VERSION = 1
MARKER = ".built"


def builtin_dual_encoder_dir(vision: BuiltinModel, text: BuiltinModel, progress: Progress = no_progress) -> Path:
    """cache/models/<BUILTIN_KEY>/: the two built-in towers (MobileNetV2, MiniLM-L6) joined with fresh projections,
    built on first use."""
    from transformers import AutoImageProcessor, AutoTokenizer, VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

    target = cache_dir() / "models" / BUILTIN_KEY
    if is_built(target, BUILD_VERSION, MARKER):
        return target
    vision_dir, text_dir = vision.local_dir(progress), text.local_dir(progress)
    progress(0.9, "Joining MobileNetV2 and MiniLM-L6 into a dual encoder")

    def join(folder: Path) -> None:
        # The projections and the temperature are new; a fixed seed makes the built-in the same everywhere.
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = VisionTextDualEncoderModel.from_vision_text_pretrained(
                str(vision_dir), str(text_dir), projection_dim=BUILTIN_PROJECTION_DIM
            )
        model.save_pretrained(folder)
        processor = VisionTextDualEncoderProcessor(
            image_processor=AutoImageProcessor.from_pretrained(vision_dir, backend="pil"),
            tokenizer=AutoTokenizer.from_pretrained(text_dir),
        )
        processor.save_pretrained(folder)

    build_folder(target, BUILD_VERSION, join, MARKER)
    progress(1.0, "The dual encoder is ready")
    return target
