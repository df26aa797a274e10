"""Tables of the monitoring layer: quality results, run metrics and alerts (all append-only history).

They hang on the warehouse's declarative `Base`, so `setup` and the ETL create them with the rest.
No foreign keys to `etl_runs`: history rows must never block (or be blocked by) the run ledger.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from database.models import TIMESTAMP, Base

_ID = BigInteger().with_variant(Integer, "sqlite")


class QualityResult(Base):
    __tablename__ = "quality_results"
    __table_args__ = (
        Index("ix_quality_results_check", "check_name", "id"),
        Index("ix_quality_results_run", "run_id"),
        Index("ix_quality_results_evaluation", "evaluation_id"),
        {"comment": "Every result of every quality check of every evaluation, passes included; never updated"},
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True, comment="id, in evaluation order")
    evaluation_id: Mapped[str] = mapped_column(String(32), comment="one evaluation (all checks run together share it)")
    run_id: Mapped[int | None] = mapped_column(Integer, comment="ETL run checked (etl_runs); NULL for `quality check` on the warehouse")
    checked_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="when the checks ran (UTC)")
    table_name: Mapped[str] = mapped_column(String(64), comment="table checked, or 'source' for the rows read from the extract")
    column_name: Mapped[str | None] = mapped_column(String(64), comment="column checked, if the check is about one column")
    dimension: Mapped[str] = mapped_column(String(20), comment="completeness, validity, uniqueness, accuracy, consistency or freshness")
    check_name: Mapped[str] = mapped_column(String(100), comment="stable check identifier, e.g. validity.fact_sales.invoice_no")
    measured: Mapped[float] = mapped_column(Float, comment="score in [0, 1]: 1 - offending / total (freshness: limit / age)")
    threshold: Mapped[float] = mapped_column(Float, comment="the check passes when measured >= threshold")
    passed: Mapped[bool] = mapped_column(Boolean, comment="measured >= threshold")
    severity: Mapped[str] = mapped_column(String(10), comment="blocking (fails the ETL run) or warning")
    offending: Mapped[int] = mapped_column(BigInteger, comment="rows (or values) breaking the rule")
    total: Mapped[int] = mapped_column(BigInteger, comment="rows (or values) checked")
    samples: Mapped[str | None] = mapped_column(Text, comment="JSON list of a few offending values (failing checks only)")


class QualityMetric(Base):
    __tablename__ = "quality_metrics"
    __table_args__ = (
        Index("ix_quality_metrics_metric_run", "metric", "run_id"),
        {"comment": "Run-level metrics not kept elsewhere (revenue per day ...), for anomaly detection; never updated"},
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True, comment="id")
    evaluation_id: Mapped[str] = mapped_column(String(32), comment="the evaluation that measured it (quality_results)")
    run_id: Mapped[int] = mapped_column(Integer, comment="ETL run measured (etl_runs)")
    recorded_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="when it was measured (UTC)")
    metric: Mapped[str] = mapped_column(String(100), comment="metric name, e.g. revenue_per_day")
    value: Mapped[float] = mapped_column(Float, comment="measured value")


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_fingerprint", "fingerprint", "raised_at"),
        Index("ix_alerts_raised", "raised_at"),
        {"comment": "Alerts raised by `alerts run` (after every ETL run): what, how bad, where it was sent"},
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True, comment="alert number (used by `alerts ack`)")
    raised_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="when it was raised (UTC)")
    run_id: Mapped[int | None] = mapped_column(Integer, comment="ETL run it is about, if any")
    rule: Mapped[str] = mapped_column(String(30), comment="check_failed, anomaly or run_failed")
    severity: Mapped[str] = mapped_column(String(10), comment="info, warning or critical")
    message: Mapped[str] = mapped_column(Text, comment="one line for people")
    metric: Mapped[str | None] = mapped_column(String(100), comment="check or metric the alert is about")
    value: Mapped[float | None] = mapped_column(Float, comment="its measured value")
    fingerprint: Mapped[str] = mapped_column(String(64), comment="identity for de-duplication within the cool-down (rule + metric)")
    acked_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="when someone acknowledged it (`alerts ack`)")
    delivered: Mapped[str | None] = mapped_column(Text, comment="JSON list of the channels that accepted it")
    delivery_errors: Mapped[str | None] = mapped_column(Text, comment="JSON object: channel -> last error, for channels that failed")
