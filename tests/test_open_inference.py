"""The Open Inference Protocol over gRPC, spoken by tritonclient.grpc in the test process
against a real server; results compared with nnserve.v1 Predict of the same rows."""

import importlib.util
import subprocess
import sys

import grpc
import numpy as np
import pytest

from metrics_support import rpc, scrape, value
from oip_support import predict, trained_models
from service_support import pb, running_server
from triton_client import run_triton_client

from nnserve.oip import grpc_service_pb2 as oip
from nnserve.oip import grpc_service_pb2_grpc as oip_grpc

if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("tritonclient is not installed (the dev extra has it)", allow_module_level=True)

MAX_ROWS = 64
OIP = "inference.GRPCInferenceService"


def test_tritonclient_grpc_predicts_like_nnserve():
    """tritonclient.grpc's every call: health, metadata, config, index, infer of FP32 and
    FP64, output selection, async_infer, a stream, and the errors, each result equal to
    Predict's and each request counted in the gRPC metrics."""
    with running_server(max_rows_per_request=MAX_ROWS) as live:
        trained_models(live)
        x32 = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        report, outputs = run_triton_client("grpc", live.target, "m64", x32=x32,
                                            x64=x32.astype(np.float64) * 1.5, max_rows=MAX_ROWS,
                                            float32_model="m32")
        expected32, version = predict(live, "m64", x32)
        expected64, _ = predict(live, "m64", x32.astype(np.float64) * 1.5)
        assert report["live"] and report["ready"] and report["model_ready"]
        from importlib.metadata import version as installed

        assert (report["metadata"]["name"], report["metadata"]["version"]) == ("nnserve", installed("nnserve"))
        assert set(report["metadata"]["extensions"]) == {"model_configuration", "binary_tensor_data"}
        assert "model_configuration" in report["metadata"]["extensions"]
        metadata = report["model_metadata"]
        assert metadata["versions"] == [str(version)] and metadata["platform"] == "nnserve"
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": ["-1", "4"]}]
        assert [o["name"] for o in metadata["outputs"]] == ["output", "class"]
        config = report["model_config"]["config"]
        assert config["max_batch_size"] == MAX_ROWS and config["input"][0]["dims"] == ["4"]
        assert config["output"][0]["data_type"] == "TYPE_FP64"
        assert {(m["name"], m["version"], m["state"]) for m in report["index"]["models"]} == {
            ("m64", str(version), "READY"), ("m32", "0", "READY")}

        assert report["x32_version"] == str(version)
        np.testing.assert_array_equal(outputs["x32_output"], expected32)
        np.testing.assert_array_equal(outputs["x32_class"], expected32.argmax(axis=1))
        np.testing.assert_array_equal(outputs["x64_output"], expected64)
        np.testing.assert_array_equal(outputs["only_output"], expected32)
        assert report["only_names"] == ["output"]
        np.testing.assert_array_equal(outputs["async_output"], expected32)
        for index in range(3):
            np.testing.assert_array_equal(outputs[f"stream_{index}"], predict(live, "m64", x32[index:index + 2])[0])
        assert "expected [n, 4]" in report["stream_error"][1]

        errors = report["errors"]
        assert errors["unknown model"][0] == "StatusCode.NOT_FOUND"
        assert errors["unknown model ready"][0] == "StatusCode.NOT_FOUND"
        assert errors["wrong version"][0] == "StatusCode.NOT_FOUND"
        assert f"expected '{version}'" in errors["wrong version"][1]
        assert errors["wrong shape"][0] == "StatusCode.INVALID_ARGUMENT"
        assert errors["wrong datatype"][0] == "StatusCode.INVALID_ARGUMENT"
        assert "'FP32' or 'FP64'" in errors["wrong datatype"][1]
        assert errors["unknown output"][0] == "StatusCode.INVALID_ARGUMENT"
        assert errors["oversize"][0] == "StatusCode.RESOURCE_EXHAUSTED"
        assert "--max-rows-per-request" in errors["oversize"][1]
        assert errors["lossy datatype"][0] == "StatusCode.INVALID_ARGUMENT"
        assert live.stub.GetModel(pb.GetModelRequest(model="m64"), timeout=30).model.version == version

        samples = scrape(live.server.metrics_port)
        infer_ok = value(samples, "grpc_server_handled_total", **rpc("ModelInfer", "OK", service=OIP))
        assert infer_ok == 4  # x32, x64, output only, async_infer (the refused ones are not OK)
        assert value(samples, "grpc_server_msg_received_total",
                     **rpc("ModelStreamInfer", service=OIP, grpc_type="BIDI_STREAM")) == 4


# A server and tritonclient.grpc in one process, after `imports`: ModelInfer through
# tritonclient gets Predict's answer.
_ONE_PROCESS = """
import numpy as np
import tritonclient.grpc as triton
from nnserve.clients import Client
from nnserve.oip import grpc_service_pb2 as oip
from nnserve.service import Settings, create_server

assert oip.ModelInferRequest.DESCRIPTOR.full_name == triton.service_pb2.ModelInferRequest.DESCRIPTOR.full_name
server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0))
server.start()
try:
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with Client(f"127.0.0.1:{port}") as client:
        expected = client.create_model([4, 3], ["softmax"], "cross_entropy", name="m", seed=1).predict(x)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    triton_client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        np.testing.assert_array_equal(triton_client.infer("m", [tensor]).as_numpy("output"), expected)
    finally:
        triton_client.close()
finally:
    server.stop(0).wait(10)
"""


@pytest.mark.parametrize("imports", ["import nnserve.service\nimport tritonclient.grpc\n",
                                     "import tritonclient.grpc\nimport nnserve.service\n"],
                         ids=["nnserve-first", "tritonclient-first"])
def test_tritonclient_and_the_server_share_a_process_in_either_import_order(imports):
    """nnserve's server and tritonclient.grpc, whose messages bear the same names, import
    into one process in either order (a fresh process each, as import order is per
    process), and a ModelInfer through tritonclient gets nnserve's answer."""
    done = subprocess.run([sys.executable, "-c", imports + _ONE_PROCESS], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def _infer_request(model, x, version="", raw=True):
    tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)
    if raw:
        return oip.ModelInferRequest(model_name=model, model_version=version, inputs=[tensor],
                                     raw_input_contents=[x.astype("<f4").tobytes()])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return oip.ModelInferRequest(model_name=model, model_version=version, inputs=[tensor])


def test_typed_contents_equal_raw_bytes_and_refusals_change_nothing():
    with running_server() as live:
        trained_models(live)
        stub = oip_grpc.GRPCInferenceServiceStub(live.channel)
        x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
        raw = stub.ModelInfer(_infer_request("m32", x), timeout=30)
        typed = stub.ModelInfer(_infer_request("m32", x, raw=False), timeout=30)
        assert raw.raw_output_contents == typed.raw_output_contents
        expected, version = predict(live, "m32", x)
        assert np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(3, 3).tolist() == expected.tolist()
        assert raw.model_version == str(version) == "0"
        assert [o.name for o in raw.outputs] == ["output"] and list(raw.outputs[0].shape) == [3, 3]
        bad = _infer_request("m32", x)
        bad.raw_input_contents[0] = bad.raw_input_contents[0][:-4]
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(bad, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "44 bytes, expected 48" in caught.value.details()
        nan = x.copy()
        nan[1, 2] = np.nan
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(_infer_request("m32", nan), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_ready_follows_start_up_and_shutdown():
    """ServerReady (no token needed) is false before SERVING and again from the moment
    shutdown begins (during the drain period, while calls are still answered)."""
    import threading

    from nnserve.service import Settings, create_server

    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0, drain_period=3.0))
    server.start(serving=False)
    stopping = threading.Thread(target=lambda: server.stop(0).wait(10))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(oip.ServerLiveRequest(), timeout=30).live
            assert not stub.ServerReady(oip.ServerReadyRequest(), timeout=30).ready
            server.set_serving()
            assert stub.ServerReady(oip.ServerReadyRequest(), timeout=30).ready
            stopping.start()
            ready = [stub.ServerReady(oip.ServerReadyRequest(), timeout=30).ready for _ in range(200)]
            assert ready[-1] is False  # the drain period lasts longer than 200 calls
    finally:
        if not stopping.is_alive():
            server.stop(0).wait(10)
        stopping.join(30)


def test_an_answer_for_a_pinned_version_is_computed_with_that_version():
    """ModelInfer with model_version set, while another caller trains the model: every
    answer carries the version asked for (a step landing between the version check and the
    prediction makes it NOT_FOUND, naming the version that computed), never another."""
    import threading

    with running_server() as live:
        trained_models(live)
        stub = oip_grpc.GRPCInferenceServiceStub(live.channel)
        x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
        stop = threading.Event()

        def train():
            y = pb.Tensor(dtype=pb.DATA_TYPE_INT64, shape=[2], content=np.array([0, 1], "<i8").tobytes())
            request = pb.TrainStepRequest(model="m32", x=pb.Tensor(
                dtype=pb.DATA_TYPE_FLOAT32, shape=[2, 4], content=x.astype("<f4").tobytes()), y=y)
            while not stop.is_set():
                live.stub.TrainStep(request, timeout=30)

        trainer = threading.Thread(target=train)
        trainer.start()
        answered = refused = 0
        try:
            while answered < 20 or refused < 20:
                version = live.stub.GetModel(pb.GetModelRequest(model="m32"), timeout=30).model.version
                try:
                    reply = stub.ModelInfer(_infer_request("m32", x, str(version)), timeout=30)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND, error
                    refused += 1
                    continue
                assert reply.model_version == str(version)
                answered += 1
        finally:
            stop.set()
            trainer.join(timeout=30)
