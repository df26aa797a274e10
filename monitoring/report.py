"""`quality report`: scores, failing checks with samples, quarantine by reason, trends and
anomalies, as plain text, Markdown, or one self-contained HTML page with inline SVG charts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from html import escape

from sqlalchemy import Connection

from config.settings import Settings
from monitoring import charts
from monitoring.anomaly import MetricStatus, detect
from monitoring.checks import DIMENSIONS
from monitoring.history import (
    ProfileChanges,
    RunPoint,
    evaluation,
    latest_evaluation,
    quarantine_by_reason,
    recent_runs,
    require_run,
    run_profile_changes,
    scores_of,
)  # fmt: skip
from utils.errors import PlatformError

FORMATS = ("text", "markdown", "html", "json")
MAX_TREND_CHECKS = 8


@dataclass
class Report:
    """Everything a report shows."""

    generated_at: datetime
    backend: str
    run_id: int | None
    checked_at: datetime
    results: list[dict]
    scores: dict[str, float]
    quarantine: dict[str, int]
    trend: list[RunPoint]
    anomalies: list[MetricStatus]
    min_history: int = 5
    drift: ProfileChanges | None = None
    basis: str = "run"  # run (asked for with --run) | latest check | latest run: which evaluation the report shows

    def drift_lines(self) -> list[str]:
        """Header changes and values never seen before, of the run reported on."""
        if self.run_id is None:
            return ["(judged per ETL run; this evaluation covers the whole warehouse)"]
        if self.drift is None:
            return ["(the run recorded no source profile)"]
        lines = (
            [f"HEADER CHANGED {self.drift.header_message(self.run_id)}"] if self.drift.drifted else ["header as in the feed's previous run"]
        )
        lines += [
            f"NEW {column}: {', '.join(values)} (never seen before; quality_rules.new_value_columns)"
            for column, values in self.drift.new_values.items()
        ]
        return lines if self.drift.drifted or self.drift.new_values else [*lines, "no value never seen before"]

    @property
    def failing(self) -> list[dict]:
        return [r for r in self.results if not r["passed"]]

    def dimension_status(self, dimension: str) -> tuple[str, int, int]:
        """('ok' | 'warning' | 'failed', checks passed, checks) of one dimension: failed when a
        blocking check of it failed, warning when only warning checks did."""
        mine = [r for r in self.results if r["dimension"] == dimension]
        failed = [r for r in mine if not r["passed"]]
        status = "failed" if any(r["severity"] == "blocking" for r in failed) else "warning" if failed else "ok"
        return status, len(mine) - len(failed), len(mine)

    @property
    def scope(self) -> str:
        """What the evaluation covered: one run's rows, or the whole warehouse (a `quality check`)."""
        return f"run {self.run_id}" if self.run_id is not None else "the whole warehouse"

    @property
    def subject(self) -> str:
        """Which evaluation this is: without --run, the newest of the latest quality check and the
        latest ETL run's gate, said as such."""
        if self.basis == "latest check":
            return "the latest quality check, of the whole warehouse"
        if self.basis == "latest run":
            return f"run {self.run_id}, the latest ETL run"
        return self.scope

    def moved_checks(self) -> list[str]:
        """Checks worth a line in the check trend: anomalous, failing, or varying over the runs."""
        flagged = [s.metric[len("check.") :] for s in self.anomalies if s.status == "anomaly" and s.metric.startswith("check.")]
        failing = [r["check_name"] for r in self.failing if any(r["check_name"] in p.checks for p in self.trend)]
        spans = {}
        for name in {n for p in self.trend for n in p.checks}:
            values = [p.checks[name] for p in self.trend if name in p.checks]
            if max(values) - min(values) >= 0.001:
                spans[name] = max(values) - min(values)
        ordered = list(dict.fromkeys(flagged + sorted(spans, key=lambda n: -spans[n]) + failing))
        return ordered[:MAX_TREND_CHECKS]


def build_report(conn: Connection, settings: Settings, run_id: int | None = None, now: datetime | None = None) -> Report:
    """Collect the report of run `run_id` (default: the latest evaluation, a `quality check` of the
    whole warehouse or an ETL run's gate, whichever is newer)."""
    if run_id is not None:
        require_run(conn, run_id)
    evaluation_id = latest_evaluation(conn, run_id)
    if evaluation_id is None:
        if run_id is not None:
            raise PlatformError(
                f"run {run_id} has no quality results; quality is checked by the ETL gate or by python main.py quality check"
            )
        raise PlatformError("no quality results yet; run python main.py quality check (or load data with etl)")
    results = evaluation(conn, evaluation_id)
    subject = results[0]["run_id"]
    window = settings.quality_rules.anomaly_window
    trend = recent_runs(conn, subject, window)
    anomalies = detect(conn, settings, subject) if subject is not None else []
    return Report(
        now or datetime.now(UTC).replace(tzinfo=None, microsecond=0), conn.dialect.name, subject, results[0]["checked_at"], results,
        scores_of(results), quarantine_by_reason(conn, subject), trend, anomalies, settings.quality_rules.anomaly_min_history,
        run_profile_changes(conn, subject) if subject is not None else None,
        "run" if run_id is not None else "latest check" if subject is None else "latest run",
    )  # fmt: skip


def render(report: Report, fmt: str) -> str:
    if fmt not in FORMATS:
        raise PlatformError(f"unknown report format '{fmt}'; choose from {', '.join(FORMATS)}")
    return {"text": render_text, "markdown": render_markdown, "html": render_html, "json": render_json}[fmt](report)


def render_json(report: Report) -> str:
    """The report's data for scripts: one JSON object."""
    dimensions = {d: dict(zip(("status", "passed", "checks"), report.dimension_status(d), strict=True)) for d in report.scores}
    data = {
        "subject": report.subject, "basis": report.basis, "run_id": report.run_id, "scope": report.scope,
        "backend": report.backend, "checked_at": report.checked_at, "generated_at": report.generated_at,
        "scores": report.scores, "dimensions": dimensions, "checks": report.results,
        "failing": [r["check_name"] for r in report.failing], "quarantine": report.quarantine,
        "trend": [asdict(p) for p in report.trend], "anomalies": [asdict(a) for a in report.anomalies],
        "drift": asdict(report.drift) if report.drift is not None else None,
    }  # fmt: skip
    return json.dumps(data, default=_json_value, indent=2) + "\n"


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# -- text -------------------------------------------------------------------------------------


def _bar(score: float, width: int = 20) -> str:
    filled = round(max(0.0, min(score, 1.0)) * width)
    return "#" * filled + "." * (width - filled)


def _sample_lines(result: dict, indent: str) -> list[str]:
    return [f"{indent}e.g. {s}" for s in result["samples"]]


def render_text(report: Report) -> str:
    lines = [
        f"Data quality report: {report.subject} ({report.backend}), checked {report.checked_at:%Y-%m-%d %H:%M:%S} UTC",
        f"generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC",
        *_basis_line(report),
        "",
        "Scores by dimension",
    ]
    for dim, score in report.scores.items():
        status, passed, total = report.dimension_status(dim)
        lines.append(f"  {dim:<13} {score:.4f}  {_bar(score)}  {status:<7} ({passed} of {total} checks passed)")
    failed_blocking = sum(1 for r in report.failing if r["severity"] == "blocking")
    lines += ["", f"Checks: {len(report.results)} run, {len(report.results) - len(report.failing)} passed, "
              f"{failed_blocking} blocking and {len(report.failing) - failed_blocking} warning failed"]  # fmt: skip
    for r in report.failing:
        lines.append(
            f"  FAIL [{r['severity']}] {r['check_name']}: score {r['measured']:.4f} < {r['threshold']:.4f}, {r['offending']:,} of {r['total']:,} offending"
        )
        lines += _sample_lines(r, "      ")
    lines += ["", f"Quarantine by reason ({report.scope})"]
    lines += [f"  {reason:<22} {n:>10,}" for reason, n in report.quarantine.items()] or ["  (none)"]
    lines += ["", f"Trend over the last {len(report.trend)} runs"]
    header = f"  {'run':>5} " + " ".join(f"{d[:12]:>12}" for d in DIMENSIONS) + f" {'read':>10} {'loaded':>10} {'quarantined':>11}"
    lines.append(header)
    for p in report.trend:
        cells = " ".join(f"{p.scores[d]:>12.4f}" if d in p.scores else f"{'-':>12}" for d in DIMENSIONS)
        lines.append(f"  {p.run_id:>5} {cells} {p.rows_read:>10,} {p.rows_loaded:>10,} {p.rows_quarantined:>11,}")
    lines += ["", "Anomalies", *_anomaly_lines(report, "  ")]
    lines += ["", "Source drift", *(f"  {line}" for line in report.drift_lines())]
    return "\n".join(lines) + "\n"


def _basis_line(report: Report) -> list[str]:
    if report.basis == "run":
        return []
    return ["(without --run: the newest evaluation, of the latest quality check or the latest ETL run; --run N shows another run)"]


def _anomaly_lines(report: Report, indent: str) -> list[str]:
    if report.run_id is None:
        return [f"{indent}(anomalies are judged per ETL run; this evaluation covers the whole warehouse)"]
    found = [s for s in report.anomalies if s.status == "anomaly"]
    short = [s for s in report.anomalies if s.status == "insufficient_history"]
    lines = [f"{indent}ANOMALY {s.message}" for s in found]
    if short:
        lines.append(
            f"{indent}insufficient history: {len(short)} metric(s) not judged yet (quality scores from one earlier run; reject rates "
            f"and revenue from {report.min_history}, quality_rules.anomaly_min_history)"
        )
    normal = len(report.anomalies) - len(found) - len(short)
    lines.append(f"{indent}{normal} metric(s) within their normal range")
    return lines


# -- markdown ---------------------------------------------------------------------------------


def _md_table(header: list[str], rows: list[list[object]]) -> list[str]:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows
    ]


def _passed_of(report: Report, dimension: str) -> str:
    _, passed, total = report.dimension_status(dimension)
    return f"{passed} of {total}"


def _md_status(status: str) -> str:
    return status if status == "ok" else f"**{status}**"


def render_markdown(report: Report) -> str:
    out = [
        f"# Data quality report: {report.subject}",
        "",
        f"Warehouse: {report.backend}. Checked {report.checked_at:%Y-%m-%d %H:%M:%S} UTC; generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC.",
        "",
        "## Scores by dimension",
        "",
    ]
    out += _md_table(
        ["dimension", "score", "status", "checks passed"],
        [[d, f"{s:.4f}", _md_status(report.dimension_status(d)[0]), _passed_of(report, d)] for d, s in report.scores.items()],
    )
    out += ["", f"## Failing checks ({len(report.failing)})", ""]
    if report.failing:
        out += _md_table(
            ["check", "severity", "score", "threshold", "offending", "samples"],
            [[f"`{r['check_name']}`", r["severity"], f"{r['measured']:.4f}", f"{r['threshold']:g}", f"{r['offending']:,} of {r['total']:,}",
              "; ".join(r["samples"])] for r in report.failing],
        )  # fmt: skip
    else:
        out.append("None: every check passed.")
    out += ["", f"## Quarantine by reason ({report.scope})", ""]
    out += _md_table(["reason", "rows"], [[f"`{k}`", f"{v:,}"] for k, v in report.quarantine.items()]) if report.quarantine else ["Empty."]
    out += ["", f"## Trend over the last {len(report.trend)} runs", ""]
    out += _md_table(
        ["run", *DIMENSIONS, "rows read", "loaded", "quarantined"],
        [[p.run_id, *(f"{p.scores[d]:.4f}" if d in p.scores else "-" for d in DIMENSIONS), f"{p.rows_read:,}", f"{p.rows_loaded:,}",
          f"{p.rows_quarantined:,}"] for p in report.trend],
    )  # fmt: skip
    out += ["", "## Anomalies", ""] + [f"- {line.strip()}" for line in _anomaly_lines(report, "")]
    out += ["", "## Source drift", ""] + [f"- {line}" for line in report.drift_lines()]
    out += ["", f"## All checks ({len(report.results)})", ""]
    out += _md_table(
        ["check", "dimension", "severity", "score", "threshold", "passed", "offending", "total"],
        [[f"`{r['check_name']}`", r["dimension"], r["severity"], f"{r['measured']:.4f}", f"{r['threshold']:g}", "yes" if r["passed"] else "**no**",
          f"{r['offending']:,}", f"{r['total']:,}"] for r in report.results],
    )  # fmt: skip
    return "\n".join(out) + "\n"


# -- html -------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#111827;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#6b7280;font-size:13px}.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.tile{border-radius:8px;padding:10px 14px;min-width:130px;background:#f0fdf4;border:1px solid #bbf7d0}
.tile.failed{background:#fef2f2;border-color:#fecaca}.tile.warning{background:#fffbeb;border-color:#fde68a}.tile .v{font-size:24px;font-weight:650}.tile .d{font-size:12px;color:#374151}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb}.bad{color:#b91c1c;font-weight:600}.ok{color:#15803d}code{font-size:12px}
.charts svg{display:block;margin:12px 0;max-width:100%;height:auto;font-family:inherit}.note{color:#6b7280;font-size:13px}
"""


def _tiles(report: Report) -> str:
    tiles = []
    for dim, score in report.scores.items():
        status, passed, total = report.dimension_status(dim)
        tiles.append(
            f'<div class="tile {status}" data-dimension="{dim}" data-score="{score:.6f}"><div class="v">{score:.3f}</div>'
            f'<div class="d">{dim}: {passed} of {total} checks passed</div></div>'
        )
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _charts(report: Report) -> str:
    labels = [str(p.run_id) for p in report.trend]
    dims = {d: [p.scores.get(d) for p in report.trend] for d in DIMENSIONS if any(d in p.scores for p in report.trend)}
    checks = {n: [p.checks.get(n) for p in report.trend] for n in report.moved_checks()}
    flagged = {s.metric for s in report.anomalies if s.status == "anomaly"}
    last = len(report.trend) - 1
    dim_marks = {d: last for d in dims if f"score.{d}" in flagged}
    check_marks = {n: last for n in checks if f"check.{n}" in flagged}
    parts = [
        charts.line_chart(
            "Quality score trend", "score-trend", labels, dims, (0.0, 1.0), dim_marks, "no run has quality results yet (the ETL records them per run)"
        ),
        charts.line_chart("Check score trend", "check-trend", labels, checks, (0.0, 1.0), check_marks)
        if checks
        else charts.empty_chart("Check score trend", "check-trend", "no check moved over these runs"),
        charts.bar_chart("Rejects by reason", "rejects", list(report.quarantine.items())),
        charts.stacked_bar_chart(
            "Rows per run", "rows", labels,
            {"loaded": [float(p.rows_loaded) for p in report.trend], "quarantined": [float(p.rows_quarantined) for p in report.trend],
             "already loaded": [float(p.rows_already_loaded) for p in report.trend]},
        ),
    ]  # fmt: skip
    return '<section class="charts">' + "\n".join(parts) + "</section>"


def render_html(report: Report) -> str:
    failing = _html_table(
        ["check", "severity", "score", "threshold", "offending", "samples"],
        [[f"<code>{escape(r['check_name'])}</code>", escape(r["severity"]), f'<span class="bad">{r["measured"]:.4f}</span>', f"{r['threshold']:g}",
          f"{r['offending']:,} of {r['total']:,}", "<br>".join(escape(s) for s in r["samples"])] for r in report.failing],
        "failing",
    ) if report.failing else '<p class="ok">Every check passed.</p>'  # fmt: skip
    quarantine = _html_table(
        ["reason", "rows"], [[f"<code>{escape(k)}</code>", f"{v:,}"] for k, v in report.quarantine.items()], "quarantine"
    )
    anomalies = "".join(f"<li>{escape(line.strip())}</li>" for line in _anomaly_lines(report, ""))
    every = _html_table(
        ["check", "dimension", "table", "severity", "score", "threshold", "passed", "offending / total"],
        [[f"<code>{escape(r['check_name'])}</code>", r["dimension"], escape(r["table_name"]), r["severity"], f"{r['measured']:.4f}", f"{r['threshold']:g}",
          '<span class="ok">yes</span>' if r["passed"] else '<span class="bad">no</span>', f"{r['offending']:,} / {r['total']:,}"] for r in report.results],
        "checks",
    )  # fmt: skip
    title = f"Data quality report: {report.subject}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">Warehouse: {escape(report.backend)} · checked {report.checked_at:%Y-%m-%d %H:%M:%S} UTC · generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC</p>
<h2>Scores by dimension</h2>
{_tiles(report)}
<h2>Trends</h2>
{_charts(report)}
<h2>Failing checks ({len(report.failing)})</h2>
{failing}
<h2>Quarantine by reason</h2>
{quarantine if report.quarantine else '<p class="note">The quarantine is empty.</p>'}
<h2>Anomalies</h2>
<ul>{anomalies}</ul>
<h2>Source drift</h2>
<ul>{"".join(f"<li>{escape(line)}</li>" for line in report.drift_lines())}</ul>
<h2>All checks ({len(report.results)})</h2>
<details><summary>show all {len(report.results)} checks</summary>{every}</details>
</body></html>
"""
