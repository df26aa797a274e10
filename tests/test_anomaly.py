"""Anomaly detection on synthetic histories: a planted drop is found, noise and flat-line wobbles
are not, and too little history is reported as such."""

from __future__ import annotations

import json
import math
import random

import pytest

from config.settings import Settings, parse_settings
from monitoring.anomaly import assess, detect_points, metric_rule, point_metrics
from monitoring.history import RunPoint


def settings(**rules: object) -> Settings:
    return parse_settings({"quality_rules": rules})


def noisy(centre: float, spread: float, n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [centre + rng.uniform(-spread, spread) for _ in range(n)]


def test_planted_drop_is_an_anomaly() -> None:
    history = noisy(0.75, 0.01, 12)
    status = assess("check.completeness.source.customer_id", 13, 0.60, history, settings())
    assert status.status == "anomaly"
    assert status.z is not None and status.z < -3.5
    assert status.change == pytest.approx(0.60 / status.median - 1)
    assert status.rule == "robust_z" and status.setting == "quality_rules.anomaly_z"
    assert f"({status.change:+.1%}, robust z {status.z:+.1f}; rule robust_z" in status.message
    assert "(quality_rules.anomaly)" in status.message and "|z| >= 3.5 (quality_rules.anomaly_z)" in status.message


def test_relative_change_judges_from_one_earlier_run() -> None:
    """The product's promise: a 10 % quality drop alerts from the second run, before the z-score
    has the history it needs."""
    status = assess("check.completeness.source.customer_id", 2, 0.50, [0.81], settings())
    assert (status.status, status.rule, status.history, status.median) == ("anomaly", "relative_change", 1, 0.81)
    assert status.z is None and status.change == pytest.approx(0.50 / 0.81 - 1)
    assert "vs median 0.81 of 1 earlier run(s) (-38.3%; rule relative_change" in status.message
    assert "(quality_rules.anomaly)" in status.message and "(quality_rules.anomaly_min_history)" in status.message
    four = [0.80, 0.81, 0.82, 0.81]
    assert assess("check.completeness.source.customer_id", 5, 0.50, four, settings()).rule == "relative_change"
    assert assess("check.completeness.source.customer_id", 5, 0.75, four, settings()).status == "normal"  # -7 %
    assert assess("check.completeness.source.customer_id", 5, 0.75, four, settings(anomaly=0.05)).status == "anomaly"
    assert assess("score.validity", 2, 1.0, [0.5], settings()).status == "normal"  # better is never an anomaly
    assert assess("check.completeness.source.customer_id", 1, 0.5, [], settings()).status == "insufficient_history"


def test_noisy_metrics_wait_for_the_robust_z_history() -> None:
    """Reject rates and revenue swing from run to run: with fewer than anomaly_min_history earlier
    runs they are not judged, and say from when they will be."""
    status = assess("rejects.duplicate", 3, 0.5, [0.01, 0.012], settings())
    assert status.status == "insufficient_history" and status.rule is None
    assert "not judged before 5 (quality_rules.anomaly_min_history)" in status.message
    assert assess("revenue_per_day", 3, 10.0, [1000.0, 1100.0], settings()).status == "insufficient_history"
    assert assess("revenue_per_day", 3, 10.0, [1000.0, 1100.0], settings(anomaly_min_history=2)).rule == "robust_z"


def test_noise_is_normal() -> None:
    history = noisy(0.75, 0.01, 12)
    for value in (0.745, 0.76, 0.74):
        assert assess("check.completeness.source.customer_id", 13, value, history, settings()).status == "normal"


def test_small_drop_below_the_relative_threshold_is_normal() -> None:
    """Far outside the noise (huge z) but only 5 % down: the 10 % relative threshold keeps it quiet."""
    history = noisy(0.80, 0.001, 10)
    status = assess("score.completeness", 11, 0.76, history, settings())
    assert abs(status.z) > 10 and status.status == "normal"
    assert assess("score.completeness", 11, 0.76, history, settings(anomaly=0.04)).status == "anomaly"


def test_flat_history_and_wobble() -> None:
    flat = [1.0] * 8
    wobble = assess("check.validity.fact_sales.invoice_no", 9, 0.995, flat, settings())
    assert wobble.status == "normal" and math.isinf(wobble.z)
    drop = assess("check.validity.fact_sales.invoice_no", 9, 0.8, flat, settings())
    assert drop.status == "anomaly"
    assert drop.as_dict()["z"] is None and "robust z ∞" in drop.message
    json.dumps(drop.as_dict())  # finite JSON


def test_volume_rule_both_ways_from_one_earlier_run() -> None:
    status = assess("rows.read", 3, 1_000.0, [10_000.0, 10_100.0], settings(), "job 'daily'")
    assert (status.status, status.rule, status.setting, status.history) == ("anomaly", "volume", "quality_rules.volume_factor", 2)
    assert "rows.read = 1,000 in run 3 vs median 10,050 of 2 earlier run(s) of job 'daily' (0.10x; rule volume" in status.message
    assert "below 1/3 or above 3 times the usual rows (quality_rules.volume_factor)" in status.message
    assert assess("rows.read", 2, 31_000.0, [10_000.0], settings()).status == "anomaly"
    assert assess("rows.read", 2, 4_000.0, [10_000.0], settings()).status == "normal"  # 0.4x: within a factor of 3
    assert assess("rows.read", 2, 4_000.0, [10_000.0], settings(volume_factor=2)).status == "anomaly"
    first = assess("rows.read", 1, 10.0, [], settings())
    assert first.status == "insufficient_history" and first.median is None and "not judged before one" in first.message


def test_bad_volume_factor_names_the_setting() -> None:
    from config.settings import load_settings
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"quality_rules\.volume_factor"):
        load_settings(default_files=(), environ={}, overrides={"quality_rules": {"volume_factor": 0.5}})


def test_directions() -> None:
    assert metric_rule("score.validity")[:2] == ("down", 0.005)
    assert metric_rule("rejects.duplicate")[0] == "up"
    assert metric_rule("rows.read")[0] == "both"
    history = noisy(0.01, 0.0005, 10)
    assert assess("rejects.duplicate", 11, 0.05, history, settings()).status == "anomaly"
    assert assess("rejects.duplicate", 11, 0.001, history, settings()).status == "normal"  # fewer rejects is good news
    up = noisy(0.9, 0.005, 10)
    assert assess("check.accuracy.fact_sales.line_total", 11, 0.99, up, settings()).status == "normal"
    rows = noisy(10_000, 100, 10)
    assert assess("rows.read", 11, 30_000, rows, settings()).status == "anomaly"
    assert assess("rows.read", 11, 1_000, rows, settings()).status == "anomaly"


def test_one_earlier_outlier_does_not_hide_the_next() -> None:
    history = noisy(0.75, 0.01, 10)
    history[4] = 0.2  # an earlier bad run
    assert assess("check.completeness.source.customer_id", 11, 0.6, history, settings()).status == "anomaly"


def _point(run_id: int, customer: float, rows: int = 10_000, duplicates: int = 100, revenue: float = 2500.0) -> RunPoint:
    loaded = rows - duplicates
    return RunPoint(
        run_id, "success", None, rows, loaded, duplicates, 0, {"duplicate": duplicates},
        scores={"completeness": (6 + customer) / 7, "validity": 1.0},
        checks={"completeness.source.customer_id": customer, "validity.fact_sales.invoice_no": 1.0},
        metrics={"revenue_per_day": revenue},
    )  # fmt: skip


def test_detect_points_finds_exactly_the_planted_metric() -> None:
    rng = random.Random(7)
    history = [
        _point(i, 0.75 + rng.uniform(-0.005, 0.005), 10_000, 100 + rng.randint(-10, 10), 2500 + rng.uniform(-100, 100)) for i in range(1, 9)
    ]
    planted = _point(9, 0.60, 10_000, 104, 2480.0)
    statuses = detect_points([*history, planted], settings())
    anomalies = [s.metric for s in statuses if s.status == "anomaly"]
    assert anomalies == ["check.completeness.source.customer_id"]
    names = {s.metric for s in statuses}
    assert {"score.completeness", "rows.read", "rejects.duplicate", "rejects.zero_quantity", "revenue_per_day"} <= names
    assert all(s.history == 8 for s in statuses)


def test_detect_points_window_and_short_history() -> None:
    assert {s.status for s in detect_points([_point(1, 0.75)], settings())} == {"insufficient_history"}
    points = [_point(i, 0.75) for i in range(1, 4)]
    statuses = {s.metric: s for s in detect_points(points, settings())}
    assert statuses["check.completeness.source.customer_id"].status == "normal"
    assert statuses["check.completeness.source.customer_id"].rule == "relative_change"
    assert statuses["rows.read"].rule == "volume" and statuses["rows.read"].status == "normal"
    assert statuses["rejects.duplicate"].status == statuses["revenue_per_day"].status == "insufficient_history"
    drop = {s.metric: s.status for s in detect_points([*points, _point(4, 0.5)], settings())}
    assert [m for m, v in drop.items() if v == "anomaly"] == ["check.completeness.source.customer_id"]
    many = [_point(i, 0.75 if i < 30 else 0.5) for i in range(1, 31)]
    last = {s.metric: s for s in detect_points(many, settings(anomaly_window=5))}
    assert last["check.completeness.source.customer_id"].history == 5
    assert last["check.completeness.source.customer_id"].status == "anomaly"


def test_point_metrics_rates_and_reruns() -> None:
    point = _point(1, 0.75, 10_000, 200)
    metrics = point_metrics(point)
    assert metrics["rejects.duplicate"] == pytest.approx(200 / 10_000)
    assert metrics["rejects.zero_quantity"] == 0.0
    rerun = RunPoint(2, "success", None, 10_000, 0, 0, 10_000)  # everything already loaded
    assert point_metrics(rerun) == {"rows.read": 10_000.0}
    clock = RunPoint(3, scores={"freshness": 0.5, "validity": 1.0}, checks={"freshness.etl_runs.last_success": 0.5})
    assert point_metrics(clock) == {"score.validity": 1.0}  # freshness follows the clock: its checks alert by themselves
