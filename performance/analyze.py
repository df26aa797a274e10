"""Where a query spends its time: the plan, what it scanned, and what would make it faster.

PostgreSQL: EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON), which runs the query, in the service's
read-only transaction with its statement timeout. SQLite: EXPLAIN QUERY PLAN for the plan, and
the query itself, read-only, for the time and rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlparse
from sqlalchemy import Connection, text
from sqlparse.sql import Identifier

from performance.indexes import LARGE_TABLE_ROWS
from performance.queries import LATEST_MONTH_SQL, STANDARD_QUERIES, bind, get_query
from performance.service import QueryService, run_statement
from performance.sqlguard import QueryError, check_read_only

SLOW_MS = 50.0
_SEQ_NODES = ("Seq Scan", "Parallel Seq Scan")
_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


@dataclass
class Analysis:
    label: str
    backend: str
    sql: str
    time_ms: float
    planning_ms: float | None
    rows: int
    seq_scans: list[str] = field(default_factory=list)
    partitions_scanned: list[str] = field(default_factory=list)
    partitions_total: int = 0
    partitions_pruned: int = 0
    indexes: list[str] = field(default_factory=list)
    buffers: dict[str, int] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def partitions(self) -> str:
        if not self.partitions_total:
            return "-"
        return f"{len(self.partitions_scanned)} of {self.partitions_total}"


def analyze_sql(service: QueryService, sql: str, label: str = "query") -> Analysis:
    """Analyse one ad-hoc read-only statement."""
    checked = check_read_only(sql)
    first = checked.normalized.split(" ", 1)[0]
    if first == "EXPLAIN":
        raise QueryError("give the query without EXPLAIN: `performance analyze` adds it")
    return _analyze(service, label, checked.text, None)


def analyze_named(service: QueryService, name: str, params: dict[str, str] | None = None) -> Analysis:
    """Analyse a standard query in the form the service would run it."""
    query = get_query(name)
    values = query.parse_params(params)
    with service.read_only() as (conn, version):
        if values.get("month") == "latest":
            values["month"] = conn.exec_driver_sql(LATEST_MONTH_SQL).scalar() or 0
        form, sql = service.named_sql(query, version.aggregates)
    return _analyze(service, f"{name} ({form})", sql, bind(values))


def analyze_suite(service: QueryService) -> list[Analysis]:
    """Every standard query with its default parameters."""
    return [analyze_named(service, name) for name in STANDARD_QUERIES]


def _analyze(service: QueryService, label: str, sql: str, params: dict | None) -> Analysis:
    with service.read_only() as (conn, version):
        explain = _pg if service.dialect == "postgresql" else _sqlite
        result = explain(conn, label, sql, params)
        if version.aggregates and "fact_sales" in sql and not result.partitions_pruned and "date_key" not in sql.lower():
            result.suggestions.append(
                "reads every fact row: the aggregate tables (agg_daily_product, agg_daily_customer) hold daily totals "
                "per product and per customer version and answer whole-period questions without the fact"
            )
    if result.time_ms > SLOW_MS:
        result.suggestions.append(
            f"took {result.time_ms:.0f} ms: `query` answers a repeat from the cache in about 1 ms until the next load"
        )
    return result


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg(conn: Connection, label: str, sql: str, params: dict | None) -> Analysis:
    doc = run_statement(conn, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).scalar_one()
    doc = json.loads(doc) if isinstance(doc, str) else doc
    top = doc[0]
    plan = top["Plan"]
    nodes = list(_walk(plan))
    relations = {n["Relation Name"] for n in nodes if "Relation Name" in n}
    sizes = _pg_sizes(conn, relations)
    partitions = _pg_partitions(conn)
    a = Analysis(
        label, "postgresql", sql, round(top.get("Execution Time", 0.0), 3), round(top.get("Planning Time", 0.0), 3),
        int(plan.get("Actual Rows", 0)),
    )  # fmt: skip
    a.partitions_total = len(partitions)
    a.partitions_scanned = sorted(r for r in relations if r in partitions)
    if a.partitions_scanned:  # pruned at planning, or at execution ("Subplans Removed")
        a.partitions_pruned = a.partitions_total - len(a.partitions_scanned)
    a.buffers = {"shared_hit": int(plan.get("Shared Hit Blocks", 0)), "shared_read": int(plan.get("Shared Read Blocks", 0))}
    for n in nodes:
        rel = n.get("Relation Name")
        if n["Node Type"] in _SEQ_NODES and sizes.get(rel, 0) >= LARGE_TABLE_ROWS:
            read = _rows(n) + int(n.get("Rows Removed by Filter", 0)) * int(n.get("Actual Loops", 1))
            a.seq_scans.append(f"{rel} ({read:,} rows)")
            _filter_suggestion(a, rel, n, read)
        if n["Node Type"] in _INDEX_NODES and n.get("Index Name"):
            a.indexes.append(n["Index Name"])
        _spill_suggestions(a, n)
        _estimate_suggestion(a, n)
    a.indexes = sorted(set(a.indexes))
    if a.partitions_total > 1 and len(a.partitions_scanned) == a.partitions_total and "date_key" not in sql.lower():
        a.suggestions.append(
            "every partition of fact_sales was scanned: filter on date_key (e.g. BETWEEN 20111101 AND 20111130) to prune months"
        )
    a.plan = _pg_tree(plan)
    return a


def _walk(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def _rows(node: dict) -> int:
    return int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))


def _pg_sizes(conn: Connection, relations: set[str]) -> dict[str, float]:
    if not relations:
        return {}
    # reltuples is -1 until the first ANALYZE; the statistics collector's live count fills in.
    rows = conn.execute(
        text(
            "SELECT c.relname, GREATEST(c.reltuples, COALESCE(s.n_live_tup, 0)) FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = ANY(:names) AND pg_table_is_visible(c.oid)"
        ),
        {"names": sorted(relations)},
    )
    return {name: float(n) for name, n in rows}


def _pg_partitions(conn: Connection) -> set[str]:
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('fact_sales') AND to_regclass('fact_sales') IS NOT NULL"
        )
    )
    return {r for (r,) in rows}


def _filter_suggestion(a: Analysis, rel: str, node: dict, read: int) -> None:
    removed = int(node.get("Rows Removed by Filter", 0)) * int(node.get("Actual Loops", 1))
    if node.get("Filter") and read and removed / read > 0.5:
        kept = read - removed
        a.suggestions.append(
            f"{rel}: a sequential scan kept {kept:,} of {read:,} rows ({node['Filter']}); an index on those columns reads less"
        )


def _spill_suggestions(a: Analysis, node: dict) -> None:
    if node.get("Sort Space Type") == "Disk":
        a.suggestions.append(f"a sort spilled {node.get('Sort Space Used', 0):,} kB to disk: raise work_mem")
    if int(node.get("Hash Batches", 1)) > 1:
        a.suggestions.append(f"a hash ran in {node['Hash Batches']} batches (spilled to disk): raise work_mem")


def _estimate_suggestion(a: Analysis, node: dict) -> None:
    rel, planned, actual = node.get("Relation Name"), float(node.get("Plan Rows", 0)), float(node.get("Actual Rows", 0))
    if rel and max(planned, actual) >= 1000 and min(planned, actual) * 10 < max(planned, actual):
        tip = f"row estimate for {rel} is off ({planned:,.0f} planned, {actual:,.0f} actual): run ANALYZE {rel}"
        if tip not in a.suggestions:
            a.suggestions.append(tip)


def _pg_tree(node: dict, depth: int = 0) -> list[str]:
    what = node["Node Type"]
    if node.get("Relation Name"):
        what += f" on {node['Relation Name']}"
    if node.get("Index Name"):
        what += f" using {node['Index Name']}"
    line = f"{'  ' * depth}{what}  rows={_rows(node):,}  time={node.get('Actual Total Time', 0):.2f} ms"
    if node.get("Subplans Removed"):
        line += f"  subplans removed={node['Subplans Removed']}"
    out = [line]
    for child in node.get("Plans", []):
        out += _pg_tree(child, depth + 1)
    return out


# ---------------------------------------------------------------------------------------------
# SQLite


def _sqlite(conn: Connection, label: str, sql: str, params: dict | None) -> Analysis:
    steps = [tuple(r) for r in run_statement(conn, "EXPLAIN QUERY PLAN " + sql, params)]
    start = time.perf_counter()
    result = run_statement(conn, sql, params)
    rows = len(result.fetchall()) if result.returns_rows else 0
    elapsed = (time.perf_counter() - start) * 1000
    a = Analysis(label, "sqlite", sql, round(elapsed, 3), None, rows)
    aliases = _aliases(sql)
    sizes: dict[str, int] = {}
    depth: dict[int, int] = {}
    for node_id, parent, _unused, detail in steps:
        depth[node_id] = depth.get(parent, -1) + 1
        a.plan.append(f"{'  ' * depth[node_id]}{detail}")
        words = detail.split()
        if len(words) >= 2 and words[0] in ("SCAN", "SEARCH"):
            table = aliases.get(words[1].lower(), words[1])
            if words[0] == "SCAN" and "COVERING INDEX" not in detail and _sqlite_rows(conn, table, sizes) >= LARGE_TABLE_ROWS:
                a.seq_scans.append(f"{table} ({sizes[table]:,} rows)")
            if " INDEX " in f" {detail} ":
                a.indexes.append(detail.split(" INDEX ", 1)[1].split()[0])
    a.indexes = sorted(set(a.indexes))
    if a.seq_scans and " where " in f" {sql.lower()} ":
        a.suggestions.append(
            f"full scans of {', '.join(s.split()[0] for s in a.seq_scans)} although the query filters rows: "
            "if the filter is selective, an index on its columns reads less"
        )
    return a


def _aliases(sql: str) -> dict[str, str]:
    """alias -> table of each `table alias` in the statement (SQLite's plan names aliases)."""
    out: dict[str, str] = {}

    def visit(token) -> None:
        if isinstance(token, Identifier) and token.get_alias() and token.get_real_name():
            out[token.get_alias().lower()] = token.get_real_name()
        for child in getattr(token, "tokens", []):
            visit(child)

    for statement in sqlparse.parse(sql):
        visit(statement)
    return out


def _sqlite_rows(conn: Connection, table: str, cache: dict[str, int]) -> int:
    if table not in cache:
        exists = conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}).first()
        quoted = conn.dialect.identifier_preparer.quote_identifier(table)  # a name from the plan: checked above, quoted here
        cache[table] = int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {quoted}").scalar_one()) if exists else 0
    return cache[table]
