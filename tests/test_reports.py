"""`report`: every figure against an independent pandas computation of the same extract
(tests/retail_reference.py: the raw CSV and the documented rules, never the warehouse), on a
real SQLite file and a real PostgreSQL schema; answers through the cache and never stale; exact
error messages; the HTML dashboard opened in a real headless browser."""

from __future__ import annotations

import csv
import json
import stat
import tempfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from reports import PERIODS
from reports.rfm import SEGMENTS, fm_score, segment_of
from sampledata.generator import generate_sales
from tests import retail_reference as ref
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, _engine, etl_json
from utils.files import current_umask

# Lines added to the generated extract so that every rule of the reports is exercised.
EXTRA = [
    # bad-debt adjustments (no customer; a negative price is allowed for them)
    ["A563185", "B", "Adjust bad debt", "1", "2011-08-12 14:50:00", "11062.06", "", "United Kingdom"],
    ["A563186", "B", "Adjust bad debt", "1", "2011-08-12 14:51:00", "-11062.06", "", "United Kingdom"],
    # a customer who moves to Germany and comes back: the last sale still counts under Germany (SCD2)
    ["590001", "22111", "SCOTTIE DOG HOT WATER BOTTLE", "3", "2011-01-10 10:00:00", "4.95", "99901", "France"],
    ["590002", "22112", "[SET OF 3] CHOCOLATE [b]BOX[/b]", "2", "2011-03-01 11:00:00", "2.10", "99901", "Germany"],
    ["590003", "22111", "SCOTTIE DOG HOT WATER BOTTLE", "5", "2011-05-02 12:00:00", "4.95", "99901.0", "France"],
    # a customer with a return only: no order, left out of RFM and cohorts
    ["C590004", "22112", "[SET OF 3] CHOCOLATE [b]BOX[/b]", "-1", "2011-06-01 09:00:00", "2.10", "99902", "Spain"],
    # a return by negative quantity on a plain invoice, and an order whose invoice also has it
    ["590005", "22113", "TEA TOWEL", "12", "2011-06-03 09:00:00", "1.25", "99903", "Spain"],
    ["590005", "22114", "TEA TOWEL GREEN", "-2", "2011-06-03 09:00:00", "1.25", "99903", "Spain"],
    # quarantined: zero quantity, zero price, an exact repeat
    ["590006", "22113", "TEA TOWEL", "0", "2011-06-03 10:00:00", "1.25", "99903", "Spain"],
    ["590007", "22113", "TEA TOWEL", "4", "2011-06-03 10:00:00", "0", "99903", "Spain"],
    ["590005", "22113", "TEA TOWEL", "12", "2011-06-03 09:00:00", "1.25", "99903", "Spain"],
]
MONEY_KEYS = ("sales", "returns", "adjustments", "revenue")
NO_AGGREGATES = {"RDP_CACHE__USE_AGGREGATES": "false"}


def D(value: object) -> Decimal:
    return Decimal(str(value))


def report(cli: Cli, *args: str, env: dict[str, str] | None = None) -> dict:
    result = cli("report", *args, "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reports") / "sales.csv"
    generate_sales(path, 20_000, seed=7)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(EXTRA)
    return path


@pytest.fixture(scope="module")
def lines(extract: Path):
    return ref.facts(extract)


def _assert_figures(row: dict, expected: ref.Figures, customers: int | None = None) -> None:
    got = (row["orders"], row["units"], *(D(row[k]) for k in MONEY_KEYS))
    want = (
        expected.orders,
        expected.units,
        *(ref.cents(v) for v in (expected.sales, expected.returns, expected.adjustments, expected.revenue)),
    )
    assert got == want, row
    if customers is not None:
        assert row["customers"] == customers, row
    aov = ref.cents(Decimal(expected.sales) / expected.orders) if expected.orders else None
    assert (D(row["aov"]) if row["aov"] is not None else None) == aov


def test_reports_match_an_independent_computation(run_cli: Cli, warehouse_url: str, extract: Path, lines) -> None:
    etl_json(run_cli, extract)
    answers: dict[tuple[str, ...], dict] = {}

    def ask(*args: str) -> dict:
        answers[args] = report(run_cli, *args)
        return answers[args]

    _check_sales(ask, lines)
    _check_products(ask, lines)
    _check_countries_and_customers(ask, lines)
    _check_returns(ask, lines)
    _check_rfm(run_cli, ask, lines, Path(tempfile.mkdtemp()))
    _check_cohorts(ask, lines)
    for args, first in answers.items():  # asked again: from the cache, the same answer
        again = report(run_cli, *args)
        assert again["cache"] == "hit", args
        assert (again["rows"], again["summary"]) == (first["rows"], first["summary"]), args
        assert first["form"] == "aggregate"
        plain = report(run_cli, *args, "--no-cache", env=NO_AGGREGATES)  # the same SQL over fact_sales
        assert (plain["form"], plain["cache"]) == ("fact", "off")
        assert (plain["rows"], plain["summary"]) == (first["rows"], first["summary"]), args


def _check_sales(ask, lines) -> None:
    for by in PERIODS:
        data = ask("sales", "--by", by)
        expected = ref.sales(lines, by)
        assert [r["period"] for r in data["rows"]] == sorted(expected)
        for row in data["rows"]:
            figures, customers = expected[row["period"]]
            _assert_figures(row, figures, customers)
        total = ref.figures(lines)
        assert (data["summary"]["orders"], D(data["summary"]["revenue"])) == (total.orders, ref.cents(total.revenue))
    months = ask("sales", "--by", "month")["rows"]
    revenue = {p: f.revenue for p, (f, _) in ref.sales(lines, "month").items()}
    assert months[1]["revenue_change"] == pytest.approx(revenue[months[1]["period"]] / revenue[months[0]["period"]] - 1, abs=1e-4)
    assert months[0]["revenue_change"] is None
    # a date range and a country (any case): the country of the customer version valid at the sale
    data = ask("sales", "--by", "week", "--from", "2011-03-01", "--to", "2011-06-30", "--country", "GERMANY")
    chosen = lines[(lines["country"] == "Germany") & (lines["date"] >= "2011-03-01") & (lines["date"] <= "2011-06-30")]
    expected = ref.sales(chosen, "week")
    assert [r["period"] for r in data["rows"]] == sorted(expected) and expected
    for row in data["rows"]:
        _assert_figures(row, *expected[row["period"]])
    assert data["summary"]["from"] == "2011-03-01" and data["summary"]["to"] == "2011-06-30"


def _check_products(ask, lines) -> None:
    products = ref.products(lines)
    merchandise = products[products["merchandise"]]
    for by, column in (("revenue", "milli"), ("units", "sold"), ("returns", "returned")):
        data = ask("products", "--top", "10", "--by", by)
        assert [r["stock_code"] for r in data["rows"]] == ref.top(merchandise, column, 10), by
        for r in data["rows"]:
            p = products.loc[r["stock_code"]]
            assert (r["units_sold"], r["units_returned"], D(r["revenue"]), D(r["returned"])) == (
                p["sold"],
                p["returned"],
                ref.cents(p["milli"]),
                ref.cents(p["returned_milli"]),
            )
            assert r["revenue_share"] == pytest.approx(p["milli"] / merchandise["milli"].sum(), abs=1e-4)
        assert data["summary"]["products"] == len(merchandise)
    everything = ask("products", "--top", "25", "--include-non-merchandise")
    assert [r["stock_code"] for r in everything["rows"]] == ref.top(products, "milli", 25)
    assert any(r["category"] != "merchandise" for r in everything["rows"])  # postage and the like rank here
    assert D(everything["summary"]["revenue"]) == ref.cents(products["milli"].sum())


def _check_countries_and_customers(ask, lines) -> None:
    data = ask("countries")
    expected = ref.countries(lines)
    assert {r["country"] for r in data["rows"]} == set(expected)
    for row in data["rows"]:
        _assert_figures(row, *expected[row["country"]])
    order = sorted(expected, key=lambda c: (-expected[c][0].revenue, c))
    assert [r["country"] for r in data["rows"]] == order
    assert {"France", "Germany"} <= set(expected)  # 99901 counts in both
    table = ref.customers(lines)
    data = ask("customers", "--top", "15")
    assert [r["customer_id"] for r in data["rows"]] == ref.top(table, "revenue", 15)
    for row in data["rows"]:
        c = table.loc[row["customer_id"]]
        assert (row["orders"], row["units"], D(row["sales"]), D(row["returns"]), D(row["revenue"]), row["country"]) == (
            c["orders"], c["units"], ref.cents(c["sales"]), ref.cents(c["returns"]), ref.cents(c["revenue"]), c["country"]
        )  # fmt: skip
        assert (row["first_purchase"], row["last_purchase"]) == (f"{c['first']:%Y-%m-%d}", f"{c['last']:%Y-%m-%d}")
    assert data["summary"]["customers"] == len(table)
    mover = ask("customers", "--top", "100000")
    moved = next(r for r in mover["rows"] if r["customer_id"] == "99901")
    assert (moved["country"], moved["orders"]) == ("Germany", 3)
    only_returns = next(r for r in mover["rows"] if r["customer_id"] == "99902")
    assert (only_returns["orders"], only_returns["aov"], only_returns["first_purchase"]) == (0, None, None)


def _check_returns(ask, lines) -> None:
    total = ref.figures(lines)
    returned_units = int(-lines.loc[lines["kind"] == "return", "quantity"].sum())
    sold_units = int(lines.loc[lines["kind"] == "sale", "quantity"].sum())
    data = ask("returns", "--by", "product", "--top", "10")
    s = data["summary"]
    assert D(s["cancelled_revenue"]) == ref.cents(-total.returns)
    assert s["return_invoices"] == lines.loc[lines["kind"] == "return", "invoice"].nunique()
    assert (s["units_returned"], s["units_sold"]) == (returned_units, sold_units)
    assert s["returns_share"] == pytest.approx(-total.returns / total.sales, abs=1e-4)
    products = ref.products(lines)
    merchandise = products[products["merchandise"]]
    assert [r["stock_code"] for r in data["rows"]] == ref.top(merchandise, "returned", 10)
    for r in data["rows"]:
        p = products.loc[r["stock_code"]]
        assert r["return_rate"] == pytest.approx(p["returned"] / p["sold"], abs=1e-4)
    by_country = ask("returns", "--by", "country")
    expected = ref.countries(lines)
    for r in by_country["rows"]:
        f = expected[r["country"]][0]
        assert (D(r["returned"]), r["orders"], D(r["sales"])) == (ref.cents(-f.returns), f.orders, ref.cents(f.sales))
    assert [D(r["returned"]) for r in by_country["rows"]] == sorted((D(r["returned"]) for r in by_country["rows"]), reverse=True)


def _check_rfm(cli: Cli, ask, lines, folder: Path) -> None:
    table = ref.rfm(lines)
    data = ask("rfm")
    assert [r["segment"] for r in data["rows"]] == [s.name for s in SEGMENTS]
    counts = table.groupby("segment").size()
    revenue = table.groupby("segment")["revenue"].sum()
    for row in data["rows"]:
        assert row["customers"] == counts.get(row["segment"], 0), row
        assert D(row["revenue"]) == ref.cents(revenue.get(row["segment"], 0)), row
    assert data["summary"]["customers"] == len(table)
    assert data["summary"]["reference_date"] == f"{lines.loc[lines['kind'] == 'sale', 'date'].max():%Y-%m-%d}"
    export = folder / "rfm.csv"
    result = cli("report", "rfm", "--export", str(export), "--format", "json")
    assert result.exit_code == 0, result.output
    added_up = json.loads(result.stdout)  # the segments added up from the customers' figures: the same answer
    assert (added_up["rows"], added_up["summary"]) == (data["rows"], data["summary"])
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    with open(export, newline="", encoding="utf-8") as fh:
        exported = {r["customer_id"]: r for r in csv.DictReader(fh)}
    assert set(exported) == set(table.index)
    for customer, r in exported.items():
        t = table.loc[customer]
        assert (int(r["recency_days"]), int(r["frequency"]), D(r["monetary"]), int(r["r"]), int(r["f"]), int(r["m"]), int(r["fm"]), r["segment"]) == (
            t["recency"], t["orders"], ref.cents(t["revenue"]), t["r"], t["f"], t["m"], t["fm"], t["segment"]
        ), customer  # fmt: skip
    assert "99902" not in exported  # returns only: no order


def _check_cohorts(ask, lines) -> None:
    data = ask("cohorts")
    expected = ref.cohorts(lines)
    assert data["details"]["active"] == expected
    for row in data["rows"]:
        counts = expected[row["cohort"]]
        assert row["customers"] == counts[0]
        for k, n in enumerate(counts):
            assert row[f"m{k}"] == pytest.approx(n / counts[0], abs=1e-4)
        assert all(row[f"m{k}"] is None for k in range(len(counts), len(data["columns"]) - 2))


# -- cache, freshness ------------------------------------------------------------------------


def test_reports_are_never_stale(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "a.csv", ROWS))
    first = report(run_cli, "sales")
    assert first["cache"] == "miss"
    assert report(run_cli, "sales")["cache"] == "hit"
    december = next(r for r in first["rows"] if r["period"] == "2010-12")
    assert (december["orders"], D(december["revenue"])) == (4, Decimal("127.32"))
    more = [["536400", "22111", "SCOTTIE DOG", "10", "2010-12-20 10:00:00", "4.95", "13047", "United Kingdom"]]
    etl_json(run_cli, write_csv(tmp_path / "b.csv", more))
    after = report(run_cli, "sales")
    assert after["cache"] == "miss" and after["data_version"] != first["data_version"]
    december = next(r for r in after["rows"] if r["period"] == "2010-12")
    assert (december["orders"], D(december["revenue"])) == (5, Decimal("176.82"))
    assert run_cli("versions", "rollback", "2", "--yes").exit_code == 0
    back = report(run_cli, "sales")
    assert back["cache"] == "miss" and back["rows"] == first["rows"]


def test_reports_without_the_orders_aggregate_read_the_fact(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    """A warehouse made before agg_daily_orders existed: reports read fact_sales; setup adds and fills it."""
    etl_json(sqlite_cli, write_csv(tmp_path / "a.csv", ROWS))
    before = report(sqlite_cli, "countries")
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE agg_daily_orders"))
    old = report(sqlite_cli, "countries")
    assert old["form"] == "fact" and old["rows"] == before["rows"]
    assert sqlite_cli("setup").exit_code == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM agg_daily_orders")).scalar() > 0
    engine.dispose()
    again = report(sqlite_cli, "countries")
    assert again["form"] == "aggregate" and again["rows"] == before["rows"]


# -- output ----------------------------------------------------------------------------------


def test_every_report_in_every_format(sqlite_cli: Cli, tmp_path: Path) -> None:
    etl_json(sqlite_cli, write_csv(tmp_path / "a.csv", [*ROWS, EXTRA[3]]))
    for args in (["sales"], ["products"], ["countries"], ["customers"], ["returns"], ["returns", "--by", "country"], ["rfm"], ["cohorts"]):
        table = sqlite_cli("report", *args)
        assert table.exit_code == 0, table.output
        assert "data version 1.1.1.1" in table.stderr and "rows in" in table.stderr
        as_csv = sqlite_cli("report", *args, "--format", "csv")
        as_json = report(sqlite_cli, *args)
        header, *rows = list(csv.reader(as_csv.stdout.splitlines()))
        assert header == as_json["columns"] and len(rows) == len(as_json["rows"])
    products = sqlite_cli("report", "products", "--include-non-merchandise")
    assert "[SET OF 3] CHOCOLATE [b]BOX[/b]" in products.stdout  # shown as text, not read as markup
    ranked = [r["stock_code"] for r in report(sqlite_cli, "products", "--top", "50", "--include-non-merchandise")["rows"]]
    assert ranked[:2] == ["84879", "POST"] and "POST" not in [r["stock_code"] for r in report(sqlite_cli, "products")["rows"]]


def test_rfm_rule_table_covers_every_score_once() -> None:
    for r in range(1, 6):
        for fm in range(1, 6):
            assert [s.name for s in SEGMENTS if s.matches(r, fm)] == [ref.SEGMENT_GRID[r][fm - 1]]
            assert segment_of(r, fm) == ref.SEGMENT_GRID[r][fm - 1]
    assert [fm_score(f, m) for f, m in ((1, 1), (1, 2), (2, 3), (4, 5), (5, 5))] == [1, 2, 3, 5, 5]


def test_every_report_command_has_help(sqlite_cli: Cli) -> None:
    for name in ("sales", "products", "countries", "customers", "returns", "rfm", "cohorts", "dashboard"):
        result = sqlite_cli("report", name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, name


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sales", "--by", "year"], "Error: Invalid value for '--by': 'year' is not one of 'day', 'week', 'month', 'quarter'."),
        (["sales", "--from", "2011-13-01"], "Error: Invalid value for '--from': '2011-13-01' does not match the format '%Y-%m-%d'."),
        (["sales", "--from", "2011-12-01", "--to", "2011-01-31"], "Error: Invalid value for '--from': 2011-12-01 is after --to 2011-01-31"),
        (["products", "--top", "0"], "Error: Invalid value for '--top': 0 is not in the range 1<=x<=100000."),
        (["returns", "--by", "month"], "Error: Invalid value for '--by': 'month' is not one of 'product', 'country'."),
        (["dashboard"], "Error: Missing option '--output'."),
    ],
)
def test_bad_usage_exits_2(sqlite_cli: Cli, args: list[str], message: str) -> None:
    result = sqlite_cli("report", *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == message


def test_unknown_country_and_empty_range_say_so(sqlite_cli: Cli, tmp_path: Path) -> None:
    etl_json(sqlite_cli, write_csv(tmp_path / "a.csv", ROWS))
    for fmt in ("json", "table"):  # a country the warehouse does not know is an error naming the closest known ones
        unknown = sqlite_cli("report", "sales", "--country", "Frence", "--format", fmt)
        assert unknown.exit_code == 1 and "Traceback" not in unknown.output
        assert unknown.stderr.strip() == "Error: the warehouse has no country 'Frence'; the closest: France; `report countries` lists all 3"
        assert unknown.stdout == ""
    data = report(sqlite_cli, "sales", "--country", "france", "--from", "2011-02-01")
    assert data["notes"] == ["no sales for france from 2011-02-01 on"]
    data = report(sqlite_cli, "sales", "--from", "2012-01-01")
    assert data["notes"] == ["no sales from 2012-01-01 on; the warehouse holds sales from 2010-12-01 to 2011-08-12"]
    data = report(sqlite_cli, "sales", "--from", "2011-02-01", "--to", "2011-02-28", "--by", "day")
    assert data["notes"] == ["no sales between 2011-02-01 and 2011-02-28; the warehouse holds sales from 2010-12-01 to 2011-08-12"]


def test_empty_warehouse_is_an_error(sqlite_cli: Cli, sqlite_url: str, pg_url: str) -> None:
    missing = sqlite_cli("report", "sales")
    assert missing.exit_code == 1
    path = sqlite_url.removeprefix("sqlite:///")
    assert missing.output.strip() == f"Error: the warehouse file {path} does not exist; load data first: python main.py etl --source FILE"
    no_ledger = Cli(pg_url)("report", "countries")
    assert (no_ledger.exit_code, no_ledger.output.strip()) == (
        1, "Error: the warehouse has no run ledger yet; load data first: python main.py etl --source FILE"
    )  # fmt: skip
    assert sqlite_cli("setup").exit_code == 0
    for name in ("sales", "products", "countries", "customers", "returns", "rfm", "cohorts"):
        empty = sqlite_cli("report", name)
        assert (empty.exit_code, empty.output.strip()) == (
            1, "Error: the warehouse holds no sales yet; load data first: python main.py etl --source FILE"
        ), name  # fmt: skip


def test_files_in_a_missing_folder_are_an_error(sqlite_cli: Cli, tmp_path: Path) -> None:
    etl_json(sqlite_cli, write_csv(tmp_path / "a.csv", ROWS))
    target = tmp_path / "nowhere" / "dash.html"
    result = sqlite_cli("report", "dashboard", "--output", str(target))
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: cannot write {target}: the folder {target.parent} does not exist; create it first or choose another path"
    )
    export = tmp_path / "nowhere" / "rfm.csv"
    result = sqlite_cli("report", "rfm", "--export", str(export))
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: cannot write {export}: the folder {export.parent} does not exist; create it first or choose another path"
    )
    assert not target.parent.exists()


# -- dashboard -------------------------------------------------------------------------------


@pytest.fixture
def dashboard(sqlite_cli: Cli, tmp_path: Path) -> Path:
    source = tmp_path / "gen.csv"
    generate_sales(source, 6_000, seed=11)
    etl_json(sqlite_cli, source)
    output = tmp_path / "dashboard.html"
    result = sqlite_cli("report", "dashboard", "--output", str(output), "--format", "json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert (written["charts"], written["cache"]) == (6, "miss")
    return output


def test_dashboard_is_one_self_contained_page(dashboard: Path, sqlite_cli: Cli) -> None:
    assert stat.S_IMODE(dashboard.stat().st_mode) == 0o666 & ~current_umask()  # a page to share: the user's umask
    page = dashboard.read_text(encoding="utf-8")
    for slug in ("revenue-trend", "top-products", "countries", "returns", "rfm-segments", "cohorts"):
        assert f'data-chart="{slug}"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert 'data-tile="latest-transaction"><div class="v">2011-12-09' in page
    assert 'data-tile="quality"><div class="v">0.' in page  # the ETL gate's evaluation of run 1
    assert 'class="cell"' in page  # the cohort heat map
    again = sqlite_cli("report", "dashboard", "--output", str(dashboard), "--format", "json")
    assert json.loads(again.stdout)["cache"] == "hit"


def test_dashboard_in_a_real_browser(dashboard: Path, chromium: tuple[Path, Path], tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        driver.get(dashboard.as_uri())
        assert driver.title == "Retail dashboard"
        assert driver.execute_script("return document.querySelectorAll('svg.chart').length") == 6
        assert driver.execute_script("return document.querySelectorAll('svg[data-chart=cohorts] rect.cell').length") > 12
        assert driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)") == []  # nothing fetched
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        png = driver.get_screenshot_as_png()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        width, height, colours = _png_colours(driver, png)
    finally:
        driver.quit()
    assert width >= 1000 and height >= 1000
    assert colours >= 20  # charts, tiles and text: far from one flat colour


def _png_colours(driver, png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct colours (sampled) of a PNG, decoded by the browser
    itself on a blank page."""
    import base64

    driver.get("about:blank")
    script = """
const done = arguments[arguments.length - 1];
const img = new Image();
img.onload = () => {
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; const seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 31) { seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
  done([img.width, img.height, seen.size]);
};
img.onerror = () => done([0, 0, 0]);
img.src = 'data:image/png;base64,' + arguments[0];
"""
    width, height, colours = driver.execute_async_script(script, base64.b64encode(png).decode())
    return width, height, colours


def test_date_keys_and_periods() -> None:
    from reports.analytics import date_of, key_of, period_label, previous_period

    assert key_of(date(2011, 1, 3)) == 20110103 and date_of(20110103) == date(2011, 1, 3)
    assert period_label("week", 20110103) == "2011-W01" and period_label("week", 20101227) == "2010-W52"
    assert period_label("quarter", 20114) == "2011-Q4" and period_label("month", 201112) == "2011-12"
    assert previous_period("month", 201101) == 201012 and previous_period("quarter", 20111) == 20104
    assert previous_period("week", 20110103) == 20101227 and previous_period("day", 20110301) == 20110228
