"""``attnsearch report``: what a finished (or running) study found, with the evidence for each placement.

For each slot, the effect of each module against ``none`` at that slot is the mean difference in the first
objective's score with a 95% confidence interval:

- **paired** where at least two pairs of complete trials differ only at that slot (same backbone, recipe and
  placements elsewhere; a grid or ablation design gives them): a t-interval over the per-pair differences;
- **unpaired** otherwise: Welch's t-interval between all complete trials with the module there and all with
  ``none`` there (at least two on each side).

An interval that contains zero is flagged as a tie. The terminal gets the leaderboard, the placement map, the
effects and Optuna's parameter importances; ``--out`` gets ``report.html`` (one self-contained page: plotly's
JavaScript inlined, Optuna's plots, our heatmap and effect plot), ``heatmap.png`` and ``history.png``
(matplotlib) and ``summary.md``.
"""

from __future__ import annotations

import html
import json
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dashboard.state import PERCENT_METRICS, DashboardState
from .dashboard.watch import StudyReader

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

__all__ = [
    "Effect",
    "Report",
    "build_report",
    "paired_interval",
    "print_report",
    "slot_effects",
    "t_quantile",
    "welch_interval",
    "write_report",
]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Effect:
    """The effect of ``module`` at ``slot`` against ``none`` there: score with it minus score without."""

    slot: str
    module: str
    difference: float | None  # mean difference in the first objective's units; None without trials on a side
    low: float | None  # the 95% confidence interval, None where too few trials give one
    high: float | None
    method: str  # paired | unpaired | too few
    n: int  # pairs (paired), or trials with the module (unpaired)
    n_none: int  # pairs (paired), or trials with none (unpaired)

    @property
    def tie(self) -> bool:
        """The interval contains zero: no evidence the module changes the score."""
        return self.low is not None and self.high is not None and self.low <= 0.0 <= self.high

    @property
    def basis(self) -> str:
        """How the interval was made, in words."""
        if self.method == "paired":
            return f"paired, {self.n} pairs"
        if self.method == "unpaired":
            return f"unpaired (Welch), {self.n} vs {self.n_none} trials"
        return f"too few trials ({self.n} vs {self.n_none})"


@dataclass
class Report:
    """Everything the report shows, computed once: the dashboard's state, the effects, the importances."""

    folder: Path
    state: DashboardState
    effects: list[Effect]
    importances: dict[str, float] | None
    importance_note: str  # why there are none, or which evaluator made them
    study: optuna.Study | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------------ statistics


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (any real df > 0).

    Example:
        >>> round(t_quantile(0.975, 4), 4)
        2.7764
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):  # bisection: the cdf is monotone, 200 halvings reach float precision
        middle = (low + high) / 2.0
        if _t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of paired differences and its t-interval: ``mean ± t(df=n-1) * sd / sqrt(n)``; needs n >= 2.

    Example:
        >>> mean, low, high = paired_interval([1.0, 2.0, 3.0])
        >>> mean, round(low, 3), round(high, 3)
        (2.0, -0.484, 4.484)
    """
    n = len(differences)
    if n < 2:
        raise ValueError("a paired interval needs at least two pairs")
    mean = statistics.fmean(differences)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_interval(
    with_module: Sequence[float], without: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Difference of means ``mean(with_module) - mean(without)`` and Welch's t-interval; needs 2+ on each side.

    Example:
        >>> diff, low, high = welch_interval([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
        >>> diff, round(low, 3), round(high, 3)
        (2.0, -0.267, 4.267)
    """
    n1, n2 = len(with_module), len(without)
    if n1 < 2 or n2 < 2:
        raise ValueError("Welch's interval needs at least two trials on each side")
    difference = statistics.fmean(with_module) - statistics.fmean(without)
    v1, v2 = statistics.variance(with_module) / n1, statistics.variance(without) / n2
    se = math.sqrt(v1 + v2)
    if se == 0.0:
        return difference, difference, difference
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return difference, difference - half, difference + half


def slot_effects(
    records: Sequence[dict[str, Any]],
    score: Callable[[dict[str, Any]], float | None],
    slots: dict[str, list[str]],
) -> list[Effect]:
    """The effect of every module tried at every slot against ``none`` there (see the module's docstring).

    ``records`` are trial records (``trial.json``) of complete trials, ``score`` gives a record's first-objective
    value, ``slots`` maps slot -> modules tried there; a slot without ``none`` among them has no effects.
    """
    scored = [(r, s) for r in records if (s := score(r)) is not None and r.get("candidate")]
    effects = []
    for slot, modules in slots.items():
        if "none" not in modules:
            continue
        at_slot: dict[str, list[float]] = {}
        groups: dict[str, dict[str, list[float]]] = {}  # everything but this slot -> module here -> scores
        for record, value in scored:
            module, rest = _split(record["candidate"], slot)
            at_slot.setdefault(module, []).append(value)
            groups.setdefault(rest, {}).setdefault(module, []).append(value)
        without = at_slot.get("none", [])
        for module in modules:
            if module == "none":
                continue
            pairs = [
                statistics.fmean(group[module]) - statistics.fmean(group["none"])
                for group in groups.values()
                if module in group and "none" in group
            ]
            with_module = at_slot.get(module, [])
            if len(pairs) >= 2:
                difference, low, high = paired_interval(pairs)
                effects.append(Effect(slot, module, difference, low, high, "paired", len(pairs), len(pairs)))
            elif len(with_module) >= 2 and len(without) >= 2:
                difference, low, high = welch_interval(with_module, without)
                n, n_none = len(with_module), len(without)
                effects.append(Effect(slot, module, difference, low, high, "unpaired", n, n_none))
            else:
                difference = (
                    statistics.fmean(with_module) - statistics.fmean(without) if with_module and without else None
                )
                effects.append(Effect(slot, module, difference, None, None, "too few", len(with_module), len(without)))
    return effects


def _split(candidate: dict[str, Any], slot: str) -> tuple[str, str]:
    """The module at ``slot`` and a key of everything else about the candidate."""
    placements = candidate.get("placements") or []
    module = next((p["module"] for p in placements if p["slot"] == slot), "none")
    rest = {**candidate, "placements": [p for p in placements if p["slot"] != slot]}
    return module, json.dumps(rest, sort_keys=True)


def _t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz), as in Numerical Recipes."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


# ------------------------------------------------------------------------------------------------ the report


def build_report(folder: Path | str) -> Report:
    """Read the study in ``folder`` (never writing to it) and compute the effects and importances.

    Example:
        >>> report = build_report("results/vgg16-shapes-quick")  # doctest: +SKIP
        >>> [(e.slot, e.module, e.tie) for e in report.effects]  # doctest: +SKIP
        [('block3', 'se', True), ...]
    """
    reader = StudyReader(folder)
    state = reader.read()
    complete = {row.number for row in state.ranked()}  # complete, duplicates that reused a score left out
    records = [r for r in reader.store.trials() if r["number"] in complete]

    def score(record: dict[str, Any]) -> float | None:
        return state.trials[record["number"]].score

    effects = slot_effects(records, score, state.slot_modules())
    importances, note = _importances(reader.study, len(complete))
    return Report(reader.store.root, state, effects, importances, note, reader.study)


def _importances(study: optuna.Study | None, complete: int) -> tuple[dict[str, float] | None, str]:
    if study is None:
        return None, "no Optuna journal in the folder (a --storage run): no importances"
    if complete < 3:
        return None, f"too few complete trials for importances ({complete}; 3 or more needed)"
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return None, f"importances could not be computed ({' '.join(str(err).split())})"
    if not found:
        return None, "no searched parameter varies across the complete trials: no importances"
    return dict(found), "Optuna's default evaluator (PED-ANOVA), first objective"


# ------------------------------------------------------------------------------------------------ the terminal


def print_report(report: Report, console: Console | None = None) -> None:
    """Leaderboard, placement map, effect per slot and module, parameter importances.

    Example:
        >>> print_report(build_report("results/vgg16-shapes-quick"))  # doctest: +SKIP
    """
    from rich.console import Console
    from rich.table import Table

    from .dashboard.views import leaderboard_panel, placement_map_panel

    console = console or Console()
    state = report.state
    counts = state.counts()
    states = ", ".join(f"{counts[k]} {k}" for k in ("complete", "running", "pruned", "failed", "infeasible"))
    console.print(f"[bold]{state.name}[/bold]: {states}", highlight=False)
    console.print(leaderboard_panel(state, rows=10))
    console.print(placement_map_panel(state, rows=len(state.slot_modules()), width=console.width))
    console.print(_effects_title(state), style="bold", highlight=False)
    table = Table()
    for column in ("slot", "module", "difference", "95% CI", "", "basis"):
        table.add_column(column, no_wrap=column != "basis")
    for effect in report.effects:
        tie = "[yellow]tie[/]" if effect.tie else ("" if effect.low is None else "[green]differs[/]")
        low, high = _units(state, effect.low), _units(state, effect.high)
        interval = f"[{low}, {high}]" if effect.low is not None else "-"
        table.add_row(effect.slot, effect.module, _units(state, effect.difference), interval, tie, effect.basis)
    if report.effects:
        console.print(table, highlight=False)
    else:
        console.print("No slot has 'none' among its choices: no effects against the baseline.")
    if report.importances:
        console.print(f"Parameter importances ({report.importance_note})", style="bold", highlight=False)
        importance = Table()
        importance.add_column("parameter")
        importance.add_column("importance", justify="right")
        for name, value in report.importances.items():
            importance.add_row(name, f"{value:.3f}")
        console.print(importance)
    else:
        console.print(f"Parameter importances: {report.importance_note}", highlight=False)


def _effects_title(state: DashboardState) -> str:
    metric = state.objectives[0][0]
    unit = "percentage points" if metric in PERCENT_METRICS else metric
    return f"Effect of each module against none at its slot ({metric}, {unit}; 95% CI; tie: the CI contains 0)"


def _units(state: DashboardState, value: float | None) -> str:
    if value is None:
        return "-"
    if state.objectives[0][0] in PERCENT_METRICS:
        return f"{100 * value:+.2f}"
    return f"{value:+.4g}"


# ------------------------------------------------------------------------------------------------ files


def write_report(report: Report, out: Path | str) -> list[Path]:
    """Write ``report.html``, ``heatmap.png``, ``history.png`` and ``summary.md`` into ``out``; returns them.

    Example:
        >>> write_report(build_report("results/demo"), "results/demo/report")  # doctest: +SKIP
        [PosixPath('results/demo/report/report.html'), ...]
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.html", folder / "heatmap.png", folder / "history.png", folder / "summary.md"]
    written[0].write_text(_html(report), encoding="utf-8")
    _heatmap_png(report.state, written[1])
    _history_png(report.state, written[2])
    written[3].write_text(_markdown(report), encoding="utf-8")
    return written


def _grid(state: DashboardState) -> tuple[list[str], list[str], list[list[float | None]], list[list[str]]]:
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


# -- markdown ----------------------------------------------------------------------------------------------------


def _markdown(report: Report) -> str:
    state = report.state
    metric = state.objectives[0][0]
    counts = state.counts()
    lines = [
        f"# attnsearch report: {state.name}",
        "",
        f"Backbone {', '.join(state.backbones)}; sampler {state.sampler}; pruner {state.pruner}; "
        + ", ".join(f"{counts[k]} {k}" for k in ("complete", "running", "pruned", "failed", "infeasible"))
        + f" of {state.target} trials.",
        "",
        "## Leaderboard",
        "",
        _md_table(
            ["#", "trial", "placements", metric, "params", "FLOPs", "train s"],
            [
                [
                    str(rank),
                    str(row.number),
                    row.label,
                    state.format_score(row.score)
                    + (f" ± {100 * row.spread:.1f}" if row.spread is not None and state.repeats > 1 else ""),
                    _plain_count(row.params),
                    _plain_count(row.flops),
                    f"{row.seconds:.1f}" if row.seconds is not None else "-",
                ]
                for rank, row in enumerate(state.ranked()[:10], 1)
            ],
        ),
        "",
        "## Placement map",
        "",
        f"Mean {metric}{' (%)' if metric in PERCENT_METRICS else ''} of the complete trials with each placement "
        "(number of trials); ★ marks the best module of each slot.",
        "",
    ]
    slots, modules, _, labels = _grid(state)
    lines.append(_md_table(["slot", *modules], [[slot, *row] for slot, row in zip(slots, labels, strict=True)]))
    lines += ["", "## Effect of each module against none", "", _effects_title(state) + ".", ""]
    lines.append(
        _md_table(
            ["slot", "module", "difference", "95% CI", "tie", "basis"],
            [
                [
                    e.slot,
                    e.module,
                    _units(state, e.difference),
                    f"[{_units(state, e.low)}, {_units(state, e.high)}]" if e.low is not None else "-",
                    "tie" if e.tie else "",
                    e.basis,
                ]
                for e in report.effects
            ],
        )
    )
    lines += ["", "## Parameter importances", ""]
    if report.importances:
        lines.append(report.importance_note + ".")
        lines.append("")
        lines.append(_md_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in report.importances.items()]))
    else:
        lines.append(report.importance_note.capitalize() + ".")
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def _plain_count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# -- html --------------------------------------------------------------------------------------------------------


def _html(report: Report) -> str:
    from plotly.offline import get_plotlyjs

    state = report.state
    sections = [f"<h1>attnsearch report: {html.escape(state.name)}</h1>"]
    summary = _markdown(report).split("\n## ")
    sections.append(f"<p>{html.escape(summary[0].splitlines()[2])}</p>")
    for part in summary[1:]:
        title, _, body = part.partition("\n")
        sections.append(f"<h2>{html.escape(title)}</h2>")
        sections.append(_md_to_html(body))
    sections.append("<h2>Plots</h2>")
    for title, figure in _figures(report):
        div = figure.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
        sections.append(f'<section class="plot"><h3>{html.escape(title)}</h3>{div}</section>')
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>attnsearch report: {html.escape(state.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "th{background:#f3f3f3}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _md_to_html(body: str) -> str:
    """The Markdown this module writes (paragraphs and pipe tables) as HTML."""
    out, table = [], []
    for line in [*body.splitlines(), ""]:
        if line.startswith("|"):
            table.append([html.escape(c.strip().replace("\\|", "|")) for c in line.strip("|").split(" | ")])
            continue
        if table:
            head, rows = table[0], table[2:]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
            table = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def _figures(report: Report) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    state, study = report.state, report.study
    metric = state.objectives[0][0]
    figures: list[tuple[str, Any]] = []
    slots, modules, means, labels = _grid(state)
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


# -- png ---------------------------------------------------------------------------------------------------------


def _heatmap_png(state: DashboardState, path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    slots, modules, means, labels = _grid(state)
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


def _history_png(state: DashboardState, path: Path) -> None:
    from matplotlib.figure import Figure

    metric, direction = state.objectives[0]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    rows = sorted((r for r in state.trials.values() if r.score is not None), key=lambda r: r.number)
    figure = Figure(figsize=(7, 4), dpi=150, layout="constrained")
    axes = figure.add_subplot()
    numbers = [r.number for r in rows]
    scores = [scale * (r.score or 0.0) for r in rows]
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
