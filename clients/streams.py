"""Bidirectional streams in the SDK: many batches over one call, a window of them in flight.

RemoteModel.train_stream and predict_stream (and their async twins), the streamed fit and
the chunks of a large predict all run through here. A stream sends the caller's items as
requests while it reads the replies, one per request and in order (proto: "Streams"):

- Flow control: at most `window` requests are sent and unanswered at once. The request
  iterator that gRPC consumes (on a thread of its own in the sync client, in a task of the
  event loop in grpc.aio) takes a permit from a semaphore before it pulls the next item,
  and the reader gives one back per reply it reads. A fast producer is held back, a slow
  reader holds the producer back, and nothing is buffered without bound. An item is pulled
  only once it may be sent: until the caller has read the first result, at most `window`
  items have been pulled.
- A refused message (a reply carrying `error`) raises its NNServeError at its position,
  after the results before it, and no request is sent after it. A TrainStream is closed
  and read to its end first: the requests already sent (at most window - 1) are applied
  by the server, and their steps become the error's `applied_after`, so no applied step
  goes unreported. A PredictStream is cancelled at once (predictions change nothing).
- An item that cannot be sent (the caller's iterable raised, or the SDK cannot encode the
  item) likewise ends the requests; the stream is read to its end and the exception is
  raised at that position, after the results of every item sent.
- Leaving early (break, close(), garbage collection) cancels the call: the server applies
  no message it had not read by then.
- A failure of the stream itself (a grpc.RpcError: its deadline, too many streams open,
  the server shutting down) raises NNServeError as a unary call's failure does.

A stream has no deadline unless given `timeout`: it lasts as long as its caller feeds it.
"""

import asyncio
import threading

import grpc
import numpy as np

from .errors import NNServeError

__all__ = ["STREAM_WINDOW", "Exchange", "async_items", "check_window", "stream", "stream_async"]

# Requests in flight per stream by default: enough to hide a loopback or LAN round trip
# behind small batches' compute, few enough to keep little in flight at a refusal.
STREAM_WINDOW = 16


def check_window(window):
    """window as an int; ValueError unless it is an integer >= 1."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: got {window!r}, expected an integer >= 1 (requests in flight)")
    return int(window)


class Exchange:
    """The bookkeeping of one stream, shared by the sync and async drivers (no I/O).

    Parameters
    ----------
    method : str
        "TrainStream" or "PredictStream".
    request_of : callable(item) -> request
        Raises (NNServeError, or anything the caller's item provokes) when it cannot.
    result_of : callable(message) -> result
        Reads a reply's `step` or `prediction`.
    drain : bool
        Read on after a refused message, whose followers were applied (TrainStream).
    route : str
        The model every message names: the stream's routing key.
    """

    def __init__(self, method, request_of, result_of, *, drain, route):
        self.method = method
        self.route = route
        self._request_of = request_of
        self._result_of = result_of
        self._drain = drain
        self.stopped = False  # no request may be sent any more
        self._sent = 0
        self._answered = 0
        self._failure = None  # why the next item could not be sent
        self._refusal = None  # the first refused message's NNServeError
        self._applied_after = []

    def request(self, item):
        """The request of an item, or None once it could not be built (see fail)."""
        try:
            request = self._request_of(item)
        except Exception as error:
            self.fail(error)
            return None
        self._sent += 1
        return request

    def fail(self, error):
        """Send nothing more; raise `error` once the replies of the requests sent are read."""
        self._failure = error
        self.stopped = True

    def read(self, reply):
        """The result of a reply, or None when the caller does not get it (it follows a
        refused message); raises a refusal at once when there is nothing to drain."""
        self._answered += 1
        kind = reply.WhichOneof("result")
        if kind == "error":
            if self._refusal is None:
                self.stopped = True
                self._refusal = NNServeError.from_message_error(reply.error, self.method)
                if not self._drain:
                    raise self._refusal
            return None
        result = self._result_of(getattr(reply, kind))
        if self._refusal is not None:
            self._applied_after.append(result)
            return None
        return result

    def end(self):
        """At the stream's end: raise what stopped it before its items' end, if anything."""
        if self._refusal is not None:
            self._refusal.applied_after = self._applied_after
            raise self._refusal
        if self._failure is not None:
            raise self._failure
        if self._answered != self._sent:  # the contract says one reply per request
            raise NNServeError(grpc.StatusCode.INTERNAL, f"the stream ended after {self._answered} "
                               f"replies, expected {self._sent} (one per request)", self.method)


def stream(client, exchange, items, window, timeout):
    """Yield the results of `items` (an iterator) sent over one stream (a sync Client)."""
    permits = threading.Semaphore(window)

    def requests():  # consumed by gRPC on a thread of its own
        while True:
            permits.acquire()
            if exchange.stopped:
                return
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as error:
                exchange.fail(error)
                return
            request = exchange.request(item)
            if request is None:
                return
            yield request

    call = client._bidi(exchange.method, requests(), timeout, exchange.route)
    try:
        for reply in call:
            result = exchange.read(reply)
            permits.release()
            if result is not None:
                yield result
        exchange.end()
    except grpc.RpcError as error:
        raise NNServeError.from_rpc(error, exchange.method) from None
    finally:
        exchange.stopped = True
        permits.release()  # a request iterator waiting for a permit wakes up, and returns
        call.cancel()


async def stream_async(client, exchange, items, window, timeout):
    """Yield the results of `items` (an async iterator) sent over one stream (an AsyncClient)."""
    permits = asyncio.Semaphore(window)

    async def requests():  # consumed by grpc.aio in a task of its own
        while True:
            await permits.acquire()
            if exchange.stopped:
                return
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            except Exception as error:
                exchange.fail(error)
                return
            request = exchange.request(item)
            if request is None:
                return
            yield request

    call = client._bidi(exchange.method, requests(), timeout, exchange.route)
    try:
        async for reply in call:
            result = exchange.read(reply)
            permits.release()
            if result is not None:
                yield result
        exchange.end()
    except grpc.RpcError as error:
        raise NNServeError.from_rpc(error, exchange.method) from None
    finally:
        exchange.stopped = True
        permits.release()
        call.cancel()


def async_items(items):
    """An async iterator of an async or a sync iterable (a sync one is read on the event
    loop, so it should not block)."""
    if hasattr(items, "__aiter__"):
        return aiter(items)
    return _from_sync(iter(items))


async def _from_sync(iterator):
    for item in iterator:
        yield item
