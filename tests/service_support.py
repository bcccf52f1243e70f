"""Shared pieces of the service tests: a real server on 127.0.0.1:0, stubs, specs, snapshots.

Every server here is `nnserve.service.create_server(...)` bound to a free loopback port and
spoken to through the generated stubs over a real channel.
"""

import contextlib

import grpc
import numpy as np
import pytest

from nnserve.service import Settings, create_server
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.tensors import to_array, to_tensor

__all__ = ["Running", "call_error", "classifier_spec", "make_batch", "pb", "running_server",
           "snapshot", "to_array", "to_tensor"]


class Running:
    """A started server with a channel and a ModelService stub to it."""

    def __init__(self, server, port, channel):
        self.server = server
        self.port = port
        self.channel = channel
        self.stub = pb_grpc.ModelServiceStub(channel)

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_server(**settings):
    """Yield a Running server on 127.0.0.1 with free ports (gRPC and metrics); stop it afterwards."""
    options = {"host": "127.0.0.1", "port": 0, "metrics_port": -1, "http_port": -1, **settings}
    server, port = create_server(Settings(**options))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 256 << 20),
        ("grpc.max_send_message_length", 256 << 20)])
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield Running(server, port, channel)
    finally:
        channel.close()
        server.stop(0).wait(10)


def classifier_spec(layers=(4, 8, 3), *, dtype=pb.DATA_TYPE_FLOAT32, optimizer=pb.OPTIMIZER_SGD,
                    **hyper):
    """A ModelSpec of a relu/softmax classifier with cross-entropy; hyper sets optional fields."""
    return pb.ModelSpec(
        layers=layers,
        activations=[pb.ACTIVATION_RELU] * (len(layers) - 2) + [pb.ACTIVATION_SOFTMAX],
        loss=pb.LOSS_CROSS_ENTROPY, optimizer=optimizer, init=pb.INIT_HE, dtype=dtype, **hyper)


def make_batch(rng, n_samples, n_in, n_classes, dtype=np.float32):
    """(x (n, n_in) of dtype, y (n,) int64 class ids) drawn from rng."""
    x = rng.normal(size=(n_samples, n_in)).astype(dtype)
    y = rng.integers(0, n_classes, size=n_samples).astype(np.int64)
    return x, y


def call_error(method, request, code):
    """Call an RPC that must fail with `code`; return the error's details."""
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details()


def snapshot(stub, model):
    """Everything observable about a model: (GetModel response, serialized GetState)."""
    description = stub.GetModel(pb.GetModelRequest(model=model), timeout=30).model
    state = stub.GetState(pb.GetStateRequest(model=model), timeout=30).state
    return description, state.SerializeToString()
