"""A reader-writer lock for Network: many readers or one writer, the two sides taking turns,
writers in the order they came.

fasteners.ReaderWriterLock does this with per-thread bookkeeping (reentrancy, upgrade
checks) that costs ~2 us per acquire/release pair here, against ~4 us for a whole train
step of a small network; Network needs none of that, so this keeps only the rule.

Taking either side counts as a kernel call in progress for the process's BLAS thread
budget (nnserve.model.thread_budget), which needs to know when a job computes alone.
"""

import threading

from .thread_budget import BUDGET


class ReadWriteLock:
    """Non-reentrant, phase-fair: the two sides take turns. A reader waits for at most one
    writer; a writer waits for the writers that asked before it, each followed by one turn
    of readers.

    - A reader enters at once unless a writer holds the lock or waits for it; then it waits
      for that writer's turn to end and enters with every reader waiting then, before the
      next writer. Training is never starved by a stream of predictions, and a predict
      waits for one train step, not for every one queued.
    - Writers enter one at a time, first come, first served (a ticket each), each once the
      readers let in before it are done.

    Measured on the server (docs/benchmarks.md, "Ninth session"): when a release woke all
    waiting writers and the first to take the mutex went in, four concurrent batch-256
    TrainSteps on one model had a p99 of 110 ms (51 in arrival order, same calls/s); when
    readers waited while any writer did, batch-256 Predicts among such TrainSteps had a
    p50 of 68 ms and a p99 of 192 (20 and 39 taking turns, the TrainSteps' p50 41 -> 101
    ms, both sides' calls/s ~6% lower).

    The state is guarded by a plain Lock taken with `with` (C code, no Python frames), and
    the Condition over it is used only when a thread must wait: an uncontended acquire and
    release cost two Lock operations, where going through the Condition's own `with` and
    `notify_all` every time cost 4.4 us a write pair on a 2 GHz machine (a [2, 8, 8, 1]
    train step's kernel is 9 us there).
    """

    def __init__(self):
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._readers = 0  # inside, or let in by a writer's release and about to return
        self._readers_waiting = 0
        self._read_turns = 0  # how many times waiting readers were let in together
        self._writing = False
        self._writers_waiting = 0
        # Writers go in arrival order: each takes a ticket and enters when it is the next one
        # served (tickets of writers that gave up waiting are skipped).
        self._tickets_issued = 0
        self._tickets_served = 0
        self._abandoned = set()
        self._waiting = 0  # threads in _wait: a release notifies only when there are some
        self.read = _ReadSide(self)
        self.write = _WriteSide(self)

    def acquire_read(self):
        with self._mutex:
            if not (self._writing or self._writers_waiting):
                self._readers += 1
                return
            turn = self._read_turns
            self._readers_waiting += 1
            try:
                while self._read_turns == turn:
                    self._wait()
            except BaseException:  # e.g. KeyboardInterrupt in the wait
                if self._read_turns == turn:
                    self._readers_waiting -= 1
                else:  # let in meanwhile: leave again
                    self._release_read()
                raise

    def release_read(self):
        with self._mutex:
            self._release_read()

    def _release_read(self):
        self._readers -= 1
        if not self._readers and self._writers_waiting:
            self._changed.notify_all()

    def acquire_write(self):
        with self._mutex:
            if self._writing or self._readers or self._writers_waiting:
                self._queue_for_write()
            self._writing = True

    def _queue_for_write(self):
        ticket = self._tickets_issued
        self._tickets_issued += 1
        self._writers_waiting += 1
        try:
            while self._writing or self._readers or ticket != self._tickets_served:
                self._wait()
        except BaseException:  # e.g. KeyboardInterrupt in the wait: the queue moves on
            if ticket == self._tickets_served:
                self._serve_next()
            else:
                self._abandoned.add(ticket)
            self._writers_waiting -= 1
            if not (self._writing or self._writers_waiting):
                self._let_readers_in()  # they waited for this writer's turn
            self._changed.notify_all()
            raise
        self._serve_next()
        self._writers_waiting -= 1

    def _serve_next(self):
        self._tickets_served += 1
        while self._tickets_served in self._abandoned:
            self._abandoned.remove(self._tickets_served)
            self._tickets_served += 1

    def release_write(self):
        with self._mutex:
            self._writing = False
            self._let_readers_in()
            if self._waiting:
                self._changed.notify_all()

    def _let_readers_in(self):
        """Count every waiting reader in; they return from acquire_read when they wake."""
        if self._readers_waiting:
            self._readers += self._readers_waiting
            self._readers_waiting = 0
            self._read_turns += 1

    def _wait(self):
        """Wait for a release (the mutex held, as Condition.wait requires)."""
        self._waiting += 1
        try:
            self._changed.wait()
        finally:
            self._waiting -= 1


class _ReadSide:
    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        self._lock.acquire_read()
        if BUDGET.enabled:
            BUDGET.entered()

    def __exit__(self, *exc_info):
        if BUDGET.enabled:
            BUDGET.left()
        self._lock.release_read()


class _WriteSide:
    __slots__ = ("_lock",)

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        self._lock.acquire_write()
        if BUDGET.enabled:
            BUDGET.entered()

    def __exit__(self, *exc_info):
        if BUDGET.enabled:
            BUDGET.left()
        self._lock.release_write()
