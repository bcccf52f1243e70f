"""The reference servers of `nnserve bench service`, run as their own processes.

    python -m nnserve.bench.bare_server floor    # decode the tensors, return a fixed result
    python -m nnserve.bench.bare_server weights  # the floor, reading a model's weights per Predict
    python -m nnserve.bench.bare_server torch    # the same server calling a PyTorch model

All three serve nnserve.v1.ModelService from the same generated code as nnserve, on a
`grpc.server` with the same thread count, so the load generator and every byte on the wire
are the same; they implement only what the benchmark calls (CreateModel, DeleteModel,
Predict, TrainStep), without validation, limits, health or metrics. The bound port is
printed as `PORT <n>` on stdout; SIGTERM or SIGINT stops the server.

- floor: the best any Python gRPC service can do here. Predict decodes x and returns a
  zero tensor of the right shape (prebuilt per batch size); TrainStep decodes x and y and
  returns a fixed reply.
- weights: the floor whose Predict also reads every byte of a float32 copy of the model's
  weights and biases once (numpy's max over each), then answers the same fixed result: the
  best any service can do that reads its weights per request, as every batch-1 Predict
  must. On a machine whose caches lose the weights between requests, this, not the floor,
  is what memory bandwidth allows.
- torch: what users would otherwise write: the layers of the spec as a
  `torch.nn.Sequential` (float32), Predict under `torch.inference_mode()` with softmax,
  TrainStep with `torch.optim.SGD` and `CrossEntropyLoss` on the logits, one lock per
  model around train steps (predictions take no lock).
"""

import argparse
import signal
import sys
import threading
import uuid
from concurrent import futures

import grpc
import numpy as np

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.tensors import to_array, to_tensor

__all__ = ["FloorServicer", "TorchServicer", "WeightsFloorServicer", "main"]

WORKERS = 16  # nnserve serve's default --workers
MAX_MESSAGE_BYTES = 64 << 20  # nnserve serve's default --max-message-bytes


class FloorServicer(pb_grpc.ModelServiceServicer):
    """Decodes what it is sent and answers without computing anything."""

    def __init__(self):
        self._outputs = {}  # model id -> n_out
        self._replies = {}  # (n_samples, n_out) -> PredictResponse

    def CreateModel(self, request, context):
        model_id = uuid.uuid4().hex
        self._outputs[model_id] = request.spec.layers[-1]
        return pb.CreateModelResponse(model=pb.Model(id=model_id, name=request.name))

    def DeleteModel(self, request, context):
        self._outputs.pop(request.model, None)
        return pb.DeleteModelResponse(model=pb.Model(id=request.model))

    def Predict(self, request, context):
        x = to_array(request.x, "x")
        key = (x.shape[0], self._outputs[request.model])
        reply = self._replies.get(key)
        if reply is None:
            reply = self._replies[key] = pb.PredictResponse(
                outputs=to_tensor(np.zeros(key, np.float32), "outputs"))
        return reply

    def TrainStep(self, request, context):
        to_array(request.x, "x"), to_array(request.y, "y")
        return pb.TrainStepResponse(loss=0.0, step=1, version=1)


class WeightsFloorServicer(FloorServicer):
    """The floor, reading a model-sized set of float32 arrays on each Predict."""

    def __init__(self):
        super().__init__()
        self._weights = {}  # model id -> [weights, biases, ...] of the spec's shapes

    def CreateModel(self, request, context):
        reply = super().CreateModel(request, context)
        layers = request.spec.layers
        self._weights[reply.model.id] = [
            array for n_in, n_out in zip(layers[:-1], layers[1:])
            for array in (np.ones((n_in, n_out), np.float32), np.ones(n_out, np.float32))]
        return reply

    def DeleteModel(self, request, context):
        self._weights.pop(request.model, None)
        return super().DeleteModel(request, context)

    def Predict(self, request, context):
        for array in self._weights[request.model]:
            array.max()
        return super().Predict(request, context)


class TorchServicer(pb_grpc.ModelServiceServicer):
    """A PyTorch model per CreateModel, behind the same server."""

    def __init__(self):
        import torch

        self._torch = torch
        self._models = {}  # model id -> (module, optimizer, loss function, train lock)

    def CreateModel(self, request, context):
        torch = self._torch
        spec = request.spec
        hidden = {pb.ACTIVATION_RELU: torch.nn.ReLU, pb.ACTIVATION_TANH: torch.nn.Tanh,
                  pb.ACTIVATION_SIGMOID: torch.nn.Sigmoid}
        torch.manual_seed(spec.seed)
        layers = []
        for index, (n_in, n_out) in enumerate(zip(spec.layers[:-1], spec.layers[1:])):
            layers.append(torch.nn.Linear(n_in, n_out))
            if index < len(spec.layers) - 2:
                layers.append(hidden[spec.activations[index]]())
        module = torch.nn.Sequential(*layers)  # output softmax: in Predict and in the loss
        optimizer = torch.optim.SGD(module.parameters(), lr=spec.learning_rate or 0.01)
        model_id = uuid.uuid4().hex
        self._models[model_id] = (module, optimizer, torch.nn.CrossEntropyLoss(), threading.Lock())
        return pb.CreateModelResponse(model=pb.Model(id=model_id, name=request.name))

    def DeleteModel(self, request, context):
        self._models.pop(request.model, None)
        return pb.DeleteModelResponse(model=pb.Model(id=request.model))

    def Predict(self, request, context):
        torch = self._torch
        module = self._models[request.model][0]
        x = torch.from_numpy(to_array(request.x, "x"))
        with torch.inference_mode():
            outputs = torch.softmax(module(x), dim=1).numpy()
        return pb.PredictResponse(outputs=to_tensor(outputs, "outputs"))

    def TrainStep(self, request, context):
        torch = self._torch
        module, optimizer, loss_function, lock = self._models[request.model]
        x = torch.from_numpy(to_array(request.x, "x"))
        y = torch.from_numpy(to_array(request.y, "y"))
        with lock:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(module(x), y)
            loss.backward()
            optimizer.step()
        return pb.TrainStepResponse(loss=float(loss), step=1, version=1)


SERVICERS = {"floor": FloorServicer, "weights": WeightsFloorServicer, "torch": TorchServicer}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(SERVICERS))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    servicer = SERVICERS[args.kind]()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0)])
    pb_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{args.host}:0")
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    server.start()
    print(f"PORT {port}", flush=True)
    stopping.wait()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
