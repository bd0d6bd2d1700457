"""``attnsearch modules`` and ``attnsearch slots``: what can be placed, and where."""

from __future__ import annotations

import json
from typing import Any

import click

from ..candidate import STEMS
from ._options import defaulted_option, json_option, plugin_option
from ._output import print_json, print_table

__all__ = ["modules", "slots"]


@click.command()
@json_option
@plugin_option
def modules(as_json: bool) -> None:
    """List the attention modules: registry key, paper, parameters with defaults, origin (built-in or plug-in).

    \b
    Examples:
      attnsearch modules --json
      attnsearch modules --plugin my_gate.py
    """
    from ..attention import list_modules, module_info

    infos = [module_info(key) for key in list_modules()]
    if as_json:
        print_json(
            [
                {
                    "key": i.key,
                    "paper": i.paper,
                    "arxiv": i.arxiv,
                    "params": i.params,
                    "origin": _origin("module", i.key),
                }
                for i in infos
            ]
        )
        return
    rows = [
        [i.key, i.paper + (f" (arXiv {i.arxiv})" if i.arxiv else ""), _params_text(i.params), _origin("module", i.key)]
        for i in infos
    ]
    print_table("Attention modules", ["key", "paper", "parameters (defaults)", "origin"], rows)


def _origin(kind: str, key: str) -> str:
    """``built-in``, or the plug-in that registered ``key``: ``my_gate.py (--plugin)``, ``pkg.mod (entry point x)``."""
    from ..plugins import plugin_of

    plugin = plugin_of(kind, key)
    return "built-in" if plugin is None else plugin.describe()


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in params.items()) or "-"


@click.command()
@click.argument("backbone")
@defaulted_option("--image-size", type=click.IntRange(min=1), default=224, help="Input height and width.")
@defaulted_option("--width", type=click.FloatRange(min=0, min_open=True), default=1.0, help="Channel multiplier.")
@defaulted_option(
    "--stem",
    type=click.Choice(STEMS),
    default="imagenet",
    help="ResNets: 7x7 stride-2 conv + max pool, or one 3x3 stride-1 conv for 32x32 images.",
)
@json_option
@plugin_option
def slots(backbone: str, image_size: int, width: float, stem: str, as_json: bool) -> None:
    """List the slots of BACKBONE with the channels and map size each one sees (a plug-in's: with its origin).

    \b
    Examples:
      attnsearch slots vgg16_bn --image-size 32
      attnsearch slots densenet_bc100 --image-size 32 --json
      attnsearch slots resnet18 --image-size 32 --stem cifar
    """
    from ..model import list_slots

    found = list_slots(backbone, image_size=image_size, width=width, stem=stem)
    origin = _origin("backbone", backbone)
    if as_json:
        print_json(
            [
                {
                    "name": s.name,
                    "channels": s.channels,
                    "height": s.height,
                    "width": s.width,
                    "block_level": s.block_level,
                    "origin": origin,
                }
                for s in found
            ]
        )
        return
    rows = [[s.name, str(s.channels), f"{s.height} x {s.width}"] for s in found]
    title = (
        f"Slots of {backbone} at {image_size}x{image_size}, width {width:g}"
        + (f", {stem} stem" if stem != "imagenet" else "")
        + (f"; {origin}" if origin != "built-in" else "")
    )
    print_table(title, ["slot", "channels", "H x W"], rows)
