"""Start-up budget of the command line (issue #21): each command's wall time beside the bare-import
baselines, with ratios and targets, measured in one run (the machine's noise cancels in ratios).

    python -m bench.bench_cli [--runs 5] [--sqlite sqlite:////path/w.db] [--postgres postgresql://...]

A = `python -c "import click, rich.console"`, B = `python -c "import sqlalchemy, click, rich.console"`.
Targets: help screens <= 4x A; cached `query --named` and `report sales` <= 1.5x B (each warehouse
given, its cache filled first); printing customer_rfm's rows (in process, to /dev/null): JSON or CSV
<= 50 ms more than one row, a table <= 250 ms more. The median of --runs runs of each.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from bench import compile_project

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GROUPS = ("config", "setup", "test", "etl", "runs", "quality", "quarantine", "alerts", "query", "performance", "schedule", "versions",
          "metadata", "docs", "report", "data")  # fmt: skip


def _once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - start


def paired(argv: list[str], baseline: list[str], env: dict[str, str], runs: int) -> tuple[float, float, float]:
    """The command and its baseline run alternately, `runs` times each: medians of both walls and
    of each round's ratio (a shared machine's load changes within a minute; a baseline measured
    once at the start would not see it)."""
    walls, bases = [], []
    for _ in range(runs):
        bases.append(_once(baseline, env))
        walls.append(_once(argv, env))
    ratios = [w / b for w, b in zip(walls, bases, strict=True)]
    return statistics.median(walls), statistics.median(bases), statistics.median(ratios)


def cli(*args: str) -> list[str]:
    return [PY, str(ROOT / "main.py"), *args]


def printing_ms(url: str, fmt: str, rows: int | None, runs: int) -> float:
    """Median ms of printing customer_rfm's answer (all rows, or the first `rows`) in this process."""
    sys.path.insert(0, str(ROOT))
    from config.settings import load_settings
    from database.engine import make_engine
    from performance.commands import _print_result
    from performance.service import QueryService

    settings = load_settings(None, {"database": {"url": url}})
    service = QueryService(make_engine(settings.database), settings.cache)
    try:
        result = service.run_named("customer_rfm", {})
    finally:
        service.close()
    if rows is not None:
        result.rows = result.rows[:rows]
    times = []
    with open(os.devnull, "w") as null:
        for _ in range(runs):
            sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
            start = time.perf_counter()
            with redirect_stdout(sink):
                err, sys.stderr = sys.stderr, null
                try:
                    _print_result(result, fmt)
                    sink.flush()
                finally:
                    sys.stderr = err
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sqlite", help="a loaded SQLite warehouse URL")
    parser.add_argument("--postgres", help="a loaded PostgreSQL warehouse URL")
    args = parser.parse_args()
    env = os.environ | {"COLUMNS": "80"}
    compile_project()
    a = [PY, "-c", "import click, rich.console"]
    b = [PY, "-c", "import sqlalchemy, click, rich.console"]
    lines = []  # label, wall, baseline name, baseline wall of the same rounds, ratio, target
    for label, argv in [("--help", cli("--help")), ("--version", cli("--version"))] + [(f"{g} --help", cli(g, "--help")) for g in GROUPS]:
        lines.append((label, "A", *paired(argv, a, env, args.runs), 4.0))
    for backend, url in (("sqlite", args.sqlite), ("postgresql", args.postgres)):
        if not url:
            continue
        for extra in (["query", "--named", "revenue_by_month"], ["report", "sales"]):
            subprocess.run(cli("--database-url", url, *extra), env=env, capture_output=True, check=True)  # fill the cache
            lines.append(
                (f"{' '.join(extra)} (cached, {backend})", "B", *paired(cli("--database-url", url, *extra), b, env, args.runs), 1.5)
            )
        for extra in (["config", "show"], ["schedule", "list"], ["versions", "list"], ["performance", "cache-stats"]):
            lines.append((f"{' '.join(extra)} ({backend})", "B", *paired(cli("--database-url", url, *extra), b, env, args.runs), None))
    print("A = python -c 'import click, rich.console'; B = python -c 'import sqlalchemy, click, rich.console'")
    print("each command alternates with its baseline; ratio: the median of each round's command / baseline")
    print(f"{'command':52} {'wall s':>7} {'base s':>7} {'ratio':>6} {'target':>9}  met")
    for label, base_name, seconds, base, ratio, target in lines:
        met = "" if target is None else ("yes" if ratio <= target else "NO")
        goal = "" if target is None else f"<={target}x {base_name}"
        print(f"{label:52} {seconds:7.3f} {base:7.3f} {ratio:5.2f}x {goal:>9}  {met}")
    url = args.postgres or args.sqlite
    if url:
        print(f"\nprinting customer_rfm in process ({url.split(':')[0]}), ms: all rows vs one row")
        for fmt, budget in (("json", 50), ("csv", 50), ("table", 250)):
            one, every = printing_ms(url, fmt, 1, args.runs), printing_ms(url, fmt, None, args.runs)
            print(
                f"  {fmt:6} one row {one:7.1f}  4,371 rows {every:7.1f}  more {every - one:7.1f}  target <= {budget}  {'yes' if every - one <= budget else 'NO'}"
            )


if __name__ == "__main__":
    main()
