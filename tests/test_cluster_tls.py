"""Cluster mode over TLS: a call for another server's model is forwarded over TLS, the
owner's certificate checked against --cluster-ca, and under mutual TLS with the forwarding
server's own certificate; a forward to an owner whose certificate the CA did not sign fails
and changes nothing."""

import contextlib

import grpc
import numpy as np
import pytest

from cluster_support import cluster_server, etcd, trained_models
from nnserve.clients import Client, NNServeError, TLS
from security_support import Authority

pytest.importorskip("etcd3gw")


def _pki(folder):
    """{name: path}: a CA, a server certificate it signed for 127.0.0.1 that also allows client
    authentication, a client certificate, and a rogue CA."""
    ca, rogue = Authority("nnserve cluster CA"), Authority("rogue CA")
    files = {"ca": ca.pem, "rogue_ca": rogue.pem}
    files["cert"], files["key"] = ca.issue("nnserve server", server=True, also_client=True)
    files["client_cert"], files["client_key"] = ca.issue("trainer", server=False)
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(content)
    return paths


def _tls_flags(pki, cluster_ca="ca", mutual=False):
    flags = ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]),
             "--cluster-ca", str(pki[cluster_ca])]
    return flags + (["--tls-client-ca", str(pki["ca"])] if mutual else [])


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_calls_for_another_servers_model_are_forwarded_over_tls(tmp_path, mutual):
    pki = _pki(tmp_path)
    tls = TLS(ca=pki["ca"].read_bytes(),
              cert=pki["client_cert"].read_bytes() if mutual else None,
              key=pki["client_key"].read_bytes() if mutual else None)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        flags = _tls_flags(pki, mutual=mutual)
        _, target_a = cluster_server(stack, tmp_path, endpoint, "a", flags=flags)
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b", flags=flags)
        client_a = stack.enter_context(Client(target_a, tls=tls))
        client_b = stack.enter_context(Client(target_b, tls=tls))
        (model,) = trained_models(client_a, 1, 2, np.random.default_rng(0))
        via_b = client_b.get_model(model.id)
        x = np.ones((3, 3), np.float32)
        np.testing.assert_array_equal(via_b.predict(x), model.predict(x))
        via_b.train_step(x, np.zeros(3, np.int64))
        assert model.refresh().step == 3


def test_a_forward_to_an_owner_the_cluster_ca_did_not_sign_fails_and_changes_nothing(tmp_path):
    pki = _pki(tmp_path)
    tls = TLS(ca=pki["ca"].read_bytes())
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        _, target_a = cluster_server(stack, tmp_path, endpoint, "a", flags=_tls_flags(pki))
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b",
                                     flags=_tls_flags(pki, cluster_ca="rogue_ca"))
        client_a = stack.enter_context(Client(target_a, tls=tls))
        client_b = stack.enter_context(Client(target_b, tls=tls, timeout=10))
        (model,) = trained_models(client_a, 1, 2, np.random.default_rng(1))
        with pytest.raises(NNServeError) as refused:
            client_b.get_model(model.id).train_step(np.ones((2, 3), np.float32), np.zeros(2, np.int64))
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE, refused.value
        assert model.refresh().step == 2


def test_cluster_mode_with_tls_requires_the_cluster_ca(tmp_path):
    from nnserve.service.settings import Settings

    with pytest.raises(ValueError, match="cluster_ca: got none with tls_cert in cluster mode"):
        Settings(cluster_etcd="http://127.0.0.1:2379", cluster_advertise="127.0.0.1:1",
                 state_dir=str(tmp_path), tls_cert="c.pem", tls_key="k.pem")
