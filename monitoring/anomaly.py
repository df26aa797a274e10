"""Anomaly detection: each run metric against its own history.

Two rules, and the verdict says which one judged it (`MetricStatus.rule`):

- `relative_change` (setting `quality_rules.anomaly`, 10 %): from the second run on, a quality
  score (`score.*`, `check.*`) that moves in its bad direction by at least that share of the
  median of whatever history exists (one earlier run is enough) is an anomaly.
- `robust_z` (settings `quality_rules.anomaly_z` and `quality_rules.anomaly`): once
  `anomaly_min_history` earlier values exist, the robust z-score joins: the move must also be at
  least `anomaly_z` robust z-scores (median and median absolute deviation of the last
  `anomaly_window` runs, so one earlier outlier does not hide the next). Reject rates and revenue
  per day, which are noisy by nature, are judged only by this rule; before that they are
  `insufficient_history`, never normal.

Volume has its own rule, `volume` (setting `quality_rules.volume_factor`): the rows a run read
against the median of the earlier successful runs of the same feed (the same job, or for
manual `etl` runs the same source file pattern), both ways: below 1/factor or above factor
times the usual rows.

Metrics per run (see docs/data_quality.md):
  score.<dimension>      mean check score of a dimension          bad when it drops
  check.<check name>     each check's score                        bad when it drops
  rows.read              rows read from the source                 bad either way (volume rule)
  rejects.<reason>       quarantined rows per new row, by reason   bad when it rises
  revenue_per_day        revenue of the run's facts per trading day bad either way
Freshness scores are not judged here: they depend on the clock, and their checks alert by
themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import median

from sqlalchemy import Connection

from config.settings import Settings
from monitoring.history import RunPoint, feed_runs, recent_runs
from utils.vocabulary import REASONS

MAD_TO_Z = 0.6745  # MAD of a normal distribution is 0.6745 standard deviations
RELATIVE, ROBUST, VOLUME = "relative_change", "robust_z", "volume"
VOLUME_METRIC = "rows.read"
SETTINGS = {RELATIVE: "quality_rules.anomaly", ROBUST: "quality_rules.anomaly_z", VOLUME: "quality_rules.volume_factor"}


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
    rule: str | None = None  # relative_change | robust_z | volume: the rule that judged it
    threshold: float | None = None  # the rule's limit (anomaly share, or the volume factor)
    feed: str | None = None  # volume: the job or source pattern whose runs are the history
    z_threshold: float | None = None  # robust_z: quality_rules.anomaly_z
    min_history: int | None = None  # relative_change: quality_rules.anomaly_min_history

    @property
    def setting(self) -> str | None:
        return SETTINGS.get(self.rule)

    @property
    def message(self) -> str:
        if self.status == "insufficient_history":
            need = f"{self.min_history} (quality_rules.anomaly_min_history)" if self.min_history else "one"
            return f"{self.metric} = {self.value:.4g} in run {self.run_id}: {self.history} earlier run(s), not judged before {need}"
        change = "new" if self.change is None or math.isinf(self.change) else f"{self.change:+.1%}"
        if self.rule == VOLUME:
            return (
                f"{self.metric} = {self.value:,.0f} in run {self.run_id} vs median {self.median:,.0f} of {self.history} earlier run(s) "
                f"of {self.feed} ({self.value / self.median:.2f}x; rule volume: below 1/{self.threshold:g} or above "
                f"{self.threshold:g} times the usual rows (quality_rules.volume_factor))"
            )
        if self.rule == RELATIVE:
            return (
                f"{self.metric} = {self.value:.4g} in run {self.run_id} vs median {self.median:.4g} of {self.history} earlier run(s) "
                f"({change}; rule relative_change: a move of {self.threshold:.0%} or more (quality_rules.anomaly); the robust "
                f"z-score joins at {self.min_history} runs (quality_rules.anomaly_min_history))"
            )
        z = "∞" if self.z is None or math.isinf(self.z) else f"{self.z:+.1f}"
        return (
            f"{self.metric} = {self.value:.4g} in run {self.run_id} vs median {self.median:.4g} of the last {self.history} runs "
            f"({change}, robust z {z}; rule robust_z: a move of {self.threshold:.0%} or more (quality_rules.anomaly) and "
            f"|z| >= {self.z_threshold:g} (quality_rules.anomaly_z))"
        )

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("z", "change"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None
        return data | {"setting": self.setting, "message": self.message}


def metric_rule(metric: str) -> tuple[str, float, bool]:
    """(bad direction, smallest absolute change that counts, judged from one earlier run) of a
    metric. Quality scores are judged from the second run on; reject rates and revenue, which
    swing from run to run, only once the robust z-score has its history."""
    if metric.startswith(("score.", "check.")):
        return "down", 0.005, True
    if metric.startswith("rejects."):
        return "up", 0.001, False
    return "both", 0.0, False


def point_metrics(point: RunPoint) -> dict[str, float]:
    """Every metric of one run (freshness scores left out: they follow the clock, not the data)."""
    out = {f"score.{k}": v for k, v in point.scores.items() if k != "freshness"}
    out |= {f"check.{k}": v for k, v in point.checks.items() if not k.startswith("freshness.")}
    if point.rows_read > 0:
        out[VOLUME_METRIC] = float(point.rows_read)
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


def assess(metric: str, run_id: int, value: float, past: list[float], settings: Settings, feed: str | None = None) -> MetricStatus:
    """Compare one value with the metric's earlier values."""
    if metric == VOLUME_METRIC:
        return assess_volume(run_id, value, past, settings, feed)
    rules = settings.quality_rules
    direction, min_change, early = metric_rule(metric)
    if not past or (not early and len(past) < rules.anomaly_min_history):
        need = None if early else rules.anomaly_min_history
        return MetricStatus(metric, run_id, value, "insufficient_history", direction, len(past), min_history=need)
    mid = median(past)
    deviation = value - mid
    change = _ratio(deviation, abs(mid))
    bad_way = direction == "both" or (direction == "down" and deviation < 0) or (direction == "up" and deviation > 0)
    moved = bad_way and abs(change) >= rules.anomaly and abs(deviation) >= min_change
    if len(past) < rules.anomaly_min_history:
        status = "anomaly" if moved else "normal"
        return MetricStatus(
            metric, run_id, value, status, direction, len(past), mid, None, None, change, RELATIVE, rules.anomaly,
            min_history=rules.anomaly_min_history,
        )  # fmt: skip
    mad = median(abs(v - mid) for v in past)
    z = _ratio(MAD_TO_Z * deviation, mad)
    status = "anomaly" if moved and abs(z) >= rules.anomaly_z else "normal"
    return MetricStatus(
        metric, run_id, value, status, direction, len(past), mid, mad, z, change, ROBUST, rules.anomaly, z_threshold=rules.anomaly_z
    )


def assess_volume(run_id: int, value: float, past: list[float], settings: Settings, feed: str | None = None) -> MetricStatus:
    """Rows read against the median of the feed's earlier runs, both ways, from one earlier run."""
    factor = settings.quality_rules.volume_factor
    past = [v for v in past if v > 0]
    if not past:
        return MetricStatus(VOLUME_METRIC, run_id, value, "insufficient_history", "both", 0, feed=feed)
    mid = median(past)
    ratio = value / mid
    status = "anomaly" if ratio <= 1 / factor or ratio >= factor else "normal"
    return MetricStatus(VOLUME_METRIC, run_id, value, status, "both", len(past), mid, None, None, ratio - 1, VOLUME, factor, feed)


def detect_points(
    points: list[RunPoint], settings: Settings, feed: str | None = None, feed_points: list[RunPoint] | None = None
) -> list[MetricStatus]:
    """Statuses of the last point's metrics against the points before it. Volume is judged
    against `feed_points` (the earlier runs of the same job or source pattern) when given."""
    if not points:
        return []
    window = settings.quality_rules.anomaly_window
    target, earlier = points[-1], points[:-1][-window:]
    history = [point_metrics(p) for p in earlier]
    volume_past = [float(p.rows_read) for p in (earlier if feed_points is None else feed_points[-window:])]
    statuses = []
    for metric, value in point_metrics(target).items():
        past = volume_past if metric == VOLUME_METRIC else [h[metric] for h in history if metric in h]
        statuses.append(assess(metric, target.run_id, value, past, settings, feed))
    return statuses


def detect(conn: Connection, settings: Settings, run_id: int | None = None) -> list[MetricStatus]:
    """Anomaly statuses of run `run_id` (default: the latest run) against its history."""
    window = settings.quality_rules.anomaly_window
    points = recent_runs(conn, run_id, window + 1)
    if not points or (run_id is not None and points[-1].run_id != run_id):
        return []
    feed, feed_points = feed_runs(conn, points[-1].run_id, window)
    return detect_points(points, settings, feed, feed_points)
