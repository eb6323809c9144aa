"""Train: choose task, model, dataset and hyperparameters; download the config; start a run."""

from __future__ import annotations

import streamlit as st

from core.catalog import BUILTIN_MODELS
from core.config import HELP, PRECISIONS, SCHEDULERS, STRATEGIES, RunConfig
from core.data import list_datasets
from core.errors import UserError
from pages import open_store

DEFAULTS = RunConfig()
FILE_PATH = "__file__"

st.title("Train")
st.caption("Every knob has a one-sentence explanation: hover the ⓘ next to it.")


def model_picker() -> str:
    source = st.radio(
        "Model source", ["Built-in", "Hugging Face hub id", "Local folder"], horizontal=True, key="train_model_source",
        help="Built-in models work offline; a hub id needs internet; a local folder is one written by save_pretrained.",
    )
    if source == "Built-in":
        return st.selectbox(
            "Model", list(BUILTIN_MODELS), format_func=lambda key: BUILTIN_MODELS[key].title,
            key="train_model_builtin", help=HELP["model"],
        )
    placeholder = "bert-base-uncased" if source == "Hugging Face hub id" else "/path/to/model-folder"
    return st.text_input("Model", placeholder=placeholder, key="train_model_text", help=HELP["model"])


def dataset_picker() -> tuple[str, str, str]:
    datasets = {info.key: info for info in list_datasets() if info.task == "text_classification"}
    choice = st.selectbox(
        "Dataset", [*datasets, FILE_PATH], key="train_dataset",
        format_func=lambda key: "A file path…" if key == FILE_PATH else f"{datasets[key].title} ({key})",
        help=HELP["dataset"],
    )
    if choice != FILE_PATH:
        st.caption(datasets[choice].description)
        return choice, "", ""
    path = st.text_input("File path", key="train_dataset_path", help=HELP["dataset"])
    text_column = st.text_input("Text column", value="text", key="train_text_column", help=HELP["text_column"])
    label_column = st.text_input("Label column", value="label", key="train_label_column", help=HELP["label_column"])
    return path, text_column, label_column


def hyperparameters() -> dict:
    values: dict = {}
    one, two, three, four = st.columns(4)
    values["learning_rate"] = one.number_input("Learning rate", value=DEFAULTS.learning_rate, min_value=0.0, format="%.1e", step=1e-5, key="train_learning_rate", help=HELP["learning_rate"])
    values["batch_size"] = two.number_input("Batch size", value=DEFAULTS.batch_size, min_value=0, step=1, key="train_batch_size", help=HELP["batch_size"])
    values["epochs"] = three.number_input("Epochs", value=DEFAULTS.epochs, min_value=0.0, step=1.0, key="train_epochs", help=HELP["epochs"])
    values["max_steps"] = four.number_input("Max steps (0 = use epochs)", value=DEFAULTS.max_steps, min_value=0, step=10, key="train_max_steps", help=HELP["max_steps"])
    one, two, three, four = st.columns(4)
    values["warmup_ratio"] = one.number_input("Warmup ratio", value=DEFAULTS.warmup_ratio, min_value=0.0, max_value=0.99, step=0.05, key="train_warmup_ratio", help=HELP["warmup_ratio"])
    values["scheduler"] = two.selectbox("Scheduler", SCHEDULERS, key="train_scheduler", help=HELP["scheduler"])
    values["weight_decay"] = three.number_input("Weight decay", value=DEFAULTS.weight_decay, min_value=0.0, step=0.01, key="train_weight_decay", help=HELP["weight_decay"])
    values["dropout"] = four.number_input("Dropout", value=DEFAULTS.dropout, min_value=0.0, max_value=0.99, step=0.05, key="train_dropout", help=HELP["dropout"])
    one, two, three, four = st.columns(4)
    values["max_length"] = one.number_input("Max sequence length", value=DEFAULTS.max_length, min_value=8, step=16, key="train_max_length", help=HELP["max_length"])
    values["grad_accum"] = two.number_input("Gradient accumulation", value=DEFAULTS.grad_accum, min_value=1, step=1, key="train_grad_accum", help=HELP["grad_accum"])
    values["seed"] = three.number_input("Seed", value=DEFAULTS.seed, min_value=0, step=1, key="train_seed", help=HELP["seed"])
    values["max_rows"] = four.number_input("Max rows (0 = all)", value=DEFAULTS.max_rows, min_value=0, step=100, key="train_max_rows", help=HELP["max_rows"])
    one, two, three, _ = st.columns(4)
    values["eval_steps"] = one.number_input("Evaluate every N steps", value=DEFAULTS.eval_steps, min_value=1, step=10, key="train_eval_steps", help=HELP["eval_steps"])
    values["logging_steps"] = two.number_input("Log every N steps", value=DEFAULTS.logging_steps, min_value=1, step=5, key="train_logging_steps", help=HELP["logging_steps"])
    values["group_by_length"] = three.checkbox("Group batches by length", value=DEFAULTS.group_by_length, key="train_group_by_length", help=HELP["group_by_length"])
    return values


def strategy_options() -> dict:
    values: dict = {}
    values["strategy"] = st.radio(
        "Fine-tuning strategy", STRATEGIES, horizontal=True, key="train_strategy", help=HELP["strategy"],
        format_func={"full": "full", "head": "head only", "freeze": "freeze bottom N layers", "lora": "LoRA"}.get,
    )
    if values["strategy"] == "freeze":
        values["freeze_layers"] = st.number_input("Layers to freeze", value=2, min_value=0, step=1, key="train_freeze_layers", help=HELP["freeze_layers"])
    if values["strategy"] == "lora":
        one, two, three, four = st.columns(4)
        values["lora_r"] = one.number_input("r", value=DEFAULTS.lora_r, min_value=1, step=1, key="train_lora_r", help=HELP["lora_r"])
        values["lora_alpha"] = two.number_input("alpha", value=DEFAULTS.lora_alpha, min_value=1, step=1, key="train_lora_alpha", help=HELP["lora_alpha"])
        values["lora_dropout"] = three.number_input("LoRA dropout", value=DEFAULTS.lora_dropout, min_value=0.0, max_value=0.99, step=0.05, key="train_lora_dropout", help=HELP["lora_dropout"])
        values["lora_targets"] = four.text_input("Target modules", value=",".join(DEFAULTS.lora_targets), key="train_lora_targets", help=HELP["lora_targets"])
    return values


def build_config() -> RunConfig | None:
    from core.tasks import TASKS

    values: dict = {}
    values["name"] = st.text_input("Run name", value=DEFAULTS.name, key="train_name", help=HELP["name"])
    values["task"] = st.selectbox("Task", list(TASKS), format_func=lambda key: TASKS[key].title, key="train_task", help=HELP["task"])
    values["model"] = model_picker()
    values["dataset"], values["text_column"], values["label_column"] = dataset_picker()
    st.subheader("Hyperparameters")
    values.update(hyperparameters())
    st.subheader("What trains")
    values.update(strategy_options())
    st.subheader("Hardware")
    one, two = st.columns(2)
    values["device"] = one.selectbox("Device", ["auto", "cpu", "cuda"], key="train_device", help=HELP["device"])
    values["precision"] = two.selectbox("Precision", PRECISIONS, key="train_precision", help=HELP["precision"])
    try:
        return RunConfig.from_dict(values)
    except UserError as problem:
        st.error(str(problem))
        return None


config = build_config()
if config is not None:
    problems = config.validate()
    for problem in problems:
        st.error(problem)
    st.subheader("Launch")
    left, right = st.columns([1, 2])
    left.download_button("Download config (YAML)", config.to_yaml(), file_name="run.yaml", mime="application/x-yaml", key="train_download")
    right.code(config.cli_command("run.yaml"), language="bash")
    if st.button("Start training", type="primary", disabled=bool(problems), key="train_start"):
        from core.jobs import submit

        try:
            with st.spinner("Checking the model and the data, then queueing…"):
                run = submit(config, open_store())
        except UserError as problem:
            st.error(str(problem))
        else:
            st.session_state["runs_selected_ids"] = [run.id]
            st.success(f"Run {run.id} is {run.status} on {run.device}.")
            st.page_link("pages/views/runs.py", label="Watch it on the Runs page", icon="📈")
