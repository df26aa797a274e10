"""Code the Dask engine runs inside the workers of its local cluster (imports distributed: loaded
only with --engine dask)."""

from __future__ import annotations

import os
import threading
import time

from distributed import WorkerPlugin

from utils.memory import use_system_allocator

NICENESS = 5  # below the driver: its loader is the run's critical path, the workers only keep ahead of it


class LocalWorker(WorkerPlugin):
    """Set-up of a local cluster's worker (registered as a plugin, so a worker the nanny restarts
    gets it too):

    * it runs at a lower CPU priority than the `etl` process. On a machine with as many cores as
      workers, workers and driver compete for the cores, while only the driver's loading is on the
      critical path: the workers need only keep the next partitions ready, and the window of
      partitions in flight lets them run ahead when the driver waits on the database;
    * Arrow allocates with malloc, as in the `etl` process (utils.memory);
    * it exits as soon as the process that started it is gone. Dask's own guard (a pipe whose
      closing ends the worker) failed with forked workers, each inheriting the others' pipe ends,
      and a killed `etl` could leave its workers running for good."""

    idempotent = True

    def setup(self, worker) -> None:
        os.nice(NICENESS)
        use_system_allocator()
        parent = os.getppid()
        threading.Thread(target=self._exit_with, args=(parent,), name="rdp-exit-with-parent", daemon=True).start()

    @staticmethod
    def _exit_with(parent: int) -> None:
        while os.getppid() == parent:
            time.sleep(0.25)
        os._exit(1)
