"""--health-port: the health service alone, in plaintext, on a port and threads of its own.

For probes: the kubelet's gRPC probes speak plaintext (so cannot check a TLS port), and on
the main port a health check shares gRPC's concurrent-RPC cap with a flood of calls.
"""

import contextlib
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nnserve.model import warmup
from nnserve.service import Settings, create_server
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from metrics_support import rpc, scrape, value
from process_support import ServeProcess
from security_support import Authority
from service_support import classifier_spec, make_batch, pb, to_tensor

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MODEL_SERVICE = "nnserve.v1.ModelService"


def _status(port, service=""):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


@contextlib.contextmanager
def _server(**settings):
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0,
                                          health_port=-1, **settings))
    try:
        yield server, port
    finally:
        server.stop(0).wait(10)


def test_health_port_follows_the_server_from_start_to_stop():
    """NOT_SERVING until set_serving(), then SERVING for the server and ModelService, NOT_SERVING
    again once stop() begins, and the port closes when the server has stopped; ModelService
    itself is not served there."""
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0,
                                          health_port=-1, drain_period=0.5))
    health_port = server.health_port
    assert health_port not in (0, port)
    server.start(serving=False)
    assert _status(health_port) == NOT_SERVING
    server.set_serving()
    assert _status(health_port) == SERVING
    assert _status(health_port, MODEL_SERVICE) == SERVING
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.ModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

    statuses = []
    stopper = threading.Thread(target=lambda: statuses.append(server.stop(1)))
    stopper.start()
    # During the drain period the health port is still up and says NOT_SERVING.
    seen = None
    for _ in range(50):
        seen = _status(health_port)
        if seen == NOT_SERVING:
            break
        time.sleep(0.01)
    assert seen == NOT_SERVING
    stopper.join(10)
    assert statuses[0].wait(10)
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            for _ in range(100):  # the port closes just after the server's Event is set
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                time.sleep(0.05)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_no_health_port_by_default():
    server, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0))
    try:
        assert server.health_port == 0
    finally:
        server.stop(0).wait(10)


def test_plaintext_probes_reach_a_tls_server(tmp_path):
    """With TLS on the main port, a plaintext health check fails there and succeeds on the
    health port, as a kubelet gRPC probe would."""
    authority = Authority("nnserve test CA")
    cert, key = authority.issue("nnserve server", server=True)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    with _server(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")) as (server, port):
        server.start()
        with pytest.raises(grpc.RpcError) as caught:
            _status(port)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _status(server.health_port) == SERVING
        credentials = grpc.ssl_channel_credentials(root_certificates=authority.pem)
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == SERVING


def test_probes_on_the_health_port_answer_through_a_flood():
    """A flood of slow TrainSteps far past --max-concurrent-rpcs and gRPC's own cap: calls are
    refused on the main port, while every check on the health port answers SERVING."""
    warmup()
    with _server(max_concurrent_rpcs=1, workers=1) as (server, port):
        server.start()
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.ModelServiceStub(channel)
            stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec((784, 512, 512, 10)),
                                                   name="wide"), timeout=30)
            x, y = make_batch(np.random.default_rng(0), 1024, 784, 10)
            request = pb.TrainStepRequest(model="wide", x=to_tensor(x), y=to_tensor(y))
            stub.TrainStep(request, timeout=60)
            calls = [stub.TrainStep.future(request, timeout=120) for _ in range(40)]
            checks = []
            while not all(call.done() for call in calls):
                checks.append(_status(server.health_port))
            codes = [call.code() for call in calls]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
    assert checks and all(status == SERVING for status in checks), checks


def test_health_port_in_use_stops_the_start_and_releases_the_state_dir(tmp_path):
    with _server() as (server, _):
        taken = server.health_port
        with pytest.raises(OSError, match="--health-port"):
            create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0, health_port=taken,
                                   state_dir=str(tmp_path)))
    # The failed start let go of the state directory: another server can take it.
    again, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0,
                                      state_dir=str(tmp_path)))
    again.stop(0).wait(10)


def test_serve_logs_the_health_port_and_probes_reach_it():
    with ServeProcess("--health-port", "0") as process:
        assert process.events[-1]["health_port"] == 0
    with ServeProcess("--health-port", "-1") as process:
        health_port = process.events[-1]["health_port"]
        assert health_port > 0 and _status(health_port) == SERVING
        assert _status(health_port, health.OVERALL_HEALTH) == SERVING


def test_checks_on_the_health_port_are_counted_in_the_servers_metrics():
    """A Check on the health port moves grpc_server_handled_total for the health service, as
    one on the main port does (scraped over HTTP and parsed)."""
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=0, health_port=-1))
    server.start()
    labels = rpc("Check", "OK", service=health.SERVICE_NAME)
    try:
        before = value(scrape(server.metrics_port), "grpc_server_handled_total", **labels)
        for _ in range(3):
            assert _status(server.health_port) == SERVING
        assert _status(port) == SERVING
        after = value(scrape(server.metrics_port), "grpc_server_handled_total", **labels)
    finally:
        server.stop(0).wait(10)
    assert after - before == 4
