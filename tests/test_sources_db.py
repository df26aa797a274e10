"""Database sources: a real PostgreSQL table or query (and an SQLite file) as the extract."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config.settings import Settings
from etl.db_source import DatabaseSource, check_query
from etl.sources import SourceOptions, open_source
from tests.conftest import PG_URL, Cli
from tests.test_cli_etl import etl_json, one, q
from utils.errors import SourceError

# What a shop's order-line table looks like: typed columns, snake_case names, a surrogate id.
SALES = [
    (
        "536365",
        "85123A",
        "WHITE HANGING HEART T-LIGHT HOLDER ",
        6,
        datetime(2010, 12, 1, 8, 26),
        Decimal("2.55"),
        17850.0,
        "United Kingdom",
    ),
    ("536365", "71053", "WHITE METAL LANTERN", 6, datetime(2010, 12, 1, 8, 26), Decimal("3.39"), 17850.0, "United Kingdom"),
    ("536366", "22633", "HAND WARMER UNION JACK £", 6, datetime(2010, 12, 1, 8, 28), Decimal("1.85"), None, "United Kingdom"),
    ("536367", "84879", "ASSORTED COLOUR BIRD ORNAMENT", 32, datetime(2010, 12, 1, 8, 34), Decimal("1.69"), 13047.0, "United Kingdom"),
    ("536368", "22960", "JAM MAKING SET WITH JARS", 0, datetime(2010, 12, 1, 8, 34), Decimal("4.25"), 13047.0, "United Kingdom"),
    ("C536379", "D", "Discount", -1, datetime(2010, 12, 1, 9, 41), Decimal("27.50"), 14527.0, "United Kingdom"),
    ("536370", "POST", "POSTAGE", 3, datetime(2010, 12, 25, 8, 45), Decimal("18.000"), 12583.0, "France"),
]
DDL = """CREATE TABLE order_lines (
    id serial PRIMARY KEY, invoice_no text, stock_code text, description text, quantity integer,
    invoice_date timestamp, unit_price numeric(12, 3), customer_id double precision, country text)"""
INSERT = """INSERT INTO order_lines (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
            VALUES (:i, :s, :d, :q, :t, :p, :c, :n)"""


def _params(rows):
    return [dict(zip("isdqtpcn", r, strict=True)) for r in rows]


@pytest.fixture
def pg_source(pg_available: None) -> Iterator[str]:
    """A fresh PostgreSQL schema holding `order_lines`, as a URL whose search_path points at it."""
    schema = f"src_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.execute(text(f"SET LOCAL search_path = {schema}"))
        conn.execute(text(DDL))
        conn.execute(text(INSERT), _params(SALES))
    yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def sqlite_source(tmp_path: Path) -> str:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE order_lines (id INTEGER PRIMARY KEY, invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)"
        )
        db.executemany(
            "INSERT INTO order_lines (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country) VALUES (?,?,?,?,?,?,?,?)",
            [(*r[:4], r[4].strftime("%Y-%m-%d %H:%M:%S"), float(r[5]), r[6], r[7]) for r in SALES],
        )
    return f"sqlite:///{path}"


def test_postgresql_table_into_each_warehouse(run_cli: Cli, warehouse_url: str, pg_source: str) -> None:
    summary = etl_json(run_cli, pg_source, "--table", "order_lines")
    assert (summary["rows_read"], summary["rows_loaded"], summary["quarantine_by_reason"]) == (7, 6, {"zero_quantity": 1})
    assert summary["source"] == f"{pg_source} (table order_lines)"
    assert (summary["checksum"], summary["encoding"]) == ("", "")
    # Rows in primary-key order, numbered from 1; values arrive exactly (numeric, float ids, timestamps).
    assert one(warehouse_url, "SELECT source_row FROM etl_quarantine") == 5
    assert one(warehouse_url, "SELECT unit_price FROM etl_quarantine") == "4.25"
    facts = {
        r[0]: r[1:] for r in q(warehouse_url, "SELECT source_row, invoice_no, quantity, unit_price, transaction_datetime FROM fact_sales")
    }
    assert facts[7][:3] == ("536370", 3, Decimal("18") if isinstance(facts[7][2], Decimal) else 18.0)
    assert str(facts[1][3])[:19] == "2010-12-01 08:26:00"
    assert one(warehouse_url, "SELECT COUNT(*) FROM dim_customers WHERE customer_id = '17850'") == 1
    assert one(warehouse_url, "SELECT source FROM etl_runs") == f"{pg_source} (table order_lines)"
    # No file checksum, so no same-file skip: a second read finds every line already loaded.
    again = etl_json(run_cli, pg_source, "--table", "order_lines")
    assert (again["status"], again["rows_loaded"], again["rows_already_loaded"]) == ("success", 0, 7)


def test_postgresql_query_streams_in_chunks(pg_source: str) -> None:
    engine = create_engine(make_url(pg_source).set(drivername="postgresql+psycopg2"))
    more = [
        (f"5{i:05d}", "22633", "HAND WARMER", 1 + i % 5, datetime(2011, 1, 1 + i % 28, 9, 0), Decimal("1.85"), 13000.0 + i % 50, "Spain")
        for i in range(1200)
    ]
    with engine.begin() as conn:
        conn.execute(text(INSERT), _params(more))
    engine.dispose()
    query = "SELECT * FROM order_lines WHERE country = 'Spain' AND to_char(invoice_date, 'HH24:MI') = '09:00' ORDER BY id;"
    source = open_source(pg_source, Settings(), SourceOptions(query=query))
    assert source.location == f"{pg_source} (query: {query[:-1]})"
    chunks = list(source.chunks(500))
    assert [len(c.frame) for c in chunks] == [500, 500, 200]
    assert chunks[1].source_rows[0] == 501 and chunks[2].source_rows[-1] == 1200
    assert chunks[0].frame.iloc[0].tolist() == ["500000", "22633", "HAND WARMER", "1", "2011-01-01 09:00:00", "1.85", "13000", "Spain"]


def test_query_runs_read_only(pg_source: str) -> None:
    source = open_source(pg_source, Settings(), SourceOptions(query="SELECT *, nextval('order_lines_id_seq') AS n FROM order_lines"))
    with pytest.raises(SourceError) as err:
        list(source.chunks(100))
    assert "read-only transaction" in str(err.value)


def test_password_is_masked(sqlite_cli: Cli, sqlite_url: str, pg_source: str) -> None:
    url = make_url(pg_source).set(password="s3cret").render_as_string(hide_password=False)
    summary = etl_json(sqlite_cli, url, "--table", "order_lines")
    assert summary["source"].startswith("postgresql://postgres:***@127.0.0.1")
    assert "s3cret" not in one(sqlite_url, "SELECT source FROM etl_runs")


def test_unknown_table_lists_the_tables(sqlite_cli: Cli, sqlite_source: str) -> None:
    result = sqlite_cli("etl", "--source", sqlite_source, "--table", "orders")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {sqlite_source}: no table 'orders'; tables found: order_lines"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "a database source needs exactly one of --table NAME or --query 'SELECT ...'"),
        (
            ("--table", "order_lines", "--query", "SELECT 1"),
            "a database source needs exactly one of --table NAME or --query 'SELECT ...' (both were given)",
        ),
    ],
)
def test_table_or_query_required(sqlite_cli: Cli, sqlite_source: str, args: tuple[str, ...], message: str) -> None:
    result = sqlite_cli("etl", "--source", sqlite_source, *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {sqlite_source}: {message}"


def test_sqlite_query_source(sqlite_cli: Cli, sqlite_url: str, sqlite_source: str) -> None:
    query = "SELECT invoice_no AS Invoice, stock_code, description, quantity, invoice_date, unit_price AS Price, customer_id AS \"Customer ID\", country FROM order_lines WHERE description NOT LIKE '%;%' -- no ';' in these"
    summary = etl_json(sqlite_cli, sqlite_source, "--query", query)
    assert (summary["rows_read"], summary["rows_loaded"]) == (7, 6)
    assert one(sqlite_url, "SELECT unit_price FROM fact_sales WHERE invoice_no = 'C536379'") == 27.5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DELETE FROM order_lines", "--query must be a SELECT statement, got 'DELETE FROM order_lines'"),
        ("SELECT 1; DROP TABLE order_lines", "--query must be a single SELECT statement (found ';' separating statements)"),
        ("", "--query must be a SELECT statement, got ''"),
    ],
)
def test_check_query_refuses(query: str, message: str) -> None:
    with pytest.raises(SourceError) as err:
        check_query(query)
    assert str(err.value) == message


def test_check_query_accepts() -> None:
    assert check_query("  with x as (select ';' as s) select * from x; ") == "with x as (select ';' as s) select * from x"
    assert check_query("/* nightly */ SELECT * FROM sales") == "/* nightly */ SELECT * FROM sales"


def test_source_problems(tmp_path: Path, sqlite_source: str) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(SourceError) as err:
        open_source(missing, Settings(), SourceOptions(table="t"))
    assert str(err.value) == f"{missing}: SQLite database file not found; check the path in the URL"
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(SourceError) as err:
        open_source(sqlite_source, Settings(), SourceOptions(query="SELECT no_such_col FROM order_lines"))
    assert str(err.value) == f"{sqlite_source}: no such column: no_such_col"
    with pytest.raises(SourceError) as err:
        open_source(sqlite_source, Settings(), SourceOptions(query="SELECT invoice_no, country FROM order_lines"))
    assert str(err.value).startswith(f"{sqlite_source}: required column(s) StockCode, Description, Quantity")
    unreachable = "postgresql://rdp:pw@127.0.0.1:1/nowhere"
    with pytest.raises(SourceError) as err:
        DatabaseSource(unreachable, Settings(), SourceOptions(table="t"))
    assert str(err.value).startswith("postgresql://rdp:***@127.0.0.1:1/nowhere: ")
    assert "pw" not in str(err.value).replace("postgresql://rdp:***", "")
