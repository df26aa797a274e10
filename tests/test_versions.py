"""Data versions and rollback on SQLite and PostgreSQL: a rollback restores the exact state."""

from __future__ import annotations

import json
from pathlib import Path

from metadata.checksums import warehouse_checksums
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import _engine, etl_json, one, q


def row(inv: str, code: str, desc: str, when: str, price: str, customer: str, country: str, qty: str = "2") -> list[str]:
    return [inv, code, desc, qty, when, price, customer, country]


FIRST = [
    row("540001", "22111", "SCOTTIE DOG", "2011-01-10 10:00:00", "4.95", "12345", "France"),
    row("540002", "22112", "CHOCOLATE BOX", "2011-03-10 10:00:00", "2.10", "12345", "France"),
    row("540003", "22113", "TEA TOWEL", "2011-02-01 09:00:00", "1.25", "12400", "Spain"),
    row("540004", "22113", "TEA TOWEL", "2011-02-01 09:00:00", "0", "12400", "Spain"),  # quarantined
]
SECOND = [
    row("541001", "22111", "SCOTTIE DOG HOT WATER BOTTLE", "2011-02-20 10:00:00", "5.25", "12345", "Germany"),  # SCD2 + SCD1
    row("541002", "22999", "NEW LAMP", "2011-04-01 10:00:00", "9.99", "13000", "Norway"),  # new product, customer, date
    row("541003", "22113", "TEA TOWEL", "2011-01-05 09:00:00", "1.25", "12400", "Spain"),  # extends 12400 back in time
    row("541003", "22113", "TEA TOWEL", "2011-01-05 09:00:00", "1.25", "12400", "Spain"),  # duplicate
]


def _checksums(url: str) -> dict[str, str]:
    engine = _engine(url)
    try:
        return warehouse_checksums(engine)
    finally:
        engine.dispose()


def _load_both(run_cli: Cli, tmp_path: Path) -> tuple[dict, dict]:
    etl_json(run_cli, write_csv(tmp_path / "a.csv", FIRST))
    after_first = _checksums(run_cli.url)
    summary = etl_json(run_cli, write_csv(tmp_path / "b.csv", SECOND))
    assert summary["dimension_changes"]["dim_customers"] == {"inserted": 2, "expired": 1, "extended": 1}
    assert summary["dimension_changes"]["dim_products"] == {"inserted": 1, "updated": 1}
    return after_first, summary


def test_rollback_restores_the_exact_previous_state(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    after_first, _ = _load_both(run_cli, tmp_path)
    # the second load moved the first load's March fact of 12345 to the Germany version
    assert q(
        warehouse_url, "SELECT c.country FROM fact_sales f JOIN dim_customers c USING (customer_key) WHERE f.invoice_no = '540002'"
    ) == [("Germany",)]
    assert _checksums(warehouse_url) != after_first
    result = run_cli("versions", "rollback", "2", "--yes", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["versions"] == [2]
    assert data["totals"]["facts_removed"] == 3 and data["totals"]["quarantine_removed"] == 1
    assert data["totals"]["facts_repointed"] >= 1
    assert _checksums(warehouse_url) == after_first
    assert q(
        warehouse_url, "SELECT c.country FROM fact_sales f JOIN dim_customers c USING (customer_key) WHERE f.invoice_no = '540002'"
    ) == [("France",)]
    statuses = q(warehouse_url, "SELECT run_id, kind, status, rolled_back_by FROM etl_runs ORDER BY run_id")
    assert statuses == [(1, "load", "success", None), (2, "load", "rolled_back", 3), (3, "rollback", "success", None)]


def test_rollback_of_an_older_version_undoes_later_ones_too(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    run_cli("setup")
    empty = _checksums(warehouse_url)
    _load_both(run_cli, tmp_path)
    data = json.loads(run_cli("versions", "rollback", "1", "--yes", "--format", "json").stdout)
    assert data["versions"] == [2, 1]
    assert _checksums(warehouse_url) == empty
    again = run_cli("versions", "rollback", "1", "--yes")
    assert again.exit_code == 1
    assert "Error: nothing to roll back: version 1 was already rolled back by run 3" in again.output


def test_reload_after_rollback_is_not_skipped(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    _load_both(run_cli, tmp_path)
    run_cli("versions", "rollback", "2", "--yes")
    summary = etl_json(run_cli, tmp_path / "b.csv")
    assert (summary["status"], summary["rows_loaded"], summary["rows_quarantined"]) == ("success", 3, 1)


def test_dry_run_and_confirmation_change_nothing(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    _load_both(run_cli, tmp_path)
    before = _checksums(warehouse_url)
    dry = json.loads(run_cli("versions", "rollback", "2", "--dry-run", "--format", "json").stdout)
    assert dry["dry_run"] is True and dry["totals"]["facts_removed"] == 3
    refused = run_cli("versions", "rollback", "2")  # no --yes, no input: aborts
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert _checksums(warehouse_url) == before
    assert one(warehouse_url, "SELECT status FROM etl_runs WHERE run_id = 2") == "success"


def test_list_show_diff_and_errors(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    _load_both(run_cli, tmp_path)
    listed = json.loads(run_cli("versions", "list", "--format", "json").stdout)
    assert [(r["run_id"], r["kind"]) for r in listed] == [(2, "load"), (1, "load")]
    shown = json.loads(run_cli("versions", "show", "2", "--format", "json").stdout)
    assert shown["tables"]["fact_sales"] == {"inserted": 3}
    assert shown["tables"]["dim_products"] == {"inserted": 1, "updated": 1}
    assert shown["tables"]["dim_customers"] == {"inserted": 2, "changed": 2}
    diff = json.loads(run_cli("versions", "diff", "1", "2", "--format", "json").stdout)
    assert (diff["as_of_a"]["fact_rows"], diff["as_of_b"]["fact_rows"]) == (3, 6)
    assert diff["as_of_b"]["products"] - diff["as_of_a"]["products"] == 1
    for args in (("show", "99"), ("diff", "1", "99"), ("rollback", "99", "--yes")):
        result = run_cli("versions", *args)
        assert result.exit_code == 1 and "Error: version 99 not found" in result.output
    assert "versions" in run_cli("versions", "list").stdout.lower()
