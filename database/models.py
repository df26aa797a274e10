"""ORM models of the warehouse. Table and column descriptions live here, once.

The models describe the schema (create_all, the catalog); loading never goes row by row
through the ORM but set-based through `etl/loader.py`.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Base(DeclarativeBase):
    """Declarative base of every warehouse table."""


class RawSourceValues:
    """The source fields of a rejected row exactly as read (shared by the quarantine tables)."""

    invoice_no: Mapped[str | None] = mapped_column(Text, comment="raw InvoiceNo")
    stock_code: Mapped[str | None] = mapped_column(Text, comment="raw StockCode")
    description: Mapped[str | None] = mapped_column(Text, comment="raw Description")
    quantity: Mapped[str | None] = mapped_column(Text, comment="raw Quantity")
    invoice_date: Mapped[str | None] = mapped_column(Text, comment="raw InvoiceDate")
    unit_price: Mapped[str | None] = mapped_column(Text, comment="raw UnitPrice")
    customer_id: Mapped[str | None] = mapped_column(Text, comment="raw CustomerID")
    country: Mapped[str | None] = mapped_column(Text, comment="raw Country")
    raw_line: Mapped[str | None] = mapped_column(Text, comment="the whole line, when it could not be split into fields")


class EtlRun(Base):
    __tablename__ = "etl_runs"
    __table_args__ = {"comment": "Run ledger: one row per ETL run; rows_read = rows_loaded + rows_quarantined + rows_already_loaded"}

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="run number")
    job_name: Mapped[str] = mapped_column(String(200), comment="job name given with --job-name")
    source: Mapped[str] = mapped_column(Text, comment="source path or URL (credentials masked)")
    source_checksum: Mapped[str | None] = mapped_column(String(64), index=True, comment="SHA-256 of the source file")
    encoding: Mapped[str | None] = mapped_column(String(20), comment="text encoding the source was read with")
    status: Mapped[str] = mapped_column(String(20), index=True, comment="running, success, skipped, dry_run or failed")
    started_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="start time (UTC)")
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="end time (UTC)")
    duration_s: Mapped[float | None] = mapped_column(Float, comment="wall time in seconds")
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0, comment="source rows read")
    rows_loaded: Mapped[int] = mapped_column(BigInteger, default=0, comment="new fact rows inserted")
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, default=0, comment="rows put in the quarantine")
    rows_already_loaded: Mapped[int] = mapped_column(BigInteger, default=0, comment="rows the warehouse already held")
    quarantine_by_reason: Mapped[str | None] = mapped_column(Text, comment="JSON object: reason code -> rows")
    dimension_changes: Mapped[str | None] = mapped_column(Text, comment="JSON object: per dimension inserted/updated/expired rows")
    message: Mapped[str | None] = mapped_column(Text, comment="why the run ended as it did (error or skip reason)")
    pid: Mapped[int | None] = mapped_column(Integer, comment="process id of the run")
    host: Mapped[str | None] = mapped_column(String(255), comment="machine that ran it")
    kind: Mapped[str] = mapped_column(String(20), default="load", server_default="load", comment="load, replay or rollback")
    rolled_back_by: Mapped[int | None] = mapped_column(Integer, comment="the rollback run that undid this run")
    source_profile: Mapped[str | None] = mapped_column(
        Text, comment="JSON: the source's header as read and the values of low-cardinality columns (schema drift, new values)"
    )


class DimCustomer(Base):
    __tablename__ = "dim_customers"
    __table_args__ = (
        Index("ix_dim_customers_id_effective", "customer_id", "effective_date", unique=True),
        Index("ux_dim_customers_current", "customer_id", unique=True, sqlite_where=text("is_current")),  # + postgresql_where below
        {"comment": "Customers, SCD type 2: a new version when the country changes; key -1 is the unknown customer"},
    )

    customer_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, comment="surrogate key")
    customer_id: Mapped[str | None] = mapped_column(String(20), comment="CustomerID from the source (NULL for the unknown customer)")
    country: Mapped[str] = mapped_column(String(100), comment="country of this version")
    effective_date: Mapped[datetime] = mapped_column(TIMESTAMP, comment="first transaction time this version is valid for")
    expiry_date: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="when the next version starts; NULL while current")
    is_current: Mapped[bool] = mapped_column(Boolean, comment="true for the customer's current version")
    created_run_id: Mapped[int | None] = mapped_column(ForeignKey("etl_runs.run_id"), comment="run that created this version")
    expired_run_id: Mapped[int | None] = mapped_column(ForeignKey("etl_runs.run_id"), comment="run that expired this version")


def current_version_only_on_postgresql(table, conn, **_) -> None:
    """The current-version index is partial on PostgreSQL too. Named when the table is created:
    a `postgresql_where` argument in the model would import SQLAlchemy's PostgreSQL dialect (its
    drivers' modules) in every process, SQLite runs included."""
    if conn.dialect.name == "postgresql":
        index = next(i for i in table.indexes if i.name == "ux_dim_customers_current")
        index.dialect_options["postgresql"]["where"] = text("is_current")


event.listen(DimCustomer.__table__, "before_create", current_version_only_on_postgresql)


class DimProduct(Base):
    __tablename__ = "dim_products"
    __table_args__ = {"comment": "Products, SCD type 1: the latest description and unit price win"}

    product_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, comment="surrogate key")
    stock_code: Mapped[str] = mapped_column(String(50), unique=True, comment="StockCode, trimmed and upper-cased")
    description: Mapped[str | None] = mapped_column(Text, comment="latest non-empty description")
    current_unit_price: Mapped[float] = mapped_column(MONEY, comment="latest unit price")
    price_as_of: Mapped[datetime] = mapped_column(TIMESTAMP, comment="transaction time of the latest price and description")
    category: Mapped[str] = mapped_column(String(30), comment="merchandise, or postage / fee / adjustment / voucher / charity / other")
    is_merchandise: Mapped[bool] = mapped_column(Boolean, comment="false for postage, fees, adjustments and vouchers")
    created_run_id: Mapped[int | None] = mapped_column(ForeignKey("etl_runs.run_id"), comment="run that first loaded the product")
    updated_run_id: Mapped[int | None] = mapped_column(ForeignKey("etl_runs.run_id"), comment="run that last changed it")


class DimDate(Base):
    __tablename__ = "dim_date"
    __table_args__ = {"comment": "Calendar: one row per date that has sales"}

    date_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, comment="YYYYMMDD")
    full_date: Mapped[date] = mapped_column(Date, unique=True, comment="the date")
    day: Mapped[int] = mapped_column(SmallInteger, comment="day of month 1-31")
    day_name: Mapped[str] = mapped_column(String(10), comment="Monday ... Sunday")
    weekday: Mapped[int] = mapped_column(SmallInteger, comment="ISO weekday, 1 = Monday")
    iso_week: Mapped[int] = mapped_column(SmallInteger, comment="ISO week number")
    month: Mapped[int] = mapped_column(SmallInteger, comment="month 1-12")
    month_name: Mapped[str] = mapped_column(String(10), comment="January ... December")
    quarter: Mapped[int] = mapped_column(SmallInteger, comment="quarter 1-4")
    year: Mapped[int] = mapped_column(SmallInteger, comment="calendar year")
    is_weekend: Mapped[bool] = mapped_column(Boolean, comment="Saturday or Sunday")
    is_uk_bank_holiday: Mapped[bool] = mapped_column(Boolean, comment="a bank holiday in England and Wales")
    holiday_name: Mapped[str | None] = mapped_column(String(100), comment="name of the bank holiday")
    created_run_id: Mapped[int | None] = mapped_column(Integer, comment="run that added the date")


class FactSales(Base):
    __tablename__ = "fact_sales"
    __table_args__ = (
        # (date_key, line_id): the exactly-once key. Leading with the date keeps inserts local
        # (sources come in time order) and serves date filters; line_id alone is random.
        Index("ux_fact_sales_line", "date_key", "line_id", unique=True),
        # run_id: a run's own facts (its quality gate, rollback, lineage) without scanning the
        # table. Run ids only grow, so inserts append to the index's last page: cheap to keep.
        Index("ix_fact_sales_run", "run_id"),
        # No indexes on customer_key / product_key: each index slows every COPY into the fact,
        # and aggregate queries scan anyway (measured in docs/performance.md).
        {"comment": "Sales lines (returns as negative quantities); one row per source line, loaded exactly once"},
    )

    # sales_key values are assigned by the loader (max + 1 under the warehouse lock), so they
    # need no sequence and work the same on a partitioned PostgreSQL table.
    sales_key: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False, comment="surrogate key"
    )
    line_id: Mapped[int] = mapped_column(BigInteger, comment="line identity (hash of the canonical eight fields) for exactly-once loading")
    # No FOREIGN KEY constraints on the fact: its keys come from joins inside the load
    # transaction, so they exist by construction, and per-row FK triggers would double the
    # load time on PostgreSQL. `quality check` verifies that every fact joins its dimensions.
    customer_key: Mapped[int] = mapped_column(Integer, comment="customer version valid at the transaction time (dim_customers)")
    product_key: Mapped[int] = mapped_column(Integer, comment="product (dim_products)")
    date_key: Mapped[int] = mapped_column(Integer, comment="transaction date (dim_date)")
    invoice_no: Mapped[str] = mapped_column(String(20), comment="InvoiceNo (degenerate dimension)")
    quantity: Mapped[int] = mapped_column(Integer, comment="units; negative for returns")
    unit_price: Mapped[float] = mapped_column(MONEY, comment="unit price, exact to 3 decimals")
    line_total: Mapped[float] = mapped_column(MONEY, comment="quantity x unit_price, exact")
    transaction_datetime: Mapped[datetime] = mapped_column(TIMESTAMP, comment="InvoiceDate")
    transaction_type: Mapped[str] = mapped_column(String(12), comment="sale, return or adjustment")
    source_row: Mapped[int] = mapped_column(BigInteger, comment="row number in the source (1 = first data row)")
    run_id: Mapped[int] = mapped_column(Integer, comment="run that loaded the line (etl_runs)")


class Quarantine(RawSourceValues, Base):
    __tablename__ = "etl_quarantine"
    __table_args__ = (
        Index("ix_etl_quarantine_run", "run_id"),
        {"comment": "Rejected rows with their raw values and reason codes; nothing is dropped"},
    )

    quarantine_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True, comment="id"
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("etl_runs.run_id"), comment="run that rejected the row")
    line_id: Mapped[int] = mapped_column(BigInteger, unique=True, comment="line identity, so a re-load does not quarantine it twice")
    source_row: Mapped[int] = mapped_column(BigInteger, comment="row number in the source (1 = first data row)")
    reasons: Mapped[str] = mapped_column(String(300), comment="reason codes separated by ';'")
    quarantined_at: Mapped[datetime] = mapped_column(
        TIMESTAMP, server_default=text("CURRENT_TIMESTAMP"), comment="when it was quarantined (UTC)"
    )


class DimProductHistory(Base):
    __tablename__ = "dim_products_history"
    __table_args__ = (
        Index("ix_dim_products_history_run", "run_id"),
        {"comment": "Values of dim_products rows before a run overwrote them (SCD1 keeps no history itself); used by rollback"},
    )

    history_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True, comment="id, in change order"
    )
    run_id: Mapped[int] = mapped_column(Integer, comment="run that changed the product")
    product_key: Mapped[int] = mapped_column(Integer, comment="the product changed")
    description: Mapped[str | None] = mapped_column(Text, comment="description before the change")
    current_unit_price: Mapped[float] = mapped_column(MONEY, comment="unit price before the change")
    price_as_of: Mapped[datetime] = mapped_column(TIMESTAMP, comment="price_as_of before the change")
    category: Mapped[str] = mapped_column(String(30), comment="category before the change")
    is_merchandise: Mapped[bool] = mapped_column(Boolean, comment="is_merchandise before the change")
    updated_run_id: Mapped[int | None] = mapped_column(Integer, comment="updated_run_id before the change")


class DimCustomerHistory(Base):
    __tablename__ = "dim_customers_history"
    __table_args__ = (
        Index("ix_dim_customers_history_run", "run_id"),
        {"comment": "Values of dim_customers versions before a run expired or extended them; used by rollback"},
    )

    history_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True, comment="id, in change order"
    )
    run_id: Mapped[int] = mapped_column(Integer, comment="run that changed the version")
    customer_key: Mapped[int] = mapped_column(Integer, comment="the version changed")
    effective_date: Mapped[datetime] = mapped_column(TIMESTAMP, comment="effective_date before the change")
    expiry_date: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="expiry_date before the change")
    is_current: Mapped[bool] = mapped_column(Boolean, comment="is_current before the change")
    expired_run_id: Mapped[int | None] = mapped_column(Integer, comment="expired_run_id before the change")


class QuarantineReplayed(RawSourceValues, Base):
    __tablename__ = "etl_quarantine_replayed"
    __table_args__ = (
        Index("ix_etl_quarantine_replayed_run", "replay_run_id"),
        {"comment": "Quarantined rows that a replay loaded, as they were in the quarantine; rollback of the replay puts them back"},
    )

    quarantine_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False, comment="id it had in etl_quarantine"
    )
    replay_run_id: Mapped[int] = mapped_column(Integer, comment="the replay run that loaded it")
    run_id: Mapped[int] = mapped_column(Integer, comment="run that had quarantined it")
    line_id: Mapped[int] = mapped_column(BigInteger, comment="line identity")
    source_row: Mapped[int] = mapped_column(BigInteger, comment="row number in the source")
    reasons: Mapped[str] = mapped_column(String(300), comment="reason codes it was quarantined with")
    quarantined_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="when it was first quarantined (UTC)")
