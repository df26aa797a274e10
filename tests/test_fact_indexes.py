"""A first load on PostgreSQL COPYs the facts without indexes and builds them after its last chunk
(database/fact_indexes.py): on both back ends the indexes are there after a first load, exactly
as before it when it rolls back, and exactly-once loading still holds on the next load."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

import etl.loader
from sampledata.generator import generate_sales
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, _engine, etl_json, one
from tests.test_exactly_once import NEW, _spread_extract

FAIL = {"RDP_QUALITY_RULES__ON_FAILURE": "fail"}


def _schema(url: str) -> list[tuple]:
    """The fact's tables and indexes as the catalog holds them (every partition on PostgreSQL)."""
    engine = _engine(url)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            sql = (
                "SELECT t.relname, i.relname, pg_get_indexdef(i.oid), x.indisvalid, x.indisready FROM pg_class t "
                "LEFT JOIN pg_index x ON x.indrelid = t.oid LEFT JOIN pg_class i ON i.oid = x.indexrelid "
                "WHERE t.relnamespace = CAST(current_schema() AS regnamespace) AND t.relname LIKE 'fact_sales%' "
                "AND t.relkind IN ('r', 'p') ORDER BY 1, 2"
            )
        else:
            sql = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name = 'fact_sales' ORDER BY name"
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


def _index_names(url: str) -> dict[str, set[str]]:
    """Each fact table (parent and partitions) -> names of its indexes."""
    names: dict[str, set[str]] = {}
    for row in _schema(url):
        table, index = (row[0], row[1]) if "postgresql" in url else (row[2], row[1])
        if "postgresql" in url or row[0] == "index":
            names.setdefault(table, set()).update({index} - {None})
    return names


def _set_up(cli: Cli) -> None:
    assert cli("setup").exit_code == 0


def test_first_load_leaves_the_facts_indexes_as_they_were(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    _set_up(run_cli)
    before = _index_names(warehouse_url)
    summary = etl_json(run_cli, generate_sales(tmp_path / "s.csv", 3_000, seed=5).path)
    assert summary["rows_loaded"] > 2_000 and summary["timings"]["fact_indexes"] >= 0
    after = _index_names(warehouse_url)
    assert after["fact_sales"] == before["fact_sales"]
    assert {"ux_fact_sales_line", "ix_fact_sales_run"} <= after["fact_sales"]
    if "postgresql" in warehouse_url:
        assert "fact_sales_pkey" in after["fact_sales"]
        partitions = {t: names for t, names in after.items() if t.startswith("fact_sales_p")}
        assert len(partitions) >= 12  # the generated year, each month with its own three indexes
        assert all(len(names) == 3 for names in partitions.values()), partitions
        assert all(valid and ready for *_, valid, ready in _schema(warehouse_url) if valid is not None)


@pytest.mark.parametrize("how", ["gate", "dry_run", "error"])
def test_a_first_load_that_rolls_back_leaves_indexes_and_partitions_as_before(
    run_cli: Cli, warehouse_url: str, tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_up(run_cli)
    before = _schema(warehouse_url)
    source = str(write_csv(tmp_path / "s.csv", ROWS))
    if how == "gate":
        assert run_cli("etl", "--source", source, env=FAIL).exit_code == 1
    elif how == "dry_run":
        assert etl_json(run_cli, Path(source), "--dry-run")["status"] == "dry_run"
    else:  # fails after the indexes were built again, before the commit

        def broken(*_args, **_kwargs):
            raise RuntimeError("injected failure")

        monkeypatch.setattr(etl.loader, "write_monthly_products", broken)  # every load reaches it
        with pytest.raises(RuntimeError, match="injected failure"):
            run_cli("etl", "--source", source)
    assert _schema(warehouse_url) == before
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 0


def test_a_load_into_a_warehouse_holding_facts_keeps_its_indexes(run_cli: Cli, warehouse_url: str, tmp_path: Path, monkeypatch) -> None:
    etl_json(run_cli, generate_sales(tmp_path / "s.csv", 1_000, seed=6).path)
    dropped = []
    monkeypatch.setattr(etl.loader, "drop_fact_indexes", lambda conn: dropped.append(1) or [])
    etl_json(run_cli, write_csv(tmp_path / "new.csv", NEW))
    assert not dropped


def test_a_user_index_on_the_fact_is_built_again(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    _set_up(run_cli)
    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_user_fact_customer ON fact_sales (customer_key, date_key)")
    engine.dispose()
    before = _schema(warehouse_url)
    etl_json(run_cli, write_csv(tmp_path / "s.csv", ROWS))
    assert "ix_user_fact_customer" in _index_names(warehouse_url)["fact_sales"]
    if "sqlite" in warehouse_url:
        assert [r for r in _schema(warehouse_url) if r[0] == "index"] == [r for r in before if r[0] == "index"]


def test_exactly_once_holds_after_a_first_load(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    base = generate_sales(tmp_path / "base.csv", 2_000, seed=12).path
    first = etl_json(run_cli, base)
    overlap = _spread_extract(base, tmp_path / "spread.csv", 25, NEW)
    second = etl_json(run_cli, tmp_path / "spread.csv")
    assert second["rows_loaded"] == len(NEW)
    assert second["rows_already_loaded"] + second["rows_quarantined"] == overlap
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == first["rows_loaded"] + len(NEW)
    # the exactly-once index was built by the first load and refuses a line twice
    engine = _engine(warehouse_url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO fact_sales SELECT sales_key + 1000000, line_id, customer_key, product_key, date_key, invoice_no, quantity, "
            "unit_price, line_total, transaction_datetime, transaction_type, source_row, run_id FROM fact_sales WHERE sales_key = 1"
        )
    engine.dispose()
