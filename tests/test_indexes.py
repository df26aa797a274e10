"""`performance indexes`: every index with size and use, missing recommended ones created on request."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json


def test_indexes_listed_and_missing_ones_created(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "rows.csv", ROWS))
    result = run_cli("performance", "indexes", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = {(i["table"], i["name"]) for i in report["indexes"]}
    assert ("fact_sales", "ux_fact_sales_line") in names
    missing = {s["sql"] for s in report["suggestions"] if s["kind"] == "missing"}
    assert "CREATE INDEX IF NOT EXISTS ix_fact_sales_customer ON fact_sales (customer_key)" in missing
    fact_index = next(i for i in report["indexes"] if i["name"] == "ux_fact_sales_line")
    if "postgresql" in warehouse_url:
        assert fact_index["scans"] is not None and fact_index["partitions"] == 4 and fact_index["size_bytes"] > 0
        assert report["stats_note"].startswith("use counted since")
    else:
        assert fact_index["scans"] is None and report["stats_note"].startswith("SQLite keeps no index use statistics")
    table = run_cli("performance", "indexes")
    assert table.exit_code == 0 and "Indexes (" in table.stdout and "Suggestions" in table.stdout

    created = run_cli("performance", "indexes", "--create", "--format", "json")
    assert created.exit_code == 0, created.output
    assert "CREATE INDEX IF NOT EXISTS ix_fact_sales_product ON fact_sales (product_key)" in created.stderr
    after = json.loads(created.stdout)
    assert not [s for s in after["suggestions"] if s["kind"] == "missing"]
    assert {"ix_fact_sales_customer", "ix_fact_sales_product"} <= {i["name"] for i in after["indexes"]}
