"""Deployment artifacts under deploy/: Dockerfile, kustomize manifests, Grafana dashboard.

Everything is checked offline, with no cluster, no Docker engine and no kustomize binary:

- Each kustomization is rendered by the small renderer below, which implements exactly the
  kustomize features deploy/k8s uses (resources, namespace, images, strategic-merge patches
  from files, configMapGenerator from env files with kustomize's name hash) and refuses any
  other field, so a manifest can never render differently here than under kustomize without
  a test failing first.
- Built-in kinds are validated against the Kubernetes JSON schemas that kubernetes-validate
  ships, in strict mode (unknown fields are errors), at pinned Kubernetes versions.
- The ServiceMonitor is a Prometheus Operator CRD, absent from those schemas: it is validated
  against a structural schema of the fields used (SERVICE_MONITOR_SCHEMA below).
- Cross-references: selectors against pod labels, ports and probes against the container,
  NNSERVE_* variables against the server's Settings, BLAS threads and the CPU limit,
  the dashboard's PromQL against the metrics the server exports.
"""

import copy
import dataclasses
import hashlib
import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from nnserve.service import settings as settings_module
from nnserve.service.settings import Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "nnserve-dashboard.json"

# The oldest Kubernetes the manifests support (native gRPC probes, PDB
# unhealthyPodEvictionPolicy and StatefulSet PVC retention are on by default from 1.27; 1.30
# is the oldest release still commonly supported) and the newest whose schemas
# kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
VARIANTS = ("base", "overlays/example", "overlays/durable", "overlays/secure")
WORKLOAD = ("StatefulSet", "nnserve")

# The metrics the server exports, as the dashboard may name them: exposition name ->
# (type, label names). When the server exposes a metrics registry, test_metric_table_is_the_servers
# compares this table with it; otherwise it is the fixed list from issue 5 (section 1).
GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
MODEL = ("model",)
METRICS = {
    "grpc_server_started_total": ("counter", GRPC_LABELS),
    "grpc_server_handled_total": ("counter", GRPC_LABELS + ("grpc_code",)),
    "grpc_server_handling_seconds": ("histogram", GRPC_LABELS),
    "grpc_server_msg_received_total": ("counter", GRPC_LABELS),
    "grpc_server_msg_sent_total": ("counter", GRPC_LABELS),
    "nnserve_train_steps_total": ("counter", MODEL),
    "nnserve_train_examples_total": ("counter", MODEL),
    "nnserve_train_loss": ("gauge", MODEL),
    "nnserve_train_batch_loss": ("summary", MODEL),
    "nnserve_train_step_duration_seconds": ("histogram", MODEL),
    "nnserve_predict_rows_total": ("counter", MODEL),
    "nnserve_predict_duration_seconds": ("histogram", MODEL),
    "nnserve_models": ("gauge", ()),
    "nnserve_parameters": ("gauge", ()),
    "nnserve_parameter_bytes": ("gauge", ()),
    "nnserve_build_info": ("info", ("version", "threading_layer", "threads", "blas")),
}
# Labels Prometheus adds to every series scraped through the ServiceMonitor.
TARGET_LABELS = {"namespace", "pod", "service", "endpoint", "container", "job", "instance"}


# -- a minimal kustomize ------------------------------------------------------------------------

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches",
                        "configMapGenerator"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}
# Strategic-merge keys of the lists deploy/k8s patches (from the Kubernetes API types);
# any other list is replaced whole, as kustomize does for lists without a merge key.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name"}


class Unsupported(Exception):
    """A kustomization uses something this renderer does not implement."""


@dataclasses.dataclass
class Rendered:
    resources: list
    generated: set  # names of generated ConfigMaps, before their hash suffix
    files: set  # every file read


def render(directory):
    """Return the resources `kustomize build directory` produces (hash suffixes included)."""
    rendered = _build(Path(directory))
    renamed = {}
    for resource in rendered.resources:
        if resource["kind"] == "ConfigMap" and resource["metadata"]["name"] in rendered.generated:
            name = resource["metadata"]["name"]
            renamed[name] = f"{name}-{configmap_hash(resource)}"
            resource["metadata"]["name"] = renamed[name]
    for pod in _pod_specs(rendered.resources):
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] in renamed:
                    ref["name"] = renamed[ref["name"]]
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["name"] in renamed:
                    ref["name"] = renamed[ref["name"]]
        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] in renamed:
                volume["configMap"]["name"] = renamed[volume["configMap"]["name"]]
    return rendered


def configmap_hash(configmap):
    """kustomize's name suffix for a generated ConfigMap (api/hasher: sha256 of a JSON
    encoding of kind, name and data, first 10 hex digits with 0, 1, 3, a, e remapped)."""
    encoded = {"kind": "ConfigMap", "name": configmap["metadata"]["name"],
               "data": configmap.get("data", "")}
    # Go's encoding/json: sorted keys, no spaces, UTF-8, <, > and & escaped.
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _build(directory):
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise Unsupported(f"{path}: got fields {sorted(unknown)}, expected only "
                          f"{sorted(KUSTOMIZATION_FIELDS)}")
    resources, generated, files = [], set(), {path}
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            base = _build(target)
            resources += base.resources
            generated |= base.generated
            files |= base.files
        else:
            files.add(target)
            resources += [document for document in yaml.safe_load_all(target.read_text())
                          if document]
    for generator in kustomization.get("configMapGenerator", []):
        if set(generator) - {"name", "envs", "behavior"}:
            raise Unsupported(f"{path}: configMapGenerator fields {sorted(generator)}")
        data = {}
        for env_file in generator.get("envs", []):
            files.add((directory / env_file).resolve())
            data.update(read_env_file(directory / env_file))
        name, behavior = generator["name"], generator.get("behavior", "create")
        existing = [r for r in resources if r["kind"] == "ConfigMap"
                    and r["metadata"]["name"] == name and name in generated]
        if behavior == "create" and not existing:
            resources.append({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": name}, "data": data})
            generated.add(name)
        elif behavior in ("merge", "replace") and len(existing) == 1:
            if behavior == "merge":
                existing[0].setdefault("data", {}).update(data)
            else:
                existing[0]["data"] = data
        else:
            raise Unsupported(f"{path}: configMapGenerator {name!r} behavior {behavior!r} with "
                              f"{len(existing)} generated ConfigMaps of that name")
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{path}: got patch {patch}, expected only `path:` "
                              "(a strategic-merge patch naming its target)")
        patch_path = (directory / patch["path"]).resolve()
        files.add(patch_path)
        body = yaml.safe_load(patch_path.read_text())
        targets = [r for r in resources if r["kind"] == body["kind"]
                   and r["apiVersion"] == body["apiVersion"]
                   and r["metadata"]["name"] == body["metadata"]["name"]]
        if len(targets) != 1:
            raise Unsupported(f"{patch_path}: matches {len(targets)} resources, expected 1")
        strategic_merge(targets[0], body)
    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise Unsupported(f"{path}: images fields {sorted(image)}")
        for pod in _pod_specs(resources):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                if "@" in container["image"] or name != image["name"]:
                    continue
                name = image.get("newName", name)
                tag = image.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name
    return Rendered(resources, generated, files)


def read_env_file(path):
    """KEY=VALUE lines of a kustomize env file; blank lines and # comments skipped."""
    data = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise Unsupported(f"{path}:{number}: got {line!r}, expected KEY=VALUE "
                              "(a bare KEY would read kustomize's own environment)")
        key, value = line.split("=", 1)
        data[key] = value
    return data


def strategic_merge(target, patch):
    """Merge `patch` into `target` in place: maps recursively, lists by MERGE_KEYS, or whole."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise Unsupported(f"patch directive {key}")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list) and key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            for item in value:
                matches = [old for old in target[key] if old[merge_key] == item[merge_key]]
                if matches:
                    strategic_merge(matches[0], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _pod_specs(resources):
    return [r["spec"]["template"]["spec"] for r in resources
            if r["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")]


# -- helpers over rendered resources ------------------------------------------------------------

@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    """(name, resources) of one rendered kustomization."""
    return request.param, render(K8S / request.param).resources


def find(resources, kind, name=None):
    found = [r for r in resources if r["kind"] == kind
             and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"got {len(found)} {kind} {name or ''}, expected 1"
    return found[0]


def workload(resources):
    return find(resources, *WORKLOAD)


def server_container(resources):
    containers = workload(resources)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "nnserve")


def pod_labels(resources):
    return workload(resources)["spec"]["template"]["metadata"]["labels"]


def matches(selector, labels):
    """Whether a LabelSelector (matchLabels only, as used here) selects `labels`."""
    assert set(selector) <= {"matchLabels"}, f"got selector {selector}, expected matchLabels only"
    return selector["matchLabels"].items() <= labels.items()


def parse_quantity(text):
    """A Kubernetes resource quantity as a number: '4Gi' -> 4 * 2**30, '500m' -> 0.5."""
    suffixes = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "m": 1e-3,
                "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    found = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert found and (not found[2] or found[2] in suffixes), f"got quantity {text!r}"
    return float(found[1]) * suffixes.get(found[2], 1)


def container_env(resources):
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env
    (which wins)."""
    container = server_container(resources)
    environ = {}
    for source in container.get("envFrom", []):
        environ.update(find(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        # A valueFrom (downward API, Secret) would need resolving here before it is checked.
        assert "value" in variable, f"got {variable}, expected a literal `value`"
        environ[variable["name"]] = variable["value"]
    return environ


def setting_names():
    """NNSERVE_* names the server reads, from its Settings as they are now."""
    return {env_name(field.name) for field in dataclasses.fields(Settings)}


def effective_settings(resources):
    """The Settings the server would start with in this pod."""
    return Settings.from_env(container_env(resources))


# -- rendering ----------------------------------------------------------------------------------

def test_configmap_hash_matches_kustomize():
    """The generated ConfigMap's name suffix is kustomize's (its hasher's own test vectors)."""
    assert configmap_hash({"metadata": {"name": ""}, "data": {"one": ""}}) == "9g67k2htb6"
    assert configmap_hash({"metadata": {"name": ""}}) == "6ct58987ht"


def test_variant_has_every_resource(variant):
    """Each kustomization renders one of each resource the deployment consists of."""
    _, resources = variant
    kinds = sorted(r["kind"] for r in resources if r["kind"] != "Namespace")
    assert kinds == sorted(["ConfigMap", "HorizontalPodAutoscaler", "NetworkPolicy",
                            "PodDisruptionBudget", "Service", "Service", "ServiceAccount",
                            "ServiceMonitor", "StatefulSet"])
    names = [(r["kind"], r["metadata"]["name"]) for r in resources]
    assert len(names) == len(set(names)), f"duplicate resources in {names}"


def test_every_file_under_k8s_is_used():
    """Every file under deploy/k8s is read by some kustomization (no stale manifests)."""
    used = set()
    for name in VARIANTS:
        used |= render(K8S / name).files
    on_disk = {path.resolve() for path in K8S.rglob("*") if path.is_file()}
    assert on_disk - used == set()


def test_renderer_refuses_unsupported_fields(tmp_path):
    """A kustomization field the renderer does not implement fails instead of being ignored."""
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {team: ml}\nresources: []\n")
    with pytest.raises(Unsupported, match="commonLabels"):
        render(tmp_path)


# -- schemas ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_kubernetes_schemas(variant, version):
    """Every built-in resource validates in strict mode against the pinned version's schema."""
    _, resources = variant
    validated = 0
    for resource in resources:
        if resource["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: test_servicemonitor_structure
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} at {path}: "
                        f"{error.message}")
        validated += 1
    assert validated == len(resources) - 1


# The ServiceMonitor fields used, with their types from the Prometheus Operator CRD
# (monitoring.coreos.com/v1); unknown fields are errors, as in strict mode above.
_LABEL_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string",
                                    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                           "namespace": {"type": "string"}, "labels": _LABEL_MAP,
                           "annotations": _LABEL_MAP}},
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": _LABEL_MAP}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array",
                                                                    "items": {"type": "string"}}}},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port"], "additionalProperties": False,
                        "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                       "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                       "interval": _DURATION, "scrapeTimeout": _DURATION,
                                       "honorLabels": {"type": "boolean"}}}}}}},
}


def test_servicemonitor_structure(variant):
    """The ServiceMonitor has the CRD's structure, and its scrape timeout fits its interval."""
    _, resources = variant
    monitor = find(resources, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    for endpoint in monitor["spec"]["endpoints"]:
        seconds = [int(endpoint[key].rstrip("s")) for key in ("scrapeTimeout", "interval")]
        assert seconds[0] <= seconds[1]


# -- cross-references ---------------------------------------------------------------------------

def test_selectors_match_pod_labels(variant):
    """The workload, both Services, the PDB, the NetworkPolicy and the spread constraint select
    exactly the pod template's labels, and the HPA targets the workload."""
    _, resources = variant
    labels = pod_labels(resources)
    spec = workload(resources)["spec"]
    assert matches(spec["selector"], labels)
    assert spec["selector"]["matchLabels"] == labels
    for service in (r for r in resources if r["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
    assert matches(find(resources, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert matches(find(resources, "NetworkPolicy")["spec"]["podSelector"], labels)
    for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
        assert matches(constraint["labelSelector"], labels)
    target = find(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", *WORKLOAD)


def test_servicemonitor_scrapes_each_pod_once(variant):
    """The ServiceMonitor selects exactly one Service, in its own namespace, whose `metrics`
    port leads to the container's metrics port."""
    _, resources = variant
    monitor = find(resources, "ServiceMonitor")
    selected = [s for s in resources if s["kind"] == "Service"
                and matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
                and s["metadata"].get("namespace") == monitor["metadata"].get("namespace")]
    assert [s["metadata"]["name"] for s in selected] == ["nnserve"]
    service_ports = {p["name"]: p for p in selected[0]["spec"]["ports"]}
    container_ports = {p["name"] for p in server_container(resources)["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert service_ports[endpoint["port"]]["targetPort"] in container_ports
        assert endpoint.get("path", "/metrics") == "/metrics"


def test_services_and_ports(variant):
    """The Service exposes `grpc` 50051 and `metrics` 9464 (not `health` 8081, the probes'),
    the headless Service (clusterIP None) is the StatefulSet's serviceName, and every
    targetPort names a container port."""
    _, resources = variant
    container_ports = {p["name"]: p["containerPort"] for p in server_container(resources)["ports"]}
    assert container_ports == {"grpc": 50051, "metrics": 9464, "health": 8081}
    service = find(resources, "Service", "nnserve")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        name: port for name, port in container_ports.items() if name != "health"}
    assert service["spec"].get("clusterIP") != "None"
    headless = find(resources, "Service", workload(resources)["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses", False)
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    for svc in (service, headless):
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports


def test_network_policy_ports_exist(variant):
    """The NetworkPolicy opens every container port but the probes' (traffic from the pod's
    node is always allowed), and egress is closed."""
    _, resources = variant
    policy = find(resources, "NetworkPolicy")["spec"]
    names = {p["name"] for p in server_container(resources)["ports"]}
    opened = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert opened == names - {"health"}
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []


def test_probes_use_grpc_health(variant):
    """Startup, liveness and readiness are native gRPC probes on the server's health port;
    readiness asks for the service name the server registers, and startup allows for the
    warm-up."""
    from nnserve.service.servicer import SERVICE_NAME

    _, resources = variant
    container = server_container(resources)
    health_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert effective_settings(resources).health_port == health_port
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[kind]["grpc"]["port"] == health_port, kind
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    assert container["livenessProbe"]["grpc"].get("service", "") == ""
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_every_nnserve_variable_is_a_setting(variant):
    """Every NNSERVE_* variable set (env or ConfigMap) is one the server reads, and the
    server accepts every value."""
    _, resources = variant
    environ = container_env(resources)
    prefixed = {key for key in environ if key.startswith(settings_module.ENV_PREFIX)}
    unknown = prefixed - setting_names()
    assert unknown == set(), "variables the server does not read"
    effective_settings(resources)  # raises ValueError on a bad value


def test_threads_match_cpu_limit(variant):
    """Each BLAS call gets one thread (requests run side by side on the cores instead), the
    CPU limit is whole cores and requests equal limits (Guaranteed QoS: a static CPU manager
    may pin whole cores)."""
    _, resources = variant
    container = server_container(resources)
    cpu = parse_quantity(container["resources"]["limits"]["cpu"])
    assert cpu == int(cpu) >= 1, "the CPU limit should be whole cores"
    environ = container_env(resources)
    for key in ("NNSERVE_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        assert environ[key] == "1", key
    assert effective_settings(resources).threads == 1
    assert container["resources"]["requests"] == container["resources"]["limits"]


def test_ports_match_server_settings(variant):
    """The container's grpc, metrics and health ports are the ones the server binds with its
    settings."""
    _, resources = variant
    settings = effective_settings(resources)
    ports = {p["name"]: p["containerPort"] for p in server_container(resources)["ports"]}
    assert ports["grpc"] == settings.port
    assert ports["metrics"] == settings.metrics_port
    assert ports["health"] == settings.health_port


def requests_held(settings):
    """The most requests the server holds at once: admitted calls plus the reserved threads
    (service/overload.py); without --max-concurrent-rpcs there is no bound."""
    from nnserve.service.overload import RESERVED_THREADS

    return settings.max_concurrent_rpcs + RESERVED_THREADS if settings.max_concurrent_rpcs else None


def test_memory_budget_fits_limit(variant):
    """The limits ConfigMap bounds memory within the limit: 5 x parameter bytes, 2 x message
    bytes per request held, 512 MiB of runtime."""
    _, resources = variant
    settings = effective_settings(resources)
    held = requests_held(settings)
    assert held, "NNSERVE_MAX_CONCURRENT_RPCS=0 lets queued requests grow without bound"
    budget = (5 * settings.max_total_parameter_bytes + 2 * held * settings.max_message_bytes
              + (512 << 20))
    limit = parse_quantity(server_container(resources)["resources"]["limits"]["memory"])
    assert budget <= limit, f"got a budget of {budget / 2**30:.2f} GiB, limit {limit / 2**30} GiB"


def test_termination_grace_covers_drain_and_grace(variant):
    """The pod's termination grace period outlasts the server's drain plus grace periods."""
    _, resources = variant
    settings = effective_settings(resources)
    assert settings.drain_period > 0, "a drain period lets endpoints go before RPCs are refused"
    seconds = workload(resources)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert seconds >= settings.drain_period + settings.grace_period + 5


def test_security_context(variant):
    """The pod meets the restricted Pod Security Standard, mounts no token, injects no
    service-link variables (NNSERVE_PORT!), and every writable path is a volume."""
    _, resources = variant
    pod = workload(resources)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    container = server_container(resources)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
        "capabilities": {"drop": ["ALL"]}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert mounts["/tmp"] in empty_dirs
    assert mounts[container_env(resources)["NUMBA_CACHE_DIR"]] in empty_dirs


def test_autoscaler_owns_replicas_and_never_scales_down(variant):
    """The workload leaves `replicas` to the HPA, which scales up on CPU and never down
    (a removed pod takes its models with it)."""
    _, resources = variant
    assert "replicas" not in workload(resources)["spec"]
    hpa = find(resources, "HorizontalPodAutoscaler")["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert hpa["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"
    assert find(resources, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_limits_come_from_a_generated_configmap(variant):
    """The container reads its limits from the generated ConfigMap, whose name carries the
    hash of its contents (a changed limit rolls the pods)."""
    _, resources = variant
    (source,) = server_container(resources)["envFrom"]
    configmap = find(resources, "ConfigMap", source["configMapRef"]["name"])
    unhashed = {**configmap, "metadata": {"name": "nnserve-limits"}}
    assert configmap["metadata"]["name"] == f"nnserve-limits-{configmap_hash(unhashed)}"
    assert all(key.startswith(settings_module.ENV_PREFIX) for key in configmap["data"])


def test_example_overlay():
    """The example overlay puts everything in its restricted namespace and pulls the image
    from the registry, with 4 cores and the larger limits merged over the base's."""
    resources = render(K8S / "overlays/example").resources
    namespace = find(resources, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == namespace["metadata"]["name"]
    assert server_container(resources)["image"] == "registry.example.com/nnserve:0.1.0"
    assert parse_quantity(server_container(resources)["resources"]["limits"]["cpu"]) == 4
    environ = container_env(resources)
    assert environ["NNSERVE_MAX_TOTAL_PARAMETER_BYTES"] == str(1 << 30)
    assert environ["NNSERVE_MAX_ROWS_PER_REQUEST"] == "16384"  # from the base
    base_image = server_container(render(K8S / "base").resources)["image"]
    assert base_image == "nnserve:0.1.0"


def test_durable_overlay_mounts_state_dir():
    """The durable overlay gives each pod a retained volume mounted at NNSERVE_STATE_DIR."""
    resources = render(K8S / "overlays/durable").resources
    spec = workload(resources)["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in server_container(resources)["volumeMounts"]}
    assert mounts[container_env(resources)["NNSERVE_STATE_DIR"]] == claim["metadata"]["name"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}


def test_secure_overlay_mounts_tls_and_tokens_from_secrets():
    """The secure overlay points every TLS and tokens setting at a file of a Secret mounted
    read-only as a whole directory (so updates reach it), readable by the pod's group only,
    and keeps the probes on the plaintext health port."""
    resources = render(K8S / "overlays/secure").resources
    container = server_container(resources)
    environ = container_env(resources)
    pod = workload(resources)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    settings = effective_settings(resources)
    paths = (settings.tls_cert, settings.tls_key, settings.read_tokens_file, settings.write_tokens_file)
    assert all(paths)
    for path in paths:
        folder, _, key = path.rpartition("/")
        mount = mounts[folder]
        assert mount.get("readOnly") and "subPath" not in mount
        secret = volumes[mount["name"]]["secret"]
        assert secret["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001
        assert key in ({"tls.crt", "tls.key"} if folder.endswith("/tls") else {"read", "write"})
    assert {volumes[mounts[path.rpartition("/")[0]]["name"]]["secret"]["secretName"]
            for path in paths} == {"nnserve-tls", "nnserve-tokens"}
    assert not [r for r in resources if r["kind"] == "Secret"]  # secrets stay out of git
    health_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert all(container[kind]["grpc"]["port"] == health_port
               for kind in ("startupProbe", "livenessProbe", "readinessProbe"))
    assert environ["NNSERVE_HEALTH_PORT"] == str(health_port)


# -- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_stages():
    """[(base image, [(INSTRUCTION, arguments)])] per FROM, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append((arguments.split()[0], []))
        else:
            stages[-1][1].append((instruction, arguments.strip()))
    return stages


def instructions(stage, name):
    return [arguments for instruction, arguments in stage[1] if instruction == name]


def test_dockerfile_runs_nnserve_serve_as_non_root():
    """The final stage is python:3.11-slim, runs as a numeric non-root user (the pod's
    runAsUser) and has `nnserve serve` as its exec-form entry point."""
    final = dockerfile_stages()[-1]
    assert final[0] == "python:3.11-slim"
    (user,) = instructions(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    pod = workload(render(K8S / "base").resources)["spec"]["template"]["spec"]
    assert int(uid) == pod["securityContext"]["runAsUser"]
    (entrypoint,) = instructions(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["nnserve", "serve"]
    assert [json.loads(cmd) for cmd in instructions(final, "CMD")] in ([], [[]])


def test_dockerfile_installs_server_extra_from_project_files():
    """The build stage copies pyproject.toml, the README and every package folder pyproject
    maps, and pip-installs `.[server]` from them."""
    import tomllib

    build = dockerfile_stages()[0]
    copied = set()
    for arguments in instructions(build, "COPY"):
        copied |= {part.rstrip("/") for part in shlex.split(arguments)[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"].values()
    folders = {folder.split("/")[0] for folder in package_dirs}
    assert {"pyproject.toml", "README.md"} | folders <= copied
    installs = [shlex.split(run) for run in instructions(build, "RUN")
                if "pip" in run and "install" in run]
    assert any(words[-1] == ".[server]" and words[-2] == "install" for words in installs), installs


def test_dockerfile_cache_path_and_ports_match_manifests():
    """NUMBA_CACHE_DIR, the health port and EXPOSEd ports in the image are those the manifests
    mount and name."""
    final = dockerfile_stages()[-1]
    env = {}
    for arguments in instructions(final, "ENV"):
        for word in shlex.split(arguments):
            key, _, value = word.partition("=")
            env[key] = value
    resources = render(K8S / "base").resources
    assert env["NUMBA_CACHE_DIR"] == container_env(resources)["NUMBA_CACHE_DIR"]
    # A plain `docker run` listens where the image says: the health port too.
    assert env["NNSERVE_HEALTH_PORT"] == container_env(resources)["NNSERVE_HEALTH_PORT"]
    exposed = {int(port) for arguments in instructions(final, "EXPOSE")
               for port in arguments.split()}
    assert exposed == {p["containerPort"] for p in server_container(resources)["ports"]}


# -- Grafana dashboard --------------------------------------------------------------------------

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                   "or", "unless", "offset", "inf", "nan"}


def sample_names():
    """Series names a query may use: histograms' _bucket/_sum/_count, summaries' and the rest."""
    names = {}
    for name, (kind, labels) in METRICS.items():
        suffixes = {"histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("", "_sum", "_count")}.get(kind, ("",))
        extra = {"histogram": {"le"}, "summary": {"quantile"}}.get(kind, set())
        for suffix in suffixes:
            names[name + suffix] = set(labels) | (extra if suffix in ("", "_bucket") else set())
    return names


def dashboard_queries():
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"]["query"])
            queries.append((f"variable {variable['name']}", found[1]))
    return queries


def metric_names(expr):
    """The metric names a PromQL expression reads (including `__name__` matchers)."""
    names = set()
    for found in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', expr):
        names |= set(found[1].split("|"))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    for found in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):  # not 5m, 1e3
        if text[found.end():].lstrip().startswith("(") or found[0].lower() in PROMQL_KEYWORDS:
            continue  # a function or a keyword
        names.add(found[0])
    return names


def test_metric_name_parser():
    """The PromQL name parser finds metrics, not functions, labels, strings or variables."""
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{model=~"$model", '
            'x="b_total"}[1m]))) / on (pod) c - sum({__name__=~"d|e", pod="p"}) offset 5m')
    assert metric_names(expr) == {"a_bucket", "c", "d", "e"}


def test_dashboard_uses_only_exported_metrics():
    """Every metric name in the dashboard's queries is one the server exports."""
    known = sample_names()
    used = {name: where for where, expr in dashboard_queries() for name in metric_names(expr)}
    assert {name: where for name, where in used.items() if name not in known} == {}
    # The three kinds of series the issue asks for are all plotted.
    for name in ("nnserve_train_loss", "nnserve_train_examples_total",
                 "nnserve_predict_duration_seconds_bucket", "grpc_server_handling_seconds_bucket",
                 "grpc_server_handled_total"):
        assert name in used, name


def test_dashboard_uses_only_exported_labels():
    """Label matchers name labels their metric has (or Prometheus's target labels), and
    groupings and legends name labels some metric has."""
    known = sample_names()
    every_label = set().union(*known.values()) | TARGET_LABELS
    for where, expr in dashboard_queries():
        for found in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
            labels = set(re.findall(r"(\w+)\s*[=!]~?", found[2]))
            assert labels <= known[found[1]] | TARGET_LABELS, (where, found[0])
        for found in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            assert {label.strip() for label in found[1].split(",")} <= every_label, where
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= every_label, panel["title"]


def test_dashboard_plots_what_operators_need():
    """The dashboard plots loss per model, train examples/s, predict latency quantiles and
    request rate by status code, with unique panel ids and defined variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    for expr in exprs:
        assert set(re.findall(r"\$\{?(\w+)", expr)) <= variables, expr
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    joined = "\n".join(exprs)
    assert re.search(r"nnserve_train_loss\{[^}]*\}", joined)
    assert "rate(nnserve_train_examples_total{" in joined and "}[1m])" in joined
    assert re.search(r"histogram_quantile\(0\.99, sum by \(le[^)]*\) "
                     r"\(rate\(nnserve_predict_duration_seconds_bucket", joined)
    assert re.search(r"histogram_quantile\(0\.99, sum by \(le[^)]*\) "
                     r"\(rate\(grpc_server_handling_seconds_bucket", joined)
    assert re.search(r"sum by \(grpc_code\) \(rate\(grpc_server_handled_total", joined)


def test_metric_table_is_the_servers():
    """METRICS (what the dashboard is checked against) is exactly what a live server's
    metrics registry holds: names, types and labels."""
    from nnserve.service import create_server

    server, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1))
    try:
        registry = server.metrics.registry
        exported, labels = {}, {}
        suffix = {"counter": "_total", "info": "_info"}
        for family in registry.collect():
            name = family.name + suffix.get(family.type, "")
            exported[name] = family.type
            if family.type == "info":  # its labels are its one sample's
                (sample,) = family.samples
                labels[name] = tuple(sample.labels)
        assert exported == {name: kind for name, (kind, _) in METRICS.items()}
        # Label names of metrics without samples are not public in prometheus_client: read
        # them from the collectors' private attribute, where it exists.
        for collector, names in registry._collector_to_names.items():
            (name,) = [n for n in names if n in METRICS]
            if name not in labels and hasattr(collector, "_labelnames"):
                labels[name] = tuple(collector._labelnames)
        assert labels == {name: METRICS[name][1] for name in labels}
        assert set(labels) >= {name for name, (_, names) in METRICS.items() if names}
    finally:
        server.stop(0).wait()
