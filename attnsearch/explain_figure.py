"""The picture of :func:`attnsearch.explain.explain`: one row per image, drawn with matplotlib (Agg) into PNG bytes.

Columns: the input with its true class; then for each trial drawn (the trial, then the one compared with it) its
Grad-CAM for the class it predicted (scaled to its maximum per image, so 1 is where the evidence is strongest) and
each placed module's spatial map (in [0, 1] as the module computes it), each over the greyed input in the ``jet``
colour map with a colour bar; a module without a spatial map gets a cell that says so.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .explain import Explanation, ModuleMap, TrialMaps

__all__ = ["draw_explanation"]

CELL_INCHES = 2.1
DPI = 72
ALPHA = 0.5  # the map's opacity over the image


def draw_explanation(found: Explanation) -> bytes:
    """The PNG bytes of ``found``'s grid: K rows, one per image; columns as the module docstring says.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from attnsearch.explain import Explanation, ModuleMap, TrialMaps
        >>> maps = TrialMaps(0, "block3=se", "block5", (2, 2), (1,), (0.9,), torch.rand(1, 8, 8),
        ...                  (ModuleMap("block3", "se", None, None, "no spatial map"),))
        >>> found = Explanation((maps,), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), (0,), (0,), ("a", "b"),
        ...                     Path(tempfile.mkdtemp()) / "x.png", "")
        >>> draw_explanation(found)[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    columns = 1 + sum(1 + len(t.modules) for t in found.trials)
    rows = len(found.indices)
    figure = Figure(figsize=(CELL_INCHES * columns, CELL_INCHES * rows + 0.6), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    images = [img.permute(1, 2, 0).numpy() for img in found.images]  # (S, S, 3) uint8 each
    grey = [img.float().mean(dim=0).numpy() for img in found.images]  # (S, S): the background of each map
    for row in range(rows):
        ax = axes[row][0]
        ax.imshow(images[row], interpolation="nearest")
        _plain(ax)
        ax.set_title(_top("input", row) + f"true: {found.classes[found.labels[row]]}", fontsize=8)
        column = 1
        for trial in found.trials:
            _gradcam(figure, axes[row][column], trial, row, grey[row], found.classes)
            column += 1
            for module in trial.modules:
                _module(figure, axes[row][column], trial, module, row, grey[row])
                column += 1
    title = " vs ".join(_name(t) for t in found.trials)
    figure.suptitle(title + (f"  ({found.note})" if found.note else ""), fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _name(trial: TrialMaps) -> str:
    return f"trial {trial.number}: {trial.label}" if trial.number is not None else trial.label


def _top(header: str, row: int) -> str:
    """The column's header above the first row's cell only."""
    return f"{header}\n" if row == 0 else ""


def _plain(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(figure: Figure, ax: Axes, grey: object, values: torch.Tensor) -> None:
    ax.imshow(grey, cmap="gray", interpolation="nearest")
    shown = ax.imshow(values.numpy(), cmap="jet", alpha=ALPHA, vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    _plain(ax)


def _gradcam(figure: Figure, ax: Axes, trial: TrialMaps, row: int, grey: object, classes: tuple[str, ...]) -> None:
    cam = trial.gradcam[row]
    peak = float(cam.max())
    scaled = cam / peak if peak > 0 else torch.zeros_like(cam)
    _overlay(figure, ax, grey, scaled)
    h, w = trial.cam_size
    header = _top(f"trial {trial.number} Grad-CAM, {trial.layer.split(' ')[0]} ({h}x{w})", row)
    predicted = classes[trial.predicted[row]] if trial.predicted[row] < len(classes) else str(trial.predicted[row])
    ax.set_title(header + f"pred: {predicted} ({trial.confidence[row]:.2f})", fontsize=8)


def _module(figure: Figure, ax: Axes, trial: TrialMaps, module: ModuleMap, row: int, grey: object) -> None:
    header = f"trial {trial.number} {module.slot}: {module.module}"
    if module.maps is None:
        _plain(ax)
        ax.set_facecolor("#f3f3f3")
        ax.text(0.5, 0.5, f"{module.module}:\n{module.note}", ha="center", va="center", fontsize=8)
        ax.set_title(_top(header, row), fontsize=8)
        return
    _overlay(figure, ax, grey, module.maps[row])
    size = f"{module.size[0]}x{module.size[1]} map" if module.size else ""
    detail = ", ".join(part for part in (size, module.note) if part)
    ax.set_title(_top(header, row) + detail, fontsize=8)
