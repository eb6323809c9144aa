"""Every plotly figure the pages draw, built from plain data; the one place that knows colours."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D")

# The curves a person watches while a classifier trains: (panel title, metric names drawn in it).
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Loss", ("train_loss", "eval_loss")),
    ("Validation accuracy and macro-F1", ("eval_accuracy", "eval_f1_macro")),
    ("Learning rate", ("learning_rate",)),
)
DASHES = {"train_loss": "solid", "eval_loss": "dash", "eval_accuracy": "solid", "eval_f1_macro": "dot", "learning_rate": "solid"}


def training_curves(metrics: pd.DataFrame, labels: dict[str, str], log_loss: bool = False) -> go.Figure:
    """Loss, accuracy/F1 and learning-rate panels; one colour per run so several runs overlay."""
    figure = make_subplots(rows=1, cols=len(CURVE_PANELS), subplot_titles=[title for title, _ in CURVE_PANELS])
    for column, (_, names) in enumerate(CURVE_PANELS, start=1):
        for run_index, (run_id, label) in enumerate(labels.items()):
            colour = PALETTE[run_index % len(PALETTE)]
            for name in names:
                series = metrics[(metrics["run_id"] == run_id) & (metrics["name"] == name)]
                if series.empty:
                    continue
                # A resumed run may log a step twice; the latest value is the true one.
                series = series.drop_duplicates("step", keep="last")
                figure.add_trace(
                    go.Scatter(
                        x=series["step"], y=series["value"], mode="lines+markers" if len(series) < 30 else "lines",
                        name=f"{label} · {name}" if len(labels) > 1 else name,
                        line={"color": colour, "dash": DASHES.get(name, "solid")},
                        legendgroup=run_id,
                        hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4g}}<extra>{label}</extra>",
                    ),
                    row=1, col=column,
                )
    if log_loss:
        figure.update_yaxes(type="log", row=1, col=1)
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return figure


def report_table(report: dict) -> pd.DataFrame:
    """sklearn's classification report dict as a table (classes, then accuracy and the averages)."""
    rows = []
    for name, values in report.items():
        if isinstance(values, dict):
            rows.append({"class": name, **values})
        else:
            rows.append({"class": name, "f1-score": values})
    table = pd.DataFrame(rows).set_index("class")
    return table[[c for c in ("precision", "recall", "f1-score", "support") if c in table.columns]]


def before_after_table(before: dict | None, after: dict | None) -> pd.DataFrame:
    """Accuracy and macro/weighted F1 before the first update and after training, side by side."""
    def headline(report: dict | None) -> dict[str, float]:
        if not report:
            return {}
        return {
            "accuracy": report.get("accuracy"),
            "macro F1": report.get("macro avg", {}).get("f1-score"),
            "weighted F1": report.get("weighted avg", {}).get("f1-score"),
        }

    return pd.DataFrame({"before fine-tuning": headline(before), "after fine-tuning": headline(after)})
