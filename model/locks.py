"""A reader-writer lock for Network: many readers or one writer, writers not starved.

fasteners.ReaderWriterLock does this with per-thread bookkeeping (reentrancy, upgrade
checks) that costs ~2 us per acquire/release pair here, against ~4 us for a whole train
step of a small network; Network needs none of that, so this keeps only the rule.

Taking either side counts as a kernel call in progress for the process's BLAS thread
budget (nnserve.model.thread_budget), which needs to know when a job computes alone.
"""

import threading

from .thread_budget import BUDGET


class ReadWriteLock:
    """Non-reentrant. A waiting writer holds back new readers, so training is never starved
    by a stream of predictions."""

    def __init__(self):
        self._changed = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self.read = _ReadSide(self)
        self.write = _WriteSide(self)

    def acquire_read(self):
        with self._changed:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1

    def release_read(self):
        with self._changed:
            self._readers -= 1
            if not self._readers and self._writers_waiting:
                self._changed.notify_all()

    def acquire_write(self):
        with self._changed:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._changed.wait()
            self._writers_waiting -= 1
            self._writing = True

    def release_write(self):
        with self._changed:
            self._writing = False
            self._changed.notify_all()


class _ReadSide:
    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        self._lock.acquire_read()
        BUDGET.entered()

    def __exit__(self, *exc_info):
        BUDGET.left()
        self._lock.release_read()


class _WriteSide:
    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        self._lock.acquire_write()
        BUDGET.entered()

    def __exit__(self, *exc_info):
        BUDGET.left()
        self._lock.release_write()
