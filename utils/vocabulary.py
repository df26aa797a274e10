"""Vocabulary every layer shares: the source layout's column names and the quarantine's reason codes.

It lives at the bottom of the layers (utils) so that config, monitoring, etl and metadata can
all name a column or a reason without importing the stage that produces it.
"""

from __future__ import annotations

SOURCE_COLUMNS: tuple[str, ...] = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

# Column of the quarantine (and of the cleaning's reason codes) holding each source field.
SNAKE: dict[str, str] = {
    "InvoiceNo": "invoice_no",
    "StockCode": "stock_code",
    "Description": "description",
    "Quantity": "quantity",
    "InvoiceDate": "invoice_date",
    "UnitPrice": "unit_price",
    "CustomerID": "customer_id",
    "Country": "country",
}

# Reason codes of the quarantine: a rejected row carries one or more, joined by ';'.
REASONS = {
    "missing_invoice_no": "InvoiceNo is empty",
    "missing_stock_code": "StockCode is empty",
    "missing_description": "Description is empty",
    "missing_quantity": "Quantity is empty",
    "missing_invoice_date": "InvoiceDate is empty",
    "missing_unit_price": "UnitPrice is empty",
    "missing_customer_id": "CustomerID is empty",
    "missing_country": "Country is empty",
    "bad_quantity": "Quantity is not a whole number",
    "bad_unit_price": "UnitPrice is not a number with at most 3 decimals",
    "bad_invoice_date": "InvoiceDate matches none of the configured date formats",
    "bad_customer_id": "CustomerID is not a whole number",
    "zero_quantity": "Quantity is 0",
    "non_positive_price": "UnitPrice is 0 or negative (and not a bad-debt adjustment)",
    "out_of_range": "a value is outside the configured bounds (or the line total does not fit NUMERIC(18, 3))",
    "too_long": "InvoiceNo, StockCode, CustomerID or Country is longer than its warehouse column",
    "control_characters": "a field holds a NUL or another control character",
    "duplicate": "repeats an earlier row of this source in all eight fields",
    "malformed_line": "the line does not have the expected number of fields",
}
