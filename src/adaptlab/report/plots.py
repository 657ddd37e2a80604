"""The report's plots, drawn with matplotlib into PNG bytes the HTML embeds.

Figures are made with :class:`matplotlib.figure.Figure` directly, not pyplot: no global state,
no GUI backend (PNG output uses Agg), nothing to close. Every function takes plain numbers,
so the plots are testable without runs, and returns a :class:`Plot` whose ``alt`` text says in
words what the picture shows (for screen readers, and for the Markdown report).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 100
COLOURS = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"),
    *("#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"),
)
"""matplotlib's tab10 then the light half of tab20: a run keeps its colour in every plot."""


@dataclass(frozen=True)
class Plot:
    id: str
    """The element id in the HTML (``plot-<name>``), stable for tests and links."""
    title: str
    alt: str
    png: bytes


@dataclass(frozen=True)
class Point:
    """One run in a quality plot: ``x`` is its cost or latency, quality with its CI."""

    name: str
    x: float
    quality: float
    low: float
    high: float


def palette(names: Sequence[str]) -> dict[str, str]:
    return {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}


def render(figure: Figure, plot_id: str, title: str, alt: str) -> Plot:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return Plot(plot_id, title, alt, buffer.getvalue())


# --------------------------------------------------------------------------- quality plots


def frontier(points: Sequence[Point]) -> list[Point]:
    """The Pareto frontier, cheapest first: each point has higher quality than every point
    at most as costly (nothing is both cheaper and better)."""
    front: list[Point] = []
    for point in sorted(points, key=lambda p: (p.x, -p.quality)):
        if not front or point.quality > front[-1].quality:
            front.append(point)
    return front


def quality_plot(
    points: Sequence[Point],
    *,
    plot_id: str,
    title: str,
    x_label: str,
    metric: str,
    recommended: str | None,
    colours: Mapping[str, str],
) -> Plot:
    """Quality (with its CI) against cost or latency, the frontier joined by a line."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    front = frontier(points)
    axes.plot(
        [p.x for p in front],
        [p.quality * 100 for p in front],
        drawstyle="steps-post",
        color="#555555",
        linestyle="--",
        linewidth=1,
        label="frontier (nothing cheaper is better)",
    )
    for point in points:
        _quality_point(axes, point, colours.get(point.name, "#333333"), point.name == recommended)
    _log_scale_if_wide(axes, [p.x for p in points], "x")
    _label_points(axes, points, recommended)
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"{metric} (%); bars: its CI")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    names = ", ".join(p.name for p in front)
    alt = (
        f"{title}: {len(points)} runs; {metric} against {x_label}. Frontier: {names}. "
        f"Recommended: {recommended or 'none'}."
    )
    return render(figure, plot_id, title, alt)


def _quality_point(axes: Axes, point: Point, colour: str, recommended: bool) -> None:
    below, above = (point.quality - point.low) * 100, (point.high - point.quality) * 100
    axes.errorbar(
        [point.x],
        [point.quality * 100],
        yerr=[[max(below, 0.0)], [max(above, 0.0)]],
        fmt="*" if recommended else "o",
        markersize=16 if recommended else 7,
        color=colour,
        markeredgecolor="black",
        capsize=3,
    )


LABEL_OFFSETS = ((6, 4), (6, -11), (-6, 4), (-6, -11), (6, 13), (6, -20))
"""Where a point's name may go, in points from the point: right above first."""


def _label_points(axes: Axes, points: Sequence[Point], recommended: str | None) -> None:
    """Name each point where it does not cover a name already placed (runs of similar cost
    and quality otherwise print on top of each other); the recommended run is placed first."""
    axes.autoscale_view()  # the data -> pixel transform needs the final limits
    placed: list[tuple[float, float, float, float]] = []
    scale = axes.figure.dpi / 72  # offsets are in points, boxes in pixels
    for point in sorted(points, key=lambda p: p.name != recommended):
        label = f"{point.name} (recommended)" if point.name == recommended else point.name
        x, y = axes.transData.transform((point.x, point.quality * 100))
        width, height = 5.2 * len(label) * scale, 10 * scale  # 8 pt text, roughly
        for dx, dy in LABEL_OFFSETS:
            left = x + dx * scale - (width if dx < 0 else 0)
            box = (left, y + dy * scale, left + width, y + dy * scale + height)
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        axes.annotate(
            label,
            (point.x, point.quality * 100),
            textcoords="offset points",
            xytext=(dx, dy),
            ha="right" if dx < 0 else "left",
            fontsize=8,
            weight="bold" if point.name == recommended else "normal",
        )


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _log_scale_if_wide(axes: Axes, values: Sequence[float], axis: str) -> None:
    """A log axis when values span more than 20x, so cheap runs do not pile up at 0."""
    positive = [v for v in values if v > 0]
    if len(positive) == len(values) and positive and max(positive) > 20 * min(positive):
        (axes.set_xscale if axis == "x" else axes.set_yscale)("log")


# --------------------------------------------------------------------------- deployment


def cost_curves_plot(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    *,
    recommended: str | None,
    colours: Mapping[str, str],
    inputs_text: str,
) -> Plot:
    """Cumulative deployment cost over the months of the projection, one line per run."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for name, curve in curves.items():
        highlight = name == recommended
        axes.plot(
            [month for month, _ in curve],
            [cost for _, cost in curve],
            color=colours.get(name, "#333333"),
            linewidth=3 if highlight else 1.5,
            label=f"{name} (recommended)" if highlight else name,
        )
    _log_cost_scale_if_wide(axes, [curve[-1][1] for curve in curves.values() if curve])
    axes.set_xlabel("months deployed")
    axes.set_ylabel("cumulative cost ($)")
    axes.set_title(f"Deployment cost over time ({inputs_text})", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    ends = sorted(((c[-1][1], n) for n, c in curves.items() if c), reverse=True)
    order = ", ".join(f"{name} ${cost:,.2f}" for cost, name in ends)
    alt = f"Cumulative deployment cost per run over time ({inputs_text}); at the end: {order}."
    return render(figure, "plot-cost-curves", "Deployment cost over time", alt)


def _log_cost_scale_if_wide(axes: Axes, final_costs: Sequence[float]) -> None:
    """A log cost axis when the final costs span more than 20x (else the cheap runs lie flat
    on zero), cut at 1% of the cheapest final cost: the first days' near-zero spend (a
    training run of seconds) would otherwise stretch the axis over decades of nothing."""
    positive = [cost for cost in final_costs if cost > 0]
    if len(positive) < 2 or max(positive) <= 20 * min(positive):
        return
    axes.set_yscale("log")
    axes.set_ylim(bottom=min(positive) / 100)


# --------------------------------------------------------------------------- per class / slot


def per_label_plot(
    scores: Mapping[str, Mapping[str, float]], labels: Sequence[str], *, what: str, title: str
) -> Plot:
    """F1 of each of ``labels`` (classes or slots, top to bottom) per run, as a heatmap."""
    runs = list(scores)
    grid = [[_nan_if_none(scores[r].get(label)) for r in runs] for label in labels]
    figure = Figure(
        figsize=(max(6.0, 2.5 + 0.8 * len(runs)), 1.5 + 0.28 * len(labels)), layout="constrained"
    )
    axes = figure.subplots()
    image = axes.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(runs) * len(labels) <= 150:  # more numbers take seconds to lay out, and crowd
        _annotate_cells(axes, grid)
    figure.colorbar(image, ax=axes, fraction=0.03, label="F1")
    axes.set_title(title, fontsize=10)
    alt = f"{title}: a heatmap of F1 per {what} and run; top rows: {', '.join(labels[:5])}."
    return render(figure, f"plot-per-{what}", title, alt)


def _annotate_cells(axes: Axes, grid: Sequence[Sequence[float]]) -> None:
    for row, values in enumerate(grid):
        for column, value in enumerate(values):
            if not math.isnan(value):
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------- calibration


def calibration_plot(
    reliability: Mapping[str, Sequence[Mapping[str, Any]]],
    ece: Mapping[str, float | None],
    *,
    colours: Mapping[str, str],
) -> Plot:
    """A reliability diagram per run: accuracy against confidence in each confidence bin
    (marker area ~ examples in the bin); on the diagonal a model is calibrated."""
    runs = list(reliability)
    columns = min(3, len(runs))
    rows = math.ceil(len(runs) / columns)
    figure = Figure(figsize=(3.3 * columns, 3.2 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for index, axes in enumerate(grid.flat):
        if index >= len(runs):
            axes.set_axis_off()
            continue
        name = runs[index]
        _reliability(axes, reliability[name], colours.get(name, "#333333"))
        score = ece.get(name)
        axes.set_title(name + ("" if score is None else f" (ECE {score:.3f})"), fontsize=9)
        axes.label_outer()  # the axes are shared: labels on the outer edge say it once
    figure.suptitle("Calibration: accuracy against confidence per bin", fontsize=11)
    listed = ", ".join(f"{n} {ece[n]:.3f}" for n in runs if ece.get(n) is not None)
    alt = f"Reliability diagrams of {len(runs)} runs; expected calibration error: {listed}."
    return render(figure, "plot-calibration", "Calibration", alt)


def _reliability(axes: Axes, bins: Sequence[Mapping[str, Any]], colour: str) -> None:
    used = [b for b in bins if b.get("count") and b.get("accuracy") is not None]
    total = sum(int(b["count"]) for b in used) or 1
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    axes.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], color=colour)
    axes.scatter(
        [b["confidence"] for b in used],
        [b["accuracy"] for b in used],
        s=[10 + 300 * int(b["count"]) / total for b in used],
        color=colour,
        edgecolors="black",
        linewidths=0.5,
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence", fontsize=8)
    axes.set_ylabel("accuracy", fontsize=8)
    axes.tick_params(labelsize=7)


# --------------------------------------------------------------------------- out of scope


def rejection_plot(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    chosen: Mapping[str, tuple[float, float]],
    *,
    colours: Mapping[str, str],
) -> Plot:
    """Each run's rejection trade-off on the eval set: the share of out-of-scope queries
    rejected against the share of in-scope ones rejected as the threshold rises, and the point
    its chosen threshold gives (a cross)."""
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    for name, curve in curves.items():
        colour = colours.get(name, "#333333")
        xs = [point["in_scope_rejected"] for point in curve]
        ys = [point["out_of_scope_rejected"] for point in curve]
        axes.plot(xs, ys, color=colour, label=name, linewidth=1.5)
        if name in chosen:
            axes.scatter(*chosen[name], marker="x", s=60, color=colour, linewidths=2)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("in-scope queries rejected", fontsize=9)
    axes.set_ylabel("out-of-scope queries rejected", fontsize=9)
    axes.tick_params(labelsize=8)
    axes.legend(fontsize=8, loc="lower right")
    figure.suptitle("Out-of-scope rejection: the trade-off as the threshold moves", fontsize=11)
    listed = ", ".join(
        f"{name} rejects {x * 100:.0f}% of in-scope and {y * 100:.0f}% of out-of-scope queries"
        for name, (x, y) in chosen.items()
    )
    alt = f"Rejection trade-off curves of {len(curves)} runs; at the chosen thresholds {listed}."
    return render(figure, "plot-rejection", "Out-of-scope rejection", alt)


# --------------------------------------------------------------------------- forgetting


def forgetting_plot(
    changes: Mapping[str, tuple[float | None, float | None]],
    *,
    pass_rate_threshold: float,
    perplexity_threshold: float,
    colours: Mapping[str, str],
) -> Plot:
    """Per run: the change of the general-instruction pass rate against the base model (in
    points; below zero: forgot) and held-out perplexity over the base model's (above 1: worse),
    each with the decision rule's threshold."""
    runs = list(changes)
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    bar_colours = [colours.get(r, "#333333") for r in runs]
    drops = [changes[r][0] for r in runs]
    left.bar(runs, [0.0 if d is None else -d * 100 for d in drops], color=bar_colours, width=0.6)
    left.axhline(-pass_rate_threshold * 100, color="#d62728", linestyle="--", linewidth=1)
    left.axhline(0, color="black", linewidth=0.8)
    left.set_ylabel("Δ pass rate vs base (points)")
    left.set_title("General instructions", fontsize=10)
    ratios = [changes[r][1] for r in runs]
    # Bars grow from 1 (the base model's perplexity), so 1.3x stands out from 1.0x.
    right.bar(
        runs, [0.0 if r is None else r - 1 for r in ratios], bottom=1, color=bar_colours, width=0.6
    )
    right.axhline(perplexity_threshold, color="#d62728", linestyle="--", linewidth=1)
    right.axhline(1, color="black", linewidth=0.8)
    right.set_ylabel("perplexity × base")
    right.set_title("Held-out general text", fontsize=10)
    for axes in (left, right):
        axes.tick_params(axis="x", labelrotation=30, labelsize=8)
        axes.grid(True, axis="y", alpha=0.3)
    figure.suptitle("Forgetting against the base model (dashed: the rule's threshold)")
    listed = "; ".join(
        f"{r}: {_points(changes[r][0])} points, perplexity ×{_ratio(changes[r][1])}" for r in runs
    )
    alt = f"Forgetting per run against the base model: {listed}."
    return render(figure, "plot-forgetting", "Forgetting", alt)


def _points(drop: float | None) -> str:
    return "not measured" if drop is None else f"{(0.0 - drop) * 100:+.1f}"


def _ratio(ratio: float | None) -> str:
    return "not measured" if ratio is None else f"{ratio:.3f}"
