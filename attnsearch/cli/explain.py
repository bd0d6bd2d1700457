"""``attnsearch explain``: Grad-CAM and the attention modules' own maps of a trained trial, as one picture."""

from __future__ import annotations

from typing import Any

import click

from ._options import defaulted_option, plugin_option, results_dir_argument

__all__ = ["explain"]


class _Compare(click.ParamType):
    """A trial number, or ``none``."""

    name = "N|none"

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:  # click would upper-case the name
        return "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str | None:
        text = str(value)
        if text in ("auto", "none"):
            return None if text == "none" else "auto"
        if text.isdigit():
            return int(text)
        self.fail(f"{text!r:.40} is not a trial number or 'none'", param, ctx)


@click.command()
@results_dir_argument
@click.option("--trial", type=click.IntRange(min=0), required=True, help="The trial to explain (its weights kept).")
@defaulted_option("--images", type=click.IntRange(min=1, max=16), default=4, help="Validation images, one per row.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder of the picture  [default: RESULTS_DIR/explain]")
@click.option(
    "--compare",
    type=_Compare(),
    default="auto",
    help="A trial drawn side by side on the same images, or 'none'  [default: the best trial with nothing placed]",
)
@plugin_option
def explain(results_dir: str, trial: int, images: int, out: str | None, compare: int | str | None) -> None:
    """Show where trial N looks on a few validation images: Grad-CAM of the last block for the predicted class
    (Selvaraju et al., ICCV 2017), and each placed module's own spatial map (CBAM's spatial gate, triplet's H-W
    gate, coordinate attention's gates, self-attention from the centre), over the image with a colour bar.

    The images are chosen by a fixed seed, one class after another: the same for every trial of the study.
    Needs the trial's weights: the search keeps the best trial's (more with run --keep-weights K).

    \b
    Examples:
      attnsearch explain results/vgg16-shapes-quick --trial 3
      attnsearch explain results/my-study --trial 7 --images 8 --compare 2
      attnsearch explain results/my-study --trial 7 --compare none --out figures
    """
    from ..explain import explain as explain_trial

    found = explain_trial(
        results_dir,
        trial=trial,
        images=images,
        out=out,
        compare=compare,
        progress=lambda line: click.echo(line, err=True),
    )
    for shown in found.trials:
        right = sum(p == t for p, t in zip(shown.predicted, found.labels, strict=True))
        click.echo(f"Trial {shown.number}: {shown.label}  ({right} of {len(found.labels)} images right)")
    if found.note:
        click.echo(f"Not compared: {found.note}")
    click.echo(f"Picture: {found.picture}")
