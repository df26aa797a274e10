"""Quality signals from the first days, end to end on both back ends: a CustomerID drop alerts
from the second run (relative-change rule), a tenth of a feed's usual volume alerts, and the
alert names its rule, metric and setting. Small generated extracts keep it fast."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sqlalchemy import text

from config.settings import Settings
from database.engine import make_engine
from etl.generator import generate_sales
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
    engine = make_engine(Settings.model_validate({"database": {"url": url}}).database)
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
