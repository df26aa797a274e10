"""`performance analyze`: plans of the standard queries and of one query, read-only, on SQLite
and PostgreSQL; partition pruning is visible for a date filter."""

from __future__ import annotations

import json
from pathlib import Path

from performance.queries import STANDARD_QUERIES
from tests.cache_fixtures import disk_cache_env  # noqa: F401  (fixtures)
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json, one

JANUARY = "SELECT SUM(line_total) AS revenue FROM fact_sales WHERE date_key BETWEEN 20110101 AND 20110131"


def test_analyze_suite_and_one_query(run_cli: Cli, warehouse_url: str, tmp_path: Path, disk_cache_env: dict) -> None:  # noqa: F811
    etl_json(run_cli, write_csv(tmp_path / "rows.csv", ROWS))
    suite = run_cli("performance", "analyze", "--format", "json")
    assert suite.exit_code == 0, suite.output
    labels = [a["label"] for a in json.loads(suite.stdout)]
    assert labels == [f"{name} ({'aggregate' if q.aggregate_sql else 'fact'})" for name, q in STANDARD_QUERIES.items()]
    table = run_cli("performance", "analyze")
    assert table.exit_code == 0 and "Standard queries (" in table.stdout

    result = run_cli("performance", "analyze", "--query", JANUARY, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 1 and data["time_ms"] >= 0 and data["plan"]
    if "postgresql" in warehouse_url:
        assert data["partitions_scanned"] == ["fact_sales_p201101"]
        assert (data["partitions_total"], data["partitions_pruned"]) == (4, 3)
        assert any("fact_sales_p201101" in line for line in data["plan"]) and data["planning_ms"] is not None
    else:
        assert data["partitions_total"] == 0 and data["indexes"] == ["ux_fact_sales_line"]
    shown = run_cli("performance", "analyze", "--named", "daily_sales", "--param", "month=2011-01")
    assert shown.exit_code == 0, shown.output
    assert "Plan:" in shown.stdout and "partitions scanned" in shown.stdout

    refused = run_cli("performance", "analyze", "--query", "DELETE FROM fact_sales")
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: query refused: DELETE statements change the warehouse")
    explain = run_cli("performance", "analyze", "--query", "EXPLAIN SELECT 1")
    assert explain.stderr.strip() == "Error: give the query without EXPLAIN: `performance analyze` adds it"
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 8


def test_full_scan_of_a_large_table_is_reported(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path, disk_cache_env: dict) -> None:  # noqa: F811
    rows = [
        [str(540000 + i), "22111", "SCOTTIE DOG", "1", f"2011-02-{1 + i % 28:02d} 10:00:00", "4.95", "12345", "France"]
        for i in range(12_000)
    ]
    etl_json(sqlite_cli, write_csv(tmp_path / "many.csv", rows))
    result = sqlite_cli("performance", "analyze", "--query", "SELECT COUNT(*) FROM fact_sales WHERE quantity > 5", "--format", "json")
    data = json.loads(result.stdout)
    assert data["seq_scans"] == ["fact_sales (12,000 rows)"]
    assert data["suggestions"][0].startswith("full scans of fact_sales although the query filters rows")
