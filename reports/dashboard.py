"""`report dashboard`: one self-contained HTML page of the retail reports.

Inline CSS and inline SVG charts (monitoring/charts.py), no script and no external resource, so
the page opens anywhere without a network. All figures come from one snapshot of the warehouse
through the query cache; the latest quality score is read from quality_results as it is now
(it changes without a new data version, so it is never cached).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import inspect

from monitoring import charts
from performance.service import QueryService
from reports import analytics as a
from reports.output import cell, write_output
from utils.urls import mask_url

TOP_PRODUCTS, TOP_COUNTRIES = 10, 10


@dataclass
class Quality:
    """The latest quality evaluation: when, of which run, its score per dimension and overall."""

    checked_at: datetime
    run_id: int | None
    scores: dict[str, float]
    checks: int
    passed: int

    @property
    def overall(self) -> float:
        """The mean of the dimension scores."""
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


@dataclass
class Dashboard:
    """Everything the page shows."""

    generated_at: datetime
    backend: str
    warehouse: str
    freshness: dict[str, Any]
    quality: Quality | None
    totals: dict[str, Any]
    months: a.Report
    products: a.Report
    countries: a.Report
    returns: a.Report
    segments: a.Report
    cohorts: a.Report

    @property
    def cache(self) -> str:
        return self.months.cache

    @property
    def data_version(self) -> str:
        return self.months.data_version


def build_dashboard(service: QueryService, use_cache: bool = True) -> Dashboard:
    """Ask the warehouse every figure of the dashboard (one snapshot), then its quality score."""
    plans = [
        a.sales_plan("month"),
        a.products_plan(TOP_PRODUCTS),
        a.countries_plan(),
        a.returns_plan("country"),
        a.rfm_plan(),
        a.cohorts_plan(),
    ]
    answer = a.ask(service, [query for plan in plans for query in plan.queries], use_cache)
    months, products, countries, returns, segments, cohorts = a.build_all(plans, answer)
    w = answer.warehouse
    freshness = {
        "first_date": a.date_of(w["first_key"]),
        "last_date": a.date_of(w["last_key"]),
        "latest_transaction": a.to_datetime(w["latest_transaction"]),
        "last_load": a.to_datetime(w["last_load"]),
    }
    totals = {**months.summary, **returns.summary, "customers": sum(r["customers"] for r in segments.rows)}
    return Dashboard(
        datetime.now(UTC).replace(tzinfo=None, microsecond=0), service.dialect, mask_url(service.warehouse_id), freshness,
        latest_quality(service), totals, months, products, countries, returns, segments, cohorts,
    )  # fmt: skip


def latest_quality(service: QueryService) -> Quality | None:
    """The newest quality evaluation of the warehouse (None when it has none, or no quality tables)."""
    from monitoring.history import evaluation, latest_evaluation, scores_of

    with service.read_only() as (conn, _version):
        if not inspect(conn).has_table("quality_results"):
            return None  # a warehouse set up before quality checks existed
        evaluation_id = latest_evaluation(conn)
        results = evaluation(conn, evaluation_id) if evaluation_id is not None else []
    if not results:
        return None
    passed = sum(1 for r in results if r["passed"])
    return Quality(a.to_datetime(results[0]["checked_at"]), results[0]["run_id"], scores_of(results), len(results), passed)


def write_dashboard(service: QueryService, path: Path, use_cache: bool = True) -> dict[str, Any]:
    """Build the dashboard and write it to `path` (mode from the user's umask); what was written and how long it took."""
    if not path.parent.is_dir():
        raise a.ReportError(f"cannot write {path}: the folder {path.parent} does not exist; create it first or choose another path")
    start = time.perf_counter()
    board = build_dashboard(service, use_cache)
    page = render_html(board)
    size = write_output(path, page, shared=True)  # a page to share: the user's umask, not 0600
    return {
        "path": str(path), "bytes": size, "charts": page.count('<svg class="chart"'), "seconds": round(time.perf_counter() - start, 3),
        "cache": board.cache, "data_version": board.data_version, "latest_transaction": board.freshness["latest_transaction"],
    }  # fmt: skip


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#111827;padding:0 16px;background:#fff}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:30px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#6b7280;font-size:13px}.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.tile{border-radius:8px;padding:10px 14px;min-width:140px;background:#eff6ff;border:1px solid #bfdbfe}
.tile.fresh{background:#f0fdf4;border-color:#bbf7d0}.tile.quality{background:#fefce8;border-color:#fde68a}
.tile .v{font-size:20px;font-weight:650}.tile .d{font-size:12px;color:#374151}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left}
th{background:#f9fafb}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg.chart{display:block;margin:12px 0;max-width:100%;height:auto;font-family:inherit}.note{color:#6b7280;font-size:13px}
"""


def _money(value: Decimal | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _tile(value: str, label: str, cls: str = "", key: str = "") -> str:
    data = f' data-tile="{escape(key)}"' if key else ""
    return f'<div class="tile {cls}"{data}><div class="v">{escape(value)}</div><div class="d">{escape(label)}</div></div>'


def _when(value: datetime | date | None) -> str:
    if value is None:
        return "–"
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else value.isoformat()


def _freshness_tiles(board: Dashboard) -> str:
    f, qual = board.freshness, board.quality
    tiles = [
        _tile(_when(f["latest_transaction"]), "latest transaction", "fresh", "latest-transaction"),
        _tile(_when(f["last_load"]) + (" UTC" if f["last_load"] else ""), "last successful load", "fresh", "last-load"),
    ]
    if qual is None:
        tiles.append(_tile("–", "quality score: no evaluation yet (python main.py quality check)", "quality", "quality"))
    else:
        subject = f"run {qual.run_id}" if qual.run_id is not None else "the whole warehouse"
        tiles.append(
            _tile(f"{qual.overall:.3f}", f"quality score of {subject}, {_when(qual.checked_at)} UTC ({qual.passed} of {qual.checks} checks passed)",
                  "quality", "quality")
        )  # fmt: skip
        tiles += [_tile(f"{score:.3f}", dim, "quality", f"quality-{dim}") for dim, score in qual.scores.items()]
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def _kpi_tiles(board: Dashboard) -> str:
    t = board.totals
    tiles = [
        _tile(_money(t["revenue"]), "net revenue", key="revenue"),
        _tile(f"{t['orders']:,}", "orders", key="orders"),
        _tile(f"{t['customers']:,}", "customers with orders", key="customers"),
        _tile(_money(t["aov"]), "average order value", key="aov"),
        _tile(_money(t["cancelled_revenue"]), "cancelled revenue (returns)", key="cancelled"),
        _tile(_share(t["returns_share"]), "returns share of sales", key="returns-share"),
    ]
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def _table(report: a.Report, keys: list[str], limit: int | None = None) -> str:
    columns = [c for c in report.columns if c.key in keys]
    head = "".join(f"<th>{escape(c.header)}</th>" for c in columns)
    body = []
    for row in report.rows[:limit]:
        cells = []
        for c in columns:
            text = cell(row.get(c.key), c.kind)
            cls = ' class="n"' if c.kind not in ("text", "date") else ""
            cells.append(f"<td{cls}>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table data-report="{escape(report.name)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _charts(board: Dashboard) -> dict[str, str]:
    months = board.months.rows
    labels = [r["period"] for r in months]
    revenue = [float(r["revenue"]) for r in months]
    cancelled = [float(-r["returns"]) for r in months]
    top = charts.nice_ceiling(max([*revenue, *cancelled, 0.0]))
    product_bars = [(_short(r["description"] or r["stock_code"]), float(r["revenue"])) for r in board.products.rows]
    country_bars = [(r["country"], float(r["revenue"])) for r in board.countries.rows[:TOP_COUNTRIES]]
    biggest = sorted(board.returns.rows, key=lambda r: -r["sales"])[:TOP_COUNTRIES]
    return_bars = [(r["country"], round(100 * (r["returns_share"] or 0.0), 2)) for r in biggest]
    segment_bars = [(r["segment"], float(r["customers"])) for r in board.segments.rows]
    cohort_rows = board.cohorts.rows
    offsets = [c.key for c in board.cohorts.columns if c.kind == "share"]
    grid = [[r[k] for k in offsets] for r in cohort_rows]
    later = [v for line in grid for v in line[1:] if v is not None]
    return {
        "trend": charts.line_chart(
            "Net revenue and cancelled revenue by month", "revenue-trend", labels,
            {"net revenue": revenue, "cancelled (returns)": cancelled}, (0.0, top), x_name="month",
        ),
        "products": charts.bar_chart(f"Top {TOP_PRODUCTS} products by net revenue", "top-products", product_bars),
        "countries": charts.bar_chart(f"Net revenue by country (top {TOP_COUNTRIES})", "countries", country_bars),
        "returns": charts.bar_chart(f"Returns share of sales, % (the {TOP_COUNTRIES} countries with the most sales)", "returns", return_bars),
        "segments": charts.bar_chart("Customers per RFM segment", "rfm-segments", segment_bars),
        "cohorts": charts.heat_map(
            "Share of each monthly cohort ordering in month +k", "cohorts", [r["cohort"] for r in cohort_rows],
            ["+" + k[1:] for k in offsets], grid, (0.0, max(later, default=1.0) or 1.0),
        ),
    }  # fmt: skip


def _short(text: str, width: int = 22) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def render_html(board: Dashboard) -> str:
    """The whole page."""
    c = _charts(board)
    f = board.freshness
    title = "Retail dashboard"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<p class="meta">Warehouse {escape(board.warehouse)} ({escape(board.backend)}) · data version {escape(board.data_version)} ·
sales from {f["first_date"]} to {f["last_date"]} · generated {board.generated_at:%Y-%m-%d %H:%M:%S} UTC</p>
<h2>Freshness and quality</h2>
{_freshness_tiles(board)}
<h2>Key figures</h2>
{_kpi_tiles(board)}
<p class="note">Net revenue = sales + returns (negative) + adjustments, every product; orders = invoices with a sale line.
Definitions: docs/reports.md.</p>
<h2>Revenue trend</h2>
{c["trend"]}
{_table(board.months, ["period", "orders", "sales", "returns", "revenue", "aov", "revenue_change"])}
<h2>Top products</h2>
{c["products"]}
{_table(board.products, ["rank", "stock_code", "description", "units_sold", "return_rate", "revenue", "revenue_share"])}
<h2>Revenue by country</h2>
{c["countries"]}
{_table(board.countries, ["country", "customers", "orders", "revenue", "revenue_share", "aov"], TOP_COUNTRIES)}
<h2>Returns</h2>
{c["returns"]}
{_table(board.returns, ["country", "return_invoices", "units_returned", "return_rate", "returned", "returns_share"], TOP_COUNTRIES)}
<h2>RFM segments</h2>
{c["segments"]}
{_table(board.segments, ["segment", "customers", "customer_share", "revenue", "revenue_share", "avg_recency_days", "avg_orders"])}
<h2>Cohorts</h2>
{c["cohorts"]}
<p class="note">A cohort is the month of a customer's first order; a cell is the share of the cohort that ordered k months later.</p>
</body></html>
"""
