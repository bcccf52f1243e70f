"""More BLAS threads for training in bulk (a job's steps, a TrainStream's) while nothing
else computes.

A server gives each matrix product `--threads` BLAS threads (1 by default, so concurrent
requests use the cores side by side). A training job alone on the machine then leaves the
other cores idle: the [784, 256, 256, 10] batch-256 job ran at 0.62 of the in-process fit
with one thread, 1.05 with two (docs/benchmarks.md). OpenBLAS's thread count is one number
per process (so is `openblas_set_num_threads_local` in scipy's OpenBLAS 0.3.30: checked),
so the count can only follow what the process does as a whole:

- `alone()`, before a job's or a TrainStream's step: no other kernel call running, so the
  step may use `--training-threads`; the count is raised (for this thread, "the owner").
- `entered()`, whenever a Network's lock is taken by another thread: the count goes back to
  `--threads` at once; the rest of the owner's step shares the cores with that call.

Such a step's results then depend on how busy the server was: OpenBLAS sums some products in a
different order with more threads (docs/benchmarks.md, bit-exactness). Disabled (every
method a no-op) until `enable`, as in-process: `nnserve serve` enables it.
"""

import ctypes
import threading

__all__ = ["BUDGET", "ThreadBudget"]

_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
              "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
              "openblas_get_num_threads64_", "openblas_get_num_threads")


class ThreadBudget:
    """Counts kernel calls in progress and sets the kernels' BLAS thread count."""

    def __init__(self):
        # A plain attribute, not a property: the Network's lock reads it on every kernel
        # call and calls entered/left only when it is set (in-process it never is).
        self.enabled = False
        self._lock = threading.Lock()
        self._active = 0
        self._owner = None  # the thread the count is raised for, or None
        self._shared = self._alone = None
        self._set = self._get = None

    def enable(self, shared, alone):
        """Follow the process: `shared` threads per product, `alone` for a job by itself.

        Returns False (and stays disabled) when the kernels' BLAS is not an OpenBLAS this
        can control, or when `alone` would not be more than `shared`.
        """
        functions = _openblas_functions()
        if functions is None or alone <= shared:
            return False
        with self._lock:
            self._set, self._get = functions
            self._shared, self._alone = shared, alone
            self.enabled = True
            self._owner = None
            self._set(shared)
        return True

    def disable(self):
        with self._lock:
            if self._set is not None and self._owner is not None:
                self._set(self._shared)
            self._set = self._get = None
            self._owner = None
            self.enabled = False

    def threads(self):
        """The kernels' BLAS thread count now (None when disabled)."""
        return self._get() if self._get is not None else None

    def entered(self):
        """A kernel call starts (a Network lock taken)."""
        if self._set is None:
            return
        with self._lock:
            self._active += 1
            if self._owner is not None and self._owner != threading.get_ident():
                self._set(self._shared)
                self._owner = None

    def left(self):
        """A kernel call ended."""
        if self._set is None:
            return
        with self._lock:
            self._active -= 1

    def alone(self):
        """Before a bulk training step: raise the count for this thread if nothing else computes."""
        if self._set is None:
            return
        with self._lock:
            if self._active == 0 and self._owner is None:
                self._set(self._alone)
                self._owner = threading.get_ident()

    def done(self):
        """A job or stream ends: give the cores back if its thread holds the raised count."""
        if self._set is None:
            return
        with self._lock:
            if self._owner == threading.get_ident():
                self._set(self._shared)
                self._owner = None


def _openblas_functions():
    """(set, get) of the thread count of the BLAS the kernels call, or None.

    threadpoolctl finds the library; its own set_num_threads is not used because it lets
    only one Python thread control OpenBLAS (threadpoolctl 3.6+) and ignores the others.
    """
    from .runtime import runtime_info

    kernel_blas = [pool for pool in runtime_info()["blas"]
                   if pool["used_by_kernels"] and pool["internal_api"] == "openblas"]
    if not kernel_blas:
        return None
    library = ctypes.CDLL(kernel_blas[0]["filepath"])
    set_threads = next((getattr(library, name) for name in _SET_NAMES if hasattr(library, name)), None)
    get_threads = next((getattr(library, name) for name in _GET_NAMES if hasattr(library, name)), None)
    if set_threads is None or get_threads is None:
        return None
    set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
    get_threads.argtypes, get_threads.restype = [], ctypes.c_int
    return set_threads, get_threads


BUDGET = ThreadBudget()
