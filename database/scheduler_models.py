"""Tables of the scheduler: job definitions and their run history.

Registered with every other table by `database.tables`, so `setup` (and the first `schedule`
command) creates them. History rows keep the job's name rather than a foreign key: removing a job keeps
what it did.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text

from database.models import METADATA, TIMESTAMP

scheduled_jobs = Table(
    "scheduled_jobs",
    METADATA,
    Column("job_id", Integer, primary_key=True, autoincrement=True, comment="job number"),
    Column("name", String(100), unique=True, comment="job name, unique", nullable=False),
    Column("kind", String(20), comment="what to run: etl, quality, alerts or docs", nullable=False),
    Column("source", Text, comment="etl jobs: absolute path of a file, a folder or a glob pattern"),
    Column(
        "run_request",
        Text,
        comment="etl jobs: the run request as JSON (etl's options: layout, --map, --sheet, --query, engine ...); NULL: etl's defaults",
    ),
    Column("archive_dir", Text, comment="folder jobs: move loaded files here (overrides scheduler.archive_dir)"),
    Column("schedule_type", String(10), comment="daily, weekly or every", nullable=False),
    Column("at_time", String(5), comment="daily/weekly: local time HH:MM of the daemon's machine"),
    Column("weekday", String(9), comment="weekly: monday ... sunday"),
    Column("interval_s", Integer, comment="every: seconds between the end of one run and the next"),
    Column("enabled", Boolean, default=True, comment="false: kept but not run by the daemon", nullable=False),
    Column("created_at", TIMESTAMP, comment="when the job was defined (UTC)", nullable=False),
    Column("updated_at", TIMESTAMP, comment="last change of the definition or of enabled (UTC)", nullable=False),
    Column("last_run_at", TIMESTAMP, comment="start of the latest run (UTC)"),
    Column("last_status", String(20), comment="status of the latest run"),
    Column("next_run_at", TIMESTAMP, comment="when the job is due next (UTC); in the past = missed"),
    comment="Scheduler job definitions (schedule daily|every|weekly); the daemon reloads them when they change",
)


job_runs = Table(
    "job_runs",
    METADATA,
    Column("job_run_id", Integer, primary_key=True, autoincrement=True, comment="job run number"),
    Column("job_name", String(100), comment="name of the job (scheduled_jobs.name)", nullable=False),
    Column("kind", String(20), comment="etl, quality, alerts or docs", nullable=False),
    Column("trigger", String(20), comment="schedule, catch_up (missed while down) or manual (schedule run)", nullable=False),
    Column("status", String(20), index=True, comment="running, success, failed, skipped or retrying", nullable=False),
    Column("attempt", Integer, default=1, comment="1 for the first try, 2+ for retries after transient failures", nullable=False),
    Column("started_at", TIMESTAMP, comment="start time (UTC)", nullable=False),
    Column("finished_at", TIMESTAMP, comment="end time (UTC)"),
    Column("etl_run_ids", Text, comment="ETL run ids (etl_runs.run_id) of this run, comma-separated"),
    Column("files_loaded", Integer, default=0, comment="source files loaded successfully by this run", nullable=False),
    Column("message", Text, comment="what happened: files, counts, or the error"),
    Column("pid", Integer, comment="process id that ran it"),
    Column("host", String(255), comment="machine that ran it"),
    Index("ix_job_runs_name_started", "job_name", "started_at"),
    comment="Scheduler history: one row per attempt of a job (retries are separate rows)",
)
