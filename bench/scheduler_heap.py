"""Does the idle scheduler daemon keep Python objects it should not? One daemon's idle tick
(run what is due, persist next runs, reload the job definitions) repeated in process, with
tracemalloc comparing the heap after a warm-up with the heap after N more ticks.

    python -m bench.scheduler_heap [--ticks 2000]

Prints the five largest growths by allocation site; flat means the RSS drift that
`bench/bench_scheduler.py --quiet-hour` shows is not a leak of Python objects.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000, help="ticks compared after a warm-up of 300")
    args = parser.parse_args()
    from config.settings import load_settings
    from database.engine import make_engine
    from database.schema import setup_schema
    from scheduling import jobs
    from scheduling.daemon import Daemon
    from scheduling.definitions import JobDef

    with tempfile.TemporaryDirectory(prefix="rdp-heap-") as tmp:
        settings = load_settings(overrides={"database": {"url": f"sqlite:///{tmp}/warehouse.db"}})
        engine = make_engine(settings.database)
        setup_schema(engine)
        jobs.add_job(engine, JobDef("later", "quality", "daily", at_time="05:00"))
        daemon = Daemon(engine, settings, Path(tmp) / "scheduler.pid")
        daemon.reload()

        def tick() -> None:
            daemon.timetable.run_pending()
            daemon._persist_next_runs()
            daemon.reload()

        for _ in range(300):
            tick()
        gc.collect()
        tracemalloc.start(25)
        before = tracemalloc.take_snapshot()
        for _ in range(args.ticks):
            tick()
        gc.collect()
        after = tracemalloc.take_snapshot()
        growth = [s for s in after.compare_to(before, "lineno") if "tracemalloc" not in str(s.traceback)]
        total = sum(s.size_diff for s in growth)
        print(f"{args.ticks} idle ticks: Python heap {total / 1024:+.1f} KiB ({total / args.ticks:+.1f} bytes a tick)")
        for stat in growth[:5]:
            print(f"  {stat.size_diff / 1024:+8.1f} KiB  {stat.traceback}")
        engine.dispose()


if __name__ == "__main__":
    main()
