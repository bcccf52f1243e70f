"""Hand freed request buffers back to the OS between requests, not on every request.

A batch-256 x 784 float32 message is 800 KiB, and each request allocates several such
buffers (the message bytes, the decoded arrays). glibc serves them from its heaps and
keeps the freed memory resident (measured: 291 MiB after a batch-256 load, against 246
MiB at idle before it). Forcing every large buffer into its own mmap instead
(mallopt(M_MMAP_THRESHOLD)) gives the memory back at once but page-faults every buffer
in again on the next request: 1.5 ms of CPU per batch-256 TrainStep, 18% of the server's
throughput (docs/benchmarks.md). A thread that calls malloc_trim(0) once a second gets
the memory back within a second of the load ending, at the cost of faulting in what is
reused once a second rather than once a request.
"""

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["TRIM_INTERVAL_SECONDS", "start_heap_trimmer"]

TRIM_INTERVAL_SECONDS = 1.0

logger = logging.getLogger(__name__)


def _malloc_trim():
    """libc's malloc_trim, or None off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def start_heap_trimmer(interval=TRIM_INTERVAL_SECONDS):
    """Trim the malloc heaps every `interval` seconds until the returned Event is set.

    Returns None, starting nothing, where the C library has no malloc_trim (not glibc).
    """
    trim = _malloc_trim()
    if trim is None:
        logger.debug("no malloc_trim in this C library: freed buffers stay with the allocator")
        return None
    stop = threading.Event()

    def trim_until_stopped():
        while not stop.wait(interval):
            trim(0)  # ctypes releases the GIL for the call

    threading.Thread(target=trim_until_stopped, name="nnserve-heap-trim", daemon=True).start()
    return stop
