"""The quality gate: run every check on the warehouse as one connection sees it, and keep the results.

`evaluate` only reads, so the ETL can call it inside its open transaction (it then sees the
uncommitted batch) and roll back when a blocking check fails. `record` appends the results to
`quality_results` (and run metrics to `quality_metrics`); nothing is ever overwritten.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import sqlalchemy
from sqlalchemy import insert

from config.settings import Settings
from database.quality_models import quality_metrics, quality_results
from monitoring.checks import DIMENSIONS, catalogue, select
from monitoring.quality import count_checks, run_metrics, sample_offending


@dataclass
class CheckResult:
    """One check's outcome: one row of quality_results."""

    table: str
    column: str | None
    dimension: str
    check: str
    measured: float
    threshold: float
    passed: bool
    severity: str  # "blocking" | "warning"
    offending: int
    total: int
    samples: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    """All check results of one evaluation, plus run metrics (when it was for a run)."""

    results: list[CheckResult]
    run_id: int | None = None
    checked_at: datetime | None = None
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation_id: str | None = None

    @property
    def scores(self) -> dict[str, float]:
        """Dimension -> mean of its checks' scores. Checks that had nothing to measure
        (total 0, e.g. a run that loaded no new rows) are left out; a dimension without
        any measured check is absent."""
        scores = {}
        for dim in DIMENSIONS:
            values = [r.measured for r in self.results if r.dimension == dim and r.total > 0]
            if values:
                scores[dim] = sum(values) / len(values)
        return scores

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.severity == "blocking"]

    @property
    def warnings(self) -> list[CheckResult]:
        """Failed checks that do not block."""
        return [r for r in self.results if not r.passed and r.severity == "warning"]

    @property
    def passed(self) -> bool:
        return not self.blocking_failures

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "evaluation_id": self.evaluation_id,
            "checked_at": self.checked_at.isoformat(sep=" ") if self.checked_at else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "passed": self.passed,
            "blocking_failures": [r.check for r in self.blocking_failures],
            "warnings": [r.check for r in self.warnings],
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "metrics": self.metrics,
            "checks": [asdict(r) for r in self.results],
        }


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def evaluate(
    conn: sqlalchemy.Connection, settings: Settings, run_id: int | None = None, table: str | None = None, fact_holds_only_run: bool = False
) -> GateResult:
    """Run every check (or those of `table`) on the warehouse as `conn` sees it. Read-only.

    With `run_id`, the fact and source checks look at that run's rows only (the batch);
    dimensions, line identity and freshness are checked over the whole warehouse. The ETL sets
    `fact_holds_only_run` when its run began on an empty fact table: every fact is the run's.
    """
    started = time.perf_counter()
    specs = select(catalogue(settings, conn.dialect.name), table)
    now = _utcnow()
    counts = count_checks(conn, settings, specs, run_id, now, fact_holds_only_run)
    sample_size = settings.quality_rules.sample_size
    results = []
    for spec in specs:
        found = counts[spec.name]
        measured = found.measured if found.measured is not None else (1.0 - found.offending / found.total if found.total else 1.0)
        passed = measured >= spec.threshold
        samples = found.samples[:sample_size]
        if not passed and found.offending and not samples and sample_size:
            samples = sample_offending(conn, spec, run_id, settings, now, sample_size)
        results.append(
            CheckResult(
                spec.table, spec.column, spec.dimension, spec.name, measured, float(spec.threshold), passed,
                "blocking" if spec.blocking else "warning", found.offending, found.total, samples if not passed else [],
            )
        )  # fmt: skip
    metrics = run_metrics(conn, run_id) if run_id is not None and table is None else {}
    return GateResult(results, run_id, now, time.perf_counter() - started, metrics)


def record(conn: sqlalchemy.Connection, run_id: int | None, result: GateResult) -> str:
    """Append the results to quality_results (and the run metrics to quality_metrics).
    Returns the evaluation id that groups these rows."""
    evaluation_id = uuid.uuid4().hex
    checked_at = result.checked_at or _utcnow()
    rows = [
        {
            "evaluation_id": evaluation_id, "run_id": run_id, "checked_at": checked_at, "table_name": r.table,
            "column_name": r.column, "dimension": r.dimension, "check_name": r.check, "measured": r.measured,
            "threshold": r.threshold, "passed": r.passed, "severity": r.severity, "offending": r.offending,
            "total": r.total, "samples": json.dumps(r.samples, ensure_ascii=False) if r.samples else None,
        }
        for r in result.results
    ]  # fmt: skip
    if rows:
        conn.execute(insert(quality_results), rows)
    if run_id is not None and result.metrics:
        metrics = [
            {"evaluation_id": evaluation_id, "run_id": run_id, "recorded_at": checked_at, "metric": k, "value": v}
            for k, v in result.metrics.items()
        ]
        conn.execute(insert(quality_metrics), metrics)
    result.evaluation_id = evaluation_id
    return evaluation_id
