"""Overload: a bounded number of ModelService calls at once, the rest refused at once.

With `--max-concurrent-rpcs N` (0: off):

- At most N ModelService calls are admitted, running or waiting for one of the
  `--workers` slots; call N+1 gets RESOURCE_EXHAUSTED immediately ("limit
  max_concurrent_rpcs reached ...") instead of waiting in an unbounded queue. The
  refusal carries gRPC's retry pushback (`grpc-retry-pushback-ms`, 50-250 ms at random),
  so a client whose retry policy includes RESOURCE_EXHAUSTED tries again after that
  pause, the clients spread out rather than all at once.
- Every admitted call has a thread of its own: the pool has N + RESERVED_THREADS threads
  and gRPC's own `maximum_concurrent_rpcs` is set to that number, so no call ever waits
  in the executor's queue. Waiting for a worker happens on that thread, which is what
  keeps health checks (and the refusals themselves) from queueing behind slow calls: the
  reserved threads are always free for them.
- Memory is bounded: at most N + RESERVED_THREADS requests (each at most
  `--max-message-bytes`) are held at once; a call beyond that is refused by gRPC before
  its message is read ("Concurrent RPC limit exceeded!", also RESOURCE_EXHAUSTED). A
  flood large enough to fill the reserve as well can make a health check meet that
  refusal too; a prober should treat RESOURCE_EXHAUSTED as "busy", not "down", or ask
  `--health-port`, which this cap does not cover.

Without the limit, the pool has `--workers` threads and calls beyond them queue.

The REST port (service/http) shares the limit: a request takes one of the same N
admissions through `ConcurrencyLimit.admission` before its body is read (request N+1 gets
429 Too Many Requests at once) and one of the same `--workers` slots while it runs, on a
pool of threads of its own.

Streams (TrainStream, PredictStream) hold a thread for as long as they are open, so they
have a budget of their own: at most `--max-streams` are open at once, the next one is
refused at once (RESOURCE_EXHAUSTED with the same pushback), and the pool has that many
threads more than the calls need. Under `--max-concurrent-rpcs` an open stream is also one
admitted call for its whole life (it needs no worker slot: its messages run on its own
thread, one at a time).
"""

import contextlib
import random
import threading
from concurrent import futures

import grpc

from .errors import Overloaded
from .interceptor_base import MethodInterceptor

__all__ = ["RESERVED_THREADS", "ConcurrencyLimit", "StreamLimit", "concurrency_limit", "rpc_executor",
           "rpc_limit"]

RESERVED_THREADS = 8
PUSHBACK_MS = (50, 250)  # the retry pause asked of a refused client, drawn uniformly


def rpc_executor(settings):
    """The thread pool of the gRPC server."""
    threads = settings.workers + settings.max_streams
    if settings.max_concurrent_rpcs:
        threads = rpc_limit(settings)
    return futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nnserve-rpc")


def rpc_limit(settings):
    """gRPC's maximum_concurrent_rpcs: the pool's size when limited, else None (no limit)."""
    return settings.max_concurrent_rpcs + RESERVED_THREADS if settings.max_concurrent_rpcs else None


def _refuse(context, message):
    """End a call with RESOURCE_EXHAUSTED and a retry pushback drawn from PUSHBACK_MS."""
    context.set_trailing_metadata((("grpc-retry-pushback-ms", str(random.randint(*PUSHBACK_MS))),))
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def _holding(slot, behavior, message):
    """A bidirectional-stream behavior that holds one of `slot`'s permits while open.

    The permit is given back once, whichever comes first: the stream's end, or gRPC's
    termination callback (a cancelled stream's generator may never be resumed).
    """
    def held(requests, context):
        if not slot.acquire(blocking=False):
            _refuse(context, message)
        once = threading.Lock()

        def release():
            if once.acquire(blocking=False):
                slot.release()

        context.add_callback(release)
        try:
            yield from behavior(requests, context)
        finally:
            release()

    return held


def _stream_handler(handler, behavior):
    return grpc.stream_stream_rpc_method_handler(
        behavior, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class StreamLimit(MethodInterceptor):
    """Keep at most `max_streams` bidirectional streams under `prefixes` open at once."""

    def __init__(self, prefixes, max_streams):
        super().__init__()
        self._prefixes = prefixes  # one or a tuple: str.startswith takes either
        self._open = threading.BoundedSemaphore(max_streams)
        self._message = (f"limit max_streams reached: got stream {max_streams + 1}, expected at most "
                         f"{max_streams} streams open at once (server option --max-streams / "
                         "NNSERVE_MAX_STREAMS); close a stream or retry with backoff")

    def wrap(self, method, handler):
        if handler.stream_stream is None or not method.startswith(self._prefixes):
            return handler
        return _stream_handler(handler, _holding(self._open, handler.stream_stream, self._message))


class ConcurrencyLimit(MethodInterceptor):
    """Admit at most `max_calls` calls under `prefixes` at once; run at most `workers` of the
    unary ones (a stream is admitted for its life and runs on its own thread)."""

    def __init__(self, prefixes, max_calls, workers):
        super().__init__()
        self._prefixes = prefixes  # one or a tuple: str.startswith takes either
        self._admitted = threading.BoundedSemaphore(max_calls)
        self._workers = threading.BoundedSemaphore(workers)
        self._message = (f"limit max_concurrent_rpcs reached: got call {max_calls + 1}, expected at "
                         f"most {max_calls} ModelService calls at once (server option "
                         "--max-concurrent-rpcs / NNSERVE_MAX_CONCURRENT_RPCS); retry with backoff")

    def wrap(self, method, handler):
        if not method.startswith(self._prefixes):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._limited(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return _stream_handler(handler, _holding(self._admitted, handler.stream_stream,
                                                     self._message))
        return handler

    @contextlib.contextmanager
    def admission(self):
        """Hold one admission for a call of another port: yields the worker slots (a
        semaphore) to hold while it runs; Overloaded when every admission is taken."""
        if not self._admitted.acquire(blocking=False):
            raise Overloaded(self._message)
        try:
            yield self._workers
        finally:
            self._admitted.release()

    def _limited(self, behavior):
        def limited(request, context):
            if not self._admitted.acquire(blocking=False):
                _refuse(context, self._message)
            try:
                with self._workers:
                    if not context.is_active():  # deadline passed or cancelled while waiting
                        context.abort(grpc.StatusCode.CANCELLED, "the call ended while waiting for a worker")
                    return behavior(request, context)
            finally:
                self._admitted.release()

        return limited


def concurrency_limit(settings, prefixes):
    """The ConcurrencyLimit the settings ask for, or None without --max-concurrent-rpcs."""
    if not settings.max_concurrent_rpcs:
        return None
    return ConcurrencyLimit(prefixes, settings.max_concurrent_rpcs, settings.workers)
