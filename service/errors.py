"""Domain errors, and the one place that turns them into gRPC status codes and HTTP statuses.

Code raises the exception that names the problem where it finds it; `ErrorInterceptor`
maps it to a status code with the exception's text as the details ("got X, expected Y"),
and the REST port (service/http) to the HTTP status of that code (`http_status`). Any other
exception is a bug: INTERNAL (500), logged once with its traceback, and the server keeps
serving.
"""

import logging

import grpc
from google.protobuf.message import DecodeError

from nnserve.v1.tensors import InvalidMessage, InvalidTensor

from .interceptor_base import MethodInterceptor

__all__ = ["DOMAIN_ERRORS", "AlreadyExists", "ErrorInterceptor", "FailedPrecondition", "InvalidArgument",
           "InvalidMessage", "InvalidTensor", "LimitExceeded", "ModelNotFound", "NotFound", "Overloaded",
           "PermissionDenied", "ServiceError", "Unauthenticated", "Unavailable", "http_status",
           "internal_message", "limit_message", "received_error", "status_code"]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the service's domain errors."""


class InvalidArgument(ServiceError):
    """A request the server refuses whatever its state: bad spec, bad arrays, bad name."""


class NotFound(ServiceError):
    """No model, dataset or training job has the requested id (or name)."""


class ModelNotFound(NotFound):
    """No model has the requested id or name."""


class AlreadyExists(ServiceError):
    """The requested model or dataset name is taken."""


class LimitExceeded(ServiceError):
    """A configured server limit would be exceeded; the message names the limit."""


class FailedPrecondition(ServiceError):
    """The request is well-formed but does not fit the model's current state."""


class Unavailable(ServiceError):
    """The server cannot serve this now, and may soon (cluster: its lease is in doubt)."""


class Overloaded(ServiceError):
    """More calls at once than --max-concurrent-rpcs admits; worth retrying after a pause."""


class Unauthenticated(ServiceError):
    """Tokens are required and the request has no valid one."""


class PermissionDenied(ServiceError):
    """The request's token lacks the scope the call needs."""


# The mapping. Looked up along the exception's MRO, so subclasses inherit their code.
STATUS_CODES = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidMessage: grpc.StatusCode.INVALID_ARGUMENT,  # includes InvalidTensor (the codecs)
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}
DOMAIN_ERRORS = tuple(STATUS_CODES)
# The HTTP status of each code, as google.rpc.Code documents them; http_status makes one
# exception.
HTTP_STATUSES = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}
PAYLOAD_TOO_LARGE = 413
# gRPC's retry pushback (gRFC A6): a negative pause tells a retrying client not to retry.
# A limit (max_models, max_rows_per_request, ...) shares RESOURCE_EXHAUSTED with overload,
# which is worth retrying; this keeps a client that retries RESOURCE_EXHAUSTED from
# repeating a request that cannot succeed.
_DO_NOT_RETRY = (("grpc-retry-pushback-ms", "-1"),)


def limit_message(limit, got, expected):
    """The message of a LimitExceeded: which limit, and the flag and variable that set it."""
    flag = "--" + limit.replace("_", "-")
    return (f"limit {limit} reached: got {got}, expected at most {expected} "
            f"(server option {flag} / NNSERVE_{limit.upper()})")


def status_code(error):
    """Return the status code for a domain error, INTERNAL for anything else."""
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def http_status(error):
    """Return the HTTP status for a domain error, 500 for anything else.

    A limit (LimitExceeded: too many rows, too large a body) is 413, not the 429 of its
    RESOURCE_EXHAUSTED: the request is larger than this server takes and repeating it cannot
    succeed, whereas 429 (Overloaded) asks the client to come back later.
    """
    if isinstance(error, LimitExceeded):
        return PAYLOAD_TOO_LARGE
    return HTTP_STATUSES[status_code(error)]


# The domain error each code stands for when another server answers with it (a forward).
_RECEIVED = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def received_error(error):
    """The domain error for the status another server answered a call with (a grpc.RpcError
    of a forwarded call), so that it reaches our caller with the same meaning: the class of
    its code; RESOURCE_EXHAUSTED a LimitExceeded when that server asked not to retry (a
    limit), else Overloaded; INTERNAL a RuntimeError (its bug, logged here too); any other
    code (the owner unreachable, a deadline) Unavailable."""
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        limit = _DO_NOT_RETRY[0] in tuple(error.trailing_metadata() or ())
        return (LimitExceeded if limit else Overloaded)(details)
    if code == grpc.StatusCode.INTERNAL:
        return RuntimeError(f"the model's owner answered INTERNAL: {details}")
    cls = _RECEIVED.get(code)
    if cls is None:
        return Unavailable(f"the model's owner answered {code.name}: {details}")
    return cls(details)


def internal_message(error):
    """What a caller is told about a bug (its traceback goes to the log only)."""
    return (f"internal error ({type(error).__name__}); the server logged the traceback and "
            "keeps serving")


class ErrorInterceptor(MethodInterceptor):
    """Wrap every method under `prefixes` with the domain-error mapping.

    A call pays one dict lookup and one try block. A unary request is deserialized inside
    that block, so bytes that are no valid message are INVALID_ARGUMENT (gRPC itself would
    answer INTERNAL). A response stream is guarded while it is iterated, so an error raised
    between two messages ends the stream with its status.
    """

    def __init__(self, prefixes):
        super().__init__()
        self._prefixes = prefixes  # one or a tuple: str.startswith takes either

    def wrap(self, method, handler):
        if not method.startswith(self._prefixes):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guarded(method, handler.unary_unary, handler.request_deserializer),
                request_deserializer=None,  # raw bytes: _guarded decodes them
                response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _guarded(method, _decoding_stream(method, handler.stream_unary,
                                                  handler.request_deserializer)),
                request_deserializer=None, response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _guarded_stream(method, handler.unary_stream, handler.request_deserializer),
                request_deserializer=None, response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _guarded_stream(method, _decoding_stream(method, handler.stream_stream,
                                                         handler.request_deserializer)),
                request_deserializer=None, response_serializer=handler.response_serializer)
        return handler


def _decoded(method, deserializer, data):
    try:
        return deserializer(data)
    except DecodeError as error:
        raise InvalidMessage(f"request: got {len(data)} bytes that do not parse ({error}), expected "
                             f"a serialized request message of {method}") from None


def _abort(method, error, context):
    """End the call with the status of `error`: its domain code, or INTERNAL for a bug."""
    if isinstance(error, DOMAIN_ERRORS):
        if isinstance(error, LimitExceeded):  # waiting will not help: ask clients not to retry
            context.set_trailing_metadata(_DO_NOT_RETRY)
        context.abort(status_code(error), str(error))
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        raise error  # the handler aborted the call itself; its status stands
    if isinstance(error, grpc.RpcError) and not context.is_active():
        # A request stream's iterator raises this when the client cancelled or its deadline
        # passed while the handler waited for the next message: the call is over, no bug.
        raise error
    logger.exception("internal error in %s", method,
                     extra={"event": "internal_error", "method": method})
    context.abort(grpc.StatusCode.INTERNAL, internal_message(error))


def _guarded(method, behavior, deserializer=None):
    def guarded(request, context):
        try:
            if deserializer is not None:
                request = _decoded(method, deserializer, request)
            return behavior(request, context)
        except Exception as error:
            _abort(method, error, context)

    return guarded


def _decoding_stream(method, behavior, deserializer):
    """`behavior` on a request stream whose raw messages are decoded as it reads them."""
    def decoding(requests, context):
        return behavior((_decoded(method, deserializer, data) for data in requests), context)

    return decoding


def _guarded_stream(method, behavior, deserializer=None):
    def guarded(request, context):
        try:
            if deserializer is not None:
                request = _decoded(method, deserializer, request)
            yield from behavior(request, context)
        except Exception as error:
            _abort(method, error, context)

    return guarded
