"""`quarantine list|show|export` through the CLI on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json

MORE = [
    ["536400", "22111", "SCOTTIE DOG HOT WATER BOTTLE", "0", "2011-02-01 10:00:00", "4.95", "17850", "United Kingdom"],  # zero qty
    ["536401", "22112", "CHOCOLATE HOT WATER BOTTLE", "3", "2011-02-01 10:00:00", "4.95", "1785O", "United Kingdom"],  # bad customer
]


@pytest.fixture
def two_runs(run_cli: Cli, tmp_path: Path) -> Cli:
    etl_json(run_cli, write_csv(tmp_path / "a.csv", ROWS))
    etl_json(run_cli, write_csv(tmp_path / "b.csv", MORE))
    return run_cli


def _list(cli: Cli, *args: str) -> dict:
    result = cli("quarantine", "list", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_filters(two_runs: Cli) -> None:
    everything = _list(two_runs)
    assert everything["total"] == 6 and [r["source_row"] for r in everything["rows"]] == [3, 6, 7, 12, 1, 2]
    assert [r["run_id"] for r in _list(two_runs, "--run", "2")["rows"]] == [2, 2]
    zero = _list(two_runs, "--reason", "zero_quantity")
    assert zero["total"] == 2 and {r["invoice_no"] for r in zero["rows"]} == {"536368", "536400"}
    assert _list(two_runs, "--reason", "zero_quantity", "--run", "1")["total"] == 1
    limited = _list(two_runs, "--limit", "2")
    assert limited["total"] == 6 and len(limited["rows"]) == 2
    human = two_runs("quarantine", "list", "--reason", "bad_customer_id", env={"COLUMNS": "200"})
    assert human.exit_code == 0 and "1 of 1 rows" in human.stdout and "bad_customer_id" in human.stdout and "1785O" in human.stdout


def test_list_errors(two_runs: Cli) -> None:
    reason = two_runs("quarantine", "list", "--reason", "dup")
    assert reason.exit_code == 1 and "Error: unknown reason 'dup'; choose from bad_customer_id, bad_invoice_date" in reason.output
    run = two_runs("quarantine", "list", "--run", "9")
    assert run.exit_code == 1 and "Error: run 9 not found" in run.output


def test_show(two_runs: Cli) -> None:
    rows = _list(two_runs, "--reason", "bad_invoice_date")["rows"]
    result = two_runs("quarantine", "show", str(rows[0]["quarantine_id"]), "--format", "json")
    assert result.exit_code == 0
    row = json.loads(result.stdout)
    assert row["invoice_date"] == "not a date" and row["description"] == "ALARM CLOCK BAKELIKE RED "
    assert row["reason_descriptions"] == ["InvoiceDate matches none of the configured date formats"]
    human = two_runs("quarantine", "show", str(rows[0]["quarantine_id"]))
    assert "reason_descriptions" in human.stdout
    missing = two_runs("quarantine", "show", "12345")
    assert missing.exit_code == 1 and "Error: quarantine row 12345 not found" in missing.output


def test_export_csv_and_json(two_runs: Cli, tmp_path: Path) -> None:
    out_csv = tmp_path / "q.csv"
    result = two_runs("quarantine", "export", "--format", "csv", "--output", str(out_csv))
    assert result.exit_code == 0 and "6 quarantined rows written" in result.stdout
    with open(out_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["reasons"] == "duplicate" and rows[0]["customer_id"] == "17850.0"
    assert list(rows[0])[:4] == ["quarantine_id", "run_id", "source_row", "reasons"]

    out_json = tmp_path / "q.json"
    result = two_runs("quarantine", "export", "--format", "json", "--output", str(out_json), "--run", "2", "--reason", "zero_quantity")
    assert result.exit_code == 0
    data = json.loads(out_json.read_text())
    assert [(r["run_id"], r["invoice_no"], r["quantity"]) for r in data] == [(2, "536400", "0")]

    empty = tmp_path / "none.json"
    assert two_runs("quarantine", "export", "--format", "json", "--output", str(empty), "--reason", "malformed_line").exit_code == 0
    assert json.loads(empty.read_text()) == []
    bad = two_runs("quarantine", "export", "--format", "xml", "--output", str(empty))
    assert bad.exit_code == 2
    unwritable = two_runs("quarantine", "export", "--format", "csv", "--output", str(tmp_path / "no" / "such" / "q.csv"))
    assert unwritable.exit_code == 1 and "Error: cannot write" in unwritable.output
