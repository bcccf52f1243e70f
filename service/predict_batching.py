"""Dynamic batching: concurrent Predicts on one model computed in one kernel call.

With `--batch-max-rows N` (0: off), a Predict (unary call or stream message) joins its
model's queue after its inputs have been checked on its own thread, so one caller's bad
input is refused alone and never fails a merged call. The queue runs one merged call at a
time: the caller at its head leads, takes the queued requests in arrival order up to N rows
(at least its own), computes them as one batch under one read of the weights, hands every
caller its own rows with the version that computed them, and passes the lead to the next
waiting caller. No thread of our own: the callers' threads do the work, and a request that
finds the queue idle runs at once.

`--batch-max-delay-us D` lets a leader wait up to D microseconds for more rows before it
computes; 0 merges only what queued while the previous merged call ran.

A row's outputs are those of its position in a batch of the merged size (the proto's
PredictResponse.merged_rows says why that can differ from predicting it alone).
"""

import threading
import time
from collections import deque
from typing import NamedTuple

import numpy as np

__all__ = ["PredictBatcher", "Prediction", "predict_alone"]


class Prediction(NamedTuple):
    """Outputs (with .version) of one request, and the kernel call that computed them:
    `merged_rows` rows, this request's starting at row `merged_offset`."""

    outputs: object
    merged_rows: int
    merged_offset: int


def predict_alone(entry, x):
    """The Prediction of a request computed on its own (batching off)."""
    outputs = entry.network.predict(x)
    return Prediction(outputs, len(outputs), 0)


class _Request:
    __slots__ = ("x", "queued_at", "turn", "result", "error")

    def __init__(self, x):
        self.x = x
        self.queued_at = time.perf_counter()
        self.turn = threading.Event()  # set when the result is in, or when it is its turn to lead
        self.result = None
        self.error = None


class _Queue:
    """One model's waiting requests; `leading` while one of them runs a merged call."""

    __slots__ = ("waiting", "rows", "leading")

    def __init__(self):
        self.waiting = deque()
        self.rows = 0
        self.leading = False


class PredictBatcher:
    """The merge queues of a registry's models (keyed by model id, dropped when idle)."""

    def __init__(self, max_rows, max_delay_seconds, metrics):
        self._max_rows = max_rows
        self._max_delay = max_delay_seconds
        self._metrics = metrics  # merged call sizes and queue delays
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a leader waiting for company
        self._queues = {}

    def predict(self, entry, x):
        """The Prediction of x on entry's network, merged with whatever runs beside it."""
        request = _Request(entry.network.checked_inputs(x))
        with self._lock:
            queue = self._queues.get(entry.id)
            if queue is None:
                queue = self._queues[entry.id] = _Queue()
            queue.waiting.append(request)
            queue.rows += len(request.x)
            lead = not queue.leading
            queue.leading = True
            if not lead and self._max_delay:
                self._arrived.notify_all()
        if not lead:
            request.turn.wait()
            if request.result is None and request.error is None:
                lead = True  # handed the lead, its rows still queued
        if lead:
            self._lead(entry, queue)
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self, entry, queue):
        """Compute one merged call from the head of the queue, then pass the lead on."""
        with self._lock:
            if self._max_delay:
                deadline = time.monotonic() + self._max_delay
                while queue.rows < self._max_rows:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._arrived.wait(left):
                        break
            merged = [queue.waiting.popleft()]
            rows = len(merged[0].x)
            while queue.waiting and rows + len(queue.waiting[0].x) <= self._max_rows:
                rows += len(queue.waiting[0].x)
                merged.append(queue.waiting.popleft())
            queue.rows -= rows
        try:
            self._compute(entry.network, merged, rows)
        finally:
            with self._lock:
                if queue.waiting:
                    queue.waiting[0].turn.set()  # the lead passes on; queue stays `leading`
                else:
                    queue.leading = False
                    del self._queues[entry.id]
            for request in merged:
                request.turn.set()

    def _compute(self, network, merged, rows):
        started = time.perf_counter()
        for request in merged:
            self._metrics.predict_queued(started - request.queued_at)
        self._metrics.predict_merged(rows)
        try:
            x = merged[0].x if len(merged) == 1 else np.concatenate([r.x for r in merged])
            outputs = network.predict(x)
        except BaseException as error:
            for request in merged:
                request.error = error
            raise
        offset = 0
        for request in merged:
            n = len(request.x)
            request.result = Prediction(outputs[offset:offset + n], rows, offset)
            offset += n
