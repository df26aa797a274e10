"""Help, version, setup, test and config commands."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from config.settings import DatabaseSettings
from database.engine import make_engine
from main import cli
from tests.conftest import Cli


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _all_commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("path", _all_commands(cli), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    command = cli
    for name in path:
        command = command.commands[name]
    assert command.help, f"{' '.join(path)} has no help text"


def test_version() -> None:
    assert "retail-data-platform, version" in CliRunner().invoke(cli, ["--version"]).output


def test_unknown_option_is_usage_error() -> None:
    result = CliRunner().invoke(cli, ["etl", "--nope"])
    assert result.exit_code == 2 and "No such option '--nope'" in result.output


def test_setup_is_idempotent(run_cli: Cli) -> None:
    first = json.loads(run_cli("setup", "--format", "json").stdout)
    assert set(first["created"]) >= {"etl_runs", "dim_customers", "dim_products", "dim_date", "fact_sales", "etl_quarantine"}
    assert first["unknown_customer_created"] is True
    second = json.loads(run_cli("setup", "--format", "json").stdout)
    assert second["created"] == [] and second["unknown_customer_created"] is False
    assert set(second["existing"]) == set(first["created"])


def test_setup_adds_indexes_a_newer_version_defines(run_cli: Cli, warehouse_url: str) -> None:
    """A warehouse made before an index existed gets it from `setup` (create_all skips existing tables)."""
    run_cli("setup")
    engine = make_engine(DatabaseSettings(url=warehouse_url))
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_fact_sales_run"))
    assert "ix_fact_sales_run" not in {i["name"] for i in inspect(engine).get_indexes("fact_sales")}
    assert run_cli("setup").exit_code == 0
    assert "ix_fact_sales_run" in {i["name"] for i in inspect(engine).get_indexes("fact_sales")}
    engine.dispose()


def test_test_command_reports_backend_and_missing_schema(run_cli: Cli, warehouse_url: str) -> None:
    before = run_cli("test", "--format", "json")
    assert before.exit_code == 1
    assert "fact_sales" in json.loads(before.stdout)["missing_tables"]
    run_cli("setup")
    after = run_cli("test", "--format", "json")
    report = json.loads(after.stdout)
    assert after.exit_code == 0 and report["missing_tables"] == [] and report["writable"] is True
    assert report["backend"] == warehouse_url.split(":")[0]
    assert report["server_version"][0].isalpha() or report["server_version"][0].isdigit()
    table = run_cli("test").stdout
    assert "write access" in table and "complete" in table


def test_test_command_never_prints_the_password(pg_url: str) -> None:
    url = pg_url.replace("postgres@", "postgres:hunter2@")  # the test server trusts local users
    result = Cli(url)("test")
    assert "hunter2" not in result.output
    assert "postgres:***@" in result.output


def test_config_show_masks_secrets_and_shows_layers(tmp_path: Path) -> None:
    local = tmp_path / "extra.yaml"
    local.write_text("etl:\n  chunk_size: 1234\n")
    result = CliRunner().invoke(
        cli,
        ["--config", str(local), "--database-url", "postgresql://u:topsecret@db.example/wh", "config", "show", "--format", "json"],
        env={"RDP_RULES__MAX_ABS_QUANTITY": "500"},
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["database.url"] == "postgresql://u:***@db.example/wh"
    assert shown["etl.chunk_size"] == 1234
    assert shown["rules.max_abs_quantity"] == 500
    assert "topsecret" not in result.output
    assert "database.lock_timeout_s" in CliRunner().invoke(cli, ["config", "show"]).output


def test_config_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  reject_zero_quantity: false\n")
    ok = CliRunner().invoke(cli, ["config", "validate", str(good)])
    assert ok.exit_code == 0 and f"{good}: OK" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("database:\n  pool_size: many\nlogging:\n  level: LOUD\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"Error: {bad}: database.pool_size: Input should be a valid integer" in result.output
    assert "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' (got 'LOUD')" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("etl: [unclosed\n")
    assert "not valid YAML" in CliRunner().invoke(cli, ["config", "validate", str(broken)]).output
    missing = CliRunner().invoke(cli, ["config", "validate", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_development_yaml_lists_every_default() -> None:
    from config.settings import CONFIG_DIR, Settings, describe_settings, parse_settings, read_config_file

    data = read_config_file(CONFIG_DIR / "development.yaml")
    assert parse_settings(data) == Settings()
    listed = {f"{section}.{key}" for section, values in data.items() if section != "sources" for key in values} | {"sources"}
    assert listed == {row["setting"] for row in describe_settings(Settings())}
    text = (CONFIG_DIR / "development.yaml").read_text()
    assert text.count("# ") >= len(listed)  # a comment for each


def test_required_fields_must_be_known_columns() -> None:
    from config.settings import load_settings
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"rules\.required_fields: Value error, unknown column"):
        load_settings(default_files=(), environ={}, overrides={"rules": {"required_fields": ["Nope"]}})


def test_log_file_is_json_lines_with_run_id(sqlite_cli: Cli, tmp_path: Path) -> None:
    from tests.conftest import write_csv
    from tests.test_cli_etl import ROWS

    log = tmp_path / "run.log"
    assert sqlite_cli("etl", "--source", str(write_csv(tmp_path / "s.csv", ROWS)), env={"RDP_LOGGING__FILE": str(log)}).exit_code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    started = [r for r in records if r["message"].startswith("run 1 started")]
    assert started and started[0]["run_id"] == 1 and started[0]["level"] == "INFO"
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_schema_check_reads_the_tables_and_columns_the_inspector_sees(run_cli: Cli, warehouse_url: str) -> None:
    """missing_tables / missing_columns read the schema in one query: the same tables and
    columns as SQLAlchemy's inspector, before and after a column is dropped."""
    from sqlalchemy import create_engine, inspect, text

    from database.schema import _table_columns, missing_columns

    run_cli("setup")
    engine = create_engine(warehouse_url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE etl_runs DROP COLUMN source_profile"))
        inspector = inspect(engine)
        assert _table_columns(engine) == {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}
        assert ("etl_runs", "source_profile") in missing_columns(engine)
    finally:
        engine.dispose()


def test_the_current_customer_version_index_is_partial_on_both_back_ends(run_cli: Cli, warehouse_url: str) -> None:
    """One current version per customer, any number of expired ones: the unique index has a
    WHERE is_current on SQLite and on PostgreSQL (named there when the table is created)."""
    from sqlalchemy import create_engine, text

    run_cli("setup")
    engine = create_engine(warehouse_url.replace("postgresql://", "postgresql+psycopg2://"))
    sql = (
        "SELECT sql FROM sqlite_master WHERE name = 'ux_dim_customers_current'"
        if warehouse_url.startswith("sqlite")
        else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ux_dim_customers_current' AND schemaname = current_schema()"
    )
    try:
        with engine.connect() as conn:
            definition = conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()
    assert "UNIQUE" in definition.upper() and "WHERE IS_CURRENT" in definition.upper().replace("(", "").replace(")", "")


def test_setup_adds_a_missing_current_version_index_as_partial(run_cli: Cli, warehouse_url: str) -> None:
    """A warehouse made before the index: setup creates it, partial on both back ends."""
    from sqlalchemy import create_engine, text

    run_cli("setup")
    engine = create_engine(warehouse_url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ux_dim_customers_current"))
        assert run_cli("setup").exit_code == 0
        sql = (
            "SELECT sql FROM sqlite_master WHERE name = 'ux_dim_customers_current'"
            if warehouse_url.startswith("sqlite")
            else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ux_dim_customers_current' AND schemaname = current_schema()"
        )
        with engine.connect() as conn:
            definition = conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()
    assert "WHERE IS_CURRENT" in definition.upper().replace("(", "").replace(")", "")
