"""The real UCI Online Retail file end to end on both back ends, reconciled with figures
computed independently from the source (pandas and exact decimals, no platform code)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import Cli
from tests.test_cli_etl import one, q

pytestmark = pytest.mark.slow
GATE = {"RDP_QUALITY_RULES__ON_FAILURE": "fail"}  # the real file must pass the quality gate as configured


@pytest.fixture(scope="module")
def expected(real_file: Path) -> dict:
    """Reference figures from the raw file."""
    df = pd.read_csv(real_file, dtype=str, keep_default_na=False)
    df.index = df.index + 1  # source rows are 1-based
    trimmed = df.apply(lambda s: s.str.strip())
    duplicate = trimmed.duplicated(keep="first")
    quantity = trimmed["Quantity"].astype(int)
    price = trimmed["UnitPrice"].map(Decimal)
    adjustment = trimmed["InvoiceNo"].str.upper().str.startswith("A") | (trimmed["StockCode"].str.upper() == "B")
    rejected = duplicate | (quantity == 0) | ((price <= 0) & ~adjustment)
    total = Decimal(0)
    with open(real_file, newline="", encoding="utf-8") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), start=1):
            if not rejected.loc[row_no]:
                total += Decimal(row["Quantity"]) * Decimal(row["UnitPrice"])
    with_customer = trimmed[trimmed["CustomerID"] != ""]
    kept = with_customer[~rejected.loc[with_customer.index]]
    countries = kept.groupby("CustomerID")["Country"].nunique()
    return {
        "rows": len(df),
        "duplicates": int(duplicate.sum()),
        "quarantined_rows": set(df.index[rejected].tolist()),
        "total": total,
        "two_country_customers": {c.split(".")[0] for c in countries[countries == 2].index},
    }


def test_real_file_reconciles(run_cli: Cli, warehouse_url: str, real_file: Path, expected: dict) -> None:
    result = run_cli("etl", "--source", str(real_file), "--format", "json", env=GATE)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert expected["rows"] == 541_909
    assert summary["rows_read"] == 541_909
    assert summary["rows_loaded"] + summary["rows_quarantined"] == 541_909
    assert summary["rows_already_loaded"] == 0
    assert summary["quarantine_by_reason"]["duplicate"] == expected["duplicates"] == 5_268

    facts = one(warehouse_url, "SELECT COUNT(*) FROM fact_sales")
    assert facts == summary["rows_loaded"]
    assert {r for (r,) in q(warehouse_url, "SELECT source_row FROM etl_quarantine")} == expected["quarantined_rows"]

    joined = one(
        warehouse_url,
        """SELECT COUNT(*) FROM fact_sales f JOIN dim_customers c ON c.customer_key = f.customer_key
           AND (c.customer_key = -1 OR (c.effective_date <= f.transaction_datetime
                AND (c.expiry_date IS NULL OR f.transaction_datetime < c.expiry_date)))
           JOIN dim_products p ON p.product_key = f.product_key JOIN dim_date d ON d.date_key = f.date_key""",
    )
    assert joined == facts

    milli = one(warehouse_url, "SELECT SUM(CAST(ROUND(line_total * 1000) AS BIGINT)) FROM fact_sales")
    assert Decimal(int(milli)) / 1000 == expected["total"]
    assert expected["total"].quantize(Decimal("0.01")) == Decimal(
        str(one(warehouse_url, "SELECT SUM(line_total) FROM fact_sales"))
    ).quantize(Decimal("0.01"))

    versions = dict(
        q(
            warehouse_url,
            "SELECT customer_id, COUNT(*) FROM dim_customers WHERE customer_id IS NOT NULL GROUP BY customer_id HAVING COUNT(*) > 1",
        )
    )
    assert set(versions) == expected["two_country_customers"] and len(versions) == 8
    assert set(versions.values()) == {2}
    assert (
        one(
            warehouse_url,
            "SELECT COUNT(*) FROM (SELECT customer_id FROM dim_customers WHERE is_current = true GROUP BY customer_id HAVING COUNT(*) > 1) x",
        )
        == 0
    )

    again = json.loads(run_cli("etl", "--source", str(real_file), "--format", "json").stdout)
    assert (again["status"], again["rows_loaded"], again["rows_already_loaded"]) == ("skipped", 0, 541_909)
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == facts


def test_rollback_of_a_second_load_restores_the_real_file_state(run_cli: Cli, warehouse_url: str, real_file: Path, tmp_path: Path) -> None:
    from metadata.checksums import warehouse_checksums
    from sampledata.generator import generate_sales
    from tests.test_cli_etl import _engine

    assert run_cli("etl", "--source", str(real_file), "--format", "json", env=GATE).exit_code == 0
    engine = _engine(warehouse_url)
    before = warehouse_checksums(engine)
    second = generate_sales(tmp_path / "later.csv", 30_000, seed=7)
    summary = json.loads(run_cli("etl", "--source", str(second.path), "--format", "json", env=GATE).stdout)
    assert summary["dimension_changes"]["dim_customers"]["expired"] > 0  # customers seen with new countries
    assert warehouse_checksums(engine) != before
    result = json.loads(run_cli("versions", "rollback", "2", "--yes", "--format", "json").stdout)
    assert result["versions"] == [2]
    assert warehouse_checksums(engine) == before
    engine.dispose()
