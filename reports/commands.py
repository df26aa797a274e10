"""`report sales|products|countries|customers|returns|rfm|cohorts|dashboard`: retail analytics on
the warehouse, answered through the query cache."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click

from reports import FORMATS, PERIODS, PRODUCT_RANKINGS, RETURN_VIEWS

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="table for people; csv or json for scripts"
)
_NO_CACHE = click.option("--no-cache", is_flag=True, help="ask the warehouse even when the query cache holds the answer")
_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _top(default: int) -> Callable:
    return click.option("--top", type=click.IntRange(1, 100_000), default=default, show_default=True, help="how many to list")


_NON_MERCHANDISE = click.option("--include-non-merchandise", is_flag=True, help="rank postage, fees, adjustments, vouchers and charity too")


def _with_service(app, work: Callable):
    """Run `work(service)` with a query service on the app's warehouse, closed afterwards."""
    from performance.service import QueryService

    service = QueryService(app.engine, app.settings.cache)
    try:
        return work(service)
    finally:
        service.close()


def _show(report, fmt: str) -> None:
    """Print a report: JSON alone; CSV with notes and status on standard error; a table with them."""
    from reports.output import status_line, to_csv, to_json, to_table
    from utils.render import show

    if fmt == "json":
        click.echo(to_json(report))
        return
    if fmt == "csv":
        click.echo(to_csv(report), nl=False)
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
    else:
        show(to_table(report), sys.stdout)  # the terminal's width or COLUMNS; piped without COLUMNS: no width to fit
    sys.stdout.flush()
    click.echo(status_line(report), err=True)


@click.group("report")
def report_group() -> None:
    """Retail analytics: sales, products, countries, customers, returns, RFM, cohorts, an HTML dashboard.

    Every figure is defined in docs/reports.md; answers come from the query cache when the
    warehouse has not changed since (never stale).

    \b
    Examples:
      python main.py report sales --by month
      python main.py report products --top 10
    """


@report_group.command("sales")
@click.option("--by", type=click.Choice(PERIODS), default="month", show_default=True, help="period of each row")
@click.option("--from", "start", type=_DATE, metavar="YYYY-MM-DD", help="first date (inclusive)")
@click.option("--to", "end", type=_DATE, metavar="YYYY-MM-DD", help="last date (inclusive)")
@click.option("--country", help="only sales of customers in this country (as `report countries` lists them; any case)")
@_FORMAT
@_NO_CACHE
@click.pass_obj
def sales_command(app, by: str, start: datetime | None, end: datetime | None, country: str | None, fmt: str, no_cache: bool) -> None:
    """Revenue, orders, units, average order value and returns share per period, with the change
    against the previous period.

    \b
    Examples:
      python main.py report sales --by month
      python main.py report sales --by week --from 2011-09-01 --to 2011-11-30
      python main.py report sales --country France --format csv
    """
    from reports.analytics import sales_report

    if start and end and start > end:
        raise click.BadParameter(f"{start:%Y-%m-%d} is after --to {end:%Y-%m-%d}", param_hint="'--from'")
    first, last = (start.date() if start else None), (end.date() if end else None)
    _show(_with_service(app, lambda s: sales_report(s, by, first, last, country, use_cache=not no_cache)), fmt)


@report_group.command("products")
@_top(10)
@click.option(
    "--by",
    type=click.Choice(PRODUCT_RANKINGS),
    default="revenue",
    show_default=True,
    help="rank by net revenue, units sold or units returned",
)
@_NON_MERCHANDISE
@_FORMAT
@_NO_CACHE
@click.pass_obj
def products_command(app, top: int, by: str, include_non_merchandise: bool, fmt: str, no_cache: bool) -> None:
    """Best sellers: units sold and returned, return rate, net revenue and its share.

    \b
    Examples:
      python main.py report products --top 10
      python main.py report products --by returns --top 5
    """
    from reports.analytics import products_report

    _show(_with_service(app, lambda s: products_report(s, top, by, include_non_merchandise, use_cache=not no_cache)), fmt)


@report_group.command("countries")
@_FORMAT
@_NO_CACHE
@click.pass_obj
def countries_command(app, fmt: str, no_cache: bool) -> None:
    """Customers, orders, units, revenue, share, average order value and returns share per country.

    \b
    Examples:
      python main.py report countries
      python main.py report countries --format json
    """
    from reports.analytics import countries_report

    _show(_with_service(app, lambda s: countries_report(s, use_cache=not no_cache)), fmt)


@report_group.command("customers")
@_top(10)
@_FORMAT
@_NO_CACHE
@click.pass_obj
def customers_command(app, top: int, fmt: str, no_cache: bool) -> None:
    """The customers with the most net revenue: orders, units, average order value, first and last order.

    \b
    Examples:
      python main.py report customers --top 20
    """
    from reports.analytics import customers_report

    _show(_with_service(app, lambda s: customers_report(s, top, use_cache=not no_cache)), fmt)


@report_group.command("returns")
@click.option("--by", type=click.Choice(RETURN_VIEWS), default="product", show_default=True, help="list products or countries")
@_top(20)
@_NON_MERCHANDISE
@_FORMAT
@_NO_CACHE
@click.pass_obj
def returns_command(app, by: str, top: int, include_non_merchandise: bool, fmt: str, no_cache: bool) -> None:
    """Cancelled revenue, return rates by product (most units returned) or by country.

    \b
    Examples:
      python main.py report returns
      python main.py report returns --by country
    """
    from reports.analytics import returns_report

    _show(_with_service(app, lambda s: returns_report(s, by, top, include_non_merchandise, use_cache=not no_cache)), fmt)


@report_group.command("rfm")
@click.option(
    "--export",
    "export",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="also write every customer's scores (CSV, mode 0600)",
)
@_FORMAT
@_NO_CACHE
@click.pass_obj
def rfm_command(app, export: Path | None, fmt: str, no_cache: bool) -> None:
    """Recency, frequency and monetary scores (1-5) and the customers and revenue of each segment.

    \b
    Examples:
      python main.py report rfm
      python main.py report rfm --export rfm.csv
    """
    from reports.analytics import rfm_report, rfm_with_customers
    from reports.output import to_csv, write_output

    def work(service):
        if export is None:
            return rfm_report(service, use_cache=not no_cache)
        report, customers = rfm_with_customers(service, use_cache=not no_cache)
        size = write_output(export, to_csv(customers))
        report.notes.append(f"wrote {len(customers.rows):,} customers to {export} ({size:,} bytes)")
        return report

    _show(_with_service(app, work), fmt)


@report_group.command("cohorts")
@_FORMAT
@_NO_CACHE
@click.pass_obj
def cohorts_command(app, fmt: str, no_cache: bool) -> None:
    """Monthly acquisition cohorts and the share of each still ordering in month +1, +2, ...

    \b
    Examples:
      python main.py report cohorts
    """
    from reports.analytics import cohorts_report

    _show(_with_service(app, lambda s: cohorts_report(s, use_cache=not no_cache)), fmt)


@report_group.command("dashboard")
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE.html",
    help="the HTML file to write (mode 0600)",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="how to report what was written"
)
@_NO_CACHE
@click.pass_obj
def dashboard_command(app, output: Path, fmt: str, no_cache: bool) -> None:
    """One self-contained HTML page (no network): revenue trend, top products, countries, returns,
    RFM segments, cohort heat map, data freshness and the latest quality score.

    \b
    Examples:
      python main.py report dashboard --output dashboard.html
    """
    from reports.dashboard import write_dashboard
    from utils.render import emit

    written = _with_service(app, lambda s: write_dashboard(s, output, use_cache=not no_cache))
    if fmt == "json":
        emit(written, "json")
        return
    click.echo(
        f"dashboard written to {written['path']} ({written['bytes']:,} bytes, {written['charts']} charts, "
        f"built in {written['seconds']:.2f} s · cache {written['cache']} · data version {written['data_version']})"
    )


COMMANDS = (report_group,)
