"""The heap trimmer gives freed buffers back to the OS, measured on a real process's RSS."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from nnserve.service.heap_trimmer import _malloc_trim, start_heap_trimmer

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="no malloc_trim (not glibc)")

# A child that frees 100 request-sized buffers (800 KiB, as a batch-256 x 784 float32
# message) from glibc's heap, keeping the one above them so the heap top cannot shrink by
# itself, as a server's heap looks after a load: the memory stays resident until trimmed.
_CHILD = textwrap.dedent("""
    import ctypes, sys, time
    from nnserve.service.heap_trimmer import start_heap_trimmer

    def rss_mib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 800 * 1024
    libc.free(libc.malloc(size))  # glibc raises its mmap threshold: later buffers use the heap
    buffers = [libc.malloc(size) for _ in range(101)]
    for address in buffers:
        ctypes.memset(address, 1, size)
    for address in buffers[:-1]:
        libc.free(address)
    before = rss_mib()
    if sys.argv[1] == "trim":
        stop = start_heap_trimmer(interval=0.05)
    # Trimming: wait for the drop (20 trims a second). Control: 1 s, as long as 20 trims.
    deadline = time.monotonic() + (10 if sys.argv[1] == "trim" else 1)
    while time.monotonic() < deadline and before - rss_mib() < 60:
        time.sleep(0.05)
    print(before, rss_mib())
""")


def _resident_before_and_after(mode):
    result = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                            timeout=60, check=True)
    before, after = map(float, result.stdout.split())
    return before, after


def test_trimmer_returns_freed_heap_memory_to_the_os():
    before, after = _resident_before_and_after("trim")
    assert before - after >= 60, f"resident {before:.0f} -> {after:.0f} MiB; expected 78 MiB freed"


def test_without_the_trimmer_freed_heap_memory_stays_resident():
    # The control: what the trimmer is for happens without it (else the test above proves nothing).
    before, after = _resident_before_and_after("none")
    assert before - after < 10, f"resident {before:.0f} -> {after:.0f} MiB without trimming"


def test_trimmer_thread_stops_when_asked():
    stop = start_heap_trimmer(interval=0.01)
    stop.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            thread.name == "nnserve-heap-trim" for thread in threading.enumerate()):
        time.sleep(0.01)
    assert not any(thread.name == "nnserve-heap-trim" for thread in threading.enumerate())
