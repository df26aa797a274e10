"""Quarantine replay: re-process quarantined rows under the current rules.

Rows that now pass are loaded exactly once (keeping their line identity and source row) and
move from `etl_quarantine` to `etl_quarantine_replayed`; the rest stay with their reasons.
A replay is a run of kind 'replay' — a data version that `versions rollback` can undo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from database.errors import describe
from database.locks import warehouse_lock
from etl import ledger
from etl.cleaning import Cleaner
from etl.loader import WarehouseLoader
from utils.errors import PlatformError
from utils.vocabulary import REASONS, SNAKE, SOURCE_COLUMNS

_RAW = [SNAKE[c] for c in SOURCE_COLUMNS]
_COLUMNS = ["quarantine_id", "run_id", "line_id", "source_row", "reasons", *_RAW, "raw_line", "quarantined_at"]


@dataclass
class ReplayResult:
    """What a replay did."""

    run_id: int
    considered: int = 0
    loaded: int = 0
    already_loaded: int = 0
    still_quarantined: int = 0
    still_by_reason: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    duration_s: float = 0.0


def replay(
    engine: Engine,
    settings: Settings,
    run: int | None = None,
    reason: str | None = None,
    dry_run: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> ReplayResult:
    """Replay the quarantined rows of `run` and/or with `reason` (all when neither is given)."""
    try:
        with warehouse_lock(engine, settings.database.lock_timeout_s, on_wait):
            ledger.close_stale_runs(engine)
            _check_filters(engine, run, reason)
            return _replay_locked(engine, settings, run, reason, dry_run)
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None


def _check_filters(engine: Engine, run: int | None, reason: str | None) -> None:

    if reason is not None and reason not in REASONS:
        raise PlatformError(f"unknown reason '{reason}'; choose from {', '.join(REASONS)}")
    if run is not None and ledger.get_run(engine, run) is None:
        raise PlatformError(f"run {run} not found; see python main.py runs list")


def _select(conn: Connection, run: int | None, reason: str | None) -> pd.DataFrame:
    where, params = ["1 = 1"], {}
    if run is not None:
        where.append("run_id = :run")
        params["run"] = run
    if reason is not None:
        where.append("(';' || reasons || ';') LIKE :pattern")
        params["pattern"] = f"%;{reason};%"
    sql = text(f"SELECT {', '.join(_COLUMNS)} FROM etl_quarantine WHERE {' AND '.join(where)} ORDER BY quarantine_id")
    return pd.read_sql_query(sql, conn, params=params)


def _replay_locked(engine: Engine, settings: Settings, run: int | None, reason: str | None, dry_run: bool) -> ReplayResult:
    label = "quarantine" + (f" of run {run}" if run is not None else "") + (f" with reason {reason}" if reason else "")
    run_id = ledger.open_run(engine, "replay", label, None, None, kind="replay")
    result = ReplayResult(run_id, dry_run=dry_run)
    wall = time.perf_counter()

    def work(conn: Connection) -> tuple[dict, str]:
        _replay_rows(conn, settings, run, reason, result)
        result.duration_s = time.perf_counter() - wall
        counts = {
            "rows_read": result.considered,
            "rows_loaded": result.loaded,
            "rows_quarantined": result.still_quarantined,
            "rows_already_loaded": result.already_loaded,
            "quarantine_by_reason": result.still_by_reason,
        }
        return (
            counts,
            f"replayed {result.considered:,} quarantined rows: {result.loaded:,} loaded, {result.still_quarantined:,} still quarantined",
        )

    ledger.run_in_transaction(engine, run_id, ledger.utcnow(), dry_run, work, settings.database.lock_timeout_s)
    return result


def _replay_rows(conn: Connection, settings: Settings, run: int | None, reason: str | None, result: ReplayResult) -> None:
    rows = _select(conn, run, reason)
    result.considered = len(rows)
    if rows.empty:
        return
    # The duplicate rule is about the source file, which a replay does not see again: a row
    # quarantined as a duplicate stays one while rules.reject_duplicates is on.
    relaxed = replace(settings, rules=replace(settings.rules, reject_duplicates=False))
    frame = pd.DataFrame({col: rows[SNAKE[col]].fillna("").astype("str") for col in SOURCE_COLUMNS})
    positions = np.arange(len(rows), dtype=np.int64)  # passed as "source rows" to map results back
    accepted = Cleaner(relaxed).clean(frame, positions).accepted
    passing = np.zeros(len(rows), dtype=bool)
    passing[accepted["source_row"].to_numpy(dtype=np.int64)] = True
    duplicate = rows["reasons"].map(lambda r: "duplicate" in r.split(";")).to_numpy(dtype=bool)
    passing &= ~(duplicate & settings.rules.reject_duplicates) & rows["raw_line"].isna().to_numpy()
    pos = accepted["source_row"].to_numpy(dtype=np.int64)
    accepted = accepted[passing[pos]]
    pos = accepted["source_row"].to_numpy(dtype=np.int64)
    accepted = accepted.assign(
        line_id=rows["line_id"].to_numpy(dtype=np.int64)[pos], source_row=rows["source_row"].to_numpy(dtype=np.int64)[pos]
    )
    _move_out_of_quarantine(conn, rows[passing], result.run_id)
    with closing(WarehouseLoader(conn, result.run_id)) as loader:
        loader.prepare()
        loader.load(accepted, pd.DataFrame(columns=["run_id", "line_id", "source_row", "reasons", *_RAW, "raw_line", "date_key"]))
        counts = loader.finalize()
    result.loaded, result.already_loaded = counts.facts_loaded, counts.facts_already_loaded
    staying = rows[~passing]
    result.still_quarantined = len(staying)
    for reasons in staying["reasons"]:
        for code in reasons.split(";"):
            result.still_by_reason[code] = result.still_by_reason.get(code, 0) + 1


def _move_out_of_quarantine(conn: Connection, moved: pd.DataFrame, replay_run: int) -> None:
    if moved.empty:
        return
    ids = moved["quarantine_id"].astype(int).tolist()
    cols = ", ".join(_COLUMNS)
    insert = text(
        f"INSERT INTO etl_quarantine_replayed (replay_run_id, {cols}) SELECT :replay, {cols} FROM etl_quarantine WHERE quarantine_id IN :ids"
    )
    delete = text("DELETE FROM etl_quarantine WHERE quarantine_id IN :ids")
    for start in range(0, len(ids), 10_000):
        part = ids[start : start + 10_000]
        conn.execute(insert.bindparams(bindparam("ids", expanding=True)), {"replay": replay_run, "ids": part})
        conn.execute(delete.bindparams(bindparam("ids", expanding=True)), {"ids": part})
