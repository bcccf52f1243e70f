"""The REST binding of the Open Inference Protocol in cluster mode: each model operation runs
where the model is owned.

gRPC calls are routed by `ClusterRouter`; a REST request cannot be forwarded as it came
(the owner's REST port is not in etcd, and the caller's connection is HTTP/1.1), so
`ClusterInference` puts the same decision in front of the OpenInference the REST routes
call: a model this server owns (or claims now) is served here; any other is asked of its
owner with the protocol's gRPC binding, which every server serves on its advertise
address, with the caller's token. The owner then validates, counts and answers the request
exactly as if it had been sent to it, and its refusal reaches the caller with the same
status.
"""

import grpc
import numpy as np

from nnserve.oip import grpc_service_pb2 as oip
from nnserve.oip import grpc_service_pb2_grpc as oip_grpc

from ..errors import received_error
from ..open_inference import DTYPES, Output, input_array
from .routing import forwarded_metadata

__all__ = ["ClusterInference"]

# How long a forwarded REST request may take at the owner (REST requests carry no deadline).
FORWARD_SECONDS = 60.0


class ClusterInference:
    """An OpenInference's operations for the REST routes, each run here or at its owner."""

    def __init__(self, local, node, channels):
        self.local = local
        self._node = node
        self._channels = channels

    def ready(self):
        return self.local.ready()

    def index(self):
        """This server's models (as RepositoryIndex over gRPC, which is not routed)."""
        return self.local.index()

    def for_caller(self, authorization):
        """The operations as run for a caller with this Authorization header (forwarded)."""
        return _Caller(self, authorization)

    def owner(self, model, method):
        """None when `model` is served here, else a stub on its owner."""
        owner = self._node.locate(model, method, forwarded=False) if model else None
        return None if owner is None else oip_grpc.GRPCInferenceServiceStub(self._channels(owner))

    def forward(self, call, request, authorization):
        metadata = [("authorization", authorization)] if authorization else []
        try:
            return call(request, metadata=forwarded_metadata(metadata, self._node.membership.advertise),
                        timeout=FORWARD_SECONDS)
        except grpc.RpcError as error:  # the owner's status, as our domain error
            raise received_error(error) from None


class _Caller:
    """ClusterInference's model operations for one caller: OpenInference's signatures."""

    def __init__(self, cluster, authorization):
        self._cluster = cluster
        self._local = cluster.local
        self._authorization = authorization
        self.ready = cluster.ready
        self.index = cluster.index

    def _remote(self, model, method):
        return self._cluster.owner(model, method)

    def _forward(self, call, request):
        return self._cluster.forward(call, request, self._authorization)

    def entry(self, model, version=""):
        stub = self._remote(model, "ModelReady")
        if stub is None:
            return self._local.entry(model, version)
        self._forward(stub.ModelReady, oip.ModelReadyRequest(name=model, version=version))
        return None

    def metadata(self, model, version=""):
        stub = self._remote(model, "ModelMetadata")
        if stub is None:
            return self._local.metadata(model, version)
        answer = self._forward(stub.ModelMetadata, oip.ModelMetadataRequest(name=model, version=version))
        return (list(answer.versions), [(t.name, t.datatype, tuple(t.shape)) for t in answer.inputs],
                [(t.name, t.datatype, tuple(t.shape)) for t in answer.outputs])

    def config(self, model, version=""):
        stub = self._remote(model, "ModelConfig")
        if stub is None:
            return self._local.config(model, version)
        return self._forward(stub.ModelConfig, oip.ModelConfigRequest(name=model, version=version)).config

    def infer(self, request):
        stub = self._remote(request.model, "ModelInfer")
        if stub is None:
            return self._local.infer(request)
        # JSON numbers become raw bytes here, refused with the local path's message if they
        # are not numbers; the owner checks everything else.
        dtype = DTYPES.get(request.datatype)
        values = request.values
        if dtype is not None and not isinstance(values, (bytes, bytearray, memoryview)):
            values = input_array(request, dtype).tobytes()
        tensor = oip.ModelInferRequest.InferInputTensor(
            name=request.input_name, datatype=request.datatype, shape=request.shape)
        forwarded = oip.ModelInferRequest(
            model_name=request.model, model_version=request.version, id=request.id,
            inputs=[tensor], raw_input_contents=[bytes(values)] if dtype is not None else [],
            outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name=name)
                     for name in request.outputs])
        answer = self._forward(stub.ModelInfer, forwarded)
        return answer.model_version, [
            Output(t.name, t.datatype, tuple(t.shape),
                   np.frombuffer(raw, DTYPES[t.datatype]).reshape(tuple(t.shape)))
            for t, raw in zip(answer.outputs, answer.raw_output_contents)]
