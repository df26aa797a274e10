"""Alert channels: log, file (JSON lines), webhook (HTTP POST of JSON) and e-mail (SMTP).

`deliver` retries a failing channel with exponential backoff and returns the last error
instead of raising: a broken channel is logged, never fatal to the caller (the ETL).
"""

from __future__ import annotations

import json
import logging
import time

from config.settings import AlertChannel, Settings
from utils.errors import PlatformError
from utils.files import private_open

log = logging.getLogger("monitoring.alerts")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
RETRY_BACKOFF_S = 0.5  # first retry delay; doubles on each retry
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class ChannelError(PlatformError):
    """A channel refused an alert (worth retrying)."""


class ChannelConfigError(ChannelError):
    """A channel lacks a setting it needs (retrying cannot help)."""


def wants(channel: AlertChannel, severity: str) -> bool:
    """Does this channel take alerts of this severity?"""
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[channel.min_severity]


def _log(channel: AlertChannel, payload: dict, settings: Settings) -> None:
    log.log(
        _LOG_LEVEL.get(payload["severity"], logging.WARNING), "ALERT %s [%s] %s", payload.get("id"), payload["severity"], payload["message"]
    )


def _file(channel: AlertChannel, payload: dict, settings: Settings) -> None:
    if not channel.path:
        raise ChannelConfigError(f"channel '{channel.name}': a file channel needs 'path'")
    with private_open(settings.resolve_path(channel.path), "a", parents=True) as fh:
        fh.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")


# The network senders import their modules when they send: a run whose alerts go to the log
# (the default) does not load the HTTP and mail stacks.
def _webhook(channel: AlertChannel, payload: dict, settings: Settings) -> None:
    import urllib.error
    import urllib.request

    if not channel.url:
        raise ChannelConfigError(f"channel '{channel.name}': a webhook channel needs 'url'")
    body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    request = urllib.request.Request(channel.url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=channel.timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"webhook answered HTTP {exc.code} {exc.reason}") from None


def _email(channel: AlertChannel, payload: dict, settings: Settings) -> None:
    import smtplib
    from email.message import EmailMessage

    if not (channel.smtp_host and channel.sender and channel.recipients):
        raise ChannelConfigError(f"channel '{channel.name}': an email channel needs smtp_host, sender and recipients")
    message = EmailMessage()
    message["Subject"] = f"[RDP {payload['severity']}] {payload['rule']}: {payload.get('metric') or payload['message'][:80]}"
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message.set_content(payload["message"] + "\n\n" + json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    with smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_s) as smtp:
        smtp.send_message(message)


SENDERS = {"log": _log, "file": _file, "webhook": _webhook, "email": _email}


def _network_errors() -> tuple[type[Exception], ...]:
    import http.client
    import smtplib

    return (OSError, smtplib.SMTPException, http.client.HTTPException)


def deliver(channel: AlertChannel, payload: dict, settings: Settings) -> str | None:
    """Send one alert on one channel, retrying up to alerts.max_retries times with backoff.
    Returns None when it was accepted, else the last error (logged, never raised)."""
    retries = settings.alerts.max_retries
    error = "not sent"
    for attempt in range(retries + 1):
        try:
            SENDERS[channel.type](channel, payload, settings)
            return None
        except (ChannelConfigError, ValueError) as exc:  # misconfigured (missing setting, malformed URL): retrying cannot help
            error = f"{type(exc).__name__}: {exc}" if isinstance(exc, ValueError) else str(exc)
            break
        except (ChannelError, *_network_errors()) as exc:  # evaluated only when something was raised
            error = str(exc) if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            log.warning("alert channel '%s' failed (%s); retry %d of %d", channel.name, error, attempt + 1, retries)
            time.sleep(RETRY_BACKOFF_S * 2**attempt)
    log.error("alert channel '%s' failed: %s", channel.name, error)
    return error
