-- Hand-written, set-based load of a retail sales CSV into the platform's star schema on
-- PostgreSQL: a reference for bench/bench_etl.py, written without the platform (no Python, no
-- SQLAlchemy, no code of etl/ or database/).
--
--   psql -X -v ON_ERROR_STOP=1 -v schema=SCHEMA -f bench/reference_pg.sql < FILE.csv
--
-- The CSV comes on psql's standard input (`\copy ... FROM pstdin`), so the script holds no path.
-- The schema must exist and be empty; the benchmark creates it before and drops it after, untimed.
--
-- What it builds, as our `setup` + `etl` build them on a fresh warehouse:
--   dim_date       calendar columns of every date with sales; England-and-Wales bank holidays
--                  from a fixed list of 2009-2012 (ours asks the `holidays` package for any year)
--   dim_customers  SCD2: a version per country a customer moves to (effective from the first
--                  sale there, expired by the next), the unknown member -1 for sales without one
--   dim_products   SCD1: upper-cased stock code, the latest row with a description gives the
--                  description and price, category and is_merchandise from the same code lists
--   fact_sales     partitioned by RANGE (date_key), one partition per month plus DEFAULT, with
--                  the same three indexes: primary key (sales_key, date_key), unique
--                  (date_key, line_id), (run_id)
--   then ANALYZE of the four tables.
--
-- Cleaning, the same main rules as etl/cleaning.py: rows missing InvoiceNo, StockCode, Quantity,
-- InvoiceDate, UnitPrice or Country are dropped, and so are rows whose Quantity, UnitPrice or
-- InvoiceDate does not parse, Quantity 0, UnitPrice <= 0 (except bad-debt adjustments: invoices
-- starting with A, stock code B) and rows repeating an earlier row of the file in all eight
-- (trimmed) fields.
--
-- What it leaves out that our run does (so it is a lower bound for the same star, not the same
-- product): the run ledger (etl_runs) and its row accounting; the quarantine (rejected rows are
-- dropped here, with no raw values and no reason codes); exactly-once loading (line_id here is
-- a plain 64-bit hash of the cleaned fields, never checked against an earlier load, so a second
-- run would load everything again); the rules out_of_range, too_long, control_characters,
-- bad_customer_id, malformed_line; the quality gate and quality results; the aggregate tables
-- (agg_*); lineage, alerts, the source checksum, the warehouse lock, dimension history tables
-- (dim_*_history, run ids on dimension rows), and merging into a warehouse that already holds
-- data (every table here starts empty, so the fact's indexes are built after its rows are in,
-- which only a first load can do).

\set QUIET on
SET search_path = :"schema";
SET client_min_messages = warning;

-- Sorts and hashes of a few hundred thousand rows in memory, as our load holds its chunks in memory.
SET work_mem = '256MB';

BEGIN;

-- Staging tables are UNLOGGED tables of the schema, not TEMPORARY ones: parallel workers cannot
-- scan a temporary table, and our load uses both cores too. Dropped before the commit.
CREATE UNLOGGED TABLE raw_sales (
    invoice_no text, stock_code text, description text, quantity text,
    invoice_date text, unit_price text, customer_id text, country text,
    source_row bigint GENERATED ALWAYS AS IDENTITY
);

\copy raw_sales (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country) FROM pstdin WITH (FORMAT csv, HEADER true)

-- Clean: trim, upper-case the codes, parse, apply the rules; one row per distinct line. Stock
-- codes compare bytewise (COLLATE "C"): the products' sort and join need no locale rules.
CREATE UNLOGGED TABLE clean_sales AS
WITH trimmed AS (
    SELECT source_row,
           upper(btrim(invoice_no)) AS invoice_no, upper(btrim(stock_code)) COLLATE "C" AS stock_code,
           NULLIF(btrim(description), '') AS description, btrim(quantity) AS quantity,
           btrim(invoice_date) AS invoice_date, btrim(unit_price) AS unit_price,
           NULLIF(split_part(btrim(customer_id), '.', 1), '') AS customer_id, btrim(country) AS country
    FROM raw_sales
), parsed AS (
    SELECT source_row, invoice_no, stock_code, description, quantity::integer AS quantity,
           unit_price::numeric(18, 3) AS unit_price, invoice_date::timestamp(0) AS ts, customer_id, country
    FROM trimmed
    WHERE invoice_no <> '' AND stock_code <> '' AND country <> ''
      AND quantity ~ '^[+-]?[0-9]{1,9}$'
      AND unit_price ~ '^[+-]?([0-9]{1,12}(\.[0-9]{0,3})?|\.[0-9]{1,3})$'
      AND invoice_date ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(:[0-9]{2})?$'
), kept AS (
    SELECT *, (extract(year FROM ts) * 10000 + extract(month FROM ts) * 100 + extract(day FROM ts))::integer AS date_key,
           hashtextextended(concat_ws(E'\x1f', invoice_no, stock_code, description, quantity, ts, unit_price, customer_id, country), 0)
                  AS line_id
    FROM parsed
    WHERE quantity <> 0 AND (unit_price > 0 OR stock_code = 'B' OR invoice_no LIKE 'A%')
)
SELECT DISTINCT ON (line_id) * FROM kept ORDER BY line_id, source_row;
ANALYZE clean_sales;  -- the joins below are planned with its real size

-- dim_date
CREATE TABLE dim_date (
    date_key integer PRIMARY KEY, full_date date NOT NULL UNIQUE, day smallint NOT NULL, day_name varchar(10) NOT NULL,
    weekday smallint NOT NULL, iso_week smallint NOT NULL, month smallint NOT NULL, month_name varchar(10) NOT NULL,
    quarter smallint NOT NULL, year smallint NOT NULL, is_weekend boolean NOT NULL, is_uk_bank_holiday boolean NOT NULL,
    holiday_name varchar(100), created_run_id integer
);
INSERT INTO dim_date
SELECT to_char(d, 'YYYYMMDD')::integer, d, extract(day FROM d), to_char(d, 'FMDay'), extract(isodow FROM d),
       extract(week FROM d), extract(month FROM d), to_char(d, 'FMMonth'), extract(quarter FROM d), extract(year FROM d),
       extract(isodow FROM d) >= 6, h.name IS NOT NULL, h.name, 1
FROM (SELECT DISTINCT ts::date AS d FROM clean_sales) days
LEFT JOIN (VALUES
    ('2009-01-01'::date, 'New Year''s Day'), ('2009-04-10', 'Good Friday'), ('2009-04-13', 'Easter Monday'),
    ('2009-05-04', 'May Day'), ('2009-05-25', 'Spring Bank Holiday'), ('2009-08-31', 'Late Summer Bank Holiday'),
    ('2009-12-25', 'Christmas Day'), ('2009-12-26', 'Boxing Day'), ('2009-12-28', 'Boxing Day (observed)'),
    ('2010-01-01', 'New Year''s Day'), ('2010-04-02', 'Good Friday'), ('2010-04-05', 'Easter Monday'),
    ('2010-05-03', 'May Day'), ('2010-05-31', 'Spring Bank Holiday'), ('2010-08-30', 'Late Summer Bank Holiday'),
    ('2010-12-25', 'Christmas Day'), ('2010-12-26', 'Boxing Day'), ('2010-12-27', 'Christmas Day (observed)'),
    ('2010-12-28', 'Boxing Day (observed)'),
    ('2011-01-01', 'New Year''s Day'), ('2011-01-03', 'New Year''s Day (observed)'), ('2011-04-22', 'Good Friday'),
    ('2011-04-25', 'Easter Monday'), ('2011-04-29', 'Wedding of William and Catherine'), ('2011-05-02', 'May Day'),
    ('2011-05-30', 'Spring Bank Holiday'), ('2011-08-29', 'Late Summer Bank Holiday'), ('2011-12-25', 'Christmas Day'),
    ('2011-12-26', 'Boxing Day'), ('2011-12-27', 'Christmas Day (observed)'),
    ('2012-01-01', 'New Year''s Day'), ('2012-01-02', 'New Year''s Day (observed)'), ('2012-04-06', 'Good Friday'),
    ('2012-04-09', 'Easter Monday'), ('2012-05-07', 'May Day'), ('2012-06-04', 'Spring Bank Holiday'),
    ('2012-06-05', 'Diamond Jubilee of Elizabeth II'), ('2012-08-27', 'Late Summer Bank Holiday'),
    ('2012-12-25', 'Christmas Day'), ('2012-12-26', 'Boxing Day')
) AS h (day, name) ON h.day = days.d;

-- dim_customers (SCD2): per customer, the first moment of each country, in time order; a
-- country first seen at the same moment as the version before it opens no version (as ours).
CREATE TABLE dim_customers (
    customer_key integer PRIMARY KEY, customer_id varchar(20), country varchar(100) NOT NULL,
    effective_date timestamp NOT NULL, expiry_date timestamp, is_current boolean NOT NULL,
    created_run_id integer, expired_run_id integer
);
INSERT INTO dim_customers VALUES (-1, NULL, 'Unknown', '1900-01-01', NULL, true, NULL, NULL);
INSERT INTO dim_customers
SELECT row_number() OVER (ORDER BY customer_id, effective_date), customer_id, country, effective_date,
       lead(effective_date) OVER w, lead(effective_date) OVER w IS NULL, 1, CASE WHEN lead(effective_date) OVER w IS NOT NULL THEN 1 END
FROM (
    SELECT customer_id, country, first_seen AS effective_date,
           lag(first_seen) OVER (PARTITION BY customer_id ORDER BY first_seen, country) AS previous
    FROM (SELECT customer_id, country, min(ts) AS first_seen FROM clean_sales WHERE customer_id IS NOT NULL GROUP BY 1, 2) firsts
) versions
WHERE previous IS NULL OR effective_date > previous
WINDOW w AS (PARTITION BY customer_id ORDER BY effective_date);
CREATE UNIQUE INDEX ix_dim_customers_id_effective ON dim_customers (customer_id, effective_date);
CREATE UNIQUE INDEX ux_dim_customers_current ON dim_customers (customer_id) WHERE is_current;

-- dim_products (SCD1)
CREATE TABLE dim_products (
    product_key integer PRIMARY KEY, stock_code varchar(50) NOT NULL UNIQUE, description text,
    current_unit_price numeric(18, 3) NOT NULL, price_as_of timestamp NOT NULL, category varchar(30) NOT NULL,
    is_merchandise boolean NOT NULL, created_run_id integer, updated_run_id integer
);
INSERT INTO dim_products
SELECT row_number() OVER (ORDER BY stock_code), stock_code, description, unit_price, ts, category, category = 'merchandise', 1, 1
FROM (
    SELECT DISTINCT ON (stock_code) stock_code, description, unit_price, ts,
           CASE WHEN stock_code IN ('POST', 'DOT', 'C2') THEN 'postage'
                WHEN stock_code IN ('M', 'D', 'S', 'B', 'ADJUST', 'ADJUST2') THEN 'adjustment'
                WHEN stock_code IN ('BANK CHARGES', 'AMAZONFEE', 'PADS') THEN 'fee'
                WHEN stock_code = 'CRUK' THEN 'charity'
                WHEN stock_code LIKE 'GIFT\_%' THEN 'voucher'
                WHEN stock_code LIKE 'DCGS%' THEN 'other'
                ELSE 'merchandise' END AS category
    FROM clean_sales
    ORDER BY stock_code, description IS NOT NULL DESC, ts DESC, source_row DESC
) latest;

-- fact_sales: monthly partitions of the months with sales, the default partition, the rows,
-- then the three indexes (on the parent, so every partition gets them).
CREATE TABLE fact_sales (
    sales_key bigint NOT NULL, line_id bigint NOT NULL, customer_key integer NOT NULL, product_key integer NOT NULL,
    date_key integer NOT NULL, invoice_no varchar(20) NOT NULL, quantity integer NOT NULL, unit_price numeric(18, 3) NOT NULL,
    line_total numeric(18, 3) NOT NULL, transaction_datetime timestamp NOT NULL, transaction_type varchar(12) NOT NULL,
    source_row bigint NOT NULL, run_id integer NOT NULL
) PARTITION BY RANGE (date_key);
CREATE TABLE fact_sales_default PARTITION OF fact_sales DEFAULT;
SELECT format('CREATE TABLE fact_sales_p%s PARTITION OF fact_sales FOR VALUES FROM (%s) TO (%s)',
              to_char(m, 'YYYYMM'), to_char(m, 'YYYYMMDD'), to_char(m + interval '1 month', 'YYYYMMDD'))
FROM (SELECT DISTINCT date_trunc('month', ts)::date AS m FROM clean_sales) months ORDER BY m
\gexec

INSERT INTO fact_sales
SELECT row_number() OVER (ORDER BY s.source_row), s.line_id, COALESCE(c.customer_key, -1), p.product_key,
       s.date_key, s.invoice_no, s.quantity, s.unit_price, s.quantity * s.unit_price, s.ts,
       CASE WHEN s.stock_code = 'B' OR s.invoice_no LIKE 'A%' THEN 'adjustment'
            WHEN s.quantity < 0 OR s.invoice_no LIKE 'C%' THEN 'return' ELSE 'sale' END,
       s.source_row, 1
FROM clean_sales s
JOIN dim_products p ON p.stock_code = s.stock_code
LEFT JOIN dim_customers c ON c.customer_id = s.customer_id AND s.ts >= c.effective_date
                         AND (c.expiry_date IS NULL OR s.ts < c.expiry_date);

ALTER TABLE fact_sales ADD PRIMARY KEY (sales_key, date_key);
CREATE UNIQUE INDEX ux_fact_sales_line ON fact_sales (date_key, line_id);
CREATE INDEX ix_fact_sales_run ON fact_sales (run_id);
DROP TABLE raw_sales, clean_sales;

COMMIT;

ANALYZE fact_sales, dim_customers, dim_products, dim_date;
