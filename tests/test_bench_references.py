"""The benchmark's hand-written references (bench/reference_pg.sql, bench/reference_duckdb.py) build
the same star as our load: on a generated extract, whose rejected rows all fall under rules the
references apply too, every star table has the same row count as ours. And the incremental
line's split of a file into "all but the last day" and "the last day" loses no row."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from bench import references
from sampledata.generator import generate_sales
from tests.conftest import PG_URL, Cli


@pytest.fixture
def extract(tmp_path: Path) -> Path:
    return generate_sales(tmp_path / "g.csv", 2_000, seed=1).path


def _ours(extract: Path, tmp_path: Path) -> dict[str, int]:
    url = f"sqlite:///{tmp_path / 'ours.db'}"
    result = Cli(url)("etl", "--source", str(extract), "--format", "json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert references.beyond_reference_rules(run["quarantine_by_reason"]) == 0, run["quarantine_by_reason"]
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in references.STAR_TABLES}
    engine.dispose()
    assert counts["fact_sales"] == run["rows_loaded"] > 1_900
    return counts


@pytest.mark.skipif(importlib.util.find_spec("duckdb") is None, reason="duckdb (bench/requirements.txt) is not installed")
def test_duckdb_reference_builds_the_same_star(extract: Path, tmp_path: Path) -> None:
    target = tmp_path / "reference.duckdb"
    proc = subprocess.run(references.duckdb_reference_command(extract, target), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == _ours(extract, tmp_path)


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not on PATH")
def test_postgresql_reference_builds_the_same_star(extract: Path, tmp_path: Path, pg_url: str) -> None:
    schema = make_url(pg_url).query["options"].split("=", 1)[1]
    server = make_url(PG_URL).render_as_string(hide_password=False)
    with extract.open("rb") as feed:
        proc = subprocess.run(
            references.pg_reference_command(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-w", "-d", server], schema),
            stdin=feed,
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr
    engine = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))
    with engine.connect() as conn:
        row = conn.execute(text(references.star_counts_sql(schema))).one()
        partitions = conn.execute(text(f"SELECT COUNT(*) FROM pg_inherits WHERE inhparent = '{schema}.fact_sales'::regclass")).scalar_one()
        indexes = conn.execute(
            text("SELECT COUNT(*) FROM pg_indexes WHERE schemaname = :s AND tablename = 'fact_sales'"), {"s": schema}
        ).scalar_one()
    engine.dispose()
    assert dict(zip(references.STAR_TABLES, row, strict=True)) == _ours(extract, tmp_path)
    assert partitions >= 2  # the default partition and at least one month
    assert indexes == 3  # primary key, (date_key, line_id), run_id: as our schema


def test_split_last_day_keeps_every_row(extract: Path, tmp_path: Path) -> None:
    folder = tmp_path / "split"
    folder.mkdir()
    rest, lastday, day, rest_rows, day_rows = references.split_last_day(extract, folder)
    with extract.open(newline="") as fh:
        original = list(csv.reader(fh))
    parts = [list(csv.reader(p.open(newline=""))) for p in (rest, lastday)]
    assert parts[0][0] == parts[1][0] == original[0]
    assert (len(parts[0]) - 1, len(parts[1]) - 1) == (rest_rows, day_rows)
    assert day_rows > 0 and rest_rows + day_rows == len(original) - 1
    assert sorted(parts[0][1:] + parts[1][1:]) == sorted(original[1:])
    at = original[0].index("InvoiceDate")
    assert all(r[at].startswith(str(day)) for r in parts[1][1:])
    assert not any(r[at].startswith(str(day)) for r in parts[0][1:])
