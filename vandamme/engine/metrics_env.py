"""The environment a multi-worker server's metrics share, set up before anything imports
prometheus_client: the library picks its value class (in-process or multiprocess files) when it
is first imported, so with ``vandamme run --workers N`` the folder must be named in the
environment before then — in the main process, whose memory the workers are forked from."""
from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
import time

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SINCE_ENV = "VANDAMME_METRICS_SINCE"  # the server's start (epoch s), shared by its workers
WORKERS_ENV = "VANDAMME_METRICS_WORKERS"


def prepare_workers(workers: int) -> str | None:
    """For ``vandamme run --workers N`` (N > 1), before the workers start: a private, empty
    folder for prometheus_client's multiprocess files (removed at exit), named in the environment
    the workers inherit, with the server's start time and worker count. An operator's own
    $PROMETHEUS_MULTIPROC_DIR is used instead (emptied of our files first, kept at exit)."""
    if workers <= 1:
        return None
    folder = os.environ.get(MULTIPROC_ENV)
    if folder and os.path.isdir(folder):
        for pattern in ("*.db", "recent_*.ring"):
            for path in glob.glob(os.path.join(folder, pattern)):
                try:
                    os.remove(path)
                except OSError:
                    pass
    else:
        folder = tempfile.mkdtemp(prefix="vandamme-metrics-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[MULTIPROC_ENV] = folder
    os.environ[SINCE_ENV] = repr(time.time())
    os.environ[WORKERS_ENV] = str(workers)
    return folder
