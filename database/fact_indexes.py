"""The fact's indexes set aside for a first load on PostgreSQL and built again after its last chunk.

`COPY` into a table with B-tree indexes updates every index row by row; building an index over
rows already there sorts them once, which costs less (docs/performance.md, issue #20). Only a
load into an empty fact table can do that: a warehouse holding facts needs its (date_key,
line_id) index to find the lines it already holds. So when a run begins on an empty fact table,
the loader drops the fact's indexes inside the run's one transaction and builds them again after
the last chunk, before anything of the run reads the fact (the SCD2 re-point, the aggregates, the
quality gate). PostgreSQL's DDL is transactional: a run that rolls back (the gate refused it, a
dry run, an error, a crash) leaves the indexes exactly as they were.

The definitions come from the catalog, not from the table definitions, so an index a user added to the fact
(or a changed definition) is built again as it was. The parent's indexes are dropped and built
on the parent, which builds them on every partition, those created during the run included; the
primary key goes by its constraint. On SQLite the same was measured and did not win (inserts in
time order keep the two indexes' writes local), so SQLite loads into its indexes as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

FACT = "fact_sales"

# The parent's indexes; a constraint's name where the index backs one (the primary key).
_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
WHERE i.indrelid = CAST(:t AS regclass)
ORDER BY con.conname IS NULL, c.relname
"""


@dataclass(frozen=True)
class FactIndex:
    """One index of the fact: how to drop it and how to build it again as it was."""

    name: str
    drop: str
    create: str


def fact_indexes(conn: Connection) -> list[FactIndex]:
    """The PostgreSQL fact's indexes, with their definitions as the catalog holds them."""
    return [_pg_index(*row) for row in conn.execute(text(_INDEXES), {"t": FACT})]


def _pg_index(name: str, indexdef: str, constraint: str | None, constraintdef: str | None) -> FactIndex:
    if constraint is not None:
        return FactIndex(
            name, f'ALTER TABLE {FACT} DROP CONSTRAINT "{constraint}"', f'ALTER TABLE {FACT} ADD CONSTRAINT "{constraint}" {constraintdef}'
        )
    # The parent's definition reads "ON ONLY <table>"; built on the parent without ONLY, it is
    # built on every partition too and the partitions' indexes are attached to it.
    return FactIndex(name, f'DROP INDEX "{name}"', indexdef.replace(" ON ONLY ", " ON ", 1))


def drop_fact_indexes(conn: Connection) -> list[FactIndex]:
    """Drop the fact's indexes (in the caller's transaction); what `build_fact_indexes` needs to build them again."""
    indexes = fact_indexes(conn)
    for index in indexes:
        conn.execute(text(index.drop))
    return indexes


def build_fact_indexes(conn: Connection, indexes: list[FactIndex]) -> None:
    """Build the indexes `drop_fact_indexes` dropped, over the rows loaded since."""
    for index in indexes:
        conn.execute(text(index.create))
