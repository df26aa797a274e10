"""Running the checks of `monitoring/checks.py`: one set-based counting query per relation,
a few special queries, and sample queries for the checks that failed. Read-only.

The fact relation is the expensive one (a scan of fact_sales joined to its three small
dimensions); every fact check is one `COUNT(*) FILTER (WHERE ...)` of that single scan, which
PostgreSQL runs in parallel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median

from sqlalchemy import Connection, TextClause, bindparam, text

from config.settings import Settings
from database.models import TIMESTAMP
from monitoring.checks import INVOICE_PATTERN, STOCK_CODE_PATTERN, CheckSpec, Relation, relation
from monitoring.countries import KNOWN_COUNTRIES
from monitoring.history import MANUAL_JOB

_EXPANDING = ("countries", "codes")
_TIMESTAMPS = ("data_start", "latest_ok")
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@dataclass
class Count:
    """What one check found: offending of total rows, and for special checks their own score."""

    offending: int = 0
    total: int = 0
    measured: float | None = None
    samples: list[str] = field(default_factory=list)


def statement(sql: str) -> TextClause:
    """text() with the list parameters expanded and the timestamp parameters typed."""
    names = set(_PARAM.findall(sql))
    binds = [bindparam(n, expanding=True) for n in _EXPANDING if n in names]
    binds += [bindparam(n, type_=TIMESTAMP) for n in _TIMESTAMPS if n in names]
    return text(sql).bindparams(*binds) if binds else text(sql)


def _used(sql: str, params: dict) -> dict:
    names = set(_PARAM.findall(sql))
    return {k: v for k, v in params.items() if k in names}


def check_params(settings: Settings, now: datetime, run_id: int | None) -> dict:
    """Values the check conditions refer to (all bound, none spliced into SQL)."""
    params = {
        "invoice_re": INVOICE_PATTERN,
        "stock_re": STOCK_CODE_PATTERN,
        "countries": list(KNOWN_COUNTRIES),
        "codes": [c.upper() for c in settings.products.non_merchandise_codes] or [""],
        "max_price": settings.rules.max_unit_price,
        "data_start": datetime.combine(settings.quality_rules.data_start, datetime.min.time()),
        "latest_ok": now + timedelta(days=settings.rules.max_future_days),
        "run": run_id,
    }
    for i, prefix in enumerate(settings.products.non_merchandise_prefixes):
        params[f"prefix_{i}"] = prefix.upper()
    return params


def _from(relation: Relation, run_id: int | None, condition: str | None = None) -> str:
    scope = f"{relation.run_column} = :run" if relation.run_column and run_id is not None else None
    conditions = [c for c in (relation.where, scope, f"({condition})" if condition else None) if c]
    return relation.from_sql + (" WHERE " + " AND ".join(conditions) if conditions else "")


def count_relation(conn: Connection, name: str, predicates: list[str], run_id: int | None, params: dict) -> tuple[int, list[int]]:
    """Rows of one relation and, in the same scan, the rows matching each predicate."""
    columns = ["COUNT(*)"] + [f"COUNT(*) FILTER (WHERE {p})" for p in predicates]
    sql = f"SELECT {', '.join(columns)} FROM {_from(relation(name, conn.dialect.name), run_id)}"
    row = conn.execute(statement(sql), _used(sql, params)).one()
    return int(row[0]), [int(v or 0) for v in row[1:]]


def count_checks(
    conn: Connection, settings: Settings, specs: list[CheckSpec], run_id: int | None, now: datetime, fact_holds_only_run: bool = False
) -> dict[str, Count]:
    """Count every check of `specs`: one query per relation, plus the special checks. With
    `fact_holds_only_run` (the run began on an empty fact table), the fact relation is counted
    whole: the same rows, but PostgreSQL scans them in parallel, where the run_id filter on rows
    that have no statistics yet is planned as a few index look-ups on one core (docs/performance.md)."""
    params = check_params(settings, now, run_id)
    counts = {s.name: Count() for s in specs}
    for name in dict.fromkeys(r for s in specs if not s.special for r in s.predicates):
        members = [s for s in specs if name in s.predicates]
        conditions = [s.predicates[name] for s in members if s.predicates[name]]
        scope = None if fact_holds_only_run and name == "fact" else run_id
        total, matched = count_relation(conn, name, conditions, scope, params)
        found = iter(matched)
        for spec in members:
            counts[spec.name].total += total
            if spec.predicates[name]:
                counts[spec.name].offending += next(found)
    for spec in specs:
        if spec.special == "line_identity":
            counts[spec.name] = _line_identity(conn, settings, run_id, now, fact_holds_only_run)
        elif spec.special:
            counts[spec.name] = SPECIALS[spec.special](conn, settings, run_id, now)
    return counts


def sample_offending(conn: Connection, spec: CheckSpec, run_id: int | None, settings: Settings, now: datetime, limit: int) -> list[str]:
    """Up to `limit` offending values of a row check, for people to look at."""
    params = check_params(settings, now, run_id) | {"limit": limit}
    samples: list[str] = []
    for name, expr in spec.samples.items():
        predicate = spec.predicates.get(name)
        if not predicate or len(samples) >= limit:
            continue
        sql = f"SELECT {expr} FROM {_from(relation(name, conn.dialect.name), run_id, predicate)} LIMIT :limit"
        params["limit"] = limit - len(samples)
        samples += [str(v) for (v,) in conn.execute(statement(sql), _used(sql, params))]
    return samples


# -- special checks -------------------------------------------------------------------------


def _as_datetime(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


_RUN_TWINS = (
    "FROM fact_sales f WHERE f.run_id = :run AND EXISTS (SELECT 1 FROM fact_sales g "
    "WHERE g.date_key = f.date_key AND g.line_id = f.line_id AND g.sales_key <> f.sales_key)"
)


_TWINS_IN_GROUPS = (
    "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM fact_sales GROUP BY date_key, line_id) g WHERE n > 1"
)


def _line_identity(conn: Connection, settings: Settings, run_id: int | None, now: datetime, fact_holds_only_run: bool = False) -> Count:
    """Whole table: rows minus distinct identities. A run: its facts that have a twin anywhere in
    the table. The identity hashes the invoice date, so a twin can only be on the same date: the
    (date_key, line_id) index finds it, and the run's facts come from the run_id index, so a small
    load into a big warehouse does not scan the table. When every fact is the run's (it began on
    an empty fact table), SQLite counts the rows of (date_key, line_id) groups of more than one row
    in one pass over that index instead of one index look-up per fact (PostgreSQL took as long
    either way: docs/performance.md)."""
    params = {"n": settings.quality_rules.sample_size, "run": run_id}
    if run_id is not None and fact_holds_only_run and conn.dialect.name == "sqlite":
        total = conn.execute(text("SELECT COUNT(*) FROM fact_sales")).scalar_one()
        twins = conn.execute(text(_TWINS_IN_GROUPS)).one()[1]
        count = Count(int(twins), int(total))
        samples = f"SELECT f.line_id, 2 {_RUN_TWINS} LIMIT :n"
    elif run_id is not None:
        total = conn.execute(text("SELECT COUNT(*) FROM fact_sales WHERE run_id = :run"), params).scalar_one()
        twins = conn.execute(text(f"SELECT COUNT(*) {_RUN_TWINS}"), params).scalar_one()
        count = Count(int(twins), int(total))
        samples = f"SELECT f.line_id, 2 {_RUN_TWINS} LIMIT :n"
    else:
        total, distinct = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT line_id) FROM fact_sales")).one()
        count = Count(int(total) - int(distinct), int(total))
        samples = "SELECT line_id, COUNT(*) FROM fact_sales GROUP BY line_id HAVING COUNT(*) > 1 LIMIT :n"
    if count.offending:
        count.samples = [f"line_id={line} rows={n}" for line, n in conn.execute(text(samples), params)]
    return count


def _age(newest: datetime, now: datetime) -> float:
    return max((now - newest).total_seconds() / 86400, 0.0)


def _newest_transaction(conn: Connection, settings: Settings, run_id: int | None, now: datetime) -> Count:
    """Data recency (switched on by quality_rules.data_recency_max_age_days): the newest transaction
    against the time of the check, which in the ETL gate is the load time."""
    limit = settings.quality_rules.data_recency_max_age_days or 0.0
    # MAX(date_key) comes from the (date_key, line_id) index; only the newest day is then read.
    newest = _as_datetime(
        conn.execute(
            text("SELECT MAX(transaction_datetime) FROM fact_sales WHERE date_key = (SELECT MAX(date_key) FROM fact_sales)")
        ).scalar()
    )
    if newest is None:
        return Count(0, 0, 1.0)  # nothing loaded: nothing to be stale
    age = _age(newest, now)
    if age <= limit:
        return Count(0, 1, 1.0)
    return Count(
        1, 1, limit / age,
        [f"newest transaction {newest:%Y-%m-%d %H:%M:%S} is {age:,.1f} days old (limit {limit:g}, quality_rules.data_recency_max_age_days)"],
    )  # fmt: skip


_LAST_LOADS = (
    "SELECT job_name, MAX(finished_at) FROM etl_runs WHERE status = 'success' AND kind = 'load' AND finished_at IS NOT NULL "
    "GROUP BY job_name ORDER BY job_name"
)


def _last_success(conn: Connection, settings: Settings, run_id: int | None, now: datetime) -> Count:
    """Each job's last successful load against quality_rules.freshness_max_age_days; manual runs
    (job 'etl') have no schedule, so for them any successful load counts."""
    if run_id is not None:
        return Count(0, 1, 1.0)  # the run being checked is the newest load
    limit = settings.quality_rules.freshness_max_age_days
    last = {job: _as_datetime(t) for job, t in conn.execute(text(_LAST_LOADS))}
    if not last:
        return Count(1, 1, 0.0, [f"no successful load yet (limit {limit:g} days, quality_rules.freshness_max_age_days)"])
    feeds = {f"job '{job}'": t for job, t in last.items() if job != MANUAL_JOB}
    if MANUAL_JOB in last:
        feeds["manual runs (any load)"] = max(last.values())
    stale = {feed: _age(t, now) for feed, t in feeds.items() if _age(t, now) > limit}
    if not stale:
        return Count(0, len(feeds), 1.0)
    samples = [
        f"{feed}: last successful load {feeds[feed]:%Y-%m-%d %H:%M:%S} is {age:,.1f} days old "
        f"(limit {limit:g}, quality_rules.freshness_max_age_days)"
        for feed, age in sorted(stale.items(), key=lambda kv: -kv[1])
    ]
    return Count(len(stale), len(feeds), limit / max(stale.values()), samples)


SPECIALS = {"line_identity": _line_identity, "newest_transaction": _newest_transaction, "last_success": _last_success}


def run_metrics(conn: Connection, run_id: int) -> dict[str, float]:
    """Run-level figures kept for anomaly detection: revenue, trading days, and revenue per day
    as the median of the run's daily revenues (one very large order does not swing it)."""
    daily = sorted(
        float(v)
        for (v,) in conn.execute(text("SELECT SUM(line_total) FROM fact_sales WHERE run_id = :run GROUP BY date_key"), {"run": run_id})
    )
    if not daily:
        return {}
    return {"revenue": sum(daily), "days": float(len(daily)), "revenue_per_day": median(daily)}
