"""Bulk loading of frames (COPY on PostgreSQL, executemany on SQLite): values arrive unchanged."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import text

from database.bulk import load_frame
from database.models import SQLITE_TS_FORMAT
from tests.test_cli_etl import _engine

LABELS = ["a,b", 'say "hi"', None, "two\nlines", "£ 1"]
WHEN = ["2010-12-01 08:26:00", "2011-12-09 12:50:59", None, "0999-01-01 00:00:05", "2038-01-19 03:14:08"]


def test_timestamps_and_nulls_arrive_unchanged(warehouse_url: str) -> None:
    """Timestamps travel as text in SQLITE_TS_FORMAT (whole seconds), NULLs stay NULL, text with
    commas, quotes and line breaks survives the CSV of COPY."""
    frame = pd.DataFrame(
        {
            "id": range(len(WHEN)),
            "at": pd.to_datetime(pd.Series(WHEN), format="%Y-%m-%d %H:%M:%S").astype("datetime64[us]"),
            "label": LABELS,
        }
    )
    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bulk_probe (id INTEGER, at TIMESTAMP, label TEXT)"))
        assert load_frame(conn, "bulk_probe", frame) == len(frame)
        rows = conn.execute(text("SELECT id, CAST(at AS TEXT), label FROM bulk_probe ORDER BY id")).all()
    engine.dispose()
    assert SQLITE_TS_FORMAT == "%Y-%m-%d %H:%M:%S"  # the form WHEN is written in (zero-padded years)
    assert [r[1] for r in rows] == WHEN
    assert [r[2] for r in rows] == LABELS


def test_fractions_of_a_second_are_dropped_as_strftime_drops_them(warehouse_url: str) -> None:
    """A configured date format with %f gives timestamps with fractions; they load in whole
    seconds (floored, also before 1970) instead of failing the cast to seconds."""
    when = pd.Series(pd.to_datetime(["2011-12-09 12:50:59.750", "1969-12-31 23:59:59.500"])).astype("datetime64[us]")
    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bulk_probe (at TIMESTAMP)"))
        assert load_frame(conn, "bulk_probe", pd.DataFrame({"at": when})) == 2
        stored = [r[0] for r in conn.execute(text("SELECT CAST(at AS TEXT) FROM bulk_probe ORDER BY at DESC"))]
    engine.dispose()
    assert stored == when.dt.strftime(SQLITE_TS_FORMAT).tolist() == ["2011-12-09 12:50:59", "1969-12-31 23:59:59"]
