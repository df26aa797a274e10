"""Alerts: rules over the latest quality results, de-duplication within a cool-down, delivery.

Rules:
  check_failed  a check of the latest evaluation failed   critical if blocking, else warning
  anomaly       a run's quality metric is anomalous against its history (monitoring/anomaly.py)   warning
  volume        a run read far fewer or far more rows than its feed usually does           warning
  schema_drift  a run's header differs from the previous run of its feed (quality_rules.schema_drift)   warning
  run_failed    the run checked ended as failed             critical

An alert's fingerprint is its rule and subject (check, metric or job); an alert whose
fingerprint was raised within `alerts.cooldown_minutes` is not raised again. Raised alerts
are stored in `alerts` first, then sent to every channel that takes their severity; what each
channel did is stored with them. A failing channel is retried and logged, never raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from config.settings import AlertChannel, Settings
from database.errors import describe
from database.models import etl_runs
from database.quality_models import alerts as alerts_table
from monitoring.anomaly import VOLUME, MetricStatus, detect
from monitoring.channels import deliver, wants
from monitoring.checks import threshold_setting
from monitoring.history import evaluation, latest_evaluation, run_profile_changes
from utils.errors import PlatformError

log = logging.getLogger(__name__)


@dataclass
class Alert:
    """One alert, raised or a candidate."""

    rule: str
    severity: str
    message: str
    metric: str | None
    value: float | None
    run_id: int | None
    fingerprint: str
    id: int | None = None
    raised_at: datetime | None = None
    delivered: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict:
        """What channels send (JSON)."""
        return {
            "id": self.id, "raised_at": self.raised_at.isoformat(sep=" ") if self.raised_at else None, "run_id": self.run_id,
            "rule": self.rule, "severity": self.severity, "message": self.message, "metric": self.metric, "value": self.value,
            "fingerprint": self.fingerprint, "source": "retail-data-platform",
        }  # fmt: skip

    def as_dict(self) -> dict:
        return self.payload() | {"delivered": self.delivered, "errors": self.errors}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def fingerprint(rule: str, subject: str) -> str:
    return hashlib.sha256(f"{rule}|{subject}".encode()).hexdigest()[:32]


def _check_alerts(results: list[dict], settings: Settings) -> list[Alert]:
    alerts = []
    for r in results:
        if r["passed"]:
            continue
        where = f"run {r['run_id']}" if r["run_id"] is not None else "the warehouse"
        sample = f"; e.g. {r['samples'][0]}" if r["samples"] else ""
        message = (
            f"{r['severity']} check {r['check_name']} failed on {where}: score {r['measured']:.4f} < {r['threshold']:.4f} "
            f"({r['offending']:,} of {r['total']:,} offending{sample}); threshold set by {threshold_setting(r['check_name'], r['dimension'], settings)}"
        )
        severity = "critical" if r["severity"] == "blocking" else "warning"
        alerts.append(
            Alert(
                "check_failed", severity, message, r["check_name"], r["measured"], r["run_id"], fingerprint("check_failed", r["check_name"])
            )
        )
    return alerts


def _anomaly_alert(status: MetricStatus, run_id: int) -> Alert:
    if status.rule == VOLUME:
        return Alert(
            "volume", "warning", "volume: " + status.message, status.metric, status.value, run_id, fingerprint("volume", status.feed or "")
        )
    return Alert(
        "anomaly", "warning", "anomaly: " + status.message, status.metric, status.value, run_id, fingerprint("anomaly", status.metric)
    )


def _target_run(conn: Connection, run_id: int | None, results: list[dict]) -> int | None:
    if run_id is not None:
        return run_id
    if results and results[0]["run_id"] is not None:
        return results[0]["run_id"]
    return conn.execute(select(sqlalchemy.func.max(etl_runs.c.run_id))).scalar()


def candidates(conn: Connection, settings: Settings, run_id: int | None = None) -> list[Alert]:
    """Every alert the rules raise for the latest results (before de-duplication)."""
    evaluation_id = latest_evaluation(conn, run_id)
    results = evaluation(conn, evaluation_id) if evaluation_id else []
    alerts = _check_alerts(results, settings)
    target = _target_run(conn, run_id, results)
    if target is None:
        return alerts
    for status in detect(conn, settings, target):
        if status.status == "anomaly":
            alerts.append(_anomaly_alert(status, target))
    changes = run_profile_changes(conn, target) if settings.quality_rules.schema_drift else None
    if changes is not None and changes.drifted:
        subject = f"{changes.feed}|+{','.join(changes.added)}|-{','.join(changes.removed)}"
        alerts.append(
            Alert(
                "schema_drift",
                "warning",
                "schema drift: " + changes.header_message(target),
                "header",
                None,
                target,
                fingerprint("schema_drift", subject),
            )
        )
    run = conn.execute(select(etl_runs).where(etl_runs.c.run_id == target)).first()
    if run is not None and run.status == "failed":
        message = f"run {target} ({run.job_name}) failed: {run.message or 'no message'}"
        alerts.append(Alert("run_failed", "critical", message, run.job_name, None, target, fingerprint("run_failed", run.job_name)))
    return alerts


def _recent_fingerprints(conn: Connection, since: datetime) -> set[str]:
    return {f for (f,) in conn.execute(select(alerts_table.c.fingerprint).where(alerts_table.c.raised_at >= since))}


def _store(conn: Connection, alert: Alert) -> None:
    alert.raised_at = utcnow()
    values = {k: getattr(alert, k) for k in ("raised_at", "run_id", "rule", "severity", "message", "metric", "value", "fingerprint")}
    alert.id = int(conn.execute(insert(alerts_table).values(**values).returning(alerts_table.c.id)).scalar_one())


def send(alert: Alert, channels: list[AlertChannel], settings: Settings, down: dict[str, str] | None = None) -> None:
    """Send an alert to each channel that takes its severity; note what happened on it.
    `down` collects channels that failed for good, so later alerts of the same batch do not
    wait for their retries again."""
    down = {} if down is None else down
    for channel in channels:
        if not wants(channel, alert.severity):
            continue
        if channel.name in down:
            alert.errors[channel.name] = f"not tried: the channel failed for an earlier alert ({down[channel.name]})"
            continue
        error = deliver(channel, alert.payload(), settings)
        if error is None:
            alert.delivered.append(channel.name)
        else:
            alert.errors[channel.name] = down[channel.name] = error


def run_alerts(engine: sqlalchemy.Engine, settings: Settings, run_id: int | None = None) -> list[Alert]:
    """Evaluate the rules over the latest results, drop alerts raised within the cool-down,
    store and send the rest. Channel failures are logged and retried, never raised."""
    cooldown = timedelta(minutes=settings.alerts.cooldown_minutes)
    try:
        with engine.begin() as conn:
            found = candidates(conn, settings, run_id)
            recent = _recent_fingerprints(conn, utcnow() - cooldown) if cooldown else set()
            fresh = [a for a in found if a.fingerprint not in recent]
            for alert in fresh:
                _store(conn, alert)
        for alert in found:
            if alert.fingerprint in recent:
                log.info("alert suppressed (raised within the last %s min): %s", settings.alerts.cooldown_minutes, alert.message)
        down: dict[str, str] = {}
        for alert in fresh:
            send(alert, settings.alerts.channels, settings, down)
        with engine.begin() as conn:
            for alert in fresh:
                conn.execute(
                    update(alerts_table)
                    .where(alerts_table.c.id == alert.id)
                    .values(delivered=json.dumps(alert.delivered), delivery_errors=json.dumps(alert.errors) if alert.errors else None)
                )
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None
    return fresh


# -- commands' helpers ------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """'2h', '30m', '7d', '1w', or an ISO date / date-time (UTC)."""
    now = now or utcnow()
    match = _RELATIVE.match(value.strip().lower())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return now - timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: amount})
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise PlatformError(f"--since {value!r}: use a time like 2024-05-01, '2024-05-01 08:00', or an age like 30m, 12h, 7d, 2w") from None


def row_dict(row) -> dict:
    data = {
        c: getattr(row, c)
        for c in ("id", "raised_at", "run_id", "rule", "severity", "message", "metric", "value", "fingerprint", "acked_at")
    }
    data["delivered"] = json.loads(row.delivered) if row.delivered else []
    data["delivery_errors"] = json.loads(row.delivery_errors) if row.delivery_errors else {}
    return data


def list_alerts(conn: Connection, since: datetime | None, limit: int) -> list[dict]:
    """Alerts newest first."""
    query = select(alerts_table).order_by(alerts_table.c.id.desc()).limit(limit)
    if since is not None:
        query = query.where(alerts_table.c.raised_at >= since)
    return [row_dict(r) for r in conn.execute(query)]


def ack(conn: Connection, alert_id: int) -> tuple[dict, bool]:
    """Acknowledge an alert; returns it and whether it was newly acknowledged."""
    row = conn.execute(select(alerts_table).where(alerts_table.c.id == alert_id)).first()
    if row is None:
        raise PlatformError(f"alert {alert_id} not found; see python main.py alerts list")
    if row.acked_at is not None:
        return row_dict(row), False
    conn.execute(update(alerts_table).where(alerts_table.c.id == alert_id).values(acked_at=utcnow()))
    return row_dict(conn.execute(select(alerts_table).where(alerts_table.c.id == alert_id)).one()), True


def find_channel(settings: Settings, name: str) -> AlertChannel:
    for channel in settings.alerts.channels:
        if channel.name == name:
            return channel
    names = ", ".join(c.name for c in settings.alerts.channels) or "(none configured)"
    raise PlatformError(f"unknown channel '{name}'; choose from {names} (alerts.channels in the config)")


def send_test_alert(settings: Settings, name: str) -> Alert:
    """Send a test alert on one channel (whatever its min_severity); a failure is an error."""
    channel = find_channel(settings, name)
    alert = Alert(
        "test", "info", f"test alert from the Retail Data Platform on channel '{name}'", None, None, None, fingerprint("test", name)
    )
    alert.raised_at = utcnow()
    error = deliver(channel, alert.payload(), settings)
    if error is not None:
        raise PlatformError(f"channel '{name}' ({channel.type}) failed after {settings.alerts.max_retries + 1} attempt(s): {error}")
    alert.delivered.append(name)
    return alert
