"""Anomaly detection on synthetic histories: a planted drop is found, noise and flat-line wobbles
are not, and too little history is reported as such."""

from __future__ import annotations

import json
import math
import random

import pytest

from config.settings import Settings
from monitoring.anomaly import assess, detect_points, metric_rule, point_metrics
from monitoring.history import RunPoint


def settings(**rules: object) -> Settings:
    return Settings.model_validate({"quality_rules": rules})


def noisy(centre: float, spread: float, n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [centre + rng.uniform(-spread, spread) for _ in range(n)]


def test_planted_drop_is_an_anomaly() -> None:
    history = noisy(0.75, 0.01, 12)
    status = assess("check.completeness.source.customer_id", 13, 0.60, history, settings())
    assert status.status == "anomaly"
    assert status.z is not None and status.z < -3.5
    assert status.change == pytest.approx(0.60 / status.median - 1)
    assert f"({status.change:+.1%}, robust z {status.z:+.1f})" in status.message


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


def test_too_little_history_is_not_normal() -> None:
    status = assess("rows.read", 3, 10.0, [10_000.0, 10_100.0], settings())
    assert status.status == "insufficient_history"
    assert status.history == 2 and status.median is None
    assert "not enough history" in status.message
    assert assess("rows.read", 3, 10.0, [10_000.0, 10_100.0], settings(anomaly_min_history=2)).status == "anomaly"


def test_directions() -> None:
    assert metric_rule("score.validity")[0] == "down"
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
    points = [_point(i, 0.75) for i in range(1, 4)]
    statuses = detect_points(points, settings())
    assert statuses and {s.status for s in statuses} == {"insufficient_history"}
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
