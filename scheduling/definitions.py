"""What a job is, without the machinery that stores and runs it: the kinds, the schedule words,
the definition and the validation of a job's options. No SQLAlchemy and no `schedule` here, so
the command line can build its options (and help screens) from this module cheaply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from etl.request import RunRequest

KINDS = ("etl", "quality", "alerts", "docs")
RUN_STATUSES = ("running", "success", "failed", "skipped", "retrying")  # of a job run (job_runs.status)
SCHEDULE_TYPES = ("daily", "weekly", "every")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class JobDef:
    """What a job runs and when: one row of `scheduled_jobs` without its run bookkeeping."""

    name: str
    kind: str
    schedule_type: str
    source: str | None = None
    run_request: str | None = None  # etl jobs: RunRequest.to_dict() as JSON; None (jobs defined before it): etl's defaults
    archive_dir: str | None = None
    at_time: str | None = None
    weekday: str | None = None
    interval_s: int | None = None
    enabled: bool = True

    def describe(self) -> str:
        """The schedule in words: 'daily at 02:00', 'every 30 s', 'weekly on monday at 06:00'."""
        if self.schedule_type == "every":
            n = self.interval_s or 0
            return f"every {n // 60} min" if n % 60 == 0 else f"every {n} s"
        if self.schedule_type == "weekly":
            return f"weekly on {self.weekday} at {self.at_time}"
        return f"daily at {self.at_time}"

    def request(self) -> RunRequest:
        """What an etl job runs: its stored request, or (a job defined before requests were stored) its source with etl's defaults."""
        if self.run_request:
            return RunRequest.from_dict(json.loads(self.run_request))
        return RunRequest(source=self.source or "", job_name=self.name)

    def what(self) -> str:
        """What the job runs, in words."""
        if self.kind != "etl":
            return self.kind
        return " ".join(["etl", self.source or "", *self.request().options()])


def stored_request(request: RunRequest) -> str:
    """A request as the job table keeps it."""
    return json.dumps(request.to_dict(), sort_keys=True)


# --- validation (ValueError with a message the command shows as a usage error) -------------


def parse_time(value: str) -> str:
    """'2:00' or '02:00' -> '02:00'; anything else is a ValueError."""
    match = _TIME.match(value.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"{value!r} is not a time of day; use HH:MM on the 24-hour clock, e.g. 02:00 or 23:30")
    return f"{int(match[1]):02d}:{match[2]}"


def parse_day(value: str) -> str:
    """'mon', 'Monday' -> 'monday'; anything else is a ValueError."""
    key = value.strip().lower()
    matches = [d for d in WEEKDAYS if len(key) >= 3 and d.startswith(key)]
    if len(matches) != 1:
        raise ValueError(f"{value!r} is not a day of the week; use mon, tue, wed, thu, fri, sat or sun")
    return matches[0]


def check_name(value: str) -> str:
    """A job name: letters, digits, '_', '.', '-', starting with a letter or digit, at most 100."""
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid job name; use letters, digits, '_', '.' or '-' (at most 100, no spaces)")
    return value


def is_glob(source: str) -> bool:
    return any(c in _GLOB_CHARS for c in source)


def absolute_source(source: str, base: Path | None = None) -> str:
    """The source as an absolute path or pattern (the daemon may run in another folder); a URL as it is."""
    if "://" in source:
        return source
    path = Path(source).expanduser()
    return str(path if path.is_absolute() else (base or Path.cwd()) / path)
