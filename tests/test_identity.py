"""Line identity hashing and the cross-chunk duplicate tracker."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from etl.identity import DuplicateTracker, _mix, line_identity
from utils.vocabulary import SOURCE_COLUMNS

ROW = ["536365", "85123A", "WHITE HANGING HEART", "6", "2010-12-01 08:26:00", "2550", "17850", "United Kingdom"]


def _frame(*rows: list[str]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(SOURCE_COLUMNS), dtype="str")


def test_line_identity_is_deterministic_uint64():
    first = line_identity(_frame(ROW, ROW))
    again = line_identity(_frame(ROW))
    assert first.dtype == np.uint64
    assert len(first) == 2
    assert first[0] == first[1] == again[0]


@pytest.mark.parametrize("column", range(len(SOURCE_COLUMNS)))
def test_line_identity_differs_when_any_field_differs(column):
    other = list(ROW)
    other[column] = other[column] + "X"
    hashes = line_identity(_frame(ROW, other))
    assert hashes[0] != hashes[1]


def test_line_identity_separates_fields():
    # Moving a character across a field boundary must change the hash.
    a = pd.DataFrame({"x": ["ab"], "y": ["c"]}, dtype="str")
    b = pd.DataFrame({"x": ["a"], "y": ["bc"]}, dtype="str")
    assert line_identity(a)[0] != line_identity(b)[0]


def test_line_identity_of_empty_frame():
    out = line_identity(_frame())
    assert out.dtype == np.uint64
    assert len(out) == 0


def test_occurrences_within_one_chunk():
    tracker = DuplicateTracker()
    hashes = np.array([5, 7, 5, 9, 5, 7], dtype=np.uint64)
    assert tracker.occurrences(hashes).tolist() == [1, 1, 2, 1, 3, 2]


def test_occurrences_across_chunks():
    tracker = DuplicateTracker()
    assert tracker.occurrences(np.array([1, 2, 3], dtype=np.uint64)).tolist() == [1, 1, 1]
    assert tracker.occurrences(np.array([3, 4, 1, 3], dtype=np.uint64)).tolist() == [2, 1, 2, 3]
    assert tracker.occurrences(np.array([4, 5, 3], dtype=np.uint64)).tolist() == [2, 1, 4]
    assert tracker.occurrences(np.array([], dtype=np.uint64)).tolist() == []
    assert tracker.occurrences(np.array([2, 6], dtype=np.uint64)).tolist() == [2, 1]


def test_occurrences_many_chunks_match_a_counter():
    rng = np.random.default_rng(20101201)
    tracker = DuplicateTracker()
    counter: Counter[int] = Counter()
    history: list[np.ndarray] = []
    for i in range(40):
        size = int(rng.integers(1, 400))
        chunk = rng.integers(0, np.iinfo(np.uint64).max, size=size, dtype=np.uint64, endpoint=True)
        if history:
            # plant repeats of earlier chunks (old and recent) and within the chunk itself
            earlier = np.concatenate(history)
            picks = earlier[rng.integers(0, len(earlier), size=min(30, size))]
            chunk[: len(picks)] = picks
        chunk[-1] = chunk[0]
        if i % 7 == 0:
            chunk = np.concatenate([chunk, np.array([np.iinfo(np.uint64).max, 0], dtype=np.uint64)])
        rng.shuffle(chunk)
        expected = []
        for h in chunk.tolist():
            counter[h] += 1
            expected.append(counter[h])
        assert tracker.occurrences(chunk).tolist() == expected, f"chunk {i}"
        history.append(chunk)
    assert sum(c > 1 for c in counter.values()) > 100  # the planted repeats were exercised


def test_identity_keeps_first_hash_and_separates_repeats():
    h = np.array([0x8000000000000001, 0x8000000000000001, 0x8000000000000001, 42], dtype=np.uint64)
    occ = np.array([1, 2, 3, 1], dtype=np.int64)
    ids = DuplicateTracker.identity(h, occ)
    assert ids.dtype == np.int64
    assert ids[0] == np.array([0x8000000000000001], dtype=np.uint64).view(np.int64)[0]
    assert ids[3] == 42
    assert len({int(x) for x in ids[:3]}) == 3
    # deterministic: the same (hash, occurrence) pairs give the same identities
    assert DuplicateTracker.identity(h, occ).tolist() == ids.tolist()
    # and the input hashes are not modified
    assert h.tolist() == [0x8000000000000001] * 3 + [42]


def test_tracker_merges_stay_inside_a_bucket():
    """No sorted run holds hashes of two buckets, so a merge never copies all the lines seen."""
    rng = np.random.default_rng(7)
    tracker = DuplicateTracker()
    total = 0
    for _ in range(30):
        chunk = rng.integers(0, np.iinfo(np.uint64).max, size=5_000, dtype=np.uint64, endpoint=True)
        tracker.occurrences(chunk)
        total += len(chunk)
    runs = [run for bucket in tracker._recent._buckets for run in bucket]
    assert sum(len(r) for r in runs) == total  # every hash kept once
    assert max(len(r) for r in runs) < total / 32  # about 1/64 of the lines at most, not all of them
    for run in runs:
        assert (run[:-1] <= run[1:]).all()  # sorted
        assert len({int(h) >> 58 for h in run[[0, -1]]}) == 1


def _invoice_of(hashes: np.ndarray) -> np.ndarray:
    """A stand-in invoice per line: equal lines have equal invoices (about 20 lines an invoice)."""
    return _mix(hashes % np.uint64(997))


@pytest.mark.parametrize("window", [50, 700, 10**9], ids=["spills often", "spills", "never spills"])
def test_spilling_tracker_counts_like_a_counter(window: int) -> None:
    """Lines repeated within a chunk, from the chunk before and from long spilled chunks
    are all found, whatever the window."""
    rng = np.random.default_rng(42)
    tracker = DuplicateTracker(window=window)
    counter: Counter[int] = Counter()
    history: list[np.ndarray] = []
    for i in range(60):
        chunk = rng.integers(0, np.iinfo(np.uint64).max, size=int(rng.integers(1, 300)), dtype=np.uint64, endpoint=True)
        if history:
            old = np.concatenate(history[: max(1, len(history) - 5)])  # lines spilled long ago
            recent = history[-1]
            chunk[:10] = old[rng.integers(0, len(old), size=10)][: len(chunk[:10])]
            chunk[-5:] = recent[rng.integers(0, len(recent), size=5)][: len(chunk[-5:])]
        chunk[-1] = chunk[0]
        rng.shuffle(chunk)
        expected = []
        for h in chunk.tolist():
            counter[h] += 1
            expected.append(counter[h])
        assert tracker.occurrences(chunk, _invoice_of(chunk)).tolist() == expected, f"chunk {i}"
        history.append(chunk)
        assert tracker._recent.size <= window + len(chunk)  # the memory bound
    assert sum(c > 1 for c in counter.values()) > 200
    spilled = 0 if tracker._file is None else tracker._file.seek(0, 2) // 8
    assert spilled + tracker._recent.size == sum(1 for _ in counter)  # every distinct line kept once
    assert (window < 10**9) == bool(tracker._runs)
    tracker.close()


def test_spill_file_is_deleted_on_close(tmp_path) -> None:
    tracker = DuplicateTracker(window=10, folder=str(tmp_path))
    hashes = np.arange(1, 100, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    tracker.occurrences(hashes, _invoice_of(hashes))
    spill = tracker._file
    assert tracker._runs and spill is not None and not spill.closed
    tracker.close()
    assert spill.closed and list(tmp_path.iterdir()) == []  # an unnamed temporary file: nothing left behind


def test_invoices_that_fold_alike_are_told_apart_by_the_line() -> None:
    """The spill index keeps invoices as 32-bit folds: two invoices with the same fold only cost
    a read of the spill file; lines of the one are never taken for repeats of the other's."""
    a, b = np.uint64(0x0000000100000002), np.uint64(0x0000000200000001)  # both fold to 3
    tracker = DuplicateTracker(window=2)
    first = np.array([11, 12, 13], dtype=np.uint64)
    assert tracker.occurrences(first, np.array([a, a, a], dtype=np.uint64)).tolist() == [1, 1, 1]
    assert tracker._runs  # spilled
    other = np.array([21, 11, 22], dtype=np.uint64)  # 11 repeats a line of invoice a
    assert tracker.occurrences(other, np.array([b, a, b], dtype=np.uint64)).tolist() == [1, 2, 1]
    assert tracker.occurrences(np.array([11, 12], dtype=np.uint64), np.array([a, a], dtype=np.uint64)).tolist() == [3, 2]
    tracker.close()


def test_repeat_counts_stay_exact_in_compact_arrays() -> None:
    """Counts of repeated lines live in two sorted arrays (12 bytes a line), not a dict."""
    tracker = DuplicateTracker()
    hashes = np.array([7, 7, 7, 3, 9, 3], dtype=np.uint64)
    assert tracker.occurrences(hashes).tolist() == [1, 2, 3, 1, 1, 2]
    assert tracker.occurrences(np.array([3, 7, 5, 3], dtype=np.uint64)).tolist() == [3, 4, 1, 4]
    assert tracker._repeats.keys.tolist() == [3, 7] and tracker._repeats.counts.tolist() == [4, 4]
    assert tracker._repeats.keys.dtype == np.uint64 and tracker._repeats.counts.dtype == np.uint32


def test_line_identity_is_pandas_hash_of_the_joined_lines_missing_values_included():
    """The hash of a "str" Series of the joined lines (how identities were first made), a line
    with a missing field included: the identities of earlier warehouses stay the same."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fields = pd.DataFrame({"a": ["581587", "581587", None, "x"], "b": ["22613", None, "1", "y"]}, dtype="str")
    a, b = pa.array(fields["a"]), pa.array(fields["b"])
    joined = pc.binary_join_element_wise(a, b, pa.scalar("\x1f", a.type))
    expected = pd.util.hash_pandas_object(pd.Series(joined, dtype="str"), index=False).to_numpy(dtype=np.uint64)
    assert line_identity(fields).tolist() == expected.tolist()
    assert line_identity(fields)[1] == np.iinfo(np.uint64).max
