"""The report's section on attention maps: links to the pictures ``attnsearch explain`` drew for the best trials.

``explain`` writes ``RESULTS_DIR/explain/trial-<n>.png`` (or ``trial-<n>-vs-<m>.png``); the report links those of
its best trials (the leaderboard's first :data:`TOP`) that exist, relative to the report's folder, so the report and
the study folder can move together. Nothing is drawn here: a study never explained gets no section.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from .results import StudyResults

__all__ = ["TOP", "Picture", "explain_pictures", "pictures_html", "pictures_markdown"]

TOP = 3  # leaderboard places whose pictures are linked
TITLE = "Attention maps"
LEGEND = (
    "Grad-CAM of the last block and each placed module's own spatial map on the same validation images, drawn by "
    "attnsearch explain; make more with: attnsearch explain RESULTS_DIR --trial N"
)


@dataclass(frozen=True)
class Picture:
    """One picture of one trial."""

    trial: int
    label: str  # the trial's placements
    href: str  # the picture's path relative to the report's folder, with forward slashes

    @property
    def name(self) -> str:
        return self.href.rpartition("/")[2]


def explain_pictures(results: StudyResults, root: Path | str, out: Path | str, *, top: int = TOP) -> list[Picture]:
    """The explain pictures under ``root/explain`` of the ``top`` best trials, best first, as links from ``out``.

    Example:
        >>> import tempfile
        >>> from attnsearch.results import StudyResults
        >>> explain_pictures(StudyResults.from_store("tests/golden/golden"), "tests/golden/golden", tempfile.mkdtemp())
        []
    """
    folder = Path(root) / "explain"
    if not folder.is_dir():
        return []
    found = []
    for record in results.ranked()[:top]:
        n = record.number
        for path in [*folder.glob(f"trial-{n}.png"), *sorted(folder.glob(f"trial-{n}-vs-*.png"))]:
            href = Path(os.path.relpath(path.resolve(), Path(out).resolve())).as_posix()
            found.append(Picture(n, record.label, href))
    return found


def pictures_markdown(pictures: list[Picture]) -> str:
    """The section in Markdown (an image per picture); "" without pictures."""
    if not pictures:
        return ""
    lines = ["", f"## {TITLE}", "", LEGEND + ".", ""]
    for p in pictures:
        lines += [f"Trial {p.trial} ({p.label}): [{p.name}]({p.href})", "", f"![trial {p.trial}]({p.href})", ""]
    return "\n".join(lines[:-1]) + "\n"


def pictures_html(pictures: list[Picture]) -> str:
    """The section in HTML (each picture shown, linked to itself); "" without pictures."""
    if not pictures:
        return ""
    parts = [f"<h2>{TITLE}</h2>", f"<p>{html.escape(LEGEND)}.</p>"]
    for p in pictures:
        href = html.escape(p.href, quote=True)
        parts.append(
            f"<h3>Trial {p.trial} ({html.escape(p.label)})</h3>"
            f'<a href="{href}"><img src="{href}" alt="{html.escape(p.name)}" style="max-width:100%"></a>'
        )
    return "\n".join(parts)
