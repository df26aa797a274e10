"""`data generate --split day|store`: a folder of CSVs holding exactly the single file's rows.

Speed and flat memory of big folders are measured by hand (docs/generator.md), not asserted here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

import sampledata.generator as generator
from sampledata.generator import MANIFEST_NAME, generate_folder, generate_sales
from tests.conftest import Cli
from utils.vocabulary import SOURCE_COLUMNS

HEADER = (",".join(SOURCE_COLUMNS) + "\n").encode()
ROWS = 6_000


def _csvs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv"))


def _body(path: Path) -> bytes:
    raw = path.read_bytes()
    assert raw.startswith(HEADER), path.name
    return raw[len(HEADER) :]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(folder.name + "."))


# -- the same rows as the single file ------------------------------------------------------------


@pytest.mark.parametrize(("start", "days"), [(date(2010, 12, 1), 374), (date(2009, 3, 1), 60)])
def test_day_files_are_the_single_file_cut_at_midnight(tmp_path: Path, start: date, days: int) -> None:
    single = generate_sales(tmp_path / "one.csv", ROWS, seed=8, start=start, days=days)
    result = generate_folder(tmp_path / "days", ROWS, seed=8, split="day", start=start, days=days)
    files = _csvs(result.path)
    assert b"".join(_body(f) for f in files) == _body(single.path)  # name order is time order
    for f in files:
        assert f.name.startswith("sales-") and f.name.endswith(".csv")
        day = f.name[len("sales-") : -len(".csv")]
        assert date.fromisoformat(day) >= start
        assert (_read(f)["InvoiceDate"].str[:10] == day).all(), f.name
    assert (result.rows, result.files) == (ROWS, len(files))
    assert (result.invoices, result.customers, result.duplicates) == (single.invoices, single.customers, single.duplicates)
    assert _leftovers(result.path) == []


def test_store_files_hold_each_stores_rows_in_file_order(tmp_path: Path) -> None:
    single = _read(generate_sales(tmp_path / "one.csv", ROWS, seed=8).path)
    folder = generate_folder(tmp_path / "stores", ROWS, seed=8, split="store", stores=4).path
    # The documented rule: store = 1 + (CustomerID, or the invoice number without its letter) mod stores.
    number = single["CustomerID"].where(single["CustomerID"] != "", single["InvoiceNo"].str[-6:]).astype(int)
    store = 1 + number % 4
    assert [f.name for f in _csvs(folder)] == [f"sales-store-0{k}.csv" for k in range(1, 5)]
    for k in range(1, 5):
        expected = single[store == k].reset_index(drop=True)
        pd.testing.assert_frame_equal(_read(folder / f"sales-store-0{k}.csv"), expected)


@pytest.mark.parametrize("split", ["day", "store"])
def test_batch_size_does_not_change_the_folder(tmp_path: Path, split: str) -> None:
    big = generate_folder(tmp_path / "big", 4_000, seed=2, split=split, stores=3).path
    small = generate_folder(tmp_path / "small", 4_000, seed=2, split=split, stores=3, batch_rows=97).path
    assert [f.name for f in _csvs(big)] == [f.name for f in _csvs(small)]
    assert all(f.read_bytes() == (small / f.name).read_bytes() for f in _csvs(big))
    assert _manifest(big)["files"] == _manifest(small)["files"]


@pytest.mark.parametrize("split", ["day", "store"])
def test_manifest_lists_every_file_with_its_rows_bytes_and_checksum(tmp_path: Path, split: str) -> None:
    result = generate_folder(tmp_path / "out", ROWS, seed=5, split=split, stores=3)
    manifest = _manifest(result.path)
    files = _csvs(result.path)
    assert [f["name"] for f in manifest["files"]] == [f.name for f in files]
    for entry, path in zip(manifest["files"], files, strict=True):
        raw = path.read_bytes()
        assert entry["rows"] == raw.count(b"\n") - 1 == len(_read(path))
        assert entry["bytes"] == len(raw)
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
    assert sum(f["rows"] for f in manifest["files"]) == manifest["rows"] == ROWS
    assert manifest["bytes"] == result.bytes == sum(f.stat().st_size for f in files)
    assert manifest["file_count"] == result.files == len(files)
    assert (manifest["split"], manifest["seed"]) == (split, 5)
    assert sorted(p.name for p in result.path.iterdir()) == sorted([MANIFEST_NAME, *(f.name for f in files)])


# -- never a half-written folder ------------------------------------------------------------------


def test_a_failed_run_leaves_no_folder_and_no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_write = generator._FolderWriter.write

    def failing_write(self, key, data, rows):
        calls.append(key)
        if len(calls) == 20:
            raise OSError("disk full (simulated)")
        real_write(self, key, data, rows)

    monkeypatch.setattr(generator._FolderWriter, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        generate_folder(tmp_path / "out", ROWS, seed=1, batch_rows=200)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path / "out") == []


def test_a_failed_overwrite_keeps_the_old_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = generate_folder(tmp_path / "out", 2_000, seed=1).path
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(generator, "_write_manifest", lambda *a: (_ for _ in ()).throw(OSError("disk full (simulated)")))
    with pytest.raises(OSError, match="simulated"):
        generate_folder(folder, 3_000, seed=2, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _leftovers(folder) == []


def test_leftovers_of_a_killed_run_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / "out.partial-4194305"  # above any Linux pid_max: no such process
    dead.mkdir()
    (dead / "sales-2010-12-01.csv").write_bytes(HEADER)
    generate_folder(tmp_path / "out", 1_000, seed=1)
    assert _leftovers(tmp_path / "out") == []


# -- the command ------------------------------------------------------------------------------------


def test_cli_summary_reports_files_rows_bytes_and_time(tmp_path: Path) -> None:
    out = tmp_path / "days"
    result = Cli(None)("data", "generate", "--rows", "3000", "--seed", "4", "--output", str(out), "--split", "day", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["path"] == str(out)
    assert summary["files"] == len(_csvs(out)) == _manifest(out)["file_count"]
    assert summary["rows"] == 3_000
    assert summary["bytes"] == sum(f.stat().st_size for f in _csvs(out))
    assert summary["seconds"] > 0 and summary["rows_per_s"] > 0


def test_cli_single_file_mode_is_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "one.csv"
    result = Cli(None)("data", "generate", "--rows", "3000", "--seed", "4", "--output", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == generate_sales(tmp_path / "lib.csv", 3_000, seed=4).path.read_bytes()
    assert json.loads(result.stdout)["files"] == 1


def test_cli_overwrite_replaces_a_generated_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli = Cli(None)
    assert cli("data", "generate", "--rows", "3000", "--output", str(out), "--split", "day").exit_code == 0
    result = cli("data", "generate", "--rows", "2000", "--output", str(out), "--split", "store", "--stores", "3", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "sales-store-01.csv", "sales-store-02.csv", "sales-store-03.csv"]
    assert _manifest(out)["rows"] == 2_000
    assert _leftovers(out) == []


def _bad_targets(area: Path) -> dict[str, Path]:
    full = area / "full"
    full.mkdir(parents=True)
    (full / "sales-2010-12-01.csv").write_bytes(HEADER)
    mine = area / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    (area / "afile").write_text("not a folder", encoding="utf-8")
    return {"full": full, "mine": mine, "afile": area / "afile", "new": area / "new"}


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ("full", [], "the folder is not empty; pass --overwrite to replace it, or name a new or empty folder"),
        (
            "mine",
            ["--overwrite"],
            "the folder holds 'notes.txt', which data generate did not write; --overwrite only replaces generated folders",
        ),
        ("afile", [], "it is a file, not a folder; name a new or empty folder (or drop --split to write one file)"),
        ("new", ["--rows", "0"], "a folder needs at least 1 row, got 0"),
        ("new", ["--rows", "-3"], "a folder needs at least 1 row, got -3"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_writes_nothing(tmp_path: Path, target: str, extra: list[str], message: str) -> None:
    area = tmp_path / "area"
    paths = _bad_targets(area)
    before = sorted(str(p.relative_to(area)) for p in area.rglob("*"))
    result = Cli(None)("data", "generate", "--output", str(paths[target]), "--split", "day", *extra)
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot generate {paths[target]}: {message}\n"
    assert result.stdout == ""
    assert sorted(str(p.relative_to(area)) for p in area.rglob("*")) == before


@pytest.mark.parametrize(
    ("rows", "target", "message"),
    [
        ("10", "", "it is a folder; name a file, or pass --split day|store to write a folder"),
        ("-3", "x.csv", "rows must be 0 or more, got -3"),
    ],
)
def test_cli_single_file_bad_input(tmp_path: Path, rows: str, target: str, message: str) -> None:
    area = tmp_path / "area"
    area.mkdir()
    output = area / target if target else area
    result = Cli(None)("data", "generate", "--rows", rows, "--output", str(output))
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot generate {output}: {message}\n"
    assert list(area.iterdir()) == []


def test_cli_stores_without_store_split_is_a_usage_error(tmp_path: Path) -> None:
    result = Cli(None)("data", "generate", "--output", str(tmp_path / "x"), "--split", "day", "--stores", "3")
    assert result.exit_code == 2
    assert "Error: --stores needs --split store" in result.stderr
    assert not (tmp_path / "x").exists()


# -- the ETL loads the folder --------------------------------------------------------------------


def test_etl_loads_the_generated_folder_with_every_row_accounted_for(tmp_path: Path, sqlite_cli: Cli, sqlite_url: str) -> None:
    rows = 3_000
    folder = tmp_path / "days"
    made = sqlite_cli("data", "generate", "--rows", str(rows), "--seed", "6", "--output", str(folder), "--split", "day", "--days", "4")
    assert made.exit_code == 0, made.output
    manifest = _manifest(folder)
    result = sqlite_cli("etl", "--source", str(folder), "--format", "json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert [Path(r["source"]).name for r in runs] == [f["name"] for f in manifest["files"]]  # the manifest is not loaded
    assert [r["rows_read"] for r in runs] == [f["rows"] for f in manifest["files"]]
    for run in runs:
        assert run["rows_read"] == run["rows_loaded"] + run["rows_quarantined"] + run["rows_already_loaded"]
    assert sum(r["rows_read"] for r in runs) == rows
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        facts = conn.execute(text("SELECT COUNT(*) FROM fact_sales")).scalar_one()
    engine.dispose()
    assert facts == sum(r["rows_loaded"] for r in runs)

    # Loading the single file instead gives the same facts and the same quarantine.
    single = generate_sales(tmp_path / "one.csv", rows, seed=6, days=4).path
    whole = Cli(f"sqlite:///{tmp_path / 'single.db'}")("etl", "--source", str(single), "--format", "json")
    assert whole.exit_code == 0, whole.output
    one = json.loads(whole.stdout)
    assert one["rows_loaded"] == sum(r["rows_loaded"] for r in runs)
    assert one["rows_quarantined"] == sum(r["rows_quarantined"] for r in runs)
