"""Hand-written DuckDB load of a retail sales CSV into the platform's star schema: a reference for
bench/bench_etl.py, written without the platform (it imports nothing of the project).

    python -m bench.reference_duckdb SOURCE.csv TARGET.duckdb

Builds, in one in-process DuckDB database file, the same star as bench/reference_pg.sql (see its
header for the cleaning rules and for everything our run does that a reference leaves out):
dim_date, dim_customers (SCD2, unknown member -1), dim_products (SCD1, categories) and
fact_sales, with the indexes our SQLite warehouse has on the fact (primary key sales_key, unique
(date_key, line_id), run_id). DuckDB has no table partitions; the fact is one table, as on
SQLite. The bank holidays are the fixed list of reference_pg.sql, read from that file. Prints the
table counts as one JSON object.

DuckDB is a benchmark-only dependency (bench/requirements.txt), not a runtime one: the benchmark
times this script as a child process, interpreter start and `import duckdb` included, as it
times ours with its imports.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import duckdb

PG_SCRIPT = Path(__file__).with_name("reference_pg.sql")
TABLES = ("dim_date", "dim_customers", "dim_products", "fact_sales")
_HOLIDAY = re.compile(r"\('(\d{4}-\d{2}-\d{2})'(?:::date)?, '((?:[^']|'')*)'\)")


def bank_holidays() -> list[tuple[str, str]]:
    """The (date, name) list of reference_pg.sql's VALUES, so both references flag the same days."""
    return [(day, name.replace("''", "'")) for day, name in _HOLIDAY.findall(PG_SCRIPT.read_text())]


READ = r"""
CREATE TABLE raw_sales AS
SELECT * FROM read_csv(?, header = true, all_varchar = true, quote = '"', escape = '"', delim = ',',
                       columns = {'InvoiceNo': 'VARCHAR', 'StockCode': 'VARCHAR', 'Description': 'VARCHAR',
                                  'Quantity': 'VARCHAR', 'InvoiceDate': 'VARCHAR', 'UnitPrice': 'VARCHAR',
                                  'CustomerID': 'VARCHAR', 'Country': 'VARCHAR'})
"""

CLEAN = r"""
CREATE TABLE clean_sales AS
WITH trimmed AS (
    SELECT rowid + 1 AS source_row,
           upper(trim(coalesce(InvoiceNo, ''))) AS invoice_no, upper(trim(coalesce(StockCode, ''))) AS stock_code,
           NULLIF(trim(coalesce(Description, '')), '') AS description, trim(coalesce(Quantity, '')) AS quantity,
           trim(coalesce(InvoiceDate, '')) AS invoice_date, trim(coalesce(UnitPrice, '')) AS unit_price,
           NULLIF(split_part(trim(coalesce(CustomerID, '')), '.', 1), '') AS customer_id, trim(coalesce(Country, '')) AS country
    FROM raw_sales
), parsed AS (
    SELECT source_row, invoice_no, stock_code, description, CAST(quantity AS INTEGER) AS quantity,
           CAST(unit_price AS DECIMAL(18, 3)) AS unit_price, CAST(invoice_date AS TIMESTAMP) AS ts, customer_id, country
    FROM trimmed
    WHERE invoice_no <> '' AND stock_code <> '' AND country <> ''
      AND regexp_full_match(quantity, '[+-]?[0-9]{1,9}')
      AND regexp_full_match(unit_price, '[+-]?([0-9]{1,12}(\.[0-9]{0,3})?|\.[0-9]{1,3})')
      AND regexp_full_match(invoice_date, '[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?')
), kept AS (
    SELECT *, CAST(strftime(ts, '%Y%m%d') AS INTEGER) AS date_key,
           CAST(hash(concat_ws(chr(31), invoice_no, stock_code, description, quantity, ts, unit_price, customer_id, country)) // 2
                AS BIGINT) AS line_id
    FROM parsed
    WHERE quantity <> 0 AND (unit_price > 0 OR stock_code = 'B' OR starts_with(invoice_no, 'A'))
)
SELECT DISTINCT ON (line_id) * FROM kept ORDER BY line_id, source_row;
DROP TABLE raw_sales;
"""

STAR = r"""
CREATE TABLE dim_date AS
SELECT CAST(strftime(d, '%Y%m%d') AS INTEGER) AS date_key, d AS full_date, CAST(day(d) AS SMALLINT) AS day,
       dayname(d) AS day_name, CAST(isodow(d) AS SMALLINT) AS weekday, CAST(weekofyear(d) AS SMALLINT) AS iso_week,
       CAST(month(d) AS SMALLINT) AS month, monthname(d) AS month_name, CAST(quarter(d) AS SMALLINT) AS quarter,
       CAST(year(d) AS SMALLINT) AS year, isodow(d) >= 6 AS is_weekend, h.name IS NOT NULL AS is_uk_bank_holiday,
       h.name AS holiday_name, 1 AS created_run_id
FROM (SELECT DISTINCT CAST(ts AS DATE) AS d FROM clean_sales) days
LEFT JOIN bank_holidays h ON h.day = days.d;

CREATE TABLE dim_customers AS
SELECT -1 AS customer_key, CAST(NULL AS VARCHAR) AS customer_id, 'Unknown' AS country,
       TIMESTAMP '1900-01-01' AS effective_date, CAST(NULL AS TIMESTAMP) AS expiry_date, true AS is_current,
       CAST(NULL AS INTEGER) AS created_run_id, CAST(NULL AS INTEGER) AS expired_run_id
UNION ALL
SELECT CAST(row_number() OVER (ORDER BY customer_id, effective_date) AS INTEGER), customer_id, country, effective_date,
       lead(effective_date) OVER w, lead(effective_date) OVER w IS NULL, 1,
       CASE WHEN lead(effective_date) OVER w IS NOT NULL THEN 1 END
FROM (
    SELECT customer_id, country, first_seen AS effective_date,
           lag(first_seen) OVER (PARTITION BY customer_id ORDER BY first_seen, country) AS previous
    FROM (SELECT customer_id, country, min(ts) AS first_seen FROM clean_sales WHERE customer_id IS NOT NULL GROUP BY ALL)
)
WHERE previous IS NULL OR effective_date > previous
WINDOW w AS (PARTITION BY customer_id ORDER BY effective_date);

CREATE TABLE dim_products AS
SELECT CAST(row_number() OVER (ORDER BY stock_code) AS INTEGER) AS product_key, stock_code, description,
       unit_price AS current_unit_price, ts AS price_as_of, category, category = 'merchandise' AS is_merchandise,
       1 AS created_run_id, 1 AS updated_run_id
FROM (
    SELECT DISTINCT ON (stock_code) stock_code, description, unit_price, ts,
           CASE WHEN stock_code IN ('POST', 'DOT', 'C2') THEN 'postage'
                WHEN stock_code IN ('M', 'D', 'S', 'B', 'ADJUST', 'ADJUST2') THEN 'adjustment'
                WHEN stock_code IN ('BANK CHARGES', 'AMAZONFEE', 'PADS') THEN 'fee'
                WHEN stock_code = 'CRUK' THEN 'charity'
                WHEN starts_with(stock_code, 'GIFT_') THEN 'voucher'
                WHEN starts_with(stock_code, 'DCGS') THEN 'other'
                ELSE 'merchandise' END AS category
    FROM clean_sales
    ORDER BY stock_code, description IS NOT NULL DESC, ts DESC, source_row DESC
);

CREATE TABLE fact_sales AS
SELECT CAST(row_number() OVER (ORDER BY s.source_row) AS BIGINT) AS sales_key, s.line_id,
       COALESCE(c.customer_key, -1) AS customer_key, p.product_key, s.date_key, s.invoice_no, s.quantity, s.unit_price,
       CAST(s.quantity * s.unit_price AS DECIMAL(18, 3)) AS line_total, s.ts AS transaction_datetime,
       CASE WHEN s.stock_code = 'B' OR starts_with(s.invoice_no, 'A') THEN 'adjustment'
            WHEN s.quantity < 0 OR starts_with(s.invoice_no, 'C') THEN 'return' ELSE 'sale' END AS transaction_type,
       s.source_row, 1 AS run_id
FROM clean_sales s
JOIN dim_products p ON p.stock_code = s.stock_code
LEFT JOIN dim_customers c ON c.customer_id = s.customer_id AND s.ts >= c.effective_date
                         AND (c.expiry_date IS NULL OR s.ts < c.expiry_date)
ORDER BY s.source_row;

CREATE UNIQUE INDEX dim_date_pkey ON dim_date (date_key);
CREATE UNIQUE INDEX dim_customers_pkey ON dim_customers (customer_key);
CREATE UNIQUE INDEX ix_dim_customers_id_effective ON dim_customers (customer_id, effective_date);
CREATE UNIQUE INDEX dim_products_pkey ON dim_products (product_key);
CREATE UNIQUE INDEX dim_products_stock_code_key ON dim_products (stock_code);
CREATE UNIQUE INDEX fact_sales_pkey ON fact_sales (sales_key);
CREATE UNIQUE INDEX ux_fact_sales_line ON fact_sales (date_key, line_id);
CREATE INDEX ix_fact_sales_run ON fact_sales (run_id);
DROP TABLE clean_sales;
"""


def load(source: Path, target: Path) -> dict[str, int]:
    """Build the star from `source` into a new DuckDB file `target`; the table counts."""
    con = duckdb.connect(str(target))
    try:
        con.execute("BEGIN")
        con.execute(READ, [str(source)])
        con.execute(CLEAN)
        con.execute("CREATE TEMPORARY TABLE bank_holidays (day DATE, name VARCHAR)")
        con.executemany("INSERT INTO bank_holidays VALUES (?, ?)", bank_holidays())
        con.execute(STAR)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.reference_duckdb SOURCE.csv TARGET.duckdb", file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    if target.exists():
        print(f"{target} exists; the reference builds a new database file", file=sys.stderr)
        return 2
    print(json.dumps(load(source, target)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
