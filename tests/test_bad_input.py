"""Bad input: one clear `Error:` line, exit code 1, and nothing half-loaded."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from sqlalchemy import text

from config.settings import DatabaseSettings
from database.engine import make_engine
from database.locks import warehouse_lock
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, one, q
from utils.errors import TransientDatabaseError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def _assert_nothing_written(url: str) -> None:
    if url.startswith("sqlite:///"):
        assert not Path(url.removeprefix("sqlite:///")).exists(), "the warehouse file must not be created"
        return
    tables = one(url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()")
    assert tables == 0


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "nope.csv", "nope.csv: file not found; check the --source path"),
        (lambda d: d, ": the folder holds no extract files (.csv, .tsv, .txt, .gz, .bz2, .zip, .xlsx, .xlsm)"),
        (lambda d: _write(d / "empty.csv", b""), "empty.csv: the file is empty; expected a header line and sales rows"),
        (lambda d: _write(d / "header.csv", (HEADER + "\n").encode()), "header.csv: has a header line but no data rows"),
        (
            lambda d: _write(d / "cols.csv", b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,Country\n1,2,3,4,5,6,7\n"),
            "cols.csv: required column(s) CustomerID not found in the header line; found: InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, Country.",
        ),
        (
            lambda d: _write(d / "blob.csv", bytes(range(256)) * 64),
            "blob.csv: looks like binary data, not a CSV text file; export the sales as CSV",
        ),
        (lambda d: _zip(d / "book.csv"), "book.csv: looks like a zip archive or Excel workbook, not a CSV text file"),
    ],
    ids=["missing", "directory", "empty", "header-only", "missing-column", "binary", "zip"],
)
def test_bad_source(run_cli: Cli, warehouse_url: str, tmp_path: Path, make, expected: str) -> None:
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    result = run_cli("etl", "--source", str(make(source_dir)))
    assert result.exit_code == 1
    assert expected in _error_line(result.output)
    _assert_nothing_written(warehouse_url)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", HEADER + "\n")
    return path


def test_unreachable_database_names_it_without_password(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "s.csv", ROWS)
    result = Cli("postgresql://postgres:s3cret@127.0.0.1:1/nowhere")("etl", "--source", str(source))
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert "postgres:***@127.0.0.1:1/nowhere" in line and "is the server running?" in line
    assert "s3cret" not in result.output


def test_missing_postgres_database_says_how_to_fix(pg_available: None, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "s.csv", ROWS)
    result = Cli("postgresql://postgres@127.0.0.1:5432/rdp_no_such_db")("etl", "--source", str(source))
    assert result.exit_code == 1
    assert 'database "rdp_no_such_db" does not exist. Create it (createdb)' in _error_line(result.output)


def test_bad_config_value_from_environment(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "s.csv", ROWS)
    result = sqlite_cli("etl", "--source", str(source), env={"RDP_ETL__CHUNK_SIZE": "lots"})
    assert result.exit_code == 1
    assert _error_line(result.output).startswith(
        "Error: environment variable RDP_ETL__CHUNK_SIZE: etl.chunk_size: Input should be a valid integer"
    )
    _assert_nothing_written(sqlite_url)


def test_bad_config_file(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("etl:\n  chunk_size: 5\n  chunksize: 3\n")
    source = write_csv(tmp_path / "s.csv", ROWS)
    result = sqlite_cli("--config", str(config), "etl", "--source", str(source))
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert f"{config}: " in line
    assert "etl.chunk_size: Input should be greater than or equal to 100 (got 5)" in line
    assert "unknown key 'etl.chunksize' (did you mean 'etl.chunk_size'?)" in line
    _assert_nothing_written(sqlite_url)


def _inject_failure(url: str, at_row: int) -> None:
    from tests.test_cli_etl import _engine

    engine = _engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER boom BEFORE INSERT ON fact_sales WHEN NEW.source_row = {at_row} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            )
        else:
            conn.execute(
                text(
                    f"CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN IF NEW.source_row = {at_row} THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(text("CREATE TRIGGER boom BEFORE INSERT ON fact_sales FOR EACH ROW EXECUTE FUNCTION boom()"))
    engine.dispose()


def test_failure_mid_run_leaves_warehouse_unchanged(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    assert run_cli("setup").exit_code == 0
    _inject_failure(warehouse_url, at_row=250)
    rows = [
        [
            f"5{i:05d}",
            f"2{i % 40:04d}",
            f"ITEM {i % 40}",
            "2",
            f"2011-0{1 + i // 100}-0{1 + i % 9} 10:00:00",
            "1.25",
            str(12346 + i % 7),
            "France",
        ]
        for i in range(300)
    ]
    rows[10][3] = "0"  # one row for the quarantine
    result = run_cli("etl", "--source", str(write_csv(tmp_path / "s.csv", rows)), "--chunk-size", "100")
    assert result.exit_code == 1
    assert "injected failure" in _error_line(result.output)
    for table in ("fact_sales", "etl_quarantine", "dim_products", "dim_date"):
        assert one(warehouse_url, f"SELECT COUNT(*) FROM {table}") == 0, table
    assert one(warehouse_url, "SELECT COUNT(*) FROM dim_customers") == 1  # only the unknown customer
    status, message = q(warehouse_url, "SELECT status, message FROM etl_runs")[0]
    assert status == "failed" and "injected failure" in message


def test_interrupted_run_is_marked_failed_at_next_start(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    assert run_cli("setup").exit_code == 0
    from tests.test_cli_etl import _engine

    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO etl_runs (job_name, source, status, started_at, rows_read, rows_loaded, rows_quarantined, rows_already_loaded) VALUES ('etl', 'x.csv', 'running', '2026-01-01 00:00:00', 0, 0, 0, 0)"
            )
        )
    engine.dispose()
    assert run_cli("etl", "--source", str(write_csv(tmp_path / "s.csv", ROWS))).exit_code == 0
    assert q(warehouse_url, "SELECT run_id, status, message FROM etl_runs ORDER BY run_id")[0][1:] == (
        "failed",
        "interrupted: the process ended before the run finished (detected at the next start)",
    )


def test_second_run_waits_then_fails_clearly_on_lock_timeout(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    assert run_cli("setup").exit_code == 0
    engine = make_engine(DatabaseSettings(url=warehouse_url))
    source = write_csv(tmp_path / "s.csv", ROWS)
    with warehouse_lock(engine, timeout_s=1):
        result = run_cli("etl", "--source", str(source), env={"RDP_DATABASE__LOCK_TIMEOUT_S": "0.6"})
    engine.dispose()
    assert result.exit_code == 1
    assert "Waiting for another run to release the warehouse lock" in result.output
    assert "another run holds the warehouse lock" in _error_line(result.output)
    assert "raise database.lock_timeout_s" in result.output
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 0
    assert run_cli("etl", "--source", str(source)).exit_code == 0  # the lock is free again


def test_warehouses_in_two_schemas_of_one_database_do_not_share_the_lock(pg_url: str, tmp_path: Path) -> None:
    """The advisory lock is keyed by database and schema: a run in another schema is not blocked."""
    other = pg_url.replace("-csearch_path%3D", "-csearch_path%3Dnot_").replace("-csearch_path=", "-csearch_path=not_")
    first, second = make_engine(DatabaseSettings(url=pg_url)), make_engine(DatabaseSettings(url=other))
    try:
        with warehouse_lock(first, timeout_s=1), warehouse_lock(second, timeout_s=0.5):
            pass  # the second lock was granted at once although the first is held
        held = pytest.raises(TransientDatabaseError, match="another run holds the warehouse lock")
        with warehouse_lock(first, timeout_s=1), held, warehouse_lock(first, timeout_s=0.5):
            pass
    finally:
        first.dispose()
        second.dispose()
