"""The catalog: tables and columns with kind, size, use and the descriptions kept in the table definitions."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, Table, inspect, text

from database.tables import METADATA
from utils.errors import PlatformError


def table_kind(name: str) -> str:
    """dimension, fact, aggregate or operational, from the naming convention."""
    if name.startswith("dim_") and not name.endswith("_history"):
        return "dimension"
    if name.startswith("fact_"):
        return "fact"
    if name.startswith("agg_"):
        return "aggregate"
    return "operational"


def catalog_tables() -> dict[str, Table]:
    """Every table the platform defines, by name."""
    return dict(sorted(METADATA.tables.items()))


def known_table(name: str) -> Table:
    """The model of `name`; a PlatformError listing the known tables otherwise."""
    tables = catalog_tables()
    if name not in tables:
        raise PlatformError(f"unknown table '{name}'; choose from {', '.join(tables)}")
    return tables[name]


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: str
    rows: int | None
    size_bytes: int | None
    last_load: str | None
    description: str


def _size(engine: Engine, name: str) -> int | None:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": name}).scalar_one())
        try:
            return int(conn.execute(text("SELECT SUM(pgsize) FROM dbstat WHERE name = :t"), {"t": name}).scalar_one() or 0)
        except Exception:  # dbstat is an optional SQLite module; without it the size is unknown
            return None


def list_tables(engine: Engine) -> list[TableInfo]:
    """Each existing table with kind, rows, size, last successful load and description."""
    existing = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        last = (
            conn.execute(text("SELECT MAX(finished_at) FROM etl_runs WHERE status = 'success'")).scalar_one()
            if "etl_runs" in existing
            else None
        )
        rows = {name: int(conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one()) for name in catalog_tables() if name in existing}
    return [
        TableInfo(
            name,
            table_kind(name),
            rows.get(name),
            _size(engine, name) if name in existing else None,
            str(last) if last else None,
            table.comment or "",
        )
        for name, table in catalog_tables().items()
    ]


def list_columns(engine: Engine, name: str) -> list[dict]:
    """Columns of `name`: type, nullability, description, null share and distinct count."""
    table = known_table(name)
    if name not in inspect(engine).get_table_names():
        raise PlatformError(f"table '{name}' does not exist in this warehouse yet; run python main.py setup")
    aggregates = ", ".join(f"COUNT({c.name}), COUNT(DISTINCT {c.name})" for c in table.columns)
    with engine.connect() as conn:
        stats = conn.execute(text(f"SELECT COUNT(*), {aggregates} FROM {name}")).one()
    total = int(stats[0])
    out = []
    for i, column in enumerate(table.columns):
        non_null, distinct = int(stats[1 + 2 * i]), int(stats[2 + 2 * i])
        out.append(
            {
                "column": column.name,
                "type": str(column.type.compile(engine.dialect)),
                "nullable": bool(column.nullable),
                "description": column.comment or "",
                "null_share": round((total - non_null) / total, 4) if total else None,
                "distinct": distinct,
            }
        )
    return out
