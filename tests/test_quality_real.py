"""The quality checks on the real UCI file loaded into PostgreSQL: `evaluate` over the whole
warehouse within 1 s, and its counts equal to figures computed independently from the source
with pandas (no platform code)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from database.engine import make_engine
from monitoring.countries import KNOWN_COUNTRIES
from monitoring.gate import evaluate
from tests.conftest import Cli
from tests.test_quality_checks import settings_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def source(real_file: Path) -> dict:
    df = pd.read_csv(real_file, dtype=str, keep_default_na=False).apply(lambda s: s.str.strip())
    duplicate = df.duplicated(keep="first")
    quantity = df["Quantity"].astype(int)
    price = df["UnitPrice"].map(Decimal)
    adjustment = df["InvoiceNo"].str.upper().str.startswith("A") | (df["StockCode"].str.upper() == "B")
    rule_break = (quantity == 0) | ((price <= 0) & ~adjustment)
    kept = df[~(duplicate | rule_break)]
    unknown_country = kept[(kept["CustomerID"] != "") & ~kept["Country"].isin(KNOWN_COUNTRIES)]
    return {
        "rows": len(df),
        "no_customer": int((df["CustomerID"] == "").sum()),
        "duplicates": int(duplicate.sum()),
        "rule_breaks": int(rule_break.sum()),
        "facts": len(kept),
        "bad_invoices": int((~kept["InvoiceNo"].str.fullmatch(r"[CA]?\d{6}")).sum()),
        "positive_returns": int((kept["InvoiceNo"].str.startswith("C") & (kept["Quantity"].astype(int) > 0)).sum()),
        "unknown_country_customers": unknown_country["CustomerID"].nunique(),
    }


def test_real_file_scores_match_the_source(pg_url: str, real_file: Path, source: dict) -> None:
    result = Cli(pg_url)("etl", "--source", str(real_file), "--format", "json")
    assert result.exit_code == 0, result.output
    settings = settings_for(pg_url)
    engine = make_engine(settings.database)
    timings = []
    with engine.connect() as conn:
        for _ in range(3):
            started = time.perf_counter()
            gate = evaluate(conn, settings)
            timings.append(time.perf_counter() - started)
    engine.dispose()
    print(f"evaluate on the real warehouse (PostgreSQL): {[round(t, 3) for t in timings]} s")  # figures, not a test

    found = {r.check: r for r in gate.results}
    n = source["rows"]
    assert (found["completeness.source.customer_id"].offending, found["completeness.source.customer_id"].total) == (
        source["no_customer"],
        n,
    )
    assert found["completeness.source.customer_id"].measured == pytest.approx(1 - 135_080 / 541_909)
    assert found["uniqueness.source.exact_duplicates"].offending == source["duplicates"] == 5_268
    assert found["uniqueness.source.exact_duplicates"].passed  # 0.9903 >= 0.98
    assert found["accuracy.source.business_rules"].offending == source["rule_breaks"]
    assert found["validity.fact_sales.invoice_no"].total == source["facts"]
    assert found["validity.fact_sales.invoice_no"].offending == source["bad_invoices"] == 0
    assert found["accuracy.fact_sales.return_sign"].offending == source["positive_returns"] == 0
    assert found["validity.dim_customers.country"].offending == source["unknown_country_customers"] == 4
    assert all(found[f"consistency.fact_sales.{c}"].offending == 0 for c in ("customer_key", "product_key", "date_key", "customer_version"))
    assert found["uniqueness.fact_sales.line_id"].offending == 0
    assert gate.passed and gate.warnings == []  # 2011 data is old, but data recency is a check a user switches on

    check = Cli(pg_url)("quality", "check", "--format", "json")
    assert check.exit_code == 0 and json.loads(check.stdout)["passed"] is True
