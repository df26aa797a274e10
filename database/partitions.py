"""Monthly range partitions of fact_sales on PostgreSQL (by date_key), created on demand.

The table keeps one primary key column for SQLite; on PostgreSQL the fact is created from the
same columns with the partition key added to the primary key, plus a DEFAULT partition that
catches rows of months without a partition (reported by `performance partitions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Index, MetaData, PrimaryKeyConstraint, Table, text

from database.models import fact_sales

FACT = "fact_sales"
DEFAULT_PARTITION = "fact_sales_default"


def partitioned_fact_table() -> Table:
    """fact_sales as a PostgreSQL table partitioned by RANGE (date_key)."""
    plain = fact_sales
    metadata = MetaData()
    columns = [c._copy() for c in plain.columns]
    for column in columns:
        column.primary_key = False
    table = Table(
        FACT,
        metadata,
        *columns,
        PrimaryKeyConstraint("sales_key", "date_key"),
        comment=plain.comment,
        postgresql_partition_by="RANGE (date_key)",
    )
    for index in plain.indexes:
        Index(index.name, *[table.c[c.name] for c in index.columns], unique=index.unique)
    return table


def create_partitioned_fact(conn: Connection) -> None:
    """Create the partitioned fact and its default partition (caller checks it is missing)."""
    partitioned_fact_table().create(conn)
    conn.execute(text(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {FACT} DEFAULT"))


def is_partitioned(conn: Connection) -> bool:
    """Whether fact_sales is a partitioned table (PostgreSQL only)."""
    if conn.dialect.name != "postgresql":
        return False
    return conn.execute(text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = CAST(:t AS regclass)"), {"t": FACT}).first() is not None


ANALYZE_SHARE = 0.1  # like autovacuum_analyze_scale_factor: re-analyze once a tenth of the rows changed


def parent_statistics_stale(conn: Connection) -> bool:
    """Whether fact_sales' own planner statistics are out of date. PostgreSQL's autovacuum analyzes
    the partitions but never a partitioned parent; an ANALYZE of the parent samples every
    partition (seconds on a big table), so it is worth it only once the row count moved by
    ANALYZE_SHARE since the last one: a small nightly load into years of history does not pay
    for it every night. (The server's own live-row counters lag behind by up to ten seconds,
    so the table is counted; an index-only count costs far less than the ANALYZE.)"""
    if not is_partitioned(conn):
        return False  # SQLite, or a plain table that autovacuum looks after
    analyzed = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": FACT}).scalar()
    if analyzed is None or analyzed <= 0:
        return True
    rows = conn.execute(text(f"SELECT COUNT(*) FROM {FACT}")).scalar_one()
    return abs(rows - float(analyzed)) >= ANALYZE_SHARE * float(analyzed)


# The statistics target of the fact's post-load ANALYZE (PostgreSQL's default is 100). ANALYZE
# samples 300 rows per unit of target of the parent and again of every partition, and its time
# follows the sample; the standard queries read the aggregates, not the fact, and their plans
# are the same with the smaller sample (docs/performance.md, issue #20). A column given its own
# target (ALTER TABLE fact_sales ALTER COLUMN ... SET STATISTICS) keeps it.
FACT_STATISTICS_TARGET = 30


def analyze_fact(conn: Connection) -> None:
    """ANALYZE fact_sales (the parent, then every partition) at FACT_STATISTICS_TARGET, on an
    autocommit connection; the session's own target is restored after it."""
    conn.execute(text(f"SET default_statistics_target = {FACT_STATISTICS_TARGET}"))
    try:
        conn.execute(text(f"ANALYZE {FACT}"))
    finally:
        conn.execute(text("RESET default_statistics_target"))


def month_bounds(month: int) -> tuple[int, int]:
    """[first date_key, first date_key of the next month) for a YYYYMM month."""
    year, mon = divmod(month, 100)
    nxt = (year + 1) * 100 + 1 if mon == 12 else month + 1
    return month * 100 + 1, nxt * 100 + 1


def partition_name(month: int) -> str:
    return f"{FACT}_p{month}"


def existing_partitions(conn: Connection) -> set[str]:
    """Names of fact_sales partitions."""
    rows = conn.execute(
        text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass)"),
        {"t": FACT},
    )
    return {r for (r,) in rows}


def ensure_month(conn: Connection, month: int) -> bool:
    """Create the partition of a YYYYMM month if missing, moving any strays out of DEFAULT first."""
    name = partition_name(month)
    lo, hi = month_bounds(month)
    strays = conn.execute(
        text(f"SELECT COUNT(*) FROM {DEFAULT_PARTITION} WHERE date_key >= :lo AND date_key < :hi"), {"lo": lo, "hi": hi}
    ).scalar_one()
    if strays:
        conn.execute(
            text(f"CREATE TEMPORARY TABLE rdp_strays AS SELECT * FROM {DEFAULT_PARTITION} WHERE date_key >= :lo AND date_key < :hi"),
            {"lo": lo, "hi": hi},
        )
        conn.execute(text(f"DELETE FROM {DEFAULT_PARTITION} WHERE date_key >= :lo AND date_key < :hi"), {"lo": lo, "hi": hi})
    conn.execute(text(f"CREATE TABLE {name} PARTITION OF {FACT} FOR VALUES FROM ({lo}) TO ({hi})"))
    if strays:
        conn.execute(text(f"INSERT INTO {FACT} SELECT * FROM rdp_strays"))
        conn.execute(text("DROP TABLE rdp_strays"))
    return True


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    bounds: str
    rows: int
    size_bytes: int


def list_partitions(conn: Connection) -> list[PartitionInfo]:
    """Each partition with its bounds, rows and size (the default partition holds strays)."""
    if not is_partitioned(conn):
        return []
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_total_relation_size(c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass) ORDER BY c.relname"
        ),
        {"t": FACT},
    ).all()
    out = []
    for name, bounds, size in rows:
        count = conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
        out.append(PartitionInfo(name, bounds, int(count), int(size)))
    return out
