"""How every command prints: a titled rich table, or indented JSON."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["print_json", "print_table"]


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(title, style="bold", highlight=False)
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_json(value: Any) -> None:
    """``value`` as indented standard JSON (NaN and infinities as null: :func:`attnsearch.schema.plain`)."""
    from ..schema import plain

    click.echo(json.dumps(plain(value), indent=2, allow_nan=False))
