"""The Open Inference Protocol (KServe v2) over gRPC: inference.GRPCInferenceService on the
registry, beside nnserve.v1 on the same port.

The protocol's terms map onto the registry here once (proto/nnserve/oip/grpc_service.proto
says how to clients): a model name is an nnserve name or id, its one version is the
current weights version, "input" is x and "output" what Predict returns, "class" the
index of each row's largest output for classification losses. The HTTP/REST binding
(service/http) decodes JSON and binary bodies into the same `InferRequest` and calls
the same `OpenInference`, so both bindings accept and refuse exactly the same requests.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple

import numpy as np

from nnserve.oip import grpc_service_pb2 as oip
from nnserve.oip import grpc_service_pb2_grpc as oip_grpc
from nnserve.oip import model_config_pb2 as config_pb

from .errors import DOMAIN_ERRORS, InvalidArgument, LimitExceeded, NotFound, limit_message

__all__ = ["OIP_SERVICE_NAME", "InferRequest", "OpenInference", "OpenInferenceServicer", "Output",
           "input_array", "server_version"]

OIP_SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = "nnserve"
INPUT, OUTPUT, CLASS = "input", "output", "class"
# Protocol datatypes and the numpy dtypes they carry.
DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT64": np.dtype("<i8")}
DATATYPES = {"float32": "FP32", "float64": "FP64"}
CONFIG_TYPES = {"FP32": config_pb.TYPE_FP32, "FP64": config_pb.TYPE_FP64, "INT64": config_pb.TYPE_INT64}
EXTENSIONS = ("model_configuration", "binary_tensor_data")


def server_version():
    """nnserve's installed version."""
    try:
        return version("nnserve")
    except PackageNotFoundError:
        return "unknown"


class InferRequest(NamedTuple):
    """One inference request in either binding's terms, decoded as far as the protocol goes."""

    model: str
    version: str
    id: str
    input_name: str
    datatype: str
    shape: tuple
    values: object  # bytes (raw, little-endian) or a sequence of numbers
    outputs: tuple  # requested output names; () for the default


class Output(NamedTuple):
    """One output tensor of a response."""

    name: str
    datatype: str
    shape: tuple
    array: np.ndarray


def _classes(outputs, loss):
    if loss == "cross_entropy":
        return outputs.argmax(axis=1).astype(np.int64)
    return (outputs[:, 0] >= 0.5).astype(np.int64)  # binary_cross_entropy with one output


def _has_classes(network):
    loss = network.spec["loss"]
    return loss == "cross_entropy" or (loss == "binary_cross_entropy" and network.n_outputs == 1)


class OpenInference:
    """The protocol's operations on a registry, whatever the binding."""

    def __init__(self, registry, settings, is_ready):
        self._registry = registry
        self._max_rows = settings.max_rows_per_request
        self._is_ready = is_ready  # () -> bool: serving (start-up done, no shutdown begun)

    def ready(self):
        return self._is_ready()

    def for_caller(self, authorization):
        """The operations as run for a caller with this Authorization header: on one server
        the same for everyone (a cluster's REST binding forwards it: cluster/remote_inference)."""
        return self

    def entry(self, model, version=""):
        """The registry entry of `model`, if `version` is "" or its current version."""
        if not model:
            raise InvalidArgument("model name: got '', expected an nnserve model's name or id")
        entry = self._registry.get(model)
        current = str(entry.network.version)
        if version not in ("", current):
            raise NotFound(f"model version: got {version!r} for model {model!r}, expected {current!r}, "
                           "its current weights version (or '' for the current one)")
        return entry

    def metadata(self, model, version=""):
        """(versions, inputs, outputs): the tensors as (name, datatype, shape) with -1 for
        the batch axis."""
        network = self.entry(model, version).network
        datatype = DATATYPES[network.dtype.name]
        outputs = [(OUTPUT, datatype, (-1, network.n_outputs))]
        if _has_classes(network):
            outputs.append((CLASS, "INT64", (-1,)))
        return [str(network.version)], [(INPUT, datatype, (-1, network.n_inputs))], outputs

    def config(self, model, version=""):
        """A Triton ModelConfig: dims without the batch axis, max_batch_size the row limit."""
        _, inputs, outputs = self.metadata(model, version)
        return config_pb.ModelConfig(
            name=model, platform=PLATFORM, backend=PLATFORM, max_batch_size=self._max_rows,
            input=[config_pb.ModelInput(name=n, data_type=CONFIG_TYPES[t], dims=s[1:])
                   for n, t, s in inputs],
            output=[config_pb.ModelOutput(name=n, data_type=CONFIG_TYPES[t], dims=s[1:] or (1,))
                    for n, t, s in outputs])

    def index(self):
        """[(name, version)] of every model, in creation order."""
        entries, token = self._registry.list(0, "")
        models = list(entries)
        while token:
            entries, token = self._registry.list(0, token)
            models += entries
        return [(entry.name or entry.id, str(entry.network.version)) for entry in models]

    def infer(self, request):
        """(version, [Output]) of one InferRequest; InvalidArgument / NotFound / limits as
        Predict's."""
        entry = self.entry(request.model, request.version)
        network = entry.network
        wanted = request.outputs or (OUTPUT,)
        known = (OUTPUT, CLASS) if _has_classes(network) else (OUTPUT,)
        for name in wanted:
            if name not in known:
                raise InvalidArgument(f"outputs: got {name!r}, expected one of {', '.join(known)}")
        x = self._input_array(request, network.n_inputs)
        prediction = self._registry.predict(entry.id, x)
        computed = str(prediction.outputs.version)
        if request.version not in ("", computed):  # a step landed between the check and the predict
            raise NotFound(f"model version: got {request.version!r} for model {request.model!r}, "
                           f"expected {computed!r}, its current weights version (or '' for the "
                           "current one)")
        outputs = np.asarray(prediction.outputs)
        rows = outputs.shape[0]
        results = []
        for name in wanted:
            if name == OUTPUT:
                results.append(Output(OUTPUT, DATATYPES[outputs.dtype.name], outputs.shape, outputs))
            else:
                results.append(Output(CLASS, "INT64", (rows,), _classes(outputs, network.spec["loss"])))
        return computed, results

    def _input_array(self, request, n_inputs):
        if request.input_name != INPUT:
            raise InvalidArgument(f"inputs: got {request.input_name!r}, expected one input named 'input'")
        dtype = DTYPES.get(request.datatype)
        if dtype is None or request.datatype == "INT64":
            raise InvalidArgument(f"input datatype: got {request.datatype!r}, expected 'FP32' or 'FP64'")
        shape = request.shape
        if len(shape) != 2 or shape[1] != n_inputs or shape[0] < 1:
            raise InvalidArgument(f"input shape: got {list(shape)}, expected [n, {n_inputs}] with n >= 1")
        if shape[0] > self._max_rows:
            raise LimitExceeded(limit_message("max_rows_per_request", f"{shape[0]} rows",
                                              f"{self._max_rows} rows"))
        count = shape[0] * shape[1]
        if isinstance(request.values, (bytes, bytearray, memoryview)):
            if len(request.values) != count * dtype.itemsize:
                raise InvalidArgument(f"input: got {len(request.values)} bytes, expected {count * dtype.itemsize} "
                                      f"({list(shape)} of {request.datatype})")
            flat = np.frombuffer(request.values, dtype=dtype)
        else:
            if len(request.values) != count:
                raise InvalidArgument(f"input: got {len(request.values)} values, expected {count} "
                                      f"({list(shape)})")
            flat = input_array(request, dtype)
        # A writable array of the native dtype: what the kernels were compiled for.
        return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def input_array(request, dtype):
    """A request's typed values (a sequence of numbers: JSON's, or protobuf's contents) as one
    flat array of `dtype`; InvalidArgument when one is no number."""
    try:
        return np.asarray(request.values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as error:  # a JSON integer beyond any float
        raise InvalidArgument(f"input: got values that are not numbers ({error}), expected "
                              f"{request.datatype} numbers") from None


# -- gRPC binding ---------------------------------------------------------------------------

def _grpc_request(request):
    if len(request.inputs) != 1:
        raise InvalidArgument(f"inputs: got {len(request.inputs)}, expected one input named 'input'")
    tensor = request.inputs[0]
    if request.raw_input_contents:
        values = request.raw_input_contents[0]
    elif tensor.datatype == "FP32":
        values = tensor.contents.fp32_contents
    elif tensor.datatype == "FP64":
        values = tensor.contents.fp64_contents
    else:
        values = ()
    return InferRequest(request.model_name, request.model_version, request.id, tensor.name,
                        tensor.datatype, tuple(tensor.shape), values,
                        tuple(output.name for output in request.outputs))


class OpenInferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService on an OpenInference."""

    def __init__(self, inference):
        self._inference = inference

    def ServerLive(self, request, context):
        return oip.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return oip.ServerReadyResponse(ready=self._inference.ready())

    def ModelReady(self, request, context):
        self._inference.entry(request.name, request.version)
        return oip.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return oip.ServerMetadataResponse(name=PLATFORM, version=server_version(), extensions=EXTENSIONS)

    def ModelMetadata(self, request, context):
        versions, inputs, outputs = self._inference.metadata(request.name, request.version)
        tensors = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=request.name, versions=versions, platform=PLATFORM,
            inputs=[tensors(name=n, datatype=t, shape=s) for n, t, s in inputs],
            outputs=[tensors(name=n, datatype=t, shape=s) for n, t, s in outputs])

    def ModelConfig(self, request, context):
        return oip.ModelConfigResponse(config=self._inference.config(request.name, request.version))

    def RepositoryIndex(self, request, context):
        index = oip.RepositoryIndexResponse.ModelIndex
        return oip.RepositoryIndexResponse(models=[index(name=name, version=version, state="READY")
                                                   for name, version in self._inference.index()])

    def ModelInfer(self, request, context):
        version, outputs = self._inference.infer(_grpc_request(request))
        tensor = oip.ModelInferResponse.InferOutputTensor
        return oip.ModelInferResponse(
            model_name=request.model_name, model_version=version, id=request.id,
            outputs=[tensor(name=o.name, datatype=o.datatype, shape=o.shape) for o in outputs],
            raw_output_contents=[o.array.astype(DTYPES[o.datatype], copy=False).tobytes() for o in outputs])

    def ModelStreamInfer(self, requests, context):
        for request in requests:
            if not context.is_active():
                return
            try:
                response = self.ModelInfer(request, context)
            except DOMAIN_ERRORS as error:
                yield oip.ModelStreamInferResponse(error_message=str(error))
            else:
                yield oip.ModelStreamInferResponse(infer_response=response)
