"""Scheduler daemon soak: idle CPU, and memory over a long run with a job every few seconds.

    python bench/bench_scheduler.py                  # 60 s idle + 10 min soak on a temporary SQLite warehouse
    python bench/bench_scheduler.py --minutes 2 --idle-seconds 20
    python bench/bench_scheduler.py --database-url postgresql://postgres@127.0.0.1/bench
    python bench/bench_scheduler.py --quiet-hour --tick 0.25   # an hour of idle ticks in 3 minutes, then stop

Phase 1 (idle): the daemon holds one daily job due hours from now; its CPU time over
--idle-seconds is measured (it should sleep until the job is due, waking only to look for
changed jobs every few seconds). Phase 2 (soak): an `every --seconds N` folder job is added while
the daemon runs, and a new extract of --rows lines is dropped into the folder every N seconds;
the daemon's RSS and CPU are sampled every 5 s. At the end it is stopped with SIGTERM and the
stop latency is measured. Linux only (reads /proc). Prints one JSON object.

--quiet-hour: only the idle daemon, for an hour's worth of its ticks. The daemon wakes every
`scheduler.reload_check_s` seconds (5 by default: 720 ticks an hour) to look for changed jobs;
with --tick 0.25 those 720 ticks take 3 minutes. It holds one daily job due hours later. RSS
(/proc/PID/status VmRSS) is sampled every --sample-ticks ticks and CPU time (/proc/PID/stat
utime + stime) is read at both ends: start/end RSS, drift %, and CPU % both of the window and as
a real hour of the same ticks would be (CPU seconds / 3600).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_DAY = date(2010, 12, 1)  # daily mode: extract N holds the sales of FIRST_DAY + N days
sys.path.insert(0, str(ROOT))

from sampledata.generator import generate_sales  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """CPU seconds of the daemon and of its job processes that have ended (jobs run in children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime + stime + cutime + cstime


def children_rss_kb(pid: int) -> int:
    """Resident memory of the daemon's job process(es) running now (0 between jobs)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    total = 0
    for child in children:
        with contextlib.suppress(OSError):  # ended between the listing and the read
            total += rss_kb(int(child))
    return total


def cli(url: str, env: dict, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "main.py"), "--database-url", url, *args], env=env, check=True, capture_output=True)


def query(url: str, sql: str) -> object:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    engine = create_engine(parsed)
    with engine.connect() as conn:
        value = conn.execute(text(sql)).scalar()
    engine.dispose()
    return value


def slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var * 60 if var else 0.0


def one_shot_etl_peak_kb(url: str, env: dict, work: Path, rows: int) -> int:
    """Peak RSS of a separate `etl --dry-run` of one more extract into the final warehouse: what a
    single load needs there, without any scheduler (the daemon's RSS compares with this)."""
    probe = work / "probe.csv"
    generate_sales(probe, rows, seed=10**6)
    command = [sys.executable, str(ROOT / "main.py"), "--database-url", url, "etl", "--source", str(probe), "--dry-run"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped above
    return usage.ru_maxrss  # KB on Linux


def quiet_hour(url: str | None, tick: float, hour_ticks: int, sample_ticks: int) -> dict:
    """An hour of idle ticks of the daemon (see --quiet-hour): RSS and CPU over the window."""
    work = Path(tempfile.mkdtemp(prefix="rdp-bench-quiet-"))
    url = url or f"sqlite:///{work / 'warehouse.db'}"
    env = os.environ | {
        "RDP_SCHEDULER__PID_FILE": str(work / "scheduler.pid"),
        "RDP_LOGGING__FILE": str(work / "scheduler.log"),
        "RDP_SCHEDULER__RELOAD_CHECK_S": str(tick),
    }
    (work / "quiet").mkdir()
    later = (datetime.now() + timedelta(hours=6)).strftime("%H:%M")
    cli(url, env, "schedule", "daily", "--name", "nightly", "--time", later, "--source", str(work / "quiet"), "--replace")
    with open(work / "daemon.stderr", "wb") as err:
        daemon = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--database-url", url, "schedule", "start"], env=env, stderr=err)
    pid = daemon.pid
    try:
        time.sleep(5 + 20 * tick)  # imports, schema, the first reload and a few ticks: the daemon's settled size
        samples = [(0.0, rss_kb(pid))]
        cpu0, t0 = cpu_s(pid), time.monotonic()
        window = hour_ticks * tick
        while (elapsed := time.monotonic() - t0) < window:
            time.sleep(min(sample_ticks * tick, window - elapsed))
            samples.append((time.monotonic() - t0, rss_kb(pid)))
        cpu, wall = cpu_s(pid) - cpu0, time.monotonic() - t0
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    start, end = samples[0][1], samples[-1][1]
    return {
        "warehouse": url.split(":")[0],
        "tick_s": tick,
        "ticks": hour_ticks,
        "ticks_stand_for_s": round(hour_ticks * 5.0),
        "window_s": round(wall, 1),
        "rss_mb_start": round(start / 1024, 1),
        "rss_mb_end": round(end / 1024, 1),
        "rss_mb_max": round(max(r for _, r in samples) / 1024, 1),
        "rss_drift_percent": round(100 * (end - start) / start, 2),
        "rss_slope_kb_per_min_of_window": round(slope_kb_per_min(samples), 1),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_tick": round(1000 * cpu / hour_ticks, 3),
        "cpu_percent_of_window": round(100 * cpu / wall, 2),
        "cpu_percent_of_a_real_hour": round(100 * cpu / (hour_ticks * 5.0), 4),
        "sigterm_exit_code": code,
        "work_dir": str(work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    parser.add_argument("--interval", type=int, default=3, help="seconds between job runs and between dropped files")
    parser.add_argument("--rows", type=int, default=2000, help="lines per dropped extract")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="length of the idle CPU measurement")
    parser.add_argument("--database-url", help="warehouse (default: a temporary SQLite file)")
    parser.add_argument(
        "--mode",
        choices=["daily", "new", "copies"],
        default="daily",
        help="daily: every dropped file is the next day's extract, as a shop's nightly export would be; "
        "new: every dropped file is a new extract spread over a whole year (each load touches most dates the "
        "warehouse holds: the worst case for a growing warehouse); "
        "copies: every dropped file is a renamed copy of one loaded extract (skipped by checksum, archived): "
        "the scheduler's own work only, constant per run",
    )
    parser.add_argument("--quiet-hour", action="store_true", help="only an hour of the idle daemon's ticks (see above)")
    parser.add_argument("--tick", type=float, default=0.25, help="--quiet-hour: scheduler.reload_check_s of the daemon")
    parser.add_argument("--ticks", type=int, default=720, help="--quiet-hour: ticks to run (720 = an hour at the default 5 s)")
    parser.add_argument("--sample-ticks", type=int, default=20, help="--quiet-hour: ticks between RSS samples")
    args = parser.parse_args()
    if args.quiet_hour:
        print(json.dumps(quiet_hour(args.database_url, args.tick, args.ticks, args.sample_ticks), indent=2))
        return

    work = Path(tempfile.mkdtemp(prefix="rdp-bench-scheduler-"))
    url = args.database_url or f"sqlite:///{work / 'warehouse.db'}"
    inbox = work / "in"
    inbox.mkdir()
    env = os.environ | {
        "RDP_SCHEDULER__PID_FILE": str(work / "scheduler.pid"),
        "RDP_LOGGING__FILE": str(work / "scheduler.log"),
        "RDP_SCHEDULER__SETTLE_SECONDS": "1",
    }
    if args.mode == "copies":
        env["RDP_SCHEDULER__ARCHIVE_DIR"] = str(work / "archive")
        generate_sales(work / "original.csv", args.rows, seed=1)
    later = (datetime.now() + timedelta(hours=6)).strftime("%H:%M")
    (work / "quiet").mkdir()
    cli(url, env, "schedule", "daily", "--name", "nightly", "--time", later, "--source", str(work / "quiet"), "--replace")

    with open(work / "daemon.stderr", "wb") as err:
        daemon = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--database-url", url, "schedule", "start"], env=env, stderr=err)
    time.sleep(5)  # imports, schema
    pid = daemon.pid

    cpu0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(args.idle_seconds)
    idle_cpu = cpu_s(pid) - cpu0
    idle_wall = time.monotonic() - t0
    idle_rss = rss_kb(pid)

    cli(url, env, "schedule", "every", "--name", "inbox", "--seconds", str(args.interval), "--source", str(inbox))
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    soak_cpu0 = cpu_s(pid)
    next_drop, next_sample, seq = start, start, 0
    job_peak_kb = 0
    end = start + args.minutes * 60
    while (now := time.monotonic()) < end:
        if now >= next_drop:
            seq += 1
            if args.mode == "copies":
                shutil.copyfile(work / "original.csv", work / "staging.csv")
            elif args.mode == "daily":
                generate_sales(work / "staging.csv", args.rows, seed=seq, start=FIRST_DAY + timedelta(days=seq), days=1)
            else:
                generate_sales(work / "staging.csv", args.rows, seed=seq)
            os.replace(work / "staging.csv", inbox / f"sales_{seq:05d}.csv")  # appears complete, as a mover would
            next_drop += args.interval
        if now >= next_sample:
            samples.append((now - start, rss_kb(pid)))
            next_sample += 5
        job_peak_kb = max(job_peak_kb, children_rss_kb(pid))
        time.sleep(max(0.0, min(next_drop, next_sample, time.monotonic() + 0.5) - time.monotonic()))
    soak_cpu = cpu_s(pid) - soak_cpu0
    settle_deadline = time.monotonic() + 60  # let the last files load

    def done() -> bool:
        if args.mode == "copies":
            return len(list((work / "archive").glob("*"))) >= seq
        return query(url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'success'") >= seq

    while not done() and time.monotonic() < settle_deadline:
        time.sleep(1)

    stop_start = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=120)
    stop_s = time.monotonic() - stop_start

    baseline_kb = one_shot_etl_peak_kb(url, env, work, args.rows)
    warm = [s for s in samples if s[0] >= 120] or samples
    by_minute = [round(r / 1024, 1) for t, r in samples if int(t) % 60 < 5]
    result = {
        "warehouse": url.split(":")[0],
        "mode": args.mode,
        "idle": {"seconds": round(idle_wall, 1), "cpu_s": round(idle_cpu, 3), "cpu_percent": round(100 * idle_cpu / idle_wall, 3)},
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "soak": {
            "minutes": args.minutes,
            "interval_s": args.interval,
            "files_dropped": seq,
            "files_loaded": query(url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'success'"),
            "files_archived": len(list((work / "archive").glob("*"))) if args.mode == "copies" else None,
            "job_runs": query(url, "SELECT COUNT(*) FROM job_runs"),
            "failed_job_runs": query(url, "SELECT COUNT(*) FROM job_runs WHERE status = 'failed'"),
            "facts": query(url, "SELECT COUNT(*) FROM fact_sales"),
            "cpu_percent": round(100 * soak_cpu / (args.minutes * 60), 1),
            "rss_mb_by_minute": by_minute,
            "rss_mb_after_2_min": round(warm[0][1] / 1024, 1),
            "rss_mb_end": round(samples[-1][1] / 1024, 1),
            "rss_mb_max": round(max(r for _, r in samples) / 1024, 1),
            "rss_slope_after_2_min_kb_per_min": round(slope_kb_per_min(warm), 1),
            "etl_s_first_last": [
                query(url, "SELECT duration_s FROM etl_runs WHERE status = 'success' ORDER BY run_id LIMIT 1"),
                query(url, "SELECT duration_s FROM etl_runs WHERE status = 'success' ORDER BY run_id DESC LIMIT 1"),
            ],
            "job_process_rss_mb_max": round(job_peak_kb / 1024, 1),
            "one_shot_etl_peak_rss_mb_on_final_warehouse": round(baseline_kb / 1024, 1),
        },
        "sigterm": {"exit_code": code, "stop_seconds": round(stop_s, 2)},
        "work_dir": str(work),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
