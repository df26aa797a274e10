"""`etl --engine dask`: the same warehouse as the pandas engine, from partitions read and cleaned on
Dask workers; a lost worker or a killed client leaves nothing half-loaded; bad usage is refused.

Most tests share one local cluster of two single-threaded worker processes (started once for the
module) and reach it with `--scheduler`; one test lets the run start and close its own cluster.
Warehouses are compared with table checksums of every data table (surrogate keys, quarantine ids
and source rows included), so "identical" means identical, not merely equivalent.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampledata.generator import generate_folder, generate_sales
from tests.conftest import ROOT, Cli
from tests.test_cli_etl import one, q
from tests.test_sources_equivalence import contents
from utils.vocabulary import SOURCE_COLUMNS

CHUNK = "300"  # small chunks: every file below is cut into several partitions


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a local cluster of two worker processes, one thread each."""
    from etl.dask_engine import DaskCluster

    with DaskCluster(None, 2, 30) as cluster:
        yield cluster.client.scheduler.address


def etl(url: str, source: Path | str, *extra: str) -> dict | list:
    result = Cli(url)("etl", "--source", str(source), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def both(tmp_path: Path, source: Path, scheduler: str, *extra: str) -> tuple[str, str, dict | list, dict | list]:
    """Load `source` with each engine into its own fresh SQLite warehouse."""
    pandas_url, dask_url = (f"sqlite:///{tmp_path / name}" for name in ("pandas.db", "dask.db"))
    by_pandas = etl(pandas_url, source, "--engine", "pandas", *extra)
    by_dask = etl(dask_url, source, "--engine", "dask", "--scheduler", scheduler, *extra)
    return pandas_url, dask_url, by_pandas, by_dask


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


def _write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes(newline.join([",".join(SOURCE_COLUMNS), *lines, ""]).encode("utf-8"))
    return path


def _line(fields: list[str]) -> str:
    return ",".join(f'"{f}"' if "," in f or '"' in f else f for f in fields)


def test_folder_gives_the_pandas_warehouse(tmp_path: Path, scheduler: str) -> None:
    """A generated folder (one CSV per store) plus a gzip file and a file with a quoted line break:
    each file is its own run, as with the pandas engine. The plain files are cut into byte ranges;
    the other two are read by the driver (they cannot be cut at byte offsets) and cleaned on the workers."""
    folder = tmp_path / "extracts"
    generate_folder(folder, 4000, 3, "store", stores=3)
    generate_sales(tmp_path / "c.csv", 900, 3)
    (folder / "c.csv.gz").write_bytes(gzip.compress((tmp_path / "c.csv").read_bytes()))
    rows = _rows(generate_sales(tmp_path / "d.csv", 700, 4).path)
    rows[10][2] = "TWO\nLINES"  # a quoted value over two lines: the scan sends the file to the line reader
    with open(folder / "d.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([list(SOURCE_COLUMNS), *rows])
    pandas_url, dask_url, by_pandas, by_dask = both(tmp_path, folder, scheduler, "--chunk-size", CHUNK)
    assert len(by_dask) == 5
    assert [s["engine"] for s in by_pandas] == ["pandas"] * 5
    assert [s["engine"] for s in by_dask] == [f"dask ({scheduler}, 2 worker threads)"] * 5
    keys = ("source", "status", "rows_read", "rows_loaded", "rows_quarantined", "rows_already_loaded", "quarantine_by_reason")
    assert [{k: s[k] for k in keys} for s in by_dask] == [{k: s[k] for k in keys} for s in by_pandas]
    assert contents(dask_url) == contents(pandas_url)
    assert q(
        dask_url, "SELECT p.description FROM fact_sales f JOIN dim_products p USING (product_key) WHERE f.source_row = 11 AND f.run_id = 5"
    )


def test_duplicates_and_malformed_lines_across_partitions(tmp_path: Path, scheduler: str) -> None:
    rows = [_line(r) for r in _rows(generate_sales(tmp_path / "base.csv", 1200, 7).path)]
    repeated = rows[4]
    rows[420] = repeated  # later partitions repeat row 5, twice: source rows 421 and 1101
    rows[1100] = " " + repeated.replace(",", " ,", 1)  # equal after trimming
    rows[301] = rows[301] + ",extra field"  # malformed lines: source rows 302 and 900
    rows.insert(600, "")  # an empty line is not a record: the lines after it are one row number lower
    rows[900] = "not,enough"
    source = _write(tmp_path / "sales.csv", rows, newline="\r\n")
    pandas_url, dask_url, by_pandas, by_dask = both(tmp_path, source, scheduler, "--chunk-size", "100")
    assert by_dask["quarantine_by_reason"] == by_pandas["quarantine_by_reason"]
    quarantined = dict(q(dask_url, "SELECT source_row, reasons FROM etl_quarantine WHERE reasons IN ('duplicate', 'malformed_line')"))
    assert {421: "duplicate", 1101: "duplicate", 302: "malformed_line", 900: "malformed_line"}.items() <= quarantined.items()
    assert contents(dask_url) == contents(pandas_url)


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_old_mac_and_windows_line_breaks_without_a_last_one(tmp_path: Path, scheduler: str, newline: str) -> None:
    rows = [_line(r) for r in _rows(generate_sales(tmp_path / "base.csv", 700, 9).path)]
    source = tmp_path / "sales.csv"
    source.write_bytes(newline.join([",".join(SOURCE_COLUMNS), *rows]).encode("utf-8"))  # no line break at the end
    pandas_url, dask_url, by_pandas, by_dask = both(tmp_path, source, scheduler, "--chunk-size", "100")
    assert by_dask["rows_read"] == by_pandas["rows_read"] == 700
    assert contents(dask_url) == contents(pandas_url)


def test_byte_ranges_start_at_line_starts(tmp_path: Path) -> None:
    from etl.dask_engine import byte_ranges

    path = tmp_path / "f.csv"
    path.write_bytes(b"h1,h2\r\na,1\r\nbb,2\rccc,3\n\ndddd,4")
    header, ranges = byte_ranges(path, 1)
    data = path.read_bytes()
    assert header == b"h1,h2\r\n"
    assert [data[a:b] for a, b in ranges] == [b"a,1\r\n", b"bb,2\r", b"ccc,3\n", b"\ndddd,4"]  # an empty line is no record
    assert byte_ranges(path, 1000)[1] == [(len(header), len(data))]


def test_rerun_adds_nothing(tmp_path: Path, scheduler: str) -> None:
    source = generate_sales(tmp_path / "sales.csv", 2500, 11).path
    url = f"sqlite:///{tmp_path / 'w.db'}"
    dask = ("--engine", "dask", "--scheduler", scheduler, "--chunk-size", CHUNK)
    first = etl(url, source, *dask)
    before = contents(url)
    assert etl(url, source, *dask)["status"] == "skipped"
    forced = etl(url, source, *dask, "--force")
    assert (forced["status"], forced["rows_loaded"], forced["rows_quarantined"]) == ("success", 0, 0)
    assert forced["rows_already_loaded"] == first["rows_read"] == 2500
    again = etl(url, source, "--engine", "pandas", "--force")  # and the pandas engine agrees
    assert again["rows_already_loaded"] == 2500
    assert contents(url) == before


def test_a_run_starts_and_closes_its_own_local_cluster(tmp_path: Path) -> None:
    source = generate_sales(tmp_path / "sales.csv", 1000, 5).path
    summary = etl(f"sqlite:///{tmp_path / 'w.db'}", source, "--engine", "dask", "--chunk-size", CHUNK)
    assert (summary["status"], summary["engine"]) == ("success", "dask (local cluster, 2 worker threads)")
    timings = summary["timings"]
    assert "cluster_start" in timings  # this run started the cluster (0 when the run ended before it was up)
    # Partitions are cleaned by the workers, or by the driver while the cluster is still starting
    # (on a loaded machine a small source can be done before it is up): either way, cleaned.
    assert timings.get("worker_clean", 0) + timings.get("driver_clean", 0) > 0


def test_engine_setting_chooses_dask(tmp_path: Path, scheduler: str) -> None:
    source = generate_sales(tmp_path / "sales.csv", 500, 5).path
    env = {"RDP_ETL__ENGINE": "dask", "RDP_ETL__DASK_SCHEDULER": scheduler}
    result = Cli(f"sqlite:///{tmp_path / 'w.db'}")("etl", "--source", str(source), "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["engine"].startswith(f"dask ({scheduler}")


# -- bad usage: one Error line, exit 1, nothing written -----------------------------------------


def _refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = Cli(url)("etl", *args, env=env)
    assert result.exit_code == 1
    assert not (tmp_path / "w.db").exists()  # nothing written, not even the schema
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


def test_scheduler_needs_the_dask_engine(tmp_path: Path) -> None:
    source = generate_sales(tmp_path / "sales.csv", 10, 5).path
    assert _refused(tmp_path, "--source", str(source), "--scheduler", "tcp://127.0.0.1:8786") == (
        "Error: --scheduler works with --engine dask only (the pandas engine runs in this process); "
        "add --engine dask or leave out --scheduler"
    )


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("postgresql://etl:secret@db.example/shop", "a database URL"),
        ("https://shop.example/api/sales", "an HTTP API"),
        ("exports.zip", "a zip archive"),
        ("online_retail_II.xlsx", "a workbook"),
    ],
)
def test_sources_the_dask_engine_does_not_read(tmp_path: Path, source: str, what: str) -> None:
    shown = source.replace("secret", "***")
    assert _refused(tmp_path, "--source", source, "--engine", "dask") == (
        f"Error: --engine dask reads delimited text files (.csv .tsv .txt .gz .bz2) and folders of them, "
        f"but {shown} is {what}; load it with --engine pandas"
    )


def test_unreachable_scheduler(tmp_path: Path) -> None:
    source = generate_sales(tmp_path / "sales.csv", 10, 5).path
    line = _refused(
        tmp_path,
        "--source",
        str(source),
        "--engine",
        "dask",
        "--scheduler",
        "tcp://127.0.0.1:9",
        env={"RDP_ETL__DASK_CONNECT_TIMEOUT_S": "1"},
    )
    assert line.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9 (")
    assert line.endswith("); start it (dask scheduler, then dask worker tcp://127.0.0.1:9) or leave out --scheduler to run a local cluster")


# -- failures: a lost worker, a killed client ---------------------------------------------------


def _cli(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "main.py", "--database-url", url, "etl", *args, "--format", "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONFAULTHANDLER": "1"},  # SIGABRT prints every thread's stack (see _stuck)
    )


def _stuck(proc: subprocess.Popen, what: str) -> str:
    proc.send_signal(signal.SIGABRT)
    _, err = proc.communicate(timeout=30)
    return f"{what}; its threads:\n{err[-8000:]}"


def test_a_worker_killed_mid_run_is_replaced(tmp_path: Path, scheduler: str) -> None:
    """SIGKILL one worker while it reads a partition: Dask runs its task again (the nanny restarts
    the worker), and the warehouse is the complete result; or the run fails and nothing was loaded."""
    from distributed import Client

    source = generate_sales(tmp_path / "sales.csv", 30_000, 13).path
    reference, url = f"sqlite:///{tmp_path / 'pandas.db'}", f"sqlite:///{tmp_path / 'dask.db'}"
    etl(reference, source, "--engine", "pandas", "--chunk-size", "1000")
    proc = _cli(url, "--source", str(source), "--engine", "dask", "--scheduler", scheduler, "--chunk-size", "1000")
    killed = None
    with Client(scheduler, timeout=10) as client:
        pids = client.run(os.getpid)
        deadline = time.monotonic() + 60
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if any(str(k).startswith("_range_task") for k in keys)]
            if busy:
                killed = pids[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.005)
        out, err = proc.communicate(timeout=120)
        client.wait_for_workers(2, timeout=30)  # the nanny brought it back: the module's cluster is whole again
    assert killed is not None, "the run ended before a worker could be killed"
    if proc.returncode == 0:
        assert json.loads(out)["status"] == "success"
        assert contents(url) == contents(reference)
    else:
        assert one(url, "SELECT COUNT(*) FROM fact_sales") == 0, err
        assert one(url, "SELECT COUNT(*) FROM etl_quarantine") == 0


def _processes_reading(path: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and str(path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_killed_client_leaves_the_warehouse_unchanged(tmp_path: Path) -> None:
    """SIGKILL the etl process in the middle of its load: its transaction never commits, and the
    worker processes of its local cluster (forked from it) exit too."""
    source = generate_sales(tmp_path / "sales.csv", 60_000, 17).path
    url = f"sqlite:///{tmp_path / 'w.db'}"
    proc = _cli(url, "--source", str(source), "--engine", "dask", "--chunk-size", "1000")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        tables = (tmp_path / "w.db").exists() and q(url, "SELECT 1 FROM sqlite_master WHERE name = 'etl_runs'")
        if tables and q(url, "SELECT run_id FROM etl_runs WHERE status = 'running'"):
            break
        time.sleep(0.05)
    else:
        pytest.fail(_stuck(proc, "the run did not start within 60 s") if proc.poll() is None else "the run ended before it could be killed")
    time.sleep(0.5)  # into the load
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _processes_reading(source) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_reading(source) == []  # no orphaned workers
    assert one(url, "SELECT COUNT(*) FROM fact_sales") == 0
    assert one(url, "SELECT COUNT(*) FROM dim_products") == 0
    summary = etl(url, source, "--engine", "pandas")  # the next run marks it failed and loads it all
    assert (summary["status"], summary["rows_read"]) == ("success", 60_000)
    assert q(url, "SELECT status FROM etl_runs ORDER BY run_id") == [("failed",), ("success",)]


# -- the real file ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_file_gives_the_pandas_warehouse_on_postgresql(real_file: Path, pg_url: str, scheduler: str) -> None:
    """The pandas run goes into the `pg_url` schema, the Dask run into a second one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import PG_URL

    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))
    schema = "t_dask_" + os.urandom(6).hex()
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    dask_url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        env = {"RDP_QUALITY_RULES__ON_FAILURE": "fail"}
        by_pandas = Cli(pg_url)("etl", "--source", str(real_file), "--format", "json", "--engine", "pandas", env=env)
        by_dask = Cli(dask_url)(
            "etl", "--source", str(real_file), "--format", "json", "--engine", "dask", "--scheduler", scheduler, env=env
        )
        assert by_pandas.exit_code == 0 and by_dask.exit_code == 0, by_pandas.output + by_dask.output
        p, d = json.loads(by_pandas.stdout), json.loads(by_dask.stdout)
        assert (d["rows_read"], d["rows_loaded"], d["rows_quarantined"]) == (p["rows_read"], p["rows_loaded"], p["rows_quarantined"])
        assert d["rows_read"] == 541_909
        assert contents(dask_url) == contents(pg_url)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_the_dask_engine_records_the_header_and_its_drift(tmp_path: Path, scheduler: str) -> None:
    """Schema drift sees a Dask run's header as it sees the pandas engine's."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    dask = ("--engine", "dask", "--scheduler", scheduler, "--chunk-size", CHUNK)
    first = _write(tmp_path / "sales-1.csv", [_line(r) for r in _rows(generate_sales(tmp_path / "g1.csv", 400, 3).path)])
    assert etl(url, first, *dask)["source_columns"] == list(SOURCE_COLUMNS)
    renamed = tmp_path / "sales-2.csv"
    rows = _rows(generate_sales(tmp_path / "g2.csv", 400, 4).path)
    renamed.write_text("\n".join([",".join([*SOURCE_COLUMNS[:-1], "Land"]), *(_line(r) for r in rows), ""]), encoding="utf-8")
    summary = etl(url, renamed, *dask, "--map", "Country=Land")
    assert summary["header_changes"] == {"previous_run": 1, "added": ["Land"], "removed": ["Country"]}
