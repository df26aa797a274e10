"""The databases' own floor for one load: the rows a load wrote, written again by the database alone.

The `\\copy` floor of bench_etl says what loading the raw file costs; a load must also write a
star schema with its keys, indexes, partitions, quarantine and aggregates. These scripts copy
every table of a warehouse the ETL just filled into a fresh warehouse made by `setup`, with no
Python in the timed part and no parsing at all (`INSERT ... SELECT` from the loaded warehouse, in
one transaction), then, on PostgreSQL, the ETL's `ANALYZE` of the fact. No loader can write that
warehouse in less time than this; the ratio of a load to it is what our own code costs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection

WRITES_SCHEMA = "rdp_bench_writes"  # the fresh PostgreSQL warehouse the rows are copied into


def warehouse_tables() -> list[str]:
    """Every table `setup` creates, parents before children (foreign keys)."""
    from database.tables import METADATA

    return [table.name for table in METADATA.sorted_tables]


def analyzed_on_the_critical_path() -> str:
    """The table whose ANALYZE a PostgreSQL load waits for: the ETL analyzes the fact (parent and
    partitions, most of the time) while a second connection analyzes the other tables beside it,
    so a floor that analyzed those too, one after the other, would count time no load spends."""
    from etl.pipeline import ANALYZED_TABLES

    return ANALYZED_TABLES[0]


def postgresql_script(source_schema: str, tables: list[str], partitions: list[str], target_schema: str = WRITES_SCHEMA) -> str:
    """psql script: create the load's partitions, copy every table, commit, ANALYZE as the ETL does."""
    lines = [f"SET search_path = {target_schema};", "BEGIN;"]
    lines += [f"{statement};" for statement in partitions]
    lines += [f'INSERT INTO {target_schema}."{t}" SELECT * FROM {source_schema}."{t}";' for t in tables]
    from database.partitions import FACT_STATISTICS_TARGET

    lines += ["COMMIT;", f"SET default_statistics_target = {FACT_STATISTICS_TARGET};", f"ANALYZE {analyzed_on_the_critical_path()};"]
    return "\n".join(lines) + "\n"


def partition_statements(conn: Connection) -> list[str]:
    """The monthly partitions the load created, as statements for the fresh warehouse (which has
    the default partition already)."""
    from database.partitions import FACT, list_partitions

    return [f"CREATE TABLE {p.name} PARTITION OF {FACT} {p.bounds}" for p in list_partitions(conn) if p.bounds != "DEFAULT"]


def postgresql_clear(tables: list[str], target_schema: str = WRITES_SCHEMA) -> str:
    """Empty the fresh warehouse (setup's own rows, such as the unknown customer, come from the copy)."""
    return f"TRUNCATE {', '.join(f'{target_schema}.{t}' for t in tables)} CASCADE"


def sqlite_script(loaded: Path, tables: list[str]) -> str:
    """sqlite3 script: the ETL's connection settings, then every table copied from the loaded file in one transaction."""
    source = str(loaded.resolve()).replace("'", "''")
    lines = ["PRAGMA journal_mode=WAL;", "PRAGMA foreign_keys=ON;", "PRAGMA synchronous=NORMAL;", f"ATTACH DATABASE '{source}' AS src;"]
    # WHERE 1: without a WHERE clause SQLite copies records between identical tables as they are
    # (its transfer optimisation); a loader has to encode every row and index entry itself.
    lines += ["BEGIN IMMEDIATE;"] + [f'INSERT INTO main."{t}" SELECT * FROM src."{t}" WHERE 1;' for t in tables] + ["COMMIT;"]
    return "\n".join(lines) + "\n"


def sqlite_clear(fresh: Path, tables: list[str]) -> None:
    """Empty the fresh SQLite warehouse (setup's own rows come from the copy), children first."""
    with sqlite3.connect(fresh) as conn:
        for table in reversed(tables):
            conn.execute(f'DELETE FROM "{table}"')
    conn.close()
