"""The run's stopwatch: wall time per stage, summed over chunks (`timings` of --format json and
of the benchmarks). Each stage (read, clean, transform, load) adds its own steps to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Seconds per step of one run, rounded to 0.1 ms."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of the block to `step`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(step, time.perf_counter() - start)

    def add(self, step: str, seconds: float) -> None:
        """Add `seconds` measured elsewhere (the writer thread, a Dask worker) to `step`."""
        self.timings[step] = round(self.timings.get(step, 0.0) + seconds, 4)
