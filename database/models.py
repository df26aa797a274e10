"""The warehouse's tables, as SQLAlchemy Core tables on one metadata. Table and column
descriptions live here, once.

The tables describe the schema (create_all, the catalog) and serve as column expressions in
queries; loading goes set-based through `etl/loader.py`. Core tables rather than ORM models:
nothing here needs sessions or mapped classes, and every run would otherwise import the ORM.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.dialects import sqlite

UNKNOWN_CUSTOMER_KEY = -1
MONEY = Numeric(18, 3, asdecimal=True)
# SQLite keeps timestamps as text; one fixed form (no fraction) keeps comparisons between
# values written by SQLAlchemy and by the bulk loader correct.
SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S"
TIMESTAMP = DateTime().with_variant(
    sqlite.DATETIME(
        storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
        regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
    ),
    "sqlite",
)


METADATA = MetaData()


def _raw_source_values() -> list[Column]:
    """The source fields of a rejected row exactly as read (shared by the quarantine tables)."""
    return [
        Column("invoice_no", Text, comment="raw InvoiceNo"),
        Column("stock_code", Text, comment="raw StockCode"),
        Column("description", Text, comment="raw Description"),
        Column("quantity", Text, comment="raw Quantity"),
        Column("invoice_date", Text, comment="raw InvoiceDate"),
        Column("unit_price", Text, comment="raw UnitPrice"),
        Column("customer_id", Text, comment="raw CustomerID"),
        Column("country", Text, comment="raw Country"),
        Column("raw_line", Text, comment="the whole line, when it could not be split into fields"),
    ]


etl_runs = Table(
    "etl_runs",
    METADATA,
    Column("run_id", Integer, primary_key=True, comment="run number"),
    Column("job_name", String(200), comment="job name given with --job-name", nullable=False),
    Column("source", Text, comment="source path or URL (credentials masked)", nullable=False),
    Column("source_checksum", String(64), index=True, comment="SHA-256 of the source file"),
    Column("encoding", String(20), comment="text encoding the source was read with"),
    Column("status", String(20), index=True, comment="running, success, skipped, dry_run or failed", nullable=False),
    Column("started_at", TIMESTAMP, comment="start time (UTC)", nullable=False),
    Column("finished_at", TIMESTAMP, comment="end time (UTC)"),
    Column("duration_s", Float, comment="wall time in seconds"),
    Column("rows_read", BigInteger, default=0, comment="source rows read", nullable=False),
    Column("rows_loaded", BigInteger, default=0, comment="new fact rows inserted", nullable=False),
    Column("rows_quarantined", BigInteger, default=0, comment="rows put in the quarantine", nullable=False),
    Column("rows_already_loaded", BigInteger, default=0, comment="rows the warehouse already held", nullable=False),
    Column("quarantine_by_reason", Text, comment="JSON object: reason code -> rows"),
    Column("dimension_changes", Text, comment="JSON object: per dimension inserted/updated/expired rows"),
    Column("message", Text, comment="why the run ended as it did (error or skip reason)"),
    Column("pid", Integer, comment="process id of the run"),
    Column("host", String(255), comment="machine that ran it"),
    Column("kind", String(20), default="load", server_default="load", comment="load, replay or rollback", nullable=False),
    Column("rolled_back_by", Integer, comment="the rollback run that undid this run"),
    Column(
        "source_profile",
        Text,
        comment="JSON: the source's header as read and the values of low-cardinality columns (schema drift, new values)",
    ),
    comment="Run ledger: one row per ETL run; rows_read = rows_loaded + rows_quarantined + rows_already_loaded",
)


dim_customers = Table(
    "dim_customers",
    METADATA,
    Column("customer_key", Integer, primary_key=True, autoincrement=True, comment="surrogate key"),
    Column("customer_id", String(20), comment="CustomerID from the source (NULL for the unknown customer)"),
    Column("country", String(100), comment="country of this version", nullable=False),
    Column("effective_date", TIMESTAMP, comment="first transaction time this version is valid for", nullable=False),
    Column("expiry_date", TIMESTAMP, comment="when the next version starts; NULL while current"),
    Column("is_current", Boolean, comment="true for the customer's current version", nullable=False),
    Column("created_run_id", Integer, ForeignKey("etl_runs.run_id"), comment="run that created this version"),
    Column("expired_run_id", Integer, ForeignKey("etl_runs.run_id"), comment="run that expired this version"),
    Index("ix_dim_customers_id_effective", "customer_id", "effective_date", unique=True),
    Index("ux_dim_customers_current", "customer_id", unique=True, sqlite_where=text("is_current")),  # + postgresql_where below
    comment="Customers, SCD type 2: a new version when the country changes; key -1 is the unknown customer",
)


def current_version_only_on_postgresql(table, conn, **_) -> None:
    """The current-version index is partial on PostgreSQL too. Named when the table is created:
    a `postgresql_where` argument in the table would import SQLAlchemy's PostgreSQL dialect (its
    drivers' modules) in every process, SQLite runs included."""
    if conn.dialect.name == "postgresql":
        index = next(i for i in table.indexes if i.name == "ux_dim_customers_current")
        index.dialect_options["postgresql"]["where"] = text("is_current")


event.listen(dim_customers, "before_create", current_version_only_on_postgresql)


dim_products = Table(
    "dim_products",
    METADATA,
    Column("product_key", Integer, primary_key=True, autoincrement=True, comment="surrogate key"),
    Column("stock_code", String(50), unique=True, comment="StockCode, trimmed and upper-cased", nullable=False),
    Column("description", Text, comment="latest non-empty description"),
    Column("current_unit_price", MONEY, comment="latest unit price", nullable=False),
    Column("price_as_of", TIMESTAMP, comment="transaction time of the latest price and description", nullable=False),
    Column("category", String(30), comment="merchandise, or postage / fee / adjustment / voucher / charity / other", nullable=False),
    Column("is_merchandise", Boolean, comment="false for postage, fees, adjustments and vouchers", nullable=False),
    Column("created_run_id", Integer, ForeignKey("etl_runs.run_id"), comment="run that first loaded the product"),
    Column("updated_run_id", Integer, ForeignKey("etl_runs.run_id"), comment="run that last changed it"),
    comment="Products, SCD type 1: the latest description and unit price win",
)


dim_date = Table(
    "dim_date",
    METADATA,
    Column("date_key", Integer, primary_key=True, autoincrement=False, comment="YYYYMMDD"),
    Column("full_date", Date, unique=True, comment="the date", nullable=False),
    Column("day", SmallInteger, comment="day of month 1-31", nullable=False),
    Column("day_name", String(10), comment="Monday ... Sunday", nullable=False),
    Column("weekday", SmallInteger, comment="ISO weekday, 1 = Monday", nullable=False),
    Column("iso_week", SmallInteger, comment="ISO week number", nullable=False),
    Column("month", SmallInteger, comment="month 1-12", nullable=False),
    Column("month_name", String(10), comment="January ... December", nullable=False),
    Column("quarter", SmallInteger, comment="quarter 1-4", nullable=False),
    Column("year", SmallInteger, comment="calendar year", nullable=False),
    Column("is_weekend", Boolean, comment="Saturday or Sunday", nullable=False),
    Column("is_uk_bank_holiday", Boolean, comment="a bank holiday in England and Wales", nullable=False),
    Column("holiday_name", String(100), comment="name of the bank holiday"),
    Column("created_run_id", Integer, comment="run that added the date"),
    comment="Calendar: one row per date that has sales",
)


fact_sales = Table(
    "fact_sales",
    METADATA,
    # sales_key values are assigned by the loader (max + 1 under the warehouse lock), so they
    # need no sequence and work the same on a partitioned PostgreSQL table.
    Column("sales_key", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False, comment="surrogate key"),
    Column("line_id", BigInteger, comment="line identity (hash of the canonical eight fields) for exactly-once loading", nullable=False),
    # No FOREIGN KEY constraints on the fact: its keys come from joins inside the load
    # transaction, so they exist by construction, and per-row FK triggers would double the
    # load time on PostgreSQL. `quality check` verifies that every fact joins its dimensions.
    Column("customer_key", Integer, comment="customer version valid at the transaction time (dim_customers)", nullable=False),
    Column("product_key", Integer, comment="product (dim_products)", nullable=False),
    Column("date_key", Integer, comment="transaction date (dim_date)", nullable=False),
    Column("invoice_no", String(20), comment="InvoiceNo (degenerate dimension)", nullable=False),
    Column("quantity", Integer, comment="units; negative for returns", nullable=False),
    Column("unit_price", MONEY, comment="unit price, exact to 3 decimals", nullable=False),
    Column("line_total", MONEY, comment="quantity x unit_price, exact", nullable=False),
    Column("transaction_datetime", TIMESTAMP, comment="InvoiceDate", nullable=False),
    Column("transaction_type", String(12), comment="sale, return or adjustment", nullable=False),
    Column("source_row", BigInteger, comment="row number in the source (1 = first data row)", nullable=False),
    Column("run_id", Integer, comment="run that loaded the line (etl_runs)", nullable=False),
    # (date_key, line_id): the exactly-once key. Leading with the date keeps inserts local
    # (sources come in time order) and serves date filters; line_id alone is random.
    Index("ux_fact_sales_line", "date_key", "line_id", unique=True),
    # run_id: a run's own facts (its quality gate, rollback, lineage) without scanning the
    # table. Run ids only grow, so inserts append to the index's last page: cheap to keep.
    Index("ix_fact_sales_run", "run_id"),
    # No indexes on customer_key / product_key: each index slows every COPY into the fact,
    # and aggregate queries scan anyway (measured in docs/performance.md).
    comment="Sales lines (returns as negative quantities); one row per source line, loaded exactly once",
)


etl_quarantine = Table(
    "etl_quarantine",
    METADATA,
    Column("quarantine_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True, comment="id"),
    Column("run_id", Integer, ForeignKey("etl_runs.run_id"), comment="run that rejected the row", nullable=False),
    Column("line_id", BigInteger, unique=True, comment="line identity, so a re-load does not quarantine it twice", nullable=False),
    Column("source_row", BigInteger, comment="row number in the source (1 = first data row)", nullable=False),
    Column("reasons", String(300), comment="reason codes separated by ';'", nullable=False),
    Column("quarantined_at", TIMESTAMP, server_default=text("CURRENT_TIMESTAMP"), comment="when it was quarantined (UTC)", nullable=False),
    *_raw_source_values(),
    Index("ix_etl_quarantine_run", "run_id"),
    comment="Rejected rows with their raw values and reason codes; nothing is dropped",
)


dim_products_history = Table(
    "dim_products_history",
    METADATA,
    Column("history_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True, comment="id, in change order"),
    Column("run_id", Integer, comment="run that changed the product", nullable=False),
    Column("product_key", Integer, comment="the product changed", nullable=False),
    Column("description", Text, comment="description before the change"),
    Column("current_unit_price", MONEY, comment="unit price before the change", nullable=False),
    Column("price_as_of", TIMESTAMP, comment="price_as_of before the change", nullable=False),
    Column("category", String(30), comment="category before the change", nullable=False),
    Column("is_merchandise", Boolean, comment="is_merchandise before the change", nullable=False),
    Column("updated_run_id", Integer, comment="updated_run_id before the change"),
    Index("ix_dim_products_history_run", "run_id"),
    comment="Values of dim_products rows before a run overwrote them (SCD1 keeps no history itself); used by rollback",
)


dim_customers_history = Table(
    "dim_customers_history",
    METADATA,
    Column("history_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True, comment="id, in change order"),
    Column("run_id", Integer, comment="run that changed the version", nullable=False),
    Column("customer_key", Integer, comment="the version changed", nullable=False),
    Column("effective_date", TIMESTAMP, comment="effective_date before the change", nullable=False),
    Column("expiry_date", TIMESTAMP, comment="expiry_date before the change"),
    Column("is_current", Boolean, comment="is_current before the change", nullable=False),
    Column("expired_run_id", Integer, comment="expired_run_id before the change"),
    Index("ix_dim_customers_history_run", "run_id"),
    comment="Values of dim_customers versions before a run expired or extended them; used by rollback",
)


etl_quarantine_replayed = Table(
    "etl_quarantine_replayed",
    METADATA,
    Column(
        "quarantine_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
        comment="id it had in etl_quarantine",
    ),
    Column("replay_run_id", Integer, comment="the replay run that loaded it", nullable=False),
    Column("run_id", Integer, comment="run that had quarantined it", nullable=False),
    Column("line_id", BigInteger, comment="line identity", nullable=False),
    Column("source_row", BigInteger, comment="row number in the source", nullable=False),
    Column("reasons", String(300), comment="reason codes it was quarantined with", nullable=False),
    Column("quarantined_at", TIMESTAMP, comment="when it was first quarantined (UTC)", nullable=False),
    *_raw_source_values(),
    Index("ix_etl_quarantine_replayed_run", "replay_run_id"),
    comment="Quarantined rows that a replay loaded, as they were in the quarantine; rollback of the replay puts them back",
)
