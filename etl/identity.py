"""Line identity: the key that makes loading exactly-once.

A line's identity is a 64-bit SipHash of its eight canonical fields, mixed with how many times
the same line occurred before it in the same source (the first occurrence is the sale, a
repeat is a quarantined duplicate with its own identity). Loading the same lines again, from
the same file or from an overlapping extract, yields the same identities.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_SEP = "\x1f"
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_NULL_HASH = np.iinfo(np.uint64).max


def line_identity(fields: pd.DataFrame) -> np.ndarray:
    """uint64 hash of each row's fields (joined with a unit separator)."""
    if len(fields) == 0:
        return np.empty(0, dtype=np.uint64)
    arrays = [pa.array(fields[c].astype("str")) for c in fields.columns]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(_SEP, arrays[0].type))
    # The hash pandas.util.hash_pandas_object gives a "str" Series of these lines, without its
    # dictionary encoding (lines are nearly all distinct: it found almost nothing to share).
    hashes = pd.util.hash_array(joined.fill_null("").to_numpy(zero_copy_only=False), categorize=False)
    if joined.null_count:
        hashes[joined.is_null().to_numpy(zero_copy_only=False)] = _NULL_HASH  # as pandas hashes a missing value
    return hashes


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads (hash + occurrence) over all 64 bits."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z & _MASK


class HashSet:
    """A set of unsigned hashes (uint64 by default, or uint32) in numpy arrays.

    The hashes are split into 64 buckets by their top bits and each bucket keeps sorted runs
    merged like a binary counter (amortised O(n log n)); merging inside a bucket holds at most
    two copies of that bucket, so a merge never needs memory in proportion to the whole set.
    """

    _BUCKETS = 64

    def __init__(self, dtype: type = np.uint64) -> None:
        kind = np.dtype(dtype)
        self._shift = kind.type(8 * kind.itemsize - 6)  # 64 buckets by the top 6 bits
        self._buckets: list[list[np.ndarray]] = [[] for _ in range(self._BUCKETS)]
        self.size = 0

    def _split(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of `hashes` ordered by bucket, and where each bucket starts among them."""
        bucket = (hashes >> self._shift).astype(np.intp)
        order = np.argsort(bucket, kind="stable")
        return order, np.searchsorted(bucket[order], np.arange(self._BUCKETS + 1))

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        if not self.size:
            return found
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

    def add(self, new: np.ndarray) -> None:
        """Add hashes not in the set yet (the caller checks; a repeat would only waste space)."""
        order, starts = self._split(new)
        for b, runs in enumerate(self._buckets):
            if starts[b] == starts[b + 1]:
                continue
            run = np.sort(new[order[starts[b] : starts[b + 1]]])
            while runs and len(runs[-1]) <= len(run):
                run = np.concatenate([runs.pop(), run])
                run.sort(kind="stable")
            runs.append(run)
        self.size += len(new)


def _fold(invoices: np.ndarray) -> np.ndarray:
    """A 32-bit form of 64-bit invoice hashes. Two invoices that fold alike only cost a needless
    read of the spill file (the line hash decides), and the spill index takes half the memory."""
    return (invoices ^ (invoices >> np.uint64(32))).astype(np.uint32)


@dataclass
class _SpillRun:
    """Line hashes of one spill, grouped by (folded) invoice in the spill file: the lines of
    invoices[i] are at base + 8 * starts[i] up to base + 8 * starts[i + 1]."""

    invoices: np.ndarray  # uint32, sorted, unique
    starts: np.ndarray  # uint32, len(invoices) + 1 (a spill holds fewer than 2**32 lines)
    base: int


class _RepeatCounts:
    """How often each line seen more than once has occurred so far: sorted uint64 hashes and
    uint32 counts, 12 bytes a line, where a dict of Python ints takes several times that."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.counts = np.empty(0, dtype=np.uint32)

    def next(self, repeats: np.ndarray) -> np.ndarray:
        """Occurrence numbers of `repeats` (hashes seen before, in source order); updates the counts."""
        order = np.argsort(repeats, kind="stable")
        ordered = repeats[order]
        unique, first, size = np.unique(ordered, return_index=True, return_counts=True)
        pos = np.searchsorted(self.keys, unique)
        known = pos < len(self.keys)
        known[known] = self.keys[pos[known]] == unique[known]
        base = np.ones(len(unique), dtype=np.int64)  # a line not counted yet has occurred once
        base[known] = self.counts[pos[known]]
        rank = np.arange(len(ordered)) - np.repeat(first, size)
        occ = np.empty(len(repeats), dtype=np.int64)
        occ[order] = np.repeat(base, size) + rank + 1
        self.counts[pos[known]] = base[known] + size[known]
        new = ~known
        self.keys = np.insert(self.keys, pos[new], unique[new])
        self.counts = np.insert(self.counts, pos[new], (base[new] + size[new]).astype(np.uint32))
        return occ


class DuplicateTracker:
    """Counts occurrences of each line hash across the chunks of one source.

    Without invoices, every hash seen stays in memory (8 bytes a line). With the invoice of
    each line (`occurrences(hashes, invoices)`), memory is bounded: the line hashes of the last
    `window` first occurrences stay in memory, older ones are spilled to a temporary file
    grouped by invoice. Equal lines have equal invoice numbers, so a line is looked up on disk
    only when its invoice has spilled lines: in an extract in time order, almost never; in
    extracts that repeat earlier ones, one read per repeated invoice. What still grows: 12
    bytes per spilled invoice (its folded hash in a set and in the spill index) and 12 bytes
    per line seen more than once (`_RepeatCounts`). Any 64-bit key that equal items share can
    play the invoice's part (the aggregates group by date).
    """

    def __init__(self, window: int = 250_000, folder: str | None = None) -> None:
        self.window = window
        self._folder = folder
        self._recent = HashSet()
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (invoices, hashes) of the window
        self._spilled_invoices = HashSet(np.uint32)
        self._runs: list[_SpillRun] = []
        self._file: BinaryIO | None = None
        self._repeats = _RepeatCounts()

    def occurrences(self, hashes: np.ndarray, invoices: np.ndarray | None = None) -> np.ndarray:
        """1 for a first occurrence, 2 for the first repeat, and so on (updates the state)."""
        occ = np.ones(len(hashes), dtype=np.int64)
        invoices = None if invoices is None else _fold(invoices)
        repeat = pd.Series(hashes).duplicated().to_numpy() | self._recent.contains(hashes)
        if self._runs and invoices is not None:
            maybe = ~repeat & self._spilled_invoices.contains(invoices)
            if maybe.any():
                repeat[maybe] = self._on_disk(hashes[maybe], invoices[maybe])
        if repeat.any():
            occ[repeat] = self._repeats.next(hashes[repeat])
        new = ~repeat
        if new.any():
            self._recent.add(hashes[new])
            if invoices is not None:
                self._pairs.append((invoices[new], hashes[new]))
                if self._recent.size > self.window:
                    self._spill()
        return occ

    def _spill(self) -> None:
        """Move the window's hashes to the spill file, grouped by invoice."""
        invoices = np.concatenate([i for i, _ in self._pairs])
        hashes = np.concatenate([h for _, h in self._pairs])
        self._pairs, self._recent = [], HashSet()
        order = np.lexsort((hashes, invoices))
        invoices, hashes = invoices[order], hashes[order]
        unique, first = np.unique(invoices, return_index=True)
        if self._file is None:
            # lives as long as the tracker (one source); deleted by close() or when collected
            self._file = tempfile.TemporaryFile(prefix="rdp-duplicates-", dir=self._folder)  # noqa: SIM115
        base = self._file.seek(0, os.SEEK_END)
        self._file.write(hashes.tobytes())
        self._file.flush()  # read back with os.pread, below the file object's buffer
        self._runs.append(_SpillRun(unique, np.append(first, len(hashes)).astype(np.uint32), base))
        self._spilled_invoices.add(unique[~self._spilled_invoices.contains(unique)])

    def _on_disk(self, hashes: np.ndarray, invoices: np.ndarray) -> np.ndarray:
        """Which `hashes` are in the spill file (their invoices have spilled lines): one read
        per (spill, invoice) asked."""
        found = np.zeros(len(hashes), dtype=bool)
        fd = self._file.fileno()  # there are runs, so there is a file
        for run in self._runs:
            pos = np.searchsorted(run.invoices, invoices)
            asked = np.flatnonzero(pos < len(run.invoices))
            asked = asked[run.invoices[pos[asked]] == invoices[asked]]
            if not len(asked):
                continue
            asked = asked[np.argsort(pos[asked], kind="stable")]
            groups, first = np.unique(pos[asked], return_index=True)
            for p, lines in zip(groups.tolist(), np.split(asked, first[1:]), strict=True):
                lo, hi = int(run.starts[p]), int(run.starts[p + 1])
                block = np.frombuffer(os.pread(fd, 8 * (hi - lo), run.base + 8 * lo), dtype=np.uint64)
                found[lines] |= np.isin(hashes[lines], block)
        return found

    def close(self) -> None:
        """Delete the spill file (also done when the tracker is garbage-collected)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    @staticmethod
    def identity(hashes: np.ndarray, occurrence: np.ndarray) -> np.ndarray:
        """Signed 64-bit line identities (first occurrences keep their hash)."""
        ids = hashes.copy()
        repeat = occurrence > 1
        if repeat.any():
            ids[repeat] = _mix(hashes[repeat] ^ _mix(occurrence[repeat].astype(np.uint64)))
        return ids.view(np.int64)
