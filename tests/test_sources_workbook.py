"""Excel workbooks as a source: every sheet or one, second-edition headers, streamed in chunks."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook

from config.settings import Settings
from etl.sources import SourceOptions, open_source
from etl.workbook import WorkbookSource, text_value
from tests.conftest import Cli
from tests.test_cli_etl import etl_json, one, q
from utils.errors import SourceError

SECOND_EDITION = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
FIRST_EDITION = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


def typed(row: list[str]) -> list[object]:
    """A text row of the UCI layout as an Excel export holds it: numbers, datetimes, empty cells."""
    invoice, code, description, quantity, when, price, customer, country = row

    def number(text: str) -> object:
        return int(text) if text.isdigit() and str(int(text)) == text else text

    return [
        number(invoice),
        number(code),
        description or None,
        int(quantity),
        datetime.strptime(when, "%Y-%m-%d %H:%M:%S"),
        float(price),
        int(customer) if customer else None,
        country or None,
    ]


def write_workbook(path: Path, sheets: dict[str, list[list[object]]], header: list[str] | None = None) -> Path:
    """A workbook written in streaming mode, one sheet per entry (header row first)."""
    wb = Workbook(write_only=True)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        if header is not None:
            ws.append(header)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


# The second edition: one sheet per year, dates as M/D/YYYY H:MM text, £ and typed numbers.
YEAR_1 = [
    [536365, "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "12/1/2010 8:26", 2.55, 17850.0, "United Kingdom"],
    [536365, 71053, "WHITE METAL LANTERN", 6, "12/1/2010 8:26", 3.39, 17850.0, "United Kingdom"],
    [536366, 22633, "HAND WARMER £ UNION JACK", 6, "12/1/2010 8:28", 1.85, None, "United Kingdom"],
    [],  # a blank row: skipped, not numbered
    [536367, 84879, "ASSORTED COLOUR BIRD ORNAMENT", 32, "12/1/2010 8:34", 1.69, 13047, "United Kingdom"],
]
YEAR_2 = [
    ["C536379", "D", "Discount", -1, "12/1/2010 9:41", 27.5, 14527, "United Kingdom"],
    [536370, "POST", "POSTAGE", 3, "12/25/2010 8:45", 18.0, 12583, "France"],
    [536371, 22728, "ALARM CLOCK BAKELIKE PINK", 24, "1/5/2011 9:00", 0, 12583, "France"],  # zero price
]


@pytest.fixture
def second_edition(tmp_path: Path) -> Path:
    return write_workbook(tmp_path / "online_retail_II.xlsx", {"Year 2009-2010": YEAR_1, "Year 2010-2011": YEAR_2}, SECOND_EDITION)


def test_two_sheet_second_edition_workbook(run_cli: Cli, warehouse_url: str, second_edition: Path) -> None:
    summary = etl_json(run_cli, second_edition)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_quarantined"]) == (7, 6, 1)
    assert summary["quarantine_by_reason"] == {"non_positive_price": 1}
    assert summary["source"] == str(second_edition.resolve())
    # Source rows run on across the sheets: the second sheet starts at 5 (the blank row is not counted).
    rows = dict(q(warehouse_url, "SELECT source_row, invoice_no FROM fact_sales"))
    assert rows == {1: "536365", 2: "536365", 3: "536366", 4: "536367", 5: "C536379", 6: "536370"}
    assert one(warehouse_url, "SELECT source_row FROM etl_quarantine") == 7
    assert one(warehouse_url, "SELECT unit_price FROM etl_quarantine") == "0"
    assert one(warehouse_url, "SELECT description FROM dim_products WHERE stock_code = '22633'") == "HAND WARMER £ UNION JACK"
    assert str(one(warehouse_url, "SELECT transaction_datetime FROM fact_sales WHERE source_row = 1"))[:19] == "2010-12-01 08:26:00"
    assert (
        one(
            warehouse_url,
            "SELECT customer_id FROM dim_customers WHERE customer_key = (SELECT customer_key FROM fact_sales WHERE source_row = 2)",
        )
        == "17850"
    )
    assert q(warehouse_url, "SELECT source, source_checksum IS NOT NULL, encoding FROM etl_runs") == [
        (str(second_edition.resolve()), True, None)
    ]
    lineage = run_cli(
        "metadata",
        "lineage",
        "--sales-key",
        str(one(warehouse_url, "SELECT sales_key FROM fact_sales WHERE source_row = 5")),
        "--format",
        "json",
    )
    assert lineage.exit_code == 0, lineage.output
    assert str(second_edition.resolve()) in lineage.stdout and '"source_row": 5' in lineage.stdout


def test_same_workbook_again_is_skipped(sqlite_cli: Cli, second_edition: Path) -> None:
    etl_json(sqlite_cli, second_edition)
    again = etl_json(sqlite_cli, second_edition)
    assert again["status"] == "skipped" and again["rows_already_loaded"] == 7


def test_one_sheet_by_name(sqlite_cli: Cli, sqlite_url: str, second_edition: Path) -> None:
    summary = etl_json(sqlite_cli, second_edition, "--sheet", "Year 2010-2011")
    assert (summary["rows_read"], summary["rows_loaded"]) == (3, 2)
    assert sorted(r[0] for r in q(sqlite_url, "SELECT source_row FROM fact_sales")) == [1, 2]
    # The rest of the workbook later: the lines already held are not loaded twice.
    whole = etl_json(sqlite_cli, second_edition)
    assert (whole["rows_loaded"], whole["rows_already_loaded"]) == (4, 3)


def test_unknown_sheet_lists_the_sheets(sqlite_cli: Cli, second_edition: Path) -> None:
    result = sqlite_cli("etl", "--source", str(second_edition), "--sheet", "2011")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: {second_edition}: no sheet named '2011'; the workbook has 'Year 2009-2010', 'Year 2010-2011'. "
        "Pass one of them with --sheet, or leave --sheet out to read every sheet"
    )


def test_sheet_name_matches_without_case(tmp_path: Path, second_edition: Path) -> None:
    source = open_source(str(second_edition), Settings(), SourceOptions(sheet="year 2010-2011"))
    assert [s.title for s in source.sheets] == ["Year 2010-2011"]


def test_header_only_workbook(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "empty.xlsx", {"Sales": []}, SECOND_EDITION)
    with pytest.raises(SourceError) as err:
        open_source(str(path), Settings())
    assert str(err.value) == f"{path}: has a header line but no data rows (every sheet)"


def test_empty_sheets(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "mixed.xlsx", {"Notes": [], "Sales": [FIRST_EDITION, YEAR_2[0]]})
    source = open_source(str(path), Settings())
    assert [s.title for s in source.sheets] == ["Sales"]  # an empty sheet is skipped
    with pytest.raises(SourceError) as err:
        open_source(str(path), Settings(), SourceOptions(sheet="Notes"))
    assert str(err.value) == f"{path}: sheet 'Notes' is empty; expected a header row and sales rows"
    blank = write_workbook(tmp_path / "blank.xlsx", {"Sheet1": []})
    with pytest.raises(SourceError) as err:
        open_source(str(blank), Settings())
    assert str(err.value) == f"{blank}: every sheet is empty; expected a header row and sales rows"


def test_sheet_with_other_columns_names_the_sheet(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "two.xlsx", {"Sales": [FIRST_EDITION, YEAR_2[0]], "Summary": [["Month", "Revenue"], ["Dec", 1]]})
    with pytest.raises(SourceError) as err:
        open_source(str(path), Settings())
    message = str(err.value)
    assert message.startswith(f"{path} sheet 'Summary': required column(s) InvoiceNo, StockCode")
    assert "found: Month, Revenue" in message and message.endswith("(to read only the sales sheet, pass --sheet NAME)")
    assert [s.title for s in open_source(str(path), Settings(), SourceOptions(sheet="Sales")).sheets] == ["Sales"]


def test_header_below_a_title_and_explicit_mapping(tmp_path: Path) -> None:
    header = ["Beleg", "Artikel", "Text", "Menge", "Datum", "Preis", "Kunde", "Land"]
    path = write_workbook(tmp_path / "de.xlsx", {"Umsatz": [[], ["Beleg", *header[1:]], YEAR_2[1]]})
    mapping = {"InvoiceNo": "Beleg", "StockCode": "Artikel", "Description": "Text", "Quantity": "Menge", "InvoiceDate": "Datum",
               "UnitPrice": "Preis", "CustomerID": "Kunde", "Country": "Land"}  # fmt: skip
    source = open_source(str(path), Settings(), SourceOptions(column_map=mapping))
    [chunk] = list(source.chunks(100))
    assert chunk.frame.iloc[0].tolist() == ["536370", "POST", "POSTAGE", "3", "12/25/2010 8:45", "18", "12583", "France"]
    assert source.sheets[0].header_row == 2


def test_chunks_span_sheets_with_bounded_size(tmp_path: Path) -> None:
    rows = [
        [536400 + i, 22000 + i, f"ITEM {i}", i % 7 + 1, datetime(2011, 3, 1, 9, i % 60), 1.25, 13000 + i % 5, "Spain"] for i in range(250)
    ]
    path = write_workbook(tmp_path / "big.xlsx", {"A": rows[:95], "B": rows[95:]}, FIRST_EDITION)
    chunks = list(WorkbookSource(path, Settings(), SourceOptions()).chunks(100))
    assert [len(c.frame) for c in chunks] == [100, 100, 50]
    assert np.array_equal(np.concatenate([c.source_rows for c in chunks]), np.arange(1, 251))
    assert chunks[0].frame["InvoiceNo"].iloc[99] == "536499" and chunks[0].frame.dtypes.unique().tolist() == [
        chunks[0].frame["Country"].dtype
    ]
    assert str(chunks[0].frame["Country"].dtype) == "str"


def test_cells_outside_the_header_are_quarantined(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "wide.xlsx", {"Sales": [YEAR_2[1], [*YEAR_2[0], None, "stray note"]]}, FIRST_EDITION)
    summary = etl_json(sqlite_cli, path)
    assert summary["quarantine_by_reason"] == {"malformed_line": 1}
    raw = q(sqlite_url, "SELECT source_row, raw_line FROM etl_quarantine")
    assert raw == [(2, "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom,,stray note")]


def test_not_a_workbook(sqlite_cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "sales.xlsx"
    path.write_text("InvoiceNo,StockCode\n1,2\n")
    result = sqlite_cli("etl", "--source", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: cannot be opened as an Excel workbook (")
    assert "save it as .xlsx (old .xls files are not supported) or export the sales as CSV" in result.stderr
    missing = sqlite_cli("etl", "--source", str(tmp_path / "nope.xlsx"))
    assert missing.exit_code == 1 and missing.stderr.strip() == f"Error: {tmp_path / 'nope.xlsx'}: file not found; check the --source path"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("  keep spaces ", "  keep spaces "),
        (6, "6"),
        (-3, "-3"),
        (17850.0, "17850"),
        (2.55, "2.55"),
        (0.1 + 0.2, "0.30000000000000004"),  # exact: parses back to the same float
        (1e-05, "0.00001"),
        (float("nan"), ""),
        (Decimal("2.550"), "2.55"),
        (Decimal("6.000"), "6"),
        (Decimal("-11062.06"), "-11062.06"),
        (datetime(2010, 12, 1, 8, 26), "2010-12-01 08:26:00"),
        (datetime(2010, 12, 1, 8, 25, 59, 999_500), "2010-12-01 08:26:00"),  # Excel's fraction-of-a-day noise
        (date(2011, 1, 5), "2011-01-05 00:00:00"),
        (True, "true"),
        ({"a": 1}, json.dumps({"a": 1})),
    ],
)
def test_text_value(value: object, text: str) -> None:
    assert text_value(value) == text
    if isinstance(value, float) and text:
        assert float(text) == value
