"""Exactly-once lookups: a chunk is checked against the lines of its dates, or, when those dates
hold many more facts than the chunk, by its own keys; both ways find the same lines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import etl.loader
from sampledata.generator import generate_sales
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import etl_json, one


def _spread_extract(source: Path, target: Path, every: int, extra: list[list[str]]) -> int:
    """Every `every`-th line of `source` (lines spread over its whole period) plus `extra` new lines."""
    with open(source, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    picked = rows[::every]
    write_csv(target, picked + extra)
    return len(picked)


NEW = [
    ["581600", "23145", "ZINC T-LIGHT HOLDER", "3", "2011-06-15 12:00:00", "1.25", "12680", "France"],
    ["581601", "22728", "ALARM CLOCK BAKELIKE PINK", "4", "2011-09-01 09:30:00", "3.75", "12681", "France"],
]


@pytest.mark.parametrize("ratio", [0, 10**12], ids=["by-key", "by-dates"])
def test_both_lookups_find_the_same_lines(run_cli: Cli, warehouse_url: str, tmp_path: Path, ratio: int, monkeypatch) -> None:
    monkeypatch.setattr(etl.loader, "PROBE_RATIO", ratio)
    base = generate_sales(tmp_path / "base.csv", 2_000, seed=11).path
    first = etl_json(run_cli, base)
    overlap = _spread_extract(base, tmp_path / "spread.csv", 40, NEW)
    second = etl_json(run_cli, tmp_path / "spread.csv")
    # a picked line the first run quarantined (e.g. a duplicate) counts as already held too
    assert second["rows_read"] == overlap + len(NEW)
    assert second["rows_loaded"] == len(NEW)
    assert second["rows_already_loaded"] + second["rows_quarantined"] == overlap
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == first["rows_loaded"] + len(NEW)


BAD = ["581700", "22728", "ALARM CLOCK BAKELIKE RED", "2", "2011-09-02 10:00:00", "not a price", "12682", "France"]


@pytest.mark.parametrize("ratio", [0, 10**12], ids=["by-key", "all-ids"])
def test_a_line_quarantined_earlier_is_held_on_a_later_load(
    run_cli: Cli, warehouse_url: str, tmp_path: Path, ratio: int, monkeypatch
) -> None:
    """The quarantine is looked up by the chunk's own line ids (a small chunk) or read whole (a
    chunk as big as it): either way a line an earlier run quarantined is not quarantined again."""
    monkeypatch.setattr(etl.loader, "PROBE_RATIO", ratio)
    first = etl_json(run_cli, write_csv(tmp_path / "first.csv", [NEW[0], BAD]))
    assert (first["rows_loaded"], first["rows_quarantined"]) == (1, 1)
    second = etl_json(run_cli, write_csv(tmp_path / "second.csv", [BAD, NEW[1], NEW[0]]))
    assert (second["rows_loaded"], second["rows_quarantined"], second["rows_already_loaded"]) == (1, 0, 2)
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_quarantine") == 1
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 2


def test_a_fact_rejected_by_later_rules_is_already_loaded(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """A line loaded as a fact, rejected on a later load (tighter rules, or a time that no longer
    parses but hashes as the same ISO text), is found among the facts of its date: already
    loaded, not quarantined."""
    first = etl_json(run_cli, write_csv(tmp_path / "first.csv", NEW))
    assert first["rows_loaded"] == 2
    source = str(write_csv(tmp_path / "second.csv", [*NEW, BAD]))
    env = {"RDP_RULES__MAX_ABS_QUANTITY": "3", "RDP_ETL__DATE_FORMATS": '["%m/%d/%Y %H:%M"]'}
    result = run_cli("etl", "--source", source, "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    # NEW[0]: its time no longer parses; NEW[1]: quantity 4 is out of range now; BAD is new
    assert (second["rows_loaded"], second["rows_quarantined"], second["rows_already_loaded"]) == (0, 1, 2)
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_quarantine") == 1
