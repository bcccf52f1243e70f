"""The client's channel: retry policy, deadlines, bearer token and TLS, against scripted servers.

A scripted server implements ModelService with canned replies, records each call's
metadata and can fail the first calls of a method with UNAVAILABLE or answer slowly; it
serves on 127.0.0.1:0, in plaintext or with certificates made by openssl at test time.
"""

import asyncio
import collections
import contextlib
import json
import shutil
import subprocess
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from nnserve.clients import TLS, AsyncClient, Client, NNServeError
from nnserve.clients.channel import (IDEMPOTENT_METHODS, MUTATING_METHODS, SERVICE_NAME,
                                     STREAMING_METHODS, channel_credentials, channel_options)
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.models import spec_to_proto

MODEL = pb.Model(id="0" * 32, name="scripted", num_parameters=3, spec=spec_to_proto(
    {"layers": [2, 1], "activations": ["sigmoid"], "loss": "binary_cross_entropy",
     "optimizer": "sgd", "init": "he", "dtype": "float32"}))


class ScriptedService(pb_grpc.ModelServiceServicer):
    """GetModel, TrainStep and SetWeights with canned replies; the first `failures` calls of each fail."""

    def __init__(self, failures=0, delay=0.0):
        self.failures = failures
        self.delay = delay
        self.calls = collections.Counter()
        self.metadata = []

    def _record(self, method, context):
        self.calls[method] += 1
        self.metadata.append(dict(context.invocation_metadata()))
        if self.calls[method] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
        time.sleep(self.delay)

    def GetModel(self, request, context):
        self._record("GetModel", context)
        return pb.GetModelResponse(model=MODEL)

    def TrainStep(self, request, context):
        self._record("TrainStep", context)
        return pb.TrainStepResponse(loss=0.25, step=1, version=1)

    def SetWeights(self, request, context):
        self._record("SetWeights", context)
        return pb.SetWeightsResponse(step=3, version=7)


@contextlib.contextmanager
def scripted_server(service, credentials=None):
    """Yield the target of a server running `service` (TLS when credentials are given)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ModelServiceServicer_to_server(service, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait(10)


def test_retry_policy_covers_exactly_the_idempotent_methods():
    """The channel's service config retries UNAVAILABLE and overload refusals with backoff, for
    read-only unary and server-streaming methods only: never a mutating method nor a
    bidirectional stream; the three lists together name every method exactly once."""
    options = dict(channel_options())
    assert options["grpc.enable_retries"] == 1
    config = json.loads(options["grpc.service_config"])
    retried = {(name["service"], name["method"]) for entry in config["methodConfig"]
               if "retryPolicy" in entry for name in entry["name"]}
    assert retried == {(SERVICE_NAME, method) for method in IDEMPOTENT_METHODS}
    assert retried.isdisjoint((SERVICE_NAME, method) for method in MUTATING_METHODS + STREAMING_METHODS)
    listed = IDEMPOTENT_METHODS + MUTATING_METHODS + STREAMING_METHODS
    assert len(listed) == len(set(listed))
    assert set(listed) == set(pb.DESCRIPTOR.services_by_name["ModelService"].methods_by_name)
    for entry in config["methodConfig"]:
        policy = entry["retryPolicy"]
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
        assert policy["maxAttempts"] > 1 and float(policy["backoffMultiplier"]) > 1
        assert "timeout" not in entry  # the per-call deadline stays the client's


def test_set_weights_is_one_set_weights_call_never_retried():
    """RemoteModel.set_weights (sync and async) sends one SetWeights, no GetState or SetState,
    and an UNAVAILABLE reply fails it at once."""
    weights = [(np.zeros((2, 1), np.float32), np.zeros(1, np.float32))]
    service = ScriptedService()
    with scripted_server(service) as target, Client(target, timeout=10) as client:
        model = client.get_model("scripted")
        assert model.set_weights(weights) == (3, 7)
        assert (model.step, model.version) == (3, 7)

        async def set_async():
            async with AsyncClient(target, timeout=10) as aclient:
                remote = await aclient.get_model("scripted")
                await remote.set_weights(weights)
                return remote.step, remote.version

        assert asyncio.run(set_async()) == (3, 7)
    assert service.calls == {"GetModel": 2, "SetWeights": 2}

    service = ScriptedService(failures=1)
    with scripted_server(service) as target, Client(target, timeout=10) as client:
        model = client.get_model("scripted")
        with pytest.raises(NNServeError) as caught:
            model.set_weights(weights)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.method == "SetWeights"
        assert service.calls["SetWeights"] == 1


def test_idempotent_call_is_retried_and_mutating_call_is_not():
    """GetModel succeeds after two UNAVAILABLE replies; TrainStep fails on its one attempt."""
    service = ScriptedService(failures=2)
    with scripted_server(service) as target, Client(target, timeout=10) as client:
        model = client.get_model("scripted")
        assert service.calls["GetModel"] == 3 and model.id == MODEL.id
        with pytest.raises(NNServeError) as caught:
            model.train_step([[0.0, 1.0]], [1.0])
        assert service.calls["TrainStep"] == 1
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.message == "scripted outage"


def test_retries_stop_after_the_policy_s_attempts():
    """A read that keeps failing is tried maxAttempts times, then raises UNAVAILABLE."""
    service = ScriptedService(failures=100)
    with scripted_server(service) as target, Client(target, timeout=10) as client:
        with pytest.raises(NNServeError) as caught:
            client.get_model("scripted")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.calls["GetModel"] == json.loads(
        dict(channel_options())["grpc.service_config"])["methodConfig"][0]["retryPolicy"]["maxAttempts"]


def test_every_call_has_the_client_s_deadline():
    """A reply slower than the client's timeout ends in DEADLINE_EXCEEDED at the deadline."""
    service = ScriptedService(delay=1.0)
    with scripted_server(service) as target, Client(target, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(NNServeError) as caught:
            client.get_model("scripted")
        elapsed = time.monotonic() - started
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed < service.delay


def test_token_is_sent_as_bearer_metadata_by_both_clients():
    """token= reaches the server as `authorization: Bearer <token>` on every call."""
    service = ScriptedService()
    with scripted_server(service) as target:
        with Client(target, token="s3cret") as client:
            client.get_model("scripted").train_step([[0.0, 1.0]], [1.0])

        async def use_async():
            async with AsyncClient(target, token="async-s3cret") as client:
                await client.get_model("scripted")

        asyncio.run(use_async())
    assert [m.get("authorization") for m in service.metadata] == [
        "Bearer s3cret", "Bearer s3cret", "Bearer async-s3cret"]


def test_bad_tokens_and_tls_arguments_are_refused():
    """An empty or multi-line token, half a client key pair or a wrong tls type raise at once."""
    for token in ("", "a\nb", 42):
        with pytest.raises(ValueError, match="token"):
            Client("127.0.0.1:1", token=token)
    with pytest.raises(ValueError, match="both"):
        TLS(cert=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(TypeError, match="tls"):
        Client("127.0.0.1:1", tls="yes")
    assert isinstance(channel_credentials(True)[0], grpc.ChannelCredentials)
    assert channel_credentials(None) == (None, None)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A test CA, a server certificate for 'nnserve.test' and a client certificate, as paths."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("certs")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=nnserve test CA")
    for name, extension in (("server", "subjectAltName=DNS:nnserve.test"),
                            ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    return folder


def _server_credentials(folder, *, require_client_auth=False):
    return grpc.ssl_server_credentials(
        [((folder / "server.key").read_bytes(), (folder / "server.pem").read_bytes())],
        root_certificates=(folder / "ca.pem").read_bytes(), require_client_auth=require_client_auth)


def _refused(target, **arguments):
    """The status code of a DeleteModel (never retried) made with these client arguments."""
    with Client(target, timeout=10, **arguments) as client:
        with pytest.raises(NNServeError) as caught:
            client.delete_model("scripted")
    return caught.value.code


def test_tls_connects_with_the_right_ca_and_name_only(certificates):
    """TLS with the CA and server name works (token included); plaintext or wrong roots fail."""
    service = ScriptedService()
    with scripted_server(service, _server_credentials(certificates)) as target:
        tls = TLS(ca=certificates / "ca.pem", server_name="nnserve.test")
        with Client(target, token="over-tls", tls=tls) as client:
            assert client.get_model("scripted").id == MODEL.id
        assert service.metadata[-1]["authorization"] == "Bearer over-tls"
        assert _refused(target) == grpc.StatusCode.UNAVAILABLE                  # plaintext
        assert _refused(target, tls=TLS(ca=certificates / "ca.pem")) == grpc.StatusCode.UNAVAILABLE  # name
        assert _refused(target, tls=True) == grpc.StatusCode.UNAVAILABLE        # system roots


def test_mutual_tls_needs_the_client_certificate(certificates):
    """A server that requires client certificates accepts the SDK only with cert and key."""
    service = ScriptedService()
    credentials = _server_credentials(certificates, require_client_auth=True)
    with scripted_server(service, credentials) as target:
        ca = (certificates / "ca.pem").read_bytes()  # PEM bytes work as well as paths
        assert _refused(target, tls=TLS(ca=ca, server_name="nnserve.test")) == grpc.StatusCode.UNAVAILABLE
        tls = TLS(ca=ca, cert=certificates / "client.pem", key=str(certificates / "client.key"),
                  server_name="nnserve.test")
        with Client(target, tls=tls) as client:
            assert client.get_model("scripted").name == "scripted"
