"""Lineage: source -> cleaning -> target tables per run, column mappings, and a fact's origin."""

from __future__ import annotations

import json

from sqlalchemy import Engine, text

from metadata.catalog import known_table
from utils.errors import PlatformError
from utils.urls import mask_url

COLUMN_LINEAGE: list[tuple[str, str, str]] = [
    ("InvoiceNo", "fact_sales.invoice_no", "trimmed, upper-cased"),
    (
        "InvoiceNo",
        "fact_sales.transaction_type",
        "C prefix or negative quantity -> return, A prefix or stock code B -> adjustment, else sale",
    ),
    ("StockCode", "dim_products.stock_code", "trimmed, upper-cased"),
    ("StockCode", "dim_products.category", "non-merchandise codes and prefixes from products.* settings"),
    ("StockCode", "fact_sales.product_key", "surrogate key of the product (dimension-key cache)"),
    ("Description", "dim_products.description", "trimmed; the latest non-empty description wins (SCD1)"),
    ("Quantity", "fact_sales.quantity", "trimmed, parsed as a whole number"),
    ("InvoiceDate", "fact_sales.transaction_datetime", "parsed with etl.date_formats, first match wins"),
    ("InvoiceDate", "fact_sales.date_key", "YYYYMMDD of the transaction date -> dim_date"),
    ("UnitPrice", "fact_sales.unit_price", "trimmed, parsed as an exact decimal (3 places)"),
    ("UnitPrice", "dim_products.current_unit_price", "the latest price wins (SCD1)"),
    ("Quantity, UnitPrice", "fact_sales.line_total", "quantity x unit_price in exact integer thousandths"),
    ("CustomerID", "dim_customers.customer_id", "trimmed, '17850.0' -> '17850'"),
    ("CustomerID", "fact_sales.customer_key", "the customer's version valid at the transaction time; -1 when empty"),
    ("Country", "dim_customers.country", "trimmed; a country new for the customer opens an SCD2 version"),
    ("all eight", "fact_sales.line_id", "SipHash-2-4 of the canonical values and the occurrence number (exactly-once)"),
    ("all eight", "etl_quarantine.*", "raw values kept as read, with reason codes"),
]


def _run(engine: Engine, run_id: int) -> dict:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM etl_runs WHERE run_id = :r"), {"r": run_id}).first()
    if row is None:
        raise PlatformError(f"run {run_id} not found; see python main.py runs list")
    return dict(row._mapping)


def run_lineage(engine: Engine, run_id: int) -> dict:
    """The edges one run recorded: source -> cleaning -> each target table."""
    run = _run(engine, run_id)
    reasons = json.loads(run["quarantine_by_reason"] or "{}")
    dims = json.loads(run["dimension_changes"] or "{}")
    targets = {"fact_sales": {"inserted": run["rows_loaded"]}, "etl_quarantine": {"inserted": run["rows_quarantined"]}}
    targets.update({t: c for t, c in dims.items() if t.startswith("dim_")})
    return {
        "run_id": run_id,
        "kind": run["kind"],
        "status": run["status"],
        "source": {
            "location": mask_url(run["source"]),
            "checksum": run["source_checksum"],
            "encoding": run["encoding"],
            "rows": run["rows_read"],
        },
        "cleaning": {
            "accepted": run["rows_loaded"] + run["rows_already_loaded"],
            "already_loaded": run["rows_already_loaded"],
            "quarantined": run["rows_quarantined"],
            "quarantined_by_reason": reasons,
        },
        "targets": targets,
        "columns": [{"source": s, "target": t, "transformation": how} for s, t, how in COLUMN_LINEAGE],
    }


def lineage(engine: Engine, run_id: int | None = None, table: str | None = None) -> list[dict]:
    """Lineage of one run, of the runs that wrote to `table`, or of every load."""
    if run_id is not None:
        return [run_lineage(engine, run_id)]
    if table is not None:
        known_table(table)
    with engine.connect() as conn:
        ids = [
            r
            for (r,) in conn.execute(
                text(
                    "SELECT run_id FROM etl_runs WHERE kind IN ('load', 'replay') AND status IN ('success', 'rolled_back') ORDER BY run_id"
                )
            )
        ]
    runs = [run_lineage(engine, r) for r in ids]
    if table is not None:
        runs = [r for r in runs if any(v for v in r["targets"].get(table, {}).values())]
    return runs


def fact_origin(engine: Engine, sales_key: int) -> dict:
    """Where one fact row came from: run, source file, row number, and the line if still there."""
    with engine.connect() as conn:
        fact = conn.execute(
            text("SELECT sales_key, run_id, source_row, invoice_no, line_id FROM fact_sales WHERE sales_key = :k"), {"k": sales_key}
        ).first()
    if fact is None:
        raise PlatformError(f"fact with sales_key {sales_key} not found")
    run = _run(engine, fact.run_id)
    return {
        "sales_key": sales_key,
        "run_id": fact.run_id,
        "source": mask_url(run["source"]),
        "source_checksum": run["source_checksum"],
        "source_row": fact.source_row,
        # a text file's line (header on line 1, no field spanning lines); other sources count records
        "line_number": fact.source_row + 1 if _is_text_file(run["source"]) else None,
        "invoice_no": fact.invoice_no,
        "line_id": fact.line_id,
    }


def _is_text_file(location: str) -> bool:
    return "://" not in location and location.lower().endswith((".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".gz", ".bz2"))


def mermaid(runs: list[dict]) -> str:
    """A Mermaid flowchart of the runs' edges."""
    lines = ["flowchart LR"]
    for r in runs:
        n = r["run_id"]
        src = r["source"]["location"].replace('"', "'")
        lines.append(f'  src{n}["{src}<br/>{r["source"]["rows"]:,} rows"] --> clean{n}["run {n}: cleaning"]')
        for table, changes in r["targets"].items():
            label = ", ".join(f"{k} {v:,}" for k, v in changes.items() if v)
            if label:
                lines.append(f'  clean{n} -->|"{label}"| {table}[("{table}")]')
    return "\n".join(lines)
