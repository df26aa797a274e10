"""Indexes of the warehouse: each one's size and use, and what is missing or unused.

Recommended indexes: the fact's foreign keys, the dimensions' natural keys, and what the
standard queries and the query cache read. On PostgreSQL the use comes from
pg_stat_user_indexes / pg_stat_user_tables (since the last statistics reset), and indexes of
partitions are added up under the partitioned table's index. SQLite keeps no use statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

LARGE_TABLE_ROWS = 10_000


@dataclass(frozen=True)
class Recommended:
    table: str
    columns: tuple[str, ...]
    name: str
    why: str
    cost: str | None = None  # what creating it costs, when that matters


_FK_COST = "slows loads: every COPY into the fact also writes the two foreign-key indexes (see docs/performance.md)"
RECOMMENDED = (
    Recommended("fact_sales", ("date_key",), "ix_fact_sales_date", "date filters; partition key (ux_fact_sales_line leads with it)"),
    Recommended(
        "fact_sales", ("customer_key",), "ix_fact_sales_customer", "fact foreign key: one customer's sales",
        _FK_COST,
    ),
    Recommended("fact_sales", ("product_key",), "ix_fact_sales_product", "fact foreign key: one product's sales", _FK_COST,
    ),
    Recommended("dim_customers", ("customer_id",), "ix_dim_customers_id", "natural key: SCD2 lookups, RFM by customer"),
    Recommended("dim_products", ("stock_code",), "ix_dim_products_code", "natural key: product upserts"),
    Recommended("dim_date", ("full_date",), "ix_dim_date_full", "natural key"),
    Recommended("agg_daily_product", ("date_key",), "ix_agg_daily_product_date", "date ranges of the aggregate"),
    Recommended("agg_daily_customer", ("date_key",), "ix_agg_daily_customer_date", "date ranges of the aggregate"),
    Recommended("etl_runs", ("status",), "ix_etl_runs_status", "the query cache's data version; versions list"),
)  # fmt: skip


@dataclass
class IndexInfo:
    table: str
    name: str
    columns: list[str]
    unique: bool
    primary: bool
    size_bytes: int | None = None
    scans: int | None = None
    tuples_read: int | None = None
    partitions: int = 0


@dataclass
class Suggestion:
    kind: str  # missing, unused, seq_scans
    table: str
    detail: str
    sql: str | None = None


@dataclass
class IndexReport:
    backend: str
    indexes: list[IndexInfo]
    suggestions: list[Suggestion]
    stats_note: str | None = None
    tables: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def index_report(engine: Engine) -> IndexReport:
    """Every index of the warehouse with its size and use, and suggestions."""
    with engine.connect() as conn:
        indexes = _declared(conn)
        if conn.dialect.name == "postgresql":
            _pg_usage(conn, indexes)
            tables = _pg_tables(conn)
            note = _pg_stats_note(conn)
        else:
            _sqlite_sizes(conn, indexes)
            tables = _sqlite_tables(conn, {i.table for i in indexes} | {r.table for r in RECOMMENDED})
            note = "SQLite keeps no index use statistics: scans are not available"
    suggestions = _missing(indexes, tables) + _unused(indexes, tables) + _seq_scans(tables)
    return IndexReport(engine.dialect.name, indexes, suggestions, note, tables)


def create_missing(engine: Engine) -> list[str]:
    """Create the recommended indexes that are missing; returns the statements run."""
    report = index_report(engine)
    statements = [s.sql for s in report.suggestions if s.kind == "missing" and s.sql]
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    return statements


def _declared(conn: Connection) -> list[IndexInfo]:
    insp = inspect(conn)
    out = []
    for table in insp.get_table_names():
        if _is_partition(table):
            continue
        pk = insp.get_pk_constraint(table)
        if conn.dialect.name == "sqlite":
            found = _sqlite_indexes(conn, table)
            if pk.get("constrained_columns") and not any(i.primary for i in found):  # INTEGER PRIMARY KEY: the rowid
                found.insert(0, IndexInfo(table, f"{table} rowid", list(pk["constrained_columns"]), True, True))
            out += found
            continue
        if pk.get("constrained_columns"):
            out.append(IndexInfo(table, pk.get("name") or f"{table} primary key", list(pk["constrained_columns"]), True, True))
        for ix in insp.get_indexes(table):
            out.append(IndexInfo(table, ix["name"], [c for c in ix["column_names"] if c], bool(ix["unique"]), False))
    return out


def _sqlite_indexes(conn: Connection, table: str) -> list[IndexInfo]:
    """PRAGMA index_list: created indexes and the automatic ones of UNIQUE / PRIMARY KEY constraints."""
    out = []
    for row in conn.exec_driver_sql(f'PRAGMA index_list("{table}")').mappings():
        columns = [r["name"] for r in conn.exec_driver_sql(f'PRAGMA index_info("{row["name"]}")').mappings()]
        out.append(IndexInfo(table, row["name"], columns, bool(row["unique"]), row["origin"] == "pk"))
    return out


def _is_partition(table: str) -> bool:
    return table.startswith("fact_sales_p") or table == "fact_sales_default"


_PG_INDEX_USE = """
SELECT COALESCE(pt.relname, s.relname) AS table_name, COALESCE(pi.relname, s.indexrelname) AS index_name,
       SUM(s.idx_scan), SUM(s.idx_tup_read), SUM(pg_relation_size(s.indexrelid)), COUNT(pi.relname)
FROM pg_stat_user_indexes s
LEFT JOIN pg_inherits ih ON ih.inhrelid = s.indexrelid
LEFT JOIN pg_class pi ON pi.oid = ih.inhparent
LEFT JOIN pg_inherits th ON th.inhrelid = s.relid
LEFT JOIN pg_class pt ON pt.oid = th.inhparent
WHERE s.schemaname = ANY (current_schemas(false))
GROUP BY 1, 2
"""

_PG_TABLE_USE = """
SELECT COALESCE(pt.relname, s.relname) AS table_name, SUM(s.seq_scan), SUM(s.seq_tup_read), SUM(COALESCE(s.idx_scan, 0)),
       SUM(s.n_live_tup), SUM(pg_total_relation_size(s.relid))
FROM pg_stat_user_tables s
LEFT JOIN pg_inherits th ON th.inhrelid = s.relid
LEFT JOIN pg_class pt ON pt.oid = th.inhparent
WHERE s.schemaname = ANY (current_schemas(false))
GROUP BY 1
"""


def _pg_usage(conn: Connection, indexes: list[IndexInfo]) -> None:
    use = {(t, i): (scans, read, size, parts) for t, i, scans, read, size, parts in conn.execute(text(_PG_INDEX_USE))}
    for ix in indexes:
        found = use.get((ix.table, ix.name))
        if found:
            ix.scans, ix.tuples_read, ix.size_bytes, ix.partitions = (int(v or 0) for v in found)


def _pg_tables(conn: Connection) -> dict[str, dict]:
    return {
        t: {"seq_scans": int(seq or 0), "seq_rows_read": int(read or 0), "index_scans": int(idx or 0), "rows": int(live or 0),
            "size_bytes": int(size or 0)}
        for t, seq, read, idx, live, size in conn.execute(text(_PG_TABLE_USE))
    }  # fmt: skip


def _pg_stats_note(conn: Connection) -> str | None:
    reset = conn.execute(text("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")).scalar()
    return f"use counted since {reset:%Y-%m-%d %H:%M} (statistics reset)" if reset else "use counted since the server's statistics began"


def _sqlite_sizes(conn: Connection, indexes: list[IndexInfo]) -> None:
    try:
        sizes = dict(conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all())
    except OperationalError:  # dbstat is a compile-time option of SQLite; without it sizes are unknown
        return
    for ix in indexes:
        ix.size_bytes = sizes.get(ix.name)


def _sqlite_tables(conn: Connection, names: set[str]) -> dict[str, dict]:
    existing = {n for (n,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
    out = {}
    for name in sorted(names & existing):
        rows = conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
        out[name] = {"rows": int(rows)}
    return out


def _covered(indexes: list[IndexInfo], rec: Recommended) -> IndexInfo | None:
    n = len(rec.columns)
    return next((i for i in indexes if i.table == rec.table and tuple(i.columns[:n]) == rec.columns), None)


def _missing(indexes: list[IndexInfo], tables: dict[str, dict]) -> list[Suggestion]:
    out = []
    for rec in RECOMMENDED:
        if rec.table not in tables or _covered(indexes, rec):
            continue
        detail = f"no index on {rec.table}({', '.join(rec.columns)}): {rec.why}"
        if rec.cost:
            detail += f"; {rec.cost}"
        out.append(
            Suggestion("missing", rec.table, detail, f"CREATE INDEX IF NOT EXISTS {rec.name} ON {rec.table} ({', '.join(rec.columns)})")
        )
    return out


def _unused(indexes: list[IndexInfo], tables: dict[str, dict]) -> list[Suggestion]:
    out = []
    for ix in indexes:
        rows = tables.get(ix.table, {}).get("rows", 0)
        if ix.scans != 0 or ix.primary or rows < LARGE_TABLE_ROWS:
            continue
        if ix.unique:
            detail = f"{ix.name} was never scanned, but it enforces uniqueness: keep it"
            out.append(Suggestion("unused", ix.table, detail))
        else:
            detail = f"{ix.name} was never scanned; it costs {(ix.size_bytes or 0) / 1e6:.1f} MB and slows loads: consider dropping it"
            out.append(Suggestion("unused", ix.table, detail, f"DROP INDEX {ix.name}"))
    return out


def _seq_scans(tables: dict[str, dict]) -> list[Suggestion]:
    out = []
    for name, t in tables.items():
        seq, idx, rows = t.get("seq_scans"), t.get("index_scans", 0), t.get("rows", 0)
        if seq is None or rows < LARGE_TABLE_ROWS or seq <= max(idx, 10):
            continue
        expected = name.startswith(("fact_sales", "agg_"))
        detail = f"{seq:,} sequential scans read {t['seq_rows_read']:,} rows ({rows:,} rows in the table)"
        detail += (
            ": expected for whole-table aggregates; a query that filters it should name date_key (`performance analyze --query` shows the plan)"
            if expected
            else ": queries that filter it may miss an index (`performance analyze --query` shows which)"
        )
        out.append(Suggestion("seq_scans", name, detail))
    return out
