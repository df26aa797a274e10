"""Reading the quality history: evaluations, per-run scores and counts, for reports, trends,
anomaly detection and alerts. All set-based reads; nothing here writes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, text

from database.models import etl_runs
from database.quality_models import quality_metrics, quality_results
from monitoring.checks import DIMENSIONS
from utils.errors import PlatformError

RESULT_COLUMNS = (
    "id", "evaluation_id", "run_id", "checked_at", "table_name", "column_name", "dimension", "check_name",
    "measured", "threshold", "passed", "severity", "offending", "total", "samples",
)  # fmt: skip


@dataclass
class RunPoint:
    """One ETL run as the history sees it: its latest quality evaluation and its ledger counts."""

    run_id: int
    status: str | None = None
    started_at: datetime | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_already_loaded: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    job_name: str | None = None
    source: str | None = None


# The job name of a run started by hand (the default of `etl --job-name`, etl/commands.py).
MANUAL_JOB = "etl"


def source_pattern(source: str) -> str:
    """A source's file name with every run of digits as '#': sales-2011-06.csv -> sales-#-#.csv."""
    name = re.split(r"[\\/]", source.rstrip("/\\"))[-1] or source
    return re.sub(r"\d+", "#", name)


def feed_of(job_name: str, source: str) -> str:
    """The feed a run belongs to: its job, or for manual runs the pattern of its source's name."""
    return f"job '{job_name}'" if job_name != MANUAL_JOB else f"source pattern '{source_pattern(source)}'"


def feed_runs(conn: Connection, run_id: int, limit: int) -> tuple[str | None, list[RunPoint]]:
    """The feed of run `run_id` and its last `limit` earlier successful load runs, oldest first."""
    run = conn.execute(select(etl_runs.c.job_name, etl_runs.c.source).where(etl_runs.c.run_id == run_id)).first()
    if run is None:
        return None, []
    feed = feed_of(run.job_name, run.source)
    # Manual runs share one job name: read further back and keep those of the same pattern.
    scan = limit if run.job_name != MANUAL_JOB else limit * 20
    query = (
        select(etl_runs)
        .where(etl_runs.c.job_name == run.job_name, etl_runs.c.kind == "load", etl_runs.c.status == "success", etl_runs.c.run_id < run_id)
        .order_by(etl_runs.c.run_id.desc())
        .limit(scan)
    )
    same = [r for r in conn.execute(query) if feed_of(r.job_name, r.source) == feed][:limit]
    return feed, [_point(r.run_id, r) for r in reversed(same)]


def result_dict(row) -> dict:
    """A quality_results row as a plain dict (samples decoded, passed as bool)."""
    data = {k: getattr(row, k) for k in RESULT_COLUMNS}
    data["passed"] = bool(data["passed"])
    data["samples"] = json.loads(data["samples"]) if data["samples"] else []
    return data


def latest_evaluation(conn: Connection, run_id: int | None = None) -> str | None:
    """The newest evaluation (of `run_id` when given, else of anything)."""
    query = select(quality_results.c.evaluation_id).order_by(quality_results.c.id.desc()).limit(1)
    if run_id is not None:
        query = query.where(quality_results.c.run_id == run_id)
    return conn.execute(query).scalar()


def evaluation(conn: Connection, evaluation_id: str) -> list[dict]:
    """All results of one evaluation, in check order."""
    rows = conn.execute(select(quality_results).where(quality_results.c.evaluation_id == evaluation_id).order_by(quality_results.c.id))
    return [result_dict(r) for r in rows]


def scores_of(results: list[dict]) -> dict[str, float]:
    """Dimension -> mean score of the checks that measured something (as GateResult.scores)."""
    out = {}
    for dim in DIMENSIONS:
        values = [r["measured"] for r in results if r["dimension"] == dim and r["total"] > 0]
        if values:
            out[dim] = sum(values) / len(values)
    return out


def known_checks(conn: Connection) -> set[str]:
    return {n for (n,) in conn.execute(select(quality_results.c.check_name).distinct())}


def history(conn: Connection, check: str | None, last: int) -> list[dict]:
    """Results of the last `last` evaluations (of one check when given), newest first."""
    ids = select(quality_results.c.evaluation_id, func.max(quality_results.c.id).label("top")).group_by(quality_results.c.evaluation_id)
    if check is not None:
        ids = ids.where(quality_results.c.check_name == check)
    newest = [e for e, _ in conn.execute(ids.order_by(text("top DESC")).limit(last))]
    if not newest:
        return []
    query = select(quality_results).where(quality_results.c.evaluation_id.in_(newest)).order_by(quality_results.c.id.desc())
    if check is not None:
        query = query.where(quality_results.c.check_name == check)
    return [result_dict(r) for r in conn.execute(query)]


def run_exists(conn: Connection, run_id: int) -> bool:
    return conn.execute(select(etl_runs.c.run_id).where(etl_runs.c.run_id == run_id)).first() is not None


def require_run(conn: Connection, run_id: int) -> None:
    if not run_exists(conn, run_id):
        raise PlatformError(f"run {run_id} not found; see python main.py runs list")


def recent_runs(conn: Connection, upto: int | None, limit: int) -> list[RunPoint]:
    """The last `limit` load runs up to `upto` (oldest first) that read rows or were checked."""
    ledger = select(etl_runs).where(etl_runs.c.status.in_(("success", "failed")), etl_runs.c.kind == "load")
    checked = select(quality_results.c.run_id).where(quality_results.c.run_id.is_not(None)).distinct()
    if upto is not None:
        ledger = ledger.where(etl_runs.c.run_id <= upto)
        checked = checked.where(quality_results.c.run_id <= upto)
    runs = {r.run_id: r for r in conn.execute(ledger.order_by(etl_runs.c.run_id.desc()).limit(limit))}
    ids = sorted(set(runs) | {r for (r,) in conn.execute(checked.order_by(quality_results.c.run_id.desc()).limit(limit))})[-limit:]
    points = {i: _point(i, runs.get(i)) for i in ids}
    _attach_results(conn, points)
    _attach_metrics(conn, points)
    return [points[i] for i in ids]


def _point(run_id: int, run) -> RunPoint:
    if run is None:
        return RunPoint(run_id)
    return RunPoint(
        run_id, run.status, run.started_at, run.rows_read or 0, run.rows_loaded or 0, run.rows_quarantined or 0,
        run.rows_already_loaded or 0, json.loads(run.quarantine_by_reason) if run.quarantine_by_reason else {},
        job_name=run.job_name, source=run.source,
    )  # fmt: skip


def _attach_results(conn: Connection, points: dict[int, RunPoint]) -> None:
    if not points:
        return
    query = text(
        "SELECT r.run_id, r.dimension, r.check_name, r.measured, r.total FROM quality_results r "
        "JOIN (SELECT run_id, MAX(id) AS top FROM quality_results WHERE run_id IN :runs GROUP BY run_id) t ON t.run_id = r.run_id "
        "JOIN quality_results e ON e.id = t.top AND e.evaluation_id = r.evaluation_id ORDER BY r.id"
    ).bindparams(bindparam("runs", expanding=True))
    by_run: dict[int, list[dict]] = {}
    for run_id, dim, name, measured, total in conn.execute(query, {"runs": list(points)}):
        by_run.setdefault(run_id, []).append({"dimension": dim, "check_name": name, "measured": measured, "total": total})
        if total > 0:
            points[run_id].checks[name] = measured
    for run_id, results in by_run.items():
        points[run_id].scores = scores_of(results)


def _attach_metrics(conn: Connection, points: dict[int, RunPoint]) -> None:
    if not points:
        return
    rows = conn.execute(
        select(quality_metrics.c.run_id, quality_metrics.c.metric, quality_metrics.c.value)
        .where(quality_metrics.c.run_id.in_(list(points)))
        .order_by(quality_metrics.c.id)
    )
    for run_id, metric, value in rows:
        points[run_id].metrics[metric] = value


def quarantine_by_reason(conn: Connection, run_id: int | None) -> dict[str, int]:
    """Quarantined rows per reason code (a row with two reasons counts under both)."""
    sql = "SELECT reasons, COUNT(*) FROM etl_quarantine" + (" WHERE run_id = :run" if run_id is not None else "") + " GROUP BY reasons"
    counts: dict[str, int] = {}
    for reasons, n in conn.execute(text(sql), {"run": run_id}):
        for code in (reasons or "").split(";"):
            if code:
                counts[code] = counts.get(code, 0) + int(n)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# -- source profiles: schema drift and new values ---------------------------------------------------

MAX_PROFILE_VALUES = 500  # a column with more distinct values in one run is not low-cardinality: not tracked


@dataclass
class ProfileChanges:
    """How a run's source profile differs from what came before: its header against the previous
    successful run of the same feed, its values against every earlier successful load."""

    feed: str | None = None
    previous_run: int | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    new_values: dict[str, list[str]] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return bool(self.added or self.removed)

    def header_message(self, run_id: int) -> str:
        parts = [
            f"added {', '.join(map(repr, self.added))}" if self.added else "",
            f"gone {', '.join(map(repr, self.removed))}" if self.removed else "",
        ]
        return (
            f"the header of run {run_id} differs from run {self.previous_run} of the same feed ({self.feed}): "
            f"{'; '.join(p for p in parts if p)} (rule schema_drift, setting quality_rules.schema_drift)"
        )

    def as_dict(self) -> dict:
        return {
            "feed": self.feed,
            "previous_run": self.previous_run,
            "added": self.added,
            "removed": self.removed,
            "new_values": self.new_values,
        }


def profile_changes(conn: Connection, run_id: int, job_name: str, source: str, profile: dict) -> ProfileChanges:
    """Compare `profile` ({"columns": header, "values": {column: values}}) of run `run_id` with the
    earlier successful load runs that recorded one. Nothing is new on the first profiled run."""
    feed = feed_of(job_name, source)
    changes = ProfileChanges(feed)
    earlier = conn.execute(
        select(etl_runs.c.run_id, etl_runs.c.job_name, etl_runs.c.source, etl_runs.c.source_profile)
        .where(
            etl_runs.c.run_id < run_id, etl_runs.c.status == "success", etl_runs.c.kind == "load", etl_runs.c.source_profile.is_not(None)
        )
        .order_by(etl_runs.c.run_id.desc())
    )
    seen: dict[str, set[str]] = {}
    for row in earlier:
        old = json.loads(row.source_profile)
        if changes.previous_run is None and feed_of(row.job_name, row.source) == feed and old.get("columns") and profile.get("columns"):
            changes.previous_run = row.run_id
            changes.added = [c for c in profile["columns"] if c not in old["columns"]]
            changes.removed = [c for c in old["columns"] if c not in profile["columns"]]
        for column, values in (old.get("values") or {}).items():
            if values is not None:
                seen.setdefault(column, set()).update(values)
    for column, values in (profile.get("values") or {}).items():
        if values is not None and column in seen:
            fresh = sorted(set(values) - seen[column])
            if fresh:
                changes.new_values[column] = fresh
    return changes


def run_profile_changes(conn: Connection, run_id: int) -> ProfileChanges | None:
    """ProfileChanges of a recorded run (None when it recorded no profile)."""
    run = conn.execute(select(etl_runs.c.job_name, etl_runs.c.source, etl_runs.c.source_profile).where(etl_runs.c.run_id == run_id)).first()
    if run is None or not run.source_profile:
        return None
    return profile_changes(conn, run_id, run.job_name, run.source, json.loads(run.source_profile))
