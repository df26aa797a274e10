"""Tables of the monitoring layer: quality results, run metrics and alerts (all append-only history).

They hang on the warehouse's `METADATA`, so `setup` and the ETL create them with the rest.
No foreign keys to `etl_runs`: history rows must never block (or be blocked by) the run ledger.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text

from database.models import METADATA, TIMESTAMP

_ID = BigInteger().with_variant(Integer, "sqlite")


quality_results = Table(
    "quality_results",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True, comment="id, in evaluation order"),
    Column("evaluation_id", String(32), comment="one evaluation (all checks run together share it)", nullable=False),
    Column("run_id", Integer, comment="ETL run checked (etl_runs); NULL for `quality check` on the warehouse"),
    Column("checked_at", TIMESTAMP, comment="when the checks ran (UTC)", nullable=False),
    Column("table_name", String(64), comment="table checked, or 'source' for the rows read from the extract", nullable=False),
    Column("column_name", String(64), comment="column checked, if the check is about one column"),
    Column("dimension", String(20), comment="completeness, validity, uniqueness, accuracy, consistency or freshness", nullable=False),
    Column("check_name", String(100), comment="stable check identifier, e.g. validity.fact_sales.invoice_no", nullable=False),
    Column("measured", Float, comment="score in [0, 1]: 1 - offending / total (freshness: limit / age)", nullable=False),
    Column("threshold", Float, comment="the check passes when measured >= threshold", nullable=False),
    Column("passed", Boolean, comment="measured >= threshold", nullable=False),
    Column("severity", String(10), comment="blocking (fails the ETL run) or warning", nullable=False),
    Column("offending", BigInteger, comment="rows (or values) breaking the rule", nullable=False),
    Column("total", BigInteger, comment="rows (or values) checked", nullable=False),
    Column("samples", Text, comment="JSON list of a few offending values (failing checks only)"),
    Index("ix_quality_results_check", "check_name", "id"),
    Index("ix_quality_results_run", "run_id"),
    Index("ix_quality_results_evaluation", "evaluation_id"),
    comment="Every result of every quality check of every evaluation, passes included; never updated",
)


quality_metrics = Table(
    "quality_metrics",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True, comment="id"),
    Column("evaluation_id", String(32), comment="the evaluation that measured it (quality_results)", nullable=False),
    Column("run_id", Integer, comment="ETL run measured (etl_runs)", nullable=False),
    Column("recorded_at", TIMESTAMP, comment="when it was measured (UTC)", nullable=False),
    Column("metric", String(100), comment="metric name, e.g. revenue_per_day", nullable=False),
    Column("value", Float, comment="measured value", nullable=False),
    Index("ix_quality_metrics_metric_run", "metric", "run_id"),
    comment="Run-level metrics not kept elsewhere (revenue per day ...), for anomaly detection; never updated",
)


alerts = Table(
    "alerts",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True, comment="alert number (used by `alerts ack`)"),
    Column("raised_at", TIMESTAMP, comment="when it was raised (UTC)", nullable=False),
    Column("run_id", Integer, comment="ETL run it is about, if any"),
    Column("rule", String(30), comment="check_failed, anomaly or run_failed", nullable=False),
    Column("severity", String(10), comment="info, warning or critical", nullable=False),
    Column("message", Text, comment="one line for people", nullable=False),
    Column("metric", String(100), comment="check or metric the alert is about"),
    Column("value", Float, comment="its measured value"),
    Column("fingerprint", String(64), comment="identity for de-duplication within the cool-down (rule + metric)", nullable=False),
    Column("acked_at", TIMESTAMP, comment="when someone acknowledged it (`alerts ack`)"),
    Column("delivered", Text, comment="JSON list of the channels that accepted it"),
    Column("delivery_errors", Text, comment="JSON object: channel -> last error, for channels that failed"),
    Index("ix_alerts_fingerprint", "fingerprint", "raised_at"),
    Index("ix_alerts_raised", "raised_at"),
    comment="Alerts raised by `alerts run` (after every ETL run): what, how bad, where it was sent",
)
