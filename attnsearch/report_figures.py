"""The report's plots: plotly figures for ``report.html`` and the matplotlib PNGs ``heatmap.png`` and ``history.png``.

:func:`placement_grid` is the placement map as :mod:`attnsearch.report` writes it in its tables (each cell's mean
with its interval; ★ on a slot's best only where it is separated from the runner-up, ~ on the leader of a slot
where no module separated). Both heatmaps draw :func:`difference_grid`: each cell's difference from its slot's
``none`` (or the slot's mean where ``none`` was not tried) on a diverging scale, white at 0, never narrower than the
noise (:func:`attnsearch.evidence.shading`), so a difference within noise looks near neutral; cells whose interval
contains 0 (or that have none) are hatched and marked ≈. Optuna's own plots join the HTML figures when the study's
journal is there; a plot Optuna cannot draw for too few trials becomes a titled empty figure.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dashboard.state import DashboardState
from .evidence import BEST, LEADS, TIE_SENTENCE, WITHIN, format_difference, mark
from .record import PERCENT_METRICS

if TYPE_CHECKING:
    from .report import Report

__all__ = ["DifferenceGrid", "difference_grid", "heatmap_png", "history_png", "html_figures", "placement_grid"]


def placement_grid(state: DashboardState) -> tuple[list[str], list[str], list[list[float | None]], list[list[str]]]:
    """Slots, modules ('none' first), the mean scores (None: no trial) and each cell's label: its mark
    (:func:`attnsearch.evidence.mark`: ★ separated best, ~ leader of a tie), its mean, the 95% interval of the mean
    where its noise is known, and the number of trials."""
    slots = state.slot_modules()
    modules = _modules(state)
    found = state.placement_map()
    percent = state.objectives[0][0] in PERCENT_METRICS
    means: list[list[float | None]] = []
    labels: list[list[str]] = []
    for slot in slots:
        row_means, row_labels = [], []
        for module in modules:
            cell = found.get(slot, {}).get(module)
            row_means.append(None if cell is None else (100 * cell.mean if percent else cell.mean))
            if cell is None:
                row_labels.append("")
                continue
            label = mark(state.results, slot, module) + _value(cell.mean, percent)
            if cell.interval is not None:
                label += " [" + ", ".join(_value(v, percent) for v in cell.interval) + "]"
            row_labels.append(label + f" ({cell.count})")
        means.append(row_means)
        labels.append(row_labels)
    return list(slots), modules, means, labels


@dataclass(frozen=True)
class DifferenceGrid:
    """The heatmaps' cells: each (slot, module)'s difference from its slot's reference (``none``, or the slot's mean
    where ``none`` was not tried), in display units (percentage points for accuracies), on a colour scale from
    ``-span`` to ``+span`` (:func:`attnsearch.evidence.shading`: never narrower than the noise)."""

    slots: list[str]
    modules: list[str]
    values: list[list[float | None]]  # the colour value: None no trial; 0 for the reference and unknown noise
    labels: list[list[str]]  # "<mark><mean> (<n>)" and, on a second line, the difference with its interval
    within: list[list[bool]]  # the difference's interval contains 0, or there is none: drawn hatched, marked ≈
    span: float  # display units, > 0
    unit: str  # " pt" or ""
    noise_known: bool  # some difference has an interval; else every cell is drawn neutral

    @property
    def caption(self) -> str:
        """What the colours and marks mean, for the figures' captions."""
        scale = f"{self.span:.1f}" if self.unit else f"{self.span:.3g}"
        if self.noise_known:
            how = f"scale ±{scale}{self.unit} = max(largest |difference|, 2 × median 95% half-width)"
        else:
            how = "all neutral: no difference has an interval (too few trials and no recorded noise)"
        marks = [label[:1] for row in self.labels for label in row]
        said = [f"{BEST} best of its slot, separated from the runner-up"] if BEST in marks else []
        said += [f"{LEADS} leads a slot where {TIE_SENTENCE}"] if LEADS in marks else []
        return (
            f"Colour: difference from the slot's none (or from the slot's mean where none was not tried), {how}.\n"
            f"{WITHIN} hatched: its 95% interval contains 0, or there is none (then drawn neutral)."
            + ("\n" + "; ".join(said) + "." if said else "")
        )


def difference_grid(state: DashboardState) -> DifferenceGrid:
    """The placement map as differences from each slot's reference (see :class:`DifferenceGrid`)."""
    metric = state.objectives[0][0]
    scale, unit = (100.0, " pt") if metric in PERCENT_METRICS else (1.0, "")
    slots, modules = list(state.slot_modules()), _modules(state)
    found, shading = state.placement_map(), state.shading()
    values: list[list[float | None]] = []
    labels: list[list[str]] = []
    within: list[list[bool]] = []
    for slot in slots:
        row_values: list[float | None] = []
        row_labels, row_within = [], []
        for module in modules:
            cell = found.get(slot, {}).get(module)
            shade = shading.cells.get(slot, {}).get(module)
            if cell is None or shade is None:
                row_values.append(None)
                row_labels.append("")
                row_within.append(False)
                continue
            head = mark(state.results, slot, module) + _value(cell.mean, metric in PERCENT_METRICS) + f" ({cell.count})"
            if shade.is_reference:
                second = "reference"
            elif shade.difference is None:  # the slot's none has no complete trial: nothing to compare with
                second = f"{WITHIN} {shade.reference} has no trial"
            else:
                second = format_difference(metric, shade.difference, shade.low, shade.high, digits=1)
                second = (f"{WITHIN} " if shade.within_noise else "") + second
            known = shade.low is not None and shade.difference is not None
            row_values.append(scale * (shade.difference or 0.0) if known else 0.0)
            row_labels.append(f"{head}\n{second}")
            row_within.append(shade.within_noise)
        values.append(row_values)
        labels.append(row_labels)
        within.append(row_within)
    if shading.span is not None:
        span = scale * shading.span
    else:  # no interval anywhere: every cell is neutral, on the scale of the differences (or of one unit)
        raw = [abs(s.difference) for row in shading.cells.values() for s in row.values() if s.difference]
        span = scale * max(raw, default=1.0)
    return DifferenceGrid(slots, modules, values, labels, within, span, unit, shading.span is not None)


def _modules(state: DashboardState) -> list[str]:
    modules = list(dict.fromkeys(m for ms in state.slot_modules().values() for m in ms))
    if "none" in modules:
        modules.remove("none")
        modules.insert(0, "none")
    return modules


def _value(mean: float, percent: bool) -> str:
    return f"{100 * mean:.1f}" if percent else f"{mean:.3g}"


def _colours(direction: str) -> str:
    """A diverging colormap, white at 0: green where the difference is better, pink where worse."""
    return "PiYG" if direction == "maximize" else "PiYG_r"


# -- plotly, for report.html ---------------------------------------------------------------------------------------


def html_figures(report: Report) -> list[tuple[str, Any]]:
    """(title, plotly figure) pairs: the placement heatmap, the effect plot, then Optuna's plots of the study."""
    import plotly.graph_objects as go

    state, study = report.state, report.study
    metric = state.objectives[0][0]
    figures: list[tuple[str, Any]] = []
    grid = difference_grid(state)
    heatmap = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=grid.modules,
            y=grid.slots,
            text=[[label.replace("\n", "<br>") for label in row] for row in grid.labels],
            texttemplate="%{text}",
            colorscale=_colours(state.objectives[0][1]),
            zmin=-grid.span,
            zmax=grid.span,
            zmid=0.0,
            colorbar={"title": {"text": f"difference{grid.unit}"}},
            hoverongaps=False,
        )
    )
    heatmap.update_layout(
        title=f"Placement map: {metric}, difference from each slot's reference",
        annotations=[
            {
                "text": grid.caption.replace("\n", "<br>"),
                "xref": "paper",
                "yref": "paper",
                "x": 0.0,
                "y": -0.25,
                "showarrow": False,
                "align": "left",
                "xanchor": "left",
                "yanchor": "top",
            }
        ],
        margin={"b": 140},
    )
    heatmap.update_yaxes(autorange="reversed")
    figures.append(("Placement map", heatmap))
    effects = [e for e in report.effects if e.difference is not None]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    effect_plot = go.Figure()
    groups = (
        ("differs (95% CI excludes 0)", "#2a7ab0", [e for e in effects if not e.tie]),
        ("tie (95% CI contains 0)", "#999999", [e for e in effects if e.tie and e.low is not None]),
        ("no interval (too few trials, no recorded noise)", "#cccccc", [e for e in effects if e.low is None]),
    )
    for name, colour, chosen in groups:
        if not chosen:
            continue
        bars = chosen[0].low is not None
        effect_plot.add_trace(
            go.Scatter(
                x=[scale * (e.difference or 0.0) for e in chosen],
                y=[f"{e.slot}: {e.module} vs {e.reference}" for e in chosen],
                mode="markers",
                name=name,
                marker={"color": colour, "size": 10, "symbol": "circle" if bars else "circle-open"},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [scale * ((e.high or 0.0) - (e.difference or 0.0)) for e in chosen],
                    "arrayminus": [scale * ((e.difference or 0.0) - (e.low or 0.0)) for e in chosen],
                    "visible": bars,
                },
                text=[e.basis for e in chosen],
            )
        )
    effect_plot.add_vline(x=0.0, line_dash="dash", line_color="#666666")
    effect_plot.update_layout(
        title="Effect of each module against none at its slot, or the slot's mean where none was not tried (95% CI)",
        xaxis_title=f"difference in {metric}" + (" (percentage points)" if scale == 100.0 else ""),
    )
    figures.append(("Effect per slot", effect_plot))
    if study is None:
        return figures
    import optuna.visualization as ov

    target = lambda t: t.values[0]  # noqa: E731  (the first objective, for multi-objective studies too)
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("Optimization history", lambda: ov.plot_optimization_history(study, target=target, target_name=metric)),
        ("Parameter importances", lambda: ov.plot_param_importances(study, target=target, target_name=metric)),
    ]
    if len(state.objectives) > 1:
        names = [m for m, _ in state.objectives]
        plots.append(("Pareto front", lambda: ov.plot_pareto_front(study, target_names=names)))
    plots.append(("Intermediate values", lambda: ov.plot_intermediate_values(study)))
    for title, make in plots:
        if title == "Parameter importances" and not report.importances:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figures.append((title, make()))
        except (ValueError, RuntimeError) as err:  # too few trials for that plot
            figures.append((title, go.Figure(layout={"title": f"{title}: not available ({err})"})))
    return figures


# -- matplotlib PNGs -----------------------------------------------------------------------------------------------


def heatmap_png(state: DashboardState, path: Path) -> Any:
    """Draw the placement map as differences from each slot's reference (:func:`difference_grid`) into ``path`` (a
    PNG file or a binary file object): a diverging colormap white at 0 whose scale is never narrower than the noise,
    within-noise cells hatched, the caption saying what the colours and marks mean. Returns the colour of each
    cell, an array of RGBA in 0..1 of shape (slots, modules, 4), NaN where no trial placed the module.
    """
    import numpy as np
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    grid = difference_grid(state)
    values = np.ma.masked_invalid(
        np.array([[np.nan if v is None else v for v in row] for row in grid.values], dtype=float).reshape(
            len(grid.slots), len(grid.modules)
        )
    )
    figure = Figure(figsize=(1.6 * len(grid.modules) + 3.0, 0.7 * len(grid.slots) + 2.6), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    axes.set_facecolor("0.85")  # a cell no complete trial placed: grey, marked "no trial"
    norm = Normalize(vmin=-grid.span, vmax=grid.span)
    image = axes.imshow(values, cmap=_colours(state.objectives[0][1]), norm=norm, aspect="auto")
    axes.set_xticks(range(len(grid.modules)), grid.modules, rotation=30, ha="right")
    axes.set_yticks(range(len(grid.slots)), grid.slots)
    for i, row in enumerate(grid.labels):
        for j, label in enumerate(row):
            if not label:
                axes.text(j, i, "no trial", ha="center", va="center", fontsize=7, color="0.45")
                continue
            axes.text(j, i, label, ha="center", va="center", fontsize=7, linespacing=1.4)
            if grid.within[i][j]:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.65", lw=0))
    metric = state.objectives[0][0]
    figure.colorbar(image, ax=axes, label=f"difference in {metric}{grid.unit}")
    axes.set_title(f"{state.name}: {metric}, difference from each slot's reference")
    width = 20 * (1.6 * len(grid.modules) + 3.0)  # characters of 6-point text across the figure, with a margin
    caption = "\n".join(textwrap.fill(line, int(width)) for line in grid.caption.split("\n"))
    figure.supxlabel(caption, fontsize=6)
    figure.savefig(path)
    colours = image.cmap(norm(values.filled(np.nan)))
    colours[np.isnan(values.filled(np.nan))] = np.nan
    return colours


def history_png(state: DashboardState, path: Path) -> None:
    from matplotlib.figure import Figure

    metric, direction = state.objectives[0]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    scored = [(r.number, score) for r in state.results.finished() if (score := state.results.score(r)) is not None]
    figure = Figure(figsize=(7, 4), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    numbers = [number for number, _ in scored]
    scores = [scale * score for _, score in scored]
    axes.scatter(numbers, scores, s=18, label=f"{metric} of a complete trial")
    best: list[float] = []
    for value in scores:
        best.append(value if not best else (max if direction == "maximize" else min)(best[-1], value))
    if best:
        axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
    axes.set_title(f"{state.name}: optimization history")
    axes.legend(loc="best")
    figure.savefig(path)
