"""Source checks and chunked reading of CSV extracts."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from etl.ingestion import _block_size, inspect_source, read_chunks
from utils.errors import SourceError
from utils.vocabulary import SOURCE_COLUMNS

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
EXPECTED = ", ".join(SOURCE_COLUMNS)


def line(n: int, description: str = "WHITE HANGING HEART") -> str:
    return f"{n},85123A,{description},6,12/1/2010 8:26,2.55,17850,United Kingdom"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def read_all(path: Path, chunk_size: int = 100):
    info = inspect_source(path)
    return info, list(read_chunks(info, chunk_size))


def rows_of(chunks) -> list[list[str]]:
    return [r for c in chunks for r in c.frame.to_numpy().tolist()]


# --- inspect_source errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == f"{path}: file not found; check the --source path"


def test_directory(tmp_path):
    with pytest.raises(SourceError) as err:
        inspect_source(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a directory; pass a CSV file"


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.csv", "")
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == f"{path}: the file is empty; expected a header line and sales rows"


@pytest.mark.parametrize("text", [HEADER + "\n", HEADER, HEADER + "\r\n", HEADER + "\n\n\n"])
def test_header_only(tmp_path, text):
    path = write(tmp_path, "header.csv", text)
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == f"{path}: has a header line but no data rows"


def test_missing_required_column_lists_found_headers(tmp_path):
    path = write(tmp_path, "cols.csv", "InvoiceNo,StockCode,Description,InvoiceDate,UnitPrice,Customer,Country\n1,2,3,4,5,6,7\n")
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == (
        f"{path}: required column(s) Quantity, CustomerID not found in the header line; "
        f"found: InvoiceNo, StockCode, Description, InvoiceDate, UnitPrice, Customer, Country. Expected: {EXPECTED} "
        "(map others with --map Target=Source)"
    )


def test_not_a_header_at_all(tmp_path):
    path = write(tmp_path, "noheader.csv", line(1) + "\n" + line(2) + "\n")
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value).startswith(f"{path}: required column(s) {EXPECTED} not found in the header line; found: 1, 85123A,")


def test_binary_file_with_nuls(tmp_path):
    path = tmp_path / "blob.csv"
    path.write_bytes(b"InvoiceNo\x00\x00\x00\x01\x02" * 500)
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == f"{path}: looks like binary data, not a CSV text file; export the sales as CSV"


def test_zip_file(tmp_path):
    path = tmp_path / "sales.csv"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sales.csv", HEADER + "\n" + line(1) + "\n")
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == f"{path}: looks like a zip archive or Excel workbook, not a CSV text file; export the sales as CSV"


def test_gzip_suffix_on_a_plain_file(tmp_path):
    path = write(tmp_path, "sales.csv.gz", HEADER + "\n" + line(1) + "\n")
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value).startswith(f"{path}: cannot be read as gzip (")
    assert str(err.value).endswith("); is the file complete?")


# --- encodings and headers -------------------------------------------------------------------------------------


def test_cp1252_file_detected_and_decoded(tmp_path):
    text = HEADER + "\n" + line(1, "TEA SET £5 €") + "\n" + line(2, "CAFÉ MUG") + "\n"
    path = write(tmp_path, "cp.csv", text, encoding="cp1252")
    info, chunks = read_all(path)
    assert info.encoding == "cp1252"
    assert [c.frame["Description"].tolist() for c in chunks] == [["TEA SET £5 €", "CAFÉ MUG"]]


def test_latin1_pound_sign_detected_as_cp1252(tmp_path):
    path = write(tmp_path, "latin.csv", HEADER + "\n" + line(1, "£10 VOUCHER") + "\n", encoding="latin-1")
    info, chunks = read_all(path)
    assert info.encoding == "cp1252"
    assert chunks[0].frame["Description"].tolist() == ["£10 VOUCHER"]


def test_utf8_file(tmp_path):
    path = write(tmp_path, "utf8.csv", HEADER + "\n" + line(1, "£5 CAFÉ") + "\n")
    info, chunks = read_all(path)
    assert info.encoding == "utf-8"
    assert chunks[0].frame["Description"].tolist() == ["£5 CAFÉ"]


def test_explicit_encoding_overrides_detection(tmp_path):
    path = write(tmp_path, "u.csv", HEADER + "\n" + line(1, "£5") + "\n")
    info = inspect_source(path, encoding="latin-1")
    assert info.encoding == "latin-1"
    chunks = list(read_chunks(info, 100))
    assert chunks[0].frame["Description"].tolist() == ["Â£5"]


def test_utf8_bom_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "\n" + line(1) + "\n").encode())
    info, chunks = read_all(path)
    assert info.header == list(SOURCE_COLUMNS)
    assert list(chunks[0].frame.columns) == list(SOURCE_COLUMNS)
    assert chunks[0].frame["InvoiceNo"].tolist() == ["1"]


def test_header_case_and_separator_variants(tmp_path):
    header = "invoiceno,STOCKCODE,description,quantity,Invoice_Date,Unit Price,Customer ID,country"
    path = write(tmp_path, "case.csv", header + "\n" + line(1) + "\n")
    info, chunks = read_all(path)
    assert info.header == header.split(",")
    frame = chunks[0].frame
    assert list(frame.columns) == list(SOURCE_COLUMNS)
    assert rows_of(chunks) == [line(1).split(",")]


def test_columns_in_another_order_and_extra_columns(tmp_path):
    header = "Country,Extra,CustomerID,UnitPrice,InvoiceDate,Quantity,Description,StockCode,InvoiceNo"
    path = write(tmp_path, "order.csv", header + "\nUK,zzz,17850,2.55,12/1/2010 8:26,6,MUG,85123A,536365\n")
    _, chunks = read_all(path)
    frame = chunks[0].frame
    assert list(frame.columns) == list(SOURCE_COLUMNS)
    assert frame.iloc[0].tolist() == ["536365", "85123A", "MUG", "6", "12/1/2010 8:26", "2.55", "17850", "UK"]


def test_header_with_padded_names(tmp_path):
    header = "InvoiceNo,StockCode,Description, Quantity ,InvoiceDate,UnitPrice,CustomerID,Country"
    path = write(tmp_path, "padded.csv", header + "\n" + line(1) + "\n")
    info = inspect_source(path)
    assert [h.strip() for h in info.header] == list(SOURCE_COLUMNS)
    chunks = list(read_chunks(info, 100))
    assert rows_of(chunks) == [line(1).split(",")]


def test_values_are_text_and_empty_strings_not_null(tmp_path):
    path = write(tmp_path, "empty_values.csv", HEADER + '\n536365,85123A,"",6,12/1/2010 8:26,0.5,,United Kingdom\n')
    _, chunks = read_all(path)
    frame = chunks[0].frame
    assert all(str(frame[c].dtype) == "str" for c in SOURCE_COLUMNS)
    assert frame.iloc[0].tolist() == ["536365", "85123A", "", "6", "12/1/2010 8:26", "0.5", "", "United Kingdom"]
    assert not frame.isna().to_numpy().any()


def test_quoted_values_with_commas_and_newlines(tmp_path):
    text = HEADER + "\n" + line(1, '"MUG, RED"') + "\n" + line(2, '"TWO\nLINES"') + "\n" + line(3) + "\n"
    path = write(tmp_path, "quoted.csv", text)
    _, chunks = read_all(path)
    assert [r[2] for r in rows_of(chunks)] == ["MUG, RED", "TWO\nLINES", "WHITE HANGING HEART"]
    assert np.concatenate([c.source_rows for c in chunks]).tolist() == [1, 2, 3]


# --- chunked reading --------------------------------------------------------------------------------------------


def test_source_info(tmp_path):
    text = HEADER + "\n" + "".join(line(i) + "\n" for i in range(1, 11))
    path = write(tmp_path, "info.csv", text)
    info = inspect_source(path)
    assert info.path == path
    assert info.size_bytes == len(text)
    assert info.compression is None
    assert len(info.checksum) == 64
    assert info.checksum == hashlib.sha256(text.encode()).hexdigest()
    assert info.estimated_rows == 11


def test_small_chunks_yield_every_row_with_consecutive_numbers(tmp_path):
    n = 3000  # more than one 64 KiB parser block
    path = write(
        tmp_path, "many.csv", HEADER + "\n" + "".join(line(i, f"ITEM {i:05d} WITH A LONGER DESCRIPTION") + "\n" for i in range(1, n + 1))
    )
    _, chunks = read_all(path, chunk_size=500)
    assert len(chunks) > 1
    rows = np.concatenate([c.source_rows for c in chunks])
    assert rows.dtype == np.int64
    assert rows.tolist() == list(range(1, n + 1))
    # the numbers belong to the right rows
    assert np.concatenate([c.frame["InvoiceNo"].to_numpy() for c in chunks]).astype(int).tolist() == rows.tolist()
    assert sum(c.rows_read for c in chunks) == n
    assert all(c.malformed == [] for c in chunks)


def test_a_chunk_is_cut_from_many_parser_blocks(tmp_path):
    """Blocks are capped at 256 KiB (pyarrow reads up to 32 of them ahead, so the cap bounds the
    reader's memory); a chunk larger than a block still has exactly chunk_size rows, in order."""
    n = 12_000  # about 1 MB: four blocks or more, each of ~3,000 rows
    path = write(
        tmp_path, "big.csv", HEADER + "\n" + "".join(line(i, f"ITEM {i:05d} WITH A LONGER DESCRIPTION") + "\n" for i in range(1, n + 1))
    )
    info = inspect_source(path)
    assert _block_size(info, 5_000) == 256 << 10
    assert _block_size(info, 1_000) < 256 << 10  # a small chunk: one block of about its size
    chunks = list(read_chunks(info, 5_000))
    assert [c.rows_read for c in chunks] == [5_000, 5_000, 2_000]
    rows = np.concatenate([c.source_rows for c in chunks])
    assert rows.tolist() == list(range(1, n + 1))
    assert np.concatenate([c.frame["InvoiceNo"].to_numpy() for c in chunks]).astype(int).tolist() == rows.tolist()


def test_a_line_longer_than_a_block_still_fits(tmp_path):
    long = "X" * (300 << 10)  # 300 KiB description: longer than the 256 KiB cap
    path = write(tmp_path, "long.csv", HEADER + "\n" + line(1) + "\n" + line(2, long) + "\n" + line(3) + "\n")
    info = inspect_source(path)
    assert _block_size(info, 50_000) >= 2 * info.longest_line
    _, chunks = read_all(path)
    assert [r[2] for r in rows_of(chunks)] == ["WHITE HANGING HEART", long, "WHITE HANGING HEART"]


def test_malformed_lines_come_back_with_row_numbers(tmp_path):
    text = (
        HEADER
        + "\n"
        + line(1)
        + "\n"
        + line(2)
        + ",EXTRA\n"
        + line(3)
        + "\n"
        + line(4)
        + "\n"
        + line(5)[:20]  # truncated last line, no newline
    )
    path = write(tmp_path, "bad.csv", text)
    _, chunks = read_all(path)
    malformed = [m for c in chunks for m in c.malformed]
    assert malformed == [
        (2, line(2) + ",EXTRA", "expected 8 fields, found 9"),
        (5, line(5)[:20], "expected 8 fields, found 3"),
    ]
    assert np.concatenate([c.source_rows for c in chunks]).tolist() == [1, 3, 4]
    assert [r[0] for r in rows_of(chunks)] == ["1", "3", "4"]
    assert sum(c.rows_read for c in chunks) == 5


def test_malformed_line_in_a_later_block_keeps_row_numbers(tmp_path):
    n, bad = 3000, 2500
    lines = [line(i, f"ITEM {i:05d} WITH A LONGER DESCRIPTION") + (",EXTRA" if i == bad else "") for i in range(1, n + 1)]
    path = write(tmp_path, "late.csv", HEADER + "\n" + "\n".join(lines) + "\n")
    _, chunks = read_all(path, chunk_size=500)
    assert [m[0] for c in chunks for m in c.malformed] == [bad]
    rows = np.concatenate([c.source_rows for c in chunks])
    assert rows.tolist() == [i for i in range(1, n + 1) if i != bad]
    assert np.concatenate([c.frame["InvoiceNo"].to_numpy() for c in chunks]).astype(int).tolist() == rows.tolist()


def test_gzip_reads_the_same_rows(tmp_path):
    text = HEADER + "\n" + "".join(line(i) + "\n" for i in range(1, 51))
    plain = write(tmp_path, "sales.csv", text)
    packed = tmp_path / "sales.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    plain_info, plain_chunks = read_all(plain, chunk_size=10)
    gz_info, gz_chunks = read_all(packed, chunk_size=10)
    assert gz_info.compression == "gzip"
    assert gz_info.estimated_rows is None
    assert gz_info.encoding == plain_info.encoding == "utf-8"
    assert rows_of(gz_chunks) == rows_of(plain_chunks)
    assert len(rows_of(gz_chunks)) == 50
    assert np.concatenate([c.source_rows for c in gz_chunks]).tolist() == list(range(1, 51))


def test_gzip_header_only(tmp_path):
    path = tmp_path / "h.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "\n").encode()))
    with pytest.raises(SourceError) as err:
        inspect_source(path)
    assert str(err.value) == f"{path}: has a header line but no data rows"


def test_crlf_line_endings(tmp_path):
    text = HEADER + "\r\n" + line(1) + "\r\n" + line(2) + "\r\n"
    path = write(tmp_path, "crlf.csv", text)
    info, chunks = read_all(path)
    assert info.header == list(SOURCE_COLUMNS)
    assert rows_of(chunks) == [line(1).split(","), line(2).split(",")]
    assert np.concatenate([c.source_rows for c in chunks]).tolist() == [1, 2]


def test_other_delimiter(tmp_path):
    text = HEADER.replace(",", ";") + "\n536365;85123A;MUG, RED;6;12/1/2010 8:26;2.55;17850;United Kingdom\n"
    path = write(tmp_path, "semi.csv", text)
    info = inspect_source(path, delimiter=";")
    chunks = list(read_chunks(info, 100, delimiter=";"))
    assert rows_of(chunks) == [["536365", "85123A", "MUG, RED", "6", "12/1/2010 8:26", "2.55", "17850", "United Kingdom"]]
