"""Every plotly figure the pages draw, built from plain data; the one place that knows colours."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, sample_colorscale, unlabel_rgb
from plotly.subplots import make_subplots

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D")

# The curves a person watches while a model trains: (panel title, metric names drawn in it).
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Loss", ("train_loss", "eval_loss")),
    ("Validation accuracy and macro-F1", ("eval_accuracy", "eval_f1_macro")),
    (
        "Validation retrieval recall@1 and zero-shot accuracy",
        ("eval_recall@1", "eval_image_to_text_recall@1", "eval_text_to_image_recall@1", "eval_zero_shot_accuracy"),
    ),
    ("Validation answers: exact match and token F1", ("eval_exact_match", "eval_token_f1")),
    ("Validation perplexity", ("eval_perplexity",)),
    ("Temperature", ("temperature",)),
    ("Learning rate", ("learning_rate",)),
    ("AdaLoRA rank budget", ("adalora_rank_budget",)),
)
# Drawn even before their first value, so a starting run shows where its curves will appear.
ALWAYS_DRAWN = ("Loss", "Learning rate")
DASHES = {
    "train_loss": "solid",
    "eval_loss": "dash",
    "eval_accuracy": "solid",
    "eval_f1_macro": "dot",
    "learning_rate": "solid",
    "eval_recall@1": "solid",
    "eval_image_to_text_recall@1": "dash",
    "eval_text_to_image_recall@1": "dot",
    "eval_zero_shot_accuracy": "dashdot",
    "eval_exact_match": "solid",
    "eval_token_f1": "dot",
    "eval_perplexity": "dash",
}


def training_curves(metrics: pd.DataFrame, labels: dict[str, str], log_loss: bool = False) -> go.Figure:
    """Loss and learning rate, plus each panel the runs log (accuracy/F1, retrieval, temperature, AdaLoRA budget).

    One run: one colour per metric, so train and eval loss differ at a glance (dashes stay, for
    print). Several runs: one colour per run, the dash telling the metrics apart. Each panel has its
    own legend under it, listing only what that panel draws.
    """
    logged = set(metrics["name"])
    panels = tuple(panel for panel in CURVE_PANELS if panel[0] in ALWAYS_DRAWN or logged & set(panel[1]))
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for title, _ in panels])
    metric_colours = colours_by_metric([name for _, names in panels for name in names if name in logged])
    entries = [0] * len(panels)
    for column, (_, names) in enumerate(panels, start=1):
        for run_index, (run_id, label) in enumerate(labels.items()):
            for name in names:
                series = metrics[(metrics["run_id"] == run_id) & (metrics["name"] == name)]
                if series.empty:
                    continue
                # A resumed run may log a step twice; the latest value is the true one.
                series = series.drop_duplicates("step", keep="last")
                colour = metric_colours[name] if len(labels) == 1 else PALETTE[run_index % len(PALETTE)]
                figure.add_trace(
                    go.Scatter(
                        x=series["step"],
                        y=series["value"],
                        mode="lines+markers" if len(series) < 30 else "lines",
                        name=f"{label} · {name}" if len(labels) > 1 else name,
                        line={"color": colour, "dash": DASHES.get(name, "solid")},
                        legend=legend_name(column),
                        hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4g}}<extra>{label}</extra>",
                    ),
                    row=1,
                    col=column,
                )
                entries[column - 1] += 1
    if log_loss:
        figure.update_yaxes(type="log", row=1, col=1)
    figure.update_xaxes(title_text="step")
    legend_room = LEGEND_ENTRY_PX * max(entries, default=0)
    figure.update_layout(height=CURVES_PLOT_PX + legend_room, margin={"l": 10, "r": 10, "t": 40, "b": 70 + legend_room})
    for column in range(1, len(panels) + 1):
        figure.update_layout({legend_name(column): panel_legend(figure, column)})
    return figure


LEGEND_ENTRY_PX = 20  # the height one legend line takes under the curves
CURVES_PLOT_PX = 320  # the curves' own height, titles and axes included, without their legends


def colours_by_metric(names: list[str]) -> dict[str, str]:
    """A distinct palette colour for each metric drawn, in panel order (the first eight never repeat)."""
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(dict.fromkeys(names))}


def legend_name(column: int) -> str:
    """Plotly's name for the legend of one subplot column: legend, legend2, legend3…"""
    return "legend" if column == 1 else f"legend{column}"


def panel_legend(figure: go.Figure, column: int) -> dict:
    """A vertical legend just under one panel's x axis title, aligned with the panel's left edge."""
    axis = figure.layout["xaxis" if column == 1 else f"xaxis{column}"]
    return {"x": axis.domain[0], "xanchor": "left", "y": -0.25, "yanchor": "top", "orientation": "v", "bgcolor": "rgba(0,0,0,0)"}


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


def robustness_table(results: dict[str, dict]) -> pd.DataFrame:
    """Clean and attacked accuracy per model stage, and how much the attack costs."""
    return pd.DataFrame(
        {
            f"{stage} fine-tuning": {
                "clean accuracy": r["clean_accuracy"],
                "accuracy under attack": r["attacked_accuracy"],
                "drop": r["clean_accuracy"] - r["attacked_accuracy"],
            }
            for stage, r in results.items()
        }
    )


def before_after_table(before: dict[str, float | None], after: dict[str, float | None]) -> pd.DataFrame:
    """A task's headline numbers (`Task.headline` of each report) before the first update and after training."""
    return pd.DataFrame({"before fine-tuning": before, "after fine-tuning": after})


# --- Inspect: confusion matrix, class probabilities, token attribution maps ----------------------

# Diverging colours for signed attributions (ColorBrewer RdBu ends, readable for most colour-blind
# people): red supports the explained class, blue speaks against it.
ATTRIBUTION_POSITIVE = (214, 96, 77)
ATTRIBUTION_NEGATIVE = (67, 147, 195)
ATTRIBUTION_MAGNITUDE = (153, 112, 171)  # unsigned methods (saliency): how much, not which way


CONFUSION_COLOURSCALE = "Blues"
DARK_TEXT, LIGHT_TEXT = "#1f2d3d", "#ffffff"


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance (0 black … 1 white) of an 'rgb(r, g, b)' or '#rrggbb' colour."""
    red, green, blue = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)

    def linear(channel: float) -> float:
        channel /= 255
        return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two colours, from 1 (same) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def readable_text_colour(fill: str) -> str:
    """Dark or light text, whichever stands out more against `fill` (a fixed count threshold left
    white numbers on mid-blue cells that white barely contrasts with)."""
    return max((DARK_TEXT, LIGHT_TEXT), key=lambda text: contrast_ratio(text, fill))


def confusion_matrix(counts: pd.DataFrame) -> go.Figure:
    """A clickable confusion matrix: one square scatter marker per (gold, predicted) cell.

    Drawn as a scatter, not a heatmap, because Streamlit's selection events report a clicked
    scatter point (x = predicted, y = gold) but nothing for a heatmap cell. Rows are gold classes,
    columns predicted classes, both in `counts`' order; colour and label give the count.
    """
    gold_names = [str(name) for name in counts.index]
    predicted_names = [str(name) for name in counts.columns]
    xs, ys, values = [], [], []
    for gold in gold_names:
        for predicted in predicted_names:
            xs.append(predicted)
            ys.append(gold)
            values.append(int(counts.loc[gold, predicted]) if gold in counts.index else 0)
    n = max(len(gold_names), len(predicted_names), 1)
    height = int(min(720, max(300, 90 + 64 * n)))
    cell = (height - 110) / n
    top = max(values) if values and max(values) > 0 else 1
    fills = sample_colorscale(CONFUSION_COLOURSCALE, [value / top for value in values])
    text_colours = [readable_text_colour(fill) for fill in fills]
    figure = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            text=[str(v) for v in values],
            textfont={"color": text_colours, "size": int(max(9, min(16, cell * 0.3)))},
            marker={
                "symbol": "square",
                "size": max(8, cell * 0.92),
                "color": values,
                "colorscale": CONFUSION_COLOURSCALE,
                "cmin": 0,
                "cmax": top,
                "line": {"width": 1, "color": "#c8d1dc"},
                "showscale": False,
            },
            customdata=[[y, x] for x, y in zip(xs, ys)],
            hovertemplate="gold %{y}<br>predicted %{x}<br>%{text} example(s): click to list them<extra></extra>",
            name="cells",
        )
    )
    axis = {"type": "category", "showgrid": False, "zeroline": False}
    figure.update_xaxes(title_text="predicted", categoryorder="array", categoryarray=predicted_names, side="top", **axis)
    figure.update_yaxes(title_text="gold", categoryorder="array", categoryarray=gold_names, autorange="reversed", **axis)
    figure.update_layout(
        height=height,
        width=height + 140,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        plot_bgcolor="white",
        clickmode="event+select",
        dragmode=False,
        showlegend=False,
    )
    return figure


def probability_bars(
    names: list[str], probabilities: list[float], predicted: str | None = None, gold: str | None = None
) -> go.Figure:
    """Horizontal bars of the class probabilities; the predicted class coloured, the gold one marked."""
    colours = [PALETTE[0] if name == predicted else "#B8C4D0" for name in names]
    labels = [f"{name} (gold)" if name == gold else name for name in names]
    figure = go.Figure(
        go.Bar(
            x=list(probabilities),
            y=labels,
            orientation="h",
            marker={"color": colours},
            text=[f"{p:.1%}" for p in probabilities],
            textposition="auto",
            hovertemplate="%{y}: %{x:.4f}<extra></extra>",
        )
    )
    figure.update_xaxes(range=[0, 1], autorange=False, fixedrange=True, tickformat=".0%", title_text="probability")
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_layout(height=int(90 + 30 * len(names)), margin={"l": 10, "r": 10, "t": 10, "b": 10}, showlegend=False)
    return figure


def attribution_colour(score: float, scale: float, signed: bool = True) -> str:
    """Background for one unit: red for support, blue against (unsigned: one hue), opacity by |score| / scale."""
    import math

    if not scale or not math.isfinite(score):
        return "rgba(0,0,0,0)"
    strength = min(1.0, abs(score) / scale)
    red, green, blue = ATTRIBUTION_POSITIVE if score >= 0 or not signed else ATTRIBUTION_NEGATIVE
    if not signed:
        red, green, blue = ATTRIBUTION_MAGNITUDE
    return f"rgba({red},{green},{blue},{0.85 * strength:.3f})"


NEWLINE = "Ċ"  # byte-level BPE's newline: a piece starting with it starts a word (the next line's)
# Byte-level BPE (GPT-2, LLaMA 3, SmolLM) and SentencePiece mark a word's start.
WORD_START_MARKS = ("Ġ", "▁", NEWLINE)


def readable_units(units: list[str]) -> list[tuple[bool, str]]:
    """(starts a word, text to show) for each token as people read it: a WordPiece continuation (##…) hugs the
    piece before it; in byte-level BPE and SentencePiece a marked piece ("Ġfilm", "▁film") starts a word, shown
    without its mark, and an unmarked one continues the word ("a" "ctor")."""
    marked = any(unit.startswith(WORD_START_MARKS) for unit in units)
    readable = []
    for index, unit in enumerate(units):
        if marked:
            begins = index == 0 or unit.startswith(WORD_START_MARKS) or units[index - 1].endswith(NEWLINE)
            readable.append((begins, unit.replace(NEWLINE, "").lstrip("".join(WORD_START_MARKS)) or unit))
        else:
            readable.append((not unit.startswith("##"), unit))
    return readable


def token_attribution_html(
    units: list[str], scores: list[float], *, caption: str = "", signed: bool = True, explained: str = "the class"
) -> str:
    """The text as coloured units, scaled by the largest |score|, with the exact value on hover.

    Signed scores use a diverging scale (red supports the explained class, blue speaks against
    it); unsigned ones (saliency) one hue for the magnitude. Units come from user text: every one
    is HTML-escaped, in the body and in the title attribute.
    """
    import math
    from html import escape

    finite = [abs(s) for s in scores if math.isfinite(s)]
    scale = max(finite) if finite else 0.0
    spans = []
    for (starts_word, shown), score in zip(readable_units(units), scores):
        label = escape(shown, quote=True)
        spans.append(
            (" " if starts_word and spans else "") + f'<span class="attribution-unit" title="{label}: {score:+.4g}" '
            f'style="background-color:{attribution_colour(score, scale, signed)};padding:1px 3px;margin:1px 0;'
            f'border-radius:3px;display:inline-block;white-space:pre">{label}</span>'
        )

    def swatch(colour: tuple[int, int, int]) -> str:
        return (
            f'<span style="background-color:rgba({colour[0]},{colour[1]},{colour[2]},0.85);'
            'padding:0 6px;border-radius:3px">&nbsp;</span>'
        )

    if signed:
        legend = f"{swatch(ATTRIBUTION_POSITIVE)} supports {escape(explained)} {swatch(ATTRIBUTION_NEGATIVE)} speaks against it"
    else:
        legend = f"{swatch(ATTRIBUTION_MAGNITUDE)} influence (no direction)"
    legend += f" · full colour = {scale:.3g} · hover a token for its exact value"
    head = f'<div style="font-size:0.85em;opacity:0.8;margin-bottom:2px">{escape(caption)}</div>' if caption else ""
    return (
        f'<div class="attribution-map" style="line-height:1.9;font-size:1rem;margin-bottom:0.5rem">{head}'
        f"<div>{''.join(spans)}</div>"
        f'<div style="font-size:0.75em;opacity:0.7;margin-top:2px">{legend}</div></div>'
    )


# --- images: thumbnails, patch attribution overlays ------------------------------------------


def thumbnail_png(image, size: int = 96) -> bytes:
    """A small PNG of an image (aspect kept, longest side `size`; small images scaled up crisply)."""
    import io

    from PIL import Image

    picture = image.convert("RGB")
    scale = size / max(picture.size)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), resample)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def patch_grid(scores, grid) -> np.ndarray:
    """Row-major patch scores as a (rows, cols) array; `grid` is [rows, cols] from the explanation's params."""
    import numpy as np

    rows, cols = (int(grid[0]), int(grid[1])) if grid else (1, len(scores))
    values = np.asarray(scores, dtype=float)
    if values.size != rows * cols:
        side = round(values.size**0.5)
        rows, cols = (side, side) if side * side == values.size else (1, values.size)
    return values.reshape(rows, cols)


def patch_overlay(
    image, explanation=None, opacity: float = 0.5, *, scores=None, grid=None, signed: bool | None = None, size: int = 256
):
    """The image with one coloured square per patch laid over it: a PIL image of side `size`.

    Diverging scale, as for tokens: red supports the explained class, blue speaks against it, the
    colour's strength is |score| / largest |score|; unsigned methods use one hue. `opacity` (0–1)
    is the strength of the strongest patch. Pass an Explanation (its patches part: scores row-major over
    its layout [rows, cols]), or `scores` and `grid` directly.
    """
    import numpy as np
    from PIL import Image

    if explanation is not None:
        cells = explanation.part("patches")
        scores, grid = cells.scores, cells.layout
        signed = explanation.signed if signed is None else signed
    signed = True if signed is None else signed
    values = patch_grid(scores, grid)
    finite = np.abs(values[np.isfinite(values)])
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    strength = np.clip(np.nan_to_num(np.abs(values) / scale), 0.0, 1.0)
    colours = np.zeros(values.shape + (4,), dtype=np.uint8)
    positive = np.array(ATTRIBUTION_POSITIVE if signed else ATTRIBUTION_MAGNITUDE, dtype=np.uint8)
    negative = np.array(ATTRIBUTION_NEGATIVE if signed else ATTRIBUTION_MAGNITUDE, dtype=np.uint8)
    colours[..., :3] = np.where((values >= 0)[..., None] | (not signed), positive, negative)
    colours[..., 3] = np.round(255 * float(np.clip(opacity, 0.0, 1.0)) * strength).astype(np.uint8)
    base = image.convert("RGB")
    scale_up = size / max(base.size)
    target = (max(1, round(base.width * scale_up)), max(1, round(base.height * scale_up)))
    base = base.resize(target, Image.Resampling.NEAREST if scale_up >= 1 else Image.Resampling.LANCZOS).convert("RGBA")
    # Cells cut at floor(i * side / parts), as core.explain.patches does, so uneven grids line up.
    rows, cols = values.shape
    down = np.diff((np.arange(rows + 1) * target[1]) // rows)
    across = np.diff((np.arange(cols + 1) * target[0]) // cols)
    layer = Image.fromarray(np.repeat(np.repeat(colours, down, axis=0), across, axis=1), mode="RGBA")
    return Image.alpha_composite(base, layer).convert("RGB")


def overlay_legend_html(
    explanation=None, *, signed: bool = True, scale: float | None = None, explained: str = "the class"
) -> str:
    """One line under an overlay: what red and blue mean and the value of full colour."""
    import math

    if explanation is not None:
        signed = explanation.signed
        finite = [abs(s) for s in explanation.part("patches").scores if math.isfinite(s)]
        scale = max(finite) if finite else 0.0

    def swatch(colour: tuple[int, int, int]) -> str:
        return (
            f'<span style="background-color:rgb({colour[0]},{colour[1]},{colour[2]});'
            'padding:0 6px;border-radius:3px">&nbsp;</span>'
        )

    if signed:
        text = f"{swatch(ATTRIBUTION_POSITIVE)} supports {explained} {swatch(ATTRIBUTION_NEGATIVE)} speaks against it"
    else:
        text = f"{swatch(ATTRIBUTION_MAGNITUDE)} influence (no direction)"
    if scale is not None:
        text += f" · full colour = {scale:.3g}"
    return f'<div class="overlay-legend" style="font-size:0.75em;opacity:0.75">{text}</div>'


def modality_shares(explanation) -> go.Figure:
    """One stacked bar: how the total attribution of an explanation splits between its parts (a pair's words and
    patches)."""
    figure = go.Figure()
    names = {"tokens": "words", "patches": "patches"}
    for part, colour in zip(explanation.parts, PALETTE):
        name, share = names[part.input], part.share
        figure.add_trace(
            go.Bar(
                x=[share],
                y=["share"],
                orientation="h",
                name=f"{name} {share:.0%}",
                marker_color=colour,
                hovertemplate=f"{name}: %{{x:.1%}}<extra></extra>",
            )
        )
    figure.update_layout(
        barmode="stack",
        height=110,
        margin={"l": 10, "r": 10, "t": 24, "b": 10},
        title={"text": "Share of the total attribution", "font": {"size": 13}},
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"visible": False},
        legend={"orientation": "h", "y": -0.4},
    )
    return figure


def side_by_side(images: list, gap: int = 8, background: tuple[int, int, int] = (255, 255, 255)):
    """Several PIL images in one row (same height, `gap` pixels apart), e.g. two methods' overlays."""
    from PIL import Image

    if not images:
        raise ValueError("side_by_side needs at least one image")
    height = max(image.height for image in images)
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), background)
    x = 0
    for image in images:
        canvas.paste(image.convert("RGB"), (x, (height - image.height) // 2))
        x += image.width + gap
    return canvas


def image_class_balance(balance: pd.DataFrame) -> go.Figure:
    """Grouped bars of images per class in each split (columns split, label, count)."""
    figure = go.Figure(
        [go.Bar(x=part["label"], y=part["count"], name=name) for name, part in balance.groupby("split", sort=False)]
    )
    figure.update_layout(
        barmode="group",
        title="Images per class in each split",
        xaxis_title="class",
        yaxis_title="images",
        legend_title="split",
        height=340,
    )
    return figure


# --- NER: entity spans ------------------------------------------------------------------------

ENTITY_COLOURS = ("#cfe2ff", "#ffe5b4", "#d1f2d1", "#f8d0d0", "#e5d4f7", "#fff3a3", "#d0f0f0", "#f0d9c8", "#e0e0e0", "#fcd5ec")


def entity_spans_html(tokens: list[str], spans: list[tuple[str, int, int]], types: list[str]) -> str:
    """Tokens with each entity (type, start, end inclusive) as a coloured, labelled span; text escaped."""
    from html import escape

    starts = {start: (kind, end) for kind, start, end in spans}
    parts, index = [], 0
    while index < len(tokens):
        if index in starts:
            kind, end = starts[index]
            colour = ENTITY_COLOURS[types.index(kind) % len(ENTITY_COLOURS)] if kind in types else "#eeeeee"
            words = escape(" ".join(tokens[index : end + 1]))
            parts.append(
                f'<span style="background:{colour};border-radius:4px;padding:1px 4px" title="{escape(kind)}">'
                f'{words} <sub style="font-size:0.7em">{escape(kind)}</sub></span>'
            )
            index = end + 1
        else:
            parts.append(escape(tokens[index]))
            index += 1
    return '<div style="line-height:2">' + " ".join(parts) + "</div>"


# --- image-text pairs: caption lengths --------------------------------------------------------


def caption_lengths(frame: pd.DataFrame) -> go.Figure:
    """Overlaid histograms of words per caption in each split (columns split, text)."""
    words = frame["text"].str.split().str.len()
    figure = go.Figure(
        [go.Histogram(x=words[frame["split"] == name], name=name, opacity=0.6) for name in frame["split"].unique()]
    )
    figure.update_layout(
        barmode="overlay",
        title="Words per caption, by split",
        xaxis_title="words per caption",
        yaxis_title="captions",
        legend_title="split",
        height=340,
    )
    return figure


def delta_note(explanation) -> tuple[str | None, str | None]:
    """(caption, warning) about a method's convergence delta, for every view of every input: the caption states
    delta against f(x) - f(baseline); the warning (None unless the delta is large) says the scores are approximate
    and what to raise. Both None for a method without a delta."""
    if explanation.delta is None:
        return None, None
    difference = explanation.output_difference
    caption = (
        f"Convergence delta {explanation.delta:+.2e} (sum of scores minus the change in the score, "
        f"f(x) − f(baseline) = {difference:+.3g})."
    )
    if not explanation.delta_is_large():
        return caption, None
    knob = "steps" if "steps" in explanation.params else "samples"
    return caption, (
        "The convergence delta is large next to the change in the score: the integral is too coarse, so these "
        f"scores are approximate. Raise the {knob} and explain again."
    )


def answer_attribution_heatmap(prompt_units: list[str], answer_tokens: list[str], rows: list[list[float]]) -> go.Figure:
    """Answer tokens (rows, in order) x prompt tokens (columns): how much each prompt token moved the log-probability
    of each answer token; red raised it, blue lowered it, one colour scale for the whole grid."""
    import numpy as np

    grid = np.asarray(rows, dtype=float)
    scale = float(np.nanmax(np.abs(grid))) if grid.size else 1.0
    words = [text for _, text in readable_units(prompt_units)]
    # Plotly merges equal category labels: number the columns and rows so a repeated word keeps its own cell.
    columns = [f"{index}:{word}" for index, word in enumerate(words)]
    lines = [f"{index}:{token.strip() or repr(token)}" for index, token in enumerate(answer_tokens)]
    figure = go.Figure(
        go.Heatmap(
            z=grid,
            x=columns,
            y=lines,
            zmin=-scale or -1.0,
            zmax=scale or 1.0,
            colorscale=[[0.0, "rgb(33,102,172)"], [0.5, "rgb(247,247,247)"], [1.0, "rgb(178,24,43)"]],
            hovertemplate="answer token %{y}<br>prompt token %{x}<br>%{z:.4f}<extra></extra>",
            colorbar={"title": "attribution"},
        )
    )
    figure.update_yaxes(autorange="reversed", title_text="answer token")
    figure.update_xaxes(title_text="prompt token", tickangle=-60)
    figure.update_layout(height=160 + 28 * len(lines), margin={"l": 10, "r": 10, "t": 20, "b": 120})
    return figure


def faithfulness_curves(cards, titles: dict[str, str]) -> go.Figure:
    """Deletion and insertion curves of each map (one colour per method) beside the random orderings' (grey, dashed)."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=["Deletion: most important removed first", "Insertion: most important put back first"]
    )
    for column, kind in enumerate(("deletion", "insertion"), start=1):
        random = cards[0].random
        figure.add_scatter(
            x=random.fractions, y=getattr(random, kind), mode="lines", line={"color": "#999999", "dash": "dash"},
            name="random order", legendgroup="random", showlegend=column == 1, row=1, col=column,
        )  # fmt: skip
        for index, card in enumerate(cards):
            figure.add_scatter(
                x=card.curves.fractions, y=getattr(card.curves, kind), mode="lines+markers",
                line={"color": PALETTE[index % len(PALETTE)]}, name=titles.get(card.method, card.method),
                legendgroup=card.method, showlegend=column == 1, row=1, col=column,
            )  # fmt: skip
        figure.update_xaxes(title_text="share of units", tickformat=".0%", row=1, col=column)
    figure.update_yaxes(title_text="target probability", row=1, col=1)
    figure.update_layout(height=320, margin={"t": 40, "b": 40})
    return figure


def drift_heatmap(drift) -> go.Figure:
    """One example's attribution under each stage: units across, stages down (training runs top to bottom)."""
    scale = max((abs(value) for row in drift.scores for value in row), default=1.0) or 1.0
    labels = [f"{stage} (step {step})" for stage, step in zip(drift.stages, drift.steps)]
    figure = go.Figure(
        go.Heatmap(
            z=drift.scores, x=list(range(len(drift.units))), y=labels, zmin=-scale, zmax=scale, zmid=0,
            colorscale="RdBu_r", customdata=[drift.units] * len(labels),
            hovertemplate="%{customdata}<br>%{y}<br>score %{z:.3g}<extra></extra>",
        )
    )  # fmt: skip
    figure.update_xaxes(tickmode="array", tickvals=list(range(len(drift.units))), ticktext=drift.units, tickangle=-45)
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=120 + 28 * len(labels), margin={"t": 20, "b": 80})
    return figure


def drift_settling(*drifts) -> go.Figure:
    """Each stage's rank correlation with its run's final map, and the rank of the followed unit, against the step;
    one line per run when runs are set side by side (each on its own checkpoint grid)."""
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=["Spearman correlation with the final map", f"Rank of '{drifts[0].top_unit}' (1 = top)"]
    )
    for drift, colour in zip(drifts, ("#1f77b4", "#d62728")):
        line = {"color": colour}
        figure.add_scatter(x=drift.steps, y=drift.spearman_to_final, mode="lines+markers", name=f"run {drift.run_id}",
                           line=line, legendgroup=drift.run_id, row=1, col=1)  # fmt: skip
        figure.add_scatter(x=drift.steps, y=drift.top_ranks, mode="lines+markers", name=f"run {drift.run_id}", line=line,
                           legendgroup=drift.run_id, showlegend=False, row=1, col=2)  # fmt: skip
    figure.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
    figure.update_yaxes(autorange="reversed", row=1, col=2)
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=280, showlegend=len(drifts) > 1, margin={"t": 40})
    return figure


def data_map(frame: pd.DataFrame, shown: str) -> go.Figure:
    """Data cartography: each training example's variability (x) against its confidence (y), coloured by how often it
    was right, with the region boundaries (`core.dynamics`); `shown` is the column hovered (its text or image)."""
    from core.dynamics import AMBIGUOUS_VARIABILITY, EASY_CONFIDENCE

    figure = go.Figure(
        go.Scattergl(
            x=frame["variability"], y=frame["confidence"], mode="markers",
            marker={"color": frame["correctness"], "colorscale": "RdYlGn", "cmin": 0, "cmax": 1, "size": 6,
                    "colorbar": {"title": "correctness"}},
            customdata=frame["example"], text=frame[shown].astype(str).str.slice(0, 80),
            hovertemplate="example %{customdata}: %{text}<br>confidence %{y:.2f} · variability %{x:.2f}<extra></extra>",
        )
    )  # fmt: skip
    figure.add_vline(x=AMBIGUOUS_VARIABILITY, line={"dash": "dot", "color": "#888"})
    figure.add_shape(type="line", x0=0, x1=AMBIGUOUS_VARIABILITY, y0=EASY_CONFIDENCE, y1=EASY_CONFIDENCE,
                     line={"dash": "dot", "color": "#888"})  # fmt: skip
    for text, x, y in (
        ("easy to learn", 0.02, 0.97),
        ("hard to learn", 0.02, 0.03),
        ("ambiguous", AMBIGUOUS_VARIABILITY + 0.02, 0.5),
    ):
        figure.add_annotation(x=x, y=y, text=text, showarrow=False, xanchor="left", font={"color": "#555"})
    figure.update_layout(
        xaxis_title="variability (std of p(gold) over epochs)", yaxis_title="confidence (mean p(gold))",
        yaxis_range=[-0.02, 1.02], height=460, margin={"t": 20}, dragmode="lasso",
    )  # fmt: skip
    return figure


def mean_patch_map(grid: list[list[float]]) -> go.Figure:
    """One class's mean attribution per patch (rows × cols), red for evidence for the class."""
    import numpy as np

    values = np.asarray(grid, dtype=np.float64)
    scale = float(np.abs(values).max()) or 1.0
    figure = go.Figure(go.Heatmap(z=values, zmin=-scale, zmax=scale, zmid=0, colorscale="RdBu_r", showscale=False))
    figure.update_yaxes(autorange="reversed", showticklabels=False)
    figure.update_xaxes(showticklabels=False)
    figure.update_layout(height=220, margin={"t": 10, "b": 10, "l": 10, "r": 10})
    return figure
