"""`versions list|show|diff|rollback`."""

from __future__ import annotations

import click

from metadata import versions as v
from utils.render import emit, table

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


@click.group("versions")
def versions_group() -> None:
    """Data versions: every successful load, replay and rollback; roll back bad loads."""


@versions_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_FORMAT
@click.pass_obj
def versions_list(app, limit: int, fmt: str) -> None:
    """List versions, newest first."""
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
    """What VERSION changed, per table."""
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
    """Row counts and key metrics as of version A and as of version B."""
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
    """Undo VERSION and every later load, newest first, in one transaction."""
    if not (yes or dry_run):
        click.confirm(f"Roll back version {version} and every later load?", abort=True, err=True)
    result = v.rollback(app.engine, app.settings, version, dry_run=dry_run)
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


COMMANDS = (versions_group,)
