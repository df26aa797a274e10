"""Every quality check against data built to pass and data built to fail, on a real SQLite file
and a real PostgreSQL schema. One clean load per back end; each failing case changes the
warehouse inside a transaction, evaluates (which must see the uncommitted change), and rolls back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, bindparam, create_engine, insert, select, text
from sqlalchemy.engine import make_url

from config.settings import Settings, load_settings, parse_settings
from database.engine import make_engine
from database.models import TIMESTAMP, dim_customers
from monitoring.checks import catalogue
from monitoring.gate import GateResult, evaluate, record
from tests.conftest import PG_URL, Cli, write_csv
from utils.errors import ConfigError

NOW = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
RECENT = (NOW - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
OLD = (NOW - timedelta(days=10)).strftime("%Y-%m-%d %H:%M:%S")
CLEAN_ROWS = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ["536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", OLD, "2.55", "17850", "United Kingdom"],
    ["536365", "71053", "WHITE METAL LANTERN", "6", OLD, "3.39", "17850", "United Kingdom"],
    ["536366", "22633", "HAND WARMER UNION JACK", "6", RECENT, "1.85", "17851", "United Kingdom"],
    ["536367", "84879", "ASSORTED COLOUR BIRD ORNAMENT", "32", RECENT, "1.69", "13047", "France"],
    ["C536368", "22633", "HAND WARMER UNION JACK", "-2", RECENT, "1.85", "17851", "United Kingdom"],
    ["536369", "POST", "POSTAGE", "1", RECENT, "18.00", "12583", "Germany"],
    ["536370", "22728", "ALARM CLOCK BAKELIKE PINK", "24", RECENT, "3.75", "12583", "Germany"],
    ["536371", "21756", "BATH BUILDING BLOCK WORD", "3", RECENT, "5.95", "13047", "France"],
    ["536372", "22727", "ALARM CLOCK BAKELIKE RED", "2", RECENT, "3.75", "14527", "EIRE"],
    ["536373", "84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", "6", RECENT, "3.39", "14527", "EIRE"],
]
STRICT = {
    "quality_rules": {
        "completeness": 1.0, "validity": 1.0, "uniqueness": 1.0, "accuracy": 1.0, "consistency": 1.0,
        "checks": {"completeness.source.customer_id": {"threshold": 1.0}}, "data_recency_max_age_days": 30,
    }
}  # fmt: skip


def settings_for(url: str, extra: dict | None = None) -> Settings:
    """Hermetic settings (no config files, no environment) for `url`."""
    layers: dict = {"database": {"url": url}, "logging": {"file": ""}}
    for key, value in (extra or {}).items():
        layers[key] = layers.get(key, {}) | value
    return load_settings(overrides=layers, environ={}, default_files=())


def strict_settings(url: str, **quality: object) -> Settings:
    rules = STRICT["quality_rules"] | quality
    return settings_for(url, {"quality_rules": rules})


@dataclass
class Warehouse:
    url: str
    engine: Engine
    run_id: int = 1
    facts: int = 0


def _admin() -> Engine:
    return create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def clean(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """A warehouse holding one clean load of CLEAN_ROWS (module-wide; tests must not commit changes)."""
    folder = tmp_path_factory.mktemp("quality")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'warehouse.db'}"
    else:
        request.getfixturevalue("pg_available")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with _admin().begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    result = Cli(url)("etl", "--source", str(write_csv(folder / "clean.csv", CLEAN_ROWS)))
    assert result.exit_code == 0, result.output
    engine = make_engine(settings_for(url).database)
    with engine.connect() as conn:
        facts = conn.execute(text("SELECT COUNT(*) FROM fact_sales")).scalar_one()
    yield Warehouse(url, engine, 1, facts)
    engine.dispose()
    if schema:
        with _admin().begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def evaluate_with(
    wh: Warehouse, settings: Settings, change: Callable[[Connection], None] | None = None, run_id: int | None = None
) -> GateResult:
    """Evaluate inside a transaction after `change`, then roll the change back."""
    with wh.engine.connect() as conn:
        trans = conn.begin()
        try:
            if change is not None:
                change(conn)
            return evaluate(conn, settings, run_id)
        finally:
            trans.rollback()


def failed(result: GateResult) -> set[str]:
    return {r.check for r in result.results if not r.passed}


# -- changes that break one check each --------------------------------------------------------


def _sql(*statements: str, **params: object) -> Callable[[Connection], None]:
    def change(conn: Connection) -> None:
        for statement in statements:
            conn.execute(text(statement), params)

    return change


def _quarantine(reasons: str, **raw: str) -> Callable[[Connection], None]:
    values = {"invoice_no": "536399", "stock_code": "22633", "description": "X", "quantity": "1", "invoice_date": RECENT,
              "unit_price": "1.00", "customer_id": "17850", "country": "United Kingdom"} | raw  # fmt: skip

    def change(conn: Connection) -> None:
        for i in range(2):  # two rows: one would still pass a 0.9 threshold with ten facts
            conn.execute(
                text(
                    "INSERT INTO etl_quarantine (run_id, line_id, source_row, reasons, invoice_no, stock_code, description, quantity, "
                    "invoice_date, unit_price, customer_id, country) VALUES (1, :line, :row, :reasons, :invoice_no, :stock_code, "
                    ":description, :quantity, :invoice_date, :unit_price, :customer_id, :country)"
                ),
                values | {"line": 900_000 + i, "row": 100 + i, "reasons": reasons},
            )

    return change


def _one_fact(assignments: str) -> Callable[[Connection], None]:
    return _sql(
        f"UPDATE fact_sales SET {assignments} WHERE sales_key = (SELECT MIN(sales_key) FROM fact_sales WHERE transaction_type = 'sale')"
    )


def _duplicate_line(conn: Connection) -> None:
    """A second fact with an existing line identity, on the newest day (still a valid customer version)."""
    day, when = conn.execute(
        text("SELECT date_key, MAX(transaction_datetime) FROM fact_sales GROUP BY date_key ORDER BY date_key DESC")
    ).first()
    conn.execute(
        text(
            "INSERT INTO fact_sales (sales_key, line_id, customer_key, product_key, date_key, invoice_no, quantity, unit_price, line_total, "
            "transaction_datetime, transaction_type, source_row, run_id) "
            "SELECT (SELECT MAX(sales_key) + 1 FROM fact_sales), line_id, customer_key, product_key, :day, invoice_no, quantity, unit_price, "
            "line_total, :when, transaction_type, source_row, run_id FROM fact_sales WHERE date_key <> :day ORDER BY sales_key LIMIT 1"
        ).bindparams(bindparam("when", type_=TIMESTAMP)),
        {"day": day, "when": when if isinstance(when, datetime) else datetime.fromisoformat(when)},
    )


def _overlapping_version(conn: Connection) -> None:
    effective = conn.execute(select(dim_customers.c.effective_date).where(dim_customers.c.customer_id == "13047")).scalar_one()
    conn.execute(
        insert(dim_customers).values(
            customer_id="13047", country="France", effective_date=effective - timedelta(days=1),
            expiry_date=effective + timedelta(days=1), is_current=False,
        )
    )  # fmt: skip


def _ancient_load(conn: Connection) -> None:
    conn.execute(text("UPDATE etl_runs SET finished_at = :t").bindparams(bindparam("t", type_=TIMESTAMP)), {"t": datetime(2000, 1, 1)})


def _customer_from_2099(conn: Connection) -> None:
    conn.execute(
        text("UPDATE dim_customers SET effective_date = :t WHERE customer_id = '17850'").bindparams(bindparam("t", type_=TIMESTAMP)),
        {"t": datetime(2099, 1, 1)},
    )


def _no_current_version(conn: Connection) -> None:
    conn.execute(
        text("UPDATE dim_customers SET is_current = false, expiry_date = :t WHERE customer_id = '14527'").bindparams(
            bindparam("t", type_=TIMESTAMP)
        ),
        {"t": datetime(2099, 1, 1)},
    )


def _current_with_expiry(conn: Connection) -> None:
    conn.execute(
        text("UPDATE dim_customers SET expiry_date = :t WHERE customer_id = '14527'").bindparams(bindparam("t", type_=TIMESTAMP)),
        {"t": datetime(2099, 1, 1)},
    )


@dataclass
class Case:
    check: str
    change: Callable[[Connection], None] | None
    offending: int
    settings: dict = field(default_factory=dict)


CASES = [
    *(
        Case(f"completeness.source.{col}", _quarantine(f"missing_{col}", **{col: ""}), 2)
        for col in ("invoice_no", "stock_code", "quantity", "invoice_date", "unit_price", "country")
    ),
    Case("completeness.source.customer_id", _one_fact("customer_key = -1"), 1),
    Case("validity.source.invoice_date", _quarantine("bad_invoice_date", invoice_date="31/31/2011"), 2),
    Case("validity.source.quantity", _quarantine("bad_quantity", quantity="1.5"), 2),
    Case("validity.source.unit_price", _quarantine("bad_unit_price", unit_price="abc"), 2),
    Case("validity.source.customer_id", _quarantine("bad_customer_id", customer_id="X1"), 2),
    Case("validity.source.line_format", _quarantine("malformed_line"), 2),
    Case("validity.source.text_values", _quarantine("control_characters", description="A\u2400B"), 2),
    Case("validity.source.text_values", _quarantine("too_long", country="X" * 300), 2),
    Case("uniqueness.source.exact_duplicates", _quarantine("duplicate"), 2),
    Case(
        "accuracy.source.business_rules",
        _quarantine("zero_quantity;duplicate", quantity="0"),
        2,
        {"quality_rules": {"checks": {"uniqueness.source.exact_duplicates": {"threshold": 0.5}}}},
    ),
    Case("validity.fact_sales.invoice_no", _one_fact("invoice_no = 'X53636'"), 1),
    Case("validity.fact_sales.transaction_type", _one_fact("transaction_type = 'gift'"), 1),
    Case("uniqueness.fact_sales.line_id", _duplicate_line, 1),
    Case("accuracy.fact_sales.line_total", _one_fact("line_total = line_total + 1"), 1),
    Case("accuracy.fact_sales.return_sign", _one_fact("quantity = -quantity, line_total = -line_total"), 1),
    Case("accuracy.fact_sales.unit_price", _one_fact("unit_price = 0, line_total = 0"), 1),
    Case("accuracy.fact_sales.transaction_datetime", None, 2, {"quality_rules": {"data_start": (NOW - timedelta(days=5)).date()}}),
    Case("consistency.fact_sales.customer_key", _one_fact("customer_key = 999999"), 1),
    Case("consistency.fact_sales.product_key", _one_fact("product_key = 999999"), 1),
    Case("consistency.fact_sales.date_key", _one_fact("date_key = 19990101"), 1),
    Case("consistency.fact_sales.customer_version", _customer_from_2099, 2),
    Case("validity.dim_customers.country", _sql("UPDATE dim_customers SET country = 'Atlantis' WHERE customer_id = '13047'"), 1),
    Case("validity.dim_products.stock_code", _sql("UPDATE dim_products SET stock_code = 'NOT A CODE' WHERE stock_code = '22728'"), 1),
    Case("completeness.dim_products.description", _sql("UPDATE dim_products SET description = NULL WHERE stock_code = '22728'"), 1),
    Case("consistency.dim_customers.current_version", _no_current_version, 1),
    Case("consistency.dim_customers.current_flag", _current_with_expiry, 1),
    Case("consistency.dim_customers.scd2_overlap", _overlapping_version, 1),
    Case(
        "consistency.dim_date.date_key", _sql("UPDATE dim_date SET day = day + 1 WHERE date_key = (SELECT MIN(date_key) FROM dim_date)"), 1
    ),
    Case("freshness.fact_sales.newest_transaction", None, 1, {"quality_rules": {"data_recency_max_age_days": 0.5}}),
    Case("freshness.etl_runs.last_success", _ancient_load, 1),
]


def test_every_check_has_a_failing_case() -> None:
    every = parse_settings(STRICT)  # data recency switched on
    names = {s.name for s in catalogue(every)}
    assert {c.check for c in CASES} == names
    assert len(names) == len(catalogue(every))  # stable, unique names
    assert names - {s.name for s in catalogue(Settings())} == {"freshness.fact_sales.newest_transaction"}  # off by default


def test_clean_data_passes_every_check(clean: Warehouse) -> None:
    result = evaluate_with(clean, strict_settings(clean.url))
    assert failed(result) == set()
    assert result.passed and not result.blocking_failures
    assert set(result.scores) == {"completeness", "validity", "uniqueness", "accuracy", "consistency", "freshness"}
    assert all(score == 1.0 for score in result.scores.values())
    by_name = {r.check: r for r in result.results}
    assert by_name["validity.fact_sales.invoice_no"].total == clean.facts == 10
    assert by_name["completeness.source.invoice_no"].total == 10  # facts + quarantined rows
    assert by_name["validity.dim_customers.country"].total == 5
    assert all(r.samples == [] for r in result.results)


@pytest.mark.parametrize("case", CASES, ids=[c.check for c in CASES])
def test_check_fails_on_bad_data(clean: Warehouse, case: Case) -> None:
    rules = STRICT["quality_rules"] | case.settings.get("quality_rules", {})
    rules["checks"] = STRICT["quality_rules"]["checks"] | case.settings.get("quality_rules", {}).get("checks", {})
    result = evaluate_with(clean, settings_for(clean.url, {"quality_rules": rules}), case.change)
    assert failed(result) == {case.check}
    found = next(r for r in result.results if r.check == case.check)
    assert found.offending == case.offending
    assert found.measured < found.threshold
    assert 0.0 <= found.measured <= 1.0
    assert 1 <= len(found.samples) <= 5


def test_invoice_numbers_of_six_to_eight_digits_are_valid(clean: Warehouse) -> None:
    """Numbering past 999999 (years of history, a 50x generated extract) is valid up to eight digits."""

    def change(conn: Connection) -> None:
        keys = conn.execute(text("SELECT sales_key FROM fact_sales ORDER BY sales_key LIMIT 6")).scalars().all()
        numbers = ["1234567", "12345678", "C1234567", "A12345678", "123456789", "C12345"]
        for key, number in zip(keys, numbers, strict=True):
            conn.execute(text("UPDATE fact_sales SET invoice_no = :n WHERE sales_key = :k"), {"n": number, "k": key})

    result = evaluate_with(clean, strict_settings(clean.url), change)
    found = next(r for r in result.results if r.check == "validity.fact_sales.invoice_no")
    assert found.offending == 2
    assert {s.split("invoice_no=")[1] for s in found.samples} == {"123456789", "C12345"}


def test_default_thresholds_and_severities(clean: Warehouse) -> None:
    """Shipped thresholds: one odd transaction type in ten facts still passes validity (0.90 >=
    0.90); two rows without a country in twelve fail completeness (0.83 < 0.95), which blocks."""
    missing = _quarantine("missing_country", country="")

    def change(conn: Connection) -> None:
        _one_fact("transaction_type = 'gift'")(conn)
        missing(conn)

    result = evaluate_with(clean, settings_for(clean.url), change)
    by_name = {r.check: r for r in result.results}
    validity = by_name["validity.fact_sales.transaction_type"]
    assert (validity.offending, validity.total, validity.threshold, validity.passed) == (1, 10, 0.90, True)
    assert validity.samples == []  # samples are kept for failing checks only
    completeness = by_name["completeness.source.country"]
    assert (completeness.offending, completeness.total, completeness.severity, completeness.passed) == (2, 12, "blocking", False)
    assert result.blocking_failures == [completeness]
    assert by_name["completeness.source.customer_id"].threshold == 0.0
    assert by_name["uniqueness.fact_sales.line_id"].threshold == 1.0
    assert by_name["freshness.etl_runs.last_success"].severity == "warning"
    assert "freshness.fact_sales.newest_transaction" not in by_name  # data recency is switched on by a setting
    assert (by_name["uniqueness.source.exact_duplicates"].severity, by_name["uniqueness.source.exact_duplicates"].threshold) == (
        "warning", 0.98,
    )  # fmt: skip


def test_per_check_overrides(clean: Warehouse) -> None:
    overrides = {"checks": {"completeness.source.country": {"threshold": 0.5, "blocking": False}}}
    result = evaluate_with(clean, settings_for(clean.url, {"quality_rules": overrides}), _quarantine("missing_country", country=""))
    country = next(r for r in result.results if r.check == "completeness.source.country")
    assert (country.threshold, country.severity, country.passed) == (0.5, "warning", True)
    with pytest.raises(ConfigError, match=r"unknown check 'completeness\.nope'"):
        catalogue(settings_for(clean.url, {"quality_rules": {"checks": {"completeness.nope": {"threshold": 0.5}}}}))


def test_run_scope_counts_only_the_runs_rows(clean: Warehouse) -> None:
    settings = strict_settings(clean.url)
    assert evaluate_with(clean, settings, run_id=1).results[0].total == 10
    other_run = evaluate_with(clean, settings, run_id=42)
    by_name = {r.check: r for r in other_run.results}
    assert by_name["validity.fact_sales.invoice_no"].total == 0 and by_name["validity.fact_sales.invoice_no"].passed
    assert by_name["validity.dim_customers.country"].total == 5  # dimensions: always the whole warehouse
    assert "validity" not in other_run.scores or other_run.scores["validity"] == 1.0
    assert other_run.metrics == {}
    mine = evaluate_with(clean, settings, run_id=1)
    assert mine.metrics["days"] == 2
    assert mine.metrics["revenue"] == pytest.approx(15.3 + 20.34 + 11.1 + 54.08 - 3.7 + 18 + 90 + 17.85 + 7.5 + 20.34)


def test_table_filter(clean: Warehouse) -> None:
    with clean.engine.connect() as conn:
        result = evaluate(conn, strict_settings(clean.url), table="dim_date")
    assert [r.check for r in result.results] == ["consistency.dim_date.date_key"]


def test_record_appends_and_keeps_failed_gate_results(clean: Warehouse) -> None:
    """The gate protocol the ETL follows: evaluate inside the load's transaction, roll back on a
    blocking failure, then record the results in a new transaction."""
    settings = strict_settings(clean.url)
    with clean.engine.connect() as conn:
        trans = conn.begin()
        _one_fact("line_total = line_total + 1")(conn)
        result = evaluate(conn, settings, 1)
        assert [r.check for r in result.blocking_failures] == ["accuracy.fact_sales.line_total"]
        trans.rollback()
    with clean.engine.begin() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM quality_results")).scalar_one()
        first = record(conn, 1, result)
        second = record(conn, 1, evaluate(conn, settings, 1))
    with clean.engine.begin() as conn:
        rows = conn.execute(text("SELECT evaluation_id, check_name, passed, samples FROM quality_results ORDER BY id")).all()
        assert (
            conn.execute(text("SELECT COUNT(*) FROM fact_sales WHERE ABS(line_total - quantity * unit_price) > 0.0005")).scalar_one() == 0
        )
        metrics = dict(conn.execute(text("SELECT metric, value FROM quality_metrics WHERE evaluation_id = :e"), {"e": first}).all())
        conn.execute(text("DELETE FROM quality_metrics"))
        conn.execute(text("DELETE FROM quality_results"))
    mine = rows[before:]
    assert len(mine) == 2 * len(result.results)
    assert {e for e, *_ in mine} == {first, second}
    bad = next(r for r in mine if r[0] == first and r[1] == "accuracy.fact_sales.line_total")
    assert not bad[2] and "line_total=" in bad[3]
    assert set(metrics) == {"revenue", "days", "revenue_per_day"}


def test_sample_size_setting(clean: Warehouse) -> None:
    settings = settings_for(clean.url, {"quality_rules": STRICT["quality_rules"] | {"sample_size": 1}})
    result = evaluate_with(clean, settings, _sql("UPDATE fact_sales SET invoice_no = 'BAD'"))
    found = next(r for r in result.results if r.check == "validity.fact_sales.invoice_no")
    assert found.offending == 10 and len(found.samples) == 1 and "invoice_no=BAD" in found.samples[0]


@pytest.mark.parametrize("change", [None, _duplicate_line], ids=["clean", "other-day-twin"])
def test_line_identity_of_a_run_on_an_empty_fact_counts_the_same_either_way(clean: Warehouse, change) -> None:
    """A run that began on an empty fact table has its line identities counted by (date_key,
    line_id) groups on SQLite: the same offending and total as one look-up per fact. (A twin on
    the same day cannot be written: the (date_key, line_id) index is unique.)"""
    from monitoring.quality import _line_identity

    settings = settings_for(clean.url)
    with clean.engine.connect() as conn:
        trans = conn.begin()
        try:
            if change is not None:
                change(conn)
            per_fact = _line_identity(conn, settings, clean.run_id, NOW)
            grouped = _line_identity(conn, settings, clean.run_id, NOW, fact_holds_only_run=True)
        finally:
            trans.rollback()
    assert (grouped.offending, grouped.total) == (per_fact.offending, per_fact.total)
    assert grouped.total == per_fact.total > 0


def test_sqlite_customer_versions_relation_gives_the_rows_of_lead(clean: Warehouse) -> None:
    """SQLite finds each version's next start through the index, PostgreSQL with LEAD(): on the
    same versions (several per customer, one overlapping) both give the same rows."""
    from monitoring.checks import RELATIONS, SQLITE_RELATIONS

    def more_versions(conn: Connection) -> None:
        _overlapping_version(conn)
        effective = conn.execute(select(dim_customers.c.effective_date).where(dim_customers.c.customer_id == "13047")).scalars().all()
        conn.execute(
            insert(dim_customers).values(
                customer_id="13047", country="Spain", effective_date=max(effective) + timedelta(days=3), expiry_date=None, is_current=False
            )
        )

    rows = "SELECT customer_key, customer_id, effective_date, expiry_date, next_effective FROM {} ORDER BY customer_key"
    with clean.engine.connect() as conn, conn.begin() as trans:
        more_versions(conn)
        lead = conn.execute(text(rows.format(RELATIONS["customer_version"].from_sql))).all()
        if conn.dialect.name == "sqlite":
            assert conn.execute(text(rows.format(SQLITE_RELATIONS["customer_version"].from_sql))).all() == lead
        assert sum(r.next_effective is not None for r in lead) == 2  # the customer's three versions
        trans.rollback()


def test_sqlite_stock_code_check_answers_like_its_regexp() -> None:
    """The GLOB shortcut of the stock code check on SQLite never changes REGEXP's answer."""
    from monitoring.checks import STOCK_CODE_PATTERN, Dialect

    values = ["12345", "12345A", "12345AB", "12345ABC", "1234", "12345a", "١٢٣٤٥", "12345\n", "ABCDE", "123456", "12345Ä", "POST", "",
              "12 45", "00000ZZ", "1234５", "12345Z "]  # fmt: skip
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        for value in values:
            params = {"v": value, "stock_re": STOCK_CODE_PATTERN}
            regexp = conn.execute(text("SELECT NOT (:v REGEXP :stock_re)"), params).scalar_one()
            assert conn.execute(text(f"SELECT {Dialect('sqlite').invalid_stock_code(':v')}"), params).scalar_one() == regexp, value
    engine.dispose()
