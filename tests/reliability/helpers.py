"""Tools of the reliability trials: CLI subprocesses, warehouse states, derived inputs, the report.

Two ways of comparing warehouses:
- `exact_state`: every column of every row of every data table (the content metadata.checksums
  covers, hashed in bulk). A killed run must leave the warehouse exactly as it was, so "before"
  is judged with it.
- `logical_state`: the same tables with what necessarily differs between two complete runs of the
  same input taken out: run ids become the run's rank among successful loads and replays,
  serial surrogate keys (customer_key, product_key, quarantine_id, history_id: PostgreSQL
  sequences do not roll back, so a killed run burns values) become natural keys, and the
  load timestamp `quarantined_at` is left out. "After" is judged with it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from database.locks import WAREHOUSE_LOCK_ID, _scoped_key, warehouse_lock
from metadata.checksums import DATA_TABLES
from tests.conftest import PG_URL, ROOT

# Read at import: the autouse fixture of tests/conftest.py removes RDP_* variables during tests.
REPORT_PATH = os.environ.get("RDP_RELIABILITY_REPORT")
CLI_TIMEOUT_S = 240  # a run that takes longer than this has hung


def engine_for(url: str) -> Engine:
    """An engine without a pool (nothing stays connected between checks)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(parsed, poolclass=NullPool)


@contextmanager
def connected(url: str) -> Iterator[Engine]:
    engine = engine_for(url)
    try:
        yield engine
    finally:
        engine.dispose()


def backend_of(url: str) -> str:
    return "postgresql" if url.startswith("postgres") else "sqlite"


def query(url: str, sql: str, **params: object) -> list[tuple]:
    with connected(url) as engine, engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def wait_for(condition: Callable[[], object], timeout: float = 60, interval: float = 0.05, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# -- the CLI as a child process -----------------------------------------------------------------


class CliProcess:
    """`python main.py --database-url URL ARGS...` as a child process; output goes to files."""

    def __init__(self, url: str | None, args: list[str], folder: Path, name: str, env: dict[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.out_path, self.err_path = folder / f"{name}.out", folder / f"{name}.err"
        self.env = os.environ | {"RDP_LOGGING__FILE": str(folder / f"{name}.log")} | (env or {})
        base = ["--database-url", url] if url else []
        self.command = [sys.executable, str(ROOT / "main.py"), *base, *args]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self.command, cwd=folder, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.killed_at: float | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def kill_at(self, seconds: float) -> bool:
        """SIGKILL `seconds` after the start; False when the process had already exited."""
        delay = seconds - self.elapsed
        if delay > 0:
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=delay)
        if self.proc.poll() is not None:
            return False
        self.killed_at = self.elapsed
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    def wait(self, timeout: float = CLI_TIMEOUT_S) -> int:
        """The exit code; a process still running after `timeout` is killed and the test fails (a hang)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"{self.name} hung: still running after {timeout:g} s; stderr: {self.stderr[-2000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(url: str | None, args: list[str], folder: Path, name: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S):
    """Run a command to its end; (exit code, process)."""
    proc = CliProcess(url, args, folder, name, env)
    return proc.wait(timeout), proc


def assert_clean_failure(proc: CliProcess, code: int, *fragments: str) -> str:
    """Exit 1, one `Error: ...` line naming what failed, no traceback. Returns the error line."""
    err = proc.stderr
    assert code == 1, f"{proc.name}: exit {code}, expected 1; stderr: {err[-2000:]}"
    assert "Traceback" not in err, f"{proc.name} printed a traceback: {err[-3000:]}"
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, f"{proc.name}: expected one Error: line, got {errors}; stderr: {err[-2000:]}"
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), f"{proc.name}: {fragment!r} not in {errors[0]!r}"
    return errors[0]


# -- PostgreSQL sessions -----------------------------------------------------------------------

_SCHEMA_BACKENDS = """
SELECT DISTINCT l.pid FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE n.nspname = :schema AND l.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
"""


def schema_of(url: str) -> str:
    with connected(url) as engine, engine.connect() as conn:
        return conn.execute(text("select current_schema()")).scalar_one()


def backends_in_schema(url: str, schema: str, mode: str | None = None, table_prefix: str | None = None) -> list[int]:
    """Sessions (other than ours) holding locks on tables of `schema`: the runs working on that warehouse."""
    sql = _SCHEMA_BACKENDS + (" AND l.mode = :mode" if mode else "") + (" AND c.relname LIKE :prefix" if table_prefix else "")
    return sorted(p for (p,) in query(url, sql, schema=schema, mode=mode, prefix=f"{table_prefix}%"))


def terminate(url: str, pids: list[int]) -> None:
    """pg_terminate_backend: the server ends these sessions as if their connection broke."""
    for pid in pids:
        query(url, "SELECT pg_terminate_backend(:pid)", pid=pid)


@contextmanager
def hold_warehouse_lock(url: str) -> Iterator[None]:
    """Hold the warehouse write lock from the test process: runs started meanwhile wait for it."""
    with connected(url) as engine, warehouse_lock(engine, 30):
        yield


def at_the_lock(url: str, pids: list[int]) -> int:
    """How many runs wait at the warehouse lock while the test holds it: on SQLite the processes
    (of `pids`) that opened the lock file; on PostgreSQL the sessions polling the advisory lock of
    this warehouse, less the test's own."""
    if backend_of(url) == "sqlite":
        path = f"{make_url(url).database}.{WAREHOUSE_LOCK_ID:x}.lock"
        return sum(1 for pid in pids if path in _open_files(pid))
    with connected(url) as engine, engine.connect() as conn:
        key = _scoped_key(conn, WAREHOUSE_LOCK_ID)
        polling = conn.execute(
            text("SELECT COUNT(*) FROM pg_stat_activity WHERE query = :q AND pid <> pg_backend_pid()"),
            {"q": f"select pg_try_advisory_lock({key})"},
        ).scalar_one()
    return int(polling) - 1


def _open_files(pid: int) -> set[str]:
    folder = Path(f"/proc/{pid}/fd")
    out = set()
    for fd in folder.glob("*") if folder.exists() else []:
        with suppress(OSError):
            out.add(os.readlink(fd))
    return out


def settle(url: str, timeout: float = 120) -> None:
    """Wait until nothing works on the warehouse any more: on PostgreSQL the session of a killed
    client can outlive it (a statement runs to its end, a COMMIT sent just before the kill still
    commits), so wait until no session holds locks on its tables; then take and release the
    warehouse write lock."""
    if backend_of(url) == "postgresql":
        schema = schema_of(url)
        wait_for(lambda: not backends_in_schema(url, schema), timeout, 0.1, "the sessions of a killed run to end")
    with connected(url) as engine, warehouse_lock(engine, timeout):
        pass


@contextmanager
def extra_pg_warehouse() -> Iterator[str]:
    """One more PostgreSQL warehouse (a fresh schema, dropped afterwards), like the pg_url fixture's."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = engine_for(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# -- warehouse states --------------------------------------------------------------------------


def exact_state(url: str) -> dict[str, str]:
    """Every column of every row of every data table (what metadata.checksums covers), hashed in
    bulk: five times faster than warehouse_checksums, which matters when it runs after every kill."""
    with connected(url) as engine:
        present = set(inspect(engine).get_table_names())
        return {table: _digest(_frame(engine, f"SELECT * FROM {table}")) for table in DATA_TABLES if table in present}


def _frame(engine: Engine, sql: str) -> pd.DataFrame:
    """A whole query result, fast: COPY ... TO STDOUT on PostgreSQL, the driver's cursor on SQLite
    (both several times faster than SQLAlchemy rows)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
            columns = [d[0] for d in cursor.description]
            buffer = io.BytesIO()
            cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", buffer)
            if not buffer.getbuffer().nbytes:
                return pd.DataFrame({c: pd.Series(dtype="str") for c in columns})
            buffer.seek(0)
            options = pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()),  # the server's own text: nothing lost to type guessing
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,  # NULL stays apart from ''
            )
            return pacsv.read_csv(buffer, pacsv.ReadOptions(column_names=columns), convert_options=options).to_pandas()
        cursor.execute(sql)
        return pd.DataFrame.from_records(cursor.fetchall(), columns=[d[0] for d in cursor.description])
    finally:
        raw.close()


def logical_state(url: str) -> dict[str, str]:
    """A digest per data table that two complete runs of the same input agree on (module docstring)."""
    with connected(url) as engine:
        runs = _frame(engine, "SELECT run_id, kind, status FROM etl_runs ORDER BY run_id")
        versions = runs[runs["kind"].isin(["load", "replay"]) & (runs["status"] == "success")]["run_id"].tolist()
        rank = {int(r): f"v{i + 1}" for i, r in enumerate(versions)}
        rank |= {int(r.run_id): f"{r.kind}:{r.status}" for r in runs.itertuples() if int(r.run_id) not in rank}
        customers = _frame(engine, "SELECT customer_key, customer_id, effective_date FROM dim_customers")
        customer = {int(k): f"{c}@{e}" for k, c, e in customers.itertuples(index=False)}
        products = _frame(engine, "SELECT product_key, stock_code FROM dim_products")
        product = {int(k): code for k, code in products.itertuples(index=False)}
        present = set(inspect(engine).get_table_names())
        return {
            table: _table_digest(_frame(engine, f"SELECT * FROM {table}"), rank, customer, product)
            for table in DATA_TABLES
            if table in present
        }


def _table_digest(frame: pd.DataFrame, rank: dict, customer: dict, product: dict) -> str:
    if "history_id" in frame:
        # What matters is the order of a run's changes to one row (a rollback restores the first);
        # the ids themselves, and the order across rows (the scan order of an INSERT ... SELECT), do not.
        frame = frame.iloc[pd.to_numeric(frame["history_id"]).argsort(kind="stable")].reset_index(drop=True)
        row = [c for c in ("customer_key", "product_key") if c in frame]
        frame["history_id"] = frame.groupby(["run_id", *row], sort=False).cumcount()
    frame = frame.drop(columns=[c for c in ("quarantine_id", "quarantined_at") if c in frame])
    for col, names in (("run_id", rank), ("customer_key", customer), ("product_key", product)):
        for column in [c for c in frame.columns if c == col or (col == "run_id" and c.endswith("_run_id"))]:
            frame[column] = pd.to_numeric(frame[column]).map(names)
    return _digest(frame)


def _digest(frame: pd.DataFrame) -> str:
    """The rows as a multiset (no sort needed): their count and two independent sums of 64-bit row hashes."""
    sums = [
        int(pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy().sum(dtype="uint64"))
        for key in ("rdp-reliabilityA", "rdp-reliabilityB")
    ]
    return f"{len(frame)}:{','.join(frame.columns)}:{sums[0]:016x}{sums[1]:016x}"


def line_ids(url: str) -> set[int]:
    """Line identities the warehouse holds, as facts or in the quarantine."""
    rows = query(url, "SELECT line_id FROM fact_sales UNION ALL SELECT line_id FROM etl_quarantine")
    return {int(r) for (r,) in rows}


def line_integrity(url: str) -> dict[str, int]:
    """Duplicated line identities (must be 0): within the facts, within the quarantine, across both."""
    ((facts, distinct_facts),) = query(url, "SELECT COUNT(*), COUNT(DISTINCT line_id) FROM fact_sales")
    ((quarantined, distinct_quarantined),) = query(url, "SELECT COUNT(*), COUNT(DISTINCT line_id) FROM etl_quarantine")
    (both,) = query(url, "SELECT COUNT(*) FROM fact_sales f JOIN etl_quarantine q ON q.line_id = f.line_id")[0]
    return {
        "facts": int(facts),
        "quarantined": int(quarantined),
        "duplicate_facts": int(facts) - int(distinct_facts),
        "duplicate_quarantined": int(quarantined) - int(distinct_quarantined),
        "fact_and_quarantined": int(both),
    }


def ledger(url: str) -> list[dict]:
    with connected(url) as engine, engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                text(
                    "SELECT run_id, kind, status, source, message, rows_read, rows_loaded, rows_quarantined, rows_already_loaded, "
                    "rolled_back_by, started_at, finished_at FROM etl_runs ORDER BY run_id"
                )
            )
        ]


def max_run_id(url: str) -> int:
    return int(query(url, "SELECT COALESCE(MAX(run_id), 0) FROM etl_runs")[0][0])


def assert_accounted(run: dict) -> None:
    """read = loaded + quarantined + already loaded."""
    total = run["rows_loaded"] + run["rows_quarantined"] + run["rows_already_loaded"]
    assert run["rows_read"] == total, f"run {run['run_id']}: {run['rows_read']} read but {total} accounted for"


# -- derived inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedInputs:
    """Two extracts derived from the real file (under a temporary folder only, never in the repo)."""

    base: Path  # every STEP-th line of the real file: spans the whole year
    trial: Path  # another every-STEP-th, a tenth of `base` again, and customers moving country mid-year
    moved_customers: int


def derive_inputs(real: Path, folder: Path, step: int = 20, seed: int = 8) -> DerivedInputs:
    """A prior load (`base`) and the load the trials kill (`trial`), so that a trial updates rows the
    warehouse already holds: SCD1 product prices, SCD2 expiries, re-pointed facts of the moved
    customers, aggregates of dates that already had sales. Lines of base in trial are 'already loaded'."""
    folder.mkdir(parents=True, exist_ok=True)
    header, *body = real.read_bytes().rstrip(b"\n").split(b"\n")
    base_lines = body[0::step]
    fresh = list(range(step // 3, len(body), step))
    overlap = list(range(0, len(body), step * 10))
    rows = {i: next(csv.reader([body[i].decode()])) for i in fresh}
    base_customers: dict[str, set[str]] = {}
    for line in base_lines:
        fields = next(csv.reader([line.decode()]))
        base_customers.setdefault(fields[6], set()).add(fields[7])
    candidates = sorted(c for c, countries in base_customers.items() if c and len(countries) == 1)
    moved = set(random.Random(seed).sample(candidates, min(25, len(candidates))))
    for fields in rows.values():
        if fields[6] in moved and fields[4] >= "2011-07-01":
            fields[7] = "Iceland" if fields[7] != "Iceland" else "Norway"
    base = folder / "base.csv"
    base.write_bytes(header + b"\n" + b"\n".join(base_lines) + b"\n")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i in sorted(set(fresh) | set(overlap)):
        if i in rows:
            writer.writerow(rows[i])
        else:
            out.write(body[i].decode() + "\n")
    trial = folder / "trial.csv"
    trial.write_bytes(header + b"\n" + out.getvalue().encode())
    return DerivedInputs(base, trial, len(moved))


# -- the report --------------------------------------------------------------------------------


def record(section: str, key: str, payload: object) -> None:
    """Add a result to the JSON report named by RDP_RELIABILITY_REPORT (when set)."""
    record_all(section, {key: payload})


def record_all(section: str, results: dict[str, object]) -> None:
    """Add several results of one section to the JSON report (one read and one write of it)."""
    if not REPORT_PATH or not results:
        return
    path = Path(REPORT_PATH)
    data = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
    data.setdefault(section, {}).update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def publish(section: str, title: str, rows: list[dict], columns: list[str]) -> None:
    """Print a module's result rows as a table and add them to the JSON report, each keyed by
    its first two columns (back end / case)."""
    if rows:
        print(f"\n{title}\n" + render(rows, columns))
        record_all(section, {f"{row[columns[0]]}/{row[columns[1]]}": row for row in rows})


def render(rows: list[dict], columns: list[str]) -> str:
    """A plain text table (printed by the tests: `pytest -s` shows it)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def as_dicts(items: list) -> list[dict]:
    return [asdict(i) for i in items]
