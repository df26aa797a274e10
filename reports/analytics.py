"""Retail analytics on the warehouse: sales by period, products, countries, customers, returns,
RFM segments and monthly cohorts.

Each report asks the warehouse set-based SQL (reports/queries.py) through the query service, so
every answer comes from the query cache when it can (keyed by the data version: never stale)
and all queries of one report read one snapshot. Python only derives figures from the few rows
the SQL returns (averages, shares, period-over-period change). Money is summed exactly in
thousandths and shown in cents, rounded half up. docs/reports.md defines every figure.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from performance.queries import NamedQuery
from performance.service import QueryService
from reports import PERIODS, PRODUCT_RANKINGS, RETURN_VIEWS
from reports import queries as q
from reports.rfm import SEGMENTS
from utils.errors import PlatformError

NO_SALES = "the warehouse holds no sales yet; load data first: python main.py etl --source FILE"
MAX_TOP = 100_000
_THOUSANDTH, _CENT = Decimal("0.001"), Decimal("0.01")
_NO_END = 99_991_231


class ReportError(PlatformError):
    """A report cannot be made as asked: bad option values, an empty warehouse, an unwritable file."""


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str = "text"  # text, int, money, decimal, share, change, date


@dataclass
class Report:
    """A report's rows and figures, and how the warehouse answered."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    params: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    cache: str = "off"
    data_version: str = ""
    form: str = ""
    elapsed_ms: float = 0.0


@dataclass
class Answer:
    """Rows of each query of a report (as dicts), what the warehouse holds, and the cache status."""

    warehouse: dict[str, Any]
    tables: list[list[dict[str, Any]]]
    cache: str
    data_version: str
    form: str
    elapsed_ms: float

    def stamp(self, report: Report) -> Report:
        report.cache, report.data_version, report.form, report.elapsed_ms = self.cache, self.data_version, self.form, self.elapsed_ms
        return report


# -- small helpers ----------------------------------------------------------------------------


def exact(value: Any) -> Decimal:
    """A sum of money as the exact thousandths it is (SQLite answers binary floats)."""
    if value is None:
        return Decimal(0)
    return (value if isinstance(value, Decimal) else Decimal(str(value))).quantize(_THOUSANDTH)


def cents(value: Decimal) -> Decimal:
    """Money as shown: in cents, rounded half up."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def ratio(part: Decimal | int, whole: Decimal | int) -> float | None:
    """part / whole, or None when whole is 0."""
    return float(Decimal(part) / Decimal(whole)) if whole else None


def key_of(day: date) -> int:
    """The date_key (YYYYMMDD) of a date."""
    return day.year * 10_000 + day.month * 100 + day.day


def date_of(key: int) -> date:
    """The date of a date_key."""
    return date(key // 10_000, key // 100 % 100, key % 100)


def to_datetime(value: Any) -> datetime | None:
    """A timestamp as the databases answer it (PostgreSQL: datetime, SQLite: text)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)[:19])


@dataclass
class Plan:
    """A report before the warehouse answers: its queries, and how their rows become the report."""

    queries: list[tuple[NamedQuery, dict[str, Any]]]
    build: Callable[[Answer], Report]


def ask(service: QueryService, queries: list[tuple[NamedQuery, dict[str, Any]]], use_cache: bool) -> Answer:
    """Run the queries (each distinct one once), after the warehouse query, in one snapshot; an
    empty warehouse is an error."""
    wanted = [(q.WAREHOUSE, {}), *queries]
    unique = list({_identity(query, params): (query, params) for query, params in wanted}.items())
    results = dict(zip((k for k, _ in unique), service.run_queries([v for _, v in unique], use_cache), strict=True))
    warehouse = results[_identity(q.WAREHOUSE, {})].records()[0]
    if warehouse["first_key"] is None:
        raise ReportError(NO_SALES)
    statuses = [r.cache for r in results.values()]
    cache = statuses[0] if len(set(statuses)) == 1 else ", ".join(f"{s} {statuses.count(s)}" for s in sorted(set(statuses)))
    mine = [results[_identity(query, params)] for query, params in queries]
    forms = sorted({r.form for r in mine}) or ["fact"]
    return Answer(
        warehouse, [r.records() for r in mine], cache, results[_identity(q.WAREHOUSE, {})].data_version, ", ".join(forms),
        max(r.elapsed_ms for r in results.values()),
    )  # fmt: skip


def _identity(query: NamedQuery, params: dict[str, Any]) -> tuple:
    return query.name, tuple(sorted(params.items()))


def run(service: QueryService, plan: Plan, use_cache: bool = True) -> Report:
    """Ask the warehouse a plan's queries and build its report."""
    return plan.build(ask(service, plan.queries, use_cache))


def build_all(plans: list[Plan], answer: Answer) -> list[Report]:
    """The reports of `plans` from one answer to all their queries (asked together: one snapshot), in order."""
    reports, at = [], 0
    for plan in plans:
        n = len(plan.queries)
        reports.append(plan.build(replace(answer, tables=answer.tables[at : at + n])))
        at += n
    return reports


def _check_top(top: int) -> None:
    if not 1 <= top <= MAX_TOP:
        raise ReportError(f"top must be a whole number from 1 to {MAX_TOP:,}, got {top}")


def _money_parts(rec: dict[str, Any]) -> tuple[Decimal, Decimal, Decimal]:
    return exact(rec["sales"]), exact(rec["returns"]), exact(rec.get("adjustments"))


# -- sales by period --------------------------------------------------------------------------


def period_label(by: str, key: int) -> str:
    """2011-12-09 (day), 2011-W49 (ISO week), 2011-12 (month), 2011-Q4 (quarter)."""
    if by == "day":
        return date_of(key).isoformat()
    if by == "week":
        year, week, _ = date_of(key).isocalendar()
        return f"{year}-W{week:02d}"
    if by == "month":
        return f"{key // 100}-{key % 100:02d}"
    return f"{key // 10}-Q{key % 10}"


def previous_period(by: str, key: int) -> int:
    """The key of the calendar period just before `key`."""
    if by in ("day", "week"):
        return key_of(date_of(key) - timedelta(days=1 if by == "day" else 7))
    size = 12 if by == "month" else 4
    scale = 100 if by == "month" else 10
    year, n = divmod(key, scale)
    return (year - 1) * scale + size if n == 1 else key - 1


SALES_COLUMNS = [
    Column("period", "period"), Column("customers", "customers", "int"), Column("orders", "orders", "int"),
    Column("units", "units", "int"), Column("sales", "sales", "money"), Column("returns", "returns", "money"),
    Column("adjustments", "adjustments", "money"), Column("revenue", "revenue", "money"),
    Column("aov", "avg order", "money"), Column("returns_share", "returns share", "share"),
    Column("revenue_change", "revenue vs prev.", "change"),
]  # fmt: skip


def sales_plan(by: str = "month", start: date | None = None, end: date | None = None, country: str | None = None) -> Plan:
    """The sales report's queries and its builder (see sales_report)."""
    if by not in PERIODS:
        raise ReportError(f"unknown period {by!r}; choose one of {', '.join(PERIODS)}")
    if start and end and start > end:
        raise ReportError(f"the start date {start} is after the end date {end}")
    params: dict[str, Any] = {"start": key_of(start) if start else 0, "end": key_of(end) if end else _NO_END}
    queries = [(q.sales(by, country is not None), params | ({"country": country} if country is not None else {}))]
    if country is not None:
        queries.append((q.COUNTRIES, {}))

    def build(answer: Answer) -> Report:
        if country is not None:
            _require_country(country, [r["country"] for r in answer.tables[1]])
        rows, revenue_of, totals = [], {}, [Decimal(0)] * 3
        for rec in answer.tables[0]:
            parts = _money_parts(rec)
            totals = [t + p for t, p in zip(totals, parts, strict=True)]
            sales, returns, adjustments = parts
            revenue, orders = sales + returns + adjustments, int(rec["orders"] or 0)
            revenue_of[rec["period_key"]] = revenue
            rows.append(
                {"period": period_label(by, rec["period_key"]), "customers": int(rec["customers"]), "orders": orders,
                 "units": int(rec["units"] or 0), "sales": cents(sales), "returns": cents(returns), "adjustments": cents(adjustments),
                 "revenue": cents(revenue), "aov": cents(sales / orders) if orders else None, "returns_share": ratio(-returns, sales),
                 "revenue_change": None}
            )  # fmt: skip
        for key, row in zip(revenue_of, rows, strict=True):
            before = revenue_of.get(previous_period(by, key))
            if before is not None and before > 0:
                row["revenue_change"] = float(revenue_of[key] / before - 1)
        first, last = date_of(answer.warehouse["first_key"]), date_of(answer.warehouse["last_key"])
        shown = (max(start, first) if start else first, min(end, last) if end else last)
        named = country and next((r["country"] for r in answer.tables[1] if r["country"].lower() == country.lower()), country)
        report = Report(
            "sales", f"Sales by {by}" + (f", {named}" if named else "") + f", {shown[0]} to {shown[1]}", SALES_COLUMNS, rows,
            {"by": by, "from": start, "to": end, "country": country}, _sales_totals(rows, totals, shown),
        )  # fmt: skip
        if not rows:
            report.notes.append(_no_sales_note(answer, start, end, country, first, last))
        return answer.stamp(report)

    return Plan(queries, build)


def sales_report(
    service: QueryService,
    by: str = "month",
    start: date | None = None,
    end: date | None = None,
    country: str | None = None,
    use_cache: bool = True,
) -> Report:
    """Customers, orders, units, sales, returns, adjustments, net revenue, average order value,
    returns share and revenue change against the previous period, per day, week, month or quarter,
    between `start` and `end` (inclusive), of one country when given."""
    return run(service, sales_plan(by, start, end, country), use_cache)


def _sales_totals(rows: list[dict[str, Any]], totals: list[Decimal], shown: tuple[date, date]) -> dict[str, Any]:
    sales, returns, adjustments = totals
    orders = sum(r["orders"] for r in rows)
    return {
        "from": shown[0], "to": shown[1], "periods": len(rows), "orders": orders, "units": sum(r["units"] for r in rows),
        "sales": cents(sales), "returns": cents(returns), "adjustments": cents(adjustments), "revenue": cents(sales + returns + adjustments),
        "aov": cents(sales / orders) if orders else None, "returns_share": ratio(-returns, sales),
    }  # fmt: skip


def _require_country(country: str, known: list[str]) -> None:
    """A country the warehouse does not know is a mistake (a typo, another spelling), not an empty answer."""
    if country.lower() in {k.lower() for k in known}:
        return
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[c] for c in difflib.get_close_matches(country.lower(), list(by_lower), n=3, cutoff=0.5)]
    hint = f"the closest: {', '.join(close)}; " if close else ""
    raise ReportError(f"the warehouse has no country {country!r}; {hint}`report countries` lists all {len(known)}")


def _no_sales_note(answer: Answer, start: date | None, end: date | None, country: str | None, first: date, last: date) -> str:
    spans = {(True, True): f"between {start} and {end}", (True, False): f"from {start} on", (False, True): f"up to {end}"}
    when = spans.get((start is not None, end is not None), "at all")
    if country is not None:
        return f"no sales for {country} {when}"
    return f"no sales {when}; the warehouse holds sales from {first} to {last}"


# -- products ---------------------------------------------------------------------------------

PRODUCT_COLUMNS = [
    Column("rank", "#", "int"), Column("stock_code", "stock code"), Column("description", "description"),
    Column("category", "category"), Column("units_sold", "units sold", "int"), Column("units_returned", "units returned", "int"),
    Column("return_rate", "return rate", "share"), Column("returned", "returned value", "money"),
    Column("revenue", "revenue", "money"), Column("revenue_share", "share of revenue", "share"),
]  # fmt: skip


def products_plan(top: int = 10, by: str = "revenue", include_non_merchandise: bool = False) -> Plan:
    """The products report's query and its builder (see products_report)."""
    if by not in PRODUCT_RANKINGS:
        raise ReportError(f"unknown ranking {by!r}; choose one of {', '.join(PRODUCT_RANKINGS)}")
    _check_top(top)

    def build(answer: Answer) -> Report:
        records = answer.tables[0]
        total = exact(records[0]["total_revenue"]) if records else Decimal(0)
        rows = [_product_row(i, rec, total) for i, rec in enumerate(records, start=1)]
        listed = sum((exact(rec["revenue"]) for rec in records), Decimal(0))
        kind = "products" if include_non_merchandise else "merchandise products"
        ranking = {"revenue": "net revenue", "units": "units sold", "returns": "units returned"}[by]
        summary = {
            "products": int(records[0]["products"]) if records else 0, "revenue": cents(total), "listed": len(rows),
            "listed_revenue": cents(listed), "listed_share": ratio(listed, total),
        }  # fmt: skip
        report = Report(
            "products", f"Top {top} {kind} by {ranking}", PRODUCT_COLUMNS, rows,
            {"top": top, "by": by, "include_non_merchandise": include_non_merchandise}, summary,
        )  # fmt: skip
        if not include_non_merchandise:
            report.notes.append("postage, fees, adjustments, vouchers and charity are not ranked (--include-non-merchandise shows them)")
        return answer.stamp(report)

    return Plan([(q.products(by, include_non_merchandise), {"limit": top})], build)


def products_report(
    service: QueryService, top: int = 10, by: str = "revenue", include_non_merchandise: bool = False, use_cache: bool = True
) -> Report:
    """The `top` products by net revenue, units sold or units returned; merchandise only unless
    `include_non_merchandise` (postage, fees, adjustments, vouchers, charity)."""
    return run(service, products_plan(top, by, include_non_merchandise), use_cache)


def _product_row(rank: int, rec: dict[str, Any], total: Decimal) -> dict[str, Any]:
    revenue, sold, returned = exact(rec["revenue"]), int(rec["units_sold"]), int(rec["units_returned"])
    return {
        "rank": rank, "stock_code": rec["stock_code"], "description": rec["description"], "category": rec["category"],
        "units_sold": sold, "units_returned": returned, "return_rate": ratio(returned, sold) if sold > 0 else None,
        "returned": cents(-exact(rec["returns"])), "revenue": cents(revenue), "revenue_share": ratio(revenue, total),
    }  # fmt: skip


# -- countries --------------------------------------------------------------------------------

COUNTRY_COLUMNS = [
    Column("country", "country"), Column("customers", "customers", "int"), Column("orders", "orders", "int"),
    Column("units", "units", "int"), Column("sales", "sales", "money"), Column("returns", "returns", "money"),
    Column("adjustments", "adjustments", "money"), Column("revenue", "revenue", "money"),
    Column("revenue_share", "share of revenue", "share"), Column("aov", "avg order", "money"),
    Column("returns_share", "returns share", "share"),
]  # fmt: skip


def countries_plan() -> Plan:
    """The countries report's query and its builder (see countries_report)."""

    def build(answer: Answer) -> Report:
        records = answer.tables[0]
        total = sum((sum(_money_parts(rec), Decimal(0)) for rec in records), Decimal(0))
        rows = []
        for rec in records:
            sales, returns, adjustments = _money_parts(rec)
            revenue, orders = sales + returns + adjustments, int(rec["orders"] or 0)
            rows.append(
                {"country": rec["country"], "customers": int(rec["customers"]), "orders": orders, "units": int(rec["units"] or 0),
                 "sales": cents(sales), "returns": cents(returns), "adjustments": cents(adjustments), "revenue": cents(revenue),
                 "revenue_share": ratio(revenue, total), "aov": cents(sales / orders) if orders else None,
                 "returns_share": ratio(-returns, sales)}
            )  # fmt: skip
        summary = {"countries": len(rows), "orders": sum(r["orders"] for r in rows), "revenue": cents(total)}
        report = Report("countries", "Sales by country", COUNTRY_COLUMNS, rows, {}, summary)
        report.notes.append("sales without a CustomerID are under 'Unknown'; a customer who moved counts in each country")
        return answer.stamp(report)

    return Plan([(q.COUNTRIES, {})], build)


def countries_report(service: QueryService, use_cache: bool = True) -> Report:
    """Customers, orders, units, sales, returns, net revenue, share, average order value and
    returns share per country (of the customer version valid at the sale)."""
    return run(service, countries_plan(), use_cache)


# -- customers --------------------------------------------------------------------------------

CUSTOMER_COLUMNS = [
    Column("rank", "#", "int"), Column("customer_id", "customer"), Column("country", "country"), Column("orders", "orders", "int"),
    Column("units", "units", "int"), Column("sales", "sales", "money"), Column("returns", "returns", "money"),
    Column("revenue", "revenue", "money"), Column("aov", "avg order", "money"), Column("first_purchase", "first order", "date"),
    Column("last_purchase", "last order", "date"),
]  # fmt: skip


def customers_plan(top: int = 10) -> Plan:
    """The customers report's query and its builder (see customers_report)."""
    _check_top(top)

    def build(answer: Answer) -> Report:
        records = answer.tables[0]
        total = exact(records[0]["total_revenue"]) if records else Decimal(0)
        rows, listed = [], Decimal(0)
        for rank, rec in enumerate(records, start=1):
            sales, returns, adjustments = _money_parts(rec)
            orders, listed = int(rec["orders"] or 0), listed + sales + returns + adjustments
            rows.append(
                {"rank": rank, "customer_id": rec["customer_id"], "country": rec["country"], "orders": orders,
                 "units": int(rec["units"] or 0), "sales": cents(sales), "returns": cents(returns),
                 "revenue": cents(sales + returns + adjustments), "aov": cents(sales / orders) if orders else None,
                 "first_purchase": date_of(rec["first_key"]) if rec["first_key"] else None,
                 "last_purchase": date_of(rec["last_key"]) if rec["last_key"] else None}
            )  # fmt: skip
        summary = {
            "customers": int(records[0]["customers"]) if records else 0, "revenue": cents(total), "listed": len(rows),
            "listed_revenue": cents(listed), "listed_share": ratio(listed, total),
        }  # fmt: skip
        report = Report("customers", f"Top {top} customers by net revenue", CUSTOMER_COLUMNS, rows, {"top": top}, summary)
        report.notes.append("identified customers only: sales without a CustomerID cannot be attributed")
        return answer.stamp(report)

    return Plan([(q.CUSTOMERS, {"limit": top})], build)


def customers_report(service: QueryService, top: int = 10, use_cache: bool = True) -> Report:
    """The `top` identified customers by net revenue, with orders, units, average order value and
    the dates of their first and last order; country is the customer's current one."""
    return run(service, customers_plan(top), use_cache)


# -- returns ----------------------------------------------------------------------------------

RETURN_PRODUCT_COLUMNS = [
    Column("rank", "#", "int"), Column("stock_code", "stock code"), Column("description", "description"),
    Column("units_sold", "units sold", "int"), Column("units_returned", "units returned", "int"),
    Column("return_rate", "return rate", "share"), Column("return_lines", "return lines", "int"),
    Column("returned", "returned value", "money"),
]  # fmt: skip
RETURN_COUNTRY_COLUMNS = [
    Column("country", "country"), Column("orders", "orders", "int"), Column("return_invoices", "return invoices", "int"),
    Column("units", "units sold", "int"), Column("units_returned", "units returned", "int"),
    Column("return_rate", "return rate", "share"), Column("sales", "sales", "money"), Column("returned", "returned value", "money"),
    Column("returns_share", "returns share", "share"),
]  # fmt: skip


def returns_plan(by: str = "product", top: int = 20, include_non_merchandise: bool = False) -> Plan:
    """The returns report's queries and its builder (see returns_report)."""
    if by not in RETURN_VIEWS:
        raise ReportError(f"unknown view {by!r}; choose one of {', '.join(RETURN_VIEWS)}")
    _check_top(top)
    detail = (q.products("returns", include_non_merchandise), {"limit": top}) if by == "product" else (q.COUNTRIES, {})

    def build(answer: Answer) -> Report:
        summary = returns_summary(answer.tables[0][0])
        if by == "product":
            rows = [_return_product_row(rec) for rec in answer.tables[1] if int(rec["units_returned"]) > 0]
            for rank, row in enumerate(rows, start=1):
                row["rank"] = rank
            kind = "products" if include_non_merchandise else "merchandise products"
            title, columns = f"Top {top} returned {kind} (by units returned)", RETURN_PRODUCT_COLUMNS
        else:
            rows = sorted((_return_country_row(rec) for rec in answer.tables[1]), key=lambda r: (-r["returned"], r["country"]))
            title, columns = "Returns by country (most returned value first)", RETURN_COUNTRY_COLUMNS
        params = {"by": by, "top": top if by == "product" else None, "include_non_merchandise": include_non_merchandise}
        return answer.stamp(Report("returns", title, columns, rows, params, summary))

    return Plan([(q.TOTALS, {}), detail], build)


def returns_report(
    service: QueryService, by: str = "product", top: int = 20, include_non_merchandise: bool = False, use_cache: bool = True
) -> Report:
    """Cancelled revenue and return rates of the whole warehouse, with the products returned most
    (by units) or every country (most returned value first)."""
    return run(service, returns_plan(by, top, include_non_merchandise), use_cache)


def returns_summary(rec: dict[str, Any]) -> dict[str, Any]:
    """Cancelled revenue, return invoices, returns share and return rate of the whole warehouse."""
    sales, returns = exact(rec["sales"]), exact(rec["returns"])
    units, returned = int(rec["units"] or 0), int(rec["units_returned"] or 0)
    return {
        "cancelled_revenue": cents(-returns), "return_invoices": int(rec["return_invoices"] or 0), "orders": int(rec["orders"] or 0),
        "sales": cents(sales), "returns_share": ratio(-returns, sales), "units_sold": units, "units_returned": returned,
        "return_rate": ratio(returned, units),
    }  # fmt: skip


def _return_product_row(rec: dict[str, Any]) -> dict[str, Any]:
    sold, returned = int(rec["units_sold"]), int(rec["units_returned"])
    return {
        "rank": 0, "stock_code": rec["stock_code"], "description": rec["description"], "units_sold": sold,
        "units_returned": returned, "return_rate": ratio(returned, sold) if sold > 0 else None,
        "return_lines": int(rec["return_lines"]), "returned": cents(-exact(rec["returns"])),
    }  # fmt: skip


def _return_country_row(rec: dict[str, Any]) -> dict[str, Any]:
    sales, returns = exact(rec["sales"]), exact(rec["returns"])
    units, returned = int(rec["units"] or 0), int(rec["units_returned"] or 0)
    return {
        "country": rec["country"], "orders": int(rec["orders"] or 0), "return_invoices": int(rec["return_invoices"] or 0),
        "units": units, "units_returned": returned, "return_rate": ratio(returned, units), "sales": cents(sales),
        "returned": cents(-returns), "returns_share": ratio(-returns, sales),
    }  # fmt: skip


# -- RFM --------------------------------------------------------------------------------------

RFM_SEGMENT_COLUMNS = [
    Column("segment", "segment"), Column("customers", "customers", "int"), Column("customer_share", "share of customers", "share"),
    Column("revenue", "revenue", "money"), Column("revenue_share", "share of revenue", "share"),
    Column("avg_recency_days", "avg days since last order", "decimal"), Column("avg_orders", "avg orders", "decimal"),
    Column("avg_revenue", "avg revenue", "money"),
]  # fmt: skip
RFM_CUSTOMER_COLUMNS = [
    Column("customer_id", "customer"), Column("last_purchase", "last order", "date"), Column("recency_days", "days since", "int"),
    Column("frequency", "orders", "int"), Column("monetary", "revenue", "money"), Column("r", "R", "int"), Column("f", "F", "int"),
    Column("m", "M", "int"), Column("fm", "FM", "int"), Column("segment", "segment"),
]  # fmt: skip


def rfm_plan() -> Plan:
    """The RFM segments report's query and its builder (see rfm_report)."""

    def build(answer: Answer) -> Report:
        return answer.stamp(_segments_report({rec["segment"]: rec for rec in answer.tables[0]}))

    return Plan([(q.RFM_SEGMENTS, {})], build)


def _segments_report(found: dict[str, dict[str, Any]]) -> Report:
    """The segments report from per-segment totals: customers, recency_days, orders, revenue, reference_date."""
    customers = sum(int(rec["customers"]) for rec in found.values())
    revenue = sum((exact(rec["revenue"]) for rec in found.values()), Decimal(0))
    rows = []
    for segment in SEGMENTS:
        rec = found.get(segment.name)
        n = int(rec["customers"]) if rec else 0
        money = exact(rec["revenue"]) if rec else Decimal(0)
        rows.append(
            {"segment": segment.name, "customers": n, "customer_share": ratio(n, customers), "revenue": cents(money),
             "revenue_share": ratio(money, revenue), "avg_recency_days": _mean(rec["recency_days"], n) if rec else None,
             "avg_orders": _mean(rec["orders"], n) if rec else None, "avg_revenue": cents(money / n) if n else None}
        )  # fmt: skip
    reference = next((rec["reference_date"] for rec in found.values()), None)
    summary = {"customers": customers, "revenue": cents(revenue), "reference_date": _as_date(reference)}
    report = Report("rfm", "RFM segments", RFM_SEGMENT_COLUMNS, rows, {}, summary)
    report.details["rules"] = [{"segment": s.name, "r": list(s.r), "fm": list(s.fm), "meaning": s.meaning} for s in SEGMENTS]
    report.notes.append("identified customers with at least one order; recency counted to the last order date in the warehouse")
    return report


def rfm_with_customers(service: QueryService, use_cache: bool = True) -> tuple[Report, Report]:
    """The segments report and the per-customer table (what `rfm --export` writes) from one query:
    the segment totals are added up from the customers' exact figures."""
    answer = ask(service, [(q.RFM_CUSTOMERS, {})], use_cache)
    rows, found = _customer_rows(answer.tables[0])
    return answer.stamp(_segments_report(found)), answer.stamp(_customers_report(rows))


def rfm_report(service: QueryService, use_cache: bool = True) -> Report:
    """Customers and revenue per RFM segment (every segment of the rule table, in its order)."""
    return run(service, rfm_plan(), use_cache)


def _customers_report(rows: list[dict[str, Any]]) -> Report:
    return Report("rfm_customers", "RFM scores per customer", RFM_CUSTOMER_COLUMNS, rows, {}, {"customers": len(rows)})


def _customer_rows(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The per-customer rows, and per segment: customers, recency_days, orders, exact revenue, reference_date."""
    rows, found = [], {}
    for rec in records:
        money, segment, recency, orders = exact(rec["monetary"]), rec["segment"], int(rec["recency_days"]), int(rec["frequency"])
        rows.append(
            {"customer_id": rec["customer_id"], "last_purchase": _as_date(rec["last_purchase"]), "recency_days": recency,
             "frequency": orders, "monetary": cents(money), "r": int(rec["r"]), "f": int(rec["f"]), "m": int(rec["m"]),
             "fm": int(rec["fm"]), "segment": segment}
        )  # fmt: skip
        totals = found.get(segment)
        if totals is None:
            found[segment] = totals = {
                "customers": 0,
                "recency_days": 0,
                "orders": 0,
                "revenue": Decimal(0),
                "reference_date": rec["reference_date"],
            }
        totals["customers"] += 1
        totals["recency_days"] += recency
        totals["orders"] += orders
        totals["revenue"] += money
    return rows, found


def _mean(total: Any, n: int) -> Decimal:
    return (Decimal(int(total)) / n).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _as_date(value: Any) -> date | None:
    if value is None or type(value) is date:
        return value
    return date.fromisoformat(str(value)[:10])


# -- cohorts ----------------------------------------------------------------------------------


def cohorts_plan() -> Plan:
    """The cohorts report's query and its builder (see cohorts_report)."""

    def build(answer: Answer) -> Report:
        last = answer.warehouse["last_key"] // 100
        last_month = (last // 100) * 12 + last % 100 - 1
        active: dict[int, dict[int, int]] = {}
        for rec in answer.tables[0]:
            active.setdefault(int(rec["cohort"]), {})[int(rec["month_offset"])] = int(rec["customers"])
        width = max((last_month - cohort for cohort in active), default=-1) + 1
        columns = [Column("cohort", "cohort"), Column("customers", "customers", "int")]
        columns += [Column(f"m{k}", f"+{k}", "share") for k in range(width)]
        rows, counts = [], {}
        for cohort in sorted(active):
            size, span = active[cohort].get(0, 0), last_month - cohort + 1
            label = f"{cohort // 12}-{cohort % 12 + 1:02d}"
            counts[label] = [active[cohort].get(k, 0) for k in range(span)]
            row: dict[str, Any] = {"cohort": label, "customers": size}
            row.update({f"m{k}": ratio(active[cohort].get(k, 0), size) if k < span else None for k in range(width)})
            rows.append(row)
        summary = {"cohorts": len(rows), "customers": sum(r["customers"] for r in rows)}
        report = Report("cohorts", "Monthly cohorts: share of each cohort ordering in month +k", columns, rows, {}, summary)
        report.details["active"] = counts
        report.notes.append("a cohort is the month of a customer's first order (identified customers, across their SCD2 versions)")
        return answer.stamp(report)

    return Plan([(q.COHORTS, {})], build)


def cohorts_report(service: QueryService, use_cache: bool = True) -> Report:
    """Monthly acquisition cohorts (month of a customer's first order) and the share of each
    cohort with an order in month +0, +1, ... (empty after the warehouse's last month)."""
    return run(service, cohorts_plan(), use_cache)
