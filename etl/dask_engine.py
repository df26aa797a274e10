"""The Dask engine of `etl --engine dask`: partitions of a file are read and cleaned on Dask workers.

What runs where:

* **Workers** read a partition and apply every cleaning rule but the duplicate rule
  (`CleaningRules.prepare`, the very code of the pandas path). A plain CSV file is split into byte
  ranges that start at line starts; each worker parses its range with etl.ingestion's reader
  (pyarrow, every field as text, the encoding the scan chose, malformed lines kept) and numbers
  its records from 1. A compressed file, or one the scan sends to the line reader (stray quotes,
  quoted line breaks, UTF-16, mixed encodings), cannot be cut at byte offsets: the driver reads it
  in chunks with the same reader and the workers clean the chunks. Tasks are pure functions of
  the file, so a task lost with its worker is simply run again on another worker.
* **The driver** (the `etl` process) takes the results back in source order, with at most
  `window` partitions in flight (memory stays bounded whatever the file's size), shifts each
  partition's row numbers by the records before it, applies the duplicate rule (`Cleaner.finish`,
  one tracker per source: duplicates across partitions are found) and cuts the rows into exactly
  the chunks the pandas path makes. The source yields those cleaned chunks to the run
  (etl/pipeline.py), which hands them to the same transform and load stages as the pandas path's,
  inside the run's single write transaction: the ledger, dimension versions, exactly-once facts,
  aggregates and the quality gate are the pandas path's code, and a failed worker or a killed
  driver leaves the warehouse as it was.

Workers do not write to the database. Every fact needs the dimension keys and the exactly-once
filter of the run's one transaction, so a worker could only stage rows for the driver to copy
again; the loader measured that second pass at +3.2 s over a 1.9 s COPY of the real file, and on
this 2-core machine the database is one more process competing for the same cores
(docs/scaling.md).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from etl.cleaning import Cleaner, CleaningRules, Prepared, malformed_rows
from etl.ingestion import Chunk, SourceInfo, read_chunks, read_range
from etl.sources import Batch, CsvSource, SourceOptions
from utils.errors import PlatformError
from utils.memory import release_memory

if TYPE_CHECKING:
    from distributed import Client

    from config.settings import Settings
    from etl.stopwatch import Stopwatch

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".gz", ".bz2")
_OTHER_KINDS = {".zip": "a zip archive", ".xlsx": "a workbook", ".xlsm": "a workbook"}
WORKER_MODULES = ["etl.dask_engine", "etl.dask_worker"]  # imported once by the local cluster's fork server
IN_FLIGHT_PER_WORKER = 2  # partitions submitted ahead per worker thread: enough to keep it busy
_LINE_BREAKS = (b"\n", b"\r")


class EngineError(PlatformError):
    """The Dask engine cannot run as asked (a source it does not read, no cluster to reach)."""


def unsupported_source(spec: str) -> str | None:
    """Why the Dask engine cannot read `spec` (None: it can)."""
    lowered = spec.lower()
    if lowered.startswith(("http://", "https://")):
        return "an HTTP API"
    if "://" in spec:
        return "a database URL"
    for suffix, what in _OTHER_KINDS.items():
        if lowered.endswith(suffix):
            return what
    return None


def check_sources(specs: list[str]) -> None:
    """Refuse, before anything runs, a source the Dask engine does not read."""
    for spec in specs:
        what = unsupported_source(spec)
        if what:
            raise EngineError(
                f"--engine dask reads delimited text files ({' '.join(TEXT_SUFFIXES)}) and folders of them, "
                f"but {spec} is {what}; load it with --engine pandas"
            )


# -- the cluster ------------------------------------------------------------------------------


@contextmanager
def engine_for(settings: Settings, engine: str | None, scheduler: str | None, specs: list[str]) -> Iterator[DaskCluster | None]:
    """The cluster an `etl` command runs on: None for the pandas engine (EngineError for a bad combination)."""
    if (engine or settings.etl.engine) == "pandas":
        if scheduler:
            raise EngineError(
                "--scheduler works with --engine dask only (the pandas engine runs in this process); add --engine dask or leave out --scheduler"
            )
        yield None
        return
    require_dask()
    check_sources(specs)
    etl = settings.etl
    with DaskCluster(scheduler or etl.dask_scheduler, etl.dask_workers, etl.dask_connect_timeout_s) as cluster:
        yield cluster


def require_dask() -> None:
    """Dask is an optional extra (requirements-dask.txt): say how to install it when it is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise EngineError(
            f"the Dask engine needs Dask, which is not installed ({exc.name or 'dask'} is missing); "
            "install it with pip install -r requirements-dask.txt, or use --engine pandas"
        ) from None


class DaskCluster:
    """A Dask client: to the scheduler at `address`, or to a local cluster of `workers` single-threaded
    worker processes that is started here and closed with the context.

    A remote scheduler is reached at once (an unreachable one stops the command before anything is
    written). A local cluster starts in the background while this process scans
    the first file and opens its run; `client` waits for it."""

    def __init__(self, address: str | None, workers: int, connect_timeout_s: float) -> None:
        self.address = address
        self.threads = workers
        self.connect_timeout_s = connect_timeout_s
        self.local = None
        self.start_s = 0.0
        self.start_reported = False
        self._client: Client | None = None
        self._starting: Future | None = None

    def __enter__(self) -> DaskCluster:
        if self.address:
            self._start()
        else:
            self._starting = ThreadPoolExecutor(1, thread_name_prefix="rdp-dask-start").submit(self._start)
        return self

    def _start(self) -> None:
        start = time.perf_counter()
        if self.address:
            self._client = _connect(self.address, self.connect_timeout_s)
        else:
            self.local, self._client = _local_cluster(self.threads)
        try:
            self.threads = _wait_for_workers(self._client, self.address, self.connect_timeout_s)
        except BaseException:
            self._client.close()
            raise
        self.start_s = time.perf_counter() - start
        log.info("dask engine: %s (started in %.2f s)", self.description, self.start_s)

    @property
    def ready(self) -> bool:
        """Whether the cluster is up (or failed to start: `client` says why)."""
        return self._starting is None or self._starting.done()

    @property
    def client(self) -> Client:
        if self._starting is not None:
            self._starting.result()
        return self._client

    def __exit__(self, *exc: object) -> None:
        if self._starting is not None:
            with suppress(Exception):  # a start that failed was reported by `client`
                self._starting.result()
        if self._client is not None:
            self._client.close()
        if self.local is not None:
            self.local.close()
        self._client = self.local = self._starting = None

    @property
    def description(self) -> str:
        where = self.address or "local cluster"
        return f"dask ({where}, {self.threads} worker thread{'s' if self.threads != 1 else ''})"

    @property
    def window(self) -> int:
        return max(2, IN_FLIGHT_PER_WORKER * self.threads)


def _local_cluster(workers: int):
    import dask
    from distributed import Client, LocalCluster
    from distributed.utils import get_mp_context

    from etl.dask_worker import LocalWorker

    # forkserver, not fork: a worker forked from this process (which runs Dask's threads by then)
    # sometimes hung at start-up on a lock another thread held, and with it the run; and not
    # Dask's default spawn, where every worker imports distributed, pandas, pyarrow and the
    # platform on its own, seconds on a small machine. The fork server imports
    # them once, and forks each worker from its single thread.
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload([*_preloaded(), *WORKER_MODULES])
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP endpoints on a free loopback port, not :8787
            silence_logs=logging.ERROR,
            host="127.0.0.1",
        )
    client = Client(cluster)
    client.register_plugin(LocalWorker(), name="rdp-local-worker")
    return cluster, client


def _preloaded() -> list[str]:
    """The modules Dask asked the fork server to import (distributed, numpy, pandas, …)."""
    from multiprocessing import forkserver

    return list(forkserver._forkserver._preload_modules)


def _connect(address: str, timeout_s: float) -> Client:
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineError(
            f"cannot reach the Dask scheduler at {address} ({reason}); start it (dask scheduler, then dask worker {address}) "
            "or leave out --scheduler to run a local cluster"
        ) from None


def _wait_for_workers(client: Client, address: str | None, timeout_s: float) -> int:
    """Worker threads once at least one worker is there (and can import this module)."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise EngineError(
            f"the Dask scheduler at {address} has no workers after {timeout_s:g} s; start some: dask worker {address}"
        ) from None
    for where, check in (("scheduler", client.run_on_scheduler), ("worker", client.run)):
        try:  # both unpickle the platform's tasks: they need its code on their path
            check(_worker_ready)
        except (ImportError, AttributeError) as exc:
            raise EngineError(
                f"the Dask {where} at {address} cannot import the platform ({exc}); start the scheduler and the workers "
                "with the project folder on PYTHONPATH and the same versions (docs/etl.md#the-dask-engine)"
            ) from None
    return sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())


def _worker_ready() -> bool:
    return True


# -- partitions -------------------------------------------------------------------------------


@dataclass
class PartitionResult:
    """What a worker sends back: a partition after the stateless rules, its malformed lines (rows
    numbered within the partition) and how many records it held."""

    prepared: Prepared
    malformed: list[tuple[int, str, str]]
    records: int
    seconds: dict[str, float] = field(default_factory=dict)


def next_line_start(fh, pos: int) -> int:
    """The offset just after the first line break at or after `pos` (LF, CRLF or CR), or the end."""
    fh.seek(pos)
    while True:
        block = fh.read(1 << 16)
        if not block:
            return pos
        hits = [i for i in (block.find(b) for b in _LINE_BREAKS) if i >= 0]
        if hits:
            i = min(hits)
            if block[i : i + 1] == b"\r":
                following = block[i + 1 : i + 2] or fh.read(1)
                return pos + i + (2 if following == b"\n" else 1)
            return pos + i + 1
        pos += len(block)


def byte_ranges(path: Path, target_bytes: int) -> tuple[bytes, list[tuple[int, int]]]:
    """The header line and the data's byte ranges of about `target_bytes`, each starting at a line start."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header_end = next_line_start(fh, 0)
        fh.seek(0)
        header = fh.read(header_end)
        cuts = [header_end]
        while cuts[-1] + target_bytes < size:
            cut = next_line_start(fh, cuts[-1] + target_bytes)
            if cut >= size:
                break
            cuts.append(cut)
    cuts.append(size)
    return header, [(a, b) for a, b in pairwise(cuts) if b > a]


def _range_task(info: SourceInfo, header: bytes, start: int, end: int, delimiter: str, rules: CleaningRules) -> PartitionResult:
    """On a worker: read bytes [start, end) of the file and apply the stateless rules."""
    t0 = time.perf_counter()
    chunk = read_range(info, header, start, end, delimiter)
    return _prepared(chunk, rules, time.perf_counter() - t0)


def _chunk_task(chunk: Chunk, rules: CleaningRules) -> PartitionResult:
    """On a worker: apply the stateless rules to a chunk the driver read."""
    return _prepared(chunk, rules, 0.0)


def _prepared(chunk: Chunk, rules: CleaningRules, read_s: float) -> PartitionResult:
    t0 = time.perf_counter()
    prepared = rules.prepare(chunk.frame, chunk.source_rows)
    release_memory()  # the rules' temporaries (and the last result sent) back to the OS, as the driver does per chunk
    seconds = {"worker_read": read_s, "worker_clean": time.perf_counter() - t0}
    return PartitionResult(prepared, chunk.malformed, chunk.rows_read, seconds)


# -- the source -------------------------------------------------------------------------------


class DaskCsvSource:
    """A delimited text file read by the Dask engine: the pandas path's CsvSource (same scan, same
    checksum, encoding and header checks) whose rows come back cleaned from the workers."""

    def __init__(self, path: Path, settings: Settings, options: SourceOptions, cluster: DaskCluster) -> None:
        self.csv = CsvSource(path, settings, options)
        self.cluster = cluster
        self.location, self.checksum = self.csv.location, self.csv.checksum
        self.encoding, self.estimated_rows, self.header = self.csv.encoding, self.csv.estimated_rows, self.csv.header
        self.engine_name = cluster.description  # shown as the run's engine (a database source's .engine is its SQLAlchemy engine)

    @property
    def split(self) -> bool:
        """Whether the file is cut into byte ranges (else the driver reads it and workers clean)."""
        info = self.csv.info
        return info.compression is None and info.line_by_line is None

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """The raw chunks, as the pandas path reads them."""
        return self.csv.chunks(chunk_size)

    def cleaned_batches(self, cleaner: Cleaner, chunk_size: int, stopwatch: Stopwatch) -> Iterator[Batch]:
        """Cleaned batches (accepted, rejected, rows read) in source order, cut like the pandas path's chunks."""
        tasks = (
            self._range_tasks(cleaner.stateless, chunk_size) if self.split else self._chunk_tasks(cleaner.stateless, chunk_size, stopwatch)
        )
        rechunk = Rechunker(chunk_size) if self.split else None
        offset = 0  # records before the partition (a chunk the driver read is numbered already)
        for result in in_order(self.cluster, tasks, stopwatch):
            with stopwatch.timed("clean"):
                accepted, rejected, malformed = _finish(cleaner, result, offset)
            offset += result.records if self.split else 0
            if rechunk is None:
                yield accepted, _with_malformed(rejected, malformed), result.records
            else:
                yield from rechunk.add(accepted, rejected, malformed, result.prepared.source_rows)
        if rechunk is not None:
            yield from rechunk.flush()
        if not self.cluster.start_reported:  # the first run of the command: how long the cluster took to start
            stopwatch.add("cluster_start", self.cluster.start_s)
            self.cluster.start_reported = True

    def _range_tasks(self, rules: CleaningRules, chunk_size: int) -> Iterator[tuple]:
        info = self.csv.info
        header, ranges = byte_ranges(info.path, max(4096, int(chunk_size * info.bytes_per_row)))
        for start, end in ranges:
            yield _range_task, info, header, start, end, self.csv.delimiter, rules

    def _chunk_tasks(self, rules: CleaningRules, chunk_size: int, stopwatch: Stopwatch) -> Iterator[tuple]:
        chunks = read_chunks(self.csv.info, chunk_size, self.csv.delimiter)
        while True:
            with stopwatch.timed("read"):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield _chunk_task, chunk, rules


def _finish(cleaner: Cleaner, result: PartitionResult, offset: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Place a partition in its file (row numbers) and apply the duplicate rule."""
    result.prepared.shift_rows(offset)
    cleaned = cleaner.finish(result.prepared)
    malformed = [(row + offset, text, why) for row, text, why in result.malformed]
    return cleaned.accepted, cleaned.rejected, malformed_rows(malformed) if malformed else None


def _with_malformed(rejected: pd.DataFrame, malformed: pd.DataFrame | None) -> pd.DataFrame:
    return rejected if malformed is None else pd.concat([rejected, malformed], ignore_index=True)


def in_order(cluster: DaskCluster, tasks: Iterator[tuple], stopwatch: Stopwatch) -> Iterator[PartitionResult]:
    """Run `tasks` on the cluster and yield their results in order, at most `cluster.window` in flight.

    While a local cluster is still starting, this process runs the next task itself (tasks are
    pure functions), so the load starts as soon as the pandas path's would. A lost worker's task
    is run again by Dask on another worker; a task that fails (or loses its worker
    `distributed.scheduler.allowed-failures` times) fails the run, and the tasks still in flight
    are cancelled."""
    futures: deque = deque()
    tasks = iter(tasks)

    def fill() -> None:
        while cluster.ready and len(futures) < cluster.window:
            task = next(tasks, None)
            if task is None:
                return
            futures.append(cluster.client.submit(*task, pure=False))

    try:
        while True:
            fill()
            if futures:
                with stopwatch.timed("read"):
                    result = _result(futures[0])
                futures.popleft().release()
                fill()
            else:
                task = next(tasks, None)
                if task is None:
                    return
                result = task[0](*task[1:])  # the cluster is not up yet
                result.seconds = {f"driver_{step.removeprefix('worker_')}": s for step, s in result.seconds.items()}
            for step, seconds in result.seconds.items():
                stopwatch.add(step, seconds)
            yield result
    finally:
        if futures:
            cluster.client.cancel(list(futures))


def _result(future) -> PartitionResult:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        raise EngineError(
            f"Dask workers died on every try of a partition ({exc}); the run was rolled back and nothing was loaded. "
            "Check the workers' memory and logs, or lower etl.chunk_size"
        ) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise EngineError(
            f"a Dask worker cannot read the source ({exc}); every worker must see it at the same path (a shared file system)"
        ) from None
    except (CancelledError, OSError, TimeoutError) as exc:
        raise EngineError(f"the Dask cluster was lost during the run ({exc}); the run was rolled back and nothing was loaded") from None


class Rechunker:
    """Cuts cleaned partitions into the pandas path's chunks: `size` parsed rows each, with the
    malformed lines among them (etl.ingestion._parsed_chunks). Both engines then hand the loader
    the same batches, so new products and customers get the same surrogate keys and quarantined
    rows the same ids: the warehouses are identical, not merely equivalent."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held: dict[str, list[pd.DataFrame]] = {"accepted": [], "rejected": [], "malformed": []}
        self.empty: dict[str, pd.DataFrame] = {}  # each kind with no rows (its columns)
        self.rows: list[np.ndarray] = []  # source rows of the parsed rows held, ascending
        self.parsed = 0

    def add(self, accepted: pd.DataFrame, rejected: pd.DataFrame, malformed: pd.DataFrame | None, rows: np.ndarray) -> Iterator[Batch]:
        for kind, frame in (("accepted", accepted), ("rejected", rejected), ("malformed", malformed)):
            if frame is not None:
                self.empty.setdefault(kind, frame.iloc[:0])
                if len(frame):
                    self.held[kind].append(frame)
        self.rows.append(rows)
        self.parsed += len(rows)
        while self.parsed >= self.size:
            held = np.concatenate(self.rows)
            self.rows, self.parsed = [held[self.size :]], len(held) - self.size
            yield self._cut(int(held[self.size - 1]))

    def flush(self) -> Iterator[Batch]:
        if self.parsed or self.held["malformed"]:
            self.rows, self.parsed = [], 0
            yield self._cut(None)

    def _cut(self, last: int | None) -> Batch:
        """The rows up to source row `last` (all when None); the rest stay held."""
        accepted, rejected = self._take("accepted", last), self._take("rejected", last)
        malformed = self._take("malformed", last)
        rows_read = len(accepted) + len(rejected) + len(malformed)
        return accepted, _with_malformed(rejected, malformed if len(malformed) else None), rows_read

    def _take(self, kind: str, last: int | None) -> pd.DataFrame:
        """Held rows of one kind up to `last`, in order. Each part is cut on its own, so a row is
        copied once, into its chunk."""
        parts = self.held[kind]
        if last is None:
            taken, parts[:] = list(parts), []
        else:
            cuts = [int(np.searchsorted(part["source_row"].to_numpy(), last, side="right")) for part in parts]
            taken = [part.iloc[:cut] for part, cut in zip(parts, cuts, strict=True) if cut]
            parts[:] = [part.iloc[cut:] for part, cut in zip(parts, cuts, strict=True) if cut < len(part)]
        if not taken:
            return self.empty.get(kind, pd.DataFrame())
        return taken[0].reset_index(drop=True) if len(taken) == 1 else pd.concat(taken, ignore_index=True)


def open_dask_source(spec: str, settings: Settings, options: SourceOptions, cluster: DaskCluster) -> DaskCsvSource:
    """The Dask engine's reader for one file (EngineError for a kind of source it does not read)."""
    check_sources([spec])
    return DaskCsvSource(Path(spec), settings, options, cluster)
