"""Cluster mode against a three-member etcd: a server given every member's endpoint goes on
to the next member when one is down, keeps its lease and its models, and loses no step."""

import contextlib
import signal
import time

import numpy as np
import pytest

from cluster_support import cluster_server, etcd_cluster
from nnserve.clients import Client

pytest.importorskip("etcd3gw")

TTL = 3


def test_a_stopped_etcd_member_costs_no_lease_and_no_step(tmp_path):
    """With the first of three etcd endpoints stopped, every train step sent during two
    lease TTLs succeeds (the keepalives and commits go to the other members), and the
    model's step count equals the acknowledged steps; the server logged the member as
    unreachable and never lost its lease."""
    with contextlib.ExitStack() as stack:
        members = stack.enter_context(etcd_cluster(tmp_path))
        _, target = cluster_server(stack, tmp_path, ",".join(endpoint for endpoint, _ in members),
                                   "server", TTL, flags=("--log-format", "json"))
        client = stack.enter_context(Client(target, timeout=10))
        model = client.create_model([3, 4, 2], ["tanh", "softmax"], "cross_entropy", name="kept")
        x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
        model.train_step(x, y)
        acknowledged = 1

        _, first = members[0]
        first.send_signal(signal.SIGTERM)
        first.wait(30)
        log = tmp_path / "server.log"
        started = time.monotonic()
        while time.monotonic() < started + 2 * TTL or "etcd_member_unreachable" not in log.read_text():
            assert time.monotonic() < started + 60, "the server never met the stopped member"
            model.train_step(x, y)
            acknowledged += 1
            time.sleep(0.1)  # a step every 0.1 s across two TTLs of keepalives
        assert model.refresh().step == acknowledged
        assert "lease_lost" not in log.read_text()
