"""`etl` end to end through the CLI, on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sampledata.generator import generate_sales
from tests.conftest import Cli, write_csv

H = "2010-12-01 08:26:00"
ROWS = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ["536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER ", "6", H, "2.55", "17850", "United Kingdom"],
    ["536365", "71053", "WHITE METAL LANTERN", "6", H, "3.39", "17850.0", "United Kingdom"],
    ["536365", "71053", "WHITE METAL LANTERN", "6", H, "3.39", "17850.0", "United Kingdom"],  # duplicate
    ["536366", "22633", "HAND WARMER UNION JACK", "6", "2010-12-01 08:28", "1.85", "", "United Kingdom"],  # no customer
    ["536367", "84879", "ASSORTED COLOUR BIRD ORNAMENT", "32", "12/1/2010 8:34", "1.69", "13047", "United Kingdom"],
    ["536368", "22960", "JAM MAKING SET WITH JARS", "0", "2010-12-01 08:34:00", "4.25", "13047", "United Kingdom"],  # zero qty
    ["536369", "21756", "BATH BUILDING BLOCK WORD", "3", "2010-12-01 08:35:00", "0", "13047", "United Kingdom"],  # zero price
    ["C536379", "D", "Discount", "-1", "2010-12-01 09:41:00", "27.50", "14527", "United Kingdom"],  # return
    ["A563185", "B", "Adjust bad debt", "1", "2011-08-12 14:50:00", "-11062.06", "", "United Kingdom"],  # adjustment
    ["536370", "POST", "POSTAGE", "3", "2010-12-25 08:45:00", "18.00", "12583", "France"],
    ["536371", "22728", "ALARM CLOCK BAKELIKE PINK", "24", "2011-01-05 09:00:00", "0.001", "12583", "France"],
    ["536372", "22727", "ALARM CLOCK BAKELIKE RED ", "2", "not a date", "3.75", "12583", "France"],  # bad date
]


def _engine(url: str):
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(parsed)


def q(url: str, sql: str, **params: object) -> list[tuple]:
    engine = _engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(sql), params)]
    engine.dispose()
    return rows


def one(url: str, sql: str, **params: object) -> object:
    return q(url, sql, **params)[0][0]


def etl_json(cli: Cli, source: Path, *extra: str) -> dict:
    result = cli("etl", "--source", str(source), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def extract(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "sales.csv", ROWS)


def test_load_accounts_for_every_row(run_cli: Cli, warehouse_url: str, extract: Path) -> None:
    summary = etl_json(run_cli, extract)
    assert summary["status"] == "success"
    assert summary["rows_read"] == 12
    assert summary["rows_loaded"] == 8
    assert summary["rows_quarantined"] == 4
    assert summary["rows_already_loaded"] == 0
    assert summary["quarantine_by_reason"] == {"bad_invoice_date": 1, "duplicate": 1, "non_positive_price": 1, "zero_quantity": 1}
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 8
    reasons = dict(q(warehouse_url, "SELECT source_row, reasons FROM etl_quarantine"))
    assert reasons == {3: "duplicate", 6: "zero_quantity", 7: "non_positive_price", 12: "bad_invoice_date"}
    raw = q(warehouse_url, "SELECT description, invoice_date FROM etl_quarantine WHERE source_row = 12")[0]
    assert raw == ("ALARM CLOCK BAKELIKE RED ", "not a date")  # raw values, untrimmed
    ledger = q(warehouse_url, "SELECT status, rows_read, rows_loaded, rows_quarantined, rows_already_loaded FROM etl_runs")
    assert ledger == [("success", 12, 8, 4, 0)]


def test_facts_join_dimensions_with_exact_money(run_cli: Cli, warehouse_url: str, extract: Path) -> None:
    etl_json(run_cli, extract)
    rows = q(
        warehouse_url,
        """SELECT f.invoice_no, c.customer_id, p.stock_code, d.full_date, f.quantity, f.unit_price, f.line_total, f.transaction_type
           FROM fact_sales f JOIN dim_customers c ON c.customer_key = f.customer_key
           JOIN dim_products p ON p.product_key = f.product_key JOIN dim_date d ON d.date_key = f.date_key
           ORDER BY f.source_row""",
    )
    assert len(rows) == 8
    by_invoice = {r[0] + r[2]: r for r in rows}
    assert by_invoice["53636585123A"][1] == "17850"
    assert by_invoice["536366" + "22633"][1] is None  # the unknown customer
    assert by_invoice["C536379D"][4] == -1 and by_invoice["C536379D"][7] == "return"
    assert by_invoice["A563185B"][7] == "adjustment"
    assert Decimal(str(by_invoice["A563185B"][5])) == Decimal("-11062.06")
    assert Decimal(str(by_invoice["53637122728"][6])).quantize(Decimal("0.001")) == Decimal("0.024")
    total = sum(Decimal(str(r[6])).quantize(Decimal("0.001")) for r in rows)
    assert total == Decimal("15.30") + Decimal("20.34") + Decimal("11.10") + Decimal("54.08") - Decimal("27.50") - Decimal(
        "11062.06"
    ) + Decimal("54.00") + Decimal("0.024")
    assert one(warehouse_url, "SELECT customer_key FROM fact_sales WHERE invoice_no = '536366'") == -1


def test_dimensions(run_cli: Cli, warehouse_url: str, extract: Path) -> None:
    etl_json(run_cli, extract)
    products = {r[0]: r[1:] for r in q(warehouse_url, "SELECT stock_code, description, category, is_merchandise FROM dim_products")}
    assert products["85123A"][0] == "WHITE HANGING HEART T-LIGHT HOLDER"  # trimmed
    assert products["POST"][1:] == ("postage", False)
    assert products["22728"][1:] == ("merchandise", True)
    assert "22960" not in products  # only quarantined rows mention it
    christmas = q(
        warehouse_url, "SELECT is_uk_bank_holiday, holiday_name, day_name, weekday, quarter FROM dim_date WHERE date_key = 20101225"
    )
    assert christmas == [(True, "Christmas Day", "Saturday", 6, 4)] or christmas == [(1, "Christmas Day", "Saturday", 6, 4)]
    assert one(warehouse_url, "SELECT COUNT(*) FROM dim_customers WHERE customer_key = -1") == 1


def test_same_file_again_adds_nothing(run_cli: Cli, warehouse_url: str, extract: Path) -> None:
    etl_json(run_cli, extract)
    again = etl_json(run_cli, extract)
    assert again["status"] == "skipped"
    assert again["rows_loaded"] == 0 and again["rows_already_loaded"] == 12
    assert "unchanged since run 1" in again["message"] and "--force" in again["message"]
    forced = etl_json(run_cli, extract, "--force")
    assert forced["status"] == "success"
    assert (forced["rows_read"], forced["rows_loaded"], forced["rows_quarantined"], forced["rows_already_loaded"]) == (12, 0, 0, 12)
    assert "already in the warehouse" in forced["message"]
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 8
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_quarantine") == 4


def test_overlapping_extract_adds_only_new_lines(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", ROWS[:6])
    later = [["536400", "22111", "SCOTTIE DOG HOT WATER BOTTLE", "3", "2011-02-01 10:00:00", "4.95", "17850", "United Kingdom"]]
    second = write_csv(tmp_path / "b.csv", ROWS[:6] + later)
    etl_json(run_cli, first)
    summary = etl_json(run_cli, second)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_quarantined"], summary["rows_already_loaded"]) == (7, 1, 0, 6)
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 5


def test_scd2_country_change_across_loads(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    def row(inv: str, when: str, country: str) -> list[str]:
        return [inv, "22111", "SCOTTIE DOG HOT WATER BOTTLE", "1", when, "4.95", "12345", country]

    etl_json(run_cli, write_csv(tmp_path / "a.csv", [row("540001", "2011-01-10 10:00:00", "France")]))
    summary = etl_json(
        run_cli,
        write_csv(tmp_path / "b.csv", [row("540002", "2011-03-01 10:00:00", "Germany"), row("540003", "2011-04-01 10:00:00", "France")]),
    )
    assert summary["dimension_changes"]["dim_customers"] == {"inserted": 1, "expired": 1, "extended": 0}
    versions = q(
        warehouse_url,
        "SELECT country, effective_date, expiry_date, is_current FROM dim_customers WHERE customer_id = '12345' ORDER BY effective_date",
    )
    assert [(v[0], str(v[1])[:19], str(v[2])[:19] if v[2] else None, bool(v[3])) for v in versions] == [
        ("France", "2011-01-10 10:00:00", "2011-03-01 10:00:00", False),
        ("Germany", "2011-03-01 10:00:00", None, True),
    ]
    pointed = q(
        warehouse_url, "SELECT f.invoice_no, c.country FROM fact_sales f JOIN dim_customers c USING (customer_key) ORDER BY f.invoice_no"
    )
    assert pointed == [("540001", "France"), ("540002", "Germany"), ("540003", "Germany")]


def test_scd2_change_within_one_load_repoints_earlier_chunks(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    base = datetime(2011, 1, 1, 8, 0)

    def row(i: int, hours: int, country: str) -> list[str]:
        return [f"55{i:04d}", "22111", "SCOTTIE DOG", "1", str(base + timedelta(hours=hours)), "4.95", "12345", country]

    # France for 200 hours, then (in the third chunk) Spain from hour 150: the Spain version
    # starts at hour 150, so 50 France-country facts loaded with the second chunk move to it.
    rows = [row(i, i, "France") for i in range(200)] + [row(i, i - 50, "Spain") for i in range(200, 300)]
    summary = etl_json(run_cli, write_csv(tmp_path / "a.csv", rows), "--chunk-size", "100")
    assert summary["dimension_changes"]["dim_customers"] == {"inserted": 2, "expired": 1, "extended": 0}
    counts = dict(
        q(warehouse_url, "SELECT c.country, COUNT(*) FROM fact_sales f JOIN dim_customers c USING (customer_key) GROUP BY c.country")
    )
    assert counts == {"France": 150, "Spain": 150}


def test_known_customers_met_in_later_chunks_are_planned_on_their_stored_versions(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """The loader reads a customer's stored versions when a chunk first meets it: a known
    customer first seen in the third chunk changes country and is extended back like one seen
    in the first, and one seen in two chunks is read once and planned on the run's own changes."""
    base = datetime(2011, 3, 1, 8, 0)

    def row(i: int, hours: int, customer: str, country: str) -> list[str]:
        return [f"56{i:04d}", "22111", "SCOTTIE DOG", "1", str(base + timedelta(hours=hours)), "4.95", customer, country]

    etl_json(run_cli, write_csv(tmp_path / "a.csv", [row(0, 0, "12345", "France"), row(1, 0, "12400", "Spain")]))
    rows = [row(i, i, "13000", "Norway") for i in range(2, 150)]  # chunk 1 and half of chunk 2: another customer
    rows += [row(150, 150, "12400", "Italy")]  # chunk 2: 12400 moves to Italy
    rows += [row(i, i, "13000", "Norway") for i in range(151, 200)]
    rows += [row(200, 200, "12345", "Germany"), row(201, -100, "12345", "France"), row(202, 300, "12400", "Spain")]  # chunk 3
    summary = etl_json(run_cli, write_csv(tmp_path / "b.csv", rows), "--chunk-size", "100")
    assert summary["dimension_changes"]["dim_customers"] == {"inserted": 3, "expired": 2, "extended": 1}
    versions = q(
        warehouse_url,
        "SELECT customer_id, country, effective_date, expiry_date, is_current FROM dim_customers "
        "WHERE customer_id IS NOT NULL ORDER BY customer_id, effective_date",
    )
    assert [(c, country, str(eff)[:16], str(exp)[:16] if exp else None, bool(cur)) for c, country, eff, exp, cur in versions] == [
        ("12345", "France", "2011-02-25 04:00", "2011-03-09 16:00", False),
        ("12345", "Germany", "2011-03-09 16:00", None, True),
        ("12400", "Spain", "2011-03-01 08:00", "2011-03-07 14:00", False),
        ("12400", "Italy", "2011-03-07 14:00", None, True),
        ("13000", "Norway", "2011-03-01 10:00", None, True),
    ]
    # the return to Spain opens no version: the fact points at the version valid at its time
    assert q(
        warehouse_url, "SELECT c.country FROM fact_sales f JOIN dim_customers c USING (customer_key) WHERE f.invoice_no = '560202'"
    ) == [("Italy",)]


def test_scd1_product_latest_description_and_price_win(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    old = ["540001", "22111", "SCOTTIE DOG", "1", "2011-01-10 10:00:00", "4.95", "12345", "France"]
    new = ["540002", "22111", "SCOTTIE DOG HOT WATER BOTTLE", "1", "2011-02-10 10:00:00", "5.25", "12345", "France"]
    etl_json(run_cli, write_csv(tmp_path / "b.csv", [new]))
    summary = etl_json(run_cli, write_csv(tmp_path / "a.csv", [old]))  # an older extract loaded later
    assert summary["dimension_changes"]["dim_products"] == {"inserted": 0, "updated": 0}
    assert q(warehouse_url, "SELECT description, current_unit_price FROM dim_products")[0][0] == "SCOTTIE DOG HOT WATER BOTTLE"
    newer = ["540003", "22111", "SCOTTIE DOG BOTTLE", "1", "2011-03-10 10:00:00", "5.50", "12345", "France"]
    summary = etl_json(run_cli, write_csv(tmp_path / "c.csv", [newer]))
    assert summary["dimension_changes"]["dim_products"] == {"inserted": 0, "updated": 1}
    desc, price = q(warehouse_url, "SELECT description, current_unit_price FROM dim_products")[0]
    assert (desc, Decimal(str(price))) == ("SCOTTIE DOG BOTTLE", Decimal("5.5"))


def test_scd1_changes_across_chunks_are_written_once_and_roll_back(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """A known product changed in several chunks of one run ends with the run's latest values,
    has its pre-run state saved once, and a rollback restores it; a product new in the run gets
    its later chunks' values too."""

    def sale(i: int, code: str, description: str, price: str) -> list[str]:
        return [str(541000 + i), code, description, "1", f"2011-03-{1 + i // 10:02d} 10:{i % 60:02d}:00", price, "12345", "France"]

    etl_json(run_cli, write_csv(tmp_path / "first.csv", [sale(0, "22111", "SCOTTIE DOG", "4.95")]))
    rows = [sale(i, "85123A", "FILLER", "2.55") for i in range(1, 250)]
    rows[10] = sale(11, "22111", "SCOTTIE DOG BOTTLE", "5.25")  # chunk 1
    rows[150] = sale(151, "22111", "SCOTTIE DOG HOT WATER BOTTLE", "5.50")  # chunk 2
    rows[-1] = sale(249, "85123A", "WHITE HANGING HEART", "2.95")  # new in chunk 1, its last line in chunk 3
    summary = etl_json(run_cli, write_csv(tmp_path / "second.csv", rows), "--chunk-size", "100")
    assert summary["dimension_changes"]["dim_products"] == {"inserted": 1, "updated": 1}
    products = {
        code: (d, Decimal(str(p)))
        for code, d, p in q(warehouse_url, "SELECT stock_code, description, current_unit_price FROM dim_products")
    }
    assert products == {"22111": ("SCOTTIE DOG HOT WATER BOTTLE", Decimal("5.5")), "85123A": ("WHITE HANGING HEART", Decimal("2.95"))}
    history = q(warehouse_url, "SELECT description, current_unit_price FROM dim_products_history")
    assert [(d, Decimal(str(p))) for d, p in history] == [("SCOTTIE DOG", Decimal("4.95"))]  # saved once
    assert run_cli("versions", "rollback", "2", "--yes").exit_code == 0
    desc, price = q(warehouse_url, "SELECT description, current_unit_price FROM dim_products WHERE stock_code = '22111'")[0]
    assert (desc, Decimal(str(price))) == ("SCOTTIE DOG", Decimal("4.95"))


def test_duplicates_found_after_the_tracker_spilled(run_cli: Cli, warehouse_url: str, tmp_path: Path, monkeypatch) -> None:
    """Two extracts concatenated: the second half repeats lines the duplicate rule spilled to
    disk long before (a window of 50 lines here, 250,000 by default)."""
    from functools import partial

    from etl import cleaning
    from etl.identity import DuplicateTracker

    monkeypatch.setattr(cleaning, "DuplicateTracker", partial(DuplicateTracker, window=50))
    lines = [
        [str(540000 + i // 5), f"2{i:04d}", "ITEM", "1", f"2011-02-{1 + i % 28:02d} 10:00:00", "1.25", "12345", "France"]
        for i in range(300)
    ]
    summary = etl_json(run_cli, write_csv(tmp_path / "twice.csv", lines + lines[:120] + lines[250:]), "--chunk-size", "100")
    assert (summary["rows_read"], summary["rows_loaded"]) == (470, 300)
    assert summary["quarantine_by_reason"] == {"duplicate": 170}
    rows = q(warehouse_url, "SELECT source_row FROM etl_quarantine ORDER BY source_row")
    assert [r[0] for r in rows] == list(range(301, 471))


def test_dry_run_writes_nothing(run_cli: Cli, warehouse_url: str, extract: Path) -> None:
    summary = etl_json(run_cli, extract, "--dry-run")
    assert summary["status"] == "dry_run" and summary["rows_loaded"] == 8
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 0
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_quarantine") == 0
    assert q(warehouse_url, "SELECT status FROM etl_runs") == [("dry_run",)]
    assert etl_json(run_cli, extract)["rows_loaded"] == 8  # a dry run does not count as loaded


def test_table_output_shows_summary(run_cli: Cli, extract: Path) -> None:
    result = run_cli("etl", "--source", str(extract))
    assert result.exit_code == 0
    for label in ("rows read", "new facts", "quarantined", "already loaded", "duplicate", "rows/s"):
        assert label in result.stdout


def test_runs_list_and_show(run_cli: Cli, extract: Path) -> None:
    etl_json(run_cli, extract)
    listed = json.loads(run_cli("runs", "list", "--format", "json").stdout)
    assert [(r["run_id"], r["status"], r["rows_read"]) for r in listed] == [(1, "success", 12)]
    shown = json.loads(run_cli("runs", "show", "1", "--format", "json").stdout)
    assert shown["quarantine_by_reason"]["duplicate"] == 1
    missing = run_cli("runs", "show", "99")
    assert missing.exit_code == 1 and "Error: run 99 not found" in missing.output


def test_dimension_keys_continue_after_a_load(run_cli: Cli, warehouse_url: str, extract: Path) -> None:
    """The loader gives new products and customer versions their keys itself: from 1, without
    gaps, and a row inserted later without a key (PostgreSQL's sequence, SQLite's rowid) gets
    the next one."""
    etl_json(run_cli, extract)
    products = [k for (k,) in q(warehouse_url, "SELECT product_key FROM dim_products ORDER BY 1")]
    customers = [k for (k,) in q(warehouse_url, "SELECT customer_key FROM dim_customers ORDER BY 1")]
    assert products == list(range(1, len(products) + 1))
    assert customers == [-1, *range(1, len(customers))]
    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dim_products (stock_code, current_unit_price, price_as_of, category, is_merchandise) "
                "VALUES ('ZZ-NEW', 1, '2011-01-01 00:00:00', 'merchandise', true)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO dim_customers (customer_id, country, effective_date, is_current) VALUES ('99999', 'France', '2011-01-01', true)"
            )
        )
    engine.dispose()
    assert one(warehouse_url, "SELECT product_key FROM dim_products WHERE stock_code = 'ZZ-NEW'") == len(products) + 1
    assert one(warehouse_url, "SELECT customer_key FROM dim_customers WHERE customer_id = '99999'") == len(customers)


def test_a_failed_write_fails_the_run_and_loads_nothing(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    """A chunk's writes run on the loader's writer thread while the next chunk is keyed: when one
    fails (here the fact rows of a later chunk), the run fails with the database's error, and
    nothing of the earlier chunks stays."""
    source = generate_sales(tmp_path / "g.csv", 2_000, seed=3).path
    assert run_cli("setup").exit_code == 0
    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_late() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN IF NEW.source_row > 1500 THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; RETURN NEW; END $$"
                )
            )
            conn.execute(text("CREATE TRIGGER refuse_late BEFORE INSERT ON fact_sales FOR EACH ROW EXECUTE FUNCTION refuse_late()"))
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_late BEFORE INSERT ON fact_sales WHEN NEW.source_row > 1500 "
                    "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
                )
            )
    engine.dispose()
    result = run_cli("etl", "--source", str(source), "--chunk-size", "200")
    assert result.exit_code == 1
    assert "refused by a test trigger" in result.output
    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 0
    assert one(warehouse_url, "SELECT COUNT(*) FROM dim_products") == 0
    assert one(warehouse_url, "SELECT COUNT(*) FROM dim_customers") == 1  # the unknown customer
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_quarantine") == 0
    assert q(warehouse_url, "SELECT status FROM etl_runs") == [("failed",)]
