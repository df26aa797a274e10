"""Security: no secret leaks, `query` cannot write, identifiers are checked, data files are private.

(a) A PostgreSQL role WITH a password (pg_hba is trust on 127.0.0.1, so the password is not
    checked, but it is in every URL) runs the platform end to end — a warehouse URL, a database
    source URL and an HTTP source with a token in its URL and another in --token-env — and the
    secrets are then searched in every output, the JSON log file, the alert file, every exported
    and generated file and every text column of the warehouse: 0 hits. Wrong ports (warehouse
    and source) must not print them either.
(b) `query` and `performance analyze` refuse writes and multiple statements on both back ends:
    exit 1, one clear `Error:` line, the warehouse unchanged (checksums of every data table).
(c) Table, column, check and reason names from the command line are checked, never SQL.
(d) Files that may hold data are created 0600 (folders the platform creates 0700).
(e) A config file holding credentials and readable by others gets a warning with `chmod 600`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from metadata.checksums import warehouse_checksums
from tests.conftest import PG_URL, Cli, write_csv
from tests.reliability.helpers import record
from tests.test_cli_etl import ROWS
from tests.test_sources_api import SalesApi, records_of

PASSWORD = f"S3cr3t-{uuid.uuid4().hex[:10]}-p@ss:w/rd"
TOKEN_IN_URL = f"urltok-{uuid.uuid4().hex[:12]}"
BEARER = f"bearer-{uuid.uuid4().hex[:12]}"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), PASSWORD.split("-p@")[0], TOKEN_IN_URL, BEARER)


def _engine(url: str):
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(parsed, poolclass=NullPool)


def _error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ---------------------------------------------------------------------------------------------
# (a) secrets


@dataclass
class SecretWarehouse:
    url: str  # the warehouse, as the role with the password
    source_url: str  # a database source, as the same role
    schema: str
    folder: Path
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (what, text)

    def run(self, *args: str, url: str | None = None, env: dict[str, str] | None = None, code: int | None = 0) -> Result:
        result = Cli(url or self.url)(*args, env=env)
        self.outputs.append((" ".join(args)[:80], result.output))
        assert "Traceback" not in result.output, result.output
        if code is not None:
            assert result.exit_code == code, result.output
        return result


@pytest.fixture
def secret_warehouse(pg_available: None, tmp_path: Path) -> Iterator[SecretWarehouse]:
    """A role with a password owning a warehouse schema and a source schema; dropped afterwards."""
    role, schema, source = f"rdp_secret_tester_{uuid.uuid4().hex[:8]}", f"sec_{uuid.uuid4().hex[:10]}", f"src_{uuid.uuid4().hex[:10]}"
    admin = _engine(PG_URL)
    password_sql = PASSWORD.replace("'", "''")
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password_sql}'"))
        conn.execute(text(f"CREATE SCHEMA {schema} AUTHORIZATION {role}"))
        conn.execute(text(f"CREATE SCHEMA {source} AUTHORIZATION {role}"))
    base = make_url(PG_URL).set(username=role, password=PASSWORD)
    url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    source_url = base.update_query_dict({"options": f"-csearch_path={source}"}).render_as_string(hide_password=False)
    src = _engine(source_url)
    with src.begin() as conn:
        conn.execute(text('CREATE TABLE src_sales (id serial PRIMARY KEY, "InvoiceNo" text, "StockCode" text, "Description" text, '
                          '"Quantity" text, "InvoiceDate" text, "UnitPrice" text, "CustomerID" text, "Country" text)'))  # fmt: skip
        for i, row in enumerate(ROWS):
            conn.execute(
                text("INSERT INTO src_sales VALUES (DEFAULT, :a, :b, :c, :d, :e, :f, :g, :h)"),
                dict(zip("abcdefgh", [f"9{row[0]}{i}", *row[1:]], strict=True)),
            )
    src.dispose()
    try:
        yield SecretWarehouse(url, source_url, schema, tmp_path)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"DROP SCHEMA IF EXISTS {source} CASCADE"))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def _hits(content: str) -> int:
    return sum(content.count(secret) for secret in SECRETS)


def test_no_secret_anywhere(secret_warehouse: SecretWarehouse, tmp_path: Path) -> None:
    wh = secret_warehouse
    assert PASSWORD in wh.url or quote(PASSWORD, safe="") in wh.url  # the secret really is in the URL
    alerts_file = tmp_path / "alerts" / "alerts.jsonl"
    config = tmp_path / "alerts.yaml"
    config.write_text(f"alerts:\n  channels:\n    - name: file\n      type: file\n      path: {alerts_file}\n      min_severity: info\n")
    cfg = ("--config", str(config))
    api = SalesApi(records_of(ROWS), page_size=4, token=BEARER)
    try:
        _run_everything(wh, cfg, api, tmp_path)
    finally:
        api.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".db", ".csv") and "cache" not in p.parts]
    assert Path(os.environ["RDP_LOGGING__FILE"]).exists() and alerts_file.exists()
    found = {f"output of {what}": _hits(out) for what, out in wh.outputs}
    found |= {f"file {p.relative_to(tmp_path)}": _hits(p.read_text(encoding="utf-8", errors="replace")) for p in files}
    columns = _text_columns(wh)
    found |= {f"column {c}": n for c, n in columns.items()}
    leaks = {where: n for where, n in found.items() if n}
    record(
        "security",
        "secrets",
        {"secrets": len(SECRETS), "outputs_checked": len(wh.outputs), "files_checked": len(files), "columns_checked": len(columns),
         "hits": sum(leaks.values()), "files": sorted(str(p.relative_to(tmp_path)) for p in files)},
    )  # fmt: skip
    assert not leaks, leaks
    assert len(files) >= 8 and len(columns) > 40
    assert not (tmp_path / "docs-unreachable").exists(), "docs generate must write nothing when the warehouse is unreachable"


def _run_everything(wh: SecretWarehouse, cfg: tuple[str, ...], api: SalesApi, out: Path) -> None:
    csv_source = write_csv(out / "sales.csv", [*ROWS, ["1", "X", "bad", "many", "2010-12-01 08:26:00", "1", "1", "UK"]])
    env = {"SALES_API_TOKEN": BEARER}
    wh.run(*cfg, "setup")
    wh.run(*cfg, "test")
    wh.run(*cfg, "config", "show")
    wh.run(*cfg, "config", "show", "--format", "json")
    wh.run(*cfg, "etl", "--source", str(csv_source), "--format", "json")
    wh.run(*cfg, "etl", "--source", wh.source_url, "--table", "src_sales", "--format", "json")
    wh.run(*cfg, "etl", "--source", f"{api.url()}?token={TOKEN_IN_URL}", "--token-env", "SALES_API_TOKEN", env=env)
    wh.run(
        *cfg,
        "etl",
        "--source",
        f"{api.url()}?token={TOKEN_IN_URL}",
        "--token-env",
        "SALES_API_TOKEN",
        env={"SALES_API_TOKEN": "nope"},
        code=1,
    )
    wh.run(*cfg, "etl", "--source", wh.source_url, "--table", "no_such_table", code=1)
    wrong_source_port = wh.source_url.replace("127.0.0.1:5432", "127.0.0.1:1").replace("127.0.0.1/", "127.0.0.1:1/")
    wh.run(*cfg, "etl", "--source", wrong_source_port, "--table", "src_sales", code=1)
    for args in (("runs", "list", "--format", "json"), ("runs", "show", "2", "--format", "json"), ("runs", "show", "3")):
        wh.run(*cfg, *args)
    for fmt in ("json", "tree", "mermaid"):
        wh.run(*cfg, "metadata", "lineage", "--format", fmt)
    for fmt in ("json", "markdown", "openlineage"):
        wh.run(*cfg, "metadata", "export", "--format", fmt, "--filename", str(out / f"export.{fmt}"))
        wh.run(*cfg, "metadata", "export", "--format", fmt)
    wh.run(*cfg, "docs", "generate", "--output-dir", str(out / "docs"))
    wh.run(*cfg, "quality", "check", code=None)
    wh.run(*cfg, "quality", "report", "--format", "html", "--output", str(out / "report.html"))
    wh.run(*cfg, "quality", "report", "--format", "markdown")
    wh.run(*cfg, "alerts", "run", code=None)
    wh.run(*cfg, "alerts", "list", "--format", "json")
    wh.run(*cfg, "quarantine", "list", "--format", "json")
    wh.run(*cfg, "quarantine", "export", "--format", "json", "--output", str(out / "quarantine.json"))
    wh.run(*cfg, "query", "SELECT run_id, source, message FROM etl_runs ORDER BY run_id", "--format", "json")
    wh.run(*cfg, "performance", "analyze", "--query", "SELECT COUNT(*) FROM fact_sales")
    wh.run(*cfg, "performance", "cache-stats", "--format", "json")
    wh.run(*cfg, "versions", "list", "--format", "json")
    wrong_port = wh.url.replace("127.0.0.1:5432", "127.0.0.1:1").replace("127.0.0.1/", "127.0.0.1:1/")
    assert wrong_port != wh.url
    for args in (
        ("test",),
        ("setup",),
        ("etl", "--source", str(csv_source)),
        ("query", "SELECT 1"),
        ("metadata", "export"),
        ("runs", "list"),
        ("versions", "list"),
        ("quality", "check"),
        ("docs", "generate", "--output-dir", str(out / "docs-unreachable")),
    ):
        result = wh.run(*cfg, *args, url=wrong_port, code=1)
        assert "127.0.0.1:1" in _error_line(result)
    wh.run(*cfg, "config", "show", url=wrong_port)


def _text_columns(wh: SecretWarehouse) -> dict[str, int]:
    """Hits per text column of every table of the warehouse schema."""
    engine = _engine(PG_URL)
    with engine.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = :s "
                "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')"
            ),
            {"s": wh.schema},
        ).all()
        hits = {}
        for table, column in columns:
            like = " OR ".join(f'"{column}"::text LIKE :p{i}' for i in range(len(SECRETS)))
            params = {f"p{i}": f"%{s}%" for i, s in enumerate(SECRETS)}
            hits[f"{table}.{column}"] = conn.execute(text(f'SELECT COUNT(*) FROM {wh.schema}."{table}" WHERE {like}'), params).scalar_one()
    engine.dispose()
    return hits


def test_ledger_keeps_the_source_location_without_credentials(secret_warehouse: SecretWarehouse) -> None:
    wh = secret_warehouse
    wh.run("etl", "--source", wh.source_url, "--table", "src_sales")
    engine = _engine(wh.url)
    with engine.connect() as conn:
        (source,) = conn.execute(text("SELECT source FROM etl_runs")).one()
    engine.dispose()
    assert source.startswith(f"postgresql://{make_url(wh.url).username}:***@127.0.0.1") and source.endswith("(table src_sales)")


# ---------------------------------------------------------------------------------------------
# (b) read-only queries

REFUSED_EVERYWHERE = [
    "DELETE FROM fact_sales",
    "DROP TABLE fact_sales",
    "SELECT 1; DROP TABLE fact_sales",
    "SELECT 1 \\; DROP TABLE fact_sales",
    "WITH d AS (DELETE FROM fact_sales RETURNING *) SELECT * FROM d",
    "UPDATE fact_sales SET quantity = 0",
    "INSERT INTO dim_date (date_key) VALUES (1)",
    "CREATE TABLE x (a int)",
    "SELECT * INTO x FROM fact_sales",
    "SELECT * FROM fact_sales FOR UPDATE",
    "SELECT * FROM fact_sales FOR SHARE",
    "SELECT lo_import('/etc/passwd')",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT pg_catalog.set_config('a.b', 'c', false)",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT query_to_xml('DELETE FROM fact_sales', true, true, '')",
    "SELECT * FROM pg_catalog.pg_shadow",
    "SELECT pg_terminate_backend(1)",
    "SELECT pg_stat_reset()",
    "SELECT load_extension('x')",
    "ATTACH DATABASE 'evil.db' AS evil",
    "PRAGMA writable_schema = 1",
    "VACUUM",
    "SET ROLE postgres",
    "DO $$ BEGIN DELETE FROM fact_sales; END $$",
    "SELECT 'x'; -- ;",
]


@pytest.fixture
def loaded_warehouse(warehouse_url: str, tmp_path: Path) -> str:
    result = Cli(warehouse_url)("etl", "--source", str(write_csv(tmp_path / "s.csv", ROWS)))
    assert result.exit_code == 0, result.output
    return warehouse_url


def test_query_and_analyze_refuse_writes_and_several_statements(loaded_warehouse: str, tmp_path: Path) -> None:
    url = loaded_warehouse
    engine = _engine(url)
    before = warehouse_checksums(engine)
    cli = Cli(url)
    touched = tmp_path / "touched-by-copy"
    statements = [*REFUSED_EVERYWHERE, f"COPY fact_sales TO PROGRAM 'touch {touched}'", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'"]
    refused = 0
    for sql in statements:
        for command in (("query", sql), ("query", "--no-cache", sql), ("performance", "analyze", "--query", sql)):
            result = cli(*command)
            assert result.exit_code == 1, (command, result.output)
            assert _error_line(result).startswith("Error: query refused: "), (command, result.output)
            refused += 1
    after = warehouse_checksums(engine)
    engine.dispose()
    assert after == before and not touched.exists()
    record("security", f"refused_statements_{make_url(url).get_backend_name()}", {"statements": len(statements), "refusals": refused})


def test_database_refuses_what_the_checks_let_through(loaded_warehouse: str) -> None:
    """The read-only transaction (PostgreSQL) or read-only file (SQLite) is the second line."""
    url = loaded_warehouse
    engine = _engine(url)
    before = warehouse_checksums(engine)
    if engine.dialect.name == "postgresql":
        sql = "SELECT setval(pg_get_serial_sequence('etl_runs', 'run_id'), 1000)"
    else:
        sql = "WITH x AS (SELECT 1) SELECT * FROM x"  # nothing writes on SQLite through SELECT; the file is opened read-only
    result = Cli(url)("query", sql)
    if engine.dialect.name == "postgresql":
        assert result.exit_code == 1 and _error_line(result).startswith("Error: query refused: the statement tried to change data (")
    else:
        assert result.exit_code == 0
    assert warehouse_checksums(engine) == before
    engine.dispose()


def test_statement_timeout_ends_long_queries(loaded_warehouse: str) -> None:
    engine = _engine(loaded_warehouse)
    slow = (
        "SELECT pg_sleep(10)"
        if engine.dialect.name == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    )
    engine.dispose()
    for command in (("query", slow), ("performance", "analyze", "--query", slow)):
        result = Cli(loaded_warehouse)(*command, env={"RDP_CACHE__STATEMENT_TIMEOUT_S": "1"})
        assert result.exit_code == 1
        assert _error_line(result).startswith("Error: query cancelled: it ran longer than the statement timeout of 1 s")


# ---------------------------------------------------------------------------------------------
# (c) identifiers from the command line

HOSTILE = "fact_sales; DROP TABLE fact_sales; --"


def test_names_from_the_command_line_are_checked(loaded_warehouse: str, tmp_path: Path) -> None:
    url = loaded_warehouse
    engine = _engine(url)
    before = warehouse_checksums(engine)
    cli = Cli(url)
    source = write_csv(tmp_path / "s2.csv", ROWS[:2])
    cases = [
        (("quality", "check", "--table", HOSTILE), "unknown table 'fact_sales; DROP TABLE fact_sales; --'; choose from"),
        (("metadata", "columns", HOSTILE), "unknown table 'fact_sales; DROP TABLE fact_sales; --'; choose from"),
        (("metadata", "columns", 'fact_sales" --'), "unknown table 'fact_sales\" --'; choose from"),
        (("metadata", "lineage", "--table", HOSTILE), "unknown table"),
        (("quality", "history", "--check", HOSTILE), "unknown check"),
        (("quarantine", "list", "--reason", "x' OR '1'='1"), "unknown reason"),
        (("quarantine", "export", "--format", "csv", "--output", str(tmp_path / "q.csv"), "--reason", HOSTILE), "unknown reason"),
        (("etl", "--source", str(source), "--map", f"{HOSTILE}=InvoiceNo"), "unknown target column"),
        (("etl", "--source", str(source), "--map", f"InvoiceNo={HOSTILE}"), "not found"),
        (("etl", "--source", url, "--table", HOSTILE), "no table"),
        (("etl", "--source", url, "--query", "DELETE FROM fact_sales"), "--query must be a SELECT statement"),
        (("query", "--named", HOSTILE), "no standard query named"),
        (("query", "--named", "top_products", "--param", "limit=1; DROP TABLE fact_sales"), "parameter limit must be a whole number"),
        (("performance", "analyze", "--named", HOSTILE), "no standard query named"),
        (("alerts", "test", "--channel", HOSTILE), "unknown channel"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in _error_line(result), (args, result.output)
    assert warehouse_checksums(engine) == before
    assert {t for t in ("fact_sales", "dim_date") if t in _tables(engine)} == {"fact_sales", "dim_date"}
    engine.dispose()


def _tables(engine) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(engine).get_table_names())


def test_analyze_quotes_a_table_name_from_the_plan(sqlite_url: str, tmp_path: Path) -> None:
    """`performance analyze` counts the rows of each table it finds in SQLite's plan: the name
    (from the user's query) was put between double quotes unescaped, so a name holding one
    broke the statement."""
    cli = Cli(sqlite_url)
    assert cli("etl", "--source", str(write_csv(tmp_path / "s.csv", ROWS))).exit_code == 0
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn.execute('CREATE TABLE "we""ird" (a INTEGER)')
    conn.executemany('INSERT INTO "we""ird" VALUES (?)', [(i,) for i in range(5)])
    conn.commit()
    conn.close()
    result = cli("performance", "analyze", "--query", 'SELECT * FROM "we""ird" WHERE a > 1', "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 3


# ---------------------------------------------------------------------------------------------
# (d) private files


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_that_may_hold_data_are_user_only(sqlite_url: str, tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        _check_private_files(sqlite_url, tmp_path)
    finally:
        os.umask(old_umask)


def _check_private_files(url: str, tmp_path: Path) -> None:
    new = tmp_path / "new"  # folders the platform creates
    log_file, cache, alerts_file = new / "logs" / "rdp.log", new / "cache", new / "alerts" / "a.jsonl"
    existing = tmp_path / "existing"  # a folder of the user's: it keeps its mode
    existing.mkdir(mode=0o755)
    (existing / "old.md").write_text("existing file, world-readable\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"alerts:\n  channels:\n    - name: file\n      type: file\n      path: {alerts_file}\n      min_severity: info\n")
    env = {"RDP_LOGGING__FILE": str(log_file), "RDP_CACHE__DISK_PATH": str(cache)}
    cli = Cli(url)
    source = write_csv(tmp_path / "s.csv", ROWS)

    def run(*args: str) -> None:
        result = cli("--config", str(config), *args, env=env)
        assert result.exit_code == 0, result.output

    run("etl", "--source", str(source))
    run("query", "SELECT COUNT(*) FROM fact_sales")
    run("quality", "report", "--format", "html", "--output", str(tmp_path / "report.html"))
    run("quality", "report", "--format", "markdown", "--output", str(existing / "old.md"))
    run("metadata", "export", "--format", "json", "--filename", str(tmp_path / "export.json"))
    run("docs", "generate", "--output-dir", str(new / "docs"))
    run("quarantine", "export", "--format", "csv", "--output", str(tmp_path / "q.csv"))
    files = [log_file, alerts_file, tmp_path / "export.json", tmp_path / "q.csv"]
    files += sorted((new / "docs").glob("*.md")) + [p for p in cache.rglob("*.db")]
    folders = [new, new / "logs", cache, new / "alerts", new / "docs"]
    shared = [tmp_path / "report.html", existing / "old.md"]  # reports to share: the user's umask (022 here)
    modes = {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in [*files, *folders, *shared]}
    record("security", "private_files", modes)
    assert all(_mode(p) == 0o600 for p in files), modes
    assert all(_mode(p) == 0o644 for p in shared), modes
    assert all(_mode(p) == 0o700 for p in folders), modes
    assert _mode(existing) == 0o755, "a folder that already existed keeps its mode"


def test_pid_file_is_user_only(tmp_path: Path) -> None:
    from scheduling.pidfile import PidFile

    old_umask = os.umask(0o022)
    try:
        with PidFile(tmp_path / "run" / "scheduler.pid") as pid:
            assert _mode(pid.path) == 0o600
    finally:
        os.umask(old_umask)


# ---------------------------------------------------------------------------------------------
# (e) credentials in a config file others can read


@pytest.mark.parametrize(
    "content",
    [
        "database:\n  url: postgresql://rdp:{pw}@127.0.0.1:1/rdp_test\n",
        "cache:\n  redis_url: redis://:{pw}@127.0.0.1:6379/0\n",
        "alerts:\n  channels:\n    - name: hook\n      type: webhook\n      url: https://hooks.example/x?token={pw}\n",
    ],
    ids=["database-password", "redis-password", "webhook-token"],
)
def test_config_file_with_credentials_readable_by_others_is_flagged(tmp_path: Path, content: str) -> None:
    config = tmp_path / "local.yaml"
    config.write_text(content.format(pw=PASSWORD.replace("@", "%40").replace("/", "%2F").replace(":", "%3A")))
    cli = Cli(None)
    config.chmod(0o644)
    loose = cli("--config", str(config), "config", "show")
    assert loose.exit_code == 0, loose.output
    warning = [line for line in loose.stderr.splitlines() if "chmod 600" in line]
    assert warning == [
        f"Warning: config file {config} holds credentials ({_key(content)}) and is readable by other users (mode 644); "
        f"restrict it: chmod 600 {config}"
    ], loose.stderr
    validated = cli("config", "validate", str(config))
    assert validated.exit_code == 0 and warning[0] in validated.stderr
    assert _hits(loose.output) == 0
    config.chmod(0o600)
    tight = cli("--config", str(config), "config", "show")
    assert tight.exit_code == 0 and "chmod" not in tight.output


def _key(content: str) -> str:
    return {"database": "database.url", "cache": "cache.redis_url", "alerts": "alerts.channels.0.url"}[content.split(":", 1)[0]]


def test_config_file_without_credentials_is_not_flagged(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("database:\n  url: postgresql://rdp@127.0.0.1:1/rdp_test\netl:\n  chunk_size: 1000\n")
    config.chmod(0o644)
    result = Cli(None)("--config", str(config), "config", "show")
    assert result.exit_code == 0 and "chmod" not in result.output
