"""What the sync and async clients share: requests built from numpy, results read from replies.

Nothing here does I/O. Each RPC is three steps: build the request (here), call it (the
sync or the grpc.aio client), read the reply (here). So `Client` and `AsyncClient` differ
only in how they wait, and cannot drift apart in what they send or return. Predict and
Evaluate of more rows than one call carries are planned in chunking.py; the streams'
requests and results are made here too, and exchanged by streams.py.

Arrays are encoded by the contract's codec (`nnserve.v1.tensors`): one `tobytes()` per
array, no Python loop over elements, after the batch rule's casts (nnserve.model.batches,
which the server applies too). Results are the model layer's result types, carrying the
weights version each reply named (nnserve.model.results), as in-process calls return them.
"""

import datetime
import itertools
import uuid
from dataclasses import dataclass

import numpy as np

from nnserve.model.batches import inputs_array, targets_array
from nnserve.model.fit import check_fit, epoch_batches
from nnserve.model.results import Change, Evaluation, ExportedModel, Outputs, StepLoss
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.models import (layers_to_proto, options_to_proto, spec_from_proto, spec_to_proto,
                               state_from_proto, state_to_proto)
from nnserve.v1.tensors import to_array, to_tensor

from .chunking import ChunkedReads
from .errors import encoding
from .jobs import as_dataset_pair
from .streams import Exchange

__all__ = ["ModelInfo", "ModelMessages", "create_request", "fit_runs", "import_request", "inputs_tensor",
           "targets_tensor"]

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
        # The id is chosen here so that CreateModel is routed where the model's later calls go.
        return pb.CreateModelRequest(spec=spec_to_proto(spec), name=name or "", id=uuid.uuid4().hex)


def inputs_tensor(x, dtype, name="x"):
    """Encode inputs (batches.inputs_array) as a Tensor."""
    return to_tensor(inputs_array(x, dtype), name)


def targets_tensor(y, dtype, loss, name="y"):
    """Encode targets (batches.targets_array) as a Tensor."""
    return to_tensor(targets_array(y, dtype, loss), name)


class ModelMessages(ChunkedReads):
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

    def _train_step_request(self, x, y, method="TrainStep"):
        with encoding(method):
            return pb.TrainStepRequest(model=self.id, x=inputs_tensor(x, self._dtype),
                                       y=targets_tensor(y, self._dtype, self._info.spec["loss"]))

    def _on_train_step(self, reply):
        self._saw(reply.version, reply.step)
        return StepLoss(reply.loss, reply.step, reply.version)

    def _train_exchange(self):
        """A TrainStream's bookkeeping: (x, y) batches in, StepLoss out; the steps after a
        refused batch are drained into its error's applied_after."""
        return Exchange("TrainStream", self._train_stream_request, self._on_train_step, drain=True,
                        route=self.id)

    def _train_stream_request(self, batch):
        with encoding("TrainStream"):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError(f"batches: got an item of type {type(batch).__name__}, expected "
                                "(x, y) pairs")
        return self._train_step_request(*batch, method="TrainStream")

    def _predict_request(self, x, method="Predict"):
        with encoding(method):
            return pb.PredictRequest(model=self.id, x=inputs_tensor(x, self._dtype))

    def _on_predict(self, reply):
        self._saw(reply.version)
        return Outputs.of(to_array(reply.outputs, "outputs"), reply.version)

    def _predict_exchange(self):
        """A PredictStream's bookkeeping: x arrays in, Outputs out."""
        return Exchange("PredictStream", lambda x: self._predict_request(x, "PredictStream"),
                        self._on_predict, drain=False, route=self.id)

    def _evaluate_request(self, x, y):
        with encoding("Evaluate"):
            return pb.EvaluateRequest(model=self.id, x=inputs_tensor(x, self._dtype),
                                      y=targets_tensor(y, self._dtype, self._info.spec["loss"]))

    def _on_evaluate(self, reply):
        self._saw(reply.version)
        metrics = {"loss": reply.loss}
        if reply.HasField("accuracy"):
            metrics["accuracy"] = reply.accuracy
        return Evaluation(metrics, reply.version)

    def _get_state_request(self):
        return pb.GetStateRequest(model=self.id)

    def _on_get_state(self, reply):
        self._saw(reply.version)
        return {**state_from_proto(reply.state), "version": reply.version}

    def _set_state_request(self, state):
        with encoding("SetState"):
            if not isinstance(state, dict):
                raise TypeError(f"state: got {type(state).__name__}, expected the dict get_state() returns")
            return pb.SetStateRequest(model=self.id, state=state_to_proto(state))

    def _on_set_state(self, reply):
        self._saw(reply.version, reply.step)
        return Change(reply.step, reply.version)

    def _fit_arrays(self, data, y, **fit_arguments):
        """None for a RemoteDataset (trained on as it is), else the (x, y) of fit's or
        start_training's arguments cast once by the batch rule (as train_step would cast each
        batch of them) and checked as the fit loop checks them, before any call."""
        pair = as_dataset_pair(data, y)
        if pair is None:
            return None
        with encoding("TrainStep"):
            x = inputs_array(pair[0], self._dtype)
            y = targets_array(pair[1], self._dtype, self._info.spec["loss"])
        check_fit(x, y, **fit_arguments)
        return x, y

    def _streamed_fit_arrays(self, data, y, **fit_arguments):
        """The (x, y) of fit(stream=True): arrays only, cast and checked as _fit_arrays does."""
        arrays = self._fit_arrays(data, y, **fit_arguments)
        if arrays is None:
            raise TypeError("x: got a RemoteDataset with stream=True, expected arrays (a dataset "
                            "stored on the server is trained on by a training job: stream=False)")
        return arrays

    def _set_weights_request(self, weights):
        with encoding("SetWeights"):
            if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__iter__"):
                raise TypeError(f"weights: got {type(weights).__name__}, expected a list of (W, b) "
                                "pairs, one per layer")
            return pb.SetWeightsRequest(model=self.id, weights=layers_to_proto(weights))

    def _on_set_weights(self, reply):
        self._saw(reply.version, reply.step)
        return Change(reply.step, reply.version)

    def __repr__(self):
        spec = self._info.spec
        name = f", name={self.name!r}" if self.name else ""
        return (f"{type(self).__name__}(id={self.id!r}{name}, layers={spec['layers']}, "
                f"loss={spec['loss']!r}, dtype={spec['dtype']!r}, step={self._step})")

    def _export_request(self):
        return pb.ExportModelRequest(model=self.id, format=pb.MODEL_FORMAT_ONNX)

    def _on_export(self, reply):
        self._saw(reply.version, reply.step)
        return ExportedModel(reply.model_data, reply.step, reply.version)


def fit_runs(x, y, *, epochs, batch_size, shuffle, seed, validating):
    """The batches of a streamed fit (nnserve.model.fit.epoch_batches), in runs of one
    TrainStream each: every epoch in one run, or with validation one run per epoch (its
    steps must all be answered before the Evaluate after it, and the next epoch's steps
    must wait for that Evaluate)."""
    epochs_of_batches = epoch_batches(x, y, epochs=epochs, batch_size=batch_size,
                                      shuffle=shuffle, seed=seed)
    if validating:
        return epochs_of_batches
    return iter([itertools.chain.from_iterable(epochs_of_batches)] if epochs else [])


def list_request(page_size, page_token):
    with encoding("ListModels"):
        return pb.ListModelsRequest(page_size=page_size, page_token=page_token)


def get_request(model):
    return pb.GetModelRequest(model=model)


def delete_request(model):
    return pb.DeleteModelRequest(model=model)


def import_request(data, loss, *, name=None, optimizer="sgd", **hyper):
    """An ImportModelRequest of ONNX bytes; hyper-parameters given as None stay unset (the
    server's defaults, Network's)."""
    with encoding("ImportModel"):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"source: got {type(data).__name__}, expected the bytes of an ONNX "
                            "model or the path of its file")
        options = {"loss": loss, "optimizer": optimizer}
        options.update({key: value for key, value in hyper.items() if value is not None})
        if "betas" in options:
            options["betas"] = list(options["betas"])
        return pb.ImportModelRequest(name=name or "", format=pb.MODEL_FORMAT_ONNX,
                                     model_data=bytes(data), options=options_to_proto(options),
                                     id=uuid.uuid4().hex)
