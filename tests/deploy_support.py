"""Shared pieces of the deploy tests: the manifests rendered by `kubectl kustomize`, and the
workload, its server container and that container's environment read out of them.

Rendering needs the kubectl binary (its bundled kustomize); where it is absent the tests that
render are skipped, saying so. CI has it.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

__all__ = ["DEPLOY", "K8S", "POD_FIELDS", "ROOT", "WORKLOAD_KINDS", "WORKLOAD_NAME",
           "container_env", "find", "kustomize", "render", "server_container", "workload"]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The servers' workload: a StatefulSet of shards, or in cluster mode a Deployment.
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
WORKLOAD_NAME = "nnserve"
# What the downward API gives a variable in container_env: a pod IP of the documentation range.
POD_FIELDS = {"status.podIP": "192.0.2.10"}


def kustomize(directory):
    """The finished `kubectl kustomize directory` (returncode, stdout, stderr); skips the
    calling test where kubectl is not installed."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the manifests are rendered with `kubectl kustomize`")
    return subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120)


def render(directory):
    """The resources `kubectl kustomize directory` produces, in its output order."""
    result = kustomize(directory)
    if result.returncode:
        pytest.fail(f"kubectl kustomize {directory} exited {result.returncode}: {result.stderr}")
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(resources, kind, name=None):
    found = [r for r in resources if r["kind"] == kind
             and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"got {len(found)} {kind} {name or ''}, expected 1"
    return found[0]


def workload(resources):
    found = [r for r in resources if r["kind"] in WORKLOAD_KINDS
             and r["metadata"]["name"] == WORKLOAD_NAME]
    assert len(found) == 1, f"got {len(found)} workloads named {WORKLOAD_NAME}, expected 1"
    return found[0]


def server_container(resources):
    containers = workload(resources)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "nnserve")


def container_env(resources):
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env
    (which wins), pod fields from the downward API (POD_FIELDS), and $(NAME) in a value
    replaced by an earlier variable's value."""
    container = server_container(resources)
    environ = {}
    for source in container.get("envFrom", []):
        environ.update(find(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            # Only pod fields: a Secret's value would need a cluster to resolve.
            environ[variable["name"]] = POD_FIELDS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
            continue
        environ[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: environ.get(m[1], m[0]),
                                           variable["value"])
    return environ
