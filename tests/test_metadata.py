"""Catalog, lineage, exports and generated docs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json, one, q


@pytest.fixture
def loaded(run_cli: Cli, tmp_path: Path) -> Path:
    source = write_csv(tmp_path / "sales.csv", ROWS)
    etl_json(run_cli, source)
    return source


def test_tables_and_columns(run_cli: Cli, loaded: Path) -> None:
    tables = {t["name"]: t for t in json.loads(run_cli("metadata", "tables", "--format", "json").stdout)}
    assert tables["fact_sales"]["kind"] == "fact" and tables["fact_sales"]["rows"] == 8
    assert tables["dim_customers"]["kind"] == "dimension" and tables["etl_runs"]["kind"] == "operational"
    assert "SCD type 2" in tables["dim_customers"]["description"]
    assert tables["fact_sales"]["last_load"] is not None
    columns = {c["column"]: c for c in json.loads(run_cli("metadata", "columns", "dim_customers", "--format", "json").stdout)}
    assert columns["customer_id"]["nullable"] is True
    assert columns["customer_id"]["null_share"] == pytest.approx(1 / 5, abs=1e-4)  # the unknown member among 5 rows
    assert columns["country"]["distinct"] == 3
    assert "valid" in columns["effective_date"]["description"]
    bad = run_cli("metadata", "columns", "no_such_table")
    assert bad.exit_code == 1 and "Error: unknown table 'no_such_table'; choose from" in bad.output


def test_postgres_tables_carry_comments(pg_url: str, tmp_path: Path) -> None:
    Cli(pg_url)("setup")
    comment = one(pg_url, "SELECT obj_description(CAST('fact_sales' AS regclass), 'pg_class')")
    assert comment.startswith("Sales lines")
    column = one(pg_url, "SELECT col_description(CAST('fact_sales' AS regclass), 2)")
    assert "line identity" in column


def test_lineage_of_a_run_and_of_a_fact(run_cli: Cli, warehouse_url: str, loaded: Path) -> None:
    runs = json.loads(run_cli("metadata", "lineage", "--run", "1", "--format", "json").stdout)
    run = runs[0]
    assert run["source"]["rows"] == 12 and run["source"]["location"].endswith("sales.csv")
    assert run["cleaning"]["quarantined_by_reason"] == {"bad_invoice_date": 1, "duplicate": 1, "non_positive_price": 1, "zero_quantity": 1}
    assert run["targets"]["fact_sales"] == {"inserted": 8}
    assert {
        "source": "UnitPrice",
        "target": "fact_sales.unit_price",
        "transformation": "trimmed, parsed as an exact decimal (3 places)",
    } in run["columns"]

    key = one(warehouse_url, "SELECT sales_key FROM fact_sales WHERE invoice_no = 'C536379'")
    origin = json.loads(run_cli("metadata", "lineage", "--sales-key", str(key), "--format", "json").stdout)
    with open(loaded, newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[origin["line_number"] - 1][0] == "C536379"
    assert origin["source"] == str(loaded.resolve()) and origin["run_id"] == 1

    assert "flowchart LR" in run_cli("metadata", "lineage", "--format", "mermaid").stdout
    tree = run_cli("metadata", "lineage").stdout
    assert "cleaning: 8 accepted" in tree and "duplicate: 1" in tree
    assert json.loads(run_cli("metadata", "lineage", "--table", "dim_products", "--format", "json").stdout)[0]["run_id"] == 1
    for args, message in (
        (("--run", "42"), "run 42 not found"),
        (("--table", "nope"), "unknown table 'nope'"),
        (("--sales-key", "999999"), "sales_key 999999 not found"),
    ):
        result = run_cli("metadata", "lineage", *args)
        assert result.exit_code == 1 and message in result.output


def test_exports(run_cli: Cli, loaded: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.json"
    assert run_cli("metadata", "export", "--format", "json", "--complete", "--filename", str(out)).exit_code == 0
    data = json.loads(out.read_text())
    fact = next(t for t in data["tables"] if t["name"] == "fact_sales")
    assert fact["rows"] == 8 and any(c["column"] == "line_total" and c["distinct"] >= 1 for c in fact["columns"])
    assert data["versions"][0]["run_id"] == 1 and data["lineage"][0]["targets"]["fact_sales"]["inserted"] == 8

    md = run_cli("metadata", "export", "--format", "markdown").stdout
    assert "## Tables" in md and "| fact_sales | fact | 8 |" in md

    events = [json.loads(line) for line in run_cli("metadata", "export", "--format", "openlineage").stdout.splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        for required in ("eventType", "eventTime", "run", "job", "producer", "schemaURL"):
            assert required in event
        uuid.UUID(event["run"]["runId"])
        assert event["job"]["namespace"] and event["job"]["name"] == "etl"
        assert event["eventTime"].endswith("Z")
    complete = events[1]
    stats = {o["name"]: o["outputFacets"]["outputStatistics"]["rowCount"] for o in complete["outputs"]}
    assert stats["fact_sales"] == 8 and stats["etl_quarantine"] == 4
    assert complete["inputs"][0]["inputFacets"]["dataQualityMetrics"]["rowCount"] == 12
    assert any(
        f["name"] == "line_total" for f in next(o for o in complete["outputs"] if o["name"] == "fact_sales")["facets"]["schema"]["fields"]
    )


def test_docs_generate_is_stable(run_cli: Cli, loaded: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    first = run_cli("docs", "generate", "--output-dir", str(out))
    assert first.exit_code == 0 and first.stdout.count("updated") == 4
    schema = (out / "schema.md").read_text()
    assert "erDiagram" in schema and "dim_customers ||--o{ fact_sales" in schema
    assert "| `line_total` |" in (out / "data_dictionary.md").read_text()
    assert "sales.csv" in (out / "lineage.md").read_text()
    second = run_cli("docs", "generate", "--output-dir", str(out))
    assert second.stdout.count("unchanged") == 4


def test_passwords_are_masked_in_lineage_and_exports(pg_url: str, tmp_path: Path) -> None:
    url = pg_url.replace("postgres@", "postgres:hunter2@")
    cli = Cli(url)
    etl_json(cli, write_csv(tmp_path / "s.csv", ROWS))
    for args in (
        ("metadata", "export", "--format", "json"),
        ("metadata", "export", "--format", "openlineage"),
        ("metadata", "lineage", "--format", "json"),
    ):
        output = cli(*args).output
        assert "hunter2" not in output
    assert "postgres:***@" in cli("metadata", "export", "--format", "openlineage").stdout
    assert q(pg_url, "SELECT COUNT(*) FROM etl_runs WHERE source LIKE '%hunter2%'") == [(0,)]
