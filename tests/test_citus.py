"""Citus (issue #10 part 2): the DDL as text, the setting, and `setup` on this machine's single-node
PostgreSQL, which has no citus extension. Nothing here runs on Citus: it cannot be installed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from config.settings import DatabaseSettings, WarehouseSettings, load_settings
from database import citus
from database.engine import make_engine
from database.tables import METADATA
from main import cli
from tests.conftest import Cli
from utils.errors import ConfigError
from utils.urls import mask_url

CITUS = {"RDP_WAREHOUSE__DISTRIBUTED": "citus"}
DEFAULT_STATEMENTS = [
    "SELECT create_reference_table('agg_customer_totals')",
    "SELECT create_reference_table('agg_monthly_product')",
    "SELECT create_reference_table('agg_monthly_sales')",
    "SELECT create_reference_table('agg_product_totals')",
    "SELECT create_reference_table('dim_customers_history')",
    "SELECT create_reference_table('dim_date')",
    "SELECT create_reference_table('dim_products_history')",
    "SELECT create_reference_table('etl_quarantine_replayed')",
    "SELECT create_reference_table('etl_runs')",
    "SELECT create_reference_table('dim_customers')",
    "SELECT create_reference_table('dim_products')",
    "SELECT create_reference_table('etl_quarantine')",
    "SELECT create_distributed_table('fact_sales', 'date_key')",
    "SELECT create_distributed_table('agg_daily_customer', 'date_key', colocate_with => 'fact_sales')",
    "SELECT create_distributed_table('agg_daily_orders', 'date_key', colocate_with => 'fact_sales')",
    "SELECT create_distributed_table('agg_daily_product', 'date_key', colocate_with => 'fact_sales')",
]


def test_ddl_of_the_default_setting() -> None:
    """Dimensions and small tables are reference tables, the fact is distributed by date_key, the
    daily aggregates are co-located with it; a table a foreign key points at comes first."""
    statements = citus.statements(WarehouseSettings(distributed="citus"))
    assert statements == DEFAULT_STATEMENTS
    order = [s.split("'")[1] for s in statements]
    assert order.index("etl_runs") < min(order.index(t) for t in ("dim_customers", "dim_products", "etl_quarantine"))
    assert citus.statements(WarehouseSettings()) == statements  # the text does not depend on whether it is applied


def test_every_table_is_placed_and_follows_citus_rules() -> None:
    placed = {p.table: p.kind for p in citus.placements(WarehouseSettings())}
    assert set(placed) == set(METADATA.tables)
    assert {t for t, k in placed.items() if k == citus.LOCAL} == {
        "quality_results",
        "quality_metrics",
        "alerts",
        "scheduled_jobs",
        "job_runs",
    }
    # No constraint change is needed: every unique key of the distributed tables contains date_key ...
    assert citus.keys_without("date_key") == []
    # ... which customer_key would not be (the reason the setting refuses it).
    assert citus.keys_without("customer_key") == [
        "fact_sales primary key (sales_key, date_key)",
        "fact_sales unique index ux_fact_sales_line (date_key, line_id)",
        "agg_daily_product primary key (date_key, product_key)",
    ]
    assert citus.foreign_key_problems(WarehouseSettings()) == []


def test_print_ddl_connects_to_nothing(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    result = Cli(f"sqlite:///{db}")("setup", "--print-ddl")
    assert result.exit_code == 0, result.output
    assert result.stdout == citus.render(WarehouseSettings())
    assert not db.exists()
    lines = result.stdout.splitlines()
    assert [line.removesuffix(";") for line in lines if line.startswith("SELECT ")] == DEFAULT_STATEMENTS
    assert "warehouse.distributed is none: `setup` does not run them until it is set to citus" in lines[0]
    assert "-- Constraint changes: none. Every primary key and unique index of the distributed tables contains date_key:" in lines
    assert "--   fact_sales unique index ux_fact_sales_line (date_key, line_id)" in lines
    assert "--   quality_results: quality history: read and written on its own" in lines
    on = Cli(f"sqlite:///{db}")("setup", "--print-ddl", env=CITUS)
    assert on.exit_code == 0 and "(`python main.py setup` runs them)" in on.stdout.splitlines()[0]
    assert on.stdout.splitlines()[1:] == lines[1:]


def test_docs_show_the_real_print_ddl_output() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "citus.md").read_text()
    shown = doc.split("```sql\n", 1)[1].split("```\n", 1)[0]
    assert shown == citus.render(WarehouseSettings(distributed="citus"))


def test_bad_values_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("warehouse:\n  distributed: citrus\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(bad)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {bad}: warehouse.distributed: Input should be 'none' or 'citus' (got 'citrus')\n"
    bad.write_text("warehouse:\n  distribution_column: customer_key\n")
    refused = CliRunner().invoke(cli, ["config", "validate", str(bad)])
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: {bad}: warehouse.distribution_column: Value error, fact_sales cannot be distributed by customer_key: loads and "
        "rollbacks UPDATE fact_sales.customer_key (the SCD2 re-point) and Citus cannot change a distribution column; "
        "agg_daily_product has no customer_key to be co-located by; use date_key (got 'customer_key')\n"
    )
    with pytest.raises(ConfigError, match=r"^environment variable RDP_WAREHOUSE__DISTRIBUTION_COLUMN: warehouse\.distribution_column: "):
        load_settings(default_files=(), environ={"RDP_WAREHOUSE__DISTRIBUTION_COLUMN": "invoice_no"})
    assert load_settings(default_files=(), environ=CITUS).warehouse == WarehouseSettings(distributed="citus")


def _citus_installed(url: str) -> bool:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'citus'")).first() is not None
    engine.dispose()
    return found


@pytest.mark.parametrize(
    "command", [("setup",), ("etl", "--source", str(Path(__file__).parents[1] / "data" / "sample_sales.csv")), ("quality", "check")]
)
def test_setup_with_citus_on_single_node_postgresql_fails_clearly_and_writes_nothing(pg_url: str, command: tuple[str, ...]) -> None:
    """`setup`, and the commands that set up a missing schema themselves, honour the setting."""
    if _citus_installed(pg_url):
        pytest.skip("this PostgreSQL server has Citus installed; the test is about one without it")
    engine = make_engine(DatabaseSettings(url=pg_url))
    shown = mask_url(engine.url.render_as_string(hide_password=False))
    result = Cli(pg_url)(*command, env=CITUS)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: warehouse.distributed is 'citus' but the warehouse {shown} has no citus extension: Citus is not installed on "
        "that server. Install it there (add citus to shared_preload_libraries, restart, run CREATE EXTENSION citus in the "
        "database), or set warehouse.distributed: none (docs/citus.md)\n"
    )
    assert inspect(engine).get_table_names() == []
    engine.dispose()


def test_setup_with_citus_on_sqlite_fails_and_creates_no_file(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.db"
    result = Cli(f"sqlite:///{db}")("setup", env=CITUS)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: warehouse.distributed is 'citus' but the warehouse sqlite:///{db} is an SQLite file; Citus needs a PostgreSQL "
        "coordinator with the citus extension: point database.url at one, or set warehouse.distributed: none (docs/citus.md)\n"
    )
    assert not db.exists()


def test_default_setting_sets_up_plain_postgresql_the_ddl_names_resolve(pg_url: str) -> None:
    """With warehouse.distributed: none, setup is what it was (no Citus step, no new output key); on the
    schema it creates, every table and column the Citus DDL names exists, and the co-located tables'
    distribution columns have one type (Citus co-locates only equal types)."""
    result = Cli(pg_url)("setup", "--format", "json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"warehouse", "created", "existing", "unknown_customer_created"}
    engine = make_engine(DatabaseSettings(url=pg_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first() is None
        assert conn.execute(text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = CAST('fact_sales' AS regclass)")).first()
        for placement in citus.placements(WarehouseSettings()):
            conn.execute(text(f"SELECT CAST('{placement.table}' AS regclass)"))
        types = conn.execute(
            text(
                "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND column_name = 'date_key' AND table_name IN ('fact_sales', 'agg_daily_product', 'agg_daily_customer', "
                "'agg_daily_orders')"
            )
        ).all()
    assert types == [("integer",)]
    engine.dispose()
