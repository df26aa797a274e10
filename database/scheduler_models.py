"""Tables of the scheduler: job definitions and their run history.

Registered with every other table by `database.tables`, so `setup` (and the first `schedule`
command) creates them. History rows keep the job's name rather than a foreign key: removing a job keeps
what it did.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from database.models import TIMESTAMP, Base


class ScheduledJob(Base):
    __tablename__ = "scheduled_jobs"
    __table_args__ = {"comment": "Scheduler job definitions (schedule daily|every|weekly); the daemon reloads them when they change"}

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, comment="job number")
    name: Mapped[str] = mapped_column(String(100), unique=True, comment="job name, unique")
    kind: Mapped[str] = mapped_column(String(20), comment="what to run: etl, quality, alerts or docs")
    source: Mapped[str | None] = mapped_column(Text, comment="etl jobs: absolute path of a file, a folder or a glob pattern")
    run_request: Mapped[str | None] = mapped_column(
        Text, comment="etl jobs: the run request as JSON (etl's options: layout, --map, --sheet, --query, engine ...); NULL: etl's defaults"
    )
    archive_dir: Mapped[str | None] = mapped_column(Text, comment="folder jobs: move loaded files here (overrides scheduler.archive_dir)")
    schedule_type: Mapped[str] = mapped_column(String(10), comment="daily, weekly or every")
    at_time: Mapped[str | None] = mapped_column(String(5), comment="daily/weekly: local time HH:MM of the daemon's machine")
    weekday: Mapped[str | None] = mapped_column(String(9), comment="weekly: monday ... sunday")
    interval_s: Mapped[int | None] = mapped_column(Integer, comment="every: seconds between the end of one run and the next")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, comment="false: kept but not run by the daemon")
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="when the job was defined (UTC)")
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="last change of the definition or of enabled (UTC)")
    last_run_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="start of the latest run (UTC)")
    last_status: Mapped[str | None] = mapped_column(String(20), comment="status of the latest run")
    next_run_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="when the job is due next (UTC); in the past = missed")


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        Index("ix_job_runs_name_started", "job_name", "started_at"),
        {"comment": "Scheduler history: one row per attempt of a job (retries are separate rows)"},
    )

    job_run_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, comment="job run number")
    job_name: Mapped[str] = mapped_column(String(100), comment="name of the job (scheduled_jobs.name)")
    kind: Mapped[str] = mapped_column(String(20), comment="etl, quality, alerts or docs")
    trigger: Mapped[str] = mapped_column(String(20), comment="schedule, catch_up (missed while down) or manual (schedule run)")
    status: Mapped[str] = mapped_column(String(20), index=True, comment="running, success, failed, skipped or retrying")
    attempt: Mapped[int] = mapped_column(Integer, default=1, comment="1 for the first try, 2+ for retries after transient failures")
    started_at: Mapped[datetime] = mapped_column(TIMESTAMP, comment="start time (UTC)")
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, comment="end time (UTC)")
    etl_run_ids: Mapped[str | None] = mapped_column(Text, comment="ETL run ids (etl_runs.run_id) of this run, comma-separated")
    files_loaded: Mapped[int] = mapped_column(Integer, default=0, comment="source files loaded successfully by this run")
    message: Mapped[str | None] = mapped_column(Text, comment="what happened: files, counts, or the error")
    pid: Mapped[int | None] = mapped_column(Integer, comment="process id that ran it")
    host: Mapped[str | None] = mapped_column(String(255), comment="machine that ran it")
