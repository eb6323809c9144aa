"""A run's configuration: one flat, typed record that round-trips through YAML and the CLI.

The Train page builds a `RunConfig`, the user can download it as YAML, and
`python -m core train CONFIG.yaml` runs exactly the same thing. `validate()` returns every
problem at once as sentences, so a page can show them all and the CLI can print them all.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError
from core.task_keys import TASK_KEYS, TASK_SUGGESTIONS, TEXT_CLASSIFICATION

SCHEDULERS = ("linear", "cosine", "constant")
STRATEGIES = ("full", "head", "freeze", "lora", "adalora")
ADVERSARIAL = ("none", "fgm", "pgd")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOWER_MODES = ("train", "freeze", "lora")
FUSIONS = ("concat", "gated")
HEAD_TAIL, WINDOW = "head_tail", "window"
TRUNCATIONS = ("head", "tail", HEAD_TAIL, WINDOW)  # how a text longer than the max length is read (core.long_texts)
POOLINGS = ("mean", "max")  # how a window run's document logits combine its windows'
MAX_SEED = 2**32 - 1  # numpy's random generators take no larger seed


@dataclass(frozen=True)
class Tracker:
    """An experiment tracker a run can log to beside TensorBoard (Trainer's `report_to` name is the key)."""

    label: str
    module: str  # what must import for Trainer's integration to work
    install: str  # the pip command that makes it import


# Opt-in: a run logs only to TensorBoard unless its config names some of these.
TRACKERS: dict[str, Tracker] = {
    "mlflow": Tracker("MLflow", "mlflow", "pip install mlflow-skinny==3.17.2"),
    # trackio 0.43 wants pillow below 13, so pip replaces this stack's pillow 13 with 12.x.
    "trackio": Tracker("Trackio", "trackio", "pip install trackio==0.43.0"),
    "wandb": Tracker("Weights & Biases", "wandb", "pip install wandb"),
}

# One sentence of help per knob, for a learner; the Train page shows these as tooltips.
HELP: dict[str, str] = {
    "name": "A short name to find this run again on the Runs page.",
    "task": "What the model learns to do: text classification puts a linear classifier on the encoder; instruction "
    "tuning teaches a GPT-style decoder to answer prompts with its own language-model head.",
    "model": "A built-in model key, a Hugging Face hub id (needs internet), or a local folder saved with save_pretrained.",
    "dataset": "A built-in dataset, one registered on the Data page, or a path to a CSV/TSV/JSONL/Parquet file (CoNLL for NER).",
    "text_column": "Which column holds the text (for NER: the token lists); leave empty to use the mapping saved with the "
    "dataset, or the default name (text, or tokens for NER).",
    "label_column": "Which column holds the label (for NER: the tag lists); leave empty to use the mapping saved with the "
    "dataset, or the default name (label, or tags for NER).",
    "max_rows": "Use only this many rows (stratified sample) for a quick experiment; 0 means all rows.",
    "learning_rate": "How big each update step is; fine-tuning wants small values like 2e-5 to 5e-5.",
    "batch_size": "Examples per step on the device; larger is faster but needs more memory.",
    "epochs": "How many passes over the training data.",
    "max_steps": "Stop after this many updates instead of counting epochs; 0 means use epochs.",
    "warmup_ratio": "Fraction of training spent ramping the learning rate up from zero, which steadies early updates.",
    "scheduler": "How the learning rate decays after warmup: linear to zero, cosine, or constant.",
    "weight_decay": "Pulls weights towards zero each step, a mild guard against over-fitting.",
    "dropout": "Probability of zeroing activations during training; higher fights over-fitting.",
    "max_length": "Texts are cut to this many tokens; longer keeps more context but trains slower.",
    "grad_accum": "Add up gradients over this many batches before an update, to mimic a larger batch.",
    "seed": "Fixes data order and initialisation so a run can be repeated exactly.",
    "eval_steps": "Evaluate on the validation split every this many updates (and at the end).",
    "logging_steps": "Record the training loss and learning rate every this many updates.",
    "strategy": "Which weights train: all (full), only the new head, the head plus the top layers (freeze), or small LoRA "
    "adapters.",
    "freeze_layers": "With the freeze strategy: how many bottom encoder layers (plus embeddings) stay fixed.",
    "lora_r": "LoRA rank: the size of the low-rank update; larger learns more but trains more parameters.",
    "lora_alpha": "LoRA scaling: the update is multiplied by alpha / r.",
    "lora_dropout": "Dropout applied inside the LoRA adapters.",
    "lora_targets": "Names of the linear layers that get LoRA adapters (for BERT: query, value).",
    "adalora_init_r": "AdaLoRA: the rank every adapter starts with, before the budget is pruned.",
    "adalora_target_r": "AdaLoRA: the average rank left at the end; ranks move to the layers that need them most.",
    "label_smoothing": "Spread this much of each target's probability over the other classes, so the model is less "
    "over-confident.",
    "max_grad_norm": "Clip the gradient norm to this value each step (0 turns clipping off); guards against loss spikes.",
    "early_stopping_patience": "Stop when the validation metric has not improved for this many evaluations (0 = never stop "
    "early).",
    "keep_checkpoints": "How many of the newest checkpoints stay on disk (0 keeps every one): more lets Inspect show how the "
    "maps drifted during training, at the cost of disk space.",
    "best_checkpoint": "At the end, keep the checkpoint with the best validation score on the task's metric (accuracy, F1, "
    "recall@1) instead of the last one, which may have over-fitted.",
    "stop_on_divergence": "Stop the run (as failed, with the reason) when the training loss stays far above where it started; "
    "otherwise the run only warns.",
    "trackers": "Also log the curves to these experiment trackers, beside TensorBoard: MLflow (a file store in the workspace, or "
    "your tracking URI), Trackio (local) or W&B (offline into the run folder unless WANDB_MODE=online); none by "
    "default.",
    "mlflow_tracking_uri": "Where MLflow logs: empty means the file store workspace/mlruns; or a tracking server such as "
    "http://localhost:5000.",
    "adversarial": "Train on adversarially perturbed inputs as well (FGM: one gradient step; PGD: several), for robustness.",
    "adv_epsilon": "Size of the adversarial perturbation relative to the input's own size (0.05 = 5 %; on word embeddings for "
    "text, on pixels for images).",
    "adv_steps": "PGD only: how many gradient steps build each perturbation.",
    "label_all_subtokens": "NER: put each word's tag on all its word pieces instead of only the first (training only; scores "
    "always use one prediction per word).",
    "image_size": "Images are resized to this many pixels square for training (0 = the model's own size, 224 for MobileNetV2); "
    "smaller, such as 96, trains much faster on a CPU.",
    "aug_crop_scale": "Random crops keep between this share of the image and all of it, then scale back up (1 = no cropping).",
    "aug_flip": "Probability of mirroring each training image left-right; 0.5 suits photos, but not digits.",
    "aug_rotation": "Rotate each training image by a random angle up to this many degrees either way.",
    "aug_brightness": "Vary each training image's brightness by up to this fraction (0.2 = ±20 %).",
    "aug_contrast": "Vary each training image's contrast by up to this fraction (0.2 = ±20 %).",
    "aug_saturation": "Vary each training image's colour saturation by up to this fraction (0.2 = ±20 %).",
    "device": "Where to train: auto picks a GPU when there is one.",
    "compile": "Run the model through torch.compile: faster steps on a GPU once the first ones have compiled (a minute "
    "or more); off by default, since short runs and CPUs gain little.",
    "devices": "How many processes train this run together (data-parallel, through torchrun): GPUs on cuda (0 = every "
    "visible GPU), CPU processes on the CPU. Each process takes a batch of the batch size, so the global batch is "
    "this many times larger; the queue counts each process as one slot of its device. On a Ray cluster "
    "(WORKBENCH_RAY_ADDRESS set) it is the number of Ray Train workers, one GPU or one CPU each, anywhere in the cluster "
    "(0 = every GPU it has).",
    "precision": "Number format: auto picks bf16 on a GPU that supports it and fp32 elsewhere; fp32 works everywhere; bf16 or "
    "fp16 halve memory and speed up training on GPUs that support them.",
    "truncation": "Text classification: how a text longer than the max length is read — its head (the start), its tail "
    "(the end, where a review's verdict or an email's request often sits), head_tail (the first quarter of the max length "
    "from the start and the other three quarters from the end, as Sun et al. 2019 kept 128 + 382 of 512 tokens), or "
    "window (the whole text as overlapping windows of the max length, each trained with the text's label, their logits "
    "pooled into one prediction per text; slower: every window is a training example). Inspect and the explanations read "
    "texts the same way; the exported folder's tokenizer can cut only one end, and keeps the tail for head_tail.",
    "window_overlap": "Sliding window: how many tokens each window shares with the one before, so that no phrase is only "
    "ever seen cut in two; at most half the max length (more overlap means more windows to train on).",
    "window_pooling": "Sliding window: how a text's prediction combines its windows' logits — their mean (evidence spread "
    "over the text), or each class's largest (one decisive passage is enough).",
    "packing": "Instruction tuning: join a batch's examples into one row with no padding, each still attending only to "
    "itself (position ids restart per example); faster when lengths vary, the same loss.",
    "group_by_length": "Batch texts of similar length together so less padding is computed; faster, same results on average.",
    "vision_tower": "Image-text tasks: whether the image encoder trains, stays frozen, or learns small LoRA adapters (the "
    "targets must name its layers).",
    "text_tower": "Image-text tasks: whether the text encoder trains, stays frozen, or learns small LoRA adapters (for BERT: "
    "query, value).",
    "vision_lr": "Image-text tasks: the image encoder's own learning rate (0 = the run's learning rate, which the projections "
    "always use).",
    "text_lr": "Image-text tasks: the text encoder's own learning rate (0 = the run's learning rate, which the projections "
    "always use).",
    "fusion": "Image + text classification: how the two embeddings combine before the classifier — concatenated, or a learned "
    "gate that weighs one against the other.",
}


@dataclass
class RunConfig:
    name: str = "movie-review sentiment"
    task: str = TEXT_CLASSIFICATION
    model: str = "minilm-l6"
    dataset: str = "movie-reviews"
    text_column: str = ""
    label_column: str = ""
    max_rows: int = 0
    learning_rate: float = 5e-5
    batch_size: int = 16
    epochs: float = 1.0  # MiniLM over-fits movie reviews after one epoch (eval loss rises from there)
    max_steps: int = 0
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    weight_decay: float = 0.01
    dropout: float = 0.1
    max_length: int = 128
    truncation: str = "head"
    window_overlap: int = 32
    window_pooling: str = "mean"
    packing: bool = False
    grad_accum: int = 1
    seed: int = 42
    eval_steps: int = 50
    logging_steps: int = 10
    strategy: str = "full"
    freeze_layers: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])
    adalora_init_r: int = 12
    adalora_target_r: int = 4
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    early_stopping_patience: int = 0
    best_checkpoint: bool = True
    keep_checkpoints: int = 2
    stop_on_divergence: bool = False
    trackers: list[str] = field(default_factory=list)
    mlflow_tracking_uri: str = ""
    adversarial: str = "none"
    adv_epsilon: float = 0.05
    adv_steps: int = 3
    label_all_subtokens: bool = False
    image_size: int = 0
    aug_crop_scale: float = 1.0
    aug_flip: float = 0.0
    aug_rotation: float = 0.0
    aug_brightness: float = 0.0
    aug_contrast: float = 0.0
    aug_saturation: float = 0.0
    device: str = "auto"
    devices: int = 1
    compile: bool = False
    precision: str = "auto"
    group_by_length: bool = True
    vision_tower: str = "train"
    text_tower: str = "train"
    vision_lr: float = 0.0
    text_lr: float = 0.0
    fusion: str = "concat"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if not unknown:
            # A config naming a task but not the keys the task suggests (a decoder, LoRA) gets the task's values.
            given = {key: value for key, value in values.items() if value is not None}
            values = {**TASK_SUGGESTIONS.get(str(given.get("task", TEXT_CLASSIFICATION)), {}), **given}
        if unknown:
            raise UserError(f"The config has unknown keys: {', '.join(unknown)}. Valid keys are: {', '.join(known)}.")
        coerced = {}
        for key, value in values.items():
            if value is None:
                continue  # `key:` with nothing after it in YAML means "leave the default"
            coerced[key] = _coerce(key, value, getattr(cls(), key))
        return cls(**coerced)

    @classmethod
    def from_yaml(cls, text: str) -> RunConfig:
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise UserError(f"The config is not valid YAML ({error}); fix the line it names.") from None
        if not isinstance(values, dict):
            raise UserError("The config must be a YAML mapping of keys to values, like the one the Train page downloads.")
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a config file; give the path of a YAML file such as run.yaml.")
        if not path.is_file():
            raise UserError(f"There is no config file at {path}; download one from the Train page or write one by hand.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"{path} is not a text YAML file (it is not UTF-8 text); give a config downloaded from the Train page."
            ) from None
        except OSError as error:
            raise UserError(f"The config file {path} cannot be read ({error.strerror or error}); fix its permissions.") from None
        return cls.from_yaml(text)

    def validate(self) -> list[str]:
        """Every problem with the values, as sentences; an empty list means the config is usable."""
        problems: list[str] = []

        def check(condition: bool, message: str) -> None:
            if not condition:
                problems.append(message)

        check(bool(self.name.strip()), "Give the run a name.")
        check(self.learning_rate > 0, f"The learning rate must be above 0 (got {self.learning_rate}); try 5e-5.")
        check(
            self.learning_rate < 1,
            f"A learning rate of {self.learning_rate} will destroy the pretrained weights; use a value "
            "below 1, typically 1e-5 to 1e-3.",
        )
        check(self.batch_size >= 1, f"The batch size must be at least 1 (got {self.batch_size}).")
        check(self.epochs > 0 or self.max_steps > 0, "Set a number of epochs above 0, or a number of max steps above 0.")
        check(self.max_steps >= 0, "Max steps cannot be negative; use 0 to train by epochs.")
        check(
            0 <= self.warmup_ratio < 1, f"The warmup ratio is a fraction of training between 0 and 1 (got {self.warmup_ratio})."
        )
        check(self.scheduler in SCHEDULERS, f"Unknown scheduler '{self.scheduler}'; choose one of {', '.join(SCHEDULERS)}.")
        check(self.weight_decay >= 0, "Weight decay cannot be negative.")
        check(0 <= self.dropout < 1, f"Dropout is a probability between 0 and 1 (got {self.dropout}).")
        check(self.max_length >= 8, f"The max length must be at least 8 tokens (got {self.max_length}).")
        check(self.grad_accum >= 1, "Gradient accumulation must be at least 1.")
        check(
            0 <= self.seed <= MAX_SEED,
            f"The seed must be a whole number from 0 to {MAX_SEED} (got {self.seed}); any number "
            "in that range repeats a run exactly.",
        )
        check(self.eval_steps >= 1, "Evaluate at least every 1 step (eval steps ≥ 1).")
        check(self.logging_steps >= 1, "Log at least every 1 step (logging steps ≥ 1).")
        check(self.max_rows >= 0, "Max rows cannot be negative; use 0 for all rows.")
        check(self.strategy in STRATEGIES, f"Unknown strategy '{self.strategy}'; choose one of {', '.join(STRATEGIES)}.")
        check(self.freeze_layers >= 0, "The number of frozen layers cannot be negative.")
        if self.strategy == "adalora":
            check(self.adalora_init_r >= 1, "AdaLoRA's initial rank must be at least 1.")
            check(
                1 <= self.adalora_target_r <= self.adalora_init_r, "AdaLoRA's target rank must be between 1 and its initial rank."
            )
        check(0 <= self.label_smoothing < 1, f"Label smoothing is a fraction between 0 and 1 (got {self.label_smoothing}).")
        check(self.max_grad_norm >= 0, "The gradient clipping norm cannot be negative; use 0 to turn clipping off.")
        check(self.keep_checkpoints >= 0, "The number of checkpoints to keep cannot be negative; use 0 to keep them all.")
        check(self.early_stopping_patience >= 0, "Early-stopping patience cannot be negative; use 0 to turn it off.")
        problems.extend(self.tracker_problems())
        check(
            self.adversarial in ADVERSARIAL,
            f"Unknown adversarial training '{self.adversarial}'; choose one of {', '.join(ADVERSARIAL)}.",
        )
        if self.adversarial != "none":
            check(self.adv_epsilon > 0, f"The adversarial epsilon must be above 0 (got {self.adv_epsilon}); try 0.05.")
            check(self.adversarial != "pgd" or self.adv_steps >= 1, "PGD needs at least 1 step.")
        if self.strategy in ("lora", "adalora"):
            check(self.lora_r >= 1, "The LoRA rank r must be at least 1.")
            check(self.lora_alpha >= 1, "LoRA alpha must be at least 1.")
            check(0 <= self.lora_dropout < 1, "LoRA dropout is a probability between 0 and 1.")
            check(bool(self.lora_targets), "Name at least one target module for LoRA (for BERT: query, value).")
        check(self.image_size >= 0, "The image size cannot be negative; use 0 for the model's own size.")
        from core.images.augment import params_from_config

        problems.extend(params_from_config(self).problems())
        for tower in ("vision_tower", "text_tower"):
            check(
                getattr(self, tower) in TOWER_MODES,
                f"Unknown {tower.replace('_', ' ')} mode '{getattr(self, tower)}'; choose one of {', '.join(TOWER_MODES)}.",
            )
        check(
            self.vision_lr >= 0 and self.text_lr >= 0,
            "A tower's learning rate cannot be negative; use 0 for the run's learning rate.",
        )
        check(
            self.vision_lr < 1 and self.text_lr < 1,
            "A tower learning rate of 1 or more will destroy the pretrained weights; use a value like 1e-5.",
        )
        check(
            self.truncation in TRUNCATIONS,
            f"Unknown truncation '{self.truncation}'; choose one of {', '.join(TRUNCATIONS)}.",
        )
        if self.truncation == WINDOW:
            check(
                0 <= self.window_overlap <= self.max_length // 2,
                f"The window overlap must be from 0 to half the max length, {self.max_length // 2} tokens (got "
                f"{self.window_overlap}); try a quarter of the max length.",
            )
            check(
                self.window_pooling in POOLINGS,
                f"Unknown window pooling '{self.window_pooling}'; choose one of {', '.join(POOLINGS)}.",
            )
        check(self.fusion in FUSIONS, f"Unknown fusion '{self.fusion}'; choose one of {', '.join(FUSIONS)}.")
        check(self.device in DEVICES, f"Unknown device '{self.device}'; choose one of {', '.join(DEVICES)}.")
        check(self.devices >= 0, f"devices must be 0 (every visible GPU) or a number of processes, not {self.devices}; try 1.")
        check(self.precision in PRECISIONS, f"Unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}.")
        if self.device == "cpu":
            check(self.precision != "fp16", "fp16 needs a GPU; on the CPU choose fp32 (or bf16).")
        check(self.task in TASK_KEYS, f"Unknown task '{self.task}'; choose one of {', '.join(TASK_KEYS)}.")
        return problems

    def tracker_problems(self) -> list[str]:
        """Unknown trackers, and chosen ones whose package is missing (with the command that installs it)."""
        from importlib.util import find_spec

        problems = []
        for name in self.trackers:
            tracker = TRACKERS.get(name)
            if tracker is None:
                problems.append(f"Unknown tracker '{name}'; choose from {', '.join(TRACKERS)} (TensorBoard always logs).")
            elif find_spec(tracker.module) is None:
                problems.append(
                    f"{tracker.label} is not installed here; run `{tracker.install}`, or remove {name} from the trackers."
                )
        if self.mlflow_tracking_uri and "mlflow" not in self.trackers:
            problems.append("An MLflow tracking URI is set but mlflow is not among the trackers; add it, or clear the URI.")
        return problems

    def raise_if_invalid(self) -> None:
        problems = self.validate()
        if problems:
            raise UserError(" ".join(problems))

    def cli_command(self, config_path: str = "run.yaml") -> str:
        """The equivalent command line for this config, as the Train page shows it."""
        return f"python -m core train {shlex.quote(config_path)}"

    def differences(self, other: RunConfig) -> dict[str, tuple[Any, Any]]:
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """YAML and form values arrive as strings or ints; turn them into the field's type or say why not."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                word = value.strip().lower()
                if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError
                return word in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            return [str(part) for part in value]
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"The value of '{key}' must be {type(default).__name__} (got {value!r}).") from None
