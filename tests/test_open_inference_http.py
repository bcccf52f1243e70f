"""The Open Inference Protocol over HTTP/REST (KServe v2) against a real server: spoken by
tritonclient.http (tests/triton_client.py, as for gRPC) and by hand with http.client,
as KServe's and other clients send it; results compared with nnserve.v1 Predict of the
same rows."""

import contextlib
import http.client
import importlib.util
import json
import secrets
import ssl
import threading
import time

import grpc
import numpy as np
import pytest

from metrics_support import rpc, scrape, value
from oip_support import predict, trained_models
from process_support import ServeProcess
from security_support import write_pki
from service_support import classifier_spec, pb, running_server, snapshot, to_tensor
from triton_client import run_triton_client

from nnserve.service import Settings, create_server
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc

MAX_ROWS = 64
INFER = "/v2/models/{model}/infer"
READ_TOKEN = secrets.token_urlsafe(32)
WRITE_TOKEN = secrets.token_urlsafe(32)


def call(port, method, path, body=None, headers=None, *, context=None):
    """(status, headers, body) of one request; `context` an ssl.SSLContext for https."""
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    else:
        connection = http.client.HTTPSConnection("localhost", port, timeout=30, context=context)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def call_json(port, method, path, payload=None, **options):
    """(status, decoded JSON body) of one request with a JSON body (or none)."""
    body = None if payload is None else json.dumps(payload).encode()
    status, headers, content = call(port, method, path, body, {"Content-Type": "application/json"}
                                    if body is not None else None, **options)
    return status, json.loads(content)


def infer_json(x, datatype="FP32", nested=False, **fields):
    """A JSON infer request of x, flat or nested row by row."""
    data = x.tolist() if nested else x.ravel().tolist()
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype, "data": data}],
            **fields}


def http_requests(samples, route, status, method="POST"):
    return value(samples, "nnserve_http_requests_total", method=method, route=route, status=str(status))


# -- tritonclient.http -----------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                    reason="tritonclient is not installed (the dev extra has it)")
def test_tritonclient_http_predicts_like_nnserve():
    """tritonclient.http's every call: health, metadata, config, index, infer of FP32 and
    FP64 with binary and JSON bodies, output selection, async_infer, and the errors, each
    result equal to Predict's and each request counted once in the REST metrics."""
    with running_server(max_rows_per_request=MAX_ROWS) as live:
        trained_models(live)
        x32 = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        report, outputs = run_triton_client("http", f"127.0.0.1:{live.server.http_port}", "m64",
                                            x32=x32, x64=x32.astype(np.float64) * 1.5, max_rows=MAX_ROWS,
                                            float32_model="m32")
        expected32, version = predict(live, "m64", x32)
        expected64, _ = predict(live, "m64", x32.astype(np.float64) * 1.5)
        assert report["live"] and report["ready"] and report["model_ready"]
        assert report["unknown_model_ready"] is False
        assert report["metadata"]["name"] == "nnserve"
        assert set(report["metadata"]["extensions"]) == {"model_configuration", "binary_tensor_data"}
        metadata = report["model_metadata"]
        assert metadata["versions"] == [str(version)] and metadata["platform"] == "nnserve"
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
        assert metadata["outputs"] == [{"name": "output", "datatype": "FP64", "shape": [-1, 3]},
                                       {"name": "class", "datatype": "INT64", "shape": [-1]}]
        config = report["model_config"]
        assert config["max_batch_size"] == MAX_ROWS and config["input"][0]["dims"] == [4]
        assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
            ("output", "TYPE_FP64", [3]), ("class", "TYPE_INT64", [1])]
        assert sorted(report["index"], key=lambda m: m["name"]) == [
            {"name": "m32", "version": "0", "state": "READY"},
            {"name": "m64", "version": str(version), "state": "READY"}]

        assert report["x32_version"] == str(version)
        for key in ("x32_output", "only_output", "json_output", "mixed_output", "default_output",
                    "async_output"):
            assert outputs[key].dtype == np.float64 and outputs[key].shape == (5, 3), key
            np.testing.assert_array_equal(outputs[key], expected32, err_msg=key)
        for key in ("x32_class", "json_class", "mixed_class"):
            np.testing.assert_array_equal(outputs[key], expected32.argmax(axis=1), err_msg=key)
        np.testing.assert_array_equal(outputs["x64_output"], expected64)
        np.testing.assert_array_equal(outputs["x64_class"], expected64.argmax(axis=1))
        assert report["only_names"] == ["output"] and report["default_names"] == ["output"]
        assert report["json_binary"] == report["mixed_binary"] == [False, False]

        errors = report["errors"]
        assert errors["unknown model"][0] == "404" and errors["wrong version"][0] == "404"
        assert f"expected '{version}'" in errors["wrong version"][1]
        assert "expected [n, 4]" in errors["wrong shape"][1]
        assert errors["wrong datatype"] == ["400", "input datatype: got 'INT32', expected 'FP32' or 'FP64'"]
        for name in ("wrong shape", "unknown output", "lossy datatype"):
            assert errors[name][0] == "400", name
        assert errors["oversize"][0] == "413" and "--max-rows-per-request" in errors["oversize"][1]
        assert live.stub.GetModel(pb.GetModelRequest(model="m64"), timeout=30).model.version == version

        samples = scrape(live.server.metrics_port)
        # x32, x64, output only, JSON, mixed, no outputs named, async_infer; then the refusals
        assert http_requests(samples, INFER, 200) == 7
        assert http_requests(samples, INFER, 400) == 4  # shape, datatype, unknown output, lossy
        assert http_requests(samples, INFER, 404) == 1 and http_requests(samples, INFER, 413) == 1
        versioned = "/v2/models/{model}/versions/{version}/infer"
        assert http_requests(samples, versioned, 404) == 1  # the wrong version
        assert value(samples, "nnserve_http_request_duration_seconds_count", method="POST", route=INFER) == 13
        assert http_requests(samples, "/v2/models/{model}/ready", 200, "GET") == 1
        assert http_requests(samples, "/v2/models/{model}/ready", 404, "GET") == 1
        assert http_requests(samples, "/v2/health/ready", 200, "GET") == 1
        assert value(samples, "grpc_server_handled_total",
                     **rpc("ModelInfer", "OK", service="inference.GRPCInferenceService")) == 0


# -- JSON and binary bodies by hand ----------------------------------------------------------

def test_json_rest_as_kserve_sends_it():
    """Health bodies, server and model metadata, and JSON infer with flat and nested data,
    an id, a version path and FP64 outputs, exactly Predict's numbers."""
    with running_server() as live:
        trained_models(live)
        port = live.server.http_port
        assert call_json(port, "GET", "/v2/health/live") == (200, {"live": True})
        assert call_json(port, "GET", "/v2/health/ready") == (200, {"ready": True})
        assert call_json(port, "GET", "/v2/models/m32/ready") == (200, {"name": "m32", "ready": True})
        status, metadata = call_json(port, "GET", "/v2")
        from importlib.metadata import version as installed

        assert status == 200 and metadata == {"name": "nnserve", "version": installed("nnserve"),
                                              "extensions": ["model_configuration", "binary_tensor_data"]}
        status, model = call_json(port, "GET", "/v2/models/m64/versions/3")
        assert status == 200 and model["versions"] == ["3"]

        x = np.random.default_rng(3).normal(size=(3, 4))
        expected, version = predict(live, "m64", x)
        flat = call_json(port, "POST", "/v2/models/m64/infer", infer_json(x, "FP64", id="req-7"))
        nested = call_json(port, "POST", "/v2/models/m64/versions/3/infer", infer_json(
            x, "FP64", nested=True, outputs=[{"name": "class"}, {"name": "output"}]))
        assert flat[0] == nested[0] == 200
        assert flat[1]["id"] == "req-7" and "id" not in nested[1]
        assert flat[1]["model_name"] == "m64" and flat[1]["model_version"] == str(version) == "3"
        (output,) = flat[1]["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("output", "FP64", [3, 3])
        assert np.array(output["data"]).reshape(3, 3).tolist() == expected.tolist()
        assert [o["name"] for o in nested[1]["outputs"]] == ["class", "output"]
        assert nested[1]["outputs"][0] == {"name": "class", "datatype": "INT64", "shape": [3],
                                           "data": expected.argmax(axis=1).tolist()}
        assert nested[1]["outputs"][1]["data"] == output["data"]

        x32 = x.astype(np.float32)
        expected32, _ = predict(live, "m32", x32)
        status, answer = call_json(port, "POST", "/v2/models/m32/infer", infer_json(x32, nested=True))
        assert status == 200 and answer["outputs"][0]["datatype"] == "FP32"
        got = np.array(answer["outputs"][0]["data"], np.float32).reshape(3, 3)
        assert got.tolist() == expected32.tolist()


def test_binary_tensor_extension_by_hand():
    """A binary input after the JSON part (Inference-Header-Content-Length) and binary
    outputs by binary_data_output; a byte length that does not fit is refused as on gRPC."""
    with running_server() as live:
        trained_models(live)
        port = live.server.http_port
        x = np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)
        expected, _ = predict(live, "m32", x)
        header = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": x.nbytes}}],
                             "outputs": [{"name": "output"},
                                         {"name": "class", "parameters": {"binary_data": False}}],
                             "parameters": {"binary_data_output": True}}).encode()
        status, headers, body = call(port, "POST", "/v2/models/m32/infer", header + x.tobytes(),
                                     {"Inference-Header-Content-Length": str(len(header))})
        assert status == 200, body
        length = int(headers["Inference-Header-Content-Length"])
        answer = json.loads(body[:length])
        output, classes = answer["outputs"]
        assert output["parameters"] == {"binary_data_size": 24} and "data" not in output
        assert np.frombuffer(body[length:], "<f4").reshape(2, 3).tolist() == expected.tolist()
        assert classes["data"] == expected.argmax(axis=1).tolist()

        status, _, body = call(port, "POST", "/v2/models/m32/infer", header + x.tobytes()[:-4],
                               {"Inference-Header-Content-Length": str(len(header))})
        assert status == 400 and "expected at most the 28 bytes" in json.loads(body)["error"]
        short = header.replace(b'"binary_data_size": 32', b'"binary_data_size": 28')
        status, _, body = call(port, "POST", "/v2/models/m32/infer", short + x.tobytes()[:-4],
                               {"Inference-Header-Content-Length": str(len(short))})
        assert (status, json.loads(body)) == (
            400, {"error": "input: got 28 bytes, expected 32 ([2, 4] of FP32)"})  # gRPC's words


@pytest.fixture(scope="module")
def shared():
    """One server with the trained models, for tests that change nothing."""
    with running_server() as live:
        trained_models(live)
        yield live


@pytest.mark.parametrize("request_body, message", [
    (b"{", "request body: got no valid JSON"),
    (b"[]", "request body: got a list, expected an inference request object"),
    ({"inputs": []}, "inputs: got 0, expected one input named 'input'"),
    ({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [5, 6, 7]]}]},
     "input data: got nested lists that do not follow the shape [2, 4]"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, "3", 4]}]},
     "input data: got a value that is not a number"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, True, 4]}]},
     "input data: got a value that is not a number"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 10 ** 400, 4]}]},
     "input: got values that are not numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]},
     "input: got neither data nor parameters.binary_data_size"),
    ({"inputs": [{"name": "input", "shape": [1, "4"], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
     "input shape: got [1, '4'], expected a list of integers"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
     "inputs: got 'x', expected one input named 'input'"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
      "outputs": [{"name": "logits"}]}, "outputs: got 'logits', expected one of output, class"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "id": 7},
     "id: got a number, expected a string"),
])
def test_malformed_infer_bodies_are_refused_with_the_reason(shared, request_body, message):
    """Each malformed body gets 400 and a JSON error saying what was wrong."""
    body = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()
    status, _, content = call(shared.server.http_port, "POST", "/v2/models/m32/infer", body)
    assert status == 400 and json.loads(content)["error"].startswith(message), content


def test_refused_requests_change_nothing_and_the_server_stays_up():
    """Bad paths, methods, bodies over --max-message-bytes (by Content-Length before the
    body is read, and chunked), non-finite values and unknown models are refused with their
    status; the model is unchanged, each refusal counted, and the next request served."""
    with running_server(max_message_bytes=4096) as live:
        trained_models(live)
        port = live.server.http_port
        before = snapshot(live.stub, "m32")
        x = np.ones((1, 4), np.float32)
        nan = infer_json(x)
        nan["inputs"][0]["data"][1] = float("nan")
        assert call_json(port, "POST", "/v2/models/m32/infer", nan)[0] == 400
        assert call_json(port, "POST", "/v2/models/nope/infer", infer_json(x)) == (
            404, {"error": "model: got 'nope', expected the id or name of an existing model"})
        assert call_json(port, "GET", "/v2/models/m32/versions/9/config")[0] == 404
        status, answer = call_json(port, "GET", "/v2/nowhere")
        assert status == 404 and answer["error"].startswith("path: got /v2/nowhere")
        assert call_json(port, "PUT", "/v2/models/m32/infer") == (
            405, {"error": "method: got PUT for /v2/models/m32/infer, expected POST"})

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/v2/models/m32/infer")
        connection.putheader("Content-Length", str(1 << 30))
        connection.endheaders()  # and no body: the answer must not wait for one
        response = connection.getresponse()
        assert response.status == 413 and response.headers["Connection"] == "close"
        error = json.loads(response.read())["error"]
        assert "limit max_message_bytes reached: got a body of 1073741824 bytes" in error
        connection.close()
        big = json.dumps(infer_json(np.ones((1000, 4), np.float32))).encode()  # 20 kB
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/v2/models/m32/infer", body=iter([big[:3000], big[3000:]]),
                           encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and "--max-message-bytes" in json.loads(response.read())["error"]
        connection.close()

        assert snapshot(live.stub, "m32") == before
        assert call_json(port, "POST", "/v2/models/m32/infer", infer_json(x))[0] == 200
        samples = scrape(live.server.metrics_port)
        assert http_requests(samples, INFER, 400) == 1 and http_requests(samples, INFER, 404) == 1
        assert http_requests(samples, INFER, 413) == 2 and http_requests(samples, INFER, 200) == 1
        assert http_requests(samples, "/v2/models/{model}/versions/{version}/config", 404, "GET") == 1
        assert http_requests(samples, "unmatched", 404, "GET") == 1
        assert http_requests(samples, "unmatched", 405, "OTHER") == 1


# -- tokens, TLS, overload ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Test CAs and certificates (tests/security_support.py)."""
    return write_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """Settings with a read and a write tokens file."""
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "read").write_text(READ_TOKEN + "\n")
    (folder / "write").write_text(WRITE_TOKEN + "\n")
    return {"read_tokens_file": str(folder / "read"), "write_tokens_file": str(folder / "write")}


@contextlib.contextmanager
def serving(**settings):
    """A started server on 127.0.0.1 with free gRPC, REST and metrics ports."""
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=-1,
                                          **settings))
    server.start()
    try:
        yield server, port
    finally:
        server.stop(0).wait(10)


def test_tokens_guard_every_route_but_the_probes(tokens):
    """With tokens files, /v2/health/live and /v2/health/ready answer anyone; every other
    route refuses no or an unknown token (401, WWW-Authenticate: Bearer) and serves a read
    or write token, as inference.GRPCInferenceService does over gRPC."""
    with serving(**tokens) as (server, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        pb_grpc.ModelServiceStub(channel).CreateModel(
            pb.CreateModelRequest(spec=classifier_spec(), name="m"), timeout=10,
            metadata=(("authorization", f"Bearer {WRITE_TOKEN}"),))
        http_port = server.http_port
        assert call_json(http_port, "GET", "/v2/health/live") == (200, {"live": True})
        assert call_json(http_port, "GET", "/v2/health/ready") == (200, {"ready": True})
        infer = json.dumps(infer_json(np.ones((1, 4), np.float32))).encode()
        routes = [("GET", "/v2", None), ("GET", "/v2/models/m", None), ("GET", "/v2/models/m/ready", None),
                  ("GET", "/v2/models/m/versions/0/config", None), ("POST", "/v2/repository/index", b""),
                  ("POST", "/v2/models/m/infer", infer)]
        for method, path, body in routes:
            for header in (None, "Bearer " + "x" * 32, f"Basic {READ_TOKEN}"):
                status, headers, content = call(http_port, method, path, body,
                                                {"Authorization": header} if header else None)
                assert (status, headers["WWW-Authenticate"]) == (401, "Bearer"), (path, header)
                assert "'Authorization: Bearer <token>'" in json.loads(content)["error"]
            for token in (READ_TOKEN, WRITE_TOKEN):
                status, _, content = call(http_port, method, path, body, {"Authorization": f"Bearer {token}"})
                assert status == 200, (path, content)
        samples = scrape(server.metrics_port)
        assert http_requests(samples, INFER, 401) == 3 and http_requests(samples, INFER, 200) == 2
        assert http_requests(samples, "/v2/health/live", 200, "GET") == 1


def _https_context(pki, ca="ca", cert=None):
    context = ssl.create_default_context(cadata=pki["pem"][ca].decode())
    if cert:
        context.load_cert_chain(pki[f"{cert}_cert"], pki[f"{cert}_key"])
    return context


def test_tls_and_mutual_tls_on_the_rest_port(pki):
    """With --tls-cert/--tls-key the REST port speaks https only; with --tls-client-ca it
    also requires a client certificate that CA signed."""
    tls = {"tls_cert": str(pki["server_cert"]), "tls_key": str(pki["server_key"])}
    with serving(**tls) as (server, _):
        assert call_json(server.http_port, "GET", "/v2/health/ready", context=_https_context(pki)) == (
            200, {"ready": True})
        with pytest.raises(ssl.SSLError):
            call(server.http_port, "GET", "/v2/health/ready", context=_https_context(pki, ca="rogue_ca"))
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            call(server.http_port, "GET", "/v2/health/ready")  # plaintext
    with serving(**tls, tls_client_ca=str(pki["ca"])) as (server, _):
        assert call(server.http_port, "GET", "/v2", context=_https_context(pki, cert="client"))[0] == 200
        for cert in (None, "rogue"):  # TLS 1.3: the refusal may come with the first read
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                call(server.http_port, "GET", "/v2", context=_https_context(pki, cert=cert))


def test_renewed_certificate_files_are_used_without_a_restart(pki, tmp_path):
    """Replacing the certificate and key files switches new REST connections to them."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pki["pem"]["server_cert"])
    key.write_bytes(pki["pem"]["server_key"])
    with serving(tls_cert=str(cert), tls_key=str(key)) as (server, _):
        assert call(server.http_port, "GET", "/v2", context=_https_context(pki))[0] == 200
        cert.write_bytes(pki["pem"]["rogue_server_cert"])
        key.write_bytes(pki["pem"]["rogue_server_key"])
        assert call(server.http_port, "GET", "/v2", context=_https_context(pki, ca="rogue_ca"))[0] == 200
        with pytest.raises(ssl.SSLError):
            call(server.http_port, "GET", "/v2", context=_https_context(pki))


def test_overload_is_429_and_shares_the_grpc_admissions():
    """Under --max-concurrent-rpcs 1, an open gRPC PredictStream holds the one admission: a
    REST infer gets 429 with Retry-After at once while the probes still answer, and is
    served again once the stream has ended."""
    with running_server(max_concurrent_rpcs=1, workers=1) as live:
        trained_models(live)
        port = live.server.http_port
        x = np.ones((1, 4), np.float32)
        requests = iter([pb.PredictRequest(model="m32", x=to_tensor(x))])
        gate = threading.Event()

        def held():
            yield next(requests)
            gate.wait(30)

        stream = live.stub.PredictStream(held(), timeout=60)
        next(stream)  # admitted and answered once: the admission is held until the stream ends
        try:
            body = json.dumps(infer_json(x)).encode()
            status, headers, content = call(port, "POST", "/v2/models/m32/infer", body)
            assert (status, headers["Retry-After"]) == (429, "1")
            assert "limit max_concurrent_rpcs reached" in json.loads(content)["error"]
            assert call_json(port, "GET", "/v2/health/ready") == (200, {"ready": True})
        finally:
            gate.set()
            list(stream)
        assert call_json(port, "POST", "/v2/models/m32/infer", infer_json(x))[0] == 200


# -- lifecycle ---------------------------------------------------------------------------------

def test_ready_follows_start_up_and_shutdown_and_the_port_closes():
    """/v2/health/ready is 503 {"ready": false} before SERVING, 200 after, 503 again from
    the moment shutdown begins (the drain period, while live still answers 200); after stop
    the port refuses connections."""
    server, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=-1,
                                       drain_period=2.0))
    server.start(serving=False)
    port = server.http_port
    stopping = threading.Thread(target=lambda: server.stop(0).wait(10))
    try:
        assert call_json(port, "GET", "/v2/health/ready") == (503, {"ready": False})
        assert call_json(port, "GET", "/v2/health/live") == (200, {"live": True})
        server.set_serving()
        assert call_json(port, "GET", "/v2/health/ready") == (200, {"ready": True})
        stopping.start()
        time.sleep(0.5)
        assert call_json(port, "GET", "/v2/health/ready") == (503, {"ready": False})
        assert call_json(port, "GET", "/v2/health/live") == (200, {"live": True})
        stopping.join(30)
        with pytest.raises(ConnectionRefusedError):
            call(port, "GET", "/v2/health/live")
    finally:
        if stopping.ident is None:  # failed before the stop began
            server.stop(0).wait(10)
        stopping.join(30)


def test_an_http_port_in_use_is_an_error():
    """Binding a REST port another server holds raises OSError naming it, and lets go of
    everything else (the same gRPC settings then start)."""
    with running_server() as live:
        taken = live.server.http_port
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken} for HTTP"):
            create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=taken))


def test_http_port_defaults_to_8000_and_zero_disables_it():
    """The default REST port is 8000 (Triton's and KServe's); 0 binds none."""
    assert Settings().http_port == 8000 and Settings.from_env({"NNSERVE_HTTP_PORT": "0"}).http_port == 0
    with running_server(http_port=0) as live:
        assert live.server.http_port == 0


def test_serve_logs_the_http_port():
    """`nnserve serve` names the REST port in its serving line (0 when disabled)."""
    with ServeProcess() as process:
        assert process.events[-1]["http_port"] == 0
    with ServeProcess("--http-port", "-1") as process:
        port = process.events[-1]["http_port"]
        assert port > 0 and call_json(port, "GET", "/v2/health/ready") == (200, {"ready": True})
        assert process.terminate() == 0


def test_a_bug_behind_the_rest_port_is_500_logged_and_the_port_stays_up(monkeypatch, caplog):
    """A ValueError that is no refusal out of the model layer answers 500 with a JSON error
    naming its type (the traceback goes to the log, not the client), counted as such; the
    next request is answered."""
    import logging

    from nnserve.model.batches import BatchRule

    with running_server() as live:
        trained_models(live)
        port = live.server.http_port
        x = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)

        def buggy(self, x):
            raise ValueError("operands could not be broadcast together")

        monkeypatch.setattr(BatchRule, "inputs", buggy)
        with caplog.at_level(logging.ERROR):
            status, body = call_json(port, "POST", "/v2/models/m32/infer", infer_json(x))
        assert status == 500 and "ValueError" in body["error"], body
        assert "broadcast" not in body["error"]  # the detail stays in the server's log
        assert any("ValueError" in (record.exc_text or record.getMessage()) for record in caplog.records)
        monkeypatch.undo()
        status, body = call_json(port, "POST", "/v2/models/m32/infer", infer_json(x))
        assert status == 200 and body["outputs"][0]["shape"] == [2, 3]
        assert http_requests(scrape(live.server.metrics_port), INFER, 500) == 1
