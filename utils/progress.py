"""Progress of a long run on a terminal: rows while reading, then the name of each later phase.

The run reports through a small protocol (`RunProgress`): called with the rows read so far, and
`phase(name)` when a step after the reading starts (finishing the load, the quality gate, the
commit, planner statistics, alerts). The bar never shows more rows than its total: a source's row
count is an estimate, so the total follows the rows when they pass it and becomes the exact count
when the reading ends. Log records and anything written to standard error print above the bar:
the bar draws on the console of the platform's log handler.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console


class RunProgress(Protocol):
    def __call__(self, rows: int) -> None: ...

    def phase(self, name: str) -> None: ...


class _Silent:
    """Progress nobody watches (not a terminal, a scheduled job, a test)."""

    def __call__(self, rows: int) -> None:
        pass

    def phase(self, name: str) -> None:
        pass


SILENT = _Silent()


class ProgressBar:
    """`with ProgressBar(estimated_rows) as progress: run(..., progress)`; a no-op when standard
    error is not a terminal (unless a console is given, as tests do)."""

    def __init__(self, total: int | None, label: str = "loading", console: Console | None = None) -> None:
        self.total = total
        self.label = label
        self.rows = 0
        self._console = console
        self._bar = None
        self._task = None

    def __enter__(self) -> RunProgress:
        console = self._console or _log_console()
        if console is None or not console.is_terminal:
            return SILENT
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task(self.label, total=self.total, count=self._count(), rate="")
        self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, rows: int) -> None:
        self.rows = rows
        if self.total is not None and rows > self.total:
            self.total = rows  # the estimate was low: the bar stays full rather than overrun
        elapsed = self._bar.tasks[0].elapsed or 0
        rate = f"{rows / elapsed:,.0f} rows/s" if elapsed else ""
        self._bar.update(self._task, completed=rows, total=self.total, count=self._count(), rate=rate)

    def phase(self, name: str) -> None:
        """The reading is over (the total becomes the rows read) and `name` runs now."""
        self.total = self.rows
        self._bar.update(self._task, description=name, completed=self.rows, total=self.total, count=self._count(), rate="")
        self._bar.refresh()  # show it now: a phase can take seconds

    def _count(self) -> str:
        total = "?" if self.total is None else f"{self.total:,}"
        return f"{self.rows:,}/{total} rows"


def _log_console() -> Console | None:
    """The console of the platform's rich log handler (so log lines print above the bar), else a
    new one on standard error; None when standard error is not a terminal."""
    for handler in logging.getLogger().handlers:
        console = getattr(handler, "console", None)
        if getattr(handler, "_rdp", False) and console is not None and console.stderr:
            return console
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    return Console(stderr=True)
