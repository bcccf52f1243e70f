"""The SDK's one exception type, and the two places errors become it.

Every RPC failure arrives as a `grpc.RpcError`; `NNServeError.from_rpc` keeps its status
code and the server's message ("got X, expected Y"). A request the SDK cannot even encode
(an unknown activation name, a complex-valued array) is refused before it is sent with
the status code the server would have given it, INVALID_ARGUMENT, so callers handle a bad
argument the same way wherever it is caught.
"""

import contextlib

import grpc

from nnserve.v1.tensors import InvalidMessage

__all__ = ["NNServeError"]


class NNServeError(Exception):
    """An nnserve call that failed.

    Attributes
    ----------
    code : grpc.StatusCode
        NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, RESOURCE_EXHAUSTED,
        FAILED_PRECONDITION, DEADLINE_EXCEEDED, UNAVAILABLE, ... (see nnserve.proto).
    message : str
        The server's explanation, or the SDK's when the request never left the client.
    method : str or None
        The RPC's name ("Predict"), when the error belongs to one.
    """

    def __init__(self, code, message, method=None):
        super().__init__(code, message, method)
        self.code = code
        self.message = message
        self.method = method

    def __str__(self):
        where = f"{self.method}: " if self.method else ""
        return f"{where}{self.code.name}: {self.message}"

    @classmethod
    def from_rpc(cls, error, method=None):
        """Return the NNServeError for a grpc.RpcError (sync or grpc.aio)."""
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else None
        return cls(code or grpc.StatusCode.UNKNOWN, details or str(error), method)


@contextlib.contextmanager
def encoding(method):
    """Turn a request that cannot be encoded into NNServeError(INVALID_ARGUMENT)."""
    try:
        yield
    except (InvalidMessage, TypeError, ValueError) as error:
        raise NNServeError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{error} (refused by the client before sending)", method) from None
