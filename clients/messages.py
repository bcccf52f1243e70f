"""What the sync and async clients share: requests built from numpy, results read from replies.

Nothing here does I/O. Each RPC is three steps: build the request (here), call it (the
sync or the grpc.aio client), read the reply (here). So `Client` and `AsyncClient` differ
only in how they wait, and cannot drift apart in what they send or return.

Predict and Evaluate of many rows are split into several calls (at most MAX_ROWS_PER_CALL
rows, and within the channel's message sizes, per call). `_predict_calls` and
`_evaluate_calls` return either the one request of an input that fits in one call, or a
plan: a generator (like training.fit_plan) that yields each chunk's request, is sent each
reply, and returns the combined result. The sync client drives it with blocking calls and
the async one with awaited calls, so both send the same chunks and combine the same
replies in the same order.

Arrays are encoded by the contract's codec (`nnserve.v1.tensors`): one `tobytes()` per
array, no Python loop over elements. Casts follow `nnserve.kernels.Network`: lists become
arrays of the model's dtype, arrays of a dtype the wire has are sent as they are (the
server refuses lossy ones, as Network does), other dtypes that cast safely are cast.
"""

import datetime
import math
from dataclasses import dataclass

import numpy as np

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.models import (layers_to_proto, spec_from_proto, spec_to_proto, state_from_proto,
                               state_to_proto)
from nnserve.v1.tensors import to_array, to_tensor

from . import training
from .channel import DEFAULT_MAX_MESSAGE_BYTES
from .errors import MixedVersionsError, encoding

__all__ = ["MAX_ROWS_PER_CALL", "MAX_VERSION_ROUNDS", "MESSAGE_HEADROOM", "ModelInfo",
           "ModelMessages", "check_batch_size", "create_request", "inputs_array",
           "inputs_tensor", "rows_per_call", "targets_array",
           "targets_tensor"]

_WIRE_DTYPES = ("float32", "float64", "int32", "int64")

# Rows per Predict/Evaluate call when batch_size is None: the server's default
# max_rows_per_request (service/settings.py). A server configured lower needs batch_size=.
MAX_ROWS_PER_CALL = 16384
# Bytes of a request or reply besides its arrays' rows: model id or name, tensor shapes and
# dtypes, protobuf framing (a few hundred bytes; the rest is margin).
MESSAGE_HEADROOM = 64 << 10
# Times the chunks that saw an older weights version than the newest one are re-run before
# a split Predict/Evaluate gives up with MixedVersionsError.
MAX_VERSION_ROUNDS = 3


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


@dataclass(frozen=True)
class ModelInfo:
    """A model as the server described it (GetModel, ListModels, CreateModel, DeleteModel).

    spec is a dict like `Network.spec` with every hyper-parameter set; times are aware
    UTC datetimes.
    """

    id: str
    name: str
    spec: dict
    num_parameters: int
    step: int
    version: int
    create_time: datetime.datetime
    update_time: datetime.datetime

    @classmethod
    def from_proto(cls, message):
        """The ModelInfo of an nnserve.v1.Model message."""
        return cls(id=message.id, name=message.name, spec=spec_from_proto(message.spec),
                   num_parameters=message.num_parameters, step=message.step,
                   version=message.version,
                   create_time=message.create_time.ToDatetime(tzinfo=datetime.timezone.utc),
                   update_time=message.update_time.ToDatetime(tzinfo=datetime.timezone.utc))


def create_request(layers, activations, loss, *, name=None, optimizer="sgd", init="he",
                   dtype="float32", **hyper):
    """A CreateModelRequest; hyper-parameters given as None stay unset (server default).

    The required enums default to Network's defaults (sgd, he, float32); the optional
    hyper-parameters' server defaults are Network's too (see nnserve.proto).
    """
    with encoding("CreateModel"):
        spec = {"layers": list(layers), "activations": list(activations), "loss": loss,
                "optimizer": optimizer, "init": init, "dtype": dtype}
        spec.update({key: value for key, value in hyper.items() if value is not None})
        if "betas" in spec:
            spec["betas"] = list(spec["betas"])
        return pb.CreateModelRequest(spec=spec_to_proto(spec), name=name or "")


def inputs_array(x, dtype):
    """Inputs as an array to send to a model computing in `dtype`, cast only as Network would."""
    if not isinstance(x, np.ndarray):
        return np.asarray(x, dtype=dtype)
    if x.dtype.name not in _WIRE_DTYPES and np.can_cast(x.dtype, dtype, "safe"):
        return x.astype(dtype)
    return x


def targets_array(y, dtype, loss):
    """Targets as an array to send: class ids (n,) as integers for cross_entropy, else of `dtype`."""
    class_ids = loss == "cross_entropy" and np.ndim(y) == 1
    if not isinstance(y, np.ndarray):
        y = np.asarray(y) if class_ids else np.asarray(y, dtype=dtype)
    if y.dtype.name not in _WIRE_DTYPES:
        if class_ids and y.dtype.kind in "iu" and np.can_cast(y.dtype, np.int64, "safe"):
            return y.astype(np.int64)
        if np.can_cast(y.dtype, dtype, "safe"):
            return y.astype(dtype)
    return y


def inputs_tensor(x, dtype, name="x"):
    """Encode inputs (see inputs_array) as a Tensor."""
    return to_tensor(inputs_array(x, dtype), name)


def targets_tensor(y, dtype, loss, name="y"):
    """Encode targets (see targets_array) as a Tensor."""
    return to_tensor(targets_array(y, dtype, loss), name)


class ModelMessages:
    """Requests and reply handling of one model's RPCs, shared by both RemoteModel kinds.

    Holds the model's description and the latest step and version this handle has seen.
    """

    def __init__(self, info):
        self._set_info(info)

    def _set_info(self, info):
        self._info = info
        self._dtype = np.dtype(info.spec["dtype"])
        self._step = info.step
        self._version = info.version
        self._reply_row_bytes = info.spec["layers"][-1] * self._dtype.itemsize  # of Predict

    # -- what never changes -------------------------------------------------------------

    @property
    def info(self):
        """The ModelInfo from the last describe (create, get, list or refresh)."""
        return self._info

    @property
    def id(self):
        """The server-assigned id (32 hexadecimal digits)."""
        return self._info.id

    @property
    def name(self):
        """The name given at creation, or ''."""
        return self._info.name

    @property
    def spec(self):
        """A dict like Network.spec: Network(**model.spec) builds the same initial model."""
        spec = self._info.spec
        return {key: list(value) if isinstance(value, list) else value for key, value in spec.items()}

    @property
    def num_parameters(self):
        return self._info.num_parameters

    @property
    def dtype(self):
        """numpy dtype of the weights, of the computation and of every result."""
        return self._dtype

    @property
    def n_inputs(self):
        return self._info.spec["layers"][0]

    @property
    def n_outputs(self):
        return self._info.spec["layers"][-1]

    # -- what this handle last saw ------------------------------------------------------

    @property
    def step(self):
        """Train steps applied, as last seen by this handle (refresh() reads the server's)."""
        return self._step

    @property
    def version(self):
        """Weights version, as last seen by this handle (refresh() reads the server's)."""
        return self._version

    def _saw(self, version, step=None):
        """Keep the values of the newest reply; versions only grow on the server."""
        if version >= self._version:
            self._version = version
            if step is not None:
                self._step = step

    # -- requests and replies -------------------------------------------------------------

    def _get_request(self):
        return pb.GetModelRequest(model=self.id)

    def _on_get(self, reply):
        self._set_info(ModelInfo.from_proto(reply.model))
        return self

    def _delete_request(self):
        return pb.DeleteModelRequest(model=self.id)

    @staticmethod
    def _on_delete(reply):
        return ModelInfo.from_proto(reply.model)

    def _train_step_request(self, x, y):
        with encoding("TrainStep"):
            return pb.TrainStepRequest(model=self.id, x=inputs_tensor(x, self._dtype),
                                       y=targets_tensor(y, self._dtype, self._info.spec["loss"]))

    def _on_train_step(self, reply):
        self._saw(reply.version, reply.step)
        return reply.loss

    def _predict_request(self, x):
        with encoding("Predict"):
            return pb.PredictRequest(model=self.id, x=inputs_tensor(x, self._dtype))

    def _on_predict(self, reply):
        self._saw(reply.version)
        return to_array(reply.outputs, "outputs")

    def _evaluate_request(self, x, y):
        with encoding("Evaluate"):
            return pb.EvaluateRequest(model=self.id, x=inputs_tensor(x, self._dtype),
                                      y=targets_tensor(y, self._dtype, self._info.spec["loss"]))

    def _on_evaluate(self, reply):
        self._saw(reply.version)
        metrics = {"loss": reply.loss}
        if reply.HasField("accuracy"):
            metrics["accuracy"] = reply.accuracy
        return metrics

    # -- Predict and Evaluate in as many calls as the rows need ---------------------------

    def _predict_calls(self, x, batch_size=None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        """The Predict calls for x: (request, None) or (None, plan).

        (request, None) when x fits in one call (the common case, as cheap as it always
        was: x converted and encoded once, whole, no other copy); _on_predict reads the
        reply. Else (None, plan): a generator yielding one request per chunk of
        rows_per_call rows, in order, sent each reply, returning the chunks' outputs
        concatenated, all of one weights version (see _consistent_replies).
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
        return np.concatenate([to_array(reply.outputs, "outputs", copy=False) for reply in replies])

    def _evaluate_calls(self, x, y, batch_size=None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        """The Evaluate calls for (x, y): (request, None) or (None, plan), as _predict_calls.

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
        return metrics

    def _consistent_replies(self, method, requests):
        """Yield each chunk's request (requests: one function per chunk that builds it) and
        receive its reply; return the replies, in order, all of one weights version.

        A model trained between two chunks' calls answers them with different versions.
        The chunks that saw an older version than the newest one seen are then asked again,
        up to MAX_VERSION_ROUNDS times; after that MixedVersionsError is raised (a result
        mixing two models is never returned).
        """
        replies = [None] * len(requests)
        pending = range(len(requests))
        for _ in range(1 + MAX_VERSION_ROUNDS):
            for index in pending:
                reply = yield requests[index]()
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

    def _get_state_request(self):
        return pb.GetStateRequest(model=self.id)

    @staticmethod
    def _on_get_state(reply):
        return state_from_proto(reply.state)

    def _set_state_request(self, state):
        with encoding("SetState"):
            if not isinstance(state, dict):
                raise TypeError(f"state: got {type(state).__name__}, expected the dict get_state() returns")
            return pb.SetStateRequest(model=self.id, state=state_to_proto(state))

    def _on_set_state(self, reply):
        self._saw(reply.version, reply.step)

    def _fit_plan(self, x, y, **options):
        """training.fit_plan over x and y converted once, as train_step would convert them."""
        with encoding("TrainStep"):
            x = inputs_array(x, self._dtype)
            y = targets_array(y, self._dtype, self._info.spec["loss"])
        validation = options.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) == 2:
            with encoding("Evaluate"):
                options["validation_data"] = (
                    inputs_array(validation[0], self._dtype),
                    targets_array(validation[1], self._dtype, self._info.spec["loss"]))
        return training.fit_plan(x, y, **options)

    def _set_weights_request(self, weights):
        with encoding("SetWeights"):
            if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__iter__"):
                raise TypeError(f"weights: got {type(weights).__name__}, expected a list of (W, b) "
                                "pairs, one per layer")
            return pb.SetWeightsRequest(model=self.id, weights=layers_to_proto(weights))

    def _on_set_weights(self, reply):
        self._saw(reply.version, reply.step)

    def __repr__(self):
        spec = self._info.spec
        name = f", name={self.name!r}" if self.name else ""
        return (f"{type(self).__name__}(id={self.id!r}{name}, layers={spec['layers']}, "
                f"loss={spec['loss']!r}, dtype={spec['dtype']!r}, step={self._step})")


def list_request(page_size, page_token):
    with encoding("ListModels"):
        return pb.ListModelsRequest(page_size=page_size, page_token=page_token)


def get_request(model):
    return pb.GetModelRequest(model=model)


def delete_request(model):
    return pb.DeleteModelRequest(model=model)
