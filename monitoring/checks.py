"""The catalogue of data-quality checks: what each one counts, where, and how strict it is.

A check is a rule over the rows of one *relation* (a `FROM` clause): a SQL condition marks an
offending row, and the check's score is 1 - offending / total. Checks over the same relation
are counted together in one set-based query (see `monitoring/quality.py`); nothing is pulled
into pandas. A few checks that are not row conditions (line identity, freshness) are computed
by their own query.

Scopes: when the checks run for one ETL run, the `fact` and `quarantine` relations hold only
that run's rows (the batch), found through their run_id indexes; line identity looks for twins
of the run's facts anywhere in the table; the dimensions and freshness are always checked over
the whole warehouse. `source` checks count the rows read from the extract(s): the facts
plus the quarantined rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.settings import Settings
from utils.errors import ConfigError, PlatformError
from utils.vocabulary import SNAKE, SOURCE_COLUMNS

DIMENSIONS = ("completeness", "validity", "uniqueness", "accuracy", "consistency", "freshness")
# Six digits in the real extract; a retailer with years of history (or a 50x generated extract)
# passes 999999, so up to eight are valid.
INVOICE_PATTERN = r"^[CA]?\d{6,8}$"
STOCK_CODE_PATTERN = r"^\d{5}[A-Z]{0,2}$"
TRANSACTION_TYPES = ("sale", "return", "adjustment")
SOURCE = "source"
# Checks whose threshold is their own, not their dimension's. Exact repeats are quarantined by the
# cleaning and are about 1 % of a retail extract (0.97 % of the real file, 1.1 % of the shipped
# sample): a warning should mean unusual repetition, not the usual.
OWN_THRESHOLDS = {
    "completeness.source.customer_id": 0.0,
    "uniqueness.source.exact_duplicates": 0.98,
    "uniqueness.fact_sales.line_id": 1.0,
}


@dataclass(frozen=True)
class Relation:
    """A FROM clause; `run_column` restricts it to one run's rows when the checks run for a run."""

    from_sql: str
    where: str | None = None
    run_column: str | None = None


FACT = Relation(
    "fact_sales f LEFT JOIN dim_customers c ON c.customer_key = f.customer_key "
    "LEFT JOIN dim_products p ON p.product_key = f.product_key LEFT JOIN dim_date d ON d.date_key = f.date_key",
    run_column="f.run_id",
)
RELATIONS: dict[str, Relation] = {
    "fact": FACT,
    "quarantine": Relation("etl_quarantine q", run_column="q.run_id"),
    "customer": Relation("dim_customers c", where="c.customer_key <> -1"),
    "customer_version": Relation(
        "(SELECT customer_key, customer_id, effective_date, expiry_date, "
        "LEAD(effective_date) OVER (PARTITION BY customer_id ORDER BY effective_date) AS next_effective "
        "FROM dim_customers WHERE customer_id IS NOT NULL) v"
    ),
    "customer_id": Relation(
        "(SELECT customer_id, COUNT(*) FILTER (WHERE is_current) AS current_versions "
        "FROM dim_customers WHERE customer_id IS NOT NULL GROUP BY customer_id) k"
    ),
    "product": Relation("dim_products p"),
    "date": Relation("dim_date d"),
}
# SQLite runs LEAD() over every version as a co-routine that reads each table row; the next
# version's start is the smallest later start of the same customer, which the unique
# (customer_id, effective_date) index answers per version without the table. PostgreSQL keeps
# LEAD(): one sort of the versions is cheaper for it than a look-up per version.
SQLITE_RELATIONS: dict[str, Relation] = {
    "customer_version": Relation(
        "(SELECT o.customer_key, o.customer_id, o.effective_date, o.expiry_date, "
        "(SELECT MIN(n.effective_date) FROM dim_customers n WHERE n.customer_id = o.customer_id "
        "AND n.effective_date > o.effective_date) AS next_effective "
        "FROM dim_customers o WHERE o.customer_id IS NOT NULL) v"
    ),
}


def relation(name: str, dialect: str) -> Relation:
    """The relation `name` as the checks query it on `dialect` (the same rows either way)."""
    return SQLITE_RELATIONS.get(name, RELATIONS[name]) if dialect == "sqlite" else RELATIONS[name]


@dataclass
class CheckSpec:
    """One check. `predicates` maps a relation to the SQL condition of an offending row there
    (None: the relation's rows count in the total but never offend); `special` names a check
    computed by its own query instead."""

    name: str
    dimension: str
    table: str
    column: str | None
    description: str
    predicates: dict[str, str | None] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    special: str | None = None
    blocking: bool = True
    threshold: float | None = None  # None: the dimension's threshold from quality_rules


class Dialect:
    """The few SQL spellings that differ between PostgreSQL and SQLite."""

    def __init__(self, name: str) -> None:
        self.name = name

    def not_matching(self, expr: str, param: str) -> str:
        if self.name == "postgresql":
            return f"{expr} !~ :{param}"
        return f"NOT ({expr} REGEXP :{param})"  # SQLAlchemy's SQLite driver provides regexp()

    def invalid_invoice(self, expr: str) -> str:
        """Not INVOICE_PATTERN. SQLite spells it with GLOB: its REGEXP would call back into Python
        for every row."""
        if self.name == "postgresql":
            return self.not_matching(expr, "invoice_re")
        digits = f"NOT {expr} GLOB '*[^0-9]*' AND LENGTH({expr}) BETWEEN 6 AND 8"
        prefixed = f"substr({expr}, 1, 1) IN ('C', 'A') AND NOT substr({expr}, 2) GLOB '*[^0-9]*' AND LENGTH({expr}) BETWEEN 7 AND 9"
        return f"NOT (({digits}) OR ({prefixed}))"

    def invalid_stock_code(self, expr: str) -> str:
        """Not STOCK_CODE_PATTERN. On SQLite, REGEXP calls back into Python for every product: the
        usual form (five ASCII digits, up to two capitals) is recognised with GLOB first, and only
        the rest go to REGEXP, whose answer alone decides (the GLOB form always matches it too)."""
        if self.name == "postgresql":
            return self.not_matching(expr, "stock_re")
        usual = f"LENGTH({expr}) BETWEEN 5 AND 7 AND NOT substr({expr}, 1, 5) GLOB '*[^0-9]*' AND NOT substr({expr}, 6) GLOB '*[^A-Z]*'"
        return f"NOT (({usual}) OR {expr} REGEXP :stock_re)"

    def as_date(self, expr: str) -> str:
        return f"CAST({expr} AS DATE)" if self.name == "postgresql" else f"date({expr})"

    def money_differs(self, left: str, right: str) -> str:
        # PostgreSQL NUMERIC is exact; SQLite keeps money as binary floating point.
        return f"{left} <> {right}" if self.name == "postgresql" else f"ABS({left} - ({right})) > 0.0005"


def _has_reason(code: str) -> str:
    return f"(';' || q.reasons || ';') LIKE '%;{code};%'"


def _empty(column: str) -> str:
    return f"COALESCE(TRIM(q.{column}), '') = ''"


_Q_SAMPLE = "'quarantine_id=' || q.quarantine_id || ' source_row=' || q.source_row"


def _source_checks(settings: Settings) -> list[CheckSpec]:
    required = set(settings.rules.required_fields) | {"InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice"}
    specs = []
    for field_name in SOURCE_COLUMNS:
        col = SNAKE[field_name]
        if field_name in required:
            specs.append(
                CheckSpec(
                    f"completeness.source.{col}", "completeness", SOURCE, col,
                    f"share of source rows with a non-empty {field_name} (a required field)",
                    {"quarantine": _empty(col), "fact": None}, {"quarantine": _Q_SAMPLE},
                )
            )  # fmt: skip
        elif field_name == "CustomerID":
            specs.append(
                CheckSpec(
                    "completeness.source.customer_id", "completeness", SOURCE, col,
                    "share of source rows with a CustomerID (optional: tracked for trends and anomalies, threshold 0)",
                    {"quarantine": _empty(col), "fact": "f.customer_key = -1"},
                    {"quarantine": _Q_SAMPLE, "fact": "'sales_key=' || f.sales_key || ' invoice_no=' || f.invoice_no"},
                    blocking=False, threshold=OWN_THRESHOLDS["completeness.source.customer_id"],
                )
            )  # fmt: skip
    for code, col, what in (
        ("bad_invoice_date", "invoice_date", "an InvoiceDate matching a configured date format"),
        ("bad_quantity", "quantity", "a whole-number Quantity"),
        ("bad_unit_price", "unit_price", "a numeric UnitPrice (at most 3 decimals)"),
        ("bad_customer_id", "customer_id", "a numeric CustomerID (or none)"),
    ):
        specs.append(
            CheckSpec(
                f"validity.source.{col}", "validity", SOURCE, col, f"share of source rows with {what}",
                {"quarantine": _has_reason(code), "fact": None}, {"quarantine": _Q_SAMPLE + f" || ' {col}=' || COALESCE(q.{col}, '')"},
            )
        )  # fmt: skip
    specs += [
        CheckSpec(
            "validity.source.line_format", "validity", SOURCE, None, "share of source lines with the expected eight fields",
            {"quarantine": _has_reason("malformed_line"), "fact": None}, {"quarantine": _Q_SAMPLE},
        ),
        CheckSpec(
            "validity.source.text_values", "validity", SOURCE, None,
            "share of source rows whose text fits the warehouse (no control characters; codes, ids and countries within "
            "their column lengths)",
            {"quarantine": f"{_has_reason('control_characters')} OR {_has_reason('too_long')}", "fact": None},
            {"quarantine": _Q_SAMPLE + " || ' reasons=' || q.reasons"},
        ),
        CheckSpec(
            "uniqueness.source.exact_duplicates", "uniqueness", SOURCE, None,
            "share of source rows that do not repeat an earlier row in all eight fields (repeats are quarantined; "
            "threshold 0.98: retail extracts carry about 1 % repeats)",
            {"quarantine": _has_reason("duplicate"), "fact": None}, {"quarantine": _Q_SAMPLE + " || ' invoice_no=' || COALESCE(q.invoice_no, '')"},
            blocking=False, threshold=OWN_THRESHOLDS["uniqueness.source.exact_duplicates"],
        ),
        CheckSpec(
            "accuracy.source.business_rules", "accuracy", SOURCE, None,
            "share of source rows within the business rules (non-zero quantity, positive price, values in range)",
            {"quarantine": " OR ".join(_has_reason(c) for c in ("zero_quantity", "non_positive_price", "out_of_range")), "fact": None},
            {"quarantine": _Q_SAMPLE + " || ' reasons=' || q.reasons"},
        ),
    ]  # fmt: skip
    return specs


def _fact_checks(dialect: Dialect) -> list[CheckSpec]:
    key = "'sales_key=' || f.sales_key || ' invoice_no=' || f.invoice_no"
    return [
        CheckSpec(
            "validity.fact_sales.invoice_no", "validity", "fact_sales", "invoice_no", f"invoice numbers matching {INVOICE_PATTERN}",
            {"fact": dialect.invalid_invoice("f.invoice_no")}, {"fact": key},
        ),
        CheckSpec(
            "validity.fact_sales.transaction_type", "validity", "fact_sales", "transaction_type", "transaction type is sale, return or adjustment",
            {"fact": "f.transaction_type NOT IN ('sale', 'return', 'adjustment')"}, {"fact": key + " || ' type=' || f.transaction_type"},
        ),
        CheckSpec(
            "uniqueness.fact_sales.line_id", "uniqueness", "fact_sales", "line_id",
            "no line identity twice in fact_sales (for a run: none of its facts has a twin); threshold 1", special="line_identity",
            threshold=OWN_THRESHOLDS["uniqueness.fact_sales.line_id"],
        ),
        CheckSpec(
            "accuracy.fact_sales.line_total", "accuracy", "fact_sales", "line_total", "line_total = quantity x unit_price",
            {"fact": dialect.money_differs("f.line_total", "f.quantity * f.unit_price")},
            {"fact": key + " || ' quantity=' || f.quantity || ' unit_price=' || f.unit_price || ' line_total=' || f.line_total"},
        ),
        CheckSpec(
            "accuracy.fact_sales.return_sign", "accuracy", "fact_sales", "quantity", "returns have negative quantities, sales positive ones",
            {"fact": "(f.transaction_type = 'return' AND f.quantity >= 0) OR (f.transaction_type = 'sale' AND f.quantity <= 0)"},
            {"fact": key + " || ' type=' || f.transaction_type || ' quantity=' || f.quantity"},
        ),
        CheckSpec(
            "accuracy.fact_sales.unit_price", "accuracy", "fact_sales", "unit_price",
            "unit price above 0 and at most rules.max_unit_price (adjustments exempt)",
            {"fact": "f.transaction_type <> 'adjustment' AND (f.unit_price <= 0 OR f.unit_price > :max_price)"},
            {"fact": key + " || ' unit_price=' || f.unit_price"},
        ),
        CheckSpec(
            "accuracy.fact_sales.transaction_datetime", "accuracy", "fact_sales", "transaction_datetime",
            "transaction time not before quality_rules.data_start nor more than rules.max_future_days ahead",
            {"fact": "f.transaction_datetime < :data_start OR f.transaction_datetime > :latest_ok"},
            {"fact": key + " || ' transaction_datetime=' || f.transaction_datetime"},
        ),
        CheckSpec(
            "consistency.fact_sales.customer_key", "consistency", "fact_sales", "customer_key", "every fact's customer_key is in dim_customers",
            {"fact": "c.customer_key IS NULL"}, {"fact": key + " || ' customer_key=' || f.customer_key"},
        ),
        CheckSpec(
            "consistency.fact_sales.product_key", "consistency", "fact_sales", "product_key", "every fact's product_key is in dim_products",
            {"fact": "p.product_key IS NULL"}, {"fact": key + " || ' product_key=' || f.product_key"},
        ),
        CheckSpec(
            "consistency.fact_sales.date_key", "consistency", "fact_sales", "date_key",
            "every fact's date_key is in dim_date and is the date of its transaction time",
            {"fact": f"d.date_key IS NULL OR d.full_date <> {dialect.as_date('f.transaction_datetime')}"},
            {"fact": key + " || ' date_key=' || f.date_key || ' transaction_datetime=' || f.transaction_datetime"},
        ),
        CheckSpec(
            "consistency.fact_sales.customer_version", "consistency", "fact_sales", "customer_key",
            "a fact points at the customer version valid at its transaction time (SCD2)",
            {"fact": "c.customer_key <> -1 AND (c.effective_date > f.transaction_datetime OR c.expiry_date <= f.transaction_datetime)"},
            {"fact": key + " || ' customer_key=' || f.customer_key || ' transaction_datetime=' || f.transaction_datetime"},
        ),
    ]  # fmt: skip


def _dimension_checks(dialect: Dialect, settings: Settings) -> list[CheckSpec]:
    prefixes = list(settings.products.non_merchandise_prefixes)
    known_code = " OR ".join(
        ["p.stock_code IN :codes", *(f"SUBSTR(p.stock_code, 1, {len(x)}) = :prefix_{i}" for i, x in enumerate(prefixes))]
    )
    return [
        CheckSpec(
            "validity.dim_customers.country", "validity", "dim_customers", "country", "customer versions with a known country name",
            {"customer": "c.country NOT IN :countries"}, {"customer": "'customer_id=' || c.customer_id || ' country=' || c.country"},
            blocking=False,
        ),
        CheckSpec(
            "validity.dim_products.stock_code", "validity", "dim_products", "stock_code",
            f"stock codes matching {STOCK_CODE_PATTERN} or a configured non-merchandise code or prefix",
            {"product": f"{dialect.invalid_stock_code('p.stock_code')} AND NOT ({known_code})"}, {"product": "p.stock_code"},
            blocking=False,
        ),
        CheckSpec(
            "completeness.dim_products.description", "completeness", "dim_products", "description", "products with a description",
            {"product": "COALESCE(p.description, '') = ''"}, {"product": "p.stock_code"}, blocking=False,
        ),
        CheckSpec(
            "consistency.dim_customers.current_version", "consistency", "dim_customers", "is_current",
            "every customer has exactly one current version",
            {"customer_id": "k.current_versions <> 1"}, {"customer_id": "'customer_id=' || k.customer_id || ' current_versions=' || k.current_versions"},
        ),
        CheckSpec(
            "consistency.dim_customers.current_flag", "consistency", "dim_customers", "expiry_date",
            "a version is current exactly when it has no expiry date, and expires after it starts",
            {"customer": "(c.is_current AND c.expiry_date IS NOT NULL) OR (NOT c.is_current AND c.expiry_date IS NULL) "
                         "OR c.expiry_date <= c.effective_date"},
            {"customer": "'customer_key=' || c.customer_key || ' customer_id=' || c.customer_id"},
        ),
        CheckSpec(
            "consistency.dim_customers.scd2_overlap", "consistency", "dim_customers", "effective_date",
            "a customer's versions do not overlap in time (SCD2)",
            {"customer_version": "v.next_effective IS NOT NULL AND (v.expiry_date IS NULL OR v.expiry_date > v.next_effective)"},
            {"customer_version": "'customer_key=' || v.customer_key || ' customer_id=' || v.customer_id"},
        ),
        CheckSpec(
            "consistency.dim_date.date_key", "consistency", "dim_date", "date_key", "date_key is the YYYYMMDD of the row's year, month, day",
            {"date": "d.date_key <> d.year * 10000 + d.month * 100 + d.day"}, {"date": "'date_key=' || d.date_key"},
        ),
    ]  # fmt: skip


def _freshness_checks(settings: Settings) -> list[CheckSpec]:
    """Freshness is about loads; data recency (how old the newest transaction is) only when
    quality_rules.data_recency_max_age_days switches it on: a warehouse of historical data is not
    stale because its sales are old."""
    specs = [
        CheckSpec(
            "freshness.etl_runs.last_success", "freshness", "etl_runs", "finished_at",
            "each job's last successful load (for manual runs: any load's) is at most quality_rules.freshness_max_age_days old "
            "(score: limit / age of the stalest)",
            special="last_success", blocking=False,
        ),
    ]  # fmt: skip
    if settings.quality_rules.data_recency_max_age_days is not None:
        specs.append(
            CheckSpec(
                "freshness.fact_sales.newest_transaction", "freshness", "fact_sales", "transaction_datetime",
                "the newest transaction is at most quality_rules.data_recency_max_age_days older than the check (score: limit / age)",
                special="newest_transaction", blocking=False,
            )
        )  # fmt: skip
    return specs


def threshold_setting(check: str, dimension: str, settings: Settings) -> str:
    """The setting that decides whether a check passes (named in its alerts)."""
    override = settings.quality_rules.checks.get(check)
    if override is not None and override.threshold is not None:
        return f"quality_rules.checks.{check}.threshold"
    if check == "freshness.etl_runs.last_success":
        return "quality_rules.freshness_max_age_days"
    if check == "freshness.fact_sales.newest_transaction":
        return "quality_rules.data_recency_max_age_days"
    if check in OWN_THRESHOLDS:
        return f"quality_rules.checks.{check}.threshold (default {OWN_THRESHOLDS[check]:g})"
    return f"quality_rules.{dimension}"


def catalogue(settings: Settings, dialect: str = "postgresql") -> list[CheckSpec]:
    """Every check, in report order, with its configured threshold and severity applied."""
    d = Dialect(dialect)
    specs = _source_checks(settings) + _fact_checks(d) + _dimension_checks(d, settings) + _freshness_checks(settings)
    rules = settings.quality_rules
    unknown = sorted(set(rules.checks) - {s.name for s in specs})
    if unknown:
        raise ConfigError(
            f"quality_rules.checks: unknown check {', '.join(map(repr, unknown))}; see python main.py quality check --format json"
        )
    for spec in specs:
        override = rules.checks.get(spec.name)
        if spec.threshold is None:
            spec.threshold = 1.0 if spec.dimension == "freshness" else float(getattr(rules, spec.dimension))
        if override is not None and override.threshold is not None:
            spec.threshold = override.threshold
        if override is not None and override.blocking is not None:
            spec.blocking = override.blocking
    return specs


def select(specs: list[CheckSpec], table: str | None) -> list[CheckSpec]:
    """The checks of one table (all when None); an unknown table is a clear error."""
    if table is None:
        return specs
    tables = sorted({s.table for s in specs})
    if table not in tables:
        raise PlatformError(f"unknown table '{table}'; choose from {', '.join(tables)}")
    return [s for s in specs if s.table == table]
