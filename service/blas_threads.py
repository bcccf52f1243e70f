"""How many threads each BLAS call (the kernels' matrix products) may use, as the work changes.

The kernels are serial (numba's thread pool is never started, see docs/design.md), so BLAS
is the only library that spawns threads, and its thread count is one setting for the whole
process. Concurrent requests do best with `--threads` each (1 by default: two callers on
two cores side by side); a training job running alone does best with every core
(`--job-threads`): a batch-256 step of a [784, 256, 256, 10] network ran 0.58-0.66x the
in-process rate on 1 thread and 0.93-0.99x on 2 (`nnserve bench service`). So the count
follows the running jobs: `job_threads` while exactly one runs, `threads` otherwise.
Requests served meanwhile share the job's count; batch-1 products are too small for
OpenBLAS to split anyway.
"""

import os
import threading

__all__ = ["NO_BLAS_THREADS", "BlasThreads", "limit_threads"]


def limit_threads(threads):
    """Give each BLAS call at most `threads` threads (process-wide)."""
    import scipy.linalg.cython_blas  # noqa: F401 - load the BLAS numba's np.dot calls
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


class BlasThreads:
    """The process's BLAS thread count: `threads` for requests, `job_threads` while one
    training job runs alone (0: one per core for either)."""

    def __init__(self, threads, job_threads):
        cores = len(os.sched_getaffinity(0))
        self._threads = threads or cores
        self._job_threads = job_threads or cores
        self._lock = threading.Lock()
        self._current = None
        self.jobs_running(0)

    def jobs_running(self, count):
        """Set the count for `count` running training jobs."""
        wanted = self._job_threads if count == 1 else self._threads
        with self._lock:
            if wanted != self._current:
                limit_threads(wanted)
                self._current = wanted


class NoBlasThreads:
    """What a server built without a thread policy calls (tests' in-process servers)."""

    def jobs_running(self, count):
        pass


NO_BLAS_THREADS = NoBlasThreads()
