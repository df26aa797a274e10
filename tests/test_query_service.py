"""`query`: read-only SQL and the standard queries on a real SQLite file and a real PostgreSQL
schema; writes refused with nothing changed; never a stale answer after a load or rollback."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from config.cache import CacheSettings
from config.settings import DatabaseSettings
from database.engine import make_engine
from performance.queries import STANDARD_QUERIES
from performance.service import QueryService
from performance.sqlguard import QueryRefused, check_read_only
from tests.cache_fixtures import disk_cache_env  # noqa: F401  (pytest fixtures)
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json, one
from tests.test_versions import FIRST, SECOND

RULE = "`query` runs one read-only statement (SELECT, WITH, VALUES, TABLE or EXPLAIN)"


def query_json(cli: Cli, *args: str) -> dict:
    result = cli("query", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _norm(rows: list) -> list[tuple]:
    """Money and rates as exact decimals: PostgreSQL answers Decimal, SQLite float."""
    return [tuple(Decimal(str(v)).quantize(Decimal("0.0001")) if isinstance(v, float | Decimal) else v for v in r) for r in rows]


@pytest.fixture
def loaded(run_cli: Cli, tmp_path: Path, disk_cache_env: dict) -> Cli:  # noqa: F811
    etl_json(run_cli, write_csv(tmp_path / "rows.csv", ROWS))
    return run_cli


def test_list_names_every_standard_query(sqlite_cli: Cli, disk_cache_env: dict) -> None:  # noqa: F811
    result = sqlite_cli("query", "--list")
    assert result.exit_code == 0, result.output
    for name in STANDARD_QUERIES:
        assert name in result.stdout
    listed = json.loads(sqlite_cli("query", "--list", "--format", "json").stdout)
    assert [q["name"] for q in listed] == list(STANDARD_QUERIES)
    assert listed[2]["parameters"]["limit"]["default"] == 10


def test_named_queries_in_every_format(loaded: Cli, warehouse_url: str) -> None:
    data = query_json(loaded, "--named", "revenue_by_month")
    assert data["columns"] == ["year", "month", "invoices", "lines", "units", "revenue", "returns"]
    months = {(r["year"], r["month"]): r for r in data["rows"]}
    assert set(months) == {(2010, 12), (2011, 1), (2011, 8)}
    december = months[(2010, 12)]
    assert (december["invoices"], december["lines"], december["units"]) == (5, 6, 52)
    assert Decimal(str(december["revenue"])) == Decimal("127.32") and Decimal(str(december["returns"])) == Decimal("-27.50")
    assert data["cache"] == "miss" and data["form"] == "aggregate"
    assert query_json(loaded, "--named", "revenue_by_month")["cache"] == "hit"

    csv_out = loaded("query", "--named", "top_products", "--param", "limit=2", "--format", "csv")
    assert csv_out.exit_code == 0, csv_out.output
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "stock_code,description,lines,units,revenue"
    assert lines[1:] == ["84879,ASSORTED COLOUR BIRD ORNAMENT,1,32,54.08", "71053,WHITE METAL LANTERN,1,6,20.34"]
    assert "cache miss" in csv_out.stderr

    table = loaded("query", "SELECT COUNT(*) AS facts FROM fact_sales")
    assert table.exit_code == 0 and "facts" in table.stdout and " 8 " in table.stdout

    countries = {r["country"] for r in query_json(loaded, "--named", "revenue_by_country")["rows"]}
    assert countries == {"United Kingdom", "France", "Unknown"}  # no CustomerID: the unknown customer
    top = [r["stock_code"] for r in query_json(loaded, "--named", "top_products", "--param", "limit=50")["rows"]]
    assert "POST" not in top and "D" not in top and "B" not in top  # merchandise only
    rfm = query_json(loaded, "--named", "customer_rfm")["rows"]
    assert [r["customer_id"] for r in rfm] == ["12583", "13047", "14527", "17850"]
    assert {r["customer_id"]: r["recency_days"] for r in rfm}["17850"] == 35  # 2010-12-01 -> 2011-01-05
    daily = query_json(loaded, "--named", "daily_sales", "--param", "month=2010-12")["rows"]
    assert [str(r["day"]) for r in daily] == ["2010-12-01", "2010-12-25"]


def test_fact_and_aggregate_forms_give_the_same_answers(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    a_return = ["C536380", "84879", "ASSORTED COLOUR BIRD ORNAMENT", "-4", "2010-12-02 10:00:00", "1.69", "13047", "United Kingdom"]
    for name, rows in (("a", FIRST), ("b", SECOND), ("c", ROWS), ("d", [a_return])):
        etl_json(run_cli, write_csv(tmp_path / f"{name}.csv", rows))
    engine = make_engine(DatabaseSettings(url=warehouse_url))
    fast = QueryService(engine, CacheSettings(enabled=False))
    plain = QueryService(engine, CacheSettings(enabled=False, use_aggregates=False))
    try:
        for name, query in STANDARD_QUERIES.items():
            params = {"limit": "100"} if any(p.name == "limit" for p in query.params) else None
            a, b = fast.run_named(name, params), plain.run_named(name, params)
            assert (a.form, b.form) == (("aggregate", "fact") if query.aggregate_sql else ("fact", "fact"))
            assert a.rows and _norm(a.rows) == _norm(b.rows), name
    finally:
        fast.close(), plain.close(), engine.dispose()


WRITES = {
    "DELETE FROM fact_sales": f"Error: query refused: DELETE statements change the warehouse or its settings; {RULE}",
    "DROP TABLE fact_sales": f"Error: query refused: DROP statements change the warehouse or its settings; {RULE}",
    "SELECT 1; DROP TABLE fact_sales": f"Error: query refused: the text holds 2 statements; {RULE}",
    "SELECT 'x\\'; DROP TABLE fact_sales; --'": "Error: query refused: ';' may only end the statement, also inside strings and "
    f"comments (write chr(59)); {RULE}",
    "COPY (SELECT 1) TO PROGRAM 'touch /tmp/rdp_pwned'": "Error: query refused: COPY reads and writes server files and programs "
    f"(use --format csv to export an answer); {RULE}",
    "WITH gone AS (DELETE FROM fact_sales RETURNING *) SELECT COUNT(*) FROM gone": "Error: query refused: DELETE statements "
    f"change the warehouse; {RULE}",
    "SELECT pg_terminate_backend(1)": f"Error: query refused: pg_terminate_backend() acts outside the transaction; {RULE}",
    "SELECT * INTO copy_of_facts FROM fact_sales": f"Error: query refused: SELECT … INTO creates a table; {RULE}",
}


def test_writes_are_refused_and_nothing_changes(loaded: Cli, warehouse_url: str) -> None:
    for sql, message in WRITES.items():
        result = loaded("query", sql)
        assert result.exit_code == 1, sql
        assert result.stderr.strip() == message, sql
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 8
    assert not Path("/tmp/rdp_pwned").exists()


def test_the_database_itself_refuses_writes(loaded: Cli, warehouse_url: str) -> None:
    """Second line of defence: the read-only transaction (PostgreSQL) or read-only file handle (SQLite)."""
    engine = make_engine(DatabaseSettings(url=warehouse_url))
    service = QueryService(engine, CacheSettings(enabled=False))
    try:
        with pytest.raises(QueryRefused) as caught, service.read_only() as (conn, _version):
            conn.exec_driver_sql("DELETE FROM fact_sales")
        assert str(caught.value).startswith("query refused: the statement tried to change data (")
        assert str(caught.value).endswith("); `query` runs in a read-only transaction")
    finally:
        service.close(), engine.dispose()
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 8
    if engine.dialect.name == "postgresql":  # a write hidden in a function call
        result = loaded("query", "SELECT setval('etl_runs_run_id_seq', 1000)")
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            "Error: query refused: the statement tried to change data (cannot execute setval() in a read-only transaction); "
            "`query` runs in a read-only transaction"
        )


def test_no_stale_answer_after_a_load_or_a_rollback(run_cli: Cli, tmp_path: Path, disk_cache_env: dict) -> None:  # noqa: F811
    etl_json(run_cli, write_csv(tmp_path / "a.csv", FIRST))
    first = query_json(run_cli, "--named", "revenue_by_country")
    assert query_json(run_cli, "--named", "revenue_by_country")["cache"] == "hit"
    adhoc = query_json(run_cli, "SELECT COUNT(*) AS n FROM fact_sales")
    assert adhoc["rows"] == [{"n": 3}]
    etl_json(run_cli, write_csv(tmp_path / "b.csv", SECOND))
    after = query_json(run_cli, "--named", "revenue_by_country")
    assert after["cache"] == "miss" and after["data_version"] != first["data_version"]
    assert after["rows"] == query_json(run_cli, "--named", "revenue_by_country", "--no-cache")["rows"]
    assert {r["country"] for r in after["rows"]} == {"France", "Germany", "Spain", "Norway"}
    assert query_json(run_cli, "SELECT COUNT(*) AS n FROM fact_sales")["rows"] == [{"n": 6}]
    assert run_cli("versions", "rollback", "2", "--yes").exit_code == 0
    rolled = query_json(run_cli, "--named", "revenue_by_country")
    assert rolled["cache"] == "miss" and rolled["rows"] == first["rows"]
    assert query_json(run_cli, "SELECT COUNT(*) AS n FROM fact_sales")["rows"] == [{"n": 3}]


def test_answers_that_change_outside_loads_are_not_cached(loaded: Cli, warehouse_url: str) -> None:
    now = "SELECT CURRENT_TIMESTAMP AS t"
    first = query_json(loaded, now)
    assert first["cache"] == "uncacheable" and first["note"] == "not cached: it uses CURRENT_TIMESTAMP"
    ledger = query_json(loaded, "SELECT COUNT(*) AS n FROM etl_runs")
    assert ledger["cache"] == "miss"  # the ledger is what the data version is made of
    catalog = "SELECT COUNT(*) AS n FROM pg_class" if "postgresql" in warehouse_url else "SELECT COUNT(*) AS n FROM sqlite_master"
    assert query_json(loaded, catalog)["cache"] == "uncacheable"


def test_timeout_row_limit_and_bad_input(loaded: Cli, warehouse_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDP_CACHE__STATEMENT_TIMEOUT_S", "0.3")
    slow = (
        "SELECT pg_sleep(3)"
        if "postgresql" in warehouse_url
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    )
    result = loaded("query", slow)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: query cancelled: it ran longer than the statement timeout of 0.3 s (cache.statement_timeout_s); "
        "narrow it or raise the timeout"
    )
    monkeypatch.setenv("RDP_CACHE__MAX_ROWS", "2")
    result = loaded("query", "SELECT * FROM fact_sales")
    assert result.stderr.strip() == "Error: the query returns more than 2 rows (cache.max_rows); add LIMIT or aggregate"
    result = loaded("query", "--named", "top_products", "--param", "limit=lots")
    assert result.stderr.strip() == "Error: parameter limit must be a whole number from 1 to 100000, got 'lots'"
    result = loaded("query", "--named", "top_products", "--param", "month=2011-01")
    assert result.stderr.strip() == "Error: query top_products has no parameter month (parameters: limit)"
    result = loaded("query", "--named", "best_sellers")
    assert result.stderr.strip().startswith("Error: no standard query named 'best_sellers'; `query --list` shows them:")
    result = loaded("query", "SELECT * FROM no_such_table")
    assert result.exit_code == 1 and result.stderr.startswith("Error: query failed: ") and "no_such_table" in result.stderr
    assert loaded("query").exit_code == 2
    assert loaded("query", "SELECT 1", "--named", "top_products").exit_code == 2


def test_a_warehouse_without_data(sqlite_cli: Cli, tmp_path: Path, disk_cache_env: dict) -> None:  # noqa: F811
    result = sqlite_cli("query", "SELECT 1")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: the warehouse file {tmp_path / 'warehouse.db'} does not exist; load data first: python main.py etl --source FILE"
    )


def test_sql_text_normalisation() -> None:
    a = check_read_only("select  count(*)\n from fact_sales -- how many\n;")
    b = check_read_only("SELECT COUNT(*) FROM fact_sales")
    assert a.normalized == b.normalized and a.text == "select  count(*)\n from fact_sales -- how many"
    assert check_read_only("SELECT 'x'").normalized != check_read_only("SELECT 'X'").normalized
    with pytest.raises(QueryRefused):
        check_read_only("  -- nothing\n ; ")
