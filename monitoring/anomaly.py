"""Anomaly detection: each run metric against its own history.

A metric is anomalous when it moves in its bad direction by at least `anomaly_z` robust
z-scores (median and median absolute deviation of the last `anomaly_window` runs, so one
earlier outlier does not hide the next) AND by at least the relative threshold `anomaly`
(10 % by default; it stops a perfectly flat history from flagging a tiny wobble). A metric
with fewer than `anomaly_min_history` earlier values is reported as `insufficient_history`,
never as normal.

Metrics per run (see docs/data_quality.md):
  score.<dimension>      mean check score of a dimension          bad when it drops
  check.<check name>     each check's score                        bad when it drops
  rows.read              rows read from the source                 bad either way
  rejects.<reason>       quarantined rows per new row, by reason   bad when it rises
  revenue_per_day        revenue of the run's facts per trading day bad either way
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import median

from sqlalchemy import Connection

from config.settings import Settings
from monitoring.history import RunPoint, recent_runs
from utils.vocabulary import REASONS

MAD_TO_Z = 0.6745  # MAD of a normal distribution is 0.6745 standard deviations


@dataclass
class MetricStatus:
    """How one metric of one run compares with its history."""

    metric: str
    run_id: int
    value: float
    status: str  # anomaly | normal | insufficient_history
    direction: str  # down | up | both: which way is bad
    history: int
    median: float | None = None
    mad: float | None = None
    z: float | None = None
    change: float | None = None

    @property
    def message(self) -> str:
        if self.status == "insufficient_history":
            return f"{self.metric} = {self.value:.4g} in run {self.run_id}: only {self.history} earlier run(s), not enough history to judge"
        z = "∞" if self.z is None or math.isinf(self.z) else f"{self.z:+.1f}"
        change = "new" if self.change is None or math.isinf(self.change) else f"{self.change:+.1%}"
        return (
            f"{self.metric} = {self.value:.4g} in run {self.run_id} vs median {self.median:.4g} of the last {self.history} runs "
            f"({change}, robust z {z})"
        )

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("z", "change"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None
        return data | {"message": self.message}


def metric_rule(metric: str) -> tuple[str, float]:
    """(bad direction, smallest absolute change that counts) of a metric."""
    if metric.startswith(("score.", "check.")):
        return "down", 0.005
    if metric.startswith("rejects."):
        return "up", 0.001
    return "both", 0.0


def point_metrics(point: RunPoint) -> dict[str, float]:
    """Every metric of one run."""
    out = {f"score.{k}": v for k, v in point.scores.items()} | {f"check.{k}": v for k, v in point.checks.items()}
    if point.rows_read > 0:
        out["rows.read"] = float(point.rows_read)
    new_rows = point.rows_loaded + point.rows_quarantined
    if new_rows > 0:
        for code in sorted(set(REASONS) | set(point.rejects)):
            out[f"rejects.{code}"] = point.rejects.get(code, 0) / new_rows
    if "revenue_per_day" in point.metrics:
        out["revenue_per_day"] = point.metrics["revenue_per_day"]
    return out


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / denominator


def assess(metric: str, run_id: int, value: float, past: list[float], settings: Settings) -> MetricStatus:
    """Compare one value with the metric's earlier values."""
    rules = settings.quality_rules
    direction, min_change = metric_rule(metric)
    if len(past) < rules.anomaly_min_history:
        return MetricStatus(metric, run_id, value, "insufficient_history", direction, len(past))
    mid = median(past)
    mad = median(abs(v - mid) for v in past)
    deviation = value - mid
    z = _ratio(MAD_TO_Z * deviation, mad)
    change = _ratio(deviation, abs(mid))
    bad_way = direction == "both" or (direction == "down" and deviation < 0) or (direction == "up" and deviation > 0)
    anomalous = bad_way and abs(z) >= rules.anomaly_z and abs(change) >= rules.anomaly and abs(deviation) >= min_change
    return MetricStatus(metric, run_id, value, "anomaly" if anomalous else "normal", direction, len(past), mid, mad, z, change)


def detect_points(points: list[RunPoint], settings: Settings) -> list[MetricStatus]:
    """Statuses of the last point's metrics against the points before it."""
    if not points:
        return []
    target, earlier = points[-1], points[:-1][-settings.quality_rules.anomaly_window :]
    history = [point_metrics(p) for p in earlier]
    statuses = []
    for metric, value in point_metrics(target).items():
        past = [h[metric] for h in history if metric in h]
        statuses.append(assess(metric, target.run_id, value, past, settings))
    return statuses


def detect(conn: Connection, settings: Settings, run_id: int | None = None) -> list[MetricStatus]:
    """Anomaly statuses of run `run_id` (default: the latest run) against its history."""
    points = recent_runs(conn, run_id, settings.quality_rules.anomaly_window + 1)
    if run_id is not None and (not points or points[-1].run_id != run_id):
        return []
    return detect_points(points, settings)
