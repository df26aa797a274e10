"""Helpers of bench_etl's references (issue #20): what each reference runs and the inputs of the
incremental line. The measuring itself (child processes, rounds, report) is in bench/bench_etl.py.

- PostgreSQL reference: bench/reference_pg.sql through psql, the CSV on its standard input.
- DuckDB reference: bench/reference_duckdb.py as a child process.
- Incremental: the real file split into everything but its last day (loaded once, untimed, as
  the warehouse) and the last day (the extract timed), against the bare import of the libraries
  a load needs, in a child process of its own.
"""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PG_SCRIPT = BENCH_DIR / "reference_pg.sql"
REFERENCE_SCHEMA = "rdp_bench_reference"  # the PostgreSQL reference's own schema in rdp_bench
STAR_TABLES = ("dim_date", "dim_customers", "dim_products", "fact_sales")
IMPORTS = "import pandas, pyarrow.csv, pyarrow.compute, sqlalchemy, click, rich.console"
# Rules the references apply too: rows ours quarantines for these only are dropped by them as well.
SHARED_REASONS = frozenset(
    {
        "missing_invoice_no",
        "missing_stock_code",
        "missing_quantity",
        "missing_invoice_date",
        "missing_unit_price",
        "missing_country",
        "bad_quantity",
        "bad_unit_price",
        "bad_invoice_date",
        "zero_quantity",
        "non_positive_price",
        "duplicate",
    }
)


def pg_reference_command(psql_base: list[str], schema: str = REFERENCE_SCHEMA) -> list[str]:
    """psql running reference_pg.sql into `schema` (the CSV goes to its standard input)."""
    return [*psql_base, "-q", "-v", f"schema={schema}", "-f", str(PG_SCRIPT)]


def duckdb_reference_command(source: Path, target: Path) -> list[str]:
    """The DuckDB reference as a child process: interpreter start and `import duckdb` included."""
    return [sys.executable, str(BENCH_DIR / "reference_duckdb.py"), str(source), str(target)]


def imports_command() -> list[str]:
    """The bare import of the libraries a load needs: the incremental line's baseline."""
    return [sys.executable, "-c", IMPORTS]


def star_counts_sql(schema: str) -> str:
    """One row: the row count of each star table of `schema`, in STAR_TABLES order."""
    return "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {schema}.{t})" for t in STAR_TABLES)


def beyond_reference_rules(quarantine_by_reason: dict[str, int] | None) -> int:
    """Rows ours quarantined for a reason the references do not apply (upper bound: a row with a
    shared reason and another one counts once per reason in the ledger's breakdown)."""
    return sum(n for reason, n in (quarantine_by_reason or {}).items() if reason not in SHARED_REASONS)


def _day(text: str) -> date | None:
    text = text.strip()
    for parse in (lambda t: datetime.fromisoformat(t), lambda t: datetime.strptime(t, "%m/%d/%Y %H:%M")):
        try:
            return parse(text).date()
        except ValueError:
            continue
    return None


def split_last_day(source: Path, folder: Path) -> tuple[Path, Path, date, int, int]:
    """Write `source` as two CSVs in `folder`: every row but the last day's (rest.csv) and the
    last day's rows (lastday.csv), each with the header. Rows without a readable InvoiceDate
    stay in rest.csv. Returns the two paths, the last day, and the rows of each file."""
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    at = header.index("InvoiceDate")
    days = [_day(r[at]) if len(r) > at else None for r in rows]
    last = max((d for d in days if d is not None), default=None)
    if last is None:
        raise ValueError(f"{source}: no row has a readable InvoiceDate")
    rest, lastday = folder / "rest.csv", folder / "lastday.csv"
    counts = []
    for path, keep in ((rest, lambda d: d != last), (lastday, lambda d: d == last)):
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            chosen = [r for r, d in zip(rows, days, strict=True) if keep(d)]
            writer.writerows(chosen)
        counts.append(len(chosen))
    return rest, lastday, last, counts[0], counts[1]
