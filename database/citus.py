"""Citus: where each warehouse table lives on a cluster, the DDL that puts it there, and applying it.

With `warehouse.distributed: citus`, `setup` creates the schema as on PostgreSQL and then, in the same
transaction, makes the dimensions and the other small tables reference tables (a full copy on every
node), distributes fact_sales by `warehouse.distribution_column` (date_key) and co-locates the daily
aggregates with it. The monthly partitions that loads add later are created through the parent
(`database/partitions.ensure_month`), and Citus distributes a partition of a distributed table by
itself. Tables that no statement ever combines with a warehouse table stay plain PostgreSQL tables on
the coordinator.

Nothing here has been run on Citus (it cannot be installed on the development machine): the
statements are generated as text, checked against Citus' documented rules (every unique key of a
distributed table contains its distribution column; foreign keys only towards reference tables) and
reviewed with `python main.py setup --print-ddl`. See docs/citus.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Table, text

from config.settings import WarehouseSettings
from database.partitions import FACT, partitioned_fact_table
from utils.errors import ConfigError, PlatformError
from utils.urls import mask_url

REFERENCE = "reference"
DISTRIBUTED = "distributed"
LOCAL = "local"

# Why each table is placed where it is: shown beside its statement by `setup --print-ddl`.
REFERENCE_TABLES = {
    "etl_runs": "the run ledger: dim_customers, dim_products and etl_quarantine have foreign keys to it",
    "dim_date": "joined to fact_sales on date_key",
    "dim_products": "joined to fact_sales on product_key; SCD1 upsert (INSERT ... ON CONFLICT (stock_code))",
    "dim_customers": "joined to fact_sales on customer_key; the SCD2 re-point reads it inside UPDATE fact_sales",
    "dim_products_history": "rollback restores dim_products from it in one UPDATE with a correlated subquery",
    "dim_customers_history": "rollback restores dim_customers from it in one UPDATE with a correlated subquery",
    "etl_quarantine": "foreign key to etl_runs; replay and rollback move its rows to and from etl_quarantine_replayed",
    "etl_quarantine_replayed": "INSERT ... SELECT to and from etl_quarantine",
    "agg_monthly_product": "small (months x products); refreshed from agg_daily_product through the coordinator",
    "agg_monthly_sales": "one row a month; refreshed from agg_daily_customer through the coordinator",
    "agg_customer_totals": "one row a customer version; refreshed from agg_daily_customer through the coordinator",
    "agg_product_totals": "one row a product; refreshed from agg_monthly_product",
}
CO_LOCATED = {
    "agg_daily_product": "refreshed by INSERT ... SELECT ... FROM fact_sales GROUP BY f.date_key: runs on each shard",
    "agg_daily_customer": "refreshed by INSERT ... SELECT ... FROM fact_sales GROUP BY f.date_key: runs on each shard",
    "agg_daily_orders": "refreshed by INSERT ... SELECT ... FROM fact_sales GROUP BY f.date_key: runs on each shard",
}
LOCAL_TABLES = {
    "quality_results": "quality history: read and written on its own",
    "quality_metrics": "run metrics for anomaly detection: read and written on its own",
    "alerts": "alert history: read and written on its own",
    "scheduled_jobs": "the scheduler's jobs: read and written on their own",
    "job_runs": "the scheduler's job history: read and written on its own",
}
MINIMUM_CITUS = "11.1"  # the first Citus release for PostgreSQL 15


@dataclass(frozen=True)
class Placement:
    """Where one table lives on a Citus cluster."""

    table: str
    kind: str  # reference, distributed or local
    why: str
    column: str | None = None
    colocate_with: str | None = None

    @property
    def statement(self) -> str | None:
        """The Citus call that places the table (None for a table that stays local)."""
        if self.kind == REFERENCE:
            return f"SELECT create_reference_table('{self.table}')"
        if self.kind == DISTRIBUTED and self.colocate_with:
            return f"SELECT create_distributed_table('{self.table}', '{self.column}', colocate_with => '{self.colocate_with}')"
        if self.kind == DISTRIBUTED:
            return f"SELECT create_distributed_table('{self.table}', '{self.column}')"
        return None


def _tables() -> list[Table]:
    """Every warehouse table, referenced tables before the tables that refer to them."""
    from database.tables import METADATA  # the table modules import this module's neighbours

    return list(METADATA.sorted_tables)


def placements(warehouse: WarehouseSettings) -> list[Placement]:
    """Every table's placement, in the order the statements must run: reference tables (those a
    foreign key points at first), then fact_sales, then the tables co-located with it."""
    column = warehouse.distribution_column
    names = [t.name for t in _tables()]
    unplaced = sorted(set(names) - set(REFERENCE_TABLES) - set(CO_LOCATED) - set(LOCAL_TABLES) - {FACT})
    if unplaced:
        raise PlatformError(f"table(s) {', '.join(unplaced)} have no Citus placement; add them to database/citus.py")
    fact_why = f"hash-distributed by {column}; its monthly partitions are distributed with it"
    return (
        [Placement(n, REFERENCE, REFERENCE_TABLES[n]) for n in names if n in REFERENCE_TABLES]
        + [Placement(FACT, DISTRIBUTED, fact_why, column)]
        + [Placement(n, DISTRIBUTED, CO_LOCATED[n], column, FACT) for n in names if n in CO_LOCATED]
        + [Placement(n, LOCAL, LOCAL_TABLES[n]) for n in names if n in LOCAL_TABLES]
    )


def _unique_keys(table: Table) -> list[tuple[str, tuple[str, ...]]]:
    keys = [(f"{table.name} primary key", tuple(c.name for c in table.primary_key.columns))]
    keys += [(f"{table.name} unique index {i.name}", tuple(c.name for c in i.columns)) for i in table.indexes if i.unique]
    keys += [
        (f"{table.name} unique constraint", tuple(c.name for c in con.columns))
        for con in table.constraints
        if type(con).__name__ == "UniqueConstraint"
    ]
    return keys


def keys_without(column: str) -> list[str]:
    """Primary keys and unique indexes of the tables distributed by `column` that do not contain it
    (Citus can enforce a unique key of a distributed table only if it contains the distribution
    column). fact_sales is taken as PostgreSQL creates it: partitioned, date_key added to its key."""
    by_name = {t.name: t for t in _tables()}
    tables = [partitioned_fact_table()] + [by_name[n] for n in CO_LOCATED]
    return [f"{what} ({', '.join(cols)})" for table in tables for what, cols in _unique_keys(table) if column not in cols]


def foreign_key_problems(warehouse: WarehouseSettings) -> list[str]:
    """Foreign keys Citus refuses between the placed tables: a reference table may only refer to
    reference tables, a distributed table to reference tables, a local table to none of them."""
    kinds = {p.table: p.kind for p in placements(warehouse)}
    problems = []
    for table in _tables():
        for fk in table.foreign_keys:
            source, target = kinds[table.name], kinds[fk.column.table.name]
            if target != REFERENCE or source == LOCAL:
                problems.append(f"{table.name}.{fk.parent.name} ({source}) -> {fk.column.table.name} ({target})")
    return problems


def statements(warehouse: WarehouseSettings) -> list[str]:
    """The Citus statements of the schema, in order; a PlatformError if a placement breaks a rule."""
    problems = [f"unique key without {warehouse.distribution_column}: {k}" for k in keys_without(warehouse.distribution_column)]
    problems += [f"foreign key Citus refuses: {p}" for p in foreign_key_problems(warehouse)]
    if problems:
        raise PlatformError("the Citus placement of the schema breaks Citus' rules: " + "; ".join(problems))
    return [p.statement for p in placements(warehouse) if p.statement]


def render(warehouse: WarehouseSettings) -> str:
    """The statements as a commented SQL script for people to review (`setup --print-ddl`)."""
    column = warehouse.distribution_column
    runs = (
        "`python main.py setup` runs them"
        if warehouse.distributed == "citus"
        else "warehouse.distributed is none: `setup` does not run them until it is set to citus"
    )
    every = placements(warehouse)
    sql = iter(statements(warehouse))
    lines = [
        f"-- Citus DDL of the Retail Data Platform warehouse ({runs}).",
        "-- `setup` first creates every missing table as on PostgreSQL (fact_sales partitioned by RANGE (date_key),",
        "-- with its DEFAULT partition), then runs these statements in the same transaction, skipping tables that",
        f"-- are Citus tables already. Needs Citus {MINIMUM_CITUS} or later with CREATE EXTENSION citus on the coordinator.",
        "",
        "-- Reference tables: one copy on every node, so every shard of fact_sales joins them locally.",
    ]
    for p in every:
        if p.kind == REFERENCE:
            lines += [f"-- {p.table}: {p.why}", f"{next(sql)};"]
    fact = next(p for p in every if p.table == FACT)
    lines += ["", f"-- The fact, {fact.why}."]
    lines += [f"{next(sql)};", "", f"-- Daily aggregates: distributed by {column} and co-located with fact_sales."]
    for p in every:
        if p.kind == DISTRIBUTED and p.colocate_with:
            lines += [f"-- {p.table}: {p.why}", f"{next(sql)};"]
    lines += [
        "",
        f"-- Constraint changes: none. Every primary key and unique index of the distributed tables contains {column}:",
    ]
    by_name = {t.name: t for t in _tables()}
    for table in [partitioned_fact_table()] + [by_name[n] for n in CO_LOCATED]:
        lines += [f"--   {what} ({', '.join(cols)})" for what, cols in _unique_keys(table)]
    edges = sorted(f"{t.name}.{fk.parent.name} -> {fk.column.table.name}" for t in _tables() for fk in t.foreign_keys)
    lines += ["-- Foreign keys, all pointing at reference tables (which Citus allows):"]
    lines += [f"--   {edge}" for edge in edges]
    lines += [
        "",
        "-- Plain PostgreSQL tables on the coordinator (no statement combines them with a Citus table):",
    ]
    lines += [f"--   {p.table}: {p.why}" for p in every if p.kind == LOCAL]
    return "\n".join(lines) + "\n"


def require_citus(engine: Engine) -> str:
    """The version of the citus extension of the warehouse; a ConfigError naming the setting and
    the fix when the warehouse is not PostgreSQL or its database has no citus extension. Reads only."""
    url = mask_url(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name != "postgresql":
        raise ConfigError(
            f"warehouse.distributed is 'citus' but the warehouse {url} is an SQLite file; Citus needs a PostgreSQL "
            "coordinator with the citus extension: point database.url at one, or set warehouse.distributed: none (docs/citus.md)"
        )
    with engine.connect() as conn:
        version = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")).scalar()
        if version is not None:
            return str(version)
        installed = conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'citus'")).first() is not None
    problem, fix = (
        (
            "Citus is installed on the server but the extension is not created in this database",
            "Run CREATE EXTENSION citus in it as a superuser",
        )
        if installed
        else (
            "Citus is not installed on that server",
            "Install it there (add citus to shared_preload_libraries, restart, run CREATE EXTENSION citus in the database)",
        )
    )
    raise ConfigError(
        f"warehouse.distributed is 'citus' but the warehouse {url} has no citus extension: {problem}. {fix}, "
        "or set warehouse.distributed: none (docs/citus.md)"
    )


def citus_tables(conn: Connection) -> set[str]:
    """Tables of the current schema that are Citus tables already (distributed, reference or partitions of them)."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
            "WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        )
    )
    return {name for (name,) in rows}


def distribute(conn: Connection, warehouse: WarehouseSettings) -> list[str]:
    """Run the Citus statement of every table that is not a Citus table yet (inside the caller's
    transaction); returns the statements run."""
    statements(warehouse)  # the rules are checked before anything runs
    done = citus_tables(conn)
    pending = [p.statement for p in placements(warehouse) if p.statement and p.table not in done]
    for sql in pending:
        conn.execute(text(sql))
    return pending
