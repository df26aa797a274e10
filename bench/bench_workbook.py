"""Workbook load benchmark: peak memory and speed of `etl` on a large .xlsx, `python -m bench.bench_workbook --help`.

Writes a generated extract (`sampledata.generator`, the real file's profile) as a two-sheet workbook in
the second edition's layout (Invoice, Price, Customer ID; numbers and datetimes as typed cells)
with openpyxl's write-only mode, then loads it with the real CLI in a child process into a new
SQLite warehouse:

    python main.py --database-url sqlite:///<tmp>/warehouse.db etl --source <tmp>/sales.xlsx --format json

measuring the child's peak resident memory with `/usr/bin/time -f %M` and its wall time. The same
rows as CSV are loaded the same way for comparison. Everything lives in a temporary folder that
is removed at the end (unless --keep-files). Results: a table, and
`bench/results/workbook-YYYYmmdd-HHMMSS.json` (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

from openpyxl.utils import get_column_letter

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
TIME_BIN = "/usr/bin/time"
TARGET_PEAK_MB = 500.0
HEADER = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]


def _typed(row: list[str]) -> list[object]:
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


def write_workbook(source_csv: Path, target: Path, rows: int) -> float:
    """The CSV's rows as a two-sheet workbook (first half, second half); returns seconds taken."""
    from openpyxl import Workbook

    started = time.perf_counter()
    wb = Workbook(write_only=True)
    half = rows // 2
    with open(source_csv, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        ws = wb.create_sheet("Year 2009-2010")
        ws.append(HEADER)
        for number, row in enumerate(reader):
            if number == half:
                ws = wb.create_sheet("Year 2010-2011")
                ws.append(HEADER)
            ws.append(_typed(row))
    wb.save(target)
    return time.perf_counter() - started


def with_dimensions(book: Path, target: Path, sheet_rows: list[int]) -> None:
    """A copy of `book` with a <dimension> element in each sheet, as Excel saves it (openpyxl's
    write-only mode leaves it out, which makes openpyxl scan every sheet once more on opening)."""
    with zipfile.ZipFile(book) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        sheets = sorted((n for n in src.namelist() if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", n)), key=lambda n: int(n[19:-4]))
        refs = {name: f"A1:{get_column_letter(len(HEADER))}{rows}".encode() for name, rows in zip(sheets, sheet_rows, strict=True)}
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename in refs:
                data = data.replace(b"<sheetData", b'<dimension ref="' + refs[item.filename] + b'"/><sheetData', 1)
            dst.writestr(item, data)


def load(source: Path, warehouse: Path, chunk_size: int | None) -> dict:
    """One `etl` run in a child process: its summary, wall time and peak memory."""
    command = [sys.executable, "main.py", "--database-url", f"sqlite:///{warehouse}", "etl", "--source", str(source), "--format", "json"]
    if chunk_size:
        command += ["--chunk-size", str(chunk_size)]
    started = time.perf_counter()
    done = subprocess.run([TIME_BIN, "-f", "%M", *command], cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"load of {source} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    summary = json.loads(done.stdout)
    total = summary["rows_loaded"] + summary["rows_quarantined"] + summary["rows_already_loaded"]
    if summary["status"] != "success" or total != summary["rows_read"]:
        raise SystemExit(f"load of {source} is inconsistent: {summary}")
    return {
        "source": source.name,
        "size_mb": round(source.stat().st_size / 1e6, 1),
        "rows_read": summary["rows_read"],
        "rows_loaded": summary["rows_loaded"],
        "rows_quarantined": summary["rows_quarantined"],
        "wall_s": round(wall, 2),
        "in_process_s": round(summary["duration_s"], 2),
        "rows_per_s": round(summary["rows_read"] / summary["duration_s"]),
        "read_s": round(summary.get("timings", {}).get("read", 0.0), 2),
        "peak_mb": round(peak_kb / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows in the workbook (default 500,000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--chunk-size", type=int, help="etl --chunk-size (default: etl.chunk_size)")
    parser.add_argument("--keep-files", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args(argv)
    if not Path(TIME_BIN).exists():
        raise SystemExit(f"{TIME_BIN} is needed to measure peak memory (apt-get install time)")
    sys.path.insert(0, str(REPO_ROOT))
    from sampledata.generator import generate_sales

    folder = Path(tempfile.mkdtemp(prefix="rdp-bench-xlsx-"))
    try:
        source_csv, book = folder / "sales.csv", folder / "sales.xlsx"
        generate_sales(source_csv, args.rows, args.seed)
        written_s = write_workbook(source_csv, book, args.rows)
        print(f"wrote {book.name}: {args.rows:,} rows in two sheets, {book.stat().st_size / 1e6:.1f} MB, in {written_s:.1f} s")
        excel_like = folder / "sales-with-dimension.xlsx"
        with_dimensions(book, excel_like, [args.rows // 2 + 1, args.rows - args.rows // 2 + 1])
        results = [
            load(book, folder / "w-xlsx.db", args.chunk_size),
            load(excel_like, folder / "w-xlsx-dim.db", args.chunk_size),
            load(source_csv, folder / "w-csv.db", args.chunk_size),
        ]
        if results[0]["rows_read"] != args.rows:
            raise SystemExit(f"the workbook load read {results[0]['rows_read']:,} rows, expected {args.rows:,}")
        columns = list(results[0])
        print(" | ".join(columns))
        for r in results:
            print(" | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in columns))
        peak = max(results[0]["peak_mb"], results[1]["peak_mb"])
        verdict = "within" if peak <= TARGET_PEAK_MB else "ABOVE"
        print(f"workbook peak {peak} MB: {verdict} the {TARGET_PEAK_MB:.0f} MB target")
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"workbook-{datetime.now():%Y%m%d-%H%M%S}.json"
        out.write_text(
            json.dumps({"rows": args.rows, "seed": args.seed, "workbook_write_s": round(written_s, 1), "loads": results}, indent=2)
        )
        print(f"results: {out.relative_to(REPO_ROOT)}")
        return 0 if verdict == "within" else 1
    finally:
        if args.keep_files:
            print(f"files kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
