"""Quality signals from the first days, end to end on both back ends: a CustomerID drop alerts
from the second run (relative-change rule), a tenth of a feed's usual volume alerts, and the
alert names its rule, metric and setting. Small generated extracts keep it fast."""

from __future__ import annotations

import csv
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text

from config.settings import DatabaseSettings
from database.engine import make_engine
from database.models import TIMESTAMP
from sampledata.generator import generate_sales
from tests.conftest import Cli, write_csv


def extracts(tmp_path: Path, parts: int, rows_each: int, blank_last: float = 0.0, seed: int = 11) -> list[Path]:
    """One generated extract dealt round-robin into `parts` files of the same profile, named like
    monthly files (sales-2011-0N.csv); the last has `blank_last` of its CustomerIDs blanked."""
    source = tmp_path / "all.csv"
    generate_sales(source, parts * rows_each, seed)
    with open(source, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    files = []
    for part in range(parts):
        chunk = rows[part::parts]
        if part == parts - 1 and blank_last:
            for i, row in enumerate([r for r in chunk if r[6]]):
                if int((i + 1) * blank_last) > int(i * blank_last):  # evenly spread, blank_last of them
                    row[6] = ""
        files.append(write_csv(tmp_path / f"sales-2011-{part + 1:02d}.csv", chunk, header))
    return files


def alerts_of(url: str, run_id: int | None = None) -> list[tuple[str, str, str]]:
    engine = make_engine(DatabaseSettings(url=url))
    with engine.connect() as conn:
        sql = "SELECT rule, metric, message FROM alerts" + (" WHERE run_id = :r" if run_id else "") + " ORDER BY id"
        rows = [tuple(r) for r in conn.execute(text(sql), {"r": run_id})]
    engine.dispose()
    return rows


def load(cli: Cli, path: Path, *extra: str) -> int:
    result = cli("etl", "--source", str(path), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def test_customer_id_drop_alerts_on_the_second_run(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    first, second = extracts(tmp_path, 2, 1500, blank_last=0.4)
    assert load(run_cli, first) == 1
    assert [a for a in alerts_of(warehouse_url) if a[0] in ("anomaly", "volume")] == []
    run = load(run_cli, second)
    raised = [a for a in alerts_of(warehouse_url, run) if a[0] == "anomaly"]
    assert [(rule, metric) for rule, metric, _ in raised] == [("anomaly", "check.completeness.source.customer_id")]
    message = raised[0][2]
    assert "of 1 earlier run(s)" in message and "rule relative_change" in message and "(quality_rules.anomaly)" in message


def test_five_monthly_extracts_alert_on_the_fifth(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """The issue's scenario on generated months: four normal loads, then one with 40 % of its
    identified customers blanked; four earlier runs are fewer than anomaly_min_history (5)."""
    files = extracts(tmp_path, 5, 600, blank_last=0.4, seed=5)
    runs = [load(run_cli, f) for f in files]
    for run in runs[:-1]:
        assert [a for a in alerts_of(warehouse_url, run) if a[0] in ("anomaly", "volume")] == []
    raised = [a for a in alerts_of(warehouse_url, runs[-1]) if a[0] == "anomaly"]
    assert [metric for _, metric, _ in raised] == ["check.completeness.source.customer_id"]
    assert "of 4 earlier run(s)" in raised[0][2] and "rule relative_change" in raised[0][2]
    report = run_cli("quality", "report", "--run", str(runs[-1]))
    assert "ANOMALY check.completeness.source.customer_id" in report.output and "rule relative_change" in report.output


def test_a_tenth_of_the_usual_volume_alerts(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    files = extracts(tmp_path, 4, 800, seed=3)
    small = write_csv(tmp_path / "small.csv", list(csv.reader(files[-1].open()))[1:81])
    for path in files[:3]:
        load(run_cli, path, "--job-name", "daily")
    other = load(run_cli, files[3], "--job-name", "weekly")  # another feed: no history of its own yet
    assert [a for a in alerts_of(warehouse_url, other) if a[0] == "volume"] == []
    run = load(run_cli, small, "--job-name", "daily")
    raised = [a for a in alerts_of(warehouse_url, run) if a[0] == "volume"]
    assert len(raised) == 1 and raised[0][1] == "rows.read"
    assert "rows.read = 80 in run 5 vs median 800 of 3 earlier run(s) of job 'daily' (0.10x; rule volume" in raised[0][2]
    assert "(quality_rules.volume_factor)" in raised[0][2]
    big = load(run_cli, small, "--job-name", "daily", "--force")  # a tenth again: alerted within the cool-down already
    assert [a for a in alerts_of(warehouse_url, big) if a[0] == "volume"] == []


# -- freshness ------------------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_sales.csv"


def test_first_load_of_the_shipped_sample_warns_about_nothing(run_cli: Cli, warehouse_url: str, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        result = run_cli("etl", "--source", str(SAMPLE))
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output and [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert alerts_of(warehouse_url) == []
    again = json.loads(run_cli("etl", "--source", str(SAMPLE), "--format", "json").stdout)  # unchanged: skipped
    assert again["status"] == "skipped"
    assert json.loads(run_cli("quality", "check", "--format", "json").stdout)["warnings"] == []


def _set_finished(url: str, job: str, days_ago: float) -> None:
    engine = make_engine(DatabaseSettings(url=url))
    when = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=days_ago)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE etl_runs SET finished_at = :t WHERE job_name = :j").bindparams(bindparam("t", type_=TIMESTAMP)),
            {"t": when, "j": job},
        )
    engine.dispose()


def test_freshness_is_about_each_jobs_loads(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    daily, manual = extracts(tmp_path, 2, 200, seed=9)
    load(run_cli, daily, "--job-name", "daily")
    load(run_cli, manual)
    _set_finished(warehouse_url, "daily", 3.5)
    data = json.loads(run_cli("quality", "check", "--format", "json").stdout)
    last = next(c for c in data["checks"] if c["check"] == "freshness.etl_runs.last_success")
    assert (last["offending"], last["total"], last["passed"]) == (1, 2, False)  # job 'daily' stale, manual runs fresh
    assert last["measured"] == pytest.approx(2 / 3.5, rel=0.01)
    assert last["samples"][0].startswith("job 'daily': last successful load ")
    assert last["samples"][0].endswith("is 3.5 days old (limit 2, quality_rules.freshness_max_age_days)")
    raised = run_cli("alerts", "run", "--format", "json")
    message = next(a["message"] for a in json.loads(raised.stdout) if a["metric"] == "freshness.etl_runs.last_success")
    assert "quality_rules.freshness_max_age_days" in message
    _set_finished(warehouse_url, "etl", 5)  # manual runs: any load counts, and the newest is 3.5 days old
    data = json.loads(run_cli("quality", "check", "--format", "json").stdout)
    last = next(c for c in data["checks"] if c["check"] == "freshness.etl_runs.last_success")
    assert (last["offending"], last["total"]) == (2, 2) and "manual runs (any load)" in " ".join(last["samples"])


def test_data_recency_is_a_check_a_user_switches_on(run_cli: Cli, tmp_path: Path) -> None:
    load(run_cli, extracts(tmp_path, 1, 200, seed=4)[0])
    names = [c["check"] for c in json.loads(run_cli("quality", "check", "--format", "json").stdout)["checks"]]
    assert "freshness.fact_sales.newest_transaction" not in names
    data = json.loads(run_cli("quality", "check", "--format", "json", env={"RDP_QUALITY_RULES__DATA_RECENCY_MAX_AGE_DAYS": "30"}).stdout)
    recency = next(c for c in data["checks"] if c["check"] == "freshness.fact_sales.newest_transaction")
    assert recency["passed"] is False and recency["samples"][0].endswith("(limit 30, quality_rules.data_recency_max_age_days)")
    bad = run_cli("quality", "check", env={"RDP_QUALITY_RULES__DATA_RECENCY_MAX_AGE_DAYS": "-1"})
    assert bad.exit_code == 1 and "quality_rules.data_recency_max_age_days" in bad.output


# -- reasons that add up ------------------------------------------------------------------------------


def test_reasons_add_up_to_the_quarantined_rows(run_cli: Cli, tmp_path: Path) -> None:
    free = ["536370", "POST", "POSTAGE", "1", "2011-06-01 10:00:00", "0", "12583", "France"]
    rows = [
        ["536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2011-06-01 08:26:00", "2.55", "17850", "United Kingdom"],
        ["536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2011-06-01 08:26:00", "2.55", "17850", "United Kingdom"],
        free,
        list(free),  # zero price, then the same row again: zero price and a duplicate
        ["536371", "22633", "HAND WARMER", "0", "2011-06-01 11:00:00", "1.85", "17851", "United Kingdom"],
        ["536372", "22634", "HAND WARMER RED", "3", "2011-06-01 12:00:00", "1.85", "17851", "United Kingdom"],
    ]
    source = str(write_csv(tmp_path / "s.csv", rows))
    summary = json.loads(run_cli("etl", "--source", source, "--dry-run", "--format", "json").stdout)  # counted, rolled back
    assert summary["rows_quarantined"] == 4
    assert summary["quarantine_by_reasons"] == {
        "duplicate": 1,
        "non_positive_price": 1,
        "zero_quantity": 1,
        "non_positive_price;duplicate": 1,
    }
    assert sum(summary["quarantine_by_reasons"].values()) == summary["rows_quarantined"]
    assert summary["rows_with_several_reasons"] == 1
    assert summary["quarantine_by_reason"] == {"duplicate": 2, "non_positive_price": 2, "zero_quantity": 1}  # rows per reason
    lines = run_cli("etl", "--source", source).output.splitlines()
    labels = [line.split("│")[1][1:].rstrip() for line in lines if line.count("│") >= 3]  # less the cell padding
    start = labels.index("  quarantined")
    assert labels[start : start + 6] == [
        "  quarantined", "    duplicate", "    non_positive_price", "    zero_quantity", "    rows with several reasons", "  already loaded",
    ]  # fmt: skip
    several = next(line for line in lines if "rows with several reasons" in line)
    assert "1 (non_positive_price + duplicate 1)" in several


# -- schema drift and new values ---------------------------------------------------------------------


def _with_header(path: Path, out: Path, rename: dict[str, str] | None = None, extra: str | None = None) -> Path:
    rows = list(csv.reader(path.open(newline="")))
    header = [(rename or {}).get(h, h) for h in rows[0]]
    if extra:
        header.append(extra)
        rows = [rows[0], *([*r, "0"] for r in rows[1:])]
    return write_csv(out, rows[1:], header)


def test_a_renamed_or_added_column_alerts_on_a_successful_load(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    first, second, third = extracts(tmp_path, 3, 300, seed=8)
    assert load(run_cli, first) == 1
    renamed = _with_header(second, tmp_path / "sales-2011-12.csv", rename={"UnitPrice": "Price"})  # a known variant: loads
    summary = json.loads(run_cli("etl", "--source", str(renamed), "--format", "json").stdout)
    assert summary["status"] == "success" and summary["rows_loaded"] > 0
    assert summary["header_changes"] == {"previous_run": 1, "added": ["Price"], "removed": ["UnitPrice"]}
    raised = [a for a in alerts_of(warehouse_url, 2) if a[0] == "schema_drift"]
    assert len(raised) == 1 and raised[0][1] == "header"
    assert "differs from run 1 of the same feed (source pattern 'sales-#-#.csv'): added 'Price'; gone 'UnitPrice'" in raised[0][2]
    assert "(rule schema_drift, setting quality_rules.schema_drift)" in raised[0][2]

    added = _with_header(third, tmp_path / "sales-2012-01.csv", rename={"UnitPrice": "Price"}, extra="Discount")
    table = run_cli("etl", "--source", str(added))
    assert table.exit_code == 0 and "header changed" in table.output and "added Discount" in table.output
    assert [a[2].split(": added ")[1][:10] for a in alerts_of(warehouse_url, 3) if a[0] == "schema_drift"] == ["'Discount'"]
    report = run_cli("quality", "report", "--run", "3").output
    assert "Source drift" in report and "HEADER CHANGED the header of run 3 differs from run 2" in report

    same = _with_header(third, tmp_path / "sales-2012-02.csv", rename={"UnitPrice": "Price"}, extra="Discount")
    json.loads(run_cli("etl", "--source", str(same), "--force", "--format", "json").stdout)
    assert [a for a in alerts_of(warehouse_url, 4) if a[0] == "schema_drift"] == []
    quiet = run_cli("etl", "--source", str(first), "--force", "--format", "json", env={"RDP_QUALITY_RULES__SCHEMA_DRIFT": "false"})
    assert json.loads(quiet.stdout)["header_changes"]["removed"] == ["Price", "Discount"]
    assert [a for a in alerts_of(warehouse_url, 5) if a[0] == "schema_drift"] == []  # switched off: reported, not alerted


def test_a_country_never_seen_before_is_reported(run_cli: Cli, tmp_path: Path) -> None:
    first, second = extracts(tmp_path, 2, 300, seed=6)
    first_summary = json.loads(run_cli("etl", "--source", str(first), "--format", "json").stdout)
    assert first_summary["new_values"] == {}  # the first profiled run is the baseline
    rows = list(csv.reader(second.open(newline="")))
    rows[1][7] = rows[2][7] = "Atlantis"
    moved = write_csv(tmp_path / "sales-2011-09.csv", rows[1:], rows[0])
    table = run_cli("etl", "--source", str(moved))
    assert table.exit_code == 0 and "new Country" in table.output and "Atlantis" in table.output
    report = run_cli("quality", "report", "--run", "2", "--format", "markdown").output
    assert "- NEW Country: Atlantis (never seen before; quality_rules.new_value_columns)" in report
    bad = run_cli("config", "show", env={"RDP_QUALITY_RULES__NEW_VALUE_COLUMNS": '["Colour"]'})
    assert bad.exit_code == 1 and "quality_rules.new_value_columns" in bad.output and "unknown column" in bad.output


def test_an_existing_warehouse_gets_the_profile_column(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    first, second = extracts(tmp_path, 2, 200, seed=2)
    load(run_cli, first)
    engine = make_engine(DatabaseSettings(url=warehouse_url))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE etl_runs DROP COLUMN source_profile"))  # as a warehouse made before it
    assert load(run_cli, second) == 2
    with engine.connect() as conn:
        profiles = conn.execute(text("SELECT run_id, source_profile FROM etl_runs ORDER BY run_id")).all()
    engine.dispose()
    assert profiles[0][1] is None and json.loads(profiles[1][1])["columns"][0] == "InvoiceNo"


# -- the real file ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_file_months_and_reasons(real_file: Path, tmp_path: Path) -> None:
    """The issue's scenario on the real file (SQLite): June to October 2011 loaded one after the
    other, October with 40 % of its identified customers blanked, alerts on the fifth run; and the
    whole file's reason lines add up to its quarantined total."""
    with open(real_file, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        months: dict[str, list[list[str]]] = {f"2011-{m:02d}": [] for m in range(6, 11)}
        for row in reader:
            if row[4][:7] in months:
                months[row[4][:7]].append(row)
    for i, row in enumerate([r for r in months["2011-10"] if r[6]]):
        if int((i + 1) * 0.4) > int(i * 0.4):
            row[6] = ""
    cli = Cli(f"sqlite:///{tmp_path / 'months.db'}")
    runs = [load(cli, write_csv(tmp_path / f"online-retail-{month}.csv", rows, header)) for month, rows in months.items()]
    engine = make_engine(DatabaseSettings(url=cli.url))
    with engine.connect() as conn:
        measured = conn.execute(
            text("SELECT run_id, measured FROM quality_results WHERE check_name = 'completeness.source.customer_id' ORDER BY id")
        ).all()
    engine.dispose()
    assert [round(m, 2) for _, m in measured][-1] == 0.50 and all(0.69 < m < 0.82 for _, m in measured[:-1])  # 0.755, 0.696, 0.784, 0.813
    for run in runs[:-1]:
        assert [a for a in alerts_of(cli.url, run) if a[1] == "check.completeness.source.customer_id"] == []
    raised = [a for a in alerts_of(cli.url, runs[-1]) if a[0] == "anomaly"]
    assert [a[1] for a in raised] == ["check.completeness.source.customer_id"]
    assert "of 4 earlier run(s)" in raised[0][2] and "rule relative_change" in raised[0][2] and "(quality_rules.anomaly)" in raised[0][2]

    whole = Cli(f"sqlite:///{tmp_path / 'whole.db'}")
    result = whole("etl", "--source", str(real_file), "--dry-run", "--format", "json")
    summary = json.loads(result.stdout)
    assert summary["rows_quarantined"] == 7_778
    assert sum(summary["quarantine_by_reasons"].values()) == 7_778 and summary["rows_with_several_reasons"] == 5
    assert summary["quarantine_by_reasons"]["non_positive_price;duplicate"] == 5
    assert summary["quarantine_by_reason"] == {"duplicate": 5_268, "non_positive_price": 2_515}
