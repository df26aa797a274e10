"""Report benchmark: every `report` on the real file in PostgreSQL, uncached and cached, and the
HTML dashboard, against a baseline measured in the same run.

    python -m bench.bench_reports [--url URL] [--real PATH] [--runs 15] [--cached-runs 50] [--write-docs]

The warehouse is database `rdp_reports` on 127.0.0.1:5432 (created, and loaded with the real file
through `python main.py etl`, when it does not hold it yet), ANALYZEd first. Timings are taken in
the process, end to end: from calling the report function (a QueryService with a warm connection
pool) to the output text a script gets (`--format json`; the CSV file for `rfm --export`):
- uncached: the cache off, every query of the report asks the warehouse (p50, p95 of --runs);
- cached: one call fills a fresh disk cache, then p50, p95 of --cached-runs calls answered from it;
- table: rendering the report as the rich table a person sees (to a string, median of 3);
- command: one whole `report ... --format json` run in the process (CliRunner) from the filled
  cache: settings, engine, cache store and the first connection included (p50 of 5);
- baseline: `SELECT COUNT(*) FROM fact_sales` through the same service, uncached; every report
  is also given as a multiple of it.
The dashboard is timed built and written (uncached, then cached). Results: printed,
bench/results/reports-*.json and, with --write-docs, the results block of docs/reports.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.bench_queries import ensure_pg, pct, replace_block  # noqa: E402
from config.cache import CacheSettings  # noqa: E402
from config.settings import load_settings  # noqa: E402
from database.engine import make_engine  # noqa: E402
from performance.queries import NamedQuery  # noqa: E402
from performance.service import QueryService  # noqa: E402
from reports import analytics as a  # noqa: E402
from reports.dashboard import write_dashboard  # noqa: E402
from reports.output import to_csv, to_json, to_table  # noqa: E402

DEFAULT_REAL = REPO_ROOT.parent / "shared" / "datasets" / "online_retail.csv"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/rdp_reports"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DOC = REPO_ROOT / "docs" / "reports.md"
MARK_START, MARK_END = "<!-- bench_reports:start -->", "<!-- bench_reports:end -->"
TARGET_UNCACHED_MS, TARGET_CACHED_MS, TARGET_DASHBOARD_S = 300.0, 50.0, 3.0
BASELINE = NamedQuery("bench.count", "Baseline", "SELECT COUNT(*) FROM fact_sales", "SELECT COUNT(*) FROM fact_sales")

# (command as a user types it, the same report as a function of a service and use_cache)
REPORTS: list[tuple[str, Callable[[QueryService, bool], a.Report]]] = [
    ("sales", lambda s, c: a.sales_report(s, "month", use_cache=c)),
    ("sales --by week", lambda s, c: a.sales_report(s, "week", use_cache=c)),
    ("sales --by day --country 'United Kingdom'", lambda s, c: a.sales_report(s, "day", country="United Kingdom", use_cache=c)),
    ("sales --by quarter --from 2011-01-01 --to 2011-06-30", lambda s, c: a.sales_report(s, "quarter", date(2011, 1, 1), date(2011, 6, 30), use_cache=c)),
    ("products", lambda s, c: a.products_report(s, use_cache=c)),
    ("products --top 50 --by units --include-non-merchandise", lambda s, c: a.products_report(s, 50, "units", True, use_cache=c)),
    ("countries", lambda s, c: a.countries_report(s, use_cache=c)),
    ("customers", lambda s, c: a.customers_report(s, use_cache=c)),
    ("returns", lambda s, c: a.returns_report(s, use_cache=c)),
    ("returns --by country", lambda s, c: a.returns_report(s, "country", use_cache=c)),
    ("rfm", lambda s, c: a.rfm_report(s, use_cache=c)),
    ("rfm --export FILE", lambda s, c: a.rfm_with_customers(s, use_cache=c)[1]),
    ("cohorts", lambda s, c: a.cohorts_report(s, use_cache=c)),
]  # fmt: skip

console = Console()


def as_table(report: a.Report) -> str:
    out = io.StringIO()
    Console(file=out, width=400, soft_wrap=False).print(to_table(report))
    return out.getvalue()


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def cli_times(url: str, cache_dir: Path, command: str, runs: int = 5) -> list[float]:
    """A whole `report` command in the process, answered from the filled cache."""
    import shlex

    from main import cli

    args = ["--database-url", url, "report", *shlex.split(command.replace("FILE", str(cache_dir.parent / "rfm.csv"))), "--format", "json"]
    env = {"RDP_CACHE__DISK_PATH": str(cache_dir), "RDP_LOGGING__FILE": str(cache_dir.parent / "bench.log")}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
        times.append((time.perf_counter() - start) * 1000)
        assert result.exit_code == 0, result.output
    return times


def measure(url: str, runs: int, cached_runs: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="rdp_rbench_"))
    cache_dir = folder / "cache"
    settings = load_settings(overrides={"database": {"url": url}})
    engine = make_engine(settings.database)
    uncached = QueryService(engine, CacheSettings(enabled=False))
    cached = QueryService(engine, CacheSettings(backend="disk", disk_path=str(cache_dir)))
    try:
        uncached.run_queries([(BASELINE, {})], use_cache=False)  # warm the pool
        baseline = timed(lambda: uncached.run_queries([(BASELINE, {})], use_cache=False), runs)
        rows = {}
        for command, fn in REPORTS:
            output = to_csv if "--export" in command else to_json
            cold = timed(lambda fn=fn, output=output: output(fn(uncached, False)), runs)
            first = fn(cached, True)  # fills the cache
            warm = timed(lambda fn=fn, output=output: output(fn(cached, True)), cached_runs)
            table = timed(lambda first=first: as_table(first), 3) if "--export" not in command else [0.0]
            rows[command] = {
                "rows": len(first.rows), "form": first.form,
                "uncached_p50_ms": statistics.median(cold), "uncached_p95_ms": pct(cold, 0.95),
                "cached_p50_ms": statistics.median(warm), "cached_p95_ms": pct(warm, 0.95),
                "table_ms": statistics.median(table),
                "cli_cached_p50_ms": statistics.median(cli_times(url, cache_dir, command)),
            }  # fmt: skip
        page = folder / "dashboard.html"
        dash_cold = [write_dashboard(uncached, page, use_cache=False)["seconds"] for _ in range(3)]
        write_dashboard(cached, page)
        dash_warm = [write_dashboard(cached, page)["seconds"] for _ in range(5)]
        size = page.stat().st_size
    finally:
        uncached.close()
        cached.close()
        engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(baseline)
    for r in rows.values():
        r["ratio"] = r["uncached_p50_ms"] / base
    return {
        "baseline_p50_ms": base, "baseline_p95_ms": pct(baseline, 0.95), "reports": rows,
        "dashboard": {"uncached_s": statistics.median(dash_cold), "cached_s": statistics.median(dash_warm), "bytes": size},
    }  # fmt: skip


def render(results: dict) -> str:
    m = results["measured"]
    lines = [
        f"Run of {results['started']} on {results['machine']}, PostgreSQL, the real file loaded "
        f"(load average before the run: {results['loadavg']}).",
        "",
        f"Reproduce: `{results['command']}`",
        "",
        f"Baseline `SELECT COUNT(*) FROM fact_sales` through the same service, uncached: p50 {m['baseline_p50_ms']:.1f} ms, "
        f"p95 {m['baseline_p95_ms']:.1f} ms.",
        "",
        "| report | rows | form | uncached p50 / p95 ms | × baseline | cached p50 / p95 ms | rich table ms | whole command, cached, p50 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for command, r in m["reports"].items():
        table = f"{r['table_ms']:.0f}" if r["table_ms"] else "(CSV file)"
        lines.append(
            f"| `{command}` | {r['rows']:,} | {r['form']} | {r['uncached_p50_ms']:.1f} / {r['uncached_p95_ms']:.1f} | {r['ratio']:.1f} | "
            f"{r['cached_p50_ms']:.2f} / {r['cached_p95_ms']:.2f} | {table} | {r['cli_cached_p50_ms']:.0f} |"
        )
    d = m["dashboard"]
    lines += [
        "",
        f"Dashboard (build and write, {d['bytes']:,} bytes): uncached **{d['uncached_s']:.2f} s**, cached **{d['cached_s']:.3f} s** (median).",
        "",
    ]
    return "\n".join(lines)


def print_summary(results: dict) -> None:
    m = results["measured"]
    t = Table(title=f"report timings, ms (baseline p50 {m['baseline_p50_ms']:.1f} ms)")
    for col in ("report", "uncached p50", "p95", "x base", "cached p50", "p95", "table", "command cached", "targets"):
        t.add_column(col, no_wrap=col == "report")
    for command, r in m["reports"].items():
        ok = r["uncached_p50_ms"] <= TARGET_UNCACHED_MS and r["cached_p50_ms"] <= TARGET_CACHED_MS
        t.add_row(
            command, f"{r['uncached_p50_ms']:.1f}", f"{r['uncached_p95_ms']:.1f}", f"{r['ratio']:.1f}", f"{r['cached_p50_ms']:.2f}",
            f"{r['cached_p95_ms']:.2f}", f"{r['table_ms']:.0f}", f"{r['cli_cached_p50_ms']:.0f}", "met" if ok else "missed",
        )  # fmt: skip
    console.print(t)
    d = m["dashboard"]
    console.print(
        f"dashboard: uncached {d['uncached_s']:.2f} s, cached {d['cached_s']:.3f} s "
        f"({'met' if d['uncached_s'] <= TARGET_DASHBOARD_S else 'missed'} ≤ {TARGET_DASHBOARD_S:g} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL warehouse (created and loaded when needed)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cached-runs", type=int, default=50)
    parser.add_argument("--write-docs", action="store_true", help="write the results block of docs/reports.md")
    args = parser.parse_args()
    ensure_pg(args.real, args.url)
    results = {
        "started": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} vCPU, Python {platform.python_version()}",
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": "python -m bench.bench_reports" + ("" if args.url == DEFAULT_URL else f" --url {args.url}"),
        "measured": measure(args.url, args.runs, args.cached_runs),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"reports-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print_summary(results)
    block = render(results)
    if args.write_docs:
        replace_block(DOC, (MARK_START, MARK_END), block)
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
