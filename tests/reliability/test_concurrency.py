"""Concurrency: runs started at the same moment on one warehouse (real child processes).

Three ETL runs of overlapping extracts into an empty warehouse; an ETL during `versions
rollback`; an ETL during `quarantine replay`. The test holds the warehouse lock until every
child waits at it (so they truly meet), then lets go: they must be serialised by the lock, load
no line twice, never deadlock (every child has a timeout), and leave a consistent ledger; the
end state must equal the same work done one after the other in the order the lock gave.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from metadata.checksums import warehouse_checksums
from sampledata.generator import generate_sales
from tests.conftest import Cli
from tests.reliability.helpers import (
    CliProcess,
    assert_accounted,
    at_the_lock,
    backend_of,
    connected,
    extra_pg_warehouse,
    hold_warehouse_lock,
    ledger,
    line_integrity,
    logical_state,
    publish,
    query,
    wait_for,
)

ROWS = 8_000
RESULTS: list[dict] = []


@dataclass(frozen=True)
class Slices:
    """Overlapping extracts cut from one generated extract (lines in time order)."""

    a: Path  # lines [0, 4k)
    b: Path  # lines [2k, 6k): half of a again
    c: Path  # lines [4k, 8k) and [0, 500)


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> Slices:
    folder = tmp_path_factory.mktemp("concurrency")
    whole = folder / "whole.csv"
    generate_sales(whole, ROWS, seed=21)
    header, *lines = whole.read_text().splitlines(keepends=True)

    def cut(name: str, *ranges: tuple[int, int]) -> Path:
        path = folder / name
        path.write_text(header + "".join(line for lo, hi in ranges for line in lines[lo:hi]))
        return path

    return Slices(cut("a.csv", (0, 4_000)), cut("b.csv", (2_000, 6_000)), cut("c.csv", (4_000, 8_000), (0, 500)))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    publish("concurrency", "Concurrency", RESULTS, ["backend", "case", "order", "waited", "duplicates", "ledger", "end state"])


@pytest.fixture
def reference_url(warehouse_url: str, tmp_path: Path) -> Iterator[str]:
    """A second warehouse on the same back end, for the same work done one run after the other."""
    if backend_of(warehouse_url) == "sqlite":
        yield f"sqlite:///{tmp_path / 'reference.db'}"
        return
    with extra_pg_warehouse() as url:
        yield url


def in_process(url: str, *args: str, env: dict[str, str] | None = None) -> None:
    result = Cli(url)(*args, env=env)
    assert result.exit_code == 0, result.output


@contextmanager
def released_together(url: str, children: list[CliProcess]) -> Iterator[None]:
    """Hold the warehouse lock until every child waits at it, then release it; wait for all of them."""
    with hold_warehouse_lock(url):
        yield
        pids = [c.proc.pid for c in children]

        def all_waiting() -> bool:
            exited = [c for c in children if c.proc.poll() is not None]
            assert not exited, f"{exited[0].name} ended before reaching the lock: {exited[0].stderr[-2000:]}"
            return at_the_lock(url, pids) == len(children)

        wait_for(all_waiting, 90, 0.1, "every run to wait at the warehouse lock")
    for child in children:
        assert child.wait() == 0, f"{child.name}: {child.stderr[-2000:]}"
        assert "Traceback" not in child.stderr and "Error:" not in child.stderr, child.stderr[-2000:]


def runs_after(url: str, first: int) -> list[dict]:
    return [r for r in ledger(url) if r["run_id"] > first]


def assert_serialised(runs: list[dict]) -> None:
    """Each run started (took the lock) after the one before it had finished."""
    for earlier, later in pairwise(runs):
        assert later["started_at"] >= earlier["finished_at"], f"runs overlap: {earlier} / {later}"


def assert_no_duplicates(url: str) -> dict[str, int]:
    integrity = line_integrity(url)
    assert integrity["duplicate_facts"] == integrity["duplicate_quarantined"] == integrity["fact_and_quarantined"] == 0, integrity
    return integrity


def fact_and_quarantine_lines(url: str) -> tuple[set[int], set[int]]:
    facts = {int(x) for (x,) in query(url, "SELECT line_id FROM fact_sales")}
    quarantined = {int(x) for (x,) in query(url, "SELECT line_id FROM etl_quarantine")}
    return facts, quarantined


def test_parallel_etl_runs_into_an_empty_warehouse(warehouse_url: str, reference_url: str, slices: Slices, tmp_path: Path) -> None:
    """Three runs of overlapping extracts start together on a warehouse without tables: one sets
    the schema up, the others wait; every line ends up once, as a sequential load would put it."""
    url = warehouse_url
    children = []
    with released_together(url, children):
        children += [
            CliProcess(url, ["etl", "--source", str(s), "--format", "json"], tmp_path, s.stem) for s in (slices.a, slices.b, slices.c)
        ]
    waited = sum("Waiting for another run to release the warehouse lock" in c.stderr for c in children)
    runs = runs_after(url, 0)
    assert [r["status"] for r in runs] == ["success"] * 3, runs
    assert_serialised(runs)
    for run in runs:
        assert_accounted(run)
    integrity = assert_no_duplicates(url)
    assert sum(r["rows_loaded"] for r in runs) == integrity["facts"]
    assert sum(r["rows_quarantined"] for r in runs) == integrity["quarantined"]
    order = [Path(r["source"]).stem for r in runs]
    for name in order:
        in_process(reference_url, "etl", "--source", str(getattr(slices, name)))
    assert fact_and_quarantine_lines(url) == fact_and_quarantine_lines(reference_url)
    assert logical_state(url) == logical_state(reference_url), "the end state differs from the same loads one after the other"
    RESULTS.append({"backend": backend_of(url), "case": "3 ETL runs at once, empty warehouse", "order": " > ".join(order),
                    "waited": f"{waited} of 3 said so; 3 at the lock", "duplicates": 0,
                    "ledger": "3 success, no overlap, each read = loaded + quarantined + already",
                    "end state": "= sequential loads in that order"})  # fmt: skip


def test_etl_during_versions_rollback(warehouse_url: str, reference_url: str, slices: Slices, tmp_path: Path) -> None:
    """`versions rollback 2` and an ETL released together. Rollback first: the ETL loads onto
    version 1. ETL first: the rollback undoes version 2 and the ETL's version after it."""
    url = warehouse_url
    in_process(url, "etl", "--source", str(slices.a))
    with connected(url) as engine:
        after_a = warehouse_checksums(engine)
    in_process(url, "etl", "--source", str(slices.b))
    children = []
    with released_together(url, children):
        children.append(CliProcess(url, ["versions", "rollback", "2", "--yes", "--format", "json"], tmp_path, "rollback"))
        children.append(CliProcess(url, ["etl", "--source", str(slices.c), "--format", "json"], tmp_path, "etl"))
    runs = runs_after(url, 2)
    assert_serialised(runs)
    kinds = [r["kind"] for r in runs]
    assert sorted(kinds) == ["load", "rollback"], runs
    rollback, load = (runs[0], runs[1]) if kinds[0] == "rollback" else (runs[1], runs[0])
    assert rollback["status"] == "success"
    assert_no_duplicates(url)
    statuses = {r["run_id"]: r for r in ledger(url)}
    assert statuses[2]["status"] == "rolled_back" and statuses[2]["rolled_back_by"] == rollback["run_id"]
    if kinds[0] == "rollback":
        assert load["status"] == "success"
        assert_accounted(load)
        in_process(reference_url, "etl", "--source", str(slices.a))
        in_process(reference_url, "etl", "--source", str(slices.c))
        assert logical_state(url) == logical_state(reference_url), "rollback, then ETL: not the same as loading a, then c"
        order, end = "rollback > etl", "= a then c loaded one after the other"
    else:
        assert load["status"] == "rolled_back" and load["rolled_back_by"] == rollback["run_id"], load
        with connected(url) as engine:
            assert warehouse_checksums(engine) == after_a, "ETL, then rollback of 2: not exactly the state after version 1"
        order, end = "etl > rollback (undoes 2 and the etl)", "= exactly the state after version 1"
    RESULTS.append({"backend": backend_of(url), "case": "ETL during versions rollback", "order": order, "waited": "2 at the lock",
                    "duplicates": 0, "ledger": "rollback success; undone runs rolled_back by it", "end state": end})  # fmt: skip


def test_etl_during_quarantine_replay(warehouse_url: str, reference_url: str, slices: Slices, tmp_path: Path) -> None:
    """`quarantine replay` (zero prices allowed now) and an ETL of an overlapping extract released
    together: the replayed lines and the ETL's lines are each held once, as in the sequential order."""
    url = warehouse_url
    relaxed = {"RDP_RULES__REJECT_NON_POSITIVE_PRICE": "false"}
    in_process(url, "etl", "--source", str(slices.a))
    (quarantined,) = query(url, "SELECT COUNT(*) FROM etl_quarantine WHERE reasons LIKE '%non_positive_price%'")[0]
    assert quarantined > 0, "the extract has no zero prices to replay"
    children = []
    with released_together(url, children):
        children.append(
            CliProcess(url, ["quarantine", "replay", "--reason", "non_positive_price", "--format", "json"], tmp_path, "replay", relaxed)
        )
        children.append(CliProcess(url, ["etl", "--source", str(slices.b), "--format", "json"], tmp_path, "etl"))
    runs = runs_after(url, 1)
    assert_serialised(runs)
    assert [r["status"] for r in runs] == ["success", "success"], runs
    for run in runs:
        assert_accounted(run)
    assert_no_duplicates(url)
    in_process(reference_url, "etl", "--source", str(slices.a))
    for run in runs:
        if run["kind"] == "replay":
            in_process(reference_url, "quarantine", "replay", "--reason", "non_positive_price", env=relaxed)
        else:
            in_process(reference_url, "etl", "--source", str(slices.b))
    assert fact_and_quarantine_lines(url) == fact_and_quarantine_lines(reference_url)
    assert logical_state(url) == logical_state(reference_url), "not the same as the replay and the ETL one after the other"
    order = " > ".join("replay" if r["kind"] == "replay" else "etl" for r in runs)
    RESULTS.append({"backend": backend_of(url), "case": "ETL during quarantine replay", "order": order, "waited": "2 at the lock",
                    "duplicates": 0, "ledger": "replay and load success, each read = loaded + quarantined + already",
                    "end state": "= the two one after the other in that order"})  # fmt: skip
