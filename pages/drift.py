"""Inspect's drift panel: one example's map under every stage a run kept, alone or beside another run's.

It draws what `core.explain.drift` computes; the text, image and NER views call `drift_panel` under their maps.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import viz
from core.errors import UserError
from core.store import Run


def drift_panel(run: Run, example, target, settings: dict[str, Any], context: tuple, word: int | None = None) -> None:
    """The example's map under every kept stage of the run (`core.explain.drift`): when did the model start looking
    at this unit? A heat map of units × stages, and how fast the map settled; optionally beside another run's."""
    from core.explain.drift import attribution_drift, drift_partners, drift_side_by_side

    with st.container(border=True):
        st.markdown("**Drift over training** — the same map under every stage the run kept, before to after.")
        partners = {other.id: other for other in drift_partners(run)}
        beside = st.selectbox(
            "Beside it", [None, *partners], key="inspect_drift_beside",
            format_func=lambda key: "no other run" if key is None else f"{key} · {partners[key].name}",
            help="Another completed run of this task on the same base model (LoRA against full, plain against "
            "adversarial): the same example, class and unit, on its own checkpoints.",
        )  # fmt: skip
        context = (*context, settings["method"], str(settings["params"]), target, word, beside)
        if st.button("Explain under every stage", key="inspect_drift_go"):
            bar = st.progress(0.0, text="Explaining under each stage…")

            def report(done: float, text: str) -> None:
                bar.progress(done, text=text)

            try:
                if beside:
                    drifts = drift_side_by_side(run.id, beside, example, settings["method"], target, word=word,
                                                progress=report, **settings["params"])  # fmt: skip
                else:
                    drifts = (attribution_drift(run.id, example, settings["method"], target, word=word, progress=report,
                                                **settings["params"]),)  # fmt: skip
                st.session_state["inspect_drift_result"] = (context, drifts)
            except UserError as problem:
                st.error(str(problem))
            bar.empty()
        remembered = st.session_state.get("inspect_drift_result")
        if not remembered or remembered[0] != context:
            return
        drifts = remembered[1]
        for drift, slot in zip(drifts, st.columns(len(drifts))):
            if len(drifts) > 1:
                slot.markdown(f"Run **{drift.run_id}**")
            slot.plotly_chart(viz.drift_heatmap(drift), key=f"inspect_drift_heatmap_{drift.run_id}", width="stretch")
        st.plotly_chart(viz.drift_settling(*drifts), key="inspect_drift_settling", width="stretch")
        st.caption(
            f"Explaining '{drifts[0].target_label}' under each kept stage. "
            + " ".join(f"In run {drift.run_id}, {settled_sentence(drift)}" for drift in drifts)
            + " Keep more checkpoints (keep_checkpoints: 0) for a finer view."
        )


def settled_sentence(drift) -> str:
    if drift.settled_step is None:
        return f"'{drift.top_unit}' is not the top unit at the end (rank {drift.top_ranks[-1]})."
    return f"'{drift.top_unit}' is first from step {drift.settled_step} on."
