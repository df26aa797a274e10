"""`query` (read-only SQL and the standard queries, through the cache) and the `performance`
group: `cache-stats`, `cache-clear`, `indexes`, `analyze`."""

from __future__ import annotations

import csv
import sys
from dataclasses import replace

import click

from utils.render import emit, json_bytes, plural, show, table, values_grid

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


def _service(app, cached: bool = True):
    from performance.service import QueryService

    settings = app.settings.cache
    return QueryService(app.engine, settings if cached else replace(settings, enabled=False))


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.UsageError(f"--param takes NAME=VALUE, got {pair!r}")
        out[name.strip()] = value
    return out


@click.command("query")
@click.argument("sql", required=False)
@click.option("--named", "name", metavar="NAME", help="run a standard query (see --list)")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="parameter of a standard query, e.g. limit=20")
@click.option("--list", "list_queries", is_flag=True, help="list the standard queries")
@click.option("--no-cache", is_flag=True, help="ask the warehouse even when the cache holds the answer")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_obj
def query_command(app, sql: str | None, name: str | None, params: tuple[str, ...], list_queries: bool, no_cache: bool, fmt: str) -> None:
    """Run read-only SQL, or a standard analytics query, answered from the cache when it can be.

    SQL runs in a read-only transaction with a statement timeout (cache.statement_timeout_s);
    writes, several statements and COPY are refused. A cached answer is never stale: the key
    holds the warehouse's data version, which every load, replay and rollback changes.

    \b
    Examples:
      python main.py query --named revenue_by_month
      python main.py query --named top_products --param limit=5 --format csv
      python main.py query "SELECT country, COUNT(*) AS customers FROM dim_customers GROUP BY country ORDER BY 2 DESC LIMIT 5"
    """
    if list_queries:
        _list(fmt)
        return
    if bool(sql) == bool(name):
        raise click.UsageError("give either SQL text or --named NAME (or --list)")
    if params and not name:
        raise click.UsageError("--param works with --named only")
    service = _service(app)
    try:
        result = service.run_named(name, _params(params), use_cache=not no_cache) if name else service.run_sql(sql, use_cache=not no_cache)
    finally:
        service.close()
    _print_result(result, fmt)


def _list(fmt: str) -> None:
    from performance.queries import STANDARD_QUERIES

    rows = [
        {
            "name": q.name,
            "title": q.title,
            "parameters": {p.name: {"default": p.default, "description": p.description} for p in q.params},
            "reads": "aggregate tables (fact_sales without them)" if q.aggregate_sql else "fact_sales",
            "description": q.description,
        }
        for q in STANDARD_QUERIES.values()
    ]
    shown = [
        {
            "name": r["name"],
            "parameters": ", ".join(f"{k}={v['default']}" for k, v in r["parameters"].items()),
            "description": r["description"],
        }
        for r in rows
    ]
    emit(rows, "json" if fmt == "json" else "table", table(shown, title="Standard queries: query --named NAME [--param NAME=VALUE]"))


def _print_result(result, fmt: str) -> None:
    """JSON and CSV straight from the rows (orjson; csv's own str() of dates and decimals); tables
    fitted to the width, plain beyond a few hundred rows (utils.render)."""
    status = f"{plural(len(result.rows), 'row')} in {result.elapsed_ms:.1f} ms · cache {result.cache}"
    if result.note:
        status += f" ({result.note})"
    status += f" · data version {result.data_version}" + (f" · {result.form}" if result.name else "")
    out = sys.stdout  # where click.echo writes (the test runner swaps it)
    if fmt == "json":
        columns = result.columns
        document = {**result.summary(), "columns": columns, "rows": [dict(zip(columns, row, strict=True)) for row in result.rows]}
        out.flush()
        out.buffer.write(json_bytes(document) + b"\n")
        out.buffer.flush()
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")  # str() of a datetime is ISO with a space, as before
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        out.flush()
    else:
        show(values_grid(result.columns, result.rows, title=result.name), out)
    click.echo(status, err=True)


@click.group("performance")
def performance_group() -> None:
    """Query cache, indexes and query analysis.

    \b
    Examples:
      python main.py performance cache-stats
      python main.py performance analyze --named revenue_by_country
    """


@performance_group.command("cache-stats")
@_FORMAT
@click.pass_obj
def cache_stats(app, fmt: str) -> None:
    """Hits, misses, hit rate, entries, bytes and evictions of the query cache (all processes).

    \b
    Examples:
      python main.py performance cache-stats
    """
    cache = _open_cache(app)
    try:
        stats = cache.stats().as_dict()
    finally:
        cache.close()
    rate = stats["hit_rate"]
    shown = dict(stats, hit_rate="-" if rate is None else f"{rate:.1%}", bytes=f"{stats['bytes']:,}", max_bytes=f"{stats['max_bytes']:,}")
    emit(stats, fmt, table([{"": k, "value": v} for k, v in shown.items()], title="Query cache", columns=["", "value"]))


@performance_group.command("cache-clear")
@click.pass_obj
def cache_clear(app) -> None:
    """Remove every cached answer and reset the statistics.

    \b
    Examples:
      python main.py performance cache-clear
    """
    cache = _open_cache(app)
    try:
        removed = cache.clear()
    finally:
        cache.close()
    click.echo(f"removed {removed:,} cached answers from the {cache.backend} cache at {cache.location}")


@performance_group.command("indexes")
@click.option("--create", is_flag=True, help="create the recommended indexes that are missing")
@_FORMAT
@click.pass_obj
def indexes_command(app, create: bool, fmt: str) -> None:
    """Each index with its size and use (PostgreSQL statistics), and missing or unused ones.

    \b
    Examples:
      python main.py performance indexes
      python main.py performance indexes --create
    """
    from performance import indexes as ix

    if create:
        for sql in ix.create_missing(app.engine):
            click.echo(sql, err=True)
    report = ix.index_report(app.engine)
    rows = [
        {
            "table": i.table, "index": i.name, "columns": ", ".join(i.columns), "unique": "yes" if i.unique else "",
            "size": _size(i.size_bytes), "scans": "-" if i.scans is None else f"{i.scans:,}",
            "rows read": "-" if i.tuples_read is None else f"{i.tuples_read:,}", "partitions": i.partitions or "",
        }
        for i in report.indexes
    ]  # fmt: skip
    if fmt == "json":
        emit(report.as_dict(), "json")
        return
    emit(None, "table", table(rows, title=f"Indexes ({report.backend}; {report.stats_note})"))
    lines = ["Suggestions:" if report.suggestions else "Suggestions: none"]
    for s in report.suggestions:
        lines.append(f"  - {s.kind}, {s.table}: {s.detail}" + (f"\n      {s.sql}" if s.sql else ""))
    click.echo("\n".join(lines))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:,.0f} kB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


@performance_group.command("analyze")
@click.option("--query", "sql", help="a read-only statement to analyse (default: the standard queries)")
@click.option("--named", "name", metavar="NAME", help="one standard query")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="parameter of the standard query")
@_FORMAT
@click.pass_obj
def analyze_command(app, sql: str | None, name: str | None, params: tuple[str, ...], fmt: str) -> None:
    """EXPLAIN ANALYZE (PostgreSQL) or EXPLAIN QUERY PLAN (SQLite), read-only: time, rows, full scans
    of large tables, partitions, indexes and suggestions.

    \b
    Examples:
      python main.py performance analyze --named revenue_by_country
      python main.py performance analyze --query "SELECT COUNT(*) FROM fact_sales WHERE date_key >= 20110101"
    """
    from performance import analyze as an

    if sql and name:
        raise click.UsageError("give --query or --named, not both")
    if params and not name:
        raise click.UsageError("--param works with --named only")
    service = _service(app, cached=False)  # analysis always asks the warehouse
    try:
        if sql or name:
            one = an.analyze_sql(service, sql) if sql else an.analyze_named(service, name, _params(params))
            _print_analysis(one, fmt)
            return
        suite = an.analyze_suite(service)
    finally:
        service.close()
    rows = [
        {
            "query": a.label, "ms": f"{a.time_ms:,.1f}", "rows": f"{a.rows:,}", "full scans of large tables": ", ".join(a.seq_scans),
            "partitions": a.partitions, "indexes": ", ".join(a.indexes),
        }
        for a in suite
    ]  # fmt: skip
    emit([a.as_dict() for a in suite], fmt, table(rows, title=f"Standard queries ({suite[0].backend if suite else '-'})"))
    if fmt == "table":
        tips = [f"  - {a.label}: {tip}" for a in suite for tip in a.suggestions]
        click.echo("\n".join(["Suggestions:", *tips]) if tips else "Suggestions: none")


def _print_analysis(a, fmt: str) -> None:
    if fmt == "json":
        emit(a.as_dict(), "json")
        return
    facts = {
        "time": f"{a.time_ms:,.2f} ms" + (f" (+ {a.planning_ms:,.2f} ms planning)" if a.planning_ms is not None else ""),
        "rows": f"{a.rows:,}",
        "full scans of large tables": ", ".join(a.seq_scans) or "none",
        "partitions scanned": a.partitions if a.backend == "postgresql" else "SQLite has no partitions",
        "indexes used": ", ".join(a.indexes) or "none",
    }
    if a.buffers:
        facts["buffers"] = f"{a.buffers.get('shared_hit', 0):,} hit, {a.buffers.get('shared_read', 0):,} read"
    emit(None, "table", table([{"": k, "value": v} for k, v in facts.items()], title=f"Analysis of {a.label}", columns=["", "value"]))
    click.echo("Plan:")
    click.echo("\n".join("  " + line for line in a.plan))
    click.echo("Suggestions:" if a.suggestions else "Suggestions: none")
    for tip in a.suggestions:
        click.echo(f"  - {tip}")


def _open_cache(app):
    from config.settings import PROJECT_ROOT
    from performance.cache import open_cache

    return open_cache(app.settings.cache, PROJECT_ROOT)


@performance_group.command("partitions")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def partitions_command(app, fmt: str) -> None:
    """Monthly partitions of fact_sales (PostgreSQL) with bounds, rows and size; strays sit in the default one.

    \b
    Examples:
      python main.py performance partitions
    """
    from database.partitions import DEFAULT_PARTITION, list_partitions

    with app.engine.connect() as conn:
        parts = list_partitions(conn)
    if not parts:
        emit([], fmt, "fact_sales is not partitioned here (partitions are a PostgreSQL feature; SQLite keeps one table)")
        return
    data = [p.__dict__ for p in parts]
    rows = [{"partition": p.name, "bounds": p.bounds, "rows": f"{p.rows:,}", "size": f"{p.size_bytes / 1024:,.0f} KB",
             "note": "strays: rows of months without a partition" if p.name == DEFAULT_PARTITION and p.rows else ""} for p in parts]  # fmt: skip
    emit(data, fmt, table(rows, title="Partitions of fact_sales"))


COMMANDS = (query_command, performance_group)
