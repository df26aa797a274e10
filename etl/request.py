"""What one run is: the request that `etl`, scheduled jobs and incoming-folder jobs all build.

A `RunRequest` holds everything a run needs besides the warehouse: the source, the layout and
`--map` mappings, the reader options, the engine, the chunk size and the flags. `validate`
checks it without touching the source (so a scheduled job can be checked when it is defined,
before its file arrives) and resolves the layout; `run_request` expands a folder or glob,
opens each source and runs it, and collects per-file failures. The command line only parses
options into a request and renders the outcome.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from utils.errors import ConfigError, PlatformError, SourceError
from utils.urls import mask_url

if TYPE_CHECKING:  # a request is defined and checked without the run's modules (pandas, pyarrow, SQLAlchemy)
    from sqlalchemy import Engine

    from config.settings import Settings
    from etl.pipeline import RunSummary
    from utils.progress import RunProgress

ENGINES = ("pandas", "dask")
ENCODINGS = ("auto", "utf-8", "cp1252", "latin-1")
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".gz", ".bz2")
FILE_SUFFIXES = (*TEXT_SUFFIXES, ".zip", *WORKBOOK_SUFFIXES)  # what a folder's files are taken by

# A progress display for one source: called with its estimated rows, a context giving the progress to report to.
ProgressFactory = Callable[[int | None], AbstractContextManager["RunProgress"]]


@dataclass
class SourceOptions:
    """Reader options of a request, resolved against its layout (what a source reader needs)."""

    column_map: dict[str, str] = field(default_factory=dict)
    sheet: str | None = None
    table: str | None = None
    query: str | None = None
    token_env: str | None = None
    delimiter: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """One run as asked for: `etl`'s options, or a scheduled job's."""

    source: str
    job_name: str = "etl"
    layout: str | None = None
    mappings: tuple[str, ...] = ()
    sheet: str | None = None
    table: str | None = None
    query: str | None = None
    token_env: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    engine: str | None = None
    scheduler: str | None = None
    chunk_size: int | None = None
    dry_run: bool = False
    force: bool = False

    def to_dict(self) -> dict:
        """JSON-ready form (what a scheduled job stores)."""
        return asdict(self) | {"mappings": list(self.mappings)}

    @classmethod
    def from_dict(cls, data: dict) -> RunRequest:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"run request: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**(data | {"mappings": tuple(data.get("mappings") or ())}))

    def options(self) -> list[str]:
        """The options that differ from `etl`'s defaults, as command-line words (source and job name aside)."""
        words: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("source", "job_name") or value == f.default:
                continue
            flag = flag_of(f.name)
            if isinstance(value, bool):
                words.append(flag)
            else:
                words += [w for v in (value if f.name == "mappings" else (value,)) for w in (flag, shlex.quote(str(v)))]
        return words

    def validate(self, settings: Settings) -> tuple[Settings, SourceOptions]:
        """The settings and reader options this request runs with; PlatformError for what cannot run.

        Checks the layout, the mappings and that each option fits the kind of source, without
        opening it: a file that does not exist yet is fine."""
        settings, reader = _reader_options(settings, self)
        _check_fit(self, settings)
        return settings, reader


# The request's fields that are options of a run (`etl`'s and a scheduled job's), not its subject.
RUN_OPTIONS = tuple(f.name for f in fields(RunRequest) if f.name not in ("source", "job_name"))


def flag_of(option: str) -> str:
    """The command-line flag of a run option: --map for mappings, else the name with dashes."""
    return "--map" if option == "mappings" else "--" + option.replace("_", "-")


def source_kind(source: str) -> str:
    """'http', 'database', 'workbook', 'zip', 'text', or 'files' (a folder, or a pattern of any files)."""
    lowered = source.lower()
    if lowered.startswith(("http://", "https://")):
        return "http"
    if "://" in source:
        return "database"
    if lowered.endswith(WORKBOOK_SUFFIXES):
        return "workbook"
    if lowered.endswith(".zip"):
        return "zip"
    if lowered.endswith(TEXT_SUFFIXES) and not Path(source).is_dir():
        return "text"
    return "files"


_KIND_WORDS = {
    "http": "an HTTP API",
    "database": "a database URL",
    "workbook": "a workbook",
    "zip": "a zip archive",
    "text": "a delimited text file",
}
# option -> (source kinds it applies to, what they are in words); 'files' (a folder or glob) may hold any file
_FITS = {
    "sheet": (("workbook", "files"), "workbooks (.xlsx, .xlsm)"),
    "table": (("database",), "database URLs"),
    "query": (("database",), "database URLs"),
    "token_env": (("http",), "http(s) URLs"),
    "delimiter": (("text", "zip", "files"), "delimited text files (.csv .tsv .txt .gz .bz2, and zips of them)"),
    "encoding": (("text", "zip", "files"), "delimited text files (.csv .tsv .txt .gz .bz2, and zips of them)"),
}


def _reader_options(settings: Settings, request: RunRequest) -> tuple[Settings, SourceOptions]:
    from etl.mapping import parse_map_options

    reader = SourceOptions(sheet=request.sheet, table=request.table, query=request.query, token_env=request.token_env)
    if request.layout is not None:
        if request.layout not in settings.sources:
            known = ", ".join(settings.sources) or "none configured"
            raise ConfigError(f"unknown layout '{request.layout}'; define sources.{request.layout} in the config (known: {known})")
        spec = settings.sources[request.layout]
        reader.column_map = dict(spec.columns)
        reader.encoding, reader.delimiter = spec.encoding, spec.delimiter
        etl = replace(
            settings.etl, **{k: v for k, v in {"date_formats": spec.date_formats, "decimal": spec.decimal}.items() if v is not None}
        )
        settings = replace(settings, etl=etl)
    reader.column_map.update(parse_map_options(request.mappings))
    reader.delimiter = request.delimiter or reader.delimiter
    reader.encoding = request.encoding or reader.encoding
    return settings, reader


def _check_fit(request: RunRequest, settings: Settings) -> None:
    kind = source_kind(request.source)
    shown = mask_url(request.source)
    for name, (kinds, what) in _FITS.items():
        if getattr(request, name) is not None and kind not in kinds:
            flag = flag_of(name)
            raise SourceError(f"{flag} applies to {what}, not to {shown} ({_KIND_WORDS[kind]}); leave out {flag}")
    if request.delimiter is not None and len(request.delimiter) != 1:
        raise SourceError(f"--delimiter {request.delimiter!r}: give one character, e.g. ';' or tab")
    if request.encoding is not None and request.encoding not in ENCODINGS:
        raise SourceError(f"--encoding {request.encoding!r}: choose one of {', '.join(ENCODINGS)}")
    engine = request.engine or settings.etl.engine
    if engine not in ENGINES:
        raise SourceError(f"--engine {engine!r}: choose pandas or dask")
    if engine == "pandas" and request.scheduler:
        raise PlatformError(
            "--scheduler works with --engine dask only (the pandas engine runs in this process); add --engine dask or leave out --scheduler"
        )
    if engine == "dask":
        from etl.dask_engine import check_sources

        check_sources([request.source])
    if kind == "database":
        _check_database(request, shown)


def _check_database(request: RunRequest, shown: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from database.engine import resolve_url
    from etl.db_source import check_query

    try:
        make_url(resolve_url(request.source))
    except (PlatformError, ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise SourceError(f"{shown}: not a database URL; use e.g. postgresql://user@host/db with --table or --query") from None
    if bool(request.table) == bool(request.query):
        raise SourceError(
            f"{shown}: a database source needs exactly one of --table NAME or --query 'SELECT ...'"
            + (" (both were given)" if request.table else "")
        )
    if request.query:
        check_query(request.query)


# --- running ------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What a request did: the sources it expanded to, a summary per source run, the failures."""

    sources: list[str]
    summaries: list[RunSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextmanager
def source_runner(
    engine: Engine,
    settings: Settings,
    request: RunRequest,
    sources: list[str],
    progress_factory: ProgressFactory | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Callable[[str], RunSummary]]:
    """A function running `request` on one of `sources` at a time (with the Dask cluster, if any, shared)."""
    settings, reader = request.validate(settings)
    with _runner(engine, settings, reader, request, sources, progress_factory, on_wait) as run:
        yield run


@contextmanager
def _runner(
    engine: Engine,
    settings: Settings,
    reader: SourceOptions,
    request: RunRequest,
    sources: list[str],
    progress_factory: ProgressFactory | None,
    on_wait: Callable[[], None] | None,
) -> Iterator[Callable[[str], RunSummary]]:
    from etl.dask_engine import engine_for, open_dask_source
    from etl.pipeline import EtlOptions, run_etl
    from etl.sources import open_source
    from utils.progress import SILENT

    with engine_for(settings, request.engine, request.scheduler, sources) as cluster:

        def run(spec: str) -> RunSummary:
            opened = open_source(spec, settings, reader) if cluster is None else open_dask_source(spec, settings, reader, cluster)
            options = EtlOptions(spec, request.job_name, request.chunk_size, request.dry_run, request.force, reader)
            with progress_factory(opened.estimated_rows) if progress_factory else nullcontext(SILENT) as progress:
                return run_etl(engine, settings, options, progress, on_wait, source=opened)

        yield run


def run_request(
    engine: Engine,
    settings: Settings,
    request: RunRequest,
    progress_factory: ProgressFactory | None = None,
    on_wait: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run `request`: each file of a folder or glob as its own run, in name order.

    One source: its error is raised. Several: a source that fails is recorded in the outcome's
    failures and the others still run."""
    from etl.sources import expand_sources

    checked, reader = request.validate(settings)  # before the folder is listed: a bad option is the error to show
    outcome = RunOutcome(expand_sources(request.source))
    with _runner(engine, checked, reader, request, outcome.sources, progress_factory, on_wait) as run:
        for spec in outcome.sources:
            try:
                outcome.summaries.append(run(spec))
            except PlatformError as exc:
                if len(outcome.sources) == 1:
                    raise
                outcome.failures.append(f"{spec}: {exc}")
    return outcome
