"""Looking into the quarantine: list, show one row, export (streamed, never all in memory)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sqlalchemy import Connection, func, select

from database.models import etl_quarantine
from monitoring.history import require_run
from utils.errors import PlatformError
from utils.files import private_open
from utils.vocabulary import REASONS

COLUMNS = (
    "quarantine_id", "run_id", "source_row", "reasons", "invoice_no", "stock_code", "description", "quantity",
    "invoice_date", "unit_price", "customer_id", "country", "raw_line", "quarantined_at",
)  # fmt: skip
EXPORT_FORMATS = ("csv", "json")


def check_reason(reason: str) -> None:
    if reason not in REASONS:
        raise PlatformError(f"unknown reason '{reason}'; choose from {', '.join(sorted(REASONS))}")


def _filtered(query, conn: Connection, run_id: int | None, reason: str | None):
    if run_id is not None:
        require_run(conn, run_id)
        query = query.where(etl_quarantine.c.run_id == run_id)
    if reason is not None:
        check_reason(reason)
        pattern = "%;" + reason.replace("_", "\\_") + ";%"
        query = query.where((";" + etl_quarantine.c.reasons + ";").like(pattern, escape="\\"))
    return query


def _row(row) -> dict:
    data = {c: getattr(row, c) for c in COLUMNS}
    data["reason_descriptions"] = [REASONS.get(code, code) for code in (row.reasons or "").split(";") if code]
    return data


def list_rows(conn: Connection, run_id: int | None, reason: str | None, limit: int) -> tuple[list[dict], int]:
    """The first `limit` matching rows (by id) and how many match in all."""
    rows = conn.execute(_filtered(select(etl_quarantine), conn, run_id, reason).order_by(etl_quarantine.c.quarantine_id).limit(limit))
    total = conn.execute(_filtered(select(func.count()).select_from(etl_quarantine), conn, run_id, reason)).scalar_one()
    return [_row(r) for r in rows], int(total)


def show(conn: Connection, quarantine_id: int) -> dict:
    row = conn.execute(select(etl_quarantine).where(etl_quarantine.c.quarantine_id == quarantine_id)).first()
    if row is None:
        raise PlatformError(f"quarantine row {quarantine_id} not found; see python main.py quarantine list")
    return _row(row)


def _plain(value: object) -> object:
    return value.isoformat(sep=" ") if hasattr(value, "isoformat") else value


def export(conn: Connection, path: Path, fmt: str, run_id: int | None = None, reason: str | None = None) -> int:
    """Write the matching rows to `path` as CSV (header + rows) or a JSON array; returns the row count."""
    if fmt not in EXPORT_FORMATS:
        raise PlatformError(f"unknown export format '{fmt}'; choose from {', '.join(EXPORT_FORMATS)}")
    query = _filtered(select(*(etl_quarantine.c[c] for c in COLUMNS)), conn, run_id, reason).order_by(etl_quarantine.c.quarantine_id)
    rows = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
    count = 0
    try:
        with private_open(path, "w", newline="") as fh:
            if fmt == "csv":
                writer = csv.writer(fh)
                writer.writerow(COLUMNS)
                for row in rows:
                    writer.writerow([_plain(v) for v in row])
                    count += 1
            else:
                fh.write("[")
                for row in rows:
                    fh.write(
                        ("," if count else "") + "\n" + json.dumps(dict(zip(COLUMNS, map(_plain, row), strict=True)), ensure_ascii=False)
                    )
                    count += 1
                fh.write("\n]\n")
    except OSError as exc:
        raise PlatformError(f"cannot write {path}: {exc.strerror or exc}") from None
    return count
