"""Predict and Evaluate of more rows than one call carries, planned once for both clients.

Inputs are split into chunks (at most MAX_ROWS_PER_CALL rows, and within the channel's
message sizes, each). `_predict_calls` and `_evaluate_calls` return either the one request
of an input that fits in one call, or a plan: a generator (like nnserve.model.fit.fit_plan)
that yields rounds of chunks, each round a list of functions that build one chunk's
request, is sent the list of their replies, and returns the combined result. A round is
every chunk at first, then the chunks answered by an older weights version than the
newest one seen (see _consistent_replies). The sync client drives a plan with blocking
calls and the async one with awaited calls, so both send the same chunks and combine the
same replies in the same order: a round of Predict chunks goes over one PredictStream
(CHUNKS_IN_FLIGHT of them sent ahead, see clients/streams.py), a round of Evaluate chunks
as one unary call each (Evaluate has no stream).
"""

import math

import numpy as np

from nnserve.model.batches import inputs_array, targets_array
from nnserve.model.results import Evaluation, Outputs
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.tensors import to_array, to_tensor

from .channel import DEFAULT_MAX_MESSAGE_BYTES
from .errors import MixedVersionsError, encoding
from .streams import Exchange

__all__ = ["CHUNKS_IN_FLIGHT", "MAX_ROWS_PER_CALL", "MAX_VERSION_ROUNDS", "MESSAGE_HEADROOM",
           "ChunkedReads", "check_batch_size", "rows_per_call"]

# Rows per Predict/Evaluate call when batch_size is None: the server's default
# max_rows_per_request (service/settings.py). A server configured lower needs batch_size=.
MAX_ROWS_PER_CALL = 16384
# Bytes of a request or reply besides its arrays' rows: model id or name, tensor shapes and
# dtypes, protobuf framing (a few hundred bytes; the rest is margin).
MESSAGE_HEADROOM = 64 << 10
# Times the chunks that saw an older weights version than the newest one are re-run before
# a split Predict/Evaluate gives up with MixedVersionsError.
MAX_VERSION_ROUNDS = 3
# Predict chunks sent and unanswered at once on their PredictStream: one computed while the
# next travels keeps the server busy, and a chunk is already as large as the server takes
# (more in flight would only hold more chunks' bytes in memory at once).
CHUNKS_IN_FLIGHT = 2


def check_batch_size(batch_size):
    """batch_size as an int, or None (automatic); ValueError for anything else or < 1."""
    if batch_size is None:
        return None
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size: got {batch_size!r}, expected None (automatic) or an "
                         "integer >= 1 (rows per call)")
    return int(batch_size)


def rows_per_call(batch_size, request_row_bytes, reply_row_bytes,
                  max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
    """Rows of one Predict/Evaluate call: batch_size, or when it is None the most rows whose
    request and reply both fit the client's message size (MESSAGE_HEADROOM aside; a
    negative size is gRPC's "no limit"), and at most MAX_ROWS_PER_CALL; at least 1.
    """
    if batch_size is not None:
        return batch_size
    rows = MAX_ROWS_PER_CALL
    if max_message_bytes >= 0:
        for row_bytes in (request_row_bytes, reply_row_bytes):
            if row_bytes > 0:
                rows = min(rows, (max_message_bytes - MESSAGE_HEADROOM) // row_bytes)
    return max(rows, 1)


def _row_bytes(array):
    """Bytes of one row of an array as the wire carries it (0 for a scalar)."""
    return math.prod(array.shape[1:]) * array.dtype.itemsize if array.ndim else 0


class ChunkedReads:
    """Predict and Evaluate over any number of rows, for ModelMessages (whose requests,
    `_saw`, `_dtype`, `_info` and `_reply_row_bytes` it uses)."""

    def _predict_calls(self, x, batch_size=None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        """The Predict calls for x: (request, None) or (None, plan).

        (request, None) when x fits in one call (the common case, as cheap as it always
        was: x converted and encoded once, whole, no other copy); _on_predict reads the
        reply. Else (None, plan): a plan of chunks of rows_per_call rows (see the module's
        docstring), each round sent over one PredictStream (_chunk_exchange), returning
        the chunks' outputs concatenated, all of one weights version.
        """
        batch_size = check_batch_size(batch_size)
        with encoding("Predict"):
            x = inputs_array(x, self._dtype)
            # Another shape than 2-D goes whole: the server says what is wrong with it.
            if x.ndim != 2 or len(x) <= (rows := rows_per_call(
                    batch_size, x.shape[1] * x.dtype.itemsize, self._reply_row_bytes, max_message_bytes)):
                return pb.PredictRequest(model=self.id, x=to_tensor(x, "x")), None
        return None, self._predict_chunks(x, rows)

    def _predict_chunks(self, x, rows):
        starts = range(0, len(x), rows)
        replies = yield from self._consistent_replies(
            "Predict", [lambda start=start: self._predict_request(x[start:start + rows])
                        for start in starts])
        # Views of the replies' bytes; concatenate makes the one copy.
        outputs = np.concatenate([to_array(reply.outputs, "outputs", copy=False) for reply in replies])
        return Outputs.of(outputs, replies[0].version)

    def _chunk_exchange(self):
        """The bookkeeping of a PredictStream of chunks: request builders in, the raw
        PredictResponses out (the plan reads them)."""
        return Exchange("PredictStream", lambda build: build(), lambda reply: reply, drain=False,
                        route=self.id)

    def _evaluate_calls(self, x, y, batch_size=None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        """The Evaluate calls for (x, y): (request, None) or (None, plan), as _predict_calls,
        a round's chunks one unary call each.

        Split, the chunks' metrics are combined as one call over every row computes them:
        the loss weighted by each chunk's rows, the accuracy from each chunk's count of
        correct answers.
        """
        batch_size = check_batch_size(batch_size)
        loss = self._info.spec["loss"]
        with encoding("Evaluate"):
            x = inputs_array(x, self._dtype)
            y = targets_array(y, self._dtype, loss)
            if x.ndim != 2 or len(x) <= (rows := rows_per_call(
                    batch_size, _row_bytes(x) + _row_bytes(y), 0, max_message_bytes)):  # the reply: 2 numbers
                return pb.EvaluateRequest(model=self.id, x=to_tensor(x, "x"),
                                          y=to_tensor(y, "y")), None
            if y.ndim == 0 or len(y) != len(x):  # refused whole, as the server would refuse it
                raise ValueError(f"y: got {len(y) if y.ndim else 0} rows, expected {len(x)} "
                                 "(one per row of x)")
        return None, self._evaluate_chunks(x, y, rows)

    def _evaluate_chunks(self, x, y, rows):
        starts = range(0, len(x), rows)
        replies = yield from self._consistent_replies(
            "Evaluate", [lambda start=start: self._evaluate_request(x[start:start + rows],
                                                                    y[start:start + rows])
                         for start in starts])
        counts = [min(rows, len(x) - start) for start in starts]
        metrics = {"loss": math.fsum(reply.loss * n for reply, n in zip(replies, counts)) / len(x)}
        if all(reply.HasField("accuracy") for reply in replies):
            # The server's accuracy is a fraction of answers (one per row for cross_entropy,
            # one per output for binary_cross_entropy), so each chunk's count comes back
            # exactly and the total is one call's accuracy to the last bit.
            per_row = self.n_outputs if self._info.spec["loss"] == "binary_cross_entropy" else 1
            correct = sum(round(reply.accuracy * n * per_row) for reply, n in zip(replies, counts))
            metrics["accuracy"] = correct / (len(x) * per_row)
        return Evaluation(metrics, replies[0].version)

    def _consistent_replies(self, method, requests):
        """Yield rounds of the chunks' requests (requests: one function per chunk that builds
        it) and receive their replies; return the replies, in order, all of one weights
        version.

        A model trained between two chunks' calls answers them with different versions.
        The chunks that saw an older version than the newest one seen are then asked again,
        in a round of their own, up to MAX_VERSION_ROUNDS times; after that
        MixedVersionsError is raised (a result mixing two models is never returned).
        """
        replies = [None] * len(requests)
        pending = range(len(requests))
        for _ in range(1 + MAX_VERSION_ROUNDS):
            answered = yield [requests[index] for index in pending]
            for index, reply in zip(pending, answered):
                self._saw(reply.version)
                replies[index] = reply
            versions = [reply.version for reply in replies]
            newest = max(versions)
            pending = [index for index, version in enumerate(versions) if version < newest]
            if not pending:
                return replies
        raise MixedVersionsError(
            f"got chunks answered by weights versions {sorted(set(versions))} after "
            f"{MAX_VERSION_ROUNDS} re-runs of the older ones, expected one version (the model "
            "kept changing between the calls: retry, or pass a larger batch_size)", method,
            versions)
