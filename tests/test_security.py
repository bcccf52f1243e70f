"""TLS, mutual TLS and scoped bearer tokens, with certificates made at test time."""

import contextlib
import logging
import secrets

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nnserve.model import Network
from nnserve.service import Settings, create_server
from nnserve.service.auth import READ_METHODS
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from process_support import ServeProcess
from security_support import write_pki
from service_support import classifier_spec, make_batch, pb, to_tensor

SERVING = health_pb2.HealthCheckResponse.SERVING
READ_TOKEN = secrets.token_urlsafe(32)
WRITE_TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """PEM files: a CA with a server and a client certificate, and a rogue CA with a client."""
    return write_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def serving(**settings):
    """A started server on 127.0.0.1 (any port); yields its port."""
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0, **settings))
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait(10)


def _tls_channel(port, pki, *, ca="ca", cert=None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["pem"][ca],
        private_key=pki["pem"][f"{cert}_key"] if cert else None,
        certificate_chain=pki["pem"][f"{cert}_cert"] if cert else None)
    return grpc.secure_channel(f"localhost:{port}", credentials)


def _health(channel, timeout=5):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status


def _refused(channel):
    """The status code of a health check that must fail on this channel."""
    with pytest.raises(grpc.RpcError) as caught:
        _health(channel, timeout=3)
    return caught.value.code()


# -- TLS -----------------------------------------------------------------------------------

def test_tls_serves_clients_that_trust_its_ca_and_refuses_others(pki):
    """With --tls-cert/--tls-key a client trusting the CA is served; a plaintext client and one
    trusting another CA fail their handshake (UNAVAILABLE)."""
    with serving(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"])) as port:
        with _tls_channel(port, pki) as channel:
            assert _health(channel) == SERVING
            stub = pb_grpc.ModelServiceStub(channel)
            assert stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec()), timeout=10).model.id
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(port, pki, ca="rogue_ca") as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(pki):
    """With --tls-client-ca a client with a certificate the CA signed is served; without one,
    or with one from another CA, the handshake fails."""
    with serving(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"]),
                 tls_client_ca=str(pki["ca"])) as port:
        with _tls_channel(port, pki, cert="client") as channel:
            assert _health(channel) == SERVING
            assert pb_grpc.ModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10).models == []
        with _tls_channel(port, pki) as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(port, pki, cert="rogue") as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_renewed_certificate_files_are_used_without_a_restart(pki, tmp_path):
    """Replacing the certificate and key files switches new connections to the new certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pki["pem"]["server_cert"])
    key.write_bytes(pki["pem"]["server_key"])
    with serving(tls_cert=str(cert), tls_key=str(key)) as port:
        with _tls_channel(port, pki) as channel:
            assert _health(channel) == SERVING
        cert.write_bytes(pki["pem"]["rogue_server_cert"])
        key.write_bytes(pki["pem"]["rogue_server_key"])
        with _tls_channel(port, pki, ca="rogue_ca") as channel:
            assert _health(channel) == SERVING
        with _tls_channel(port, pki) as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("settings, error, message", [
    ({"tls_cert": "server_cert"}, ValueError, "TLS: got only tls_cert, expected tls_cert and tls_key"),
    ({"tls_client_ca": "ca"}, ValueError, "TLS: got only tls_client_ca"),
    ({"tls_cert": "server_cert", "tls_key": "missing"}, OSError, "tls_key: cannot read"),
    ({"tls_cert": "server_cert", "tls_key": "not_pem"}, ValueError, "got no PEM block"),
])
def test_incomplete_or_unreadable_tls_settings_stop_the_start(pki, tmp_path, settings, error, message):
    """A certificate without its key, a client CA alone, a missing or non-PEM file: create_server raises."""
    (tmp_path / "not_pem").write_text("hello")
    paths = {k: str(pki[v]) if v in pki else str(tmp_path / v) for k, v in settings.items()}
    with pytest.raises(error, match=message):
        create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0, **paths))


# -- tokens --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    read, write = folder / "read", folder / "write"
    read.write_text(f"# readers\n\n  {READ_TOKEN}  \n")
    write.write_text(f"{WRITE_TOKEN}\n")
    return {"read_tokens_file": str(read), "write_tokens_file": str(write)}


def _requests(model, dataset, job):
    """One valid request per ModelService method, on `model` (x/y for a (4, 8, 3) classifier),
    `dataset` and the finished training `job` (UploadDataset's: the list of its messages)."""
    x, y = make_batch(np.random.default_rng(0), 2, 4, 3)
    return {
        "UploadDataset": [pb.UploadDatasetRequest(header=pb.DatasetHeader(
                              rows=2, x_dtype=pb.DATA_TYPE_FLOAT32, x_width=4,
                              y_dtype=pb.DATA_TYPE_INT64)),
                          pb.UploadDatasetRequest(chunk=pb.DatasetChunk(x=to_tensor(x), y=to_tensor(y)))],
        "GetDataset": pb.GetDatasetRequest(dataset=dataset),
        "ListDatasets": pb.ListDatasetsRequest(),
        "DeleteDataset": pb.DeleteDatasetRequest(dataset="no-such-dataset"),
        "CreateTrainingJob": pb.CreateTrainingJobRequest(model=model, dataset=dataset, epochs=1,
                                                         batch_size=2),
        "GetTrainingJob": pb.GetTrainingJobRequest(job=job),
        "ListTrainingJobs": pb.ListTrainingJobsRequest(),
        "CancelTrainingJob": pb.CancelTrainingJobRequest(job=job),
        "WatchTrainingJob": pb.WatchTrainingJobRequest(job=job),
        "CreateModel": pb.CreateModelRequest(spec=classifier_spec()),
        "GetModel": pb.GetModelRequest(model=model),
        "ListModels": pb.ListModelsRequest(),
        "TrainStep": pb.TrainStepRequest(model=model, x=to_tensor(x), y=to_tensor(y)),
        "Predict": pb.PredictRequest(model=model, x=to_tensor(x)),
        "Evaluate": pb.EvaluateRequest(model=model, x=to_tensor(x), y=to_tensor(y)),
        "GetState": pb.GetStateRequest(model=model),
        "SetState": pb.SetStateRequest(model=model, state=pb.ModelState()),
        "SetWeights": pb.SetWeightsRequest(model=model),
        "DeleteModel": pb.DeleteModelRequest(model="no-such-model"),
        "TrainStream": [pb.TrainStepRequest(model=model, x=to_tensor(x), y=to_tensor(y))],
        "PredictStream": [pb.PredictRequest(model=model, x=to_tensor(x))],
        "ExportModel": pb.ExportModelRequest(model=model, format=pb.MODEL_FORMAT_ONNX),
        "ImportModel": pb.ImportModelRequest(
            format=pb.MODEL_FORMAT_ONNX,
            model_data=Network([4, 8, 3], ["relu", "softmax"], "cross_entropy").to_onnx(),
            options=pb.TrainingOptions(loss=pb.LOSS_CROSS_ENTROPY, optimizer=pb.OPTIMIZER_SGD)),
    }


def _finished_job(stub, metadata):
    """(job id, dataset id) of a training job that ran to its end on a model of its own."""
    x, y = make_batch(np.random.default_rng(1), 4, 4, 3)
    dataset = stub.UploadDataset(iter([
        pb.UploadDatasetRequest(header=pb.DatasetHeader(rows=4, x_dtype=pb.DATA_TYPE_FLOAT32, x_width=4,
                                                        y_dtype=pb.DATA_TYPE_INT64)),
        pb.UploadDatasetRequest(chunk=pb.DatasetChunk(x=to_tensor(x), y=to_tensor(y)))]),
        timeout=10, metadata=metadata).dataset.id
    trained = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec()), timeout=10,
                               metadata=metadata).model.id
    job = stub.CreateTrainingJob(pb.CreateTrainingJobRequest(model=trained, dataset=dataset, epochs=1,
                                                             batch_size=2), timeout=10, metadata=metadata).job.id
    events = list(stub.WatchTrainingJob(pb.WatchTrainingJobRequest(job=job), timeout=10, metadata=metadata))
    assert events[-1].job.state == pb.TRAINING_JOB_STATE_SUCCEEDED
    return job, dataset


def _call(stub, method, request, token):
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        if method == "UploadDataset":  # client streaming: the messages one by one
            stub.UploadDataset(iter(request), timeout=10, metadata=metadata)
        elif method == "WatchTrainingJob":  # server streaming: read to the end
            list(stub.WatchTrainingJob(request, timeout=10, metadata=metadata))
        elif method in ("TrainStream", "PredictStream"):  # both ways: send all, read to the end
            list(getattr(stub, method)(iter(request), timeout=10, metadata=metadata))
        else:
            getattr(stub, method)(request, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def test_tokens_are_required_and_scoped(tokens, caplog):
    """Without a valid token every ModelService method is UNAUTHENTICATED; a read token may
    call only the reading methods (PERMISSION_DENIED for the others, the model unchanged); a
    write token may call all; health and reflection need none; no token reaches the logs."""
    caplog.set_level(logging.DEBUG)
    with serving(**tokens) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        model = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(), name="guarded"), timeout=10,
                                 metadata=(("authorization", f"Bearer {WRITE_TOKEN}"),)).model.id
        job, dataset = _finished_job(stub, (("authorization", f"Bearer {WRITE_TOKEN}"),))
        requests = _requests(model, dataset, job)
        assert set(requests) == {m.name for m in pb.DESCRIPTOR.services_by_name["ModelService"].methods}
        write_metadata = (("authorization", f"Bearer {WRITE_TOKEN}"),)
        before = snapshot_with(stub, model, write_metadata)
        for method, request in requests.items():
            for token in (None, "", "not-a-token-of-this-server-at-all", READ_TOKEN[:-1], WRITE_TOKEN + "x"):
                code, details = _call(stub, method, request, token)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method, token, details)
                assert "Bearer <token>" in details
            code, details = _call(stub, method, request, READ_TOKEN)
            if method in READ_METHODS:
                assert code == grpc.StatusCode.OK, (method, details)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (method, details)
                assert f"expected write scope for {method}" in details
        assert snapshot_with(stub, model, write_metadata) == before
        for method, request in requests.items():
            code, details = _call(stub, method, request, WRITE_TOKEN)
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), method
        # A scheme other than Bearer, or the token without one, is no token.
        for value in (f"Basic {WRITE_TOKEN}", WRITE_TOKEN):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListModels(pb.ListModelsRequest(), timeout=10, metadata=(("authorization", value),))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _health(channel) == SERVING
        assert "nnserve.v1.ModelService" in ProtoReflectionDescriptorDatabase(channel).get_services()
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "auth_refused" in logged
    assert READ_TOKEN not in logged and WRITE_TOKEN not in logged and READ_TOKEN[:-1] not in logged


def test_set_weights_needs_write_scope(tokens):
    """SetWeights with valid weights is PERMISSION_DENIED for a read token (the model unchanged),
    UNAUTHENTICATED without a token, and applied with a write token."""
    assert "SetWeights" not in READ_METHODS
    with serving(**tokens) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        write_metadata = (("authorization", f"Bearer {WRITE_TOKEN}"),)
        model = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec()), timeout=10,
                                 metadata=write_metadata).model.id
        weights = stub.GetState(pb.GetStateRequest(model=model), timeout=10, metadata=write_metadata).state.weights
        request = pb.SetWeightsRequest(model=model, weights=weights)
        before = snapshot_with(stub, model, write_metadata)
        code, details = _call(stub, "SetWeights", request, READ_TOKEN)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "expected write scope for SetWeights" in details
        assert _call(stub, "SetWeights", request, None)[0] == grpc.StatusCode.UNAUTHENTICATED
        assert snapshot_with(stub, model, write_metadata) == before
        reply = stub.SetWeights(request, timeout=10, metadata=write_metadata)
        assert (reply.step, reply.version) == (0, 1)


def snapshot_with(stub, model, metadata):
    description = stub.GetModel(pb.GetModelRequest(model=model), timeout=10, metadata=metadata).model
    state = stub.GetState(pb.GetStateRequest(model=model), timeout=10, metadata=metadata).state
    return description, state.SerializeToString()


def test_only_read_tokens_make_a_read_only_server(tmp_path):
    """With only --read-tokens-file, reading works with a read token and nothing may write."""
    read = tmp_path / "read"
    read.write_text(READ_TOKEN)
    with serving(read_tokens_file=str(read)) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        assert _call(stub, "ListModels", pb.ListModelsRequest(), READ_TOKEN)[0] == grpc.StatusCode.OK
        assert _call(stub, "CreateModel", pb.CreateModelRequest(spec=classifier_spec()), READ_TOKEN)[0] == (
            grpc.StatusCode.PERMISSION_DENIED)


@pytest.mark.parametrize("content, message", [
    ("short-token\n", "line 1: got a token of 11 characters, expected 16 to 4096"),
    (f"# ok\n{WRITE_TOKEN}\nwith a space in it, long enough\n", "line 3: got a token of 31 characters"),
    ("# only a comment\n\n", "got no token, expected at least one"),
])
def test_malformed_tokens_files_stop_the_start_without_showing_tokens(tmp_path, content, message):
    """A short token, one with a space, or no token at all: ValueError naming the line, not the token."""
    path = tmp_path / "write"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0, write_tokens_file=str(path)))
    assert "short-token" not in str(caught.value) and "with a space" not in str(caught.value)


# -- the SDK and the process ---------------------------------------------------------------

def test_sdk_client_with_token_and_mutual_tls(pki, tokens):
    """nnserve.clients.Client(token=, tls=TLS(...)) trains and predicts over mutual TLS with a
    write token; with a read token its write calls fail with PERMISSION_DENIED; without a
    client certificate it cannot connect."""
    clients = pytest.importorskip("nnserve.clients")
    settings = dict(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"]),
                    tls_client_ca=str(pki["ca"]), **tokens)
    tls = clients.TLS(ca=pki["ca"], cert=pki["client_cert"], key=pki["client_key"])
    x, y = make_batch(np.random.default_rng(0), 8, 4, 3)
    with serving(**settings) as port:
        with clients.Client(f"localhost:{port}", token=WRITE_TOKEN, tls=tls, timeout=10) as client:
            model = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy", name="sdk")
            model.train_step(x, y)
            assert model.predict(x).shape == (8, 3)
        with clients.Client(f"localhost:{port}", token=READ_TOKEN, tls=tls, timeout=10) as client:
            assert [m.name for m in client.list_models()] == ["sdk"]
            with pytest.raises(clients.NNServeError) as caught:
                client.delete_model("sdk")
            assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        with clients.Client(f"localhost:{port}", token=WRITE_TOKEN, tls=clients.TLS(ca=pki["ca"]),
                            timeout=3) as client:
            with pytest.raises(clients.NNServeError) as caught:
                client.list_models()
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_nnserve_serve_with_tls_and_tokens(pki, tokens):
    """`nnserve serve` with the TLS and tokens flags serves health to anyone with the CA and
    ModelService only with a token."""
    flags = ["--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]),
             "--read-tokens-file", tokens["read_tokens_file"],
             "--write-tokens-file", tokens["write_tokens_file"]]
    with ServeProcess(*flags) as server, _tls_channel(server.port, pki) as channel:
        assert server.named("tls_enabled") and server.named("auth_enabled")[0]["write_tokens"] == 1
        assert _health(channel) == SERVING
        stub = pb_grpc.ModelServiceStub(channel)
        assert _call(stub, "ListModels", pb.ListModelsRequest(), None)[0] == grpc.StatusCode.UNAUTHENTICATED
        assert _call(stub, "ListModels", pb.ListModelsRequest(), READ_TOKEN)[0] == grpc.StatusCode.OK
        assert server.terminate() == 0
    text = str(server.events)
    assert READ_TOKEN not in text and WRITE_TOKEN not in text


def test_open_inference_protocol_needs_a_token_but_its_probes_do_not(pki, tokens):
    """inference.GRPCInferenceService over TLS: ServerLive/ServerReady answer without a
    token (probes); every other method needs one, and a read token is enough."""
    from nnserve.oip import grpc_service_pb2 as oip
    from nnserve.oip import grpc_service_pb2_grpc as oip_grpc

    with serving(tls_cert=str(pki["server_cert"]), tls_key=str(pki["server_key"]), **tokens) as port, \
            _tls_channel(port, pki) as channel:
        writer = (("authorization", f"Bearer {WRITE_TOKEN}"),)
        pb_grpc.ModelServiceStub(channel).CreateModel(
            pb.CreateModelRequest(spec=classifier_spec(), name="m"), timeout=10, metadata=writer)
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(oip.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(oip.ServerReadyRequest(), timeout=10).ready
        x = np.ones((1, 4), np.float32)
        request = oip.ModelInferRequest(
            model_name="m", inputs=[oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32",
                                                                             shape=[1, 4])],
            raw_input_contents=[x.tobytes()])
        calls = {"ModelReady": oip.ModelReadyRequest(name="m"), "ServerMetadata": oip.ServerMetadataRequest(),
                 "ModelMetadata": oip.ModelMetadataRequest(name="m"), "ModelInfer": request,
                 "ModelConfig": oip.ModelConfigRequest(name="m"), "RepositoryIndex": oip.RepositoryIndexRequest()}
        for method, message in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                getattr(stub, method)(message, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            getattr(stub, method)(message, timeout=10, metadata=(("authorization", f"Bearer {READ_TOKEN}"),))
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ModelStreamInfer(iter([request]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (answer,) = stub.ModelStreamInfer(iter([request]), timeout=10,
                                          metadata=(("authorization", f"Bearer {READ_TOKEN}"),))
        assert answer.error_message == "" and answer.infer_response.model_version == "0"
