"""Reports as text: a rich table for people, CSV and JSON for scripts; exports written user-only,
the HTML dashboard with the user's umask."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

from reports.analytics import Report, ReportError
from utils import files
from utils.render import Column, Grid, plural

SHARE_DIGITS = 4  # shares and rates in CSV and JSON: fractions rounded to 4 decimals
_LABELS = {"aov": "avg order", "from": "from", "to": "to"}


def cell(value: Any, kind: str) -> str:
    """A value as a table shows it."""
    if value is None:
        return "–"
    if kind == "int":
        return f"{value:,}"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "share":
        return f"{value:.1%}"
    if kind == "change":
        return f"{value:+.1%}"
    if kind == "decimal":
        return f"{value:,}"
    return str(value)


def plain(value: Any, kind: str = "text") -> Any:
    """A value for JSON: money and decimals as numbers, shares rounded, dates as ISO text."""
    if value is None:
        return None
    if kind in ("share", "change"):
        return round(float(value), SHARE_DIGITS)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _summary_kind(key: str, value: Any) -> str:
    if key.endswith(("share", "rate")):
        return "share"
    if isinstance(value, Decimal):
        return "money" if value.as_tuple().exponent == -2 else "decimal"
    return "int" if isinstance(value, int) and not isinstance(value, bool) else "text"


def as_dict(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    kinds = {c.key: c.kind for c in report.columns}
    return {
        "report": report.name,
        "title": report.title,
        "params": {k: plain(v) for k, v in report.params.items()},
        "summary": {k: plain(v, _summary_kind(k, v)) for k, v in report.summary.items()},
        "columns": [c.key for c in report.columns],
        "rows": [{k: plain(v, kinds.get(k, "text")) for k, v in row.items()} for row in report.rows],
        "notes": report.notes,
        **({"details": report.details} if report.details else {}),
        "cache": report.cache,
        "data_version": report.data_version,
        "form": report.form,
        "elapsed_ms": round(report.elapsed_ms, 3),
    }


def to_json(report: Report) -> str:
    return json.dumps(as_dict(report), ensure_ascii=False, indent=2, default=plain)


def to_csv(report: Report) -> str:
    """Header and rows: the columns' keys, money with 2 decimals, shares as fractions."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")  # None is written empty; dates and decimals as str() gives them
    keys = [c.key for c in report.columns]
    shares = [i for i, c in enumerate(report.columns) if c.kind in ("share", "change")]
    writer.writerow(keys)
    values = itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
    if not shares:
        writer.writerows(map(values, report.rows))
        return out.getvalue()
    for row in report.rows:
        line = list(values(row))
        for i in shares:
            if line[i] is not None:
                line[i] = f"{line[i]:.{SHARE_DIGITS}f}"
        writer.writerow(line)
    return out.getvalue()


def to_table(report: Report) -> Grid:
    """The report's table (fitted to the width: utils.render.Grid) with the summary and notes under it.
    Figures and dates are never folded or cut: text columns give way, then the rightmost columns."""
    cells = [[cell(row.get(c.key), c.kind) for c in report.columns] for row in report.rows]
    columns = [Column(c.header, right=c.kind not in ("text", "date"), wrap=c.kind == "text") for c in report.columns]
    footer = []
    if report.summary:
        footer.append(
            " · ".join(f"{_LABELS.get(k, k.replace('_', ' '))} {cell(v, _summary_kind(k, v))}" for k, v in report.summary.items())
        )
    footer += [f"note: {n}" for n in report.notes]
    return Grid(columns, cells, report.title, footer)


def status_line(report: Report) -> str:
    """`12 rows in 3.1 ms · cache hit · data version 4.4.4.4 · aggregate` (for standard error)."""
    return f"{plural(len(report.rows), 'row')} in {report.elapsed_ms:.1f} ms · cache {report.cache} · data version {report.data_version} · {report.form}"


def write_output(path: Path, content: str, shared: bool = False) -> int:
    """Write `content` to `path` atomically (utils.files), user-only (0600), or `shared` with the
    mode the user's umask gives (the dashboard); a missing folder or a failed write is a
    ReportError. Returns the bytes written."""
    folder = path.parent
    if not folder.is_dir():
        raise ReportError(f"cannot write {path}: the folder {folder} does not exist; create it first or choose another path")
    try:
        return files.write_shared(path, content) if shared else files.write_private(path, content)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None
