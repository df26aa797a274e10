"""A warehouse made by an older version keeps working: reading commands add the columns a newer
version introduced, and anything else that meets a missing column says how to upgrade."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from database.errors import describe
from tests.conftest import ROOT, Cli

SAMPLE = ROOT / "data" / "sample_sales.csv"


def _drop_new_column(url: str) -> None:
    """What a warehouse of the version before etl_runs.source_profile looks like."""
    parsed = make_url(url)
    engine = create_engine(parsed.set(drivername="postgresql+psycopg2") if parsed.drivername == "postgresql" else parsed)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE etl_runs DROP COLUMN source_profile"))
    engine.dispose()


def test_runs_and_quality_report_read_a_warehouse_of_an_older_version(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    assert run_cli("etl", "--source", str(SAMPLE)).exit_code == 0
    _drop_new_column(warehouse_url)
    listed = run_cli("runs", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [1]
    assert run_cli("runs", "show", "1", "--format", "json").exit_code == 0
    report = run_cli("quality", "report", "--format", "json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["run_id"] == 1


def test_a_missing_column_elsewhere_names_the_fix(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        try:
            conn.execute(text("SELECT b FROM t"))
        except Exception as exc:  # the driver's own error, as a command would meet it
            message = str(describe(engine, exc))
    engine.dispose()
    assert "no such column: b" in message
    assert message.endswith("run python main.py setup to add the new columns (nothing else changes)")
