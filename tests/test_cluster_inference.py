"""The Open Inference Protocol in cluster mode: a v2 client (REST, or gRPC without nnserve's
routing header: tritonclient.grpc itself, in the test process) that reaches a server which
does not own the model gets the owner's answer, and the owner's refusals with the same
status."""

import contextlib
import http.client
import json

import grpc
import numpy as np
import pytest

from cluster_support import cluster_server, etcd, free_port
from nnserve.clients import Client
from nnserve.oip import grpc_service_pb2 as oip
from nnserve.oip import grpc_service_pb2_grpc as oip_grpc
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc

pytest.importorskip("etcd3gw")
triton = pytest.importorskip("tritonclient.grpc")


def server_with_rest(stack, directory, endpoint, name):
    """(gRPC target, REST port) of `nnserve serve` in cluster mode."""
    http_port = free_port()
    _, target = cluster_server(stack, directory, endpoint, name, flags=("--http-port", str(http_port)))
    return target, http_port


def rest(port, method, path, payload=None):
    """(status, decoded JSON body) of one REST request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = None if payload is None else json.dumps(payload).encode()
        connection.request(method, path, body=body,
                           headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def infer_body(x, **fields):
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **fields}


def test_v2_calls_for_another_servers_model_get_the_owners_answer(tmp_path):
    """A model created and trained on server A: server B answers REST infer (JSON), model
    metadata, readiness and config, and gRPC ModelInfer (by hand and by tritonclient.grpc)
    and ModelMetadata without the routing header, with A's outputs bit for bit and A's
    version; B holds no copy; a malformed request and an unknown model are refused through
    B as through A."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        target_a, rest_a = server_with_rest(stack, tmp_path, endpoint, "a")
        target_b, rest_b = server_with_rest(stack, tmp_path, endpoint, "b")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5, 3)).astype(np.float32)
        with Client(target_a) as client_a:
            model = client_a.create_model([3, 6, 2], ["tanh", "softmax"], "cross_entropy",
                                          name="owned-by-a", seed=1)
            model.train_step(x, rng.integers(0, 2, size=5))
            expected = model.predict(x)
            version = str(model.refresh().version)

        path = "/v2/models/owned-by-a"
        for port in (rest_a, rest_b):
            status, answer = rest(port, "POST", path + "/infer",
                                  infer_body(x, id="r1", outputs=[{"name": "output"}, {"name": "class"}]))
            assert status == 200, answer
            assert (answer["id"], answer["model_version"]) == ("r1", version)
            output, classes = answer["outputs"]
            np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(5, 2), expected)
            assert classes["data"] == expected.argmax(axis=1).tolist()
        assert rest(rest_b, "GET", path) == rest(rest_a, "GET", path)
        assert rest(rest_b, "GET", path + "/ready") == (200, {"name": "owned-by-a", "ready": True})
        assert rest(rest_b, "GET", path + "/config") == rest(rest_a, "GET", path + "/config")

        bad = infer_body(np.zeros((2, 4), np.float32))
        status_a, refusal_a = rest(rest_a, "POST", path + "/infer", bad)
        assert (status_a, "input shape" in refusal_a["error"]) == (400, True)
        assert rest(rest_b, "POST", path + "/infer", bad) == (status_a, refusal_a)
        assert rest(rest_b, "GET", "/v2/models/nowhere")[0] == 404
        assert rest(rest_b, "POST", f"{path}/versions/999/infer", infer_body(x))[0] == 404

        with grpc.insecure_channel(target_b) as channel:
            inference = oip_grpc.GRPCInferenceServiceStub(channel)
            request = oip.ModelInferRequest(
                model_name="owned-by-a", raw_input_contents=[x.tobytes()],
                inputs=[oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32",
                                                               shape=x.shape)])
            answer = inference.ModelInfer(request, timeout=30)
            assert answer.model_version == version
            np.testing.assert_array_equal(
                np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(5, 2), expected)
            metadata = inference.ModelMetadata(oip.ModelMetadataRequest(name="owned-by-a"), timeout=30)
            assert list(metadata.versions) == [version]
            tensor = triton.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            triton_client = triton.InferenceServerClient(target_b)
            try:
                result = triton_client.infer("owned-by-a", [tensor])
            finally:
                triton_client.close()
            assert result.get_response().model_version == version
            np.testing.assert_array_equal(result.as_numpy("output"), expected)
            # B's own registry (ListModels without a routing header runs on B) holds nothing.
            listed = pb_grpc.ModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=30)
            assert list(listed.models) == []
