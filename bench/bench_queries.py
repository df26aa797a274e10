"""Query benchmark: the standard analytics queries on the real file, uncached and cached, under
20 concurrent clients, and the cache's hit rate over a repeated-query mix.

    python -m bench.bench_queries [--no-sqlite] [--redis redis://127.0.0.1:6379/0] [--write-docs]

Per backend (PostgreSQL in database `rdp_qbench`, created and loaded with the real file if
needed; SQLite in bench/results/rdp_qbench.db, likewise):
1. each standard query uncached, in both forms (aggregate tables / plain star join): p50, p95
   of the time `QueryService.run_named` reports (inside the process, connection pooled);
2. each standard query cached: a child process fills the cache, then this process answers
   from it: the first answer (it opens the connection) and p50, p95 of the next ones;
3. 20 concurrent clients (threads sharing one service, pool size and overflow from the config)
   running the standard queries uncached for --seconds, then cached: queries/s, errors;
4. a repeated-query mix (weighted standard queries with parameter variants, seeded), with a
   load in the middle (a 200-line slice of the real file: a new data version, no new facts),
   from an empty cache: hit rate, and after the load every answer compared with the warehouse's
   own (stale answers: must be 0);
5. the plan of the date-filtered standard query: partitions scanned.
The PostgreSQL tables are ANALYZEd first (a fresh load leaves the partitioned fact without
statistics; see docs/queries.md). Results: printed, bench/results/queries-*.json, and with
--write-docs the results block of docs/queries.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from config.cache import CacheSettings  # noqa: E402
from config.settings import load_settings  # noqa: E402
from database.engine import make_engine  # noqa: E402
from performance.analyze import analyze_named  # noqa: E402
from performance.queries import STANDARD_QUERIES  # noqa: E402
from performance.service import QueryService  # noqa: E402
from utils.errors import PlatformError  # noqa: E402

DEFAULT_REAL = REPO_ROOT.parent / "shared" / "datasets" / "online_retail.csv"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DOC = REPO_ROOT / "docs" / "queries.md"
PG_DB = "rdp_qbench"
PG_URL = f"postgresql://postgres@127.0.0.1:5432/{PG_DB}"
SQLITE_PATH = RESULTS_DIR / "rdp_qbench.db"
MARK_START, MARK_END = "<!-- bench_queries:start -->", "<!-- bench_queries:end -->"

TARGET_UNCACHED_P50_MS = 50.0
TARGET_CACHED_P50_MS = 2.0
TARGET_CLIENT_QPS = 200.0
TARGET_HIT_RATE = 0.80

MIX = [  # (query, parameters, weight): what analysts ask, most often the plain questions
    ("revenue_by_month", {}, 20), ("revenue_by_country", {}, 15), ("top_products", {}, 15),
    ("top_products", {"limit": "20"}, 5), ("top_products", {"limit": "50"}, 3), ("top_products", {"limit": "5"}, 2),
    ("return_rate_by_product", {}, 8), ("return_rate_by_product", {"limit": "50"}, 3), ("customer_rfm", {}, 8),
    ("daily_sales", {}, 10), ("daily_sales", {"month": "2011-11"}, 4), ("daily_sales", {"month": "2011-10"}, 3),
    ("daily_sales", {"month": "2011-09"}, 2), ("daily_sales", {"month": "2010-12"}, 2),
]  # fmt: skip

console = Console()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main_argv(url: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main.py"), "--database-url", url, *args]


# ---------------------------------------------------------------------------------------------
# warehouses


def ensure_pg(real: Path, url: str = PG_URL) -> str:
    """Create the database of `url` when missing, load the real file into it once, ANALYZE."""
    parsed = make_url(url).set(drivername="postgresql+psycopg2")
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": parsed.database}).first():
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    ensure_loaded(url, real)
    engine = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return url


def ensure_sqlite(real: Path) -> str:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{SQLITE_PATH}"
    ensure_loaded(url, real)
    return url


def ensure_loaded(url: str, real: Path) -> None:
    engine = make_engine(load_settings(overrides={"database": {"url": url}}).database)
    try:
        with engine.connect() as conn:
            loaded = conn.execute(text("SELECT COUNT(*) FROM etl_runs WHERE status = 'success' AND rows_loaded > 500000")).scalar()
    except DBAPIError:  # no ledger yet: a new warehouse
        loaded = 0
    finally:
        engine.dispose()
    if not loaded:
        console.print(f"loading {real} into {url} ...")
        subprocess.run(main_argv(url, "etl", "--source", str(real), "--format", "json"), check=True, capture_output=True, cwd=REPO_ROOT)


# ---------------------------------------------------------------------------------------------
# measurements


def service(url: str, cache: CacheSettings) -> QueryService:
    settings = load_settings(overrides={"database": {"url": url}})
    return QueryService(make_engine(settings.database), cache)


def uncached(url: str, runs: int) -> dict:
    out = {}
    for form, use_aggregates in (("aggregate", True), ("fact", False)):
        svc = service(url, CacheSettings(enabled=False, use_aggregates=use_aggregates))
        for name in STANDARD_QUERIES:
            svc.run_named(name)  # warm: connection, plan cache of the server
            times = [svc.run_named(name).elapsed_ms for _ in range(runs)]
            out.setdefault(name, {})[form] = {"p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95), "form": svc.run_named(name).form}
        svc.close()
        svc.engine.dispose()
    return out


def fill_in_child(url: str, cache: CacheSettings) -> None:
    subprocess.run(
        [sys.executable, "-m", "bench.bench_queries", "--fill", url, "--cache-json", json.dumps(asdict(cache))], check=True, cwd=REPO_ROOT
    )


def fill(url: str, cache_json: str) -> None:
    svc = service(url, CacheSettings(**json.loads(cache_json)))
    for name in STANDARD_QUERIES:
        svc.run_named(name)
    svc.close()


def cached(url: str, cache: CacheSettings, runs: int) -> dict:
    clear(cache)
    fill_in_child(url, cache)
    out: dict = {}
    for name in STANDARD_QUERIES:  # the first answer of a new process: opens the connection and the store
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_queries", "--first", url, "--query", name, "--cache-json", json.dumps(asdict(cache))],
            check=True, capture_output=True, text=True, cwd=REPO_ROOT,
        )  # fmt: skip
        out[name] = json.loads(done.stdout)
    svc = service(url, cache)
    for name in STANDARD_QUERIES:
        svc.run_named(name)
        results = [svc.run_named(name) for _ in range(runs)]
        assert all(r.cache == "hit" for r in results), f"{name}: expected cache hits"
        times = [r.elapsed_ms for r in results]
        out[name] |= {"p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95), "rows": len(results[0].rows)}
    svc.close()
    svc.engine.dispose()
    return out


def first(url: str, name: str, cache_json: str) -> None:
    start = time.perf_counter()
    svc = service(url, CacheSettings(**json.loads(cache_json)))  # opens the cache store
    opened = (time.perf_counter() - start) * 1000
    result = svc.run_named(name)
    assert result.cache == "hit", f"{name}: the cache filled by the earlier process did not answer"
    print(json.dumps({"first_ms": result.elapsed_ms, "open_ms": opened}))
    svc.close()


def clear(cache: CacheSettings) -> None:
    from performance.cache import open_cache

    store = open_cache(cache, REPO_ROOT)
    store.clear()
    store.close()


def clients(url: str, cache: CacheSettings, n: int, seconds: float, use_cache: bool) -> dict:
    svc = service(url, cache)
    names = list(STANDARD_QUERIES)
    if use_cache:
        for name in names:
            svc.run_named(name)
    counts, errors, lock = [0] * n, [], threading.Lock()
    peak = [0]
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        k = i
        while time.monotonic() < deadline:
            try:
                svc.run_named(names[k % len(names)], use_cache=use_cache)
                counts[i] += 1
            except (PlatformError, SQLAlchemyError) as exc:  # pool timeouts included: counted and reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
            k += 1
            pool = svc.engine.pool
            if hasattr(pool, "checkedout"):
                peak[0] = max(peak[0], pool.checkedout())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    pool = svc.engine.pool
    size = getattr(pool, "size", lambda: None)()
    overflow = getattr(pool, "_max_overflow", None)
    svc.close()
    svc.engine.dispose()
    total = sum(counts)
    return {
        "clients": n, "seconds": round(elapsed, 2), "queries": total, "qps": total / elapsed, "errors": len(errors),
        "error_samples": sorted(set(errors))[:5], "peak_connections": peak[0], "pool_size": size, "max_overflow": overflow,
    }  # fmt: skip


def mix(url: str, cache: CacheSettings, real: Path, total: int, seed: int) -> dict:
    clear(cache)
    svc = service(url, cache)
    rng = random.Random(seed)
    draws = rng.choices(MIX, weights=[w for *_, w in MIX], k=total)
    statuses: list[str] = []
    for i, (name, params, _w) in enumerate(draws):
        if i == total // 2:
            load_slice(url, real)
        statuses.append(svc.run_named(name, params).cache)
    stale = 0
    for name, params, _w in MIX:  # after the load: cached answer == the warehouse's answer
        a, b = svc.run_named(name, params), svc.run_named(name, params, use_cache=False)
        stale += a.rows != b.rows
    stats = svc.cache.stats().as_dict() if svc.cache else {}
    svc.close()
    svc.engine.dispose()
    hits = statuses.count("hit")
    return {"queries": total, "hits": hits, "hit_rate": hits / total, "distinct": len(MIX), "stale_answers": stale, "cache_stats": stats}


def load_slice(url: str, real: Path) -> None:
    """A new data version without new facts: the first 200 lines of the real file, loaded again."""
    folder = Path(tempfile.mkdtemp(prefix="rdp_qbench_"))
    part = folder / f"slice_{time.time_ns()}.csv"
    with open(real, encoding="utf-8", errors="replace") as src, open(part, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i > 200:
                break
            dst.write(line)
    done = subprocess.run(main_argv(url, "etl", "--source", str(part), "--format", "json"), capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"slice load failed: {done.stderr[-500:]}")
    part.unlink()
    folder.rmdir()


def pruning(url: str) -> dict:
    svc = service(url, CacheSettings(enabled=False, use_aggregates=False))  # the fact form: reads fact_sales by date_key
    a = analyze_named(svc, "daily_sales")
    svc.close()
    svc.engine.dispose()
    return {"query": a.label, "partitions": a.partitions, "scanned": a.partitions_scanned, "time_ms": a.time_ms}


def run_backend(name: str, url: str, args: argparse.Namespace, caches: dict[str, CacheSettings]) -> dict:
    console.rule(f"{name}: {url}")
    out: dict = {"url": url}
    out["uncached"] = uncached(url, args.uncached_runs)
    out["cached"] = {label: cached(url, c, args.cached_runs) for label, c in caches.items()}
    first_cache = next(iter(caches.values()))
    out["clients_uncached"] = clients(url, CacheSettings(enabled=False), args.clients, args.seconds, use_cache=False)
    out["clients_cached"] = clients(url, first_cache, args.clients, args.seconds, use_cache=True)
    out["mix"] = mix(url, first_cache, args.real, args.mix, args.seed)
    if name == "postgresql":
        out["pruning"] = pruning(url)
    return out


# ---------------------------------------------------------------------------------------------
# report


def render(results: dict) -> str:
    lines = [
        f"Run of {results['started']} on {results['machine']} (load average before the run: {results['loadavg']}).",
        "",
        f"Reproduce: `{results['command']}`",
        "",
    ]
    for backend, r in results["backends"].items():
        lines += [f"#### {backend}", "", "| query | uncached p50 / p95 ms (aggregate form) | uncached p50 / p95 ms (star join) | "
                  + " | ".join(f"cached {k}: first / p50 / p95 ms" for k in r["cached"]) + " | rows |",
                  "|---|---:|---:|" + "---:|" * len(r["cached"]) + "---:|"]  # fmt: skip
        for name in STANDARD_QUERIES:
            u = r["uncached"][name]
            agg, fact = u["aggregate"], u["fact"]
            agg_cell = f"{agg['p50_ms']:.1f} / {agg['p95_ms']:.1f}" if agg["form"] == "aggregate" else "(no aggregate form)"
            cells = [f"{c[name]['first_ms']:.2f} / {c[name]['p50_ms']:.2f} / {c[name]['p95_ms']:.2f}" for c in r["cached"].values()]
            rows = next(iter(r["cached"].values()))[name]["rows"]
            lines.append(f"| {name} | {agg_cell} | {fact['p50_ms']:.1f} / {fact['p95_ms']:.1f} | " + " | ".join(cells) + f" | {rows:,} |")
        cu, cc, m = r["clients_uncached"], r["clients_cached"], r["mix"]
        lines += [
            "",
            "- *first*: the first answer of a new process, from the cache another process filled; it opens the database "
            "connection. Before it the process opened the cache store (creating the service): "
            + ", ".join(f"{k} {statistics.median(c[n]['open_ms'] for n in STANDARD_QUERIES):.1f} ms" for k, c in r["cached"].items())
            + " (median; Redis includes importing redis-py). *p50 / p95*: the answers after the first.",
            f"- {cu['clients']} concurrent clients, uncached: **{cu['qps']:.1f} queries/s** ({cu['queries']:,} in {cu['seconds']} s), "
            f"{cu['errors']} errors, "
            + (
                f"at most {cu['peak_connections']} connections in use (pool {cu['pool_size']} + overflow {cu['max_overflow']})."
                if cu["pool_size"] is not None
                else "no pool (SQLite: one read-only connection per query)."
            ),
            f"- {cc['clients']} concurrent clients, cached: **{cc['qps']:.1f} queries/s**, {cc['errors']} errors.",
            f"- Repeated-query mix ({m['queries']} queries over {m['distinct']} distinct questions, one load halfway): "
            f"hit rate **{m['hit_rate']:.1%}**; stale answers after the load: **{m['stale_answers']}**.",
        ]
        if "pruning" in r:
            p = r["pruning"]
            lines.append(f"- Partition pruning: `{p['query']}` scanned {p['partitions']} partitions ({', '.join(p['scanned'])}).")
        lines.append("")
    return "\n".join(lines)


def replace_block(doc_path: Path, marks: tuple[str, str], block: str) -> None:
    """Put `block` between the two marker comments of a docs page (the benchmarks' results blocks)."""
    doc = doc_path.read_text(encoding="utf-8")
    start, end = doc.index(marks[0]) + len(marks[0]), doc.index(marks[1])
    doc_path.write_text(doc[:start] + "\n" + block + "\n" + doc[end:], encoding="utf-8")


def print_summary(results: dict) -> None:
    for backend, r in results["backends"].items():
        t = Table(title=f"{backend}: standard queries (ms)")
        for col in ("query", "agg p50", "agg p95", "star p50", "star p95", *[f"{k} p50" for k in r["cached"]], "target"):
            t.add_column(col)
        for name in STANDARD_QUERIES:
            u = r["uncached"][name]
            ok = min(u["aggregate"]["p50_ms"], u["fact"]["p50_ms"]) <= TARGET_UNCACHED_P50_MS and all(
                c[name]["p50_ms"] <= TARGET_CACHED_P50_MS for c in r["cached"].values()
            )
            t.add_row(
                name, f"{u['aggregate']['p50_ms']:.1f}", f"{u['aggregate']['p95_ms']:.1f}", f"{u['fact']['p50_ms']:.1f}",
                f"{u['fact']['p95_ms']:.1f}", *[f"{c[name]['p50_ms']:.2f}" for c in r["cached"].values()], "met" if ok else "missed",
            )  # fmt: skip
        console.print(t)
        console.print(
            f"clients uncached {r['clients_uncached']['qps']:.1f} q/s ({r['clients_uncached']['errors']} errors), "
            f"cached {r['clients_cached']['qps']:.1f} q/s; mix hit rate {r['mix']['hit_rate']:.1%}, stale {r['mix']['stale_answers']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--redis", help="also measure the cache on this Redis URL")
    parser.add_argument("--uncached-runs", type=int, default=15)
    parser.add_argument("--cached-runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mix", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write-docs", action="store_true", help="write the results block of docs/queries.md")
    parser.add_argument("--fill", help=argparse.SUPPRESS)
    parser.add_argument("--cache-json", help=argparse.SUPPRESS)
    parser.add_argument("--first", help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill(args.fill, args.cache_json)
        return
    if args.first:
        first(args.first, args.query, args.cache_json)
        return
    folder = Path(tempfile.mkdtemp(prefix="rdp_qbench_cache_"))
    caches = {"disk": CacheSettings(backend="disk", disk_path=str(folder / "cache"))}
    if args.redis:
        caches["redis"] = CacheSettings(backend="redis", redis_url=args.redis, redis_prefix=f"rdp-qbench-{os.getpid()}-")
    results = {
        "started": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} vCPU, Python {platform.python_version()}",
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": "python -m bench.bench_queries"
        + (f" --redis {args.redis}" if args.redis else "")
        + (" --no-sqlite" if args.no_sqlite else ""),
        "backends": {},
    }
    results["backends"]["postgresql"] = run_backend("postgresql", ensure_pg(args.real), args, caches)
    if not args.no_sqlite:
        results["backends"]["sqlite"] = run_backend("sqlite", ensure_sqlite(args.real), args, caches)
    shutil.rmtree(folder, ignore_errors=True)
    if args.redis:  # the bench's own keys, counters included
        import redis

        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=caches["redis"].redis_prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"queries-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2, default=lambda v: float(v) if isinstance(v, Decimal) else str(v)), encoding="utf-8")
    print_summary(results)
    block = render(results)
    console.print(block, markup=False, highlight=False)
    console.print(f"results: {out}")
    if args.write_docs:
        replace_block(DOC, (MARK_START, MARK_END), block)
        console.print(f"updated {DOC}")


if __name__ == "__main__":
    main()
