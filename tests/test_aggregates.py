"""Aggregates stay equal to a direct GROUP BY over the fact through loads, SCD2 moves, replays
and rollbacks; PostgreSQL partitions are made on demand and prune date-filtered plans."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from database import aggregates
from database.aggregates import _Keys
from etl import aggregates as run_aggregates
from etl.aggregates import COUNTED_WINDOW, RunAggregates
from sampledata.generator import generate_sales
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, _engine, etl_json, q
from tests.test_versions import FIRST, SECOND

_DIRECT = {
    "agg_daily_product": "SELECT date_key, product_key, COUNT(*), SUM(quantity), SUM(line_total), "
    "SUM(CASE WHEN transaction_type = 'return' THEN 1 ELSE 0 END) FROM fact_sales GROUP BY date_key, product_key",
    "agg_daily_customer": "SELECT date_key, customer_key, COUNT(*), COUNT(DISTINCT invoice_no), SUM(quantity), SUM(line_total), "
    "SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END) FROM fact_sales GROUP BY date_key, customer_key",
    "agg_daily_orders": "SELECT date_key, customer_key, COUNT(DISTINCT CASE WHEN transaction_type = 'sale' THEN invoice_no END), "
    "SUM(CASE WHEN transaction_type = 'sale' THEN quantity ELSE 0 END), SUM(CASE WHEN transaction_type = 'sale' THEN line_total ELSE 0 END), "
    "COUNT(DISTINCT CASE WHEN transaction_type = 'return' THEN invoice_no END), SUM(CASE WHEN transaction_type = 'return' THEN quantity ELSE 0 END), "
    "SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END), SUM(CASE WHEN transaction_type = 'adjustment' THEN line_total ELSE 0 END) "
    "FROM fact_sales GROUP BY date_key, customer_key",
    "agg_monthly_product": "SELECT date_key / 100, product_key, COUNT(*), SUM(quantity), SUM(line_total), "
    "SUM(CASE WHEN transaction_type = 'return' THEN 1 ELSE 0 END), SUM(CASE WHEN transaction_type = 'return' THEN quantity ELSE 0 END), "
    "SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END) FROM fact_sales GROUP BY date_key / 100, product_key",
    # invoices: an invoice has one date and one customer version, so the daily distinct counts add up
    "agg_monthly_sales": "SELECT date_key / 100, SUM(n), SUM(lines), SUM(units), SUM(revenue), SUM(returns) FROM ("
    "SELECT date_key, customer_key, COUNT(DISTINCT invoice_no) AS n, COUNT(*) AS lines, SUM(quantity) AS units, SUM(line_total) AS revenue, "
    "SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END) AS returns FROM fact_sales GROUP BY date_key, customer_key) d "
    "GROUP BY date_key / 100",
    "agg_customer_totals": "SELECT customer_key, COUNT(*), COUNT(DISTINCT date_key || '/' || invoice_no), SUM(quantity), SUM(line_total), "
    "SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END), MAX(date_key) FROM fact_sales GROUP BY customer_key",
    "agg_product_totals": "SELECT product_key, COUNT(*), SUM(quantity), SUM(line_total), SUM(CASE WHEN transaction_type = 'return' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN transaction_type = 'return' THEN quantity ELSE 0 END), SUM(CASE WHEN transaction_type = 'return' THEN line_total ELSE 0 END) "
    "FROM fact_sales GROUP BY product_key",
}
_AGG = {
    "agg_daily_product": "SELECT date_key, product_key, lines, units, revenue, return_lines FROM agg_daily_product",
    "agg_daily_customer": "SELECT date_key, customer_key, lines, invoices, units, revenue, return_revenue FROM agg_daily_customer",
    "agg_daily_orders": "SELECT date_key, customer_key, orders, sale_units, sale_revenue, return_invoices, return_units, return_revenue, "
    "adjustment_revenue FROM agg_daily_orders",
    "agg_monthly_product": "SELECT month_key, product_key, lines, units, revenue, return_lines, return_units, return_revenue "
    "FROM agg_monthly_product",
    "agg_monthly_sales": "SELECT month_key, invoices, lines, units, revenue, return_revenue FROM agg_monthly_sales",
    "agg_customer_totals": "SELECT customer_key, lines, invoices, units, revenue, return_revenue, last_date_key FROM agg_customer_totals",
    "agg_product_totals": "SELECT product_key, lines, units, revenue, return_lines, return_units, return_revenue FROM agg_product_totals",
}
_ORDERS_OF_DAY = (
    "SELECT c.customer_id, a.orders, a.sale_units, a.sale_revenue, a.return_invoices, a.return_units, a.return_revenue, a.adjustment_revenue "
    "FROM agg_daily_orders a JOIN dim_customers c USING (customer_key) WHERE a.date_key = :day ORDER BY COALESCE(c.customer_id, '')"
)


_COUNTRY_ON_0310 = "SELECT c.country FROM agg_daily_customer a JOIN dim_customers c USING (customer_key) WHERE a.date_key = 20110310"


def _norm(rows: list[tuple]) -> set[tuple]:
    return {tuple(Decimal(str(v)).quantize(Decimal("0.001")) if isinstance(v, float | Decimal) else v for v in r) for r in rows}


def assert_aggregates_consistent(url: str) -> None:
    for table in _DIRECT:
        assert _norm(q(url, _AGG[table])) == _norm(q(url, _DIRECT[table])), table


@pytest.mark.parametrize("key_limit", [5_000, 0], ids=["per-key totals", "all totals recomputed"])
def test_aggregates_follow_every_change(run_cli: Cli, warehouse_url: str, tmp_path: Path, monkeypatch, key_limit: int) -> None:
    monkeypatch.setattr(_Keys, "LIMIT", key_limit)  # 0: every refresh with replaced rows recomputes all totals
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


def _orders_of(url: str, day: int) -> list[tuple]:
    return [tuple(Decimal(str(v)).normalize() if isinstance(v, float | Decimal) else v for v in r) for r in q(url, _ORDERS_OF_DAY, day=day)]


def test_orders_aggregate_through_overlap_replay_and_rollback(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """agg_daily_orders (orders = sale invoices; sales, returns and adjustments apart) stays equal to
    the fact on both write paths: a load's in-memory aggregates and the recomputation of touched dates."""
    etl_json(run_cli, write_csv(tmp_path / "a.csv", ROWS))
    assert_aggregates_consistent(warehouse_url)
    # 2010-12-01: 17850 ordered invoice 536365 (2 lines), 13047 invoice 536367, 14527 returned C536379; 536366 has no customer
    assert _orders_of(warehouse_url, 20101201) == [
        (None, 1, 6, Decimal("11.1"), 0, 0, Decimal("0"), Decimal("0")),
        ("13047", 1, 32, Decimal("54.08"), 0, 0, Decimal("0"), Decimal("0")),
        ("14527", 0, 0, Decimal("0"), 1, -1, Decimal("-27.5"), Decimal("0")),
        ("17850", 1, 12, Decimal("35.64"), 0, 0, Decimal("0"), Decimal("0")),
    ]
    assert _orders_of(warehouse_url, 20110812) == [(None, 0, 0, Decimal("0"), 0, 0, Decimal("0"), Decimal("-11062.06"))]
    # An overlapping extract: a date the warehouse holds gets a second order of 17850 and a return
    # of 13047 (recomputed from the fact), and a new date comes from the in-memory path.
    more = [
        *ROWS[:2],
        ["536380", "22112", "CHOCOLATE BOX", "4", "2010-12-01 15:00:00", "2.10", "17850", "United Kingdom"],
        ["C536381", "84879", "ASSORTED COLOUR BIRD ORNAMENT", "-2", "2010-12-01 16:00:00", "1.69", "13047", "United Kingdom"],
        ["536390", "22111", "SCOTTIE DOG", "1", "2011-02-02 10:00:00", "4.95", "13047", "United Kingdom"],
    ]
    summary = etl_json(run_cli, write_csv(tmp_path / "b.csv", more))
    assert (summary["rows_loaded"], summary["rows_already_loaded"]) == (3, 2)
    assert_aggregates_consistent(warehouse_url)
    assert _orders_of(warehouse_url, 20101201)[1:] == [
        ("13047", 1, 32, Decimal("54.08"), 1, -2, Decimal("-3.38"), Decimal("0")),
        ("14527", 0, 0, Decimal("0"), 1, -1, Decimal("-27.5"), Decimal("0")),
        ("17850", 2, 16, Decimal("44.04"), 0, 0, Decimal("0"), Decimal("0")),
    ]
    # A replay under relaxed rules loads the zero-quantity sale of 13047 on 2010-12-01: a third order that day.
    assert run_cli("quarantine", "replay", env={"RDP_RULES__REJECT_ZERO_QUANTITY": "false"}).exit_code == 0
    assert_aggregates_consistent(warehouse_url)
    assert _orders_of(warehouse_url, 20101201)[1][:2] == ("13047", 2)
    assert run_cli("versions", "rollback", "3", "--yes").exit_code == 0  # the replay
    assert_aggregates_consistent(warehouse_url)
    assert _orders_of(warehouse_url, 20101201)[1][:2] == ("13047", 1)
    assert run_cli("versions", "rollback", "2", "--yes").exit_code == 0  # the overlapping load
    assert_aggregates_consistent(warehouse_url)
    assert _orders_of(warehouse_url, 20110202) == []
    assert _orders_of(warehouse_url, 20101201)[3] == ("17850", 1, 12, Decimal("35.64"), 0, 0, Decimal("0"), Decimal("0"))


@pytest.mark.parametrize("window", [COUNTED_WINDOW, 40], ids=["in memory", "spilled by date"])
def test_aggregates_added_flush_by_flush_count_each_invoice_once(
    run_cli: Cli, warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """A load adds its sums to the aggregate tables every few chunks: invoices whose lines fall
    in two flushes are still counted once per day and customer, sums stay exact, also when the
    invoices counted earlier are in the spill file."""
    monkeypatch.setattr(run_aggregates, "COUNTED_WINDOW", window)
    source = generate_sales(tmp_path / "g.csv", 3_000, seed=5).path
    chunk, flush_every = 100, RunAggregates().flush_every
    with source.open(newline="") as fh:
        flushes_of = {}
        for i, row in enumerate(csv.DictReader(fh)):
            flushes_of.setdefault(row["InvoiceNo"], set()).add(i // chunk // flush_every)
    assert any(len(groups) > 1 for groups in flushes_of.values())  # the case under test occurs
    etl_json(run_cli, source, "--chunk-size", str(chunk))
    assert_aggregates_consistent(warehouse_url)
    etl_json(run_cli, generate_sales(tmp_path / "h.csv", 3_000, seed=6).path, "--chunk-size", str(chunk))  # overlapping dates
    assert_aggregates_consistent(warehouse_url)


def test_monthly_product_rows_of_new_months_come_from_the_run_and_overlapping_months_from_sql(
    run_cli: Cli, warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A month the warehouse had no facts in is written from the run's own monthly sums; a month
    it had facts in is summed again from the daily rows. Both must equal the facts."""
    from datetime import date

    from etl import loader

    written: list[set[int]] = []

    def recording(conn, rows):
        written.append({int(m) for m in rows["month_key"].unique()})
        return aggregates.write_monthly_products(conn, rows)

    monkeypatch.setattr(loader, "write_monthly_products", recording)
    etl_json(run_cli, generate_sales(tmp_path / "jan.csv", 800, seed=3, start=date(2011, 1, 1), days=20).path)
    assert_aggregates_consistent(warehouse_url)
    etl_json(run_cli, generate_sales(tmp_path / "jan-feb.csv", 1_500, seed=4, start=date(2011, 1, 15), days=40).path)
    assert_aggregates_consistent(warehouse_url)
    assert written == [{201101}, {201102}]  # January the second time round went through SQL


def test_aggregate_names_are_the_defined_tables():
    """database.aggregate_sql names every aggregate table database/ defines, and no other."""
    from database.aggregate_sql import AGGREGATE_TABLES
    from database.models import METADATA

    assert sorted(AGGREGATE_TABLES) == sorted(t for t in METADATA.tables if t.startswith("agg_"))


_BY_NATURAL_KEYS = {
    "agg_monthly_sales": "SELECT month_key, lines, invoices, units, revenue, return_revenue FROM agg_monthly_sales",
    "agg_monthly_product": "SELECT a.month_key, p.stock_code, a.lines, a.units, a.revenue, a.return_lines, a.return_units, "
    "a.return_revenue FROM agg_monthly_product a JOIN dim_products p USING (product_key)",
    "agg_product_totals": "SELECT p.stock_code, a.lines, a.units, a.revenue, a.return_lines, a.return_units, a.return_revenue "
    "FROM agg_product_totals a JOIN dim_products p USING (product_key)",
    "agg_customer_totals": "SELECT c.customer_id, c.country, a.last_date_key, a.lines, a.invoices, a.units, a.revenue, a.return_revenue "
    "FROM agg_customer_totals a LEFT JOIN dim_customers c USING (customer_key)",
}


def test_a_load_of_new_dates_adds_its_sums_and_equals_a_full_reload(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load whose facts are all on dates new to the warehouse (a day's extract) adds its own
    monthly and all-dates sums to the stored rows instead of summing them again in SQL; the
    tables then hold what loading everything at once gives."""
    from datetime import date

    from etl import loader

    refreshed: list[set[int]] = []

    def recording(conn, dates, **kwargs):
        refreshed.append(set(dates))
        return aggregates.refresh(conn, dates, **kwargs)

    monkeypatch.setattr(loader, "refresh_aggregates", recording)
    source = generate_sales(tmp_path / "all.csv", 2_000, seed=8, start=date(2011, 1, 1), days=45).path
    with source.open(newline="") as fh:
        header, *rows = list(csv.reader(fh))
    cut = "2011-01-26"  # the second part: new dates in a month the first holds, then a new month
    early = write_csv(tmp_path / "early.csv", [r for r in rows if r[4] < cut], header)
    late = write_csv(tmp_path / "late.csv", [r for r in rows if r[4] >= cut], header)
    cli = Cli(warehouse_url)
    etl_json(cli, early)
    assert etl_json(cli, late)["rows_loaded"] > 0
    assert refreshed == []  # neither load recomputed anything from the daily rows
    assert_aggregates_consistent(warehouse_url)
    full_url = f"sqlite:///{tmp_path / 'full.db'}"
    etl_json(Cli(full_url), source)
    for table, sql in _BY_NATURAL_KEYS.items():
        assert _norm(q(warehouse_url, sql)) == _norm(q(full_url, sql)), table
