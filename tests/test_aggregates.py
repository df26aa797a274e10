"""Aggregates stay equal to a direct GROUP BY over the fact through loads, SCD2 moves, replays
and rollbacks; PostgreSQL partitions are made on demand and prune date-filtered plans."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy import text

from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, _engine, etl_json, q
from tests.test_versions import FIRST, SECOND

_DIRECT = {
    "agg_daily_product": "SELECT date_key, product_key, COUNT(*), SUM(quantity), SUM(line_total), "
    "SUM(CASE WHEN transaction_type = 'return' THEN 1 ELSE 0 END) FROM fact_sales GROUP BY date_key, product_key",
    "agg_daily_customer": "SELECT date_key, customer_key, COUNT(*), COUNT(DISTINCT invoice_no), SUM(quantity), SUM(line_total), "
    "SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END) FROM fact_sales GROUP BY date_key, customer_key",
}
_AGG = {
    "agg_daily_product": "SELECT date_key, product_key, lines, units, revenue, return_lines FROM agg_daily_product",
    "agg_daily_customer": "SELECT date_key, customer_key, lines, invoices, units, revenue, return_revenue FROM agg_daily_customer",
}


_COUNTRY_ON_0310 = "SELECT c.country FROM agg_daily_customer a JOIN dim_customers c USING (customer_key) WHERE a.date_key = 20110310"


def _norm(rows: list[tuple]) -> set[tuple]:
    return {tuple(Decimal(str(v)).quantize(Decimal("0.001")) if isinstance(v, float | Decimal) else v for v in r) for r in rows}


def assert_aggregates_consistent(url: str) -> None:
    for table in _DIRECT:
        assert _norm(q(url, _AGG[table])) == _norm(q(url, _DIRECT[table])), table


def test_aggregates_follow_every_change(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "a.csv", FIRST))
    assert_aggregates_consistent(warehouse_url)
    etl_json(run_cli, write_csv(tmp_path / "b.csv", SECOND))  # moves a fact of the first load to a new customer version
    assert_aggregates_consistent(warehouse_url)
    assert q(warehouse_url, _COUNTRY_ON_0310) == [("Germany",)]
    assert run_cli("versions", "rollback", "2", "--yes").exit_code == 0
    assert_aggregates_consistent(warehouse_url)
    assert q(warehouse_url, _COUNTRY_ON_0310) == [("France",)]
    etl_json(run_cli, write_csv(tmp_path / "c.csv", ROWS))
    assert_aggregates_consistent(warehouse_url)
    returns = q(
        warehouse_url,
        "SELECT return_lines, return_units, return_revenue FROM agg_daily_product a JOIN dim_products p USING (product_key) WHERE p.stock_code = 'D'",
    )
    assert [(r[0], r[1], Decimal(str(r[2]))) for r in returns] == [(1, -1, Decimal("-27.5"))]


def test_partitions_made_on_demand_and_pruned(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url)
    etl_json(cli, write_csv(tmp_path / "a.csv", ROWS))
    parts = {
        r[0]
        for r in q(
            pg_url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST('fact_sales' AS regclass)",
        )
    }
    assert parts == {"fact_sales_default", "fact_sales_p201012", "fact_sales_p201101", "fact_sales_p201108"}
    assert q(pg_url, "SELECT COUNT(*) FROM fact_sales_p201012") == [(6,)]
    assert q(pg_url, "SELECT COUNT(*) FROM fact_sales_default") == [(0,)]
    plan = "\n".join(r[0] for r in q(pg_url, "EXPLAIN SELECT SUM(line_total) FROM fact_sales WHERE date_key BETWEEN 20110101 AND 20110131"))
    assert "fact_sales_p201101" in plan and "fact_sales_p201012" not in plan


def test_strays_in_the_default_partition_move_to_their_month(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url)
    etl_json(cli, write_csv(tmp_path / "a.csv", ROWS[:1]))
    engine = _engine(pg_url)
    with engine.begin() as conn:  # a row written straight into the fact, outside any loaded month
        conn.execute(
            text(
                "INSERT INTO fact_sales (sales_key, line_id, customer_key, product_key, date_key, invoice_no, quantity, unit_price, line_total, "
                "transaction_datetime, transaction_type, source_row, run_id) VALUES (900, 42, -1, 1, 20110215, 'X1', 1, 1, 1, '2011-02-15 10:00', 'sale', 1, 1)"
            )
        )
    engine.dispose()
    assert q(pg_url, "SELECT COUNT(*) FROM fact_sales_default") == [(1,)]
    feb = [["540100", "22111", "SCOTTIE DOG", "1", "2011-02-20 10:00:00", "4.95", "12345", "France"]]
    etl_json(cli, write_csv(tmp_path / "b.csv", feb))
    assert q(pg_url, "SELECT COUNT(*) FROM fact_sales_default") == [(0,)]
    assert q(pg_url, "SELECT COUNT(*) FROM fact_sales_p201102") == [(2,)]
