"""Line identity: the key that makes loading exactly-once.

A line's identity is a 64-bit SipHash of its eight canonical fields, mixed with how many times
the same line occurred before it in the same source (the first occurrence is the sale, a
repeat is a quarantined duplicate with its own identity). Loading the same lines again, from
the same file or from an overlapping extract, yields the same identities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_SEP = "\x1f"
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def line_identity(fields: pd.DataFrame) -> np.ndarray:
    """uint64 hash of each row's fields (joined with a unit separator)."""
    if len(fields) == 0:
        return np.empty(0, dtype=np.uint64)
    arrays = [pa.array(fields[c].astype("str")) for c in fields.columns]
    joined = pd.Series(pc.binary_join_element_wise(*arrays, pa.scalar(_SEP, arrays[0].type)), dtype="str")
    return pd.util.hash_pandas_object(joined, index=False).to_numpy(dtype=np.uint64)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads (hash + occurrence) over all 64 bits."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z & _MASK


class DuplicateTracker:
    """Counts occurrences of each line hash across the chunks of one source.

    Memory: every hash seen (8 bytes a line), plus a small dict for hashes seen more than once.
    The hashes are split into 64 buckets by their top bits and each bucket keeps sorted runs
    merged like a binary counter (amortised O(n log n)); merging inside a bucket holds at most
    two copies of that bucket, so a merge never needs memory in proportion to all lines seen.
    """

    _SHIFT = np.uint64(58)  # 64 buckets by the top 6 bits
    _BUCKETS = 64

    def __init__(self) -> None:
        self._buckets: list[list[np.ndarray]] = [[] for _ in range(self._BUCKETS)]
        self._repeats: dict[int, int] = {}

    def _split(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of `hashes` ordered by bucket, and where each bucket starts among them."""
        bucket = (hashes >> self._SHIFT).astype(np.intp)
        order = np.argsort(bucket, kind="stable")
        return order, np.searchsorted(bucket[order], np.arange(self._BUCKETS + 1))

    def _seen_before(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        order, starts = self._split(hashes)
        for b, runs in enumerate(self._buckets):
            idx = order[starts[b] : starts[b + 1]]
            if not runs or not len(idx):
                continue
            part, hit = hashes[idx], np.zeros(len(idx), dtype=bool)
            for run in runs:
                pos = np.minimum(np.searchsorted(run, part), len(run) - 1)
                hit |= run[pos] == part
            found[idx] = hit
        return found

    def _remember(self, new: np.ndarray) -> None:
        order, starts = self._split(new)
        for b, runs in enumerate(self._buckets):
            if starts[b] == starts[b + 1]:
                continue
            run = np.sort(new[order[starts[b] : starts[b + 1]]])
            while runs and len(runs[-1]) <= len(run):
                run = np.concatenate([runs.pop(), run])
                run.sort(kind="stable")
            runs.append(run)

    def occurrences(self, hashes: np.ndarray) -> np.ndarray:
        """1 for a first occurrence, 2 for the first repeat, and so on (updates the state)."""
        occ = np.ones(len(hashes), dtype=np.int64)
        repeat = pd.Series(hashes).duplicated().to_numpy() | self._seen_before(hashes)
        for i in np.flatnonzero(repeat).tolist():
            h = int(hashes[i])
            count = self._repeats.get(h, 1) + 1
            self._repeats[h] = count
            occ[i] = count
        if (~repeat).any():
            self._remember(hashes[~repeat])
        return occ

    @staticmethod
    def identity(hashes: np.ndarray, occurrence: np.ndarray) -> np.ndarray:
        """Signed 64-bit line identities (first occurrences keep their hash)."""
        ids = hashes.copy()
        repeat = occurrence > 1
        if repeat.any():
            ids[repeat] = _mix(hashes[repeat] ^ _mix(occurrence[repeat].astype(np.uint64)))
        return ids.view(np.int64)
