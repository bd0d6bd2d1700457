"""The report's plots: plotly figures for ``report.html`` and the matplotlib PNGs ``heatmap.png`` and ``history.png``.

Both draw the placement map from one grid (:func:`placement_grid`: the mean first-objective score per slot and
module, ★ on each slot's best), which :mod:`attnsearch.report` also writes as a table. Optuna's own plots join the
HTML figures when the study's journal is there; a plot Optuna cannot draw for too few trials becomes a titled empty
figure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dashboard.state import DashboardState
from .record import PERCENT_METRICS

if TYPE_CHECKING:
    from .report import Report

__all__ = ["heatmap_png", "history_png", "html_figures", "placement_grid"]


def placement_grid(state: DashboardState) -> tuple[list[str], list[str], list[list[float | None]], list[list[str]]]:
    """Slots, modules ('none' first), the mean scores (None: no trial) and each cell's label (★ on the best)."""
    slots = state.slot_modules()
    modules = list(dict.fromkeys(m for ms in slots.values() for m in ms))
    if "none" in modules:
        modules.remove("none")
        modules.insert(0, "none")
    found, best = state.placement_map(), state.best_cells()
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
            else:
                value = f"{100 * cell.mean:.1f}" if percent else f"{cell.mean:.3g}"
                row_labels.append(("★" if best.get(slot) == module else "") + f"{value} ({cell.count})")
        means.append(row_means)
        labels.append(row_labels)
    return list(slots), modules, means, labels


# -- plotly, for report.html ---------------------------------------------------------------------------------------


def html_figures(report: Report) -> list[tuple[str, Any]]:
    """(title, plotly figure) pairs: the placement heatmap, the effect plot, then Optuna's plots of the study."""
    import plotly.graph_objects as go

    state, study = report.state, report.study
    metric = state.objectives[0][0]
    figures: list[tuple[str, Any]] = []
    slots, modules, means, labels = placement_grid(state)
    heatmap = go.Figure(
        go.Heatmap(
            z=means,
            x=modules,
            y=slots,
            text=labels,
            texttemplate="%{text}",
            colorscale="RdYlGn" if state.objectives[0][1] == "maximize" else "RdYlGn_r",
            colorbar={"title": {"text": metric}},
            hoverongaps=False,
        )
    )
    heatmap.update_layout(title=f"Placement map: mean {metric} per (slot, module), ★ best per slot")
    heatmap.update_yaxes(autorange="reversed")
    figures.append(("Placement map", heatmap))
    effects = [e for e in report.effects if e.difference is not None]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    effect_plot = go.Figure()
    for tie in (True, False):
        chosen = [e for e in effects if e.tie == tie]
        if not chosen:
            continue
        effect_plot.add_trace(
            go.Scatter(
                x=[scale * (e.difference or 0.0) for e in chosen],
                y=[f"{e.slot}: {e.module}" for e in chosen],
                mode="markers",
                name="tie (CI contains 0)" if tie else "differs",
                marker={"color": "#999999" if tie else "#2a7ab0", "size": 10},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [scale * ((e.high or 0.0) - (e.difference or 0.0)) for e in chosen],
                    "arrayminus": [scale * ((e.difference or 0.0) - (e.low or 0.0)) for e in chosen],
                },
                text=[e.basis for e in chosen],
            )
        )
    effect_plot.add_vline(x=0.0, line_dash="dash", line_color="#666666")
    effect_plot.update_layout(
        title="Effect of each module against none at its slot (95% CI)",
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


def heatmap_png(state: DashboardState, path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    slots, modules, means, labels = placement_grid(state)
    values = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in means], dtype=float))
    figure = Figure(figsize=(1.4 * len(modules) + 2.5, 0.6 * len(slots) + 1.8), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    colours = "RdYlGn" if state.objectives[0][1] == "maximize" else "RdYlGn_r"
    image = axes.imshow(values, cmap=colours, aspect="auto")
    axes.set_xticks(range(len(modules)), modules, rotation=30, ha="right")
    axes.set_yticks(range(len(slots)), slots)
    for i, row in enumerate(labels):
        for j, label in enumerate(row):
            if label:
                axes.text(j, i, label.replace("★", "* "), ha="center", va="center", fontsize=8)
    metric = state.objectives[0][0]
    figure.colorbar(image, ax=axes, label=f"mean {metric}" + (" (%)" if metric in PERCENT_METRICS else ""))
    axes.set_title(f"{state.name}: mean {metric} per placement (* best per slot)")
    figure.savefig(path)


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
