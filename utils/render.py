"""Rendering of command results: tables for people, JSON for scripts.

Tables fit the width they are given: a terminal's, or `COLUMNS`; piped output without `COLUMNS`
has no width to fit, so nothing is folded. Every column keeps at least its longest word (a figure
or a date: its longest value), so a word is never cut in two; when the columns' minimums do not
fit, the rightmost columns are left out and a note under the table names them. Figures are
right-aligned. Beyond PLAIN_ROWS rows a plain renderer writes the lines directly (rich lays out
about 3,000 rows a second), with a one-line note.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

from rich.console import Console

FORMATS = ("table", "json")
PLAIN_ROWS = 500  # more rows than this: the plain renderer
UNLIMITED = 100_000  # the width of output that has no width (piped, no COLUMNS)
_IDENTIFIER = re.compile(r"(^|_)(year|id|key|no|code|number|run|version)$", re.IGNORECASE)  # numbers shown without separators
_FIGURE = re.compile(r"^[-+]?(\d[\d,]*(\.\d+)?|\.\d+)( ?%| s| ms| kB| KB| MB| GB)?$")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def to_json(data: Any) -> str:
    """JSON text with dates and decimals as strings."""
    return json.dumps(data, default=_plain, ensure_ascii=False, indent=2)


def json_bytes(data: Any) -> bytes:
    """`to_json`'s document, encoded by orjson (ten times faster on thousands of rows)."""
    import orjson

    return orjson.dumps(data, default=_plain, option=orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS)


def plural(n: int, noun: str) -> str:
    """`1 row`, `4,371 rows`."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


# -- tables ---------------------------------------------------------------------------------


@dataclass
class Column:
    header: str
    right: bool = False  # figures: right-aligned
    wrap: bool = True  # text wraps at spaces; figures and dates never wrap


@dataclass
class Grid:
    """A table of cells already formatted as text, rendered to fit a width (see the module)."""

    columns: list[Column]
    cells: list[list[str]]
    title: str | None = None
    footer: list[str] = field(default_factory=list)  # lines under the table (summary, notes)

    def minimum(self, i: int) -> int:
        """The narrowest column `i` can be without cutting a word (or a figure, or a date)."""
        col = self.columns[i]
        widest = max((len(w) for w in col.header.split()), default=0)
        values = (line[i] for line in self.cells)
        if col.wrap:
            return max(widest, max((len(w) for v in values for w in v.split()), default=0))
        return max(widest, max(map(len, values), default=0))

    def fit(self, width: int) -> list[int]:
        """Indexes of the columns that fit `width` with every minimum kept (the first always)."""
        kept = list(range(len(self.columns)))
        mins = [self.minimum(i) for i in kept]
        while len(kept) > 1 and sum(mins[i] + 3 for i in kept) + 1 > width:
            kept.pop()
        return kept

    def left_out(self, kept: list[int]) -> str | None:
        dropped = [self.columns[i].header for i in range(len(self.columns)) if i not in kept]
        if not dropped:
            return None
        return f"not shown at this width: {', '.join(dropped)} (widen the terminal, set COLUMNS, or use --format json)"

    def __rich_console__(self, console, options):
        from rich.table import Table
        from rich.text import Text

        kept = self.fit(options.max_width)
        table = Table(title=Text(self.title) if self.title else None, show_lines=False)
        for i in kept:
            col = self.columns[i]
            table.add_column(
                Text(col.header), justify="right" if col.right else "left", no_wrap=not col.wrap, overflow="fold",
                min_width=None if col.wrap else self.minimum(i),
            )  # fmt: skip
        for line in self.cells:
            table.add_row(*(Text(line[i]) for i in kept))  # Text: data is shown as it is, never read as markup
        yield table
        for text in [*self.footer, self.left_out(kept)]:
            if text:
                yield Text(text, style="dim" if text.startswith(("note:", "not shown")) else "")

    def write_plain(self, out: IO[str], width: int) -> None:
        """The plain renderer: padded columns, a rule under the headers, no wrapping."""
        kept = self.fit(width)
        widths = {i: max(len(self.columns[i].header), max((len(line[i]) for line in self.cells), default=0)) for i in kept}
        total = sum(widths.values()) + 2 * (len(kept) - 1)
        if total > width:  # a cell wider than its word minimum: fewer columns again, at natural widths
            while len(kept) > 1 and sum(widths[i] for i in kept) + 2 * (len(kept) - 1) > width:
                kept.pop()
        specs = [(i, widths[i], self.columns[i].right) for i in kept]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if right else v.ljust(w) for v, (_, w, right) in zip(values, specs, strict=True)).rstrip()

        parts = [self.title] if self.title else []
        parts.append(line([self.columns[i].header for i in kept]))
        parts.append("  ".join("-" * w for _, w, _ in specs))
        parts.extend(line([cells[i] for i in kept]) for cells in self.cells)
        parts.extend(self.footer)
        parts.append(
            f"note: {plural(len(self.cells), 'row')}, shown plain (more than {PLAIN_ROWS:,} rows); --format csv or json for scripts"
        )
        if note := self.left_out(kept):
            parts.append(note)
        out.write("\n".join(parts) + "\n")


def is_figure(text: str) -> bool:
    """'1,234', '-0.50', '12.5%', '3.1 ms': right-aligned in a table."""
    return bool(_FIGURE.match(text))


def table(rows: Iterable[Mapping[str, Any]], title: str | None = None, columns: list[str] | None = None) -> Grid:
    """A table of `rows` (dicts); columns from the first row unless given. Columns whose values
    are all figures are right-aligned and never wrap."""
    rows = list(rows)
    columns = columns or (list(rows[0].keys()) if rows else [])
    cells = [["" if row.get(c) is None else str(_plain(row.get(c))) for c in columns] for row in rows]
    out = []
    for i, name in enumerate(columns):
        values = [line[i] for line in cells if line[i]]
        figures = bool(values) and all(map(is_figure, values))
        out.append(Column(name, right=figures, wrap=not figures))
    return Grid(out, cells, title)


def values_grid(columns: list[str], rows: list[tuple], title: str | None = None) -> Grid:
    """A table of raw values (a query's answer): numbers right-aligned with thousands separators
    and one number of decimals per column, dates and times never wrapped."""
    formatted = [_format_column([row[i] for row in rows], _IDENTIFIER.search(name) is None) for i, name in enumerate(columns)]
    cells = [list(line) for line in zip(*(f[0] for f in formatted), strict=True)] if rows else []
    cols = [Column(name, right=f[1], wrap=f[2]) for name, f in zip(columns, formatted, strict=True)]
    return Grid(cols, cells, title)


def _format_column(values: list[Any], separators: bool = True) -> tuple[list[str], bool, bool]:
    """(cells, right-aligned, may wrap) of one column's values."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in present):
        places = max(map(_decimals, present))
        spec = f"{',' if separators else ''}.{places}f"
        return ["" if v is None else format(v, spec) for v in values], True, False
    if present and all(isinstance(v, date) for v in present):
        return ["" if v is None else str(v) for v in values], False, False
    return ["" if v is None else str(v) for v in values], False, True


def _decimals(value: int | float | Decimal) -> int:
    if isinstance(value, int):
        return 0
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        return min(-exponent, 6) if isinstance(exponent, int) and exponent < 0 else 0
    if value != value or value in (float("inf"), float("-inf")):
        return 0
    text = repr(value)
    return 0 if "e" in text else min(len(text.partition(".")[2].rstrip("0")), 4)


# -- output -----------------------------------------------------------------------------------


def output_width(out: IO[str] | None = None) -> int:
    """The width to fit: COLUMNS, else a terminal's, else none (UNLIMITED)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    out = out or sys.stdout
    try:
        if out.isatty():
            return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    return UNLIMITED


def console(out: IO[str] | None = None) -> Console:
    """A rich console on standard output that fits `output_width`."""
    out = out or sys.stdout
    return Console(file=out, soft_wrap=False, width=output_width(out))


def show(renderable: Any, out: IO[str] | None = None) -> None:
    """Print a table (plainly when it is long) or any rich renderable."""
    out = out or sys.stdout
    if isinstance(renderable, Grid) and len(renderable.cells) > PLAIN_ROWS:
        renderable.write_plain(out, output_width(out))
        out.flush()
        return
    console(out).print(renderable)


def emit(data: Any, fmt: str, render: Any = None) -> None:
    """Print `data` as JSON, or print the renderable `render` (built from data)."""
    if fmt == "json":
        sys.stdout.write(to_json(data) + "\n")
        sys.stdout.flush()
    else:
        show(render if render is not None else data)
