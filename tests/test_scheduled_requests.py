"""A scheduled job runs what `etl` runs: the same options, the same checks, the same warehouse.

Each kind of option (a layout with --map, --sheet on a workbook, --query on a database, the
Dask engine) is loaded once by `etl` and once by a job defined with the same options and run
with `schedule run`, into two fresh warehouses whose table checksums must be equal. A bad
option is refused when the job is defined, with etl's own message; a job row from before
requests were stored is migrated and still runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from etl.request import RunRequest
from tests import test_sources_equivalence as equivalence
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import one
from tests.test_sources_equivalence import _engine, contents
from tests.test_sources_workbook import FIRST_EDITION, typed, write_workbook

warehouses = equivalence.warehouses  # a fixture: fresh warehouses, SQLite files or PostgreSQL schemas
H = "2011-03-01 10:00:00"
GERMAN = ["Beleg", "Artikel", "Text", "Menge", "Datum", "Preis", "Kunde", "Land"]
LAYOUT = """
sources:
  shop_de:
    columns: {InvoiceNo: Beleg, StockCode: Artikel, Description: Text, Quantity: Menge, InvoiceDate: Datum, UnitPrice: Preis, CustomerID: Kunde}
    delimiter: ";"
    decimal: ","
"""


def sales(first: int, n: int) -> list[list[str]]:
    """`n` sales lines over a few invoices, customers and products; one of them bad (quarantined)."""
    out = [[str(first + i // 3), f"2{i % 7:04d}", f"ITEM {i % 7}", str(1 + i % 4), H, f"{1 + i % 5}.50", str(12340 + i % 4), "Germany"]
           for i in range(n)]  # fmt: skip
    out[-1][7] = ""  # no country: quarantined the same way by both
    return out


def settled(path: Path) -> Path:
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))
    return path


def german_csv(tmp_path: Path) -> Path:
    path = tmp_path / "umsatz.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(";".join(GERMAN) + "\n")
        for r in sales(600000, 12):
            fh.write(";".join([*r[:5], r[5].replace(".", ","), *r[6:]]) + "\n")
    return path


def workbook(tmp_path: Path) -> Path:
    return write_workbook(
        tmp_path / "shop.xlsx",
        {"Year 2009-2010": [typed(r) for r in sales(500000, 6)], "Year 2010-2011": [typed(r) for r in sales(510000, 9)]},
        FIRST_EDITION,
    )


def database(tmp_path: Path) -> str:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (inv, code, descr, qty, at, price, cust, country)")
        db.executemany("INSERT INTO sales VALUES (?,?,?,?,?,?,?,?)", [typed(r) for r in sales(520000, 10)])
    return f"sqlite:///{path}"


def semicolon_cp1252(tmp_path: Path) -> Path:
    path = tmp_path / "export.txt"
    rows = sales(550000, 8)
    rows[0][2] = "CAFÉ CRÈME"  # not UTF-8 in this file
    with open(path, "w", encoding="cp1252") as fh:
        fh.write("\n".join(";".join(r) for r in [FIRST_EDITION, *rows]) + "\n")
    return path


def plain_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "sales.csv", sales(530000, 400))


QUERY = "SELECT inv AS InvoiceNo, code AS StockCode, descr AS Description, qty AS Quantity, at AS InvoiceDate, price, cust AS CustomerID, country AS Country FROM sales WHERE inv < 520003"
CASES = {
    "layout and --map": (german_csv, ["--layout", "shop_de", "--map", "Country=Land"]),
    "--sheet on a workbook": (workbook, ["--sheet", "Year 2010-2011"]),
    "--query on a database": (database, ["--query", QUERY, "--map", "UnitPrice=price"]),
    "--delimiter and --encoding": (semicolon_cp1252, ["--delimiter", ";", "--encoding", "cp1252"]),
    "--engine dask": (plain_csv, ["--engine", "dask", "--chunk-size", "100"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scheduled_job_leaves_the_warehouse_as_etl_does(case: str, warehouses, tmp_path: Path) -> None:
    make, options = CASES[case]
    source = make(tmp_path)
    source = str(settled(source) if isinstance(source, Path) else source)
    config = tmp_path / "layouts.yaml"
    config.write_text(LAYOUT)
    by_etl, by_job = Cli(warehouses()), Cli(warehouses())

    loaded = by_etl("--config", str(config), "etl", "--source", source, *options, "--format", "json")
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.stdout)["rows_loaded"] > 0

    defined = by_job("--config", str(config), "schedule", "daily", "--name", "shop", "--time", "02:00", "--source", source, *options)
    assert defined.exit_code == 0, defined.output
    listed = json.loads(by_job("schedule", "list", "--format", "json").stdout)[0]
    assert listed["run_request"] == RunRequest.from_dict(listed["run_request"]).to_dict()
    assert listed["options"] == " ".join(RunRequest.from_dict(listed["run_request"]).options())
    for word in (o for o in options if o.startswith("--")):
        assert word in listed["options"]
    ran = by_job("--config", str(config), "schedule", "run", "shop", "--format", "json")
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)
    assert report["status"] == "success" and report["files_loaded"] == 1 and len(report["etl_run_ids"]) == 1

    assert contents(by_job.url) == contents(by_etl.url)
    assert one(by_job.url, "SELECT job_name FROM etl_runs") == "shop"
    assert one(by_job.url, "SELECT source FROM etl_runs") == one(by_etl.url, "SELECT source FROM etl_runs")


def test_schedule_list_shows_the_options(sqlite_cli: Cli, tmp_path: Path) -> None:
    made = sqlite_cli(
        "schedule", "every", "--name", "wb", "--minutes", "5", "--source", "exports/*.xlsx", "--sheet", "Year 2010-2011", "--map",
        "UnitPrice=Preis", "--chunk-size", "5000", "--format", "json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    stored = json.loads(made.stdout)
    assert stored["source"] == str(Path.cwd() / "exports/*.xlsx")  # absolute: the daemon may run elsewhere
    assert (
        stored["run_request"]
        == RunRequest(
            source=stored["source"], job_name="wb", sheet="Year 2010-2011", mappings=("UnitPrice=Preis",), chunk_size=5000
        ).to_dict()
    )
    assert stored["options"] == "--map UnitPrice=Preis --sheet 'Year 2010-2011' --chunk-size 5000"
    shown = " ".join(sqlite_cli("schedule", "list", env={"COLUMNS": "300"}).output.split())
    assert "--sheet 'Year 2010-2011'" in shown and "--chunk-size 5000" in shown
    url = sqlite_cli("schedule", "daily", "--name", "db", "--time", "03:00", "--source", "sqlite:///shop.db", "--table", "sales")
    assert url.exit_code == 0, url.output  # a database URL is stored as given, not made a path
    assert json.loads(sqlite_cli("schedule", "list", "--format", "json").stdout)[0]["source"] == "sqlite:///shop.db"


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("later.csv", ["--layout", "nope"], "unknown layout 'nope'; define sources.nope in the config (known: none configured)"),
        ("later.csv", ["--map", "Price"], "--map 'Price': expected Target=Source, e.g. --map UnitPrice=Preis"),
        ("later.csv", ["--map", "Cost=Preis"], "--map 'Cost=Preis': unknown target column 'Cost'; choose from InvoiceNo"),
        ("later.csv", ["--sheet", "2011"], "--sheet applies to workbooks (.xlsx, .xlsm), not to {source} (a delimited text file)"),
        ("later.xlsx", ["--query", "SELECT 1"], "--query applies to database URLs, not to {source} (a workbook); leave out --query"),
        ("later.xlsx", ["--delimiter", ";"], "--delimiter applies to delimited text files"),
        ("sqlite:///x.db", ["--token-env", "T"], "--token-env applies to http(s) URLs, not to sqlite:///x.db (a database URL)"),
        ("postgresql://u:pw@h:port/db", ["--table", "t"], "postgresql://u:***@h:port/db: not a database URL; use e.g. postgresql://"),
        ("sqlite:///x.db", [], "sqlite:///x.db: a database source needs exactly one of --table NAME or --query 'SELECT ...'"),
        ("sqlite:///x.db", ["--query", "DELETE FROM sales"], "--query must be a SELECT statement, got 'DELETE FROM sales'"),
        ("later.csv", ["--scheduler", "tcp://127.0.0.1:9"], "--scheduler works with --engine dask only"),
        ("later.xlsx", ["--engine", "dask"], "--engine dask reads delimited text files (.csv .tsv .txt .gz .bz2) and folders of them, but"),
    ],
)
def test_bad_option_is_refused_when_the_job_is_defined_with_etls_message(
    sqlite_cli: Cli, sqlite_url: str, tmp_path: Path, source: str, options: list[str], message: str
) -> None:
    source = source if "://" in source else str(tmp_path / source)  # none of the files exists: the options are refused first
    by_etl = sqlite_cli("etl", "--source", source, *options)
    assert by_etl.exit_code == 1
    assert by_etl.stderr.startswith("Error: " + message.format(source=source)), by_etl.stderr
    defined = sqlite_cli("schedule", "daily", "--name", "x", "--time", "02:00", "--source", source, *options)
    assert (defined.exit_code, defined.stderr) == (1, by_etl.stderr)
    assert json.loads(sqlite_cli("schedule", "list", "--format", "json").stdout) == []


def test_missing_file_is_fine_and_options_need_an_etl_job(sqlite_cli: Cli, tmp_path: Path) -> None:
    later = sqlite_cli("schedule", "daily", "--name", "later", "--time", "02:00", "--source", str(tmp_path / "x.xlsx"), "--sheet", "S")
    assert later.exit_code == 0, later.output
    quality = sqlite_cli("schedule", "daily", "--name", "q", "--time", "02:00", "--kind", "quality", "--sheet", "S")
    assert quality.exit_code == 2 and "--sheet apply to etl jobs only, not to --kind quality" in quality.output


def test_job_row_from_before_requests_is_migrated_and_runs(warehouse_url: str, tmp_path: Path) -> None:
    cli = Cli(warehouse_url)
    inbox = tmp_path / "in"
    inbox.mkdir()
    settled(write_csv(inbox / "a.csv", sales(540000, 6)))
    assert cli("setup").exit_code == 0
    engine = _engine(warehouse_url)
    with engine.begin() as conn:  # the table as an older version made it, with one job in it
        conn.execute(text("ALTER TABLE scheduled_jobs DROP COLUMN run_request"))
        conn.execute(
            text(
                "INSERT INTO scheduled_jobs (name, kind, source, schedule_type, at_time, enabled, created_at, updated_at) "
                "VALUES ('old', 'etl', :source, 'daily', '02:00', :on, :now, :now)"
            ),
            {"source": str(inbox), "on": True, "now": "2026-01-01 00:00:00"},
        )
    engine.dispose()
    listed = json.loads(cli("schedule", "list", "--format", "json").stdout)
    assert [(r["name"], r["run_request"]["source"], r["options"]) for r in listed] == [("old", str(inbox), "")]
    ran = cli("schedule", "run", "old", "--format", "json")
    assert ran.exit_code == 0 and json.loads(ran.stdout)["files_loaded"] == 1, ran.output
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 5
    assert one(warehouse_url, "SELECT run_request FROM scheduled_jobs") is None  # the old row keeps behaving as before
