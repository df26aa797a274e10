"""The benchmark's writes floor (bench/write_floor.py) copies every row a load wrote, on both back ends:
a floor that left tables out would flatter the load's ratio to it."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from bench import write_floor
from sampledata.generator import generate_sales
from tests.conftest import PG_URL, Cli


def _load(url: str, tmp_path: Path) -> None:
    source = generate_sales(tmp_path / "g.csv", 3_000, seed=7).path
    result = Cli(url)("etl", "--source", str(source))
    assert result.exit_code == 0, result.output


def _counts(conn, schema: str | None = None) -> dict[str, int]:
    prefix = f"{schema}." if schema else ""
    return {t: conn.execute(text(f'SELECT COUNT(*) FROM {prefix}"{t}"')).scalar_one() for t in write_floor.warehouse_tables()}


def test_sqlite_floor_copies_every_table(tmp_path: Path) -> None:
    loaded, fresh = tmp_path / "loaded.db", tmp_path / "fresh.db"
    _load(f"sqlite:///{loaded}", tmp_path)
    assert Cli(f"sqlite:///{fresh}")("setup").exit_code == 0
    tables = write_floor.warehouse_tables()
    write_floor.sqlite_clear(fresh, tables)
    sqlite3.connect(fresh, isolation_level=None).executescript(write_floor.sqlite_script(loaded, tables))
    source, copy = create_engine(f"sqlite:///{loaded}"), create_engine(f"sqlite:///{fresh}")
    with source.connect() as a, copy.connect() as b:
        expected = _counts(a)
        assert expected["fact_sales"] > 2_500 and expected["etl_quarantine"] > 0 and expected["agg_daily_product"] > 0
        assert _counts(b) == expected


def test_postgresql_floor_copies_every_table_and_partition(pg_url: str, tmp_path: Path) -> None:
    _load(pg_url, tmp_path)
    source_schema = make_url(pg_url).query["options"].split("=", 1)[1]
    target = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {target}"))
        target_url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={target}"}).render_as_string(hide_password=False)
        assert Cli(target_url)("setup").exit_code == 0
        tables = write_floor.warehouse_tables()
        with admin.connect() as conn:
            conn.execute(text(write_floor.postgresql_clear(tables, target)))
            conn.exec_driver_sql(f"SET search_path = {source_schema}")
            partitions = write_floor.partition_statements(conn)
            assert partitions, "the load made monthly partitions"
            conn.exec_driver_sql(write_floor.postgresql_script(source_schema, tables, partitions, target))
            assert _counts(conn, target) == _counts(conn, source_schema)
            conn.exec_driver_sql(f"SET search_path = {target}")
            made = write_floor.partition_statements(conn)
            assert made == partitions
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {target} CASCADE"))
        admin.dispose()
