"""Scaling benchmark of the two ETL engines: `python -m bench.bench_scaling --help`.

For each size (1x = the real file, N x = a generated extract of N times its 541,909 rows with the
real file's profile, seed 42) the same input is loaded by `etl --engine pandas` and by `etl
--engine dask` (a local cluster of --workers single-threaded worker processes that the run starts
and closes), each into a fresh PostgreSQL warehouse: the schema `scale_<engine>` of the scratch
database `rdp_scale`, dropped and created again before every load. The two loads of a size run
back to back, so a busier moment of the shared machine hits both; the ratio dask / pandas comes
from the same size of the same run.

Every load is the real CLI in a child process. Wall time is the whole child (start-up, cluster
start and close included); "in-process" is the run's own `duration_s`. Memory:

* `driver peak`: the child's maximum resident set (`/usr/bin/time -f %M`);
* `tree peak`: the largest sum over the child and all its descendants (the Dask engine's fork
  server and workers) of the proportional set size (PSS: pages shared between processes are
  split among them, so forked workers are not counted twice), polled every 0.2 s.

The load average of the machine is recorded before and after each load. Results are printed and
written to bench/results/scaling-YYYYmmdd-HHMMSS.json (git-ignored) after every size. The quality
gate runs as always but only warns (quality_rules.on_failure: warn): from about 20x the generated
invoice numbers pass 999999, which the invoice-number validity check refuses. Generated files go to a
temporary folder (--tmp) and are deleted after their size is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REAL = REPO_ROOT.parent / "shared" / "datasets" / "online_retail.csv"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
REAL_ROWS = 541_909
SEED = 42
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
DATABASE = "rdp_scale"
TIME_BIN = "/usr/bin/time"


def psql(sql: str, database: str = DATABASE) -> str:
    proc = subprocess.run(["psql", "-X", *PG, "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"psql failed: {sql}\n{proc.stderr}")
    return proc.stdout.strip()


def fresh_schema(engine: str) -> str:
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", "postgres") != "1":
        psql(f"CREATE DATABASE {DATABASE}", "postgres")
    schema = f"scale_{engine}"
    psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    return f"postgresql://postgres@127.0.0.1:5432/{DATABASE}?options=-csearch_path%3D{schema}"


class TreeMemory:
    """Polls a process and its descendants; the peak of their summed PSS (and RSS)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak_pss = self.peak_rss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            pss = rss = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except psutil.Error:
                    continue
                pss += info.pss
                rss += info.rss
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, len(procs))
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def load(engine: str, source: Path, workers: int) -> dict:
    """One `etl` of `source` by `engine` into a fresh warehouse, in a child process."""
    url = fresh_schema(engine)
    cmd = [sys.executable, "main.py", "--database-url", url, "etl", "--source", str(source), "--engine", engine, "--format", "json"]
    # The gate is evaluated and recorded as always, but does not roll the load back: from about 20x
    # the generator's invoice numbers pass 999999, which validity.fact_sales.invoice_no refuses.
    env = dict(os.environ, RDP_ETL__DASK_WORKERS=str(workers), RDP_QUALITY_RULES__ON_FAILURE="warn")
    load_before = os.getloadavg()
    with tempfile.NamedTemporaryFile("r", prefix="rdp-scale-time-") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [TIME_BIN, "-f", "%M", "-o", out.name, *cmd], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        memory = TreeMemory(proc.pid)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
        memory.stop()
        driver_kb = [line for line in Path(out.name).read_text().splitlines() if line.strip().isdigit()]
    if proc.returncode != 0:
        raise SystemExit(f"{engine} load of {source} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    run = json.loads(stdout)
    if run["status"] != "success" or run["rows_read"] != run["rows_loaded"] + run["rows_quarantined"] + run["rows_already_loaded"]:
        raise SystemExit(f"{engine} load of {source}: unexpected result {run['status']}: {run['message']}")
    return {
        "engine": engine,
        "run_engine": run["engine"],
        "wall_s": round(wall, 2),
        "in_process_s": round(run["duration_s"], 2),
        "rows_read": run["rows_read"],
        "rows_loaded": run["rows_loaded"],
        "rows_quarantined": run["rows_quarantined"],
        "rows_per_s_wall": round(run["rows_read"] / wall),
        "rows_per_s_in_process": round(run["rows_per_s"]),
        "driver_peak_mb": round(int(driver_kb[-1]) / 1024, 1) if driver_kb else None,
        "tree_peak_pss_mb": round(memory.peak_pss / 2**20, 1),
        "tree_peak_rss_mb": round(memory.peak_rss / 2**20, 1),
        "processes": memory.peak_processes,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "timings": run["timings"],
    }


def generated(scale: int, folder: Path) -> tuple[Path, float]:
    sys.path.insert(0, str(REPO_ROOT))
    from sampledata.generator import generate_sales

    path = folder / f"scale-{scale}x.csv"
    start = time.perf_counter()
    generate_sales(path, scale * REAL_ROWS, SEED)
    return path, time.perf_counter() - start


def report(sizes: list[dict]) -> None:
    print(f"\n{'size':>5} {'engine':>7} {'wall s':>8} {'in-proc s':>9} {'rows/s':>9} {'driver MB':>9} {'tree MB':>8}  load avg before")
    for size in sizes:
        for r in size["loads"]:
            print(
                f"{size['scale']:>4}x {r['engine']:>7} {r['wall_s']:>8.1f} {r['in_process_s']:>9.1f} {r['rows_per_s_wall']:>9,} "
                f"{r['driver_peak_mb']:>9} {r['tree_peak_pss_mb']:>8}  {r['load_average_before'][0]}"
            )
        if "ratio_wall" in size:
            print(
                f"      dask / pandas: wall {size['ratio_wall']:.2f}, in-process {size['ratio_in_process']:.2f}, tree memory {size['ratio_memory']:.2f}"
            )


def save(result: dict, started: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"scaling-{started:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="the real extract (the 1x size)")
    parser.add_argument("--sizes", default="1,10,50", help="comma-separated multiples of the real file's rows (1 = the real file)")
    parser.add_argument("--engines", default="pandas,dask")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the Dask engine's local cluster")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where generated extracts are written (and deleted)")
    parser.add_argument("--keep-schemas", action="store_true", help="leave the last warehouses in rdp_scale")
    args = parser.parse_args()
    engines = args.engines.split(",")
    started = datetime.now()
    result = {
        "started": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "workers": args.workers,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="rdp-scale-", dir=args.tmp) as tmp:
        for scale in (int(s) for s in args.sizes.split(",")):
            entry: dict = {"scale": scale}
            if scale == 1:
                source = args.real
            else:
                source, seconds = generated(scale, Path(tmp))
                entry["generate_s"] = round(seconds, 1)
            entry["source"], entry["bytes"] = str(source), source.stat().st_size
            entry["loads"] = [load(engine, source, args.workers) for engine in engines]
            by = {r["engine"]: r for r in entry["loads"]}
            if {"pandas", "dask"} <= by.keys():
                p, d = by["pandas"], by["dask"]
                if (p["rows_loaded"], p["rows_quarantined"]) != (d["rows_loaded"], d["rows_quarantined"]):
                    raise SystemExit(f"{scale}x: the engines disagree: {p} / {d}")
                entry["ratio_wall"] = round(d["wall_s"] / p["wall_s"], 3)
                entry["ratio_in_process"] = round(d["in_process_s"] / p["in_process_s"], 3)
                entry["ratio_memory"] = round(d["tree_peak_pss_mb"] / p["tree_peak_pss_mb"], 3)
            if source != args.real:
                source.unlink()
            result["sizes"].append(entry)
            report([entry])
            save(result, started)  # after every size: a later failure keeps what was measured
    for engine in engines:
        peaks = {s["scale"]: r["tree_peak_pss_mb"] for s in result["sizes"] for r in s["loads"] if r["engine"] == engine}
        if 10 in peaks and 50 in peaks:
            result.setdefault("memory_growth_10x_to_50x", {})[engine] = round(peaks[50] / peaks[10], 3)
    if not args.keep_schemas:
        for engine in engines:
            psql(f"DROP SCHEMA IF EXISTS scale_{engine} CASCADE")
    result["finished"] = datetime.now().isoformat(timespec="seconds")
    out = save(result, started)
    print()
    report(result["sizes"])
    if "memory_growth_10x_to_50x" in result:
        print(f"memory growth 10x -> 50x (tree peak): {result['memory_growth_10x_to_50x']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
