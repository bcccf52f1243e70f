"""The gRPC half of the metrics: an interceptor that counts and times every RPC.

It feeds the grpc_server_* series of `Metrics` (service/metrics.py), named as
go-grpc-prometheus made conventional: started, handled (+ grpc_code), handling seconds,
messages received and sent, labelled grpc_type, grpc_service, grpc_method. The wrapped
handler and its label children are built on a method's first call and reused, so per call
the interceptor does dictionary lookups and prometheus_client increments; it formats no
strings.
"""

import threading
import time

import grpc

from .interceptor_base import MethodInterceptor

__all__ = ["MetricsInterceptor"]

_UNKNOWN = grpc.StatusCode.UNKNOWN
_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


class _MethodSeries:
    """The label children of one RPC method; handled children created per code on first use."""

    __slots__ = ("started", "received", "sent", "seconds", "handled", "in_flight", "_labels",
                 "_metrics")

    def __init__(self, metrics, labels):
        self._metrics = metrics
        self._labels = labels
        self.in_flight = metrics.requests_in_flight
        self.started = metrics.started.labels(*labels)
        self.received = metrics.msg_received.labels(*labels)
        self.sent = metrics.msg_sent.labels(*labels)
        self.seconds = metrics.handling_seconds.labels(*labels)
        self.handled = {}  # grpc.StatusCode -> child

    def finish(self, code, started):
        self.seconds.observe(time.perf_counter() - started)
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        child.inc()


def _code(context, failed):
    """The status the call ends with: the one set or aborted with; for a call the client
    cancelled or whose deadline passed (its handler may still return or raise after that),
    CANCELLED or DEADLINE_EXCEEDED; else OK / UNKNOWN."""
    code = context.code()
    if code is not None:
        return code
    if not context.is_active():
        remaining = context.time_remaining()
        return _DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else _CANCELLED
    return _UNKNOWN if failed else _OK


def _counted(iterator, counter):
    for message in iterator:
        counter.inc()
        yield message


def _started(series, request_or_iterator, request_streaming):
    """Count a call's start and its request message(s); return (start time, request)."""
    started = time.perf_counter()
    series.started.inc()
    if request_streaming:
        return started, _counted(request_or_iterator, series.received)
    series.received.inc()
    return started, request_or_iterator


def _observe_unary_response(behavior, series, request_streaming):
    def observed(request_or_iterator, context):
        started, request_or_iterator = _started(series, request_or_iterator, request_streaming)
        series.in_flight.inc()
        try:
            response = behavior(request_or_iterator, context)
        except BaseException:
            series.finish(_code(context, True), started)
            raise
        finally:
            series.in_flight.dec()
        series.sent.inc()
        series.finish(_code(context, False), started)
        return response

    return observed


def _observe_stream_response(behavior, series, request_streaming):
    def observed(request_or_iterator, context):
        started, request_or_iterator = _started(series, request_or_iterator, request_streaming)
        once = threading.Lock()

        def finish(code):
            if once.acquire(blocking=False):
                series.finish(code, started)

        # A stream the client cancels (or whose deadline passes) is dropped by gRPC without
        # resuming the generator; the RPC's termination callback accounts for it.
        context.add_callback(lambda: finish(_code(context, True)))
        try:
            for response in behavior(request_or_iterator, context):
                series.sent.inc()
                yield response
        except GeneratorExit:
            finish(_code(context, True))
            raise
        except BaseException:
            finish(_code(context, True))
            raise
        finish(_code(context, False))

    return observed


# (grpc_type, handler attribute, wrapper, requests streamed, factory)
_KINDS = (
    ("UNARY", "unary_unary", _observe_unary_response, False, grpc.unary_unary_rpc_method_handler),
    ("CLIENT_STREAM", "stream_unary", _observe_unary_response, True,
     grpc.stream_unary_rpc_method_handler),
    ("SERVER_STREAM", "unary_stream", _observe_stream_response, False,
     grpc.unary_stream_rpc_method_handler),
    ("BIDI_STREAM", "stream_stream", _observe_stream_response, True,
     grpc.stream_stream_rpc_method_handler),
)


class MetricsInterceptor(MethodInterceptor):
    """Count and time every RPC of every service; put it first so it sees every status.

    Wrapped handlers and their label children are built once per method and reused.
    """

    def __init__(self, metrics):
        super().__init__()
        self._metrics = metrics

    def wrap(self, method, handler):
        service, _, name = method.lstrip("/").rpartition("/")
        for grpc_type, attribute, wrapper, request_streaming, factory in _KINDS:
            behavior = getattr(handler, attribute)
            if behavior is not None:
                series = _MethodSeries(self._metrics, (grpc_type, service, name))
                return factory(wrapper(behavior, series, request_streaming),
                               request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler
