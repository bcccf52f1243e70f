"""`nnserve bench cluster` end to end, as briefly as it runs: real etcd, two cluster-mode
servers, nginx from deploy/nginx; its figures are not checked, only that it measures both
paths and recovers every killed model."""

import json

import pytest

from cluster_support import ETCD, NGINX, require
from nnserve.cli.main import main

pytest.importorskip("etcd3gw")


def test_bench_cluster_reports_the_proxy_cost_and_the_recovery(tmp_path, capsys):
    """A 1-second run reports routed and direct figures for Predict and TrainStep with their
    ratio, and a recovery row per model count and size."""
    require(ETCD)
    require(NGINX)
    report_path = tmp_path / "report.json"
    assert main(["bench", "cluster", "--duration", "1s", "--rounds", "1", "--models", "2",
                 "--recovery-layers", "4,8,2", "--lease-ttl", "2", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["proxy"]) == {"predict b1", "train b32"}
    for row in report["proxy"].values():
        for path in ("direct", "routed"):
            assert row[path]["p50_ms"] > 0 and row[path]["calls_per_second"] > 0
        assert row["ratio"] > 0
    (recovery,) = report["recovery"]
    assert (recovery["layers"], recovery["models"], recovery["ttl"]) == ([4, 8, 2], 2, 2)
    assert 0 < recovery["first_seconds"] <= recovery["all_seconds"]
    assert "recovery after kill -9" in capsys.readouterr().out


def test_bench_cluster_refuses_a_bad_model_count(capsys):
    """A --models that is no list of integers is a usage error (exit 2), before anything starts."""
    assert main(["bench", "cluster", "--models", "a,b"]) == 2
    assert "nnserve bench cluster: error" in capsys.readouterr().err
