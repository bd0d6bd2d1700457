"""``attnsearch report``: what a finished (or running) study found, with the evidence for each placement.

For each slot, the report gives a verdict (:meth:`attnsearch.results.StudyResults.verdicts`): the leading module
is called the slot's best (★) only where the 95% interval of its difference from the runner-up excludes 0;
otherwise the slot is a tie and the report says "no module separated at this budget" (its leader marked ~).

The effect of each module against ``none`` at its slot (or against the slot's mean where ``none`` was not tried)
is the mean difference in the first objective's score with a 95% confidence interval (computed by
:meth:`attnsearch.results.StudyResults.differences`):

- **paired** where at least two pairs of complete trials differ only at that slot (same backbone, recipe and
  placements elsewhere; a grid or ablation design gives them): a t-interval over the per-pair differences;
- **unpaired** otherwise: Welch's t-interval between the complete trials with the module there and those on the
  reference's side (two or more on each side, or scores that carry their own noise: ``val_images``);
- no interval (**too few**) where neither holds: one trial a side and no recorded noise.

An interval that contains zero is flagged as a tie, one that is missing as "no interval": neither is evidence of
an effect. A study with a confirmation race opens with its verdict (:mod:`attnsearch.report_confirm`). The terminal
gets the leaderboard, the placement map, the verdicts, the effects and Optuna's parameter
importances; ``--out`` gets ``report.html`` (one self-contained page: plotly's
JavaScript inlined, Optuna's plots, our heatmap and effect plot), ``heatmap.png`` and ``history.png``
(matplotlib) and ``summary.md``. This module computes the report and writes its text; the plots are drawn in
:mod:`attnsearch.report_figures`.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .dashboard.state import DashboardState
from .dashboard.watch import StudyReader
from .record import PERCENT_METRICS
from .evidence import BEST, LEADS, TIE_SENTENCE
from .report_confirm import TEST_COLUMN, confirmation_section
from .report_explain import explain_pictures, pictures_html, pictures_markdown
from .report_figures import heatmap_png, history_png, html_figures, placement_grid
from .results import Effect, StudyResults, SlotVerdict

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

__all__ = ["Report", "build_report", "print_report", "write_report"]


@dataclass
class Report:
    """Everything the report shows, computed once: the study's results, the effects, the importances."""

    folder: Path
    results: StudyResults
    effects: list[Effect]  # every module against none at its slot, or against the slot's mean (Effect.reference)
    importances: dict[str, float] | None
    importance_note: str  # why there are none, or which evaluator made them
    study: optuna.Study | None = field(default=None, repr=False)

    @property
    def state(self) -> DashboardState:
        """The study as the dashboard's panels show it."""
        return DashboardState.from_results(self.results, folder=self.folder)


def build_report(folder: Path | str, *, storage: str | None = None) -> Report:
    """Read the study in ``folder`` (never writing to it) and compute the effects and importances; ``storage``: the
    study's storage URL (``run --storage``), to report the trials of every driver that shares it.

    Example:
        >>> report = build_report("tests/golden/golden")  # a tiny finished study the tests keep
        >>> [(e.slot, e.module, e.method, e.tie) for e in report.effects]
        [('block3', 'se', 'paired', False), ('block3', 'eca', 'too few', True), ('block5', 'eca', 'paired', True)]
    """
    reader = StudyReader(folder, storage=storage)
    results = reader.results()
    importances, note = _importances(reader.study, len(results.ranked()))
    effects = [e for modules in results.differences().values() for e in modules.values()]
    return Report(reader.store.root, results, effects, importances, note, reader.study)


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
        >>> import io
        >>> from rich.console import Console
        >>> print_report(build_report("tests/golden/golden"), Console(file=io.StringIO()))
    """
    from rich.console import Console
    from rich.table import Table

    from .dashboard.views import leaderboard_panel, placement_map_panel

    console = console or Console()
    state = report.state
    counts = state.counts()
    states = ", ".join(f"{counts[k]} {k}" for k in ("complete", "running", "pruned", "failed", "infeasible"))
    console.print(f"[bold]{state.name}[/bold]: {states}", highlight=False)
    race = confirmation_section(report.results)
    if race is not None:
        console.print(race.title, style="bold", highlight=False)
        for sentence in race.sentences:
            console.print(f"  {sentence}", highlight=False)
        contenders = Table()
        for column in race.header:
            if column == TEST_COLUMN:  # its header on two lines
                contenders.add_column(column, justify="right", min_width=21)
            else:
                left = column in ("contender", "dropped in")
                contenders.add_column(column, justify="left" if left else "right", no_wrap=not left)
        for row in race.rows:
            contenders.add_row(*row)
        console.print(contenders, highlight=False)
    console.print(leaderboard_panel(state, rows=10))
    console.print(placement_map_panel(state, rows=len(state.slot_modules()), width=console.width))
    verdicts = state.verdicts()
    if verdicts:
        console.print(_verdicts_title(state), style="bold", highlight=False)
        table = Table()
        for column in _VERDICT_COLUMNS:
            table.add_column(column, no_wrap=column != "verdict")
        for verdict in verdicts.values():
            table.add_row(*_verdict_row(state, verdict))
        console.print(table, highlight=False)
    console.print(_effects_title(state), style="bold", highlight=False)
    table = Table()
    header, rows = _effect_rows(state, report.effects)
    for column in header:
        table.add_column(column, no_wrap=column != "basis")
    styles = {"tie": "[yellow]tie[/]", "differs": "[green]differs[/]", "no interval": "[dim]no interval[/]"}
    for row in rows:
        table.add_row(*row[:-2], styles[row[-2]], row[-1])
    if report.effects:
        console.print(table, highlight=False)
    else:
        console.print("No slot has two modules with scores: no effects.")
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


_VERDICT_COLUMNS = ("slot", "leader", "runner-up", "leader - runner-up", "95% CI", "verdict")


def _verdicts_title(state: DashboardState) -> str:
    return (
        f"Verdict per slot ({state.objectives[0][0]}: the leader is the best module only where the 95% CI of "
        "leader - runner-up excludes 0)"
    )


def _verdict_row(state: DashboardState, verdict: SlotVerdict) -> list[str]:
    gap = _units(state, verdict.difference) if verdict.runner_up is not None else "-"
    interval = f"[{_units(state, verdict.low)}, {_units(state, verdict.high)}]" if verdict.low is not None else "-"
    said = f"{BEST} {verdict.leader} is best" if verdict.separated else TIE_SENTENCE
    return [verdict.slot, verdict.leader, verdict.runner_up or "-", gap, interval, said]


def _effects_title(state: DashboardState) -> str:
    metric = state.objectives[0][0]
    unit = "percentage points" if metric in PERCENT_METRICS else metric
    return (
        f"Effect of each module against none at its slot, or the slot's mean where none was not tried ({metric}, "
        f"{unit}; 95% CI; tie: the CI contains 0; no interval: too few trials and no recorded noise)"
    )


def _effect_rows(state: DashboardState, effects: list[Effect]) -> tuple[list[str], list[list[str]]]:
    """The effects table's header and rows; an ``against`` column only where some slot had no ``none``."""
    against = any(e.reference != "none" for e in effects)
    header = ["slot", "module", *(["against"] if against else []), "difference", "95% CI", "verdict", "basis"]
    rows = []
    for e in effects:
        verdict = "no interval" if e.low is None or e.high is None else "tie" if e.tie else "differs"
        interval = f"[{_units(state, e.low)}, {_units(state, e.high)}]" if e.low is not None else "-"
        reference = ["none" if e.reference == "none" else "slot mean"] if against else []
        rows.append([e.slot, e.module, *reference, _units(state, e.difference), interval, verdict, e.basis])
    return header, rows


def _units(state: DashboardState, value: float | None) -> str:
    if value is None:
        return "-"
    if state.objectives[0][0] in PERCENT_METRICS:
        return f"{100 * value:+.2f}"
    return f"{value:+.4g}"


# ------------------------------------------------------------------------------------------------ files


def write_report(report: Report, out: Path | str) -> list[Path]:
    """Write ``report.html``, ``heatmap.png``, ``history.png`` and ``summary.md`` into ``out``; returns them.

    ``out`` is probed before anything is drawn, and each file is written atomically (``search.store.write_files``):
    a folder that cannot be written is a StoreError naming it and the system's reason, and none of the four files
    of this report stays.

    Pictures ``attnsearch explain`` drew of the best trials are linked from both documents
    (:mod:`attnsearch.report_explain`).

    Example:
        >>> import tempfile
        >>> [path.name for path in write_report(build_report("tests/golden/golden"), tempfile.mkdtemp())]
        ['report.html', 'heatmap.png', 'history.png', 'summary.md']
    """
    import io

    from .search.store import check_writable, write_files

    folder = Path(out)
    check_writable(folder)
    state = report.state
    heatmap, history = io.BytesIO(), io.BytesIO()
    heatmap_png(state, heatmap)  # type: ignore[arg-type]  # matplotlib's savefig takes a file object as well
    history_png(state, history)  # type: ignore[arg-type]
    pictures = explain_pictures(report.results, report.folder, folder)  # attnsearch explain's, when there are
    files = {
        folder / "report.html": _html(report, pictures_html(pictures)).encode("utf-8"),
        folder / "heatmap.png": heatmap.getvalue(),
        folder / "history.png": history.getvalue(),
        folder / "summary.md": (_markdown(report) + pictures_markdown(pictures)).encode("utf-8"),
    }
    write_files(files)
    return list(files)


# -- the document: one list of sections, written as Markdown and as HTML -------------------------------------------


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class _Section:
    title: str
    blocks: list[str | _Table]  # paragraphs and tables, in order


def _document(report: Report) -> tuple[str, list[_Section]]:
    """The report's opening line and its sections: the same content for summary.md and report.html."""
    state = report.state
    results = report.results
    metric = state.objectives[0][0]
    counts = state.counts()
    opening = (
        f"Backbone {', '.join(state.backbones)}; sampler {state.sampler}; pruner {state.pruner}; "
        + ", ".join(f"{counts[k]} {k}" for k in ("complete", "running", "pruned", "failed", "infeasible"))
        + f" of {state.target} trials."
    )
    leaderboard = _Table(
        ["#", "trial", "placements", metric, "params", "FLOPs", "train s"],
        [
            [
                str(rank),
                str(record.number),
                record.label,
                state.format_score(results.score(record))
                + (
                    f" ± {100 * spread:.1f}"
                    if (spread := state.spread(record)) is not None and state.repeats > 1
                    else ""
                ),
                _plain_count(record.metrics.params),
                _plain_count(record.metrics.flops),
                f"{record.metrics.train_seconds:.1f}" if record.metrics.train_seconds is not None else "-",
            ]
            for rank, record in enumerate(results.ranked()[:10], 1)
        ],
    )
    slots, modules, _, labels = placement_grid(state)
    placement = _Table(["slot", *modules], [[slot, *row] for slot, row in zip(slots, labels, strict=True)])
    verdicts = state.verdicts()
    verdict_table = _Table(list(_VERDICT_COLUMNS), [_verdict_row(state, v) for v in verdicts.values()])
    effects = _Table(*_effect_rows(state, report.effects))
    legend = (
        f"Mean {metric}{' (%)' if metric in PERCENT_METRICS else ''} of the complete trials with each placement, "
        "with the 95% interval of that mean where its noise is known (number of trials); "
        f"{BEST} marks a slot's best module, only where its lead over the runner-up is separated (95% CI of the "
        "difference excludes 0)."
    )
    if any(not v.separated for v in verdicts.values()):
        legend += f" {LEADS} marks the leader of a slot where {TIE_SENTENCE}."
    if report.importances:
        importances: list[str | _Table] = [
            report.importance_note + ".",
            _Table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in report.importances.items()]),
        ]
    else:
        importances = [report.importance_note[:1].upper() + report.importance_note[1:] + "."]
    race = confirmation_section(results)
    confirmed = []
    if race is not None:
        blocks: list[str | _Table] = [race.title + ".", *race.sentences, _Table(race.header, race.rows), race.legend]
        confirmed.append(_Section("Confirmation race", blocks))
    return opening, [
        *confirmed,
        _Section("Leaderboard", [leaderboard]),
        _Section("Placement map", [legend, placement]),
        _Section("Verdict per slot", [_verdicts_title(state) + ".", verdict_table]),
        _Section("Effect of each module against none", [_effects_title(state) + ".", effects]),
        _Section("Parameter importances", importances),
    ]


def _markdown(report: Report) -> str:
    opening, sections = _document(report)
    lines = [f"# attnsearch report: {report.state.name}", "", opening]
    for section in sections:
        lines += ["", f"## {section.title}"]
        for block in section.blocks:
            lines += ["", _md_table(block) if isinstance(block, _Table) else block]
    return "\n".join(lines) + "\n"


def _md_table(table: _Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(table.header), line(["---"] * len(table.header)), *(line(r) for r in table.rows)])


def _plain_count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _html(report: Report, maps: str = "") -> str:
    from plotly.offline import get_plotlyjs

    name = html.escape(report.state.name)
    opening, sections = _document(report)
    parts = [f"<h1>attnsearch report: {name}</h1>", f"<p>{html.escape(opening)}</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            parts.append(_html_table(block) if isinstance(block, _Table) else f"<p>{html.escape(block)}</p>")
    parts += [maps] if maps else []
    parts.append("<h2>Plots</h2>")
    for title, figure in html_figures(report):
        div = figure.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
        parts.append(f'<section class="plot"><h3>{html.escape(title)}</h3>{div}</section>')
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>attnsearch report: {name}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "th{background:#f3f3f3}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _html_table(table: _Table) -> str:
    head = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.header) + "</tr>"
    rows = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows]
    return "\n".join([head, *rows, "</table>"])
