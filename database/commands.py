"""`setup` and `test`: create the warehouse schema, check the warehouse is usable."""

from __future__ import annotations

import click

from utils.render import emit, table
from utils.urls import mask_url


@click.command("setup")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--print-ddl",
    is_flag=True,
    help="Print the Citus statements setup runs with warehouse.distributed: citus, for review; connects to nothing, applies nothing.",
)
@click.pass_obj
def setup_command(app, fmt: str, print_ddl: bool) -> None:
    """Create the warehouse schema (safe to run again on an existing warehouse); with
    warehouse.distributed: citus, also make its tables reference and distributed tables.

    \b
    Examples:
      python main.py setup
      python main.py setup --print-ddl
    """
    from database.citus import render
    from database.schema import setup_schema

    if print_ddl:
        click.echo(render(app.settings.warehouse), nl=False)
        return
    result = setup_schema(app.engine, app.settings.warehouse)
    url = mask_url(app.engine.url.render_as_string(hide_password=False))
    rows = [{"table": t, "status": "created"} for t in result.created_tables] + [
        {"table": t, "status": "already there"} for t in result.existing_tables
    ]
    data = {
        "warehouse": url,
        "created": result.created_tables,
        "existing": result.existing_tables,
        "unknown_customer_created": result.unknown_customer_created,
    }
    title = f"Schema of {url}"
    if result.citus_statements is not None:
        data["citus_statements"] = result.citus_statements
        title += f" (Citus: {len(result.citus_statements)} tables distributed or made reference tables)"
    emit(data, fmt, table(rows, title=title))


@click.command("test")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def test_command(app, fmt: str) -> None:
    """Check connectivity, schema and write access of the warehouse.

    \b
    Examples:
      python main.py test
      python main.py test --format json
    """
    from database.schema import check_health

    report = check_health(app.engine)
    schema = "complete" if not report.missing_tables else f"missing {', '.join(report.missing_tables)} (run: python main.py setup)"
    rows = [
        {"check": "connection", "result": f"ok ({report.url})"},
        {"check": "backend", "result": f"{report.backend} {report.server_version}"},
        {"check": "schema", "result": schema},
        {"check": "write access", "result": "ok" if report.writable else "FAILED"},
    ]
    emit(report.__dict__, fmt, table(rows, title="Warehouse check"))
    if report.missing_tables:
        raise click.exceptions.Exit(1)


COMMANDS = (setup_command, test_command)
