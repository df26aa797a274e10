"""The same sales through every kind of source give the same warehouse; overlapping extracts load once.

One generated extract (3,000 lines with the real file's faults: duplicates, zero prices, returns,
sales without a customer, £ and trailing spaces) is written as CSV, gzip, bzip2, a zip of two
CSVs, a two-sheet workbook with the second edition's headers and real Excel datetimes, an SQLite
table, and served by a paginated HTTP API with a page that fails once. Each is loaded into its
own fresh warehouse and the table checksums are compared with the CSV's.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import sqlite3
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from metadata.checksums import _canonical, warehouse_checksums
from sampledata.generator import generate_sales
from tests.conftest import PG_URL, Cli
from tests.test_cli_etl import etl_json, q
from tests.test_sources_api import SalesApi, records_of
from tests.test_sources_workbook import SECOND_EDITION, typed, write_workbook

ROWS = 3000
FIELDS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
QUARANTINE_COLUMNS = "run_id, line_id, source_row, reasons, invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country, raw_line"


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    path = tmp_path_factory.mktemp("extract") / "sales.csv"
    generate_sales(path, ROWS, seed=2024)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    return path, rows


def _engine(url: str):
    parsed = make_url(url)
    return create_engine(parsed.set(drivername="postgresql+psycopg2") if parsed.drivername == "postgresql" else parsed)


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouses(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty warehouses (SQLite files, or PostgreSQL schemas) on one backend."""
    made: list[str] = []
    if request.param == "postgresql":
        request.getfixturevalue("pg_available")
    admin = _engine(PG_URL) if request.param == "postgresql" else None

    def fresh() -> str:
        if admin is None:
            made.append(f"warehouse{len(made)}.db")
            return f"sqlite:///{tmp_path / made[-1]}"
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        made.append(schema)
        return make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)

    yield fresh
    if admin is not None:
        with admin.begin() as conn:
            for schema in made:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def contents(url: str) -> dict[str, str]:
    """Checksums of every data table; the quarantine's without its load timestamp (quarantined_at)."""
    engine = _engine(url)
    sums = warehouse_checksums(engine)
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for row in conn.execute(text(f"SELECT {QUARANTINE_COLUMNS} FROM etl_quarantine ORDER BY quarantine_id")):
            digest.update("\x1f".join(_canonical(v) for v in row).encode() + b"\n")
    engine.dispose()
    return sums | {"etl_quarantine": digest.hexdigest()}


def _write_csv(path: Path, rows: list[list[str]]) -> bytes:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(FIELDS)
        writer.writerows(rows)
    return path.read_bytes()


def _sqlite_table(path: Path, rows: list[list[str]]) -> str:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, invoice, stock_code, description, quantity, invoice_date, price, customer_id, country)"
        )
        db.executemany("INSERT INTO sales (invoice, stock_code, description, quantity, invoice_date, price, customer_id, country) VALUES (?,?,?,?,?,?,?,?)",
                       [typed(r) for r in rows])  # fmt: skip
    return f"sqlite:///{path}"


def test_every_source_kind_gives_the_same_warehouse(extract, warehouses, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    csv_path, rows = extract
    data = csv_path.read_bytes()
    half = len(rows) // 2
    (tmp_path / "sales.csv.gz").write_bytes(gzip.compress(data))
    (tmp_path / "sales.csv.bz2").write_bytes(bz2.compress(data))
    with zipfile.ZipFile(tmp_path / "sales.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("part-1.csv", _write_csv(tmp_path / "p1.csv", rows[:half]))
        archive.writestr("part-2.csv", _write_csv(tmp_path / "p2.csv", rows[half:]))
    # Online Retail II: two yearly sheets, Invoice/Price/Customer ID, numbers and datetimes as typed cells.
    write_workbook(
        tmp_path / "sales.xlsx",
        {"Year 2010": [typed(r) for r in rows[:half]], "Year 2011": [typed(r) for r in rows[half:]]},
        SECOND_EDITION,
    )
    server = SalesApi(records_of(rows), page_size=500)
    server.fail_once = {3}
    sources = {
        "csv": [str(csv_path)],
        "gzip": [str(tmp_path / "sales.csv.gz")],
        "bzip2": [str(tmp_path / "sales.csv.bz2")],
        "zip": [str(tmp_path / "sales.zip")],
        "xlsx": [str(tmp_path / "sales.xlsx")],
        "api": [server.url()],
        "database": [_sqlite_table(tmp_path / "shop.db", rows), "--table", "sales"],
    }
    if request.node.callspec.params["warehouses"] == "postgresql":  # the four, to keep the suite quick
        sources = {kind: sources[kind] for kind in ("csv", "gzip", "xlsx", "api")}
    try:
        results = {}
        for kind, args in sources.items():
            url = warehouses()
            summary = etl_json(Cli(url), *args)
            assert summary["status"] == "success", kind
            results[kind] = (summary["rows_read"], summary["rows_loaded"], summary["rows_quarantined"], contents(url))
    finally:
        server.close()
    assert server.hits[3] == 2  # the failing page was retried
    baseline = results["csv"]
    assert baseline[0] == ROWS and baseline[2] > 0  # the extract does have rows to quarantine
    for kind, result in results.items():
        assert result[:3] == baseline[:3], kind
        differing = [table for table, digest in result[3].items() if digest != baseline[3][table]]
        assert differing == [], f"{kind}: {differing}"


def _invoice_cut(rows: list[list[str]], near: int) -> int:
    """The first row index at or after `near` that starts a new invoice."""
    i = near
    while rows[i][0] == rows[i - 1][0]:
        i += 1
    return i


FACTS = """SELECT f.line_id, f.invoice_no, p.stock_code, c.customer_id, c.country, f.quantity, f.unit_price, f.line_total,
                  f.transaction_datetime, f.transaction_type, f.date_key
           FROM fact_sales f JOIN dim_products p ON p.product_key = f.product_key JOIN dim_customers c ON c.customer_key = f.customer_key
           ORDER BY f.line_id"""


def test_overlapping_extracts_load_once_in_either_order(extract, tmp_path: Path) -> None:
    _, rows = extract
    a_end, b_start = _invoice_cut(rows, 2000), _invoice_cut(rows, 1000)
    first = tmp_path / "2011-h1.csv"
    second = tmp_path / "2011-h2.csv"
    _write_csv(first, rows[:a_end])
    _write_csv(second, rows[b_start:])
    union = tmp_path / "all.csv"
    _write_csv(union, rows)
    outcomes = {}
    for name, order in {"a-then-b": [first, second], "b-then-a": [second, first], "union": [union]}.items():
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        summaries = [etl_json(Cli(url), source) for source in order]
        outcomes[name] = (q(url, FACTS), summaries)
    facts = outcomes["union"][0]
    assert outcomes["a-then-b"][0] == facts
    assert outcomes["b-then-a"][0] == facts
    assert len({f[0] for f in facts}) == len(facts)
    # The second extract's overlap is recognised, not loaded again.
    overlap = a_end - b_start
    for name in ("a-then-b", "b-then-a"):
        later = outcomes[name][1][1]
        assert later["rows_already_loaded"] == overlap, name
        assert sum(s["rows_loaded"] for s in outcomes[name][1]) == len(facts)
