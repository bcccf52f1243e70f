"""Operations: health, reflection, graceful shutdown, settings, logs and `nnserve serve` as a process."""

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nnserve.cli.main import build_parser, main
from nnserve.model import warmup
from nnserve.service import Settings, create_server
from nnserve.service.logs import JsonFormatter, TextFormatter
from nnserve.service.settings import settings_from_args
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from service_support import classifier_spec, make_batch, pb, running_server, to_tensor

SERVICE = "nnserve.v1.ModelService"
OIP_SERVICE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(channel, service=""):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_is_serving_after_start_overall_and_per_service():
    """After start() health reports SERVING for "" and for ModelService, NOT_FOUND for others."""
    with running_server() as live:
        assert _health(live.channel) == SERVING
        assert _health(live.channel, SERVICE) == SERVING
        with pytest.raises(grpc.RpcError) as caught:
            _health(live.channel, "no.such.Service")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_not_serving_until_marked_ready():
    """A server started with serving=False answers NOT_SERVING until set_serving()."""
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=0))
    server.start(serving=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _health(channel) == NOT_SERVING and _health(channel, SERVICE) == NOT_SERVING
            server.set_serving()
            assert _health(channel) == SERVING and _health(channel, SERVICE) == SERVING
    finally:
        server.stop(0).wait(10)


def test_shutdown_turns_health_not_serving_then_lets_in_flight_rpcs_finish():
    """stop() reports NOT_SERVING during the drain period, lets TrainSteps in flight finish within
    the grace period, then refuses new RPCs."""
    warmup()
    # A drain period long enough that the calls below arrive in it even on a loaded machine.
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=0, drain_period=1.0))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)])
    try:
        stub = pb_grpc.ModelServiceStub(channel)
        model = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec((784, 2048, 10)))).model.id
        x, y = make_batch(np.random.default_rng(0), 4096, 784, 10)
        big = pb.TrainStepRequest(model=model, x=to_tensor(x), y=to_tensor(y))
        stub.TrainStep(big, timeout=60)  # first call allocates the workspaces

        stopped = []
        stopper = threading.Thread(target=lambda: stopped.append(server.stop(grace=30)))
        stopper.start()
        deadline = time.monotonic() + 0.9
        while _health(channel) != NOT_SERVING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _health(channel) == NOT_SERVING and _health(channel, SERVICE) == NOT_SERVING
        # Accepted while draining; the model runs them one after another (~0.3 s each, 2.4 s
        # in all), so some are still in flight when the server starts refusing new RPCs.
        in_flight = [stub.TrainStep.future(big, timeout=60) for _ in range(8)]
        stopper.join(timeout=10)
        assert stopped and not all(call.done() for call in in_flight)
        assert sorted(call.result().step for call in in_flight) == list(range(2, 10))
        assert stopped[0].wait(30)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetModel(pb.GetModelRequest(model=model), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        server.stop(0)


def test_reflection_lists_and_describes_the_service():
    """Server reflection lists ModelService, the Open Inference Protocol's service, health and
    reflection, and resolves the methods and messages of the first two (whose files are in
    different descriptor pools on the server)."""
    with running_server() as live:
        database = ProtoReflectionDescriptorDatabase(live.channel)
        services = set(database.get_services())
        assert {SERVICE, OIP_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        assert [m.name for m in service.methods] == [
            "CreateModel", "GetModel", "ListModels", "DeleteModel", "TrainStep", "Predict",
            "Evaluate", "GetState", "SetState", "SetWeights", "UploadDataset", "GetDataset",
            "ListDatasets", "DeleteDataset", "CreateTrainingJob", "GetTrainingJob",
            "ListTrainingJobs", "CancelTrainingJob", "WatchTrainingJob", "TrainStream",
            "PredictStream", "ExportModel", "ImportModel"]
        oip_service = pool.FindServiceByName(OIP_SERVICE)
        assert [m.name for m in oip_service.methods] == [
            "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
            "ModelInfer", "ModelStreamInfer", "ModelConfig", "RepositoryIndex"]
        config = pool.FindMessageTypeByName("inference.ModelConfigResponse").fields_by_name["config"]
        assert config.message_type.file.name == "nnserve/oip/model_config.proto"


def test_a_port_in_use_is_an_error_not_a_shared_port():
    """Binding a port another server holds raises OSError instead of sharing it (SO_REUSEPORT off)."""
    with running_server() as live:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{live.port}"):
            create_server(Settings(host="127.0.0.1", port=live.port))


# -- settings ------------------------------------------------------------------------------

def _serve_args(argv):
    return build_parser().parse_args(["serve", *argv])


def test_flags_beat_environment_beats_defaults():
    """A flag overrides its NNSERVE_* variable, which overrides the default."""
    environ = {"NNSERVE_PORT": "1234", "NNSERVE_LOG_FORMAT": "json", "NNSERVE_GRACE_PERIOD": "2.5"}
    settings = settings_from_args(_serve_args(["--port", "99"]), environ)
    assert (settings.port, settings.log_format, settings.grace_period) == (99, "json", 2.5)
    assert settings.host == "0.0.0.0" and settings.max_models == Settings().max_models
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize("environ, message", [
    ({"NNSERVE_WORKERS": "many"}, "NNSERVE_WORKERS: got 'many', expected an integer >= 1"),
    ({"NNSERVE_PORT": "70000"}, "port: got 70000, expected an integer in [0, 65535]"),
    ({"NNSERVE_LOG_FORMAT": "xml"}, "log_format: got 'xml', expected one of text, json"),
    ({"NNSERVE_MAX_MODELS": "0"}, "max_models: got 0, expected an integer >= 1"),
])
def test_bad_environment_values_are_refused_with_got_expected(environ, message):
    """A malformed or out-of-range NNSERVE_* value raises ValueError naming variable or option."""
    with pytest.raises(ValueError) as caught:
        Settings.from_env(environ)
    assert str(caught.value) == message


def test_serve_exits_2_on_a_bad_environment_variable(monkeypatch, capsys):
    """`nnserve serve` with a bad NNSERVE_* value prints the problem and exits 2 without serving."""
    monkeypatch.setenv("NNSERVE_PORT", "http")
    assert main(["serve"]) == 2
    assert "NNSERVE_PORT: got 'http', expected an integer in [0, 65535]" in capsys.readouterr().err


def test_serve_help_describes_every_option_and_its_variable():
    """`nnserve serve --help` names every settings field's flag, environment variable and default."""
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    text = " ".join(serve.format_help().split())
    for name, default in vars(Settings()).items():
        assert "--" + name.replace("_", "-") in text
        assert f"env NNSERVE_{name.upper()}; default {default}" in text
    assert "serve" in parser.format_help()


# -- logs ----------------------------------------------------------------------------------

def _record(exc_info=None):
    record = logging.LogRecord("nnserve.test", logging.ERROR, __file__, 1, "went %s", ("wrong",), exc_info)
    record.event, record.port = "failure", 50051
    return record


def test_json_log_lines_are_one_object_per_event_with_traceback():
    """The JSON formatter writes one line per event, with extra fields and the traceback inside."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = JsonFormatter().format(_record(sys.exc_info()))
    assert "\n" not in line
    payload = json.loads(line)
    assert (payload["message"], payload["level"], payload["event"], payload["port"]) == (
        "went wrong", "error", "failure", 50051)
    assert "RuntimeError: boom" in payload["traceback"] and payload["time"].endswith("Z")


def test_text_log_lines_carry_fields_as_key_value():
    """The text formatter writes `time LEVEL logger message key=value ...`."""
    line = TextFormatter().format(_record())
    assert line.split(" ", 1)[1] == "ERROR nnserve.test went wrong event=failure port=50051"


# -- the process ---------------------------------------------------------------------------

def _start_serve(*flags):
    """Start `python -m nnserve.cli serve` on a free port.

    Return (process, port, reader thread, queue of later stderr lines, events seen so far).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "nnserve.cli", "serve", "--host", "127.0.0.1", "--port", "0",
         "--metrics-port", "-1", "--http-port", "0", "--log-format", "json", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(json.loads(line))
        if seen[-1].get("event") == "serving":
            return process, seen[-1]["port"], reader, lines, seen
    process.kill()
    raise AssertionError(f"nnserve serve did not report serving: {seen}")


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_nnserve_serve_process_answers_and_exits_0_on_signal(signal_number):
    """`nnserve serve --port 0` logs JSON lines, says where it listens, serves, and exits 0 on a signal."""
    process, port, reader, lines, seen = _start_serve("--threads", "1", "--grace-period", "5",
                                                      "--workers", "3")
    try:
        assert port > 0 and [e["event"] for e in seen][-2:] == ["warmed_up", "serving"]
        assert seen[-2]["blas_buffers_primed"] == 3  # one per RPC worker
        assert seen[-1]["message"] == f"serving on 127.0.0.1:{port}"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _health(channel) == SERVING
            stub = pb_grpc.ModelServiceStub(channel)
            model = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec()), timeout=30).model
            x, _ = make_batch(np.random.default_rng(0), 3, 4, 3)
            assert stub.Predict(pb.PredictRequest(model=model.id, x=to_tensor(x)), timeout=30).version == 0
        process.send_signal(signal_number)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    rest = []
    while not lines.empty():
        rest.append(json.loads(lines.get()))
    events = [e["event"] for e in seen + rest]
    assert events[-3:] == ["signal", "shutting_down", "stopped"]
    assert "model_created" in events
