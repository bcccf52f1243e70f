"""Routing: the SDK's x-nnserve-model header and nginx's consistent hash on it (deploy/nginx)
put every call for one model on one server, and CreateModel's client-chosen id."""

import contextlib

import grpc
import numpy as np

from cluster_support import nginx
from nnserve.clients import Client
from service_support import call_error, classifier_spec, pb, running_server

N_SERVERS = 3
N_MODELS = 30


def test_every_call_for_a_model_reaches_the_server_that_created_it(tmp_path):
    """30 models created, trained and predicted through nginx with the SDK each live on
    exactly one of three servers, whose step count equals the steps sent, and the models
    are spread over more than one server."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(running_server()) for _ in range(N_SERVERS)]
        proxy_port = stack.enter_context(nginx([s.port for s in servers], tmp_path))
        client = stack.enter_context(Client(f"127.0.0.1:{proxy_port}"))
        rng = np.random.default_rng(0)
        steps = {}
        for index in range(N_MODELS):
            model = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy",
                                        name=f"m{index}" if index % 2 else None, seed=index)
            x = rng.normal(size=(16, 4)).astype(np.float32)
            y = rng.integers(0, 3, size=16)
            for _ in range(3):
                model.train_step(x, y)
            losses = list(model.train_stream([(x, y)] * 2))
            assert len(losses) == 2
            assert model.predict(x).shape == (16, 3)
            assert len(list(model.predict_stream([x, x]))) == 2
            assert model.refresh().step == 5
            steps[model.id] = 5

        holders = {model_id: [s for s in servers if model_id in {e.id for e in s.server.registry.list(1000)[0]}]
                   for model_id in steps}
        assert all(len(found) == 1 for found in holders.values()), holders
        for model_id, (server,) in holders.items():
            assert server.server.registry.get(model_id).network.step == steps[model_id]
        per_server = [len(server.server.registry) for server in servers]
        assert sum(per_server) == N_MODELS and max(per_server) < N_MODELS, per_server


def test_create_model_takes_a_client_chosen_id():
    """CreateModel with an id creates the model under it; an id in use is ALREADY_EXISTS
    and one not of the ids' form is INVALID_ARGUMENT."""
    model_id = "0123456789abcdef0123456789abcdef"
    with running_server() as running:
        created = running.stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(), id=model_id))
        assert created.model.id == model_id
        again = pb.CreateModelRequest(spec=classifier_spec(), id=model_id, name="other")
        assert "id" in call_error(running.stub.CreateModel, again, grpc.StatusCode.ALREADY_EXISTS)
        for bad in ("0123456789ABCDEF0123456789ABCDEF", "xyz", model_id + "0"):
            call_error(running.stub.CreateModel, pb.CreateModelRequest(spec=classifier_spec(), id=bad),
                       grpc.StatusCode.INVALID_ARGUMENT)
        assert len(running.server.registry) == 1
