"""Quarantine replay: rows that pass the current rules are loaded exactly once; nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import load_settings
from database.engine import make_engine
from etl.replay import replay
from metadata.checksums import warehouse_checksums
from tests.conftest import Cli
from tests.test_cli_etl import ROWS, etl_json, one, q, write_csv
from utils.errors import PlatformError


def _settings(url: str, **rules: object):
    return load_settings(default_files=(), environ={}, overrides={"database": {"url": url}, "rules": rules})


def test_replay_loads_rows_that_now_pass_exactly_once(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "s.csv", ROWS))
    before = warehouse_checksums(make_engine(_settings(warehouse_url).database))
    relaxed = _settings(warehouse_url, reject_zero_quantity=False)
    engine = make_engine(relaxed.database)
    result = replay(engine, relaxed)
    assert (result.considered, result.loaded, result.still_quarantined) == (4, 1, 3)
    assert result.still_by_reason == {"bad_invoice_date": 1, "duplicate": 1, "non_positive_price": 1}
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 9
    assert q(warehouse_url, "SELECT source_row, run_id, quantity FROM fact_sales WHERE invoice_no = '536368'") == [(6, 2, 0)]
    assert q(warehouse_url, "SELECT source_row FROM etl_quarantine ORDER BY source_row") == [(3,), (7,), (12,)]
    again = replay(engine, relaxed)  # nothing new passes: nothing loaded twice
    assert (again.considered, again.loaded) == (3, 0)
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 9
    # a replay is a version: rolling it back puts the row back in the quarantine
    assert run_cli("versions", "rollback", "2", "--yes").exit_code == 0
    assert warehouse_checksums(engine) == before
    engine.dispose()


def test_replay_filters_and_duplicates(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "s.csv", ROWS))
    engine = make_engine(_settings(warehouse_url).database)
    lenient = _settings(warehouse_url, reject_zero_quantity=False, reject_non_positive_price=False, reject_duplicates=False)
    only_price = replay(engine, lenient, reason="non_positive_price")
    assert (only_price.considered, only_price.loaded) == (1, 1)
    dup = replay(engine, lenient, run=1, reason="duplicate")  # duplicate rule off: the repeat becomes a fact
    assert (dup.considered, dup.loaded) == (1, 1)
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales WHERE invoice_no = '536365' AND source_row = 3") == 1
    with pytest.raises(PlatformError, match="unknown reason 'nope'"):
        replay(engine, lenient, reason="nope")
    with pytest.raises(PlatformError, match="run 77 not found"):
        replay(engine, lenient, run=77)
    engine.dispose()
