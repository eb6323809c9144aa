"""Where a model comes from: a built-in key, a local folder, or a Hugging Face hub id.

Loading is safe by default: `trust_remote_code` stays off and weights load from safetensors.
A hub id is checked before any download starts, so an offline machine says so at once instead
of retrying for half a minute.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

from core.assets import Progress, no_progress
from core.catalog import BUILTIN_MODELS
from core.errors import UserError

HUB_HOST = ("huggingface.co", 443)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SAFE_LOADING = {"trust_remote_code": False, "use_safetensors": True}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_model(spec: str, progress: Progress = no_progress) -> str:
    """A local folder path for `from_pretrained`, or a hub id already known to be reachable."""
    spec = spec.strip()
    if not spec:
        raise UserError("Choose a model: a built-in one, a hub id like bert-base-uncased, or a local folder.")
    if spec in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[spec].local_dir(progress))
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith(("/", ".", "~")):
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(
                f"The folder {path} is not a model: it has no config.json. Point at a folder written by "
                "save_pretrained, or choose a built-in model."
            )
        refuse_remote_code(str(path), config_values(str(path)))
        return str(path.resolve())
    if not _HUB_ID.match(spec):
        raise UserError(f"'{spec}' is neither a built-in model, a local folder, nor a hub id like owner/name.")
    _check_hub_model(spec)
    return spec


def _check_hub_model(model_id: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return
    if hub_offline() or not _hub_reachable():
        raise UserError(
            f"The model '{model_id}' is not on this machine and the Hugging Face hub cannot be reached "
            "(offline). Use a built-in model or a local folder, or connect to the internet."
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        model_info(model_id, timeout=10)
    except RepositoryNotFoundError:
        raise UserError(f"There is no model '{model_id}' on the Hugging Face hub; check the spelling (owner/name).") from None
    except (HfHubHTTPError, OSError) as error:
        raise UserError(f"The hub could not be asked about '{model_id}' ({error}); try again or use a local model.") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def config_values(source: str) -> dict:
    """The raw values of a model's config.json (a local folder or a resolved hub id), read as data only."""
    folder = Path(source)
    if folder.is_dir():
        return _read_config_json(folder / "config.json")
    from transformers import PretrainedConfig

    try:
        return PretrainedConfig.get_config_dict(source)[0]
    except (OSError, ValueError) as error:
        raise UserError(f"The config of the model '{source}' cannot be read ({error}); try again or use a local model.") from None


def _read_config_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"The model's {path} is not a text file; save the model again with save_pretrained.") from None
    except json.JSONDecodeError as error:
        raise UserError(
            f"The model's {path} is not valid JSON (line {error.lineno}: {error.msg}); fix that line, or save the "
            "model again with save_pretrained."
        ) from None
    except OSError as error:
        raise UserError(f"The model's {path} cannot be read ({error.strerror or error}); fix its permissions.") from None
    if not isinstance(values, dict):
        raise UserError(f"The model's {path} must hold a JSON object of settings; save the model again with save_pretrained.")
    return values


def refuse_remote_code(source: str, values: dict) -> None:
    """UserError when the model's architecture exists only as code shipped with it (`auto_map`), which is never run.

    A config that names custom code but whose model type transformers knows still loads with transformers' own class,
    as `trust_remote_code=False` does; only a type transformers cannot build needs the shipped code.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if "auto_map" in values and values.get("model_type") not in CONFIG_MAPPING_NAMES:
        raise UserError(
            f"The model at {source} needs remote code (auto_map in its config.json, model type "
            f"{values.get('model_type')!r}), which the workbench does not run; choose a model that transformers "
            "supports without custom code, such as a built-in one."
        )


def load_model_config(source: str):
    """The transformers config of a resolved model source, built without running code shipped with the model."""
    from transformers import AutoConfig

    refuse_remote_code(source, config_values(source))
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise UserError(f"The model at {source} cannot be used: {error}") from None


def max_positions(model_source: str) -> int | None:
    """The longest input the model accepts, from its config, when the config says."""
    config = load_model_config(model_source)
    limit = getattr(config, "max_position_embeddings", None)
    # Some configs (BERT, RoBERTa) reserve positions for padding offsets; the tokenizer limit is what binds.
    return int(limit) if limit else None


# Dropout knobs have different names across architectures; a run's dropout sets whichever exist.
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "classifier_dropout_prob",
    "dropout",
    "attention_dropout",
    "resid_pdrop",  # GPT-2's
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
    "seq_classif_dropout",
)


def with_new_head(model_config, label_names: list[str], dropout: float):
    """The pretrained model's config pointed at a fresh head for `label_names`, with the run's dropout."""
    model_config.num_labels = len(label_names)
    model_config.id2label = dict(enumerate(label_names))
    model_config.label2id = {name: index for index, name in enumerate(label_names)}
    return set_dropout(model_config, dropout)


def set_dropout(model_config, dropout: float):
    """The run's dropout on whichever of the architecture's dropout knobs exist."""
    for key in DROPOUT_KEYS:
        if hasattr(model_config, key):
            setattr(model_config, key, dropout)
    return model_config


def head_names(model) -> tuple[str, ...]:
    """The new head's top-level modules: "classifier" for BERT, MobileNetV2, ViT and most encoders, "score" for
    GPT-style decoders' sequence classifiers, "head" / "fc" for a few image models."""
    children = [name for name, _ in model.named_children()]
    heads = tuple(name for name in children if "classifier" in name) or tuple(
        name for name in children if name in ("score", "head", "fc")
    )
    if not heads:
        raise UserError(
            f"Cannot find the classification head of this {type(model).__name__}; its top modules are {', '.join(children)}."
        )
    return heads


def pad_with_end_of_text(tokenizer, model_config) -> None:
    """Decoders (GPT-2, LLaMA-style) ship no padding token, so their batches cannot be padded: pad with the
    end-of-text token, in the tokenizer and in the config (a sequence classifier pools the last token that is
    not padding, which it finds by this id). Saved with the run, so every stage reloads the same way."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError("This model's tokenizer has neither a padding nor an end-of-text token, so batches cannot be padded.")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model_config, "pad_token_id", None) is None:
        model_config.pad_token_id = tokenizer.pad_token_id


def load_with_new_head(model_class, source: str, model_config, purpose: str):
    """`model_class.from_pretrained` with a freshly sized head, safely, failures said in a sentence."""
    try:
        return model_class.from_pretrained(source, config=model_config, ignore_mismatched_sizes=True, **SAFE_LOADING)
    except ValueError as error:
        raise UserError(f"The model at {source} cannot be used for {purpose}: {error}") from None
    except OSError as error:
        if "safetensors" in str(error).lower():
            raise UserError(
                f"The model at {source} has no safetensors weights; for safety only safetensors are loaded. "
                "Convert it with save_pretrained(safe_serialization=True)."
            ) from None
        raise


def check_max_length(source: str, max_length: int) -> None:
    limit = max_positions(source)
    if limit and max_length > limit:
        raise UserError(f"The max length {max_length} is over this model's limit of {limit} tokens; choose {limit} or less.")


def token_counts(source: str, texts: list[str]) -> list[int]:
    """Tokens each text takes with `source`'s tokenizer, special tokens included (what max_length counts)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    return [len(ids) for ids in tokenizer([str(text) for text in texts])["input_ids"]]
