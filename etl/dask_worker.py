"""Code the Dask engine runs inside its workers (imports distributed: loaded only with --engine dask)."""

from __future__ import annotations

import os
import threading
import time

from distributed import WorkerPlugin


class ExitWithParent(WorkerPlugin):
    """A worker of the local cluster exits as soon as the `etl` process that started it is gone.

    Dask's own guard (a pipe whose closing ends the worker) fails with forked workers: each worker
    inherits the other workers' pipe ends and keeps them open, and a killed `etl` left its workers
    running for good. Registered as a plugin, it also guards a worker the nanny restarts."""

    idempotent = True

    def setup(self, worker) -> None:
        self.parent = os.getppid()
        threading.Thread(target=self._watch, name="rdp-exit-with-parent", daemon=True).start()

    def _watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(0.25)
        os._exit(1)
