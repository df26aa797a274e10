"""Rendering of command results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def to_json(data: Any) -> str:
    """JSON text with dates and decimals as strings."""
    return json.dumps(data, default=_plain, ensure_ascii=False, indent=2)


def table(rows: Iterable[Mapping[str, Any]], title: str | None = None, columns: list[str] | None = None) -> Table:
    """A rich table of `rows` (dicts); columns from the first row unless given."""
    rows = list(rows)
    columns = columns or (list(rows[0].keys()) if rows else [])
    out = Table(title=title, show_lines=False)
    for col in columns:
        out.add_column(col, overflow="fold")
    for row in rows:
        out.add_row(*("" if row.get(c) is None else str(_plain(row.get(c))) for c in columns))
    return out


def emit(data: Any, fmt: str, render: Any = None) -> None:
    """Print `data` as JSON, or print the rich renderable `render` (built from data)."""
    console = Console(soft_wrap=False)
    if fmt == "json":
        console.out(to_json(data), highlight=False)
    else:
        console.print(render if render is not None else data)
