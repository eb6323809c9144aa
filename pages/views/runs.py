"""Runs: every run with status, progress and ETA; live curves; cancel, resume; compare runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import jobs, run_files, viz
from core.config import RunConfig
from core.errors import UserError
from core.store import Run
from core.tasks import TASKS
from pages import PAGE_ICONS, STATUS_ICONS, duration, open_store, run_label, since

LIVE_REFRESH_SECONDS = 1.0
# Slow ticks while idle still notice a run started from another tab or the CLI.
IDLE_REFRESH_SECONDS = 5.0

st.title("Runs")
store = open_store()


def status_text(run: Run) -> str:
    text = f"{STATUS_ICONS.get(run.status, '')} {run.status}"
    if jobs.stall_of(run):
        text += " · stalled"
    if run.warning:
        text += " · warning"
    return text


def runs_table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "status": [status_text(r) for r in runs],
            "name": [r.name for r in runs],
            "id": [r.id for r in runs],
            "sweep": [f"trial {r.trial} · {r.sweep_id}" if r.sweep_id else "" for r in runs],
            "progress": [r.progress for r in runs],
            "step": [f"{r.step}/{r.max_steps}" if r.max_steps else "—" for r in runs],
            "ETA": [duration(r.eta_seconds()) for r in runs],
            "device": [r.device for r in runs],
            "model": [r.model for r in runs],
            "dataset": [r.dataset for r in runs],
            "created": [since(r.created_at) for r in runs],
        }
    )


def actions(run: Run) -> None:
    left, right, _ = st.columns([1, 1, 4])
    if run.status in ("queued", "running"):
        if left.button(
            "Cancel", key=f"runs_cancel_{run.id}", help="Stop this run; a running one saves a checkpoint so it can resume."
        ):
            act(jobs.cancel, run.id)
    if run.status in jobs.RESUMABLE:
        if right.button(
            "Resume",
            key=f"runs_resume_{run.id}",
            help="Queue it again; it continues from its last checkpoint with optimizer and scheduler state.",
        ):
            act(jobs.resume, run.id)


def act(action, run_id: str) -> None:
    try:
        action(run_id, store)
    except UserError as problem:
        st.error(str(problem))
    else:
        st.rerun()


def run_details(run: Run) -> None:
    st.subheader(run_label(run))
    if run.status == "running":
        eta = run.eta_seconds()
        st.progress(run.progress, text=f"step {run.step} of {run.max_steps or '?'} · ETA {duration(eta)}")
        stall = jobs.stall_of(run)
        if stall:
            st.warning(stall.sentence())
    elif run.status == "queued":
        st.info("Queued: it starts when the device is free.")
    if run.sweep_id:
        st.caption(f"Trial {run.trial} of sweep {run.sweep_id}: the Sweeps page compares it with the other trials.")
    if (run.slots or 1) > 1:
        st.caption(parallel_sentence(run))
    if run.status == "failed" and run.error:
        st.error(f"This run failed. {run.error}")
    elif run.status == "pruned":
        st.warning(f"Its sweep stopped this trial early (pruned). {run.error or ''} Resume it to train it to the end.")
    elif run.error:
        st.warning(run.error)
    if run.warning:
        st.warning(run.warning)
    actions(run)


def parallel_sentence(run: Run) -> str:
    """A run of several processes: how many, on which GPUs, and the batch each takes against the global batch."""
    config = RunConfig.from_yaml(run.config)
    where = f" on GPUs {run.gpus}" if run.gpus else ""
    global_batch = config.batch_size * run.slots * config.grad_accum
    return (
        f"Data-parallel over {run.slots} processes{where} (world size {run.slots}): each takes batches of "
        f"{config.batch_size}; one update sees {global_batch} examples (global batch)."
    )


def curves(selected: list[Run]) -> None:
    metrics = store.metrics([r.id for r in selected])
    if metrics.empty:
        st.info("No metrics yet: the first values appear after the step-0 evaluation.")
        return
    log_scale = st.session_state.get("runs_log_loss", False)
    labels = {r.id: f"{r.name} ({r.id[-4:]})" for r in selected}
    st.plotly_chart(viz.training_curves(metrics, labels, log_loss=log_scale), key="runs_curves", width="stretch")


def sample_generations(run: Run) -> None:
    """The answers to a few fixed validation prompts at every evaluation, one row per step: from the pretrained
    model's ramble at step 0 to the task's answer. Shown for runs that write them (generating tasks)."""
    samples = run_files.generations(run)
    if samples.empty:
        return
    st.markdown("**Sample answers at each evaluation**")
    prompts = list(dict.fromkeys(samples["prompt"]))
    references = samples.drop_duplicates("prompt").set_index("prompt")["reference"]
    st.markdown(
        "\n".join(f"{number}. {shortened(prompt)} → *{references[prompt]}*" for number, prompt in enumerate(prompts, start=1))
    )
    samples = samples.assign(number=samples["prompt"].map({prompt: f"answer {n}" for n, prompt in enumerate(prompts, 1)}))
    table = samples.pivot_table(index="step", columns="number", values="answer", aggfunc="last", sort=False)
    table.index = [f"step {step}" for step in table.index]
    st.table(table.fillna(""))
    seconds = samples.groupby("step")["seconds"].first()
    st.caption(
        f"Greedy answers (the reference in italics above), generated at each evaluation ({seconds.mean():.1f} s per "
        "evaluation, with the prompts the scores use); the curves' exact match and token F1 come from the same answers."
    )


SHOWN_PROMPT_CHARACTERS = 160


def shortened(prompt: str) -> str:
    """A prompt on one line, cut to SHOWN_PROMPT_CHARACTERS (a review can run to pages)."""
    line = " ".join(prompt.split())
    return line if len(line) <= SHOWN_PROMPT_CHARACTERS else line[: SHOWN_PROMPT_CHARACTERS - 1] + "…"


def reports(run: Run) -> None:
    before, after = run_files.test_report(run, "before"), run_files.test_report(run, "after")
    if (not before and not after) or run.task not in TASKS:
        return
    task = TASKS[run.task]
    st.markdown("**Test split: before vs after fine-tuning**")
    st.dataframe(viz.before_after_table(task.headline(before or {}), task.headline(after or {})), width="content")
    for stage, report in (("after fine-tuning", after), ("before fine-tuning (step 0)", before)):
        per_class = task.class_report(report or {})
        if per_class:
            with st.expander(f"Classification report {stage}"):
                st.dataframe(viz.report_table(per_class), width="content")


def export_section(run: Run) -> None:
    """Download the final model, and for tasks ONNX Runtime serves an int8 ONNX variant whose cost and
    benefit are measured first (once per run: the figures are those of the file the download holds)."""
    from core.export import existing_report, export_zip, measure_quantization

    with st.expander("Export for deployment"):
        st.caption(
            "A Hugging Face model folder (safetensors) with a model card that shows how to load it. "
            f"Same as `python -m core export {run.id} OUT_DIR [--int8]`."
        )
        report_key, zip_key = f"runs_int8_{run.id}", f"runs_zip_{run.id}"
        with_int8 = False
        if TASKS[run.task].onnx_model_class:
            left, right = st.columns(2)
            if left.button(
                "Measure int8 (ONNX)",
                key=f"runs_measure_{run.id}",
                help="Export the model to ONNX, quantize it to int8 with ONNX Runtime, and time and score "
                "both on this CPU on the run's test split (about half a minute for MiniLM).",
            ):
                try:
                    with st.spinner("Exporting to ONNX, quantizing and timing fp32 vs int8…"):
                        st.session_state[report_key] = measure_quantization(run)
                except UserError as problem:
                    st.error(str(problem))
            report = st.session_state.get(report_key) or existing_report(run)
            if report:
                st.dataframe(report.table(), width="content")
                st.caption(
                    f"int8 predicts what fp32 predicts for {report.agreement:.1%} of {report.scored} test predictions. "
                    f"Latency is the median on this CPU ({report.threads} threads); fp32 is the PyTorch folder, "
                    f"int8 the ONNX Runtime one, which `{TASKS[run.task].onnx_model_class}` loads."
                )
            with_int8 = right.checkbox(
                "Include the int8 variant",
                key=f"runs_with_int8_{run.id}",
                disabled=report is None,
                help="Measure it first, so you know what you trade.",
            )
        if st.button("Prepare download", key=f"runs_prepare_{run.id}"):
            try:
                with st.spinner("Writing the model folder and zipping it…"):
                    st.session_state[zip_key] = export_zip(run.id, int8=with_int8, store=store)
            except UserError as problem:
                st.error(str(problem))
        if zip_key in st.session_state:
            st.download_button(
                "Download model (zip)",
                st.session_state[zip_key],
                file_name=f"{run.id}.zip",
                mime="application/zip",
                key=f"runs_download_{run.id}",
            )


# What each attack space perturbs, as the robustness check's caption and picker say it.
ATTACKED_INPUTS = {"embeddings": "word embeddings", "pixel_values": "pixels"}


def robustness_section(run: Run) -> None:
    """Accuracy under FGSM/PGD attack, before and after fine-tuning, on the run's test split."""
    from core.adversarial import evaluate_robustness

    task = TASKS[run.task]
    with st.expander("Robustness check"):
        left, middle, right, go = st.columns(4)
        space = left.selectbox(
            "Attack the",
            task.attack_spaces,
            key=f"runs_attack_space_{run.id}",
            format_func=ATTACKED_INPUTS.get,
            disabled=len(task.attack_spaces) == 1,
            help="Which input the attack perturbs: a fusion classifier's image or its text.",
        )
        scored = "each word's tag" if task.view == "tags" else "the prediction"
        st.caption(
            f"Attack each test example inside a ball of relative size epsilon around its {ATTACKED_INPUTS[space]} "
            f"and count how often {scored} survives. Compare an adversarially trained run with a plain one."
        )
        method = middle.selectbox(
            "Attack",
            ("fgm", "pgd"),
            key=f"runs_attack_{run.id}",
            format_func={"fgm": "FGSM (one step)", "pgd": "PGD (5 steps)"}.get,
        )
        epsilon = right.number_input(
            "Epsilon (relative)",
            value=0.05,
            step=0.01,
            format="%.3f",
            key=f"runs_attack_eps_{run.id}",
            help="Perturbation size relative to the input's own size (0.05 = 5 %).",
        )
        if go.button("Run the check", key=f"runs_attack_go_{run.id}"):
            try:
                with st.spinner("Attacking the test split (up to 200 examples)…"):
                    st.session_state[f"runs_robustness_{run.id}"] = {
                        stage: evaluate_robustness(run, stage, method=method, epsilon=epsilon, space=space)
                        for stage in ("before", "after")
                    }
            except UserError as problem:
                st.error(str(problem))
        results = st.session_state.get(f"runs_robustness_{run.id}")
        if results:
            st.dataframe(viz.robustness_table(results), width="content")
            shown = next(iter(results.values()))
            unit = "words" if task.view == "tags" else "examples"
            st.caption(f"{shown['examples']} {unit}, attacked in the {ATTACKED_INPUTS[shown['space']]}.")


def reconcile_or_warn() -> None:
    """Mark lost trainers; a store that cannot be written is said once, and the runs are still shown."""
    try:
        jobs.reconcile(store)
    except UserError as problem:
        st.warning(str(problem))


def live_view(selected_ids: list[str]) -> None:
    reconcile_or_warn()
    runs = store.list()
    st.dataframe(
        runs_table(runs),
        hide_index=True,
        width="stretch",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")},
    )
    selected = [run for run in runs if run.id in selected_ids]
    if not selected:
        return
    if len(selected) == 1:
        run_details(selected[0])
    curves(selected)
    if len(selected) == 1:
        sample_generations(selected[0])
        reports(selected[0])
        if selected[0].status == "completed":
            if TASKS[selected[0].task].attack_spaces:
                robustness_section(selected[0])
            export_section(selected[0])
        with st.expander("Log (last lines)", expanded=selected[0].status == "failed"):
            st.code(jobs.log_tail(selected[0].id, 40) or "(empty)", language="text")
        with st.expander("Config"):
            st.code(selected[0].config, language="yaml")
    else:
        st.markdown("**Config differences**")
        differences = run_files.config_differences(selected)
        if differences.empty:
            st.caption("The selected runs have identical configs.")
        else:
            st.dataframe(differences, width="stretch")


all_runs = store.list()
if not all_runs:
    st.info("No runs yet. Start one on the Train page.")
    st.page_link("pages/views/train.py", label="Go to Train", icon=PAGE_ICONS["pages/views/train.py"])
    st.stop()

ids = [run.id for run in all_runs]
by_id = {run.id: run for run in all_runs}
remembered = [run_id for run_id in st.session_state.get("runs_selected_ids", []) if run_id in by_id]
selected_ids = st.multiselect(
    "Runs to show (pick several to overlay their curves and compare configs)",
    ids,
    default=remembered or ids[:1],
    format_func=lambda run_id: run_label(by_id[run_id]),
    key="runs_selection",
)
st.session_state["runs_selected_ids"] = selected_ids
st.toggle("Log-scale loss", key="runs_log_loss", help="Loss often falls by orders of magnitude; a log scale shows late progress.")

active = any(run.status in ("queued", "running") for run in all_runs)
# Only the live part reruns on a timer: fast while something trains, slow otherwise.
st.fragment(run_every=LIVE_REFRESH_SECONDS if active else IDLE_REFRESH_SECONDS)(live_view)(selected_ids)
