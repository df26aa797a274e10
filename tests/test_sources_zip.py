"""Zip archives of CSV extracts, and the other compressed and delimited files."""

from __future__ import annotations

import bz2
import zipfile
from pathlib import Path

import numpy as np
import pytest

from config.settings import Settings
from etl.ingestion import Chunk
from etl.sources import SourceOptions, open_source
from etl.workbook import text_frame
from etl.zip_source import ZipSource, rechunk
from tests.conftest import Cli
from tests.test_cli_etl import ROWS, etl_json, one, q
from utils.errors import SourceError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def csv_text(rows: list[list[str]], header: str = HEADER, sep: str = ",") -> str:
    return header.replace(",", sep) + "".join(sep.join(r) + "\n" for r in rows)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


LATIN = [
    ["536380", "22961", "JAM MAKING SET PRINTED £", "2", "12/1/2010 9:41", "1.45", "17809", "United Kingdom"],
    ["536381", "22139", "RETROSPOT TEA SET CERAMIC 11 PC ", "1", "12/1/2010 9:41", "4.95", "15311", "United Kingdom"],
]


@pytest.fixture
def two_csv_zip(tmp_path: Path) -> Path:
    # Stored out of name order; the second member is Latin-1 with a £.
    members = {"2010-12b.csv": csv_text(LATIN).encode("latin-1"), "2010-12a.csv": csv_text(ROWS[:6]).encode(), "readme.txt": b"hi"}
    return write_zip(tmp_path / "extracts.zip", members)


def test_zip_of_two_csvs(run_cli: Cli, warehouse_url: str, two_csv_zip: Path) -> None:
    summary = etl_json(run_cli, two_csv_zip)
    assert (summary["rows_read"], summary["rows_loaded"]) == (8, 6)
    assert summary["quarantine_by_reason"] == {"duplicate": 1, "zero_quantity": 1}
    assert (summary["encoding"], summary["source"]) == ("utf-8+cp1252", str(two_csv_zip.resolve()))
    # Members in name order, source rows running on from one member to the next.
    assert dict(q(warehouse_url, "SELECT source_row, reasons FROM etl_quarantine")) == {3: "duplicate", 6: "zero_quantity"}
    assert dict(q(warehouse_url, "SELECT invoice_no, source_row FROM fact_sales WHERE invoice_no IN ('536380', '536381')")) == {
        "536380": 7,
        "536381": 8,
    }
    assert one(warehouse_url, "SELECT description FROM dim_products WHERE stock_code = '22961'") == "JAM MAKING SET PRINTED £"
    again = etl_json(run_cli, two_csv_zip)
    assert (again["status"], again["rows_already_loaded"]) == ("skipped", 8)


def test_zip_malformed_line_numbered_across_members(tmp_path: Path) -> None:
    latin = (csv_text(LATIN) + "536382,22960,CUT,OFF\n").encode("latin-1")
    path = write_zip(tmp_path / "cut.zip", {"a.csv": csv_text(ROWS[:6]).encode(), "b.csv": latin})
    chunks = list(ZipSource(path, Settings(), SourceOptions()).chunks(100))
    assert [c.rows_read for c in chunks] == [9]
    assert chunks[0].source_rows.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert chunks[0].malformed == [(9, "536382,22960,CUT,OFF", "expected 8 fields, found 4")]


def test_malformed_line_reaches_the_quarantine(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    # A malformed line in the same chunk as other rejected rows keeps its exact 64-bit identity.
    path = write_zip(tmp_path / "cut.zip", {"a.csv": (csv_text(ROWS[:6]) + "536382,22960,CUT,OFF\n").encode()})
    result = run_cli("etl", "--source", str(path))
    assert result.exit_code == 0, result.output
    rows = q(warehouse_url, "SELECT source_row, reasons, line_id FROM etl_quarantine ORDER BY source_row")
    assert [r[:2] for r in rows] == [(3, "duplicate"), (6, "zero_quantity"), (7, "malformed_line")]
    from etl.cleaning import malformed_rows

    expected = malformed_rows([(7, "536382,22960,CUT,OFF", "")])["line_id"].to_numpy().view(np.int64)[0]
    assert rows[2][2] == expected  # the line identity, exactly (so a re-load finds it)


def test_zip_member_problems_name_the_member(tmp_path: Path) -> None:
    bad = write_zip(tmp_path / "bad.zip", {"a.csv": csv_text(ROWS[:2]).encode(), "b.csv": b"Invoice,Price\n1,2\n"})
    with pytest.raises(SourceError) as err:
        open_source(str(bad), Settings())
    assert str(err.value).startswith(f"{bad}!b.csv: required column(s) StockCode, Description")
    header_only = write_zip(tmp_path / "header.zip", {"a.csv": HEADER.encode()})
    with pytest.raises(SourceError) as err:
        open_source(str(header_only), Settings())
    assert str(err.value) == f"{header_only}!a.csv: has a header line but no data rows"


def test_zip_without_csv(sqlite_cli: Cli, tmp_path: Path) -> None:
    path = write_zip(tmp_path / "photos.zip", {"a.jpg": b"\xff\xd8", "notes/readme.md": b"x"})
    result = sqlite_cli("etl", "--source", str(path))
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"Error: {path}: the zip archive holds no .csv or .tsv file (found: a.jpg, notes/readme.md); put the extracts in as CSV"
    )
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip at all")
    result = sqlite_cli("etl", "--source", str(fake))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {fake}: is not a zip archive (or is damaged); check the file or pass the CSV itself"


def test_zip_tsv_member_and_temp_files_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path = write_zip(tmp_path / "t.zip", {"x/sales.tsv": csv_text(ROWS[:3], sep="\t").encode()})
    source = ZipSource(path, Settings(), SourceOptions())
    [chunk] = list(source.chunks(100))
    assert chunk.frame["Description"].tolist()[0] == "WHITE HANGING HEART T-LIGHT HOLDER "
    assert chunk.source_rows.tolist() == [1, 2, 3]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_rechunk_cuts_across_members() -> None:
    positions = {
        c: i
        for i, c in enumerate(["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"])
    }

    def piece(first: int, n: int, bad: list[int]) -> Chunk:
        numbers = [r for r in range(first, first + n) if r not in bad]
        return Chunk(
            text_frame([[str(r)] * 8 for r in numbers], positions), np.array(numbers, dtype=np.int64), [(b, "x", "bad") for b in bad]
        )

    chunks = list(rechunk(iter([piece(1, 7, [3]), piece(8, 5, []), piece(13, 4, [15])]), 5))
    assert [c.rows_read for c in chunks] == [5, 5, 5, 1]
    assert [c.source_rows.tolist() for c in chunks] == [[1, 2, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14], [16]]
    assert [[m[0] for m in c.malformed] for c in chunks] == [[3], [], [15], []]
    assert chunks[1].frame["InvoiceNo"].tolist() == ["6", "7", "8", "9", "10"]


def test_bz2_and_latin1_csv(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "sales.csv.bz2"
    path.write_bytes(bz2.compress(csv_text(LATIN).encode("latin-1")))
    summary = etl_json(sqlite_cli, path)
    assert (summary["rows_loaded"], summary["encoding"]) == (2, "cp1252")
    assert one(sqlite_url, "SELECT description FROM dim_products WHERE stock_code = '22961'") == "JAM MAKING SET PRINTED £"
