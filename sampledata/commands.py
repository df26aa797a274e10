"""`data generate`."""

from __future__ import annotations

from pathlib import Path

import click

from utils.errors import PlatformError
from utils.render import emit, table

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


@click.group("data")
def data_group() -> None:
    """Sample data.

    \b
    Examples:
      python main.py data generate --rows 5000 --output sample.csv
    """


@data_group.command("generate")
@click.option("--rows", type=click.IntRange(max=100_000_000), default=50_000, show_default=True, help="data rows to write")
@click.option("--seed", type=int, default=42, show_default=True, help="same seed and options, same rows")
@click.option(
    "--output", type=click.Path(path_type=Path), required=True, help="CSV file to write (.gz for gzip); with --split, the folder to write"
)
@click.option(
    "--split",
    type=click.Choice(["day", "store"]),
    help="write a folder instead: one CSV per trading day (sales-YYYY-MM-DD.csv) or per store (sales-store-NN.csv), plus _manifest.json",
)
@click.option("--stores", type=click.IntRange(1, 500), help="with --split store: how many stores  [default: 10]")
@click.option("--overwrite", is_flag=True, help="with --split: replace a folder an earlier data generate wrote (a file is always replaced)")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default="2010-12-01", show_default=True, help="first day of trading")
@click.option("--days", type=click.IntRange(1, 10_000), default=374, show_default=True, help="days the rows spread over")
@_FORMAT
def data_generate(rows, seed, output: Path, split, stores, overwrite: bool, start, days: int, fmt: str) -> None:
    """Write a synthetic extract with the profile of the real UCI Online Retail file (one file, or a folder with --split).

    \b
    Examples:
      python main.py data generate --rows 5000 --output sample.csv
      python main.py data generate --rows 20000 --split day --days 7 --output daily/
    """
    from sampledata.generator import generate_folder, generate_sales

    if stores is not None and split != "store":
        raise click.UsageError("--stores needs --split store")
    try:
        if split:
            result = generate_folder(output, rows, seed, split, stores or 10, start.date(), days, overwrite=overwrite)
        else:
            result = generate_sales(output, rows, seed, start.date(), days)
    except (ValueError, OSError) as exc:
        raise PlatformError(f"cannot generate {output}: {exc}") from None
    data = {"path": str(result.path), "files": result.files, "rows": result.rows, "bytes": result.bytes, "invoices": result.invoices}
    data |= {"customers": result.customers, "duplicates": result.duplicates, "seconds": round(result.seconds, 3)}
    data["rows_per_s"] = round(result.rows / result.seconds) if result.seconds > 0 else None
    emit(data, fmt, table([{"": k, "value": v} for k, v in data.items()], title="Generated sample", columns=["", "value"]))


COMMANDS = (data_group,)
