"""The reports on the real UCI Online Retail file in PostgreSQL, equal to the cent to an
independent pandas computation from the raw file (tests/retail_reference.py): monthly revenue,
the top-10 products, country totals; and the RFM segments and cohorts as well."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import retail_reference as ref
from tests.conftest import PG_URL, Cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def warehouse(pg_available: None, real_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """The real file loaded once, through `etl` with the quality gate as configured, into a schema of its own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    cli = Cli(make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False))
    folder = tmp_path_factory.mktemp("real_reports")
    env = {
        "RDP_CACHE__DISK_PATH": str(folder / "cache"),
        "RDP_LOGGING__FILE": str(folder / "rdp.log"),
        "RDP_QUALITY_RULES__ON_FAILURE": "fail",
    }
    try:
        result = cli("etl", "--source", str(real_file), "--format", "json", env=env)
        assert result.exit_code == 0, result.output
        yield cli
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module")
def lines(real_file: Path):
    return ref.facts(real_file)


def report(cli: Cli, *args: str) -> dict:
    result = cli("report", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def D(value: object) -> Decimal:
    return Decimal(str(value))


def test_monthly_revenue_to_the_cent(warehouse: Cli, lines) -> None:
    data = report(warehouse, "sales", "--by", "month")
    expected = ref.sales(lines, "month")
    assert [r["period"] for r in data["rows"]] == sorted(expected) == ["2010-12", *(f"2011-{m:02d}" for m in range(1, 13))]
    for row in data["rows"]:
        figures = expected[row["period"]][0]
        assert (D(row["revenue"]), D(row["sales"]), D(row["returns"]), D(row["adjustments"]), row["orders"]) == (
            ref.cents(figures.revenue), ref.cents(figures.sales), ref.cents(figures.returns), ref.cents(figures.adjustments), figures.orders
        ), row["period"]  # fmt: skip
    assert D(data["summary"]["revenue"]) == ref.cents(ref.figures(lines).revenue)


def test_top_ten_products_to_the_cent(warehouse: Cli, lines) -> None:
    products = ref.products(lines)
    merchandise = products[products["merchandise"]]
    data = report(warehouse, "products", "--top", "10")
    assert [r["stock_code"] for r in data["rows"]] == ref.top(merchandise, "milli", 10)
    assert [D(r["revenue"]) for r in data["rows"]] == [ref.cents(merchandise.loc[c, "milli"]) for c in ref.top(merchandise, "milli", 10)]
    assert [r["units_sold"] for r in data["rows"]] == [merchandise.loc[c, "sold"] for c in ref.top(merchandise, "milli", 10)]


def test_country_totals_to_the_cent(warehouse: Cli, lines) -> None:
    data = report(warehouse, "countries")
    expected = ref.countries(lines)
    assert {r["country"]: D(r["revenue"]) for r in data["rows"]} == {c: ref.cents(f.revenue) for c, (f, _) in expected.items()}
    assert {r["country"]: (r["orders"], r["customers"]) for r in data["rows"]} == {c: (f.orders, n) for c, (f, n) in expected.items()}


def test_rfm_segments_and_cohorts(warehouse: Cli, lines) -> None:
    table = ref.rfm(lines)
    data = report(warehouse, "rfm")
    assert {r["segment"]: r["customers"] for r in data["rows"]} == {
        s: int(table["segment"].eq(s).sum()) for s in (r["segment"] for r in data["rows"])
    }
    assert report(warehouse, "cohorts")["details"]["active"] == ref.cohorts(lines)
