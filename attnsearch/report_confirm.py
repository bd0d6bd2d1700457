"""The report's "Confirmation race" section: the race's verdict and a row per contender, from its records alone.

The race (:mod:`attnsearch.search.confirm`) trains the search's best distinct candidates and the baseline again
over seeds shared across them; :meth:`attnsearch.results.StudyResults.confirmation` judges its records. The section
gives the verdict in the words of :func:`attnsearch.confirmation.describe_confirmation` (a placement "beats the
baseline" only where the 95% interval of its mean paired difference lies wholly on the better side of zero), then a
table: each contender's rounds, its mean difference against the baseline with that interval, the round it was
dropped in, and its test-split accuracy, labelled as reported only (no decision of the search or the race reads it),
with the Wilson 95% interval for its number of test images (:func:`attnsearch.stats.wilson_interval`). A study
without a race has no section. :mod:`attnsearch.report` writes it into the terminal, ``summary.md`` and
``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .confirmation import Contender, describe_confirmation
from .record import PERCENT_METRICS
from .results import StudyResults
from .stats import wilson_interval

__all__ = ["TEST_COLUMN", "ConfirmationSection", "confirmation_section"]

TEST_COLUMN = "test (reported only, never used to select)"


@dataclass(frozen=True)
class ConfirmationSection:
    """What the report writes about the race: its title, verdict lines, table and the table's legend."""

    title: str
    sentences: list[str]
    header: list[str]
    rows: list[list[str]]
    legend: str


def confirmation_section(results: StudyResults) -> ConfirmationSection | None:
    """The race's section of the report; None for a study without confirmation records.

    Example:
        >>> confirmation_section(StudyResults()) is None
        True
    """
    if not results.confirm_records:
        return None
    verdict = results.confirmation()
    metric = verdict.metric
    percent = metric in PERCENT_METRICS
    unit = " (pt)" if percent else ""
    header = ["contender", "rounds", f"vs baseline{unit}, 95% CI", "dropped in", TEST_COLUMN, "test images"]
    rows = [_row(c, percent) for c in verdict.contenders]
    planned = f" of {verdict.seeds}" if verdict.seeds else ""
    state = "over" if verdict.finished else "in progress"
    title = f"Confirmation race ({metric}; {verdict.rounds}{planned} seed rounds finished, {state})"
    legend = (
        "Each round trains every contender still in, and the baseline, with one seed shared by all of them (same "
        "data order, same initialisation of the backbone's layers). The difference is the mean of the paired "
        "differences against the baseline over the rounds both scored, with its 95% t-interval (never narrower "
        "than the scores' own binomial noise; '-' before two such rounds); a placement beats the baseline only "
        "where that interval lies wholly on the better side of 0. After each round from the second, a contender "
        "whose paired interval against the leader lay wholly on the worse side of 0 was dropped. The test column "
        "is the mean test-split accuracy over a contender's seeds, with the Wilson 95% interval for its number "
        "of test images (the split's sampling noise): reported only, never used to select, rank or drop anything."
    )
    return ConfirmationSection(title, describe_confirmation(verdict), header, rows, legend)


def _row(c: Contender, percent: bool) -> list[str]:
    def value(x: float) -> str:
        return f"{100 * x:+.2f}" if percent else f"{x:+.4g}"

    if c.baseline:
        versus = "reference"
    elif c.low is None or c.high is None:
        versus = "-"
    else:
        versus = f"{value(c.difference or 0.0)} [{value(c.low)}, {value(c.high)}]"
    if c.failed:
        r, why = next(iter(c.failed.items()))
        dropped = f"round {r} (failed: {why})"
    elif c.dropped_in is not None:
        dropped = f"round {c.dropped_in}"
    else:
        dropped = "-"
    test = images = "-"
    if c.test_acc is not None and c.test_images:
        low, high = wilson_interval(round(c.test_acc * c.test_images), c.test_images)
        test = f"{100 * c.test_acc:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
        if c.test_trials != c.seeds:  # some of its trials scored no test split
            test += f" ({c.test_trials} seed{'s' if c.test_trials != 1 else ''})"
        images = f"{c.test_images:,}"
    return [c.label, str(c.seeds), versus, dropped, test, images]
