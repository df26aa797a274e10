"""`versions list|show|diff|rollback`, `metadata tables|columns|lineage|export`, `docs generate`."""

from __future__ import annotations

from pathlib import Path

import click

from utils.errors import PlatformError
from utils.files import write_private
from utils.lazy import lazy_module
from utils.render import emit, table

v = lazy_module("metadata.versions")  # SQLAlchemy loads when a versions command runs
rb = lazy_module("metadata.rollback")  # the aggregates' refresh and the run ledger: rollback only

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


@click.group("versions")
def versions_group() -> None:
    """Data versions: every successful load, replay and rollback; roll back bad loads.

    \b
    Examples:
      python main.py versions list
      python main.py versions rollback 2 --dry-run
    """


@versions_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_FORMAT
@click.pass_obj
def versions_list(app, limit: int, fmt: str) -> None:
    """List versions, newest first.

    \b
    Examples:
      python main.py versions list
      python main.py versions list --limit 5 --format json
    """
    rows = v.list_versions(app.engine, limit)
    shown = [
        {"version": r["run_id"], "kind": r["kind"], "status": r["status"], "started (UTC)": r["started_at"], "facts": f"{r['rows_loaded']:,}",
         "quarantined": f"{r['rows_quarantined']:,}", "rolled back by": r["rolled_back_by"] or ""}
        for r in rows
    ]  # fmt: skip
    emit(rows, fmt, table(shown, title="Versions"))


@versions_group.command("show")
@click.argument("version", type=int)
@_FORMAT
@click.pass_obj
def versions_show(app, version: int, fmt: str) -> None:
    """What VERSION changed, per table.

    \b
    Examples:
      python main.py versions show 1
    """
    data = v.get_version(app.engine, version)
    rows = [{"table": t, **{k: f"{n:,}" for k, n in changes.items()}} for t, changes in data["tables"].items()]
    columns = ["table", "inserted", "updated", "changed"]
    emit(data, fmt, table(rows, title=f"Version {version} ({data['kind']}, {data['status']}): {data['source']}", columns=columns))


@versions_group.command("diff")
@click.argument("a", type=int)
@click.argument("b", type=int)
@_FORMAT
@click.pass_obj
def versions_diff(app, a: int, b: int, fmt: str) -> None:
    """Row counts and key metrics as of version A and as of version B.

    \b
    Examples:
      python main.py versions diff 1 2
    """
    data = v.diff_versions(app.engine, a, b)
    rows = [
        {
            "metric": k,
            f"as of {a}": data["as_of_a"][k],
            f"as of {b}": data["as_of_b"][k],
            "change": _change(data["as_of_a"][k], data["as_of_b"][k]),
        }
        for k in data["as_of_a"]
    ]
    emit(data, fmt, table(rows, title=f"Versions {a} -> {b}"))


def _change(x: float, y: float) -> str:
    delta = y - x
    return f"{delta:+,.2f}" if isinstance(delta, float) else f"{delta:+,}"


@versions_group.command("rollback")
@click.argument("version", type=int)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--dry-run", is_flag=True, help="show what would change, change nothing")
@_FORMAT
@click.pass_obj
def versions_rollback(app, version: int, yes: bool, dry_run: bool, fmt: str) -> None:
    """Undo VERSION and every later load, newest first, in one transaction.

    \b
    Examples:
      python main.py versions rollback 2 --dry-run
      python main.py versions rollback 2 --yes
    """
    if not (yes or dry_run):
        click.confirm(f"Roll back version {version} and every later load?", abort=True, err=True)
    result = rb.rollback(app.engine, app.settings, version, dry_run=dry_run)
    totals = result.totals()
    data = {
        "rollback_run_id": result.rollback_run_id,
        "versions": result.versions,
        "dry_run": dry_run,
        "totals": totals,
        "per_version": result.changes,
        "duration_s": round(result.duration_s, 3),
    }
    title = ("Dry run: rolling back" if dry_run else "Rolled back") + f" versions {', '.join(map(str, result.versions))}"
    emit(data, fmt, table([{"change": k, "rows": f"{n:,}"} for k, n in totals.items()], title=title))


@click.group("metadata")
def metadata_group() -> None:
    """Catalog, lineage and exports of the warehouse's metadata.

    \b
    Examples:
      python main.py metadata tables
      python main.py metadata lineage --run 1
    """


@metadata_group.command("tables")
@_FORMAT
@click.pass_obj
def metadata_tables(app, fmt: str) -> None:
    """Every table with kind, rows, size, last load and description.

    \b
    Examples:
      python main.py metadata tables
    """
    from metadata.catalog import list_tables

    infos = [t.__dict__ for t in list_tables(app.engine)]
    shown = [
        {
            "table": t["name"],
            "kind": t["kind"],
            "rows": "-" if t["rows"] is None else f"{t['rows']:,}",
            "size": _size(t["size_bytes"]),
            "description": t["description"],
        }
        for t in infos
    ]
    emit(infos, fmt, table(shown, title="Tables"))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


@metadata_group.command("columns")
@click.argument("table_name")
@_FORMAT
@click.pass_obj
def metadata_columns(app, table_name: str, fmt: str) -> None:
    """Columns of TABLE_NAME with type, nullability, description, null share and distinct count.

    \b
    Examples:
      python main.py metadata columns fact_sales
    """
    from metadata.catalog import list_columns

    cols = list_columns(app.engine, table_name)
    emit(cols, fmt, table(cols, title=f"Columns of {table_name}"))


@metadata_group.command("lineage")
@click.option("--run", "run_id", type=int, help="one run")
@click.option("--table", "table_name", help="runs that wrote to this table")
@click.option("--sales-key", type=int, help="where one fact row came from")
@click.option("--format", "fmt", type=click.Choice(["tree", "mermaid", "json"]), default="tree", show_default=True)
@click.pass_obj
def metadata_lineage(app, run_id: int | None, table_name: str | None, sales_key: int | None, fmt: str) -> None:
    """Source -> cleaning -> tables of each load, column mappings, or the origin of one fact.

    \b
    Examples:
      python main.py metadata lineage --run 1
      python main.py metadata lineage --sales-key 42
      python main.py metadata lineage --table fact_sales --format mermaid
    """
    from metadata import lineage as lin

    if sales_key is not None:
        origin = lin.fact_origin(app.engine, sales_key)
        emit(
            origin,
            "json" if fmt == "json" else "table",
            table([{"": k, "value": v} for k, v in origin.items()], title=f"Origin of fact {sales_key}", columns=["", "value"]),
        )
        return
    runs = lin.lineage(app.engine, run_id, table_name)
    if fmt == "mermaid":
        click.echo(lin.mermaid(runs))
    elif fmt == "json":
        emit(runs, "json")
    else:
        emit(runs, "table", _tree(runs))


def _tree(runs: list[dict]):
    from rich.tree import Tree

    root = Tree("lineage")
    for r in runs:
        node = root.add(
            f"run {r['run_id']} ({r['status']}): {r['source']['location']} — {r['source']['rows']:,} rows, sha256 {str(r['source']['checksum'])[:12]}"
        )
        cleaning = node.add(
            f"cleaning: {r['cleaning']['accepted']:,} accepted ({r['cleaning']['already_loaded']:,} already loaded), {r['cleaning']['quarantined']:,} quarantined"
        )
        for reason, n in r["cleaning"]["quarantined_by_reason"].items():
            cleaning.add(f"{reason}: {n:,}")
        for target, changes in r["targets"].items():
            node.add(f"{target}: " + ", ".join(f"{k} {v:,}" for k, v in changes.items()))
    return root


@metadata_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "markdown", "openlineage"]), default="json", show_default=True)
@click.option("--complete", is_flag=True, help="include column statistics (null share, distinct counts): scans every table")
@click.option("--filename", type=click.Path(dir_okay=False, path_type=Path), help="write here instead of standard output")
@click.pass_obj
def metadata_export(app, fmt: str, complete: bool, filename: Path | None) -> None:
    """Export the catalog, lineage and versions (OpenLineage: one START/COMPLETE pair per load).

    \b
    Examples:
      python main.py metadata export
      python main.py metadata export --format openlineage --filename lineage.json
    """
    from metadata.export import render

    content = render(app.engine, fmt, complete)
    if filename is None:
        click.echo(content, nl=False)
        return
    try:
        write_private(filename, content)
    except OSError as exc:
        raise PlatformError(f"cannot write {filename}: {exc.strerror or exc}; choose another --filename") from None
    click.echo(f"wrote {filename} ({len(content):,} bytes)", err=True)


@click.group("docs")
def docs_group() -> None:
    """Generated documentation.

    \b
    Examples:
      python main.py docs generate
    """


@docs_group.command("generate")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="folder of the pages  [default: docs/generated in the project, ignored by git]",
)
@click.pass_obj
def docs_generate(app, output_dir: Path | None) -> None:
    """(Re)write schema.md, data_dictionary.md, lineage.md and quality.md from the live metadata.

    \b
    Examples:
      python main.py docs generate                 (into docs/generated/)
      python main.py docs generate --output-dir /tmp/rdp-docs
    """
    from metadata.docs import DEFAULT_DIR, generate

    output_dir = output_dir or DEFAULT_DIR
    for page, changed in generate(app.engine, output_dir).items():
        click.echo(f"{output_dir / page}: {'updated' if changed else 'unchanged'}")


COMMANDS = (versions_group, metadata_group, docs_group)
