"""Concurrency over real gRPC: 16 clients mixing TrainStep and Predict for a bounded time."""

import threading
import time
from collections import defaultdict

import grpc
import numpy as np

from nnserve.model import Network, warmup
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.models import spec_from_proto
from service_support import classifier_spec, make_batch, pb, running_server, to_array, to_tensor

N_CLIENTS = 16
SECONDS = 2.5


class Client:
    """One client thread's record of what it asked and what the server answered."""

    def __init__(self, index):
        self.index = index
        self.rng = np.random.default_rng(100 + index)
        self.probe = self.rng.normal(size=(2, 6)).astype(np.float32)
        self.batch = make_batch(self.rng, 5, 6, 3)
        self.spec = classifier_spec((6, 10, 3), optimizer=pb.OPTIMIZER_ADAM, learning_rate=0.01,
                                    seed=index)
        self.model = None
        self.shared_trains = []  # (loss, step, version)
        self.shared_predicts = []  # (version, outputs)
        self.shared_versions = []  # every version seen on the shared model, in call order
        self.own_trains = []
        self.own_predicts = []
        self.errors = []


def _replay(spec, batch, trains, predicts):
    """Check recorded train losses and predictions against an in-process Network that
    applies the same batch step by step: version v's weights are v steps on `batch`.

    trains: [(loss, step, version)]; predicts: [(version, probe, outputs)].
    """
    local = Network(**spec_from_proto(spec))
    losses = {step: loss for loss, step, _ in trains}
    by_version = defaultdict(list)
    for version, probe, outputs in predicts:
        by_version[version].append((probe, outputs))
    for version in range(max([0, *losses, *by_version]) + 1):
        if version:
            assert local.train_step(*batch) == losses[version], f"loss of step {version}"
        for probe, outputs in by_version[version]:
            np.testing.assert_array_equal(outputs, local.predict(probe), err_msg=f"version {version}")


def test_sixteen_clients_mixing_train_and_predict():
    """16 threads training and predicting on one shared model and their own: no errors, no lost
    step, per-client non-decreasing versions, and every prediction equals its version's weights."""
    warmup()
    with running_server(workers=N_CLIENTS) as live:
        shared_spec = classifier_spec((6, 12, 3), momentum=0.9, learning_rate=0.01, seed=1)
        shared = live.stub.CreateModel(pb.CreateModelRequest(spec=shared_spec, name="shared")).model
        # Every client trains the shared model on the same batch, so the weights after k steps
        # do not depend on which clients made them: version k = k steps on this batch.
        shared_x, shared_y = make_batch(np.random.default_rng(0), 8, 6, 3)
        shared_request = pb.TrainStepRequest(model=shared.id, x=to_tensor(shared_x), y=to_tensor(shared_y))
        clients = [Client(i) for i in range(N_CLIENTS)]
        for client in clients:
            client.model = live.stub.CreateModel(pb.CreateModelRequest(spec=client.spec)).model.id
        start = threading.Barrier(N_CLIENTS)
        deadline = []

        def work(client):
            channel = grpc.insecure_channel(live.target)
            stub = pb_grpc.ModelServiceStub(channel)
            own_x, own_y = client.batch
            own_train = pb.TrainStepRequest(model=client.model, x=to_tensor(own_x), y=to_tensor(own_y))
            own_predict = pb.PredictRequest(model=client.model, x=to_tensor(client.probe))
            shared_predict = pb.PredictRequest(model="shared", x=to_tensor(client.probe))
            try:
                start.wait(timeout=30)
                while time.monotonic() < deadline[0]:
                    choice = client.rng.integers(4)
                    if choice == 0:
                        reply = stub.TrainStep(shared_request, timeout=30)
                        client.shared_trains.append((reply.loss, reply.step, reply.version))
                        client.shared_versions.append(reply.version)
                    elif choice == 1:
                        reply = stub.Predict(shared_predict, timeout=30)
                        client.shared_predicts.append((reply.version, to_array(reply.outputs)))
                        client.shared_versions.append(reply.version)
                    elif choice == 2:
                        reply = stub.TrainStep(own_train, timeout=30)
                        client.own_trains.append((reply.loss, reply.step, reply.version))
                    else:
                        reply = stub.Predict(own_predict, timeout=30)
                        client.own_predicts.append((reply.version, to_array(reply.outputs)))
            except Exception as error:  # recorded and asserted on below
                client.errors.append(repr(error))
            finally:
                channel.close()

        threads = [threading.Thread(target=work, args=(client,)) for client in clients]
        deadline.append(time.monotonic() + SECONDS + 1.0)  # 1 s for the threads to reach the barrier
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert [c.errors for c in clients] == [[]] * N_CLIENTS

        shared_trains = [t for c in clients for t in c.shared_trains]
        n_steps = len(shared_trains)
        assert n_steps > 50 and sum(len(c.shared_predicts) for c in clients) > 50
        assert sorted(step for _, step, _ in shared_trains) == list(range(1, n_steps + 1))
        assert all(step == version for _, step, version in shared_trains)
        final = live.stub.GetModel(pb.GetModelRequest(model=shared.id)).model
        assert (final.step, final.version) == (n_steps, n_steps)
        for client in clients:
            versions = client.shared_versions
            assert versions == sorted(versions), f"client {client.index} saw versions go back"

        _replay(shared_spec, (shared_x, shared_y), shared_trains,
                [(version, client.probe, outputs) for client in clients
                 for version, outputs in client.shared_predicts])

        for client in clients:
            steps = [step for _, step, _ in client.own_trains]
            assert steps == list(range(1, len(steps) + 1))
            assert [v for _, _, v in client.own_trains] == steps
            own_versions = [v for v, _ in client.own_predicts]
            assert all(a <= b for a, b in zip(own_versions, own_versions[1:]))
            model = live.stub.GetModel(pb.GetModelRequest(model=client.model)).model
            assert (model.step, model.version) == (len(steps), len(steps))
            _replay(client.spec, client.batch, client.own_trains,
                    [(version, client.probe, outputs) for version, outputs in client.own_predicts])
