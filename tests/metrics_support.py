"""Reading a server's /metrics in tests: scrape over HTTP, parse with prometheus_client."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["SERVICE", "rpc", "scrape", "value"]

SERVICE = "nnserve.v1.ModelService"


def scrape(port):
    """{(sample name, sorted label items): value} from GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels):
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def rpc(method, code=None, service=SERVICE, grpc_type="UNARY"):
    """The gRPC labels of one method (and status code)."""
    labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}
    if code is not None:
        labels["grpc_code"] = code
    return labels
