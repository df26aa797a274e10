"""The quality gate inside the ETL: a failing blocking check rolls the run back; warn mode loads."""

from __future__ import annotations

import json
from pathlib import Path

from config.settings import DatabaseSettings, load_settings
from database.engine import make_engine
from monitoring.gate import evaluate
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json, one, q
from tests.test_quality_checks import CLEAN_ROWS

FAIL = {"RDP_QUALITY_RULES__ON_FAILURE": "fail"}


def test_failing_gate_rolls_back_and_keeps_its_results(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    result = run_cli("etl", "--source", str(write_csv(tmp_path / "s.csv", ROWS)), env=FAIL)
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and error[0].startswith("Error: quality gate failed (accuracy.source.business_rules 0.")
    assert "the run was rolled back and nothing was loaded" in result.output
    for table in ("fact_sales", "etl_quarantine", "dim_products", "agg_daily_product"):
        assert one(warehouse_url, f"SELECT COUNT(*) FROM {table}") == 0, table
    assert q(warehouse_url, "SELECT status FROM etl_runs") == [("failed",)]
    recorded = q(warehouse_url, "SELECT check_name, passed FROM quality_results WHERE run_id = 1")
    assert ("accuracy.source.business_rules", False) in [(c, bool(p)) for c, p in recorded]


def test_warn_mode_loads_and_says_so(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    summary = etl_json(run_cli, write_csv(tmp_path / "s.csv", ROWS), "--format", "json")
    assert summary["status"] == "success" and summary["rows_loaded"] == 8
    assert "quality gate failed but quality_rules.on_failure is warn: accuracy.source.business_rules" in summary["message"]
    assert 0 < summary["quality"]["accuracy"] < 1


def test_clean_data_passes_the_gate(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    result = run_cli("etl", "--source", str(write_csv(tmp_path / "s.csv", CLEAN_ROWS)), "--format", "json", env=FAIL)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "success"
    assert set(summary["quality"]) >= {"completeness", "validity", "uniqueness", "accuracy", "consistency"}
    assert one(warehouse_url, "SELECT COUNT(*) FROM quality_results WHERE run_id = 1") > 20


def test_quarantine_replay_command(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "s.csv", ROWS))
    dry = json.loads(
        run_cli(
            "quarantine",
            "replay",
            "--reason",
            "zero_quantity",
            "--dry-run",
            "--format",
            "json",
            env={"RDP_RULES__REJECT_ZERO_QUANTITY": "false"},
        ).stdout
    )
    assert (dry["considered"], dry["loaded"], dry["dry_run"]) == (1, 1, True)
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 8
    done = run_cli("quarantine", "replay", "--reason", "zero_quantity", env={"RDP_RULES__REJECT_ZERO_QUANTITY": "false"})
    assert done.exit_code == 0 and "still quarantined" in done.output
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 9
    bad = run_cli("quarantine", "replay", "--reason", "nope")
    assert bad.exit_code == 1 and "Error: unknown reason 'nope'" in bad.output


def test_a_runs_checks_read_only_the_dates_it_loaded(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """A small load into a big warehouse must not scan the whole fact table: the run's fact checks
    and its line-identity check cover the dates it loaded; `quality check` covers everything."""
    early, late = CLEAN_ROWS[:2], CLEAN_ROWS[2:]
    assert {r[4][:10] for r in early}.isdisjoint({r[4][:10] for r in late})
    etl_json(run_cli, write_csv(tmp_path / "early.csv", early))
    etl_json(run_cli, write_csv(tmp_path / "late.csv", late))
    totals = dict(q(warehouse_url, "SELECT check_name, total FROM quality_results WHERE run_id = 2"))
    assert totals["uniqueness.fact_sales.line_id"] == len(late)  # not the 10 facts of the warehouse
    assert totals["validity.fact_sales.invoice_no"] == len(late)
    assert run_cli("quality", "check").exit_code == 0
    whole = dict(q(warehouse_url, "SELECT check_name, total FROM quality_results WHERE run_id IS NULL"))
    assert whole["uniqueness.fact_sales.line_id"] == len(CLEAN_ROWS)


def test_a_run_without_new_facts_measures_no_fact_check(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "s.csv", CLEAN_ROWS)
    etl_json(run_cli, source)
    again = etl_json(run_cli, source, "--force")
    assert again["rows_loaded"] == 0 and again["rows_already_loaded"] == len(CLEAN_ROWS)
    totals = dict(q(warehouse_url, "SELECT check_name, total FROM quality_results WHERE run_id = 2"))
    assert totals["uniqueness.fact_sales.line_id"] == 0 and totals["validity.fact_sales.invoice_no"] == 0


def test_a_first_loads_fact_checks_count_the_whole_fact_with_the_same_results(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """A run that began on an empty fact table owns every fact: counting the fact whole (parallel on
    PostgreSQL) must give exactly what counting the run's rows gives."""
    first = etl_json(run_cli, write_csv(tmp_path / "s.csv", ROWS))
    totals = dict(q(warehouse_url, "SELECT check_name, total FROM quality_results WHERE run_id = 1"))
    assert totals["validity.fact_sales.invoice_no"] == first["rows_loaded"] > 0
    settings, engine = load_settings(default_files=(), environ={}), make_engine(DatabaseSettings(url=warehouse_url))
    with engine.connect() as conn:
        scoped, whole = evaluate(conn, settings, 1), evaluate(conn, settings, 1, fact_holds_only_run=True)
    engine.dispose()

    def figures(result):
        return [(r.check, r.measured, r.offending, r.total) for r in result.results]

    assert figures(whole) == figures(scoped)
