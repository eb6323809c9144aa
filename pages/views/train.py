"""Train: choose task, model, dataset and hyperparameters; download the config; start a run."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.catalog import BUILTIN_MODELS
from core.config import (
    ADVERSARIAL,
    FUSIONS,
    HEAD_TAIL,
    HELP,
    MAX_SEED,
    POOLINGS,
    PRECISIONS,
    SCHEDULERS,
    STRATEGIES,
    TOWER_MODES,
    TRACKERS,
    TRUNCATIONS,
    WINDOW,
    RunConfig,
)
from core.errors import UserError
from core.precision import precision_hint
from core.presets import PRESETS
from pages import PAGE_ICONS, open_store
from pages.sweep_form import sweep_launch, sweep_toggle

DEFAULTS = RunConfig()
FILE_PATH = "__file__"
MODEL_SOURCES = ("Built-in", "Hugging Face hub id", "Local folder")

# (field, label, widget, options): the knobs drawn four to a row; every one has HELP[field].
HYPERPARAMETERS = (
    ("learning_rate", "Learning rate", "number", {"min_value": 0.0, "format": "%.1e", "step": 1e-5}),
    ("batch_size", "Batch size", "number", {"min_value": 0, "step": 1}),
    ("epochs", "Epochs", "number", {"min_value": 0.0, "step": 1.0}),
    ("max_steps", "Max steps (0 = use epochs)", "number", {"min_value": 0, "step": 10}),
    ("warmup_ratio", "Warmup ratio", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
    ("scheduler", "Scheduler", "select", {"options": SCHEDULERS}),
    ("weight_decay", "Weight decay", "number", {"min_value": 0.0, "step": 0.01}),
    ("dropout", "Dropout", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
    ("max_length", "Max sequence length", "number", {"min_value": 8, "step": 16}),
    ("grad_accum", "Gradient accumulation", "number", {"min_value": 1, "step": 1}),
    ("seed", "Seed", "number", {"min_value": 0, "max_value": MAX_SEED, "step": 1}),
    ("max_rows", "Max rows (0 = all)", "number", {"min_value": 0, "step": 100}),
    ("eval_steps", "Evaluate every N steps", "number", {"min_value": 1, "step": 10}),
    ("logging_steps", "Log every N steps", "number", {"min_value": 1, "step": 5}),
    ("group_by_length", "Group batches by length", "check", {}),
)
ROBUSTNESS = (
    ("label_smoothing", "Label smoothing", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
    ("max_grad_norm", "Clip gradient norm (0 = off)", "number", {"min_value": 0.0, "step": 0.5}),
    ("early_stopping_patience", "Early-stopping patience (0 = off)", "number", {"min_value": 0, "step": 1}),
    ("keep_checkpoints", "Checkpoints kept (0 = all)", "number", {"min_value": 0, "step": 1}),
    ("best_checkpoint", "Keep the best checkpoint", "check", {}),
    ("stop_on_divergence", "Stop when the loss diverges", "check", {}),
    ("adversarial", "Adversarial training", "select", {"options": ADVERSARIAL}),
    ("adv_epsilon", "Adversarial epsilon (relative)", "number", {"min_value": 0.0, "step": 0.01, "format": "%.3f"}),
    ("adv_steps", "PGD steps", "number", {"min_value": 1, "step": 1}),
)
LORA = (
    ("lora_r", "r", "number", {"min_value": 1, "step": 1}),
    ("lora_alpha", "alpha", "number", {"min_value": 1, "step": 1}),
    ("lora_dropout", "LoRA dropout", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
    ("lora_targets", "Target modules", "text", {}),
)
ADALORA = (
    ("adalora_init_r", "Initial rank", "number", {"min_value": 1, "step": 1}),
    ("adalora_target_r", "Target average rank", "number", {"min_value": 1, "step": 1}),
)
IMAGES = (
    ("image_size", "Image size (0 = model's own)", "number", {"min_value": 0, "step": 16}),
    ("aug_crop_scale", "Random crop: smallest share kept", "number", {"min_value": 0.05, "max_value": 1.0, "step": 0.05}),
    ("aug_flip", "Horizontal flip probability", "number", {"min_value": 0.0, "max_value": 1.0, "step": 0.1}),
    ("aug_rotation", "Rotation (± degrees)", "number", {"min_value": 0.0, "max_value": 180.0, "step": 5.0}),
    ("aug_brightness", "Brightness jitter", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
    ("aug_contrast", "Contrast jitter", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
    ("aug_saturation", "Saturation jitter", "number", {"min_value": 0.0, "max_value": 0.99, "step": 0.05}),
)
TOWERS = (
    ("vision_tower", "Vision tower", "select", {"options": TOWER_MODES}),
    ("text_tower", "Text tower", "select", {"options": TOWER_MODES}),
    ("vision_lr", "Vision learning rate (0 = run's)", "number", {"min_value": 0.0, "format": "%.1e", "step": 1e-5}),
    ("text_lr", "Text learning rate (0 = run's)", "number", {"min_value": 0.0, "format": "%.1e", "step": 1e-5}),
)
FUSION = (("fusion", "Fusion", "select", {"options": FUSIONS}),)
TRUNCATION_LABELS = {"head": "head (the start)", "tail": "tail (the end)", HEAD_TAIL: "head + tail", WINDOW: "sliding window"}
LONG_TEXTS = (
    ("truncation", "Read a long text by", "select", {"options": TRUNCATIONS, "format_func": TRUNCATION_LABELS.get}),
    ("window_overlap", "Window overlap (tokens)", "number", {"min_value": 0, "step": 8}),
    ("window_pooling", "Pool the windows' logits by", "select", {"options": POOLINGS}),
)
HARDWARE = (
    ("device", "Device", "select", {"options": ("auto", "cpu", "cuda")}),
    ("devices", "Processes (GPUs; 0 = all)", "number", {"min_value": 0, "step": 1}),
    ("precision", "Precision", "select", {"options": PRECISIONS}),
    ("compile", "torch.compile", "check", {}),
)
WIDGET_FIELDS = [
    spec[0]
    for group in (HYPERPARAMETERS, ROBUSTNESS, LORA, ADALORA, IMAGES, TOWERS, FUSION, LONG_TEXTS, HARDWARE)
    for spec in group
]


def widget_value(field: str, value):
    """Session-state form of a config value (lists are edited as comma-separated text)."""
    return ",".join(value) if isinstance(value, list) else value


def fill_form(config: RunConfig) -> None:
    """Put a config's values into the form's widgets (used by the defaults and the presets)."""
    for field in WIDGET_FIELDS + ["name", "task", "strategy", "freeze_layers", "packing"]:
        st.session_state[f"train_{field}"] = widget_value(field, getattr(config, field))
    if config.model in BUILTIN_MODELS:
        st.session_state["train_model_source"] = "Built-in"
        st.session_state["train_model_builtin"] = config.model
    else:
        local = Path(config.model).expanduser().exists()
        st.session_state["train_model_source"] = "Local folder" if local else "Hugging Face hub id"
        st.session_state["train_model_text"] = config.model
    st.session_state["train_dataset"] = config.dataset
    st.session_state["train_task_followed"] = config.task  # a preset's values stand: no task suggestion replaces them


def draw(specs, columns: int = 4) -> dict:
    values = {}
    for start in range(0, len(specs), columns):
        for column, (field, label, kind, options) in zip(st.columns(columns), specs[start : start + columns]):
            key, help_text = f"train_{field}", HELP[field]
            if kind == "number":
                values[field] = column.number_input(label, key=key, help=help_text, **options)
            elif kind == "select":
                values[field] = column.selectbox(label, key=key, help=help_text, **options)
            elif kind == "check":
                values[field] = column.checkbox(label, key=key, help=help_text)
            else:
                values[field] = column.text_input(label, key=key, help=help_text)
    return values


def presets() -> None:
    with st.expander("Teaching presets — one click fills the form"):
        key = st.selectbox("Preset", list(PRESETS), format_func=lambda k: PRESETS[k].title, key="train_preset")
        preset = PRESETS[key]
        st.markdown(preset.watch_for)
        configs = preset.configs()
        left, right = st.columns(2)
        left.button(
            "Fill the form",
            key="train_preset_fill",
            on_click=fill_form,
            args=(configs[0],),
            help="Replace the form's values with this preset's (the first variant, for comparisons).",
        )
        if len(configs) > 1 and right.button(f"Queue all {len(configs)} variants", key="train_preset_queue"):
            queue(configs)


def model_picker(task) -> str:
    source = st.radio(
        "Model source",
        MODEL_SOURCES,
        horizontal=True,
        key="train_model_source",
        help="Built-in models work offline; a hub id needs internet; a local folder is one written by save_pretrained.",
    )
    if source == "Built-in":
        fitting = [key for key, model in BUILTIN_MODELS.items() if model.serves(task.key, task.modality)]
        if st.session_state.get("train_model_builtin") not in fitting:
            st.session_state["train_model_builtin"] = fitting[0]
        return st.selectbox(
            "Model", fitting, format_func=lambda key: BUILTIN_MODELS[key].title, key="train_model_builtin", help=HELP["model"]
        )
    placeholder = "bert-base-uncased" if source == "Hugging Face hub id" else "/path/to/model-folder"
    return st.text_input("Model", placeholder=placeholder, key="train_model_text", help=HELP["model"])


def dataset_picker(task) -> tuple[str, str, str]:
    try:
        datasets = {info.key: info for info in task.datasets()}
    except UserError as problem:
        # The registered datasets live in the workspace: when it cannot be used, nothing below can run either.
        st.error(str(problem))
        st.stop()
    if st.session_state.get("train_dataset") not in [*datasets, FILE_PATH]:
        st.session_state["train_dataset"] = next(iter(datasets), FILE_PATH)
    choice = st.selectbox(
        "Dataset",
        [*datasets, FILE_PATH],
        key="train_dataset",
        help=HELP["dataset"],
        format_func=lambda key: "A file path…" if key == FILE_PATH else f"{datasets[key].title} ({key})",
    )
    if choice != FILE_PATH:
        st.caption(datasets[choice].description)
        return choice, "", ""
    path = st.text_input("File path", key="train_dataset_path", help=HELP["dataset"])
    text_column = st.text_input("Text column", placeholder="default name", key="train_text_column", help=HELP["text_column"])
    label_column = st.text_input("Label column", placeholder="default name", key="train_label_column", help=HELP["label_column"])
    return path, text_column, label_column


def build_config() -> RunConfig | None:
    from core.tasks import TASKS

    values: dict = {}
    name_slot = st.container()  # the name comes first on the page but follows the task and dataset picked below
    values["task"] = st.selectbox(
        "Task", list(TASKS), format_func=lambda key: TASKS[key].title, key="train_task", help=HELP["task"]
    )
    task = TASKS[values["task"]]
    follow_task_suggestions(task, TASKS)
    values["model"] = model_picker(task)
    values["dataset"], values["text_column"], values["label_column"] = dataset_picker(task)
    follow_suggested_name(suggested_name(task, values["dataset"]))
    values["name"] = name_slot.text_input("Run name", key="train_name", help=HELP["name"])
    st.subheader("Hyperparameters")
    keep_hidden_knobs(task)
    values.update(draw([spec for spec in HYPERPARAMETERS if spec[0] not in task.unused_knobs]))
    for group in task.settings:
        values.update(SETTING_GROUPS[group](values))
    with st.expander("Robustness and regularisation"):
        values.update(draw(ROBUSTNESS))
        values.update(tracker_settings())
    st.subheader("Hardware")
    values.update(draw(HARDWARE, columns=4))
    if hint := precision_hint(values["device"], values["precision"]):
        st.caption(hint)
    if values["devices"] != 1:
        processes = "every visible GPU" if values["devices"] == 0 else f"{values['devices']} processes"
        st.caption(
            f"Data-parallel over {processes} (torchrun): each takes batches of {values.get('batch_size')}, so one update "
            f"sees {values.get('batch_size')} × processes × {values.get('grad_accum', 1)} accumulated examples."
        )
    try:
        return RunConfig.from_dict(values)
    except UserError as problem:
        st.error(str(problem))
        return None


def scheduler_launch(config: RunConfig) -> None:
    """The same run for a cluster's own scheduler: a SLURM script that records it once and starts its worker on every
    node with torchrun (`core.scheduler_runs`); the app then lists it like any run."""
    from core.scheduler_runs import slurm_script

    with st.expander("Run it on a cluster's own scheduler (SLURM, Kubernetes)"):
        left, right = st.columns(2)
        nodes = left.number_input("Nodes", min_value=1, value=2, step=1, key="train_scheduler_nodes")
        per_node = right.number_input(
            "Processes (GPUs) per node", min_value=1, value=max(1, config.devices), step=1, key="train_scheduler_per_node"
        )
        script = slurm_script("run.yaml", int(nodes), int(per_node))
        st.code(script, language="bash")
        st.caption(
            "Save the config as run.yaml beside it and submit it with sbatch. On Kubernetes, run the line after srun in "
            "each pod of the job. The workspace must be a shared folder at the same path on every node and here."
        )
        st.download_button("Download the SLURM script", script, file_name="launch.sbatch", key="train_scheduler_download")


def follow_task_suggestions(task, tasks) -> None:
    """When the task changes, fill in what it suggests (a decoder, LoRA on its projections) and put back the common
    defaults the previous task had replaced, so an encoder task never inherits a decoder's LoRA targets."""
    previous = st.session_state.get("train_task_followed")
    if previous == task.key:
        return
    st.session_state["train_task_followed"] = task.key
    defaults = RunConfig()
    replaced = {field: getattr(defaults, field) for field in tasks[previous].suggested} if previous in tasks else {}
    for field, value in {**replaced, **task.suggested}.items():
        if field == "model":
            st.session_state["train_model_source"] = "Built-in"
            st.session_state["train_model_builtin"] = value
        elif field == "dataset":
            st.session_state["train_dataset"] = value
        else:
            st.session_state[f"train_{field}"] = widget_value(field, value)


def tracker_settings() -> dict:
    """Experiment trackers beside TensorBoard (none unless chosen), and where MLflow logs when it is one."""
    left, right = st.columns(2)
    trackers = left.multiselect(
        "Experiment trackers (beside TensorBoard)",
        list(TRACKERS),
        key="train_trackers",
        format_func=lambda name: TRACKERS[name].label,
        help=HELP["trackers"],
    )
    uri = right.text_input(
        "MLflow tracking URI",
        key="train_mlflow_tracking_uri",
        placeholder="empty: workspace/mlruns",
        disabled="mlflow" not in trackers,
        help=HELP["mlflow_tracking_uri"],
    )
    return {"trackers": trackers, "mlflow_tracking_uri": uri.strip() if "mlflow" in trackers else ""}


def keep_hidden_knobs(task) -> None:
    """Keep the values of the knobs this task hides: Streamlit forgets a widget's value on a run that does not
    draw it, so going back to a text task would find max length at its minimum and length grouping off."""
    for field in task.unused_knobs:
        key = f"train_{field}"
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]  # a value set by the script outlives its widget


def suggested_name(task, dataset: str) -> str:
    """The run name the page offers: the dataset and the task, e.g. 'fashion-mnist · image classification'."""
    task_name = task.title.split(" (")[0].lower()  # titles explain themselves in parentheses; a name needs no more
    return f"{Path(dataset).name or 'my data'} · {task_name}"


def follow_suggested_name(suggestion: str) -> None:
    """Keep the run name in step with the task and dataset until the user types a name of their own.

    Must run before the name's widget is drawn: Streamlit allows setting a widget's value only then.
    """
    if st.session_state.get("train_name", "") in ("", st.session_state.get("train_name_suggested")):
        st.session_state["train_name"] = suggestion
    st.session_state["train_name_suggested"] = suggestion


def strategy_settings(values: dict) -> dict:
    st.subheader("What trains")
    chosen = {
        "strategy": st.radio(
            "Fine-tuning strategy",
            STRATEGIES,
            horizontal=True,
            key="train_strategy",
            help=HELP["strategy"],
            format_func={
                "full": "full",
                "head": "head only",
                "freeze": "freeze bottom N layers",
                "lora": "LoRA",
                "adalora": "AdaLoRA",
            }.get,
        )
    }
    if chosen["strategy"] == "freeze":
        chosen["freeze_layers"] = st.number_input(
            "Layers to freeze", min_value=0, step=1, key="train_freeze_layers", help=HELP["freeze_layers"]
        )
    if chosen["strategy"] in ("lora", "adalora"):
        chosen.update(draw(LORA))
    if chosen["strategy"] == "adalora":
        chosen.update(draw(ADALORA))
        st.caption(
            "AdaLoRA keeps the full rank budget for the first 10 % of steps, prunes it in the middle, "
            "and fixes the ranks for the last 20 %; the Runs page draws the budget as it moves."
        )
    return chosen


def subtoken_settings(values: dict) -> dict:
    every_piece = st.checkbox("Tag every word piece", key="train_label_all_subtokens", help=HELP["label_all_subtokens"])
    return {"label_all_subtokens": every_piece}


def image_settings(values: dict) -> dict:
    st.subheader("Images and augmentation")
    chosen = draw(IMAGES)
    augmentation_preview({**values, **chosen})
    return chosen


def tower_settings(values: dict) -> dict:
    """Image-text tasks: each tower trains, freezes or takes LoRA; the projections always train."""
    st.subheader("What trains: the two towers")
    chosen = {"strategy": "full", **draw(TOWERS)}
    if "lora" in (chosen["vision_tower"], chosen["text_tower"]):
        st.caption(
            "LoRA targets are looked up in each LoRA tower by name (BERT text tower: query, value; "
            "MobileNetV2 has convolutions such as expand_1x1.convolution)."
        )
        chosen.update(draw(LORA))
    negatives = max(int(values.get("batch_size") or 1) - 1, 0)
    st.caption(
        f"Contrastive loss: each pair is scored against the other {negatives} pairs of its batch (in-batch "
        "negatives), so a larger batch gives harder training. Gradient accumulation adds optimizer steps, "
        "not negatives: each micro-batch's loss sees only its own batch."
    )
    return chosen


def long_text_settings(values: dict) -> dict:
    """How a text longer than the max length is read: one end, head + tail, or sliding windows (with their overlap and
    pooling)."""
    chosen = draw(LONG_TEXTS[:1], columns=2)
    length = values.get("max_length")
    if chosen["truncation"] == WINDOW:
        chosen.update(draw(LONG_TEXTS[1:], columns=2))
        st.caption(
            f"Texts longer than {length} tokens are read whole, as windows of {length} tokens: each window trains with "
            "its text's label, and a text's prediction pools its windows' logits. The Data page counts how many of a "
            "dataset's texts are that long."
        )
    else:
        st.caption(
            f"Texts longer than {length} tokens are cut; the Data page counts how many of a dataset's texts are. Keep "
            "the tail (or head + tail) when the evidence sits at the end, or read every part with a sliding window."
        )
    return chosen


def packing_settings(values: dict) -> dict:
    return {"packing": st.checkbox("Pack examples (no padding)", key="train_packing", help=HELP["packing"])}


def fusion_settings(values: dict) -> dict:
    return draw(FUSION, columns=2)


SETTING_GROUPS = {
    "strategy": strategy_settings,
    "subtokens": subtoken_settings,
    "images": image_settings,
    "towers": tower_settings,
    "fusion": fusion_settings,
    "long_texts": long_text_settings,
    "packing": packing_settings,
}


@st.cache_data(show_spinner=False, max_entries=4)
def sample_images(task: str, dataset: str, count: int = 4):
    """The first training images of a dataset of any kind with images (image classes, image-text pairs)."""
    from core.data.registry import dataset_kind

    train = dataset_kind(task).load(dataset, max_rows=200).train
    return [train[index]["image"] for index in range(min(count, len(train)))]


def augmentation_preview(values: dict) -> None:
    """The augmented training images this config will produce, redrawn as the sliders move."""
    from core.images.augment import params_from_config, preview_grid

    params = params_from_config(RunConfig(**{k: v for k, v in values.items() if k.startswith("aug_")}))
    if params.problems():
        return
    seed = st.number_input(
        "Preview seed",
        min_value=0,
        step=1,
        key="train_preview_seed",
        help="Change it to draw other random augmentations of the same images.",
    )
    try:
        with st.spinner("Preparing sample images…"):
            originals = sample_images(values["task"], values["dataset"])
    except UserError as problem:
        st.info(f"No preview: {problem}")
        return
    st.caption("Top row: originals. Below: what the trainer will see after augmentation.")
    st.image(originals, width=96)
    st.image(preview_grid(originals, params, seed=int(seed), n=8), width=96)


def queue(configs: list[RunConfig]) -> None:
    from core.jobs import submit

    store = open_store()
    started = []
    try:
        with st.spinner("Checking the model and the data, then queueing…"):
            for config in configs:
                started.append(submit(config, store))
    except UserError as problem:
        st.error(str(problem))
    for run in started:
        st.success(f"Run {run.id} ({run.name}) is {run.status} on {run.device}.")
    if started:
        st.session_state["runs_selected_ids"] = [run.id for run in started]
        st.page_link("pages/views/runs.py", label="Watch it on the Runs page", icon=PAGE_ICONS["pages/views/runs.py"])


st.title("Train")
st.caption("Every knob has a one-sentence explanation: hover the question mark next to it.")
if "train_learning_rate" not in st.session_state:
    fill_form(DEFAULTS)
    st.session_state["train_name_suggested"] = DEFAULTS.name  # the default name is no name of the user's
pending = st.session_state.pop("train_pending_config", None)  # the Sweeps page's "Copy best config to Train"
if pending:
    fill_form(RunConfig.from_yaml(pending))
    st.session_state["sweep_on"] = False  # one run of the best config, not another sweep
    st.success("The form holds the best trial's config: start it as one run, or change it first.")
presets()
config = build_config()
if config is not None:
    problems = config.validate()
    for problem in problems:
        st.error(problem)
    st.subheader("Launch")
    if sweep_toggle():
        from core.tasks import TASKS

        sweep_launch(TASKS[config.task], config)
    else:
        left, right = st.columns([1, 2])
        left.download_button(
            "Download config (YAML)", config.to_yaml(), file_name="run.yaml", mime="application/x-yaml", key="train_download"
        )
        right.code(config.cli_command("run.yaml"), language="bash")
        if st.button("Start training", type="primary", disabled=bool(problems), key="train_start"):
            queue([config])
        scheduler_launch(config)
