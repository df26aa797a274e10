"""Load benchmark of the ETL, with its own baseline: `python -m bench.bench_etl --help`.

Shared machines are noisy, so every figure is measured next to a floor taken in the same run:
`psql \\copy` of the same file into a plain table of eight text columns (the least work any
loader has to do). Each round runs, in this order, the floor, the hand-written PostgreSQL
reference (bench/reference_pg.sql), the PostgreSQL end-to-end load, the hand-written DuckDB
reference (bench/reference_duckdb.py), the SQLite end-to-end load, the bare imports of a load's
libraries, the incremental load (the real file's last day into a SQLite warehouse holding the
rest, built once before the rounds, untimed) and the memory loads, so drift hits all of them
alike; each load's ratio to its reference is taken within the round (issue #20). After each
end-to-end load, the same database writes that load's rows again by itself (bench/write_floor.py:
no Python, no parsing), the least time any loader of this warehouse can take. The report
shows medians over the rounds and, for the ratios, the median of each round's own ratio. The
big (--scale) file is loaded only in the last --scale-repeat rounds (default 1) to keep the
default run within a few minutes: its peak memory barely varies between runs.

Every load is the real CLI in a child process (`python main.py ... etl --format json`) on a
fresh warehouse. Wall time is the whole child process (start-up included); peak memory is the
child's maximum resident set (`/usr/bin/time -f %M`, or psutil polling where that is missing).

Scratch objects, all dropped again at the end (unless --keep-files), nothing else touched: in
database `rdp_bench` (created if missing) the table `public.bench_copy_floor` and the schemas
`rdp_bench_warehouse` (the PostgreSQL warehouse, reached through search_path in the URL, as the
tests do), `rdp_bench_writes` (its copy) and `rdp_bench_reference` (the PostgreSQL reference's);
a temporary folder holding the SQLite warehouses, the DuckDB reference's file, the generated
extracts and the incremental line's two slices of the real file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import compile_project, references, write_floor

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REAL = Path(os.environ.get("RDP_REAL_DATASET") or REPO_ROOT.parent / "shared" / "datasets" / "online_retail.csv")
RESULTS_DIR = REPO_ROOT / "bench" / "results"

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
BENCH_DB = "rdp_bench"
PG_URL = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{BENCH_DB}"
FLOOR_TABLE = "bench_copy_floor"
FLOOR_COLUMNS = ("invoice_no", "stock_code", "description", "quantity", "invoice_date", "unit_price", "customer_id", "country")
WAREHOUSE_SCHEMA = "rdp_bench_warehouse"  # recreated before every PostgreSQL load: a fresh warehouse, whatever tables it has


def schema_url(schema: str) -> str:
    """The bench database with `schema` first on the search_path (as the tests reach a warehouse)."""
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


PG_WAREHOUSE_URL = schema_url(WAREHOUSE_SCHEMA)

GENERATED_ROWS = 541_909  # the real extract's size: the 1x profile
SEED = 42
TIME_BIN = "/usr/bin/time"

# Targets are printed next to the figures; they are not assertions.
TARGET_PG_RATIO = 3.0
TARGET_SQLITE_RATIO = 6.0
TARGET_PEAK_MB = 400.0
TARGET_SCALE_GROWTH = 1.2
# Issue #20: ours against the hand-written references and the bare imports, same rounds.
TARGET_VS_PG_REFERENCE, MOONSHOT_VS_PG_REFERENCE = 1.0, 0.7
TARGET_VS_DUCKDB_REFERENCE, MOONSHOT_VS_DUCKDB_REFERENCE = 3.0, 2.0
TARGET_INCREMENTAL = 1.5

KINDS = (
    "floor",
    "pg_reference",
    "postgresql",
    "pg_writes",
    "duckdb_reference",
    "sqlite",
    "sqlite_writes",
    "imports",
    "incremental",
    "memory_1x",
    "memory_nx",
)
LOADS = ("postgresql", "sqlite")
REFERENCE = {"postgresql": "pg_reference", "sqlite": "duckdb_reference", "incremental": "imports"}  # ours -> its reference
WRITES = {"postgresql": "pg_writes", "sqlite": "sqlite_writes"}  # each load's own database floor (bench/write_floor.py)
WRITES_URL = schema_url(write_floor.WRITES_SCHEMA)


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


@dataclass
class Child:
    """One finished child process."""

    wall_s: float
    peak_kb: int | None
    stdout: str
    stderr: str


@dataclass
class Sample:
    """One measurement of one round."""

    kind: str
    round: int
    wall_s: float
    peak_mb: float | None
    rows: int
    duration_s: float | None = None
    rows_per_s: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    run: dict | None = None
    counts: dict[str, int] = field(default_factory=dict)  # star table -> rows, after the load (untimed)


# -- child processes ------------------------------------------------------------------------


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def run_child(cmd: list[str], what: str, env: dict[str, str] | None = None, stdin: Path | None = None) -> Child:
    """Run `cmd` to completion (reading `stdin`, a file, if given); its wall time and peak RSS.
    Raises BenchError if it fails."""
    with stdin.open("rb") if stdin else open(os.devnull, "rb") as feed:
        if Path(TIME_BIN).exists():
            child, rc = _run_with_time(cmd, env, feed)
        else:
            child, rc = _run_with_polling(cmd, env, feed)
    if rc != 0:
        raise BenchError(f"{what} failed (exit code {rc}).\ncommand: {' '.join(cmd)}\nstderr:\n{_tail(child.stderr)}")
    return child


def _run_with_time(cmd: list[str], env: dict[str, str] | None, feed) -> tuple[Child, int]:
    with tempfile.NamedTemporaryFile("r", prefix="rdp-bench-time-", suffix=".txt") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [TIME_BIN, "-f", "%M", "-o", out.name, *cmd], stdin=feed, capture_output=True, text=True, cwd=REPO_ROOT, env=env
        )
        wall = time.perf_counter() - start
        report = [line for line in Path(out.name).read_text().splitlines() if line.strip()]
    peak = int(report[-1]) if report and report[-1].strip().isdigit() else None
    return Child(wall, peak, proc.stdout, proc.stderr), proc.returncode


def _run_with_polling(cmd: list[str], env: dict[str, str] | None, feed) -> tuple[Child, int]:
    try:
        import psutil
    except ImportError:
        psutil = None
    peak = [0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=feed, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)

    def poll() -> None:
        try:
            handle = psutil.Process(proc.pid)
            while proc.poll() is None:
                peak[0] = max(peak[0], handle.memory_info().rss)
                time.sleep(0.01)
        except psutil.Error:
            pass

    poller = threading.Thread(target=poll, daemon=True) if psutil else None
    if poller:
        poller.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if poller:
        poller.join()
    return Child(wall, peak[0] // 1024 if poller else None, stdout, stderr), proc.returncode


def _project_on_path() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


# -- PostgreSQL scratch database ------------------------------------------------------------


def _psql_base(database: str) -> list[str]:
    return ["psql", "-X", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database, "-v", "ON_ERROR_STOP=1", "-w"]


def psql(sql: str, database: str = BENCH_DB) -> str:
    """Run `sql` with psql (untimed admin work); its unaligned, tuples-only output."""
    proc = subprocess.run([*_psql_base(database), "-q", "-At", "-c", sql], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"psql failed on database {database!r}: {sql}\n{_tail(proc.stderr)}")
    return proc.stdout.strip()


def ensure_bench_database() -> None:
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{BENCH_DB}'", "postgres") != "1":
        psql(f"CREATE DATABASE {BENCH_DB}", "postgres")


def fresh_warehouse() -> None:
    """Drop and recreate the warehouse schema (the load creates its tables in it)."""
    psql(f"DROP SCHEMA IF EXISTS {WAREHOUSE_SCHEMA} CASCADE; CREATE SCHEMA {WAREHOUSE_SCHEMA}")


def drop_warehouse() -> None:
    psql(f"DROP SCHEMA IF EXISTS {WAREHOUSE_SCHEMA} CASCADE")


def drop_floor_table() -> None:
    psql(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")


def drop_reference_schema() -> None:
    psql(f"DROP SCHEMA IF EXISTS {references.REFERENCE_SCHEMA} CASCADE")


def pg_star_counts(schema: str) -> dict[str, int]:
    values = psql(references.star_counts_sql(schema)).split("|")
    return dict(zip(references.STAR_TABLES, map(int, values), strict=True))


def sqlite_star_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in references.STAR_TABLES}
    conn.close()
    return counts


# -- measurements ---------------------------------------------------------------------------


def measure_floor(source: Path, rnd: int) -> Sample:
    """psql \\copy of the file into a fresh table of eight text columns; the whole psql process is timed."""
    columns = ", ".join(f"{c} text" for c in FLOOR_COLUMNS)
    psql(f"DROP TABLE IF EXISTS {FLOOR_TABLE}; CREATE TABLE {FLOOR_TABLE} ({columns})")
    path = str(source.resolve()).replace("'", "''")
    copy = f"\\copy {FLOOR_TABLE} FROM '{path}' WITH (FORMAT csv, HEADER true)"
    env = os.environ | {"PGCLIENTENCODING": "UTF8"}
    child = run_child([*_psql_base(BENCH_DB), "-c", copy], "psql \\copy (the floor)", env)
    match = re.search(r"COPY (\d+)", child.stdout)
    if not match:
        raise BenchError(f"psql \\copy printed no row count:\n{_tail(child.stdout)}\n{_tail(child.stderr)}")
    rows = int(match.group(1))
    return Sample("floor", rnd, child.wall_s, _mb(child.peak_kb), rows, rows_per_s=rows / child.wall_s)


def measure_pg_reference(rnd: int, source: Path, rows: int | None) -> Sample:
    """bench/reference_pg.sql into a fresh schema, the file on psql's standard input; the whole psql process is timed."""
    schema = references.REFERENCE_SCHEMA
    psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    env = os.environ | {"PGCLIENTENCODING": "UTF8"}
    child = run_child(references.pg_reference_command(_psql_base(BENCH_DB), schema), "PostgreSQL reference load", env, stdin=source)
    counts = pg_star_counts(schema)
    drop_reference_schema()
    return Sample("pg_reference", rnd, child.wall_s, _mb(child.peak_kb), rows or 0, counts=counts)


def measure_duckdb_reference(rnd: int, source: Path, workdir: Path, rows: int | None) -> Sample:
    """bench/reference_duckdb.py into a new DuckDB file, timed as a child process (start and import duckdb included)."""
    target = workdir / "reference.duckdb"
    remove_sqlite(target)  # the file and its .wal
    child = run_child(references.duckdb_reference_command(source, target), "DuckDB reference load")
    try:
        counts = {k: int(v) for k, v in json.loads(child.stdout).items()}
    except (json.JSONDecodeError, AttributeError, ValueError):
        raise BenchError(f"the DuckDB reference printed no counts:\n{_tail(child.stdout)}\n{_tail(child.stderr)}") from None
    remove_sqlite(target)
    return Sample("duckdb_reference", rnd, child.wall_s, _mb(child.peak_kb), rows or 0, counts=counts)


def measure_imports(rnd: int) -> Sample:
    """`python -c "import pandas, pyarrow.csv, ..."`: the incremental line's baseline."""
    child = run_child(references.imports_command(), "the bare imports")
    return Sample("imports", rnd, child.wall_s, _mb(child.peak_kb), 0)


def prepare_incremental(plan: Plan, console: Console) -> None:
    """The real file minus its last day into a SQLite warehouse (untimed, once); the last day as the extract."""
    folder = plan.workdir / "incremental"
    folder.mkdir()
    rest, lastday, day, rest_rows, day_rows = references.split_last_day(plan.real, folder)
    console.print(f"incremental: {rest_rows:,} rows before {day} loaded as the warehouse (untimed); the extract holds {day_rows:,} rows")
    base = folder / "base.db"
    load = measure_load("incremental", 0, sqlite_url(base), rest, rest_rows)
    plan.incremental = {"base": base, "extract": lastday, "day": str(day), "rows": day_rows, "base_rows": rest_rows,
                        "base_load_s": round(load.wall_s, 2)}  # fmt: skip


def measure_incremental(plan: Plan, rnd: int) -> Sample:
    """A day's extract into a copy of the warehouse holding the rest of the file, as a timed child (process included)."""
    db = plan.workdir / "incremental.db"
    remove_sqlite(db)
    base = plan.incremental["base"]
    for leftover in base.parent.glob(base.name + "*"):
        shutil.copyfile(leftover, db.with_name(db.name + leftover.name[len(base.name) :]))
    sample = measure_load("incremental", rnd, sqlite_url(db), plan.incremental["extract"], plan.incremental["rows"])
    remove_sqlite(db)
    return sample


def measure_load(kind: str, rnd: int, url: str, source: Path, expected_rows: int | None) -> Sample:
    """`python main.py --database-url URL etl --source SOURCE --format json` as a timed child."""
    cmd = [sys.executable, "main.py", "--database-url", url, "etl", "--source", str(source), "--format", "json"]
    what = f"{kind} load of {source.name}"
    child = run_child(cmd, what)
    run = _parse_run(child, what)
    _check_run(run, what, expected_rows)
    return Sample(
        kind, rnd, child.wall_s, _mb(child.peak_kb), run["rows_read"], run["duration_s"], run["rows_per_s"], run.get("timings") or {}, run
    )


def _parse_run(child: Child, what: str) -> dict:
    try:
        return json.loads(child.stdout)
    except json.JSONDecodeError:
        raise BenchError(
            f"{what}: the output is not one JSON object.\nstdout:\n{_tail(child.stdout)}\nstderr:\n{_tail(child.stderr)}"
        ) from None


def _check_run(run: dict, what: str, expected_rows: int | None) -> None:
    if run.get("status") != "success":
        raise BenchError(f"{what}: status {run.get('status')!r}, not 'success': {run.get('message')}")
    read = run["rows_read"]
    accounted = run["rows_loaded"] + run["rows_quarantined"] + run["rows_already_loaded"]
    if accounted != read:
        raise BenchError(f"{what}: {read} rows read but {accounted} accounted for")
    if run["rows_already_loaded"]:
        raise BenchError(f"{what}: {run['rows_already_loaded']} rows were already loaded; the warehouse was not fresh")
    if expected_rows is not None and read != expected_rows:
        raise BenchError(f"{what}: read {read:,} rows but the file holds {expected_rows:,}")


def _setup(url: str) -> None:
    """`python main.py setup` on a new warehouse (untimed)."""
    proc = subprocess.run([sys.executable, "main.py", "--database-url", url, "setup"], capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise BenchError(f"setup of the writes-floor warehouse failed:\n{_tail(proc.stderr)}")


def measure_pg_writes(rnd: int, workdir: Path, loaded_rows: int) -> Sample:
    """psql copying every table of the just-loaded warehouse into a fresh one, plus the ETL's ANALYZE of the fact (one timed psql process)."""
    _project_on_path()
    schema = write_floor.WRITES_SCHEMA
    psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    _setup(WRITES_URL)
    tables = write_floor.warehouse_tables()
    psql(write_floor.postgresql_clear(tables))
    from config.settings import DatabaseSettings
    from database.engine import make_engine

    loaded = make_engine(DatabaseSettings(url=PG_WAREHOUSE_URL))
    with loaded.connect() as conn:
        partitions = write_floor.partition_statements(conn)
    loaded.dispose()
    script = workdir / "pg_writes.sql"
    script.write_text(write_floor.postgresql_script(WAREHOUSE_SCHEMA, tables, partitions))
    child = run_child([*_psql_base(BENCH_DB), "-q", "-f", str(script)], "psql writes floor")
    _check_copied(int(psql(f"SELECT COUNT(*) FROM {schema}.fact_sales")), loaded_rows, "PostgreSQL")
    return Sample("pg_writes", rnd, child.wall_s, _mb(child.peak_kb), loaded_rows)


def measure_sqlite_writes(rnd: int, loaded: Path, loaded_rows: int) -> Sample:
    """sqlite3 copying every table of the just-loaded SQLite warehouse into a fresh file (timed as one process)."""
    _project_on_path()
    fresh = loaded.with_name("sqlite_writes.db")
    remove_sqlite(fresh)
    _setup(sqlite_url(fresh))
    tables = write_floor.warehouse_tables()
    write_floor.sqlite_clear(fresh, tables)
    script = loaded.with_name("sqlite_writes.sql")
    script.write_text(write_floor.sqlite_script(loaded, tables))
    if shutil.which("sqlite3"):
        cmd = ["sqlite3", str(fresh), f".read {script}"]
    else:  # no sqlite3 shell: the same script through Python's sqlite3 module (adds the interpreter's start)
        code = "import sqlite3, sys; sqlite3.connect(sys.argv[1], isolation_level=None).executescript(open(sys.argv[2]).read())"
        cmd = [sys.executable, "-S", "-c", code, str(fresh), str(script)]
    child = run_child(cmd, "sqlite3 writes floor")
    with sqlite3.connect(fresh) as conn:
        copied = conn.execute("SELECT COUNT(*) FROM fact_sales").fetchone()[0]
    conn.close()
    _check_copied(copied, loaded_rows, "SQLite")
    remove_sqlite(fresh)
    return Sample("sqlite_writes", rnd, child.wall_s, _mb(child.peak_kb), loaded_rows)


def _check_copied(copied: int, loaded: int, backend: str) -> None:
    if copied != loaded:
        raise BenchError(f"{backend} writes floor: {copied:,} facts copied but the load wrote {loaded:,}")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def remove_sqlite(path: Path) -> None:
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()


# -- the run --------------------------------------------------------------------------------


@dataclass
class Plan:
    """What to measure, from the command line."""

    kinds: tuple[str, ...]
    repeat: int
    real: Path
    scale: int
    scale_repeat: int
    keep_files: bool
    workdir: Path
    generated: dict[str, dict] = field(default_factory=dict)
    incremental: dict = field(default_factory=dict)


def make_plan(args: argparse.Namespace) -> Plan:
    kinds = {
        None: KINDS,
        "copy": ("floor",),
        "postgresql": ("floor", "pg_reference", "postgresql", "pg_writes"),
        "sqlite": ("floor", "duckdb_reference", "sqlite", "sqlite_writes"),
        "references": ("floor", "pg_reference", "postgresql", "duckdb_reference", "sqlite"),
        "incremental": ("imports", "incremental"),
        "memory": ("memory_1x", "memory_nx"),
    }[args.only]
    real = args.real.resolve()
    if any(k in kinds for k in ("floor", "postgresql", "sqlite", "incremental")) and not real.is_file():
        raise BenchError(f"the real extract {real} does not exist; pass its path with --real (or set RDP_REAL_DATASET)")
    if "duckdb_reference" in kinds:
        try:
            importlib.metadata.version("duckdb")
        except importlib.metadata.PackageNotFoundError:
            raise BenchError(
                "the DuckDB reference needs duckdb, a benchmark-only dependency: pip install -r bench/requirements.txt"
            ) from None
    workdir = Path(tempfile.mkdtemp(prefix="rdp-bench-"))
    return Plan(kinds, args.repeat, real, args.scale, min(args.scale_repeat, args.repeat), args.keep_files, workdir)


def generate_inputs(plan: Plan, console: Console) -> None:
    """Write the 1x and Nx synthetic extracts once (same seed, same profile)."""
    _project_on_path()
    from sampledata.generator import generate_sales

    free = shutil.disk_usage(plan.workdir).free
    need = GENERATED_ROWS * (plan.scale + 1) * 200  # about 85 bytes a CSV line, ~110 in SQLite
    if free < need:
        raise BenchError(f"{plan.workdir} has {free / 2**30:.1f} GiB free; the memory runs need about {need / 2**30:.1f} GiB")
    for key, rows in (("memory_1x", GENERATED_ROWS), ("memory_nx", GENERATED_ROWS * plan.scale)):
        path = plan.workdir / f"generated-{rows}.csv"
        console.print(f"generating {rows:,} rows (seed {SEED}) into {path} …")
        result = generate_sales(path, rows, SEED)
        plan.generated[key] = {"path": path, "rows": rows, "bytes": path.stat().st_size, "seconds": round(result.seconds, 2)}


def warm_file_cache(path: Path) -> None:
    """Read the file once so the first round does not pay for a cold page cache."""
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def run_round(plan: Plan, rnd: int, floor_rows: int | None) -> list[Sample]:
    """One round, each reference right before its own load: floor, PostgreSQL reference, ours into
    PostgreSQL (and its writes floor), DuckDB reference, ours into SQLite (and its writes floor),
    the bare imports, the incremental load, the memory loads."""
    samples: list[Sample] = []
    if "floor" in plan.kinds:
        samples.append(measure_floor(plan.real, rnd))
        floor_rows = samples[-1].rows
    if "pg_reference" in plan.kinds:
        samples.append(measure_pg_reference(rnd, plan.real, floor_rows))
    if "postgresql" in plan.kinds:
        fresh_warehouse()
        samples.append(measure_load("postgresql", rnd, PG_WAREHOUSE_URL, plan.real, floor_rows))
        samples[-1].counts = pg_star_counts(WAREHOUSE_SCHEMA)
        if "pg_writes" in plan.kinds:
            samples.append(measure_pg_writes(rnd, plan.workdir, samples[-1].run["rows_loaded"]))
    if "duckdb_reference" in plan.kinds:
        samples.append(measure_duckdb_reference(rnd, plan.real, plan.workdir, floor_rows))
    samples += run_sqlite_loads(plan, rnd, floor_rows, ("sqlite",))
    if "imports" in plan.kinds:
        samples.append(measure_imports(rnd))
    if "incremental" in plan.kinds:
        samples.append(measure_incremental(plan, rnd))
    return samples + run_sqlite_loads(plan, rnd, floor_rows, ("memory_1x", "memory_nx"))


def run_sqlite_loads(plan: Plan, rnd: int, floor_rows: int | None, kinds: tuple[str, ...]) -> list[Sample]:
    samples: list[Sample] = []
    for kind in kinds:
        if kind not in plan.kinds or (kind == "memory_nx" and rnd <= plan.repeat - plan.scale_repeat):
            continue
        db = plan.workdir / f"{kind}.db"
        remove_sqlite(db)
        source, rows = (plan.real, floor_rows) if kind == "sqlite" else (plan.generated[kind]["path"], plan.generated[kind]["rows"])
        samples.append(measure_load(kind, rnd, sqlite_url(db), source, rows))
        if kind == "sqlite":
            samples[-1].counts = sqlite_star_counts(db)
        if kind == "sqlite" and "sqlite_writes" in plan.kinds:
            samples.append(measure_sqlite_writes(rnd, db, samples[-1].run["rows_loaded"]))
        if not plan.keep_files:
            remove_sqlite(db)
    return samples


def run_all(plan: Plan, console: Console) -> list[Sample]:
    samples: list[Sample] = []
    floor_rows = None
    for rnd in range(1, plan.repeat + 1):
        started = time.perf_counter()
        got = run_round(plan, rnd, floor_rows)
        floor_rows = next((s.rows for s in got if s.kind == "floor"), floor_rows)
        samples += got
        figures = ", ".join(f"{s.kind} {s.wall_s:.2f} s" for s in got)
        console.print(f"round {rnd}/{plan.repeat} ({time.perf_counter() - started:.0f} s): {figures}")
    return samples


# -- machine facts --------------------------------------------------------------------------


def machine_facts(uses_pg: bool) -> dict:
    facts = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_total_gb": round(_total_memory() / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql_server": psql("SHOW server_version", "postgres") if uses_pg else None,
        "psql_client": subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip() if uses_pg else None,
        "peak_memory_by": "/usr/bin/time -f %M" if Path(TIME_BIN).exists() else "psutil polling (10 ms)",
    }
    for package in ("pandas", "pyarrow", "SQLAlchemy", "psycopg2-binary", "duckdb"):
        try:
            facts[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts[package] = None
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        import psutil

        return psutil.virtual_memory().total


def source_hashes() -> dict[str, str]:
    """SHA-256 of each project Python file (tests and bench excluded), to see whether the code changed mid-run."""
    hashes = {}
    for path in sorted(REPO_ROOT.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        if relative.parts[0] in ("tests", "bench", "venv") or relative.parts[0].startswith("."):
            continue
        hashes[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def fingerprint(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


# -- summary --------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _median_sample(samples: list[Sample]) -> Sample:
    """The run whose wall time is the median (the lower middle one for an even count)."""
    ordered = sorted(samples, key=lambda s: s.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def summarise(samples: list[Sample]) -> dict[str, dict]:
    floors = {s.round: s.wall_s for s in samples if s.kind == "floor"}
    summary: dict[str, dict] = {}
    for kind in KINDS:
        runs = [s for s in samples if s.kind == kind]
        if not runs:
            continue
        paired = [s.wall_s / floors[s.round] for s in runs if s.round in floors and kind in (*LOADS, *WRITES.values(), *REFERENCE.values())]
        writes = {s.round: s.wall_s for s in samples if s.kind == WRITES.get(kind)}
        over_writes = [s.wall_s / writes[s.round] for s in runs if s.round in writes]
        reference = {s.round: s.wall_s for s in samples if s.kind == REFERENCE.get(kind)}
        over_reference = [s.wall_s / reference[s.round] for s in runs if s.round in reference]
        summary[kind] = {
            "runs": len(runs),
            "rows": runs[0].rows,
            "wall_s": _median([s.wall_s for s in runs]),
            "wall_s_all": [round(s.wall_s, 3) for s in runs],
            "duration_s": _median([s.duration_s for s in runs]),
            "outside_run_s": _median([None if s.duration_s is None else s.wall_s - s.duration_s for s in runs]),
            "rows_per_s": _median([s.rows_per_s for s in runs]),
            "peak_mb": _median([s.peak_mb for s in runs]),
            "peak_mb_all": [None if s.peak_mb is None else round(s.peak_mb, 1) for s in runs],
            "ratio_to_floor": _median(paired),
            "ratio_to_floor_all": [round(r, 2) for r in paired],
            "ratio_to_writes": _median(over_writes),
            "ratio_to_writes_all": [round(r, 2) for r in over_writes],
            "ratio_to_reference": _median(over_reference),
            "ratio_to_reference_all": [round(r, 2) for r in over_reference],
            "counts": runs[-1].counts,
            "median_run_timings": _median_sample(runs).timings,
            "median_run_duration_s": _median_sample(runs).duration_s,
        }
    return summary


def evaluate_targets(summary: dict[str, dict], scale: int) -> list[dict]:
    targets = []

    def add(name: str, measured: float | None, limit: float, unit: str) -> None:
        if measured is None:
            return
        met = measured <= limit
        off = f"{(1 - measured / limit) * 100:.0f}% headroom" if met else f"missed: {measured / limit:.2f}× the limit"
        targets.append({"target": name, "measured": round(measured, 2), "limit": limit, "unit": unit, "met": met, "by": off})

    vs_pg = summary.get("postgresql", {}).get("ratio_to_reference")
    add(f"PostgreSQL end to end ≤ {TARGET_VS_PG_REFERENCE:g}× hand-written SQL load", vs_pg, TARGET_VS_PG_REFERENCE, "×")
    add(f"PostgreSQL end to end ≤ {MOONSHOT_VS_PG_REFERENCE:g}× hand-written SQL load (moonshot)", vs_pg, MOONSHOT_VS_PG_REFERENCE, "×")
    vs_duck = summary.get("sqlite", {}).get("ratio_to_reference")
    add(f"SQLite end to end ≤ {TARGET_VS_DUCKDB_REFERENCE:g}× hand-written DuckDB load", vs_duck, TARGET_VS_DUCKDB_REFERENCE, "×")
    add(
        f"SQLite end to end ≤ {MOONSHOT_VS_DUCKDB_REFERENCE:g}× hand-written DuckDB load (moonshot)",
        vs_duck,
        MOONSHOT_VS_DUCKDB_REFERENCE,
        "×",
    )
    add(
        f"incremental day (SQLite) ≤ {TARGET_INCREMENTAL:g}× bare imports",
        summary.get("incremental", {}).get("ratio_to_reference"),
        TARGET_INCREMENTAL,
        "×",
    )
    add(f"PostgreSQL end to end ≤ {TARGET_PG_RATIO:g}× floor", summary.get("postgresql", {}).get("ratio_to_floor"), TARGET_PG_RATIO, "×")
    add(f"SQLite end to end ≤ {TARGET_SQLITE_RATIO:g}× floor", summary.get("sqlite", {}).get("ratio_to_floor"), TARGET_SQLITE_RATIO, "×")
    # The same limits applied to the databases writing the load's rows alone: can any loader meet them?
    add(f"PostgreSQL writes alone ≤ {TARGET_PG_RATIO:g}× floor", summary.get("pg_writes", {}).get("ratio_to_floor"), TARGET_PG_RATIO, "×")
    add(
        f"SQLite writes alone ≤ {TARGET_SQLITE_RATIO:g}× floor",
        summary.get("sqlite_writes", {}).get("ratio_to_floor"),
        TARGET_SQLITE_RATIO,
        "×",
    )
    for kind, label in (
        ("postgresql", "PostgreSQL"),
        ("sqlite", "SQLite"),
        ("memory_1x", "SQLite 1× generated"),
        ("memory_nx", f"SQLite {scale}× generated"),
    ):
        add(f"peak memory ≤ {TARGET_PEAK_MB:g} MB ({label})", summary.get(kind, {}).get("peak_mb"), TARGET_PEAK_MB, "MB")
    one, many = summary.get("memory_1x", {}).get("peak_mb"), summary.get("memory_nx", {}).get("peak_mb")
    if one and many:
        add(f"{scale}× peak ≤ {TARGET_SCALE_GROWTH:g} × 1× peak", many / one, TARGET_SCALE_GROWTH, "×")
    return targets


# -- report ---------------------------------------------------------------------------------


def _label(kind: str, scale: int) -> str:
    return {
        "floor": "psql \\copy floor (real file)",
        "pg_reference": "PostgreSQL reference (hand-written SQL, psql)",
        "duckdb_reference": "DuckDB reference (hand-written, child process)",
        "imports": "bare imports (python -c 'import pandas, …')",
        "incremental": "SQLite incremental: last day into the rest",
        "postgresql": "PostgreSQL end to end (real file)",
        "pg_writes": "PostgreSQL writes alone (psql: same rows, ANALYZE of the fact)",
        "sqlite": "SQLite end to end (real file)",
        "sqlite_writes": "SQLite writes alone (sqlite3: same rows)",
        "memory_1x": "SQLite 1× generated",
        "memory_nx": f"SQLite {scale}× generated",
    }[kind]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def figures_table(summary: dict[str, dict], scale: int) -> Table:
    table = Table(
        title="ETL load benchmark (medians)",
        title_justify="left",
        caption="outside run: wall - in-process (interpreter start, imports, checksum, schema set-up, exit); "
        "rows/s: rows / psql wall for the floor, rows_read / in-process duration for loads; "
        "ratio: wall / floor wall of the same round; × writes: end-to-end wall / the same database writing the same rows alone; "
        "× reference: ours / its reference of the same round (PostgreSQL: the hand-written SQL load; SQLite: the hand-written "
        "DuckDB load; incremental: the bare imports)",
        caption_justify="left",
    )
    for name in (
        "measurement",
        "runs",
        "rows",
        "wall s",
        "in-process s",
        "outside run s",
        "rows/s",
        "peak MB",
        "ratio to floor",
        "× writes",
        "× reference",
    ):
        table.add_column(name, justify="left" if name == "measurement" else "right")
    for kind, s in summary.items():
        ratio = "1.00" if kind == "floor" else _fmt(s["ratio_to_floor"], ".2f")
        table.add_row(
            _label(kind, scale), str(s["runs"]), f"{s['rows']:,}", _fmt(s["wall_s"], ".2f"), _fmt(s["duration_s"], ".2f"),
            _fmt(s["outside_run_s"], ".2f"), _fmt(s["rows_per_s"], ",.0f"), _fmt(s["peak_mb"], ".0f"), ratio,
            _fmt(s["ratio_to_writes"], ".2f"), _fmt(s["ratio_to_reference"], ".2f"),
        )  # fmt: skip
    return table


def references_table(summary: dict[str, dict]) -> Table | None:
    """Ours beside its reference of the same rounds (issue #20), with the per-round ratios."""
    pairs = [
        ("PostgreSQL, real file", "postgresql", TARGET_VS_PG_REFERENCE, MOONSHOT_VS_PG_REFERENCE),
        ("SQLite, real file (reference: DuckDB)", "sqlite", TARGET_VS_DUCKDB_REFERENCE, MOONSHOT_VS_DUCKDB_REFERENCE),
        ("SQLite, last day into the rest (reference: bare imports)", "incremental", TARGET_INCREMENTAL, None),
    ]
    rows = [(name, kind, t, m) for name, kind, t, m in pairs if kind in summary and REFERENCE[kind] in summary]
    if not rows:
        return None
    table = Table(title="Ours against the references (medians; ratio: median of each round's own ratio)", title_justify="left")
    for name in ("load", "reference wall s", "ours wall s", "ours / reference", "each round", "target", "moonshot"):
        table.add_column(name, justify="left" if name == "load" else "right")
    for name, kind, target, moonshot in rows:
        ours, ref = summary[kind], summary[REFERENCE[kind]]
        ratio = ours["ratio_to_reference"]
        mark = "" if ratio is None else (" [green]met[/]" if ratio <= target else " [red]missed[/]")
        table.add_row(
            name, _fmt(ref["wall_s"], ".2f"), _fmt(ours["wall_s"], ".2f"), _fmt(ratio, ".2f") + mark,
            ", ".join(f"{r:.2f}" for r in ours["ratio_to_reference_all"]), f"≤ {target:g}",
            "—" if moonshot is None else f"≤ {moonshot:g}",
        )  # fmt: skip
    return table


def counts_table(summary: dict[str, dict]) -> Table | None:
    """Star table counts of ours and the references (last round), side by side: the sanity check."""
    kinds = [k for k in ("postgresql", "pg_reference", "sqlite", "duckdb_reference") if summary.get(k, {}).get("counts")]
    if not kinds:
        return None
    table = Table(
        title="Rows in the star (last round)",
        title_justify="left",
        caption="the references drop what they reject; ours quarantines it. Facts should differ by what ours quarantines "
        "for rules the references do not apply",
        caption_justify="left",
    )
    table.add_column("table")
    for kind in kinds:
        table.add_column(_label(kind, 0).split(" (")[0], justify="right")
    for t in references.STAR_TABLES:
        table.add_row(t, *[f"{summary[k]['counts'].get(t, 0):,}" for k in kinds])
    return table


def check_counts(summary: dict[str, dict], samples: list[Sample], console: Console) -> None:
    """Warn when a reference's facts differ from ours by more than ours quarantines beyond the references' rules."""
    for ours, ref in (("postgresql", "pg_reference"), ("sqlite", "duckdb_reference")):
        if not (summary.get(ours, {}).get("counts") and summary.get(ref, {}).get("counts")):
            continue
        run = next(s.run for s in reversed(samples) if s.kind == ours)
        beyond = references.beyond_reference_rules(run.get("quarantine_by_reason"))
        ours_facts, ref_facts = summary[ours]["counts"]["fact_sales"], summary[ref]["counts"]["fact_sales"]
        if not 0 <= ref_facts - ours_facts <= beyond:
            console.print(
                f"[bold yellow]warning:[/] {_label(ref, 0)} wrote {ref_facts:,} facts, ours {ours_facts:,}; ours quarantined "
                f"{beyond:,} rows for rules the reference does not apply"
            )


def targets_table(targets: list[dict]) -> Table:
    table = Table(title="Targets (reported, not asserted)", title_justify="left")
    for name in ("target", "measured", "met", "margin"):
        table.add_column(name, justify="left" if name in ("target", "margin") else "right")
    for t in targets:
        table.add_row(t["target"], f"{t['measured']:.2f} {t['unit']}", "[green]yes[/]" if t["met"] else "[red]NO[/]", t["by"])
    return table


def stages_table(summary: dict[str, dict], scale: int) -> Table | None:
    kinds = [k for k in ("postgresql", "sqlite", "memory_nx") if k in summary]
    if not kinds:
        return None
    table = Table(
        title="Per-stage seconds of the median run (read+clean on the main thread, write_* on the writer thread, the rest on the loader "
        "thread or, after the last chunk, on the main thread)",
        title_justify="left",
    )
    table.add_column("stage")
    for kind in kinds:
        table.add_column(f"{_label(kind, scale).split(' (')[0]} s", justify="right")
        table.add_column("% of run", justify="right")
    stages: list[str] = []
    for kind in kinds:
        stages += [st for st in summary[kind]["median_run_timings"] if st not in stages]
    for stage in [
        *stages,
        "main thread (read+clean)",
        "loader thread and after the last chunk",
        "writer thread (write_*)",
        "in-process duration",
    ]:
        cells = []
        for kind in kinds:
            value = stage_value(summary[kind], stage)
            duration = summary[kind]["median_run_duration_s"] or 0
            cells += [_fmt(value, ".2f"), _fmt(100 * value / duration if value is not None and duration else None, ".0f")]
        table.add_row(stage, *cells)
    return table


def stage_value(s: dict, stage: str) -> float | None:
    timings = s["median_run_timings"]
    main = ("read", "clean")
    if stage == "main thread (read+clean)":
        return sum(v for k, v in timings.items() if k in main)
    if stage == "loader thread and after the last chunk":
        return sum(v for k, v in timings.items() if k not in main and not k.startswith("write_"))
    if stage == "writer thread (write_*)":
        return sum(v for k, v in timings.items() if k.startswith("write_"))
    if stage == "in-process duration":
        return s["median_run_duration_s"]
    return timings.get(stage)


def machine_table(facts: dict) -> Table:
    table = Table(title="Machine", title_justify="left", show_header=False)
    table.add_column("fact")
    table.add_column("value")
    for key, value in facts.items():
        if value is not None:
            table.add_row(key, str(value))
    return table


def write_results(payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"etl-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_etl", description="Load benchmark of the ETL against a psql \\copy floor measured in the same run."
    )
    parser.add_argument(
        "--only",
        choices=["sqlite", "postgresql", "references", "incremental", "copy", "memory"],
        help="measure one thing (sqlite/postgresql also run the floor and their reference; references: the floor, both "
        "references and both loads; incremental: the last day into a warehouse of the rest, against the bare imports)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help=f"the real extract (default {DEFAULT_REAL})")
    parser.add_argument("--scale", type=int, default=10, help="size of the big generated file, in multiples of 541,909 rows (default 10)")
    parser.add_argument(
        "--scale-repeat",
        type=int,
        default=1,
        help="rounds that also load the big file, the last ones (default 1: its peak memory varies by ~2%% between runs "
        "and each load takes over a minute; at most --repeat)",
    )
    parser.add_argument("--keep-files", action="store_true", help="keep the temporary folder and the scratch objects in rdp_bench")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.scale_repeat < 1:
        parser.error("--scale-repeat must be at least 1")
    if args.scale < 2:
        parser.error("--scale must be at least 2")
    return args


def cleanup(plan: Plan, console: Console) -> None:
    if plan.keep_files:
        console.print(f"kept: {plan.workdir}, and in database {BENCH_DB} {FLOOR_TABLE} and schema {WAREHOUSE_SCHEMA}")
        return
    shutil.rmtree(plan.workdir, ignore_errors=True)
    try:
        if "floor" in plan.kinds:
            drop_floor_table()
        if "postgresql" in plan.kinds:
            drop_warehouse()
        if "pg_writes" in plan.kinds:
            psql(f"DROP SCHEMA IF EXISTS {write_floor.WRITES_SCHEMA} CASCADE")
        if "pg_reference" in plan.kinds:
            drop_reference_schema()
    except BenchError as exc:
        console.print(f"[yellow]warning:[/] could not drop the scratch tables: {exc}")


def benchmark(args: argparse.Namespace, console: Console) -> int:
    started = datetime.now()
    compile_project()
    plan = make_plan(args)
    try:
        uses_pg = any(k in plan.kinds for k in ("floor", "postgresql", "pg_reference"))
        if uses_pg:
            ensure_bench_database()
        facts = machine_facts(uses_pg)
        console.print(machine_table(facts))
        if "memory_1x" in plan.kinds:
            generate_inputs(plan, console)
        if plan.real.is_file():
            warm_file_cache(plan.real)
        if "incremental" in plan.kinds:
            prepare_incremental(plan, console)
        code_before, began = source_hashes(), time.perf_counter()
        samples = run_all(plan, console)
        elapsed, code_after = time.perf_counter() - began, source_hashes()
    finally:
        cleanup(plan, console)
    changed = sorted(f for f in code_before.keys() | code_after.keys() if code_before.get(f) != code_after.get(f))
    if changed:
        console.print(f"[bold yellow]warning:[/] code changed during the run (figures may mix versions): {', '.join(changed)}")
    summary = summarise(samples)
    targets = evaluate_targets(summary, plan.scale)
    console.print(figures_table(summary, plan.scale))
    stages = stages_table(summary, plan.scale)
    for extra in (stages, references_table(summary), counts_table(summary)):
        if extra is not None:
            console.print(extra)
    check_counts(summary, samples, console)
    console.print(targets_table(targets))
    payload = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.bench_etl " + " ".join(sys.argv[1:]),
        "settings": {
            "repeat": plan.repeat,
            "only": args.only,
            "real": str(plan.real),
            "scale": plan.scale,
            "scale_repeat": plan.scale_repeat,
            "seed": SEED,
            "postgresql_url": PG_WAREHOUSE_URL,
        },
        "machine": facts,
        "code": {
            "fingerprint_before": fingerprint(code_before),
            "fingerprint_after": fingerprint(code_after),
            "changed_during_run": changed,
        },
        "generated": {k: {kk: str(vv) if isinstance(vv, Path) else vv for kk, vv in v.items()} for k, v in plan.generated.items()},
        "incremental": {k: str(v) if isinstance(v, Path) else v for k, v in plan.incremental.items()},
        "measure_seconds": round(elapsed, 1),
        "summary": summary,
        "targets": targets,
        "samples": [asdict(s) for s in samples],
    }
    console.print(f"measured in {elapsed:.0f} s; results written to {write_results(payload).relative_to(REPO_ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    try:
        return benchmark(args, console)
    except BenchError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]benchmark failed:[/] {escape(str(exc))}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
