"""Alerts end to end: a real local HTTP server takes the webhooks, a real local SMTP server (a
small socketserver sink started here) takes the e-mails; no mocks. Includes the planted quality
drop: several loads, then one with 20 % of the CustomerIDs blanked -> exactly one alert per
channel, nothing new on a second `alerts run`, and the drop in the HTML report's trend chart."""

from __future__ import annotations

import csv
import email
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from email.message import Message
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from config.settings import Settings
from database.engine import make_engine
from monitoring import channels
from monitoring.alerts import Alert, fingerprint, run_alerts, send
from sampledata.generator import generate_sales
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json
from tests.test_quality_checks import settings_for

# -- real local servers -------------------------------------------------------------------------


class _HookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: HookServer = self.server  # type: ignore[assignment]
        server.attempts += 1
        if server.fail_first > 0:
            server.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        server.received.append({"content_type": self.headers.get("Content-Type"), "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class HookServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.received: list[dict] = []
        self.attempts = 0
        self.fail_first = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: greeting, EHLO, MAIL, RCPT, DATA, QUIT."""

    def _reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())

    def handle(self) -> None:
        self._reply("220 sink.test ESMTP")
        envelope: dict = {"to": []}
        while line := self.rfile.readline():
            command = line.decode("ascii", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250 sink.test")
            elif verb == "MAIL":
                envelope["from"] = command
                self._reply("250 OK")
            elif verb == "RCPT":
                envelope["to"].append(command)
                self._reply("250 OK")
            elif verb in ("RSET", "NOOP"):
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                self._read_message(envelope)
                envelope = {"to": []}
                self._reply("250 OK queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:
                self._reply("502 not implemented")

    def _read_message(self, envelope: dict) -> None:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        message = email.message_from_bytes(b"".join(lines))
        self.server.received.append((envelope, message))  # type: ignore[attr-defined]


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.received: list[tuple[dict, Message]] = []

    @property
    def port(self) -> int:
        return self.server_address[1]


def _serve(server: socketserver.BaseServer) -> Iterator:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def hook() -> Iterator[HookServer]:
    yield from _serve(HookServer())


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from _serve(SmtpServer())


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "RETRY_BACKOFF_S", 0.01)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def channel_config(hook: HookServer, smtp: SmtpServer, tmp_path: Path) -> list[dict]:
    return [
        {"name": "log", "type": "log"},
        {"name": "jsonl", "type": "file", "path": str(tmp_path / "alerts.jsonl")},
        {"name": "hook", "type": "webhook", "url": hook.url, "timeout_s": 5},
        {"name": "mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "sender": "rdp@example.test",
         "recipients": ["ops@example.test", "data@example.test"]},
    ]  # fmt: skip


def alert_settings(url: str, chans: list[dict], **alerts: object) -> Settings:
    return settings_for(url, {"alerts": {"channels": chans, **alerts}})


def sample_alert(severity: str = "critical") -> Alert:
    return Alert("check_failed", severity, "blocking check x failed", "accuracy.fact_sales.line_total", 0.5, 7, fingerprint("t", "x"), id=1)


# -- channels -----------------------------------------------------------------------------------


def test_every_channel_delivers_to_a_real_endpoint(hook: HookServer, smtp: SmtpServer, tmp_path: Path, caplog) -> None:
    settings = alert_settings("sqlite://", channel_config(hook, smtp, tmp_path))
    alert = sample_alert()
    with caplog.at_level(logging.WARNING, logger="monitoring.alerts"):
        send(alert, settings.alerts.channels, settings)
    assert alert.delivered == ["log", "jsonl", "hook", "mail"] and alert.errors == {}
    assert len(hook.received) == 1
    assert hook.received[0]["content_type"] == "application/json"
    body = hook.received[0]["body"]
    assert (body["rule"], body["severity"], body["metric"], body["run_id"], body["source"]) == (
        "check_failed", "critical", "accuracy.fact_sales.line_total", 7, "retail-data-platform",
    )  # fmt: skip
    assert len(smtp.received) == 1
    envelope, message = smtp.received[0]
    assert "[RDP critical] check_failed" in message["Subject"]
    assert message["To"] == "ops@example.test, data@example.test" and len(envelope["to"]) == 2
    assert "blocking check x failed" in message.get_payload()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(x)["message"] for x in lines] == ["blocking check x failed"]
    assert [r.message for r in caplog.records if r.name == "monitoring.alerts"] == ["ALERT 1 [critical] blocking check x failed"]


def test_min_severity_filters(hook: HookServer, tmp_path: Path) -> None:
    chans = [{"name": "hook", "type": "webhook", "url": hook.url, "min_severity": "critical"}]
    settings = alert_settings("sqlite://", chans)
    warning = sample_alert("warning")
    send(warning, settings.alerts.channels, settings)
    assert warning.delivered == [] and hook.received == []
    critical = sample_alert("critical")
    send(critical, settings.alerts.channels, settings)
    assert critical.delivered == ["hook"] and len(hook.received) == 1


def test_failing_channel_is_retried_and_never_raises(hook: HookServer, tmp_path: Path, caplog) -> None:
    hook.fail_first = 2
    chans = [
        {"name": "flaky", "type": "webhook", "url": hook.url},
        {"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/x", "timeout_s": 1},
        {"name": "mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": closed_port(), "sender": "a@b.c", "recipients": ["d@e.f"]},
        {"name": "nourl", "type": "webhook"},
        {"name": "badurl", "type": "webhook", "url": "not a url"},
    ]
    settings = alert_settings("sqlite://", chans, max_retries=2)
    alert = sample_alert()
    send(alert, settings.alerts.channels, settings)
    assert alert.delivered == ["flaky"] and hook.attempts == 3 and len(hook.received) == 1
    assert set(alert.errors) == {"down", "mail", "nourl", "badurl"}
    assert alert.errors["badurl"].startswith("ValueError: unknown url type")
    assert "Connection refused" in alert.errors["down"] or "refused" in alert.errors["down"].lower()
    assert "needs 'url'" in alert.errors["nourl"]
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 + 2 + 2  # flaky, down, mail: two retries each; a misconfigured channel is not retried


# -- rules, de-duplication, commands ----------------------------------------------------------


@pytest.fixture
def loaded(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> str:
    """ROWS loaded and checked once: a duplicate and bad rows fail checks (the 2010 dates are old, but data
    recency is off by default)."""
    etl_json(run_cli, write_csv(tmp_path / "sales.csv", ROWS))
    result = run_cli("quality", "check", "--format", "json")
    assert result.exit_code == 1  # accuracy.source.business_rules blocks: 2 of 12 rows break the rules
    engine = make_engine(settings_for(warehouse_url, {}).database)
    with engine.begin() as conn:  # the load raised its own alerts (log channel); start each test afresh
        conn.execute(text("DELETE FROM alerts"))
    engine.dispose()
    return warehouse_url


def test_run_alerts_raises_stores_and_dedupes(loaded: str, hook: HookServer, tmp_path: Path) -> None:
    chans = [{"name": "hook", "type": "webhook", "url": hook.url}]
    settings = alert_settings(loaded, chans)
    engine = make_engine(settings.database)
    raised = run_alerts(engine, settings)
    rules = sorted((a.rule, a.metric, a.severity) for a in raised)
    assert rules == [
        ("check_failed", "accuracy.source.business_rules", "critical"),
        ("check_failed", "uniqueness.source.exact_duplicates", "warning"),
    ]
    assert all(a.message.endswith("threshold set by quality_rules.accuracy") for a in raised if a.metric.startswith("accuracy."))
    duplicates = next(a for a in raised if a.metric.startswith("uniqueness."))
    assert "threshold set by quality_rules.checks.uniqueness.source.exact_duplicates.threshold (default 0.98)" in duplicates.message
    assert all(a.id and a.delivered == ["hook"] for a in raised)
    assert sorted(m["body"]["id"] for m in hook.received) == sorted(a.id for a in raised)
    assert run_alerts(engine, settings) == []  # within the cool-down
    assert len(hook.received) == 2
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT rule, delivered, delivery_errors, acked_at FROM alerts ORDER BY id")).all()
    assert [(r[0], json.loads(r[1]), r[2], r[3]) for r in stored] == [("check_failed", ["hook"], None, None)] * 2
    again = run_alerts(engine, alert_settings(loaded, chans, cooldown_minutes=0))
    assert len(again) == 2 and len(hook.received) == 4
    engine.dispose()


def test_alert_commands(loaded: str, run_cli: Cli, hook: HookServer, tmp_path: Path) -> None:
    config = tmp_path / "alerts.yaml"
    chans = [
        {"name": "hook", "type": "webhook", "url": hook.url},
        {"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/"},
    ]
    config.write_text(yaml.safe_dump({"alerts": {"channels": chans, "max_retries": 1}}))
    cli = ["--config", str(config)]

    result = run_cli(*cli, "alerts", "run", "--format", "json")
    assert result.exit_code == 0, result.output
    raised = json.loads(result.stdout)
    assert len(raised) == 2 and all(a["delivered"] == ["hook"] and "down" in a["errors"] for a in raised)
    skipped = [a for a in raised if a["errors"]["down"].startswith("not tried: the channel failed for an earlier alert")]
    assert len(skipped) == 1  # a dead channel costs its retries once per batch, not once per alert
    assert "0 new alert(s)" in run_cli(*cli, "alerts", "run").stdout

    listed = json.loads(run_cli("alerts", "list", "--format", "json").stdout)
    assert [a["id"] for a in listed] == sorted((a["id"] for a in raised), reverse=True)
    assert json.loads(run_cli("alerts", "list", "--since", "1h", "--format", "json").stdout) == listed
    assert json.loads(run_cli("alerts", "list", "--since", "2999-01-01", "--format", "json").stdout) == []
    bad = run_cli("alerts", "list", "--since", "yesterday")
    assert bad.exit_code == 1 and "Error: --since 'yesterday': use a time like" in bad.output

    first = listed[-1]["id"]
    acked = run_cli("alerts", "ack", str(first), "--format", "json")
    assert acked.exit_code == 0 and json.loads(acked.stdout)["acked_at"]
    assert "already acknowledged" in run_cli("alerts", "ack", str(first)).stdout
    missing = run_cli("alerts", "ack", "999")
    assert missing.exit_code == 1 and "Error: alert 999 not found" in missing.output

    ok = run_cli(*cli, "alerts", "test", "--channel", "hook")
    assert ok.exit_code == 0 and "delivered on channel 'hook'" in ok.stdout
    assert hook.received[-1]["body"]["rule"] == "test"
    down = run_cli(*cli, "alerts", "test", "--channel", "down")
    assert down.exit_code == 1 and "Error: channel 'down' (webhook) failed after 2 attempt(s)" in down.output
    unknown = run_cli(*cli, "alerts", "test", "--channel", "pager")
    assert unknown.exit_code == 1 and "Error: unknown channel 'pager'; choose from hook, down" in unknown.output
    no_run = run_cli("alerts", "run", "--run", "99")
    assert no_run.exit_code == 1 and "Error: run 99 not found" in no_run.output
    assert "Traceback" not in no_run.output + unknown.output + missing.output


def test_failed_run_rule(loaded: str) -> None:
    settings = alert_settings(loaded, [{"name": "log", "type": "log"}])
    engine = make_engine(settings.database)
    with engine.begin() as conn:
        conn.execute(text("UPDATE etl_runs SET status = 'failed', message = 'quality gate: blocking checks failed' WHERE run_id = 1"))
    raised = run_alerts(engine, settings, run_id=1)
    engine.dispose()
    run_failed = [a for a in raised if a.rule == "run_failed"]
    assert len(run_failed) == 1 and run_failed[0].severity == "critical"
    assert "run 1 (etl) failed: quality gate" in run_failed[0].message


# -- the planted drop ---------------------------------------------------------------------------


def _slices(tmp_path: Path, parts: int, rows_each: int) -> list[Path]:
    """One generated extract dealt round-robin into `parts` files (same profile each); the last
    one has every fifth CustomerID blanked (20 % of them)."""
    source = tmp_path / "all.csv"
    generate_sales(source, parts * rows_each, 7)
    with open(source, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    files = []
    for part in range(parts):
        chunk = rows[part::parts]
        if part == parts - 1:
            with_id = [r for r in chunk if r[6]]
            for row in with_id[::5]:
                row[6] = ""
        files.append(write_csv(tmp_path / f"part{part}.csv", chunk, header))
    return files


class _SvgReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict] = {}
        self._current: dict | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "svg":
            self._current = {"slug": a.get("data-chart"), "title": "", "series": {}, "anomalies": []}
        elif self._current is not None and tag == "title" and not self._current["title"]:
            self._in_title = True
        elif self._current is not None and tag in ("polyline", "g") and "data-series" in a:
            self._current["series"][a["data-series"]] = [float(v) if v else None for v in a["data-values"].split(",")]
        elif self._current is not None and tag == "circle" and a.get("class") == "anomaly":
            self._current["anomalies"].append(a["data-series"])

    def handle_data(self, data: str) -> None:
        if self._in_title and self._current is not None:
            self._current["title"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag == "svg" and self._current is not None:
            self.charts[self._current["title"]] = self._current
            self._current = None


def test_planted_drop_raises_one_alert_per_channel(
    run_cli: Cli, warehouse_url: str, hook: HookServer, smtp: SmtpServer, tmp_path: Path, caplog
) -> None:
    settings = alert_settings(warehouse_url, channel_config(hook, smtp, tmp_path))
    engine = make_engine(settings.database)
    files = _slices(tmp_path, 6, 3000)
    jsonl = tmp_path / "alerts.jsonl"
    config = tmp_path / "alerts.yaml"
    config.write_text(yaml.safe_dump({"alerts": {"channels": channel_config(hook, smtp, tmp_path)}}))
    for number, path in enumerate(files, start=1):
        if number == len(files):  # count only what the planted load raises
            hook.received.clear()
            smtp.received.clear()
            jsonl.unlink(missing_ok=True)
            caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monitoring.alerts"):
            result = run_cli("--config", str(config), "etl", "--source", str(path), "--format", "json")  # the ETL gates, records and alerts
        assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        last_run = conn.execute(text("SELECT MAX(run_id) FROM etl_runs")).scalar_one()
        rows = conn.execute(text("SELECT rule, metric, run_id FROM alerts WHERE run_id = :r"), {"r": last_run}).all()
    raised = [Alert(r[0], "warning", "", r[1], 0.0, r[2], "") for r in rows]
    summary = {"run_id": last_run}
    assert [a.rule for a in raised] == ["anomaly"]
    assert raised[0].metric == "check.completeness.source.customer_id"
    assert len(hook.received) == 1 and hook.received[0]["body"]["metric"] == "check.completeness.source.customer_id"
    assert len(smtp.received) == 1 and "anomaly" in smtp.received[0][1]["Subject"]
    assert len(jsonl.read_text().splitlines()) == 1
    assert len([r for r in caplog.records if r.getMessage().startswith("ALERT")]) == 1
    assert run_alerts(engine, settings, summary["run_id"]) == []  # a second run within the cool-down
    assert len(hook.received) == 1 and len(smtp.received) == 1
    engine.dispose()

    report = tmp_path / "report.html"
    result = run_cli("quality", "report", "--format", "html", "--output", str(report))
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert "http" not in page.lower().replace("http-equiv", "") and "<script" not in page
    reader = _SvgReader()
    reader.feed(page)
    assert {"Quality score trend", "Check score trend", "Rejects by reason", "Rows per run"} <= set(reader.charts)
    trend = reader.charts["Check score trend"]
    customer = trend["series"]["completeness.source.customer_id"]
    assert len(customer) == 6 and customer[-1] < 0.85 * min(customer[:-1])
    assert trend["anomalies"] == ["completeness.source.customer_id"]
    rows = reader.charts["Rows per run"]["series"]
    assert rows["loaded"][-1] > 0 and len(rows["loaded"]) == 6

    markdown = run_cli("quality", "report", "--format", "markdown").stdout
    assert "ANOMALY check.completeness.source.customer_id" in markdown
