"""The SDK's one exception type, and the places errors become it.

Every RPC failure arrives as a `grpc.RpcError`; `NNServeError.from_rpc` keeps its status
code and the server's message ("got X, expected Y"). A request the SDK cannot even encode
(an unknown activation name, a complex-valued array) is refused before it is sent with
the status code the server would have given it, INVALID_ARGUMENT, so callers handle a bad
argument the same way wherever it is caught.

A message of a stream (TrainStream, PredictStream) that the server refused arrives as a
reply holding its status code and message; `NNServeError.from_message_error` makes it the
same NNServeError the unary call would have raised. For TrainStream it also carries, as
`applied_after`, the steps the server applied after the refused one (already on their way).

A Predict or Evaluate split into several calls whose calls kept seeing different weights
versions (the model trained meanwhile) fails with `MixedVersionsError`, an NNServeError
with gRPC's code for a concurrency conflict, ABORTED: `except NNServeError` still catches
every failure of an SDK call.
"""

import contextlib

import grpc

from nnserve.v1.tensors import InvalidMessage

__all__ = ["MixedVersionsError", "NNServeError"]

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}  # google.rpc.Code numbers


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
    applied_after : list of StepLoss
        For a batch of RemoteModel.train_stream (or fit(stream=True)) that the server
        refused: the steps of the batches sent after it, which the server applied before
        the stream closed (at most window - 1), in order. Empty otherwise.
    """

    applied_after = ()

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

    @classmethod
    def from_message_error(cls, error, method):
        """Return the NNServeError of a refused stream message (an nnserve.v1.MessageError)."""
        return cls(_STATUS_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message, method)


class MixedVersionsError(NNServeError):
    """A Predict or Evaluate split into several calls that did not get one weights version.

    Raised, with code ABORTED, when the model kept changing between the calls even after
    the calls that saw an older version were made again (chunking.MAX_VERSION_ROUNDS
    times): the results would mix two models, so none are returned. Retry, or use a larger
    batch_size (fewer calls), or pause training.

    Attributes
    ----------
    versions : list of int
        The weights version of each chunk's last reply, in row order.
    """

    def __init__(self, message, method, versions):
        super().__init__(grpc.StatusCode.ABORTED, message, method)
        self.versions = list(versions)

    def __reduce__(self):
        return type(self), (self.message, self.method, self.versions)


@contextlib.contextmanager
def encoding(method):
    """Turn a request that cannot be encoded into NNServeError(INVALID_ARGUMENT)."""
    try:
        yield
    except (InvalidMessage, TypeError, ValueError) as error:
        raise NNServeError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{error} (refused by the client before sending)", method) from None
