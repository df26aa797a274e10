"""Job kinds other than ETL, and failure alerts: thin calls into other packages, imported lazily.

Quality checks and alerts live in `monitoring`, generated docs in `metadata`; when the package
providing a kind is not installed, running that kind fails with a clear, terminal error.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from sqlalchemy import Engine

from config.settings import Settings
from utils.errors import PlatformError, QualityGateError

log = logging.getLogger(__name__)


class KindUnavailableError(PlatformError):
    """The package that provides a job kind is not installed in this build."""


def _module(kind: str, name: str, what: str, needs: tuple[str, ...]) -> ModuleType:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise KindUnavailableError(
                f"job kind '{kind}' is not available: {what} ({name}) are not part of this installation yet"
            ) from None
        raise
    missing = [f for f in needs if not hasattr(module, f)]
    if missing:
        raise KindUnavailableError(f"job kind '{kind}' is not available: {name} has no {', '.join(missing)}()")
    return module


def _quality(engine: Engine, settings: Settings) -> str:
    """Evaluate every check over the warehouse, record the results; a blocking failure is terminal."""
    gate = _module("quality", "monitoring.gate", "quality checks", ("evaluate", "record"))
    with engine.begin() as conn:
        result = gate.evaluate(conn, settings)
        gate.record(conn, None, result)
    failed = [r.check for r in result.blocking_failures]
    if failed and settings.quality_rules.on_failure == "fail":
        raise QualityGateError(f"quality gate failed: blocking check(s) {', '.join(failed)}; see the quality results")
    return f"quality: {len(result.results)} checks, {len(failed)} blocking failure(s), {len(result.warnings)} warning(s)"


def _alerts(engine: Engine, settings: Settings) -> str:
    raised = _module("alerts", "monitoring.alerts", "alert rules", ("run_alerts",)).run_alerts(engine, settings)
    return f"alerts: {len(raised)} raised" + (": " + "; ".join(a.message for a in raised[:5]) if raised else "")


def _docs(engine: Engine, settings: Settings) -> str:
    out_dir = settings.resolve_path("docs")
    changed = _module("docs", "metadata.docs", "documentation generation", ("generate",)).generate(engine, out_dir)
    return f"docs: {sum(changed.values())} of {len(changed)} page(s) in {out_dir} changed"


# kind -> (module it needs, the call); the module is imported only when a job of the kind runs
OPTIONAL_KINDS: dict[str, tuple[str, Callable[[Engine, Settings], str]]] = {
    "quality": ("monitoring.gate", _quality),
    "alerts": ("monitoring.alerts", _alerts),
    "docs": ("metadata.docs", _docs),
}


def run_kind(kind: str, engine: Engine, settings: Settings) -> str:
    """Run a quality / alerts / docs job; returns a one-line summary for the history."""
    return OPTIONAL_KINDS[kind][1](engine, settings)


_last_sent: dict[tuple[str, str], float] = {}


def alert_failure(engine: Engine, settings: Settings, job_name: str, message: str) -> None:
    """Alert on a job that failed for good (bad data, quality gate, retries used up).

    Always logged at ERROR. Also sent on the configured alert channels (monitoring.alerts) when
    that package is installed, at most once per job and message within alerts.cooldown_minutes.
    """
    title = f"scheduled job '{job_name}' failed"
    log.error("ALERT %s: %s", title, message)
    key, now, cooldown = (job_name, message), time.monotonic(), settings.alerts.cooldown_minutes * 60
    for old in [k for k, sent in _last_sent.items() if now - sent >= cooldown]:
        del _last_sent[old]
    if key in _last_sent:
        return
    _last_sent[key] = now
    try:
        alerts = _module("alerts", "monitoring.alerts", "alert channels", ("Alert", "fingerprint", "send"))
        alerts.send(_channel_alert(alerts, job_name, f"{title}: {message}"), settings.alerts.channels, settings)
    except KindUnavailableError:
        return  # monitoring not installed: the ERROR log line is the alert
    except Exception as exc:  # a broken channel or module must not take the scheduler down; it is logged
        log.error("could not send the alert for job '%s': %s", job_name, exc)


def _channel_alert(alerts: ModuleType, job_name: str, message: str) -> Any:
    rule = "scheduler_job_failed"
    return alerts.Alert(
        rule=rule, severity="critical", message=message[:2000], metric=None, value=None, run_id=None,
        fingerprint=alerts.fingerprint(rule, job_name),
    )  # fmt: skip
