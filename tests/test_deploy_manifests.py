"""The kustomize manifests under deploy/k8s, rendered by the real kustomize (`kubectl
kustomize`) and checked offline, with no cluster:

- Built-in kinds are validated against the Kubernetes JSON schemas that kubernetes-validate
  ships, in strict mode (unknown fields are errors), at pinned Kubernetes versions.
- Custom resources absent from those schemas (the Prometheus Operator's ServiceMonitor; the
  cluster overlay's Gateway API Gateway and GRPCRoute and Envoy Gateway's BackendTrafficPolicy)
  are validated against their CRDs' own published openAPIV3Schemas (tests/data/*-crd-schema.yaml,
  each with its source and release named in its header), made strict the same way.
- Cross-references: selectors against pod labels, ports and probes against the container,
  NNSERVE_* variables against the server's Settings, thread counts and memory against the
  limits.

Tests that render are skipped where kubectl is not installed (CI has it).
"""

import dataclasses
import re
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_support import (DEPLOY, K8S, POD_FIELDS, ROOT, container_env, find, kustomize, render,
                            server_container, workload)
from nnserve.clients.channel import ROUTING_HEADER
from nnserve.service import settings as settings_module
from nnserve.service.settings import Settings, env_name

# The oldest Kubernetes the manifests support (native gRPC probes, PDB
# unhealthyPodEvictionPolicy and StatefulSet PVC retention are on by default from 1.27; 1.30
# is the oldest release still commonly supported) and the newest whose schemas
# kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
VARIANTS = ("base", "overlays/example", "overlays/durable", "overlays/secure", "overlays/cluster",
            "overlays/cluster-autoscaled")
# The prometheus-adapter rule that serves the in-flight metric to the autoscaled variant's HPA.
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"
CLUSTER = K8S / "overlays" / "cluster"
# Custom resources by (apiVersion, kind): the file of their CRD's schema in tests/data.
CRD_SCHEMA_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-crd-schema.yaml",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway-crd-schema.yaml",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "grpcroute-crd-schema.yaml",
    ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy"): "backendtrafficpolicy-crd-schema.yaml",
}


# -- helpers over rendered resources ------------------------------------------------------------

@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    """(name, resources) of one rendered kustomization."""
    return request.param, render(K8S / request.param)


def pod_labels(resources):
    return workload(resources)["spec"]["template"]["metadata"]["labels"]


def is_cluster(resources):
    """Whether these are the cluster overlay's resources (servers as a Deployment)."""
    return workload(resources)["kind"] == "Deployment"


def server_resources(resources, kind):
    """The resources of `kind` that belong to the servers (not etcd's, not the router's)."""
    return [r for r in resources if r["kind"] == kind
            and r["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "server"]


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


def setting_names():
    """NNSERVE_* names the server reads, from its Settings as they are now."""
    return {env_name(field.name) for field in dataclasses.fields(Settings)}


def effective_settings(resources):
    """The Settings the server would start with in this pod."""
    return Settings.from_env(container_env(resources))


# -- rendering ----------------------------------------------------------------------------------

def test_variant_has_every_resource(variant):
    """Each kustomization renders one of each resource the deployment consists of."""
    name, resources = variant
    kinds = sorted(r["kind"] for r in resources if r["kind"] != "Namespace")
    expected = ["ConfigMap", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget",
                "Service", "Service", "ServiceAccount", "ServiceMonitor", "StatefulSet"]
    if name.startswith("overlays/cluster"):
        # The servers' Deployment (in place of their StatefulSet), the shared volume, etcd (a
        # StatefulSet and two Services), the nginx router (a ConfigMap, a Deployment, a
        # Service) and Envoy Gateway's Gateway, GRPCRoute and BackendTrafficPolicy.
        expected += ["Deployment", "PersistentVolumeClaim", "Service", "Service", "ConfigMap",
                     "Deployment", "Service", "Gateway", "GRPCRoute", "BackendTrafficPolicy"]
    assert kinds == sorted(expected)
    names = [(r["kind"], r["metadata"]["name"]) for r in resources]
    assert len(names) == len(set(names)), f"duplicate resources in {names}"


def test_every_file_under_k8s_is_used(tmp_path):
    """Every file under deploy/k8s is read by some kustomization (no stale manifests): without
    it, some variant fails to render or renders differently."""
    rendered = {}
    for name in VARIANTS:
        result = kustomize(K8S / name)
        assert result.returncode == 0, result.stderr
        rendered[name] = result.stdout
    unused = []
    for path in sorted(path for path in K8S.rglob("*") if path.is_file()):
        relative = path.relative_to(K8S)
        without = tmp_path / "-".join(relative.parts)
        shutil.copytree(K8S, without)
        (without / relative).unlink()
        if all(kustomize(without / name).stdout == rendered[name] for name in VARIANTS):
            unused.append(str(relative))
    assert unused == []


# -- schemas ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_kubernetes_schemas(variant, version):
    """Every built-in resource validates in strict mode against the pinned version's schema."""
    _, resources = variant
    validated = 0
    for resource in resources:
        if (resource["apiVersion"], resource["kind"]) in CRD_SCHEMA_FILES:
            continue  # a custom resource: test_custom_resources_match_their_crd_schemas
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} at {path}: "
                        f"{error.message}")
        validated += 1
    assert validated == len(resources) - len(custom_resources(resources))


def strict(schema):
    """`schema` with unknown fields made errors, as the API server's strict field validation
    (kubectl's default) makes them: an object schema that lists its properties, and neither
    allows others nor preserves unknown fields, gets `additionalProperties: false`."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(field) for name, field in schema["properties"].items()}
        if ("additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    return schema


def crd_validator(api_version, kind):
    """A validator for the CRD's published schema, made strict. CRDs carry OpenAPI v3 schemas,
    JSON Schema draft 4 with extensions: jsonschema ignores the `x-kubernetes-*` ones (CEL
    rules, list and map types), which only the API server enforces."""
    path = ROOT / "tests" / "data" / CRD_SCHEMA_FILES[api_version, kind]
    return jsonschema.Draft4Validator(strict(yaml.safe_load(path.read_text())))


def custom_resources(resources):
    return [r for r in resources if (r["apiVersion"], r["kind"]) in CRD_SCHEMA_FILES]


def test_custom_resources_match_their_crd_schemas(variant):
    """Every custom resource validates against its CRD's own schema with unknown fields as
    errors, and its metadata against Kubernetes' ObjectMeta."""
    _, resources = variant
    assert custom_resources(resources)
    for resource in custom_resources(resources):
        crd_validator(resource["apiVersion"], resource["kind"]).validate(resource)
        # The CRD leaves metadata to the API server, which checks it as every object's ObjectMeta.
        metadata = resource["metadata"]
        assert set(metadata) <= {"name", "namespace", "labels", "annotations"}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"])
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": metadata}, KUBERNETES_VERSIONS[-1], strict=True)


def test_servicemonitor_scrape_timeout_fits_its_interval(variant):
    """Each ServiceMonitor endpoint names a port and scrapes within its interval."""
    _, resources = variant
    monitor = find(resources, "ServiceMonitor")
    assert monitor["spec"]["endpoints"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert "port" in endpoint, endpoint
        seconds = [int(endpoint[key].rstrip("s")) for key in ("scrapeTimeout", "interval")]
        assert seconds[0] <= seconds[1]


def test_servicemonitor_schema_refuses_unknown_fields():
    """A misspelt ServiceMonitor field fails validation instead of passing unnoticed."""
    monitor = yaml.safe_load((K8S / "base" / "servicemonitor.yaml").read_text())
    validator = crd_validator("monitoring.coreos.com/v1", "ServiceMonitor")
    validator.validate(monitor)
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validator.validate(monitor)


# -- cross-references ---------------------------------------------------------------------------

def test_selectors_match_pod_labels(variant):
    """The workload, both Services, the PDB, the NetworkPolicy and the spread constraint select
    exactly the pod template's labels, and the HPA targets the workload."""
    _, resources = variant
    labels = pod_labels(resources)
    spec = workload(resources)["spec"]
    assert matches(spec["selector"], labels)
    assert spec["selector"]["matchLabels"] == labels
    for service in server_resources(resources, "Service"):
        assert service["spec"]["selector"] == labels, service["metadata"]["name"]
    assert matches(find(resources, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert matches(find(resources, "NetworkPolicy")["spec"]["podSelector"], labels)
    for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
        assert matches(constraint["labelSelector"], labels)
    target = find(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", workload(resources)["kind"], workload(resources)["metadata"]["name"])


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
    """The Service exposes `grpc` 50051, `http` 8000 (the Open Inference Protocol over REST)
    and `metrics` 9464 (not `health` 8081, the probes'), the headless Service (clusterIP
    None, grpc and http) is the StatefulSet's serviceName (in cluster mode, what the router
    lists the pods by), and every targetPort names a container port."""
    _, resources = variant
    container_ports = {p["name"]: p["containerPort"] for p in server_container(resources)["ports"]}
    assert container_ports == {"grpc": 50051, "http": 8000, "metrics": 9464, "health": 8081}
    service = find(resources, "Service", "nnserve")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        name: port for name, port in container_ports.items() if name != "health"}
    assert service["spec"].get("clusterIP") != "None"
    headless = find(resources, "Service", workload(resources)["spec"].get("serviceName",
                                                                         "nnserve-headless"))
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses", False)
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc", "http"]
    for svc in (service, headless):
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports


def test_network_policy_ports_exist(variant):
    """The NetworkPolicy opens every container port but the probes' (traffic from the pod's
    node is always allowed), and egress is closed; in cluster mode but for etcd's client
    port, the other servers' grpc port and DNS."""
    _, resources = variant
    policy = find(resources, "NetworkPolicy")["spec"]
    names = {p["name"] for p in server_container(resources)["ports"]}
    opened = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert opened == names - {"health"}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    egress = {(port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]}
    if is_cluster(resources):
        assert egress == {("client", "TCP"), ("grpc", "TCP"), (53, "UDP"), (53, "TCP")}
        etcd_ports = {p["name"] for p in etcd_container(resources)["ports"]}
        assert "client" in etcd_ports
    else:
        assert egress == set()


def test_probes_use_grpc_health(variant):
    """Startup, liveness and readiness are native gRPC probes on the server's health port;
    readiness asks for the service name the server registers, and startup allows for the
    warm-up."""
    from nnserve.service.model_service import SERVICE_NAME

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
    """The container's grpc, http, metrics and health ports are the ones the server binds
    with its settings."""
    _, resources = variant
    settings = effective_settings(resources)
    ports = {p["name"]: p["containerPort"] for p in server_container(resources)["ports"]}
    assert ports["grpc"] == settings.port
    assert ports["http"] == settings.http_port
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


def test_autoscaler_owns_replicas_and_scales_down_only_in_cluster_mode(variant):
    """The workload leaves `replicas` to the HPA, which scales up on CPU (and in the
    autoscaled cluster variant on in-flight requests); it scales down only in cluster mode,
    where a removed pod hands its models off (elsewhere it would take them with it), one pod
    at a time."""
    name, resources = variant
    assert "replicas" not in workload(resources)["spec"]
    hpa = find(resources, "HorizontalPodAutoscaler")["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    cpu, *others = hpa["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    if name == "overlays/cluster-autoscaled":
        (in_flight,) = others
        assert in_flight["pods"]["metric"]["name"] == "nnserve_requests_in_flight"
    else:
        assert others == []
    scale_down = hpa["behavior"]["scaleDown"]
    if is_cluster(resources):
        assert scale_down["selectPolicy"] != "Disabled"
        assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    else:
        assert scale_down["selectPolicy"] == "Disabled"
    assert find(resources, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_limits_come_from_a_generated_configmap(variant, tmp_path):
    """The container reads its limits from the generated ConfigMap, whose name carries the
    hash of its contents (a changed limit rolls the pods)."""
    name, resources = variant
    (source,) = server_container(resources)["envFrom"]
    configmap = find(resources, "ConfigMap", source["configMapRef"]["name"])
    assert re.fullmatch(r"nnserve-limits-[a-z0-9]{10}", configmap["metadata"]["name"])
    assert all(key.startswith(settings_module.ENV_PREFIX) for key in configmap["data"])
    # The same manifests with one limit of the base halved: the pods get a new ConfigMap.
    changed = tmp_path / "k8s"
    shutil.copytree(K8S, changed)
    limits = changed / "base" / "limits.env"
    rows = int(configmap["data"]["NNSERVE_MAX_ROWS_PER_REQUEST"])
    limits.write_text(limits.read_text().replace(f"NNSERVE_MAX_ROWS_PER_REQUEST={rows}\n",
                                                 f"NNSERVE_MAX_ROWS_PER_REQUEST={rows // 2}\n"))
    changed_resources = render(changed / name)
    (changed_source,) = server_container(changed_resources)["envFrom"]
    renamed = find(changed_resources, "ConfigMap", changed_source["configMapRef"]["name"])
    assert renamed["data"] == {**configmap["data"], "NNSERVE_MAX_ROWS_PER_REQUEST": str(rows // 2)}
    assert renamed["metadata"]["name"] != configmap["metadata"]["name"]


def test_example_overlay():
    """The example overlay puts everything in its restricted namespace and pulls the image
    from the registry, with 4 cores and the larger limits merged over the base's."""
    resources = render(K8S / "overlays/example")
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
    base_image = server_container(render(K8S / "base"))["image"]
    assert base_image == "nnserve:0.1.0"


def test_durable_overlay_mounts_state_dir():
    """The durable overlay gives each pod a retained volume mounted at NNSERVE_STATE_DIR."""
    resources = render(K8S / "overlays/durable")
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
    resources = render(K8S / "overlays/secure")
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




# -- the cluster overlay ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    return render(CLUSTER)


def etcd_container(resources):
    (container,) = find(resources, "StatefulSet", "etcd")["spec"]["template"]["spec"]["containers"]
    return container


def etcd_flags(container):
    """The etcd container's --name=value flags as a dict."""
    return dict(flag[2:].split("=", 1) for flag in container["command"][1:])


def service_port(resources, host, port):
    """The (Service, port entry) that host:port names in this namespace."""
    service = find(resources, "Service", host)
    (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    return service, entry


def test_cluster_servers_are_a_deployment_with_the_cluster_flags(cluster):
    """The servers are a Deployment (interchangeable pods, no per-pod volumes) started in
    cluster mode: they advertise their pod IP (downward API) and grpc port, and the server
    accepts the settings."""
    deployment = workload(cluster)
    assert deployment["kind"] == "Deployment"
    assert not {"serviceName", "volumeClaimTemplates", "podManagementPolicy"} & set(
        deployment["spec"])
    (pod_ip,) = [v for v in server_container(cluster)["env"] if v["name"] == "POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    settings = effective_settings(cluster)
    assert settings.cluster_advertise == f"{POD_FIELDS['status.podIP']}:{settings.port}"
    strategy = deployment["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_cluster_etcd_flag_points_at_the_etcd_service(cluster):
    """--cluster-etcd names the etcd client Service, whose port leads to the port etcd
    listens for clients on, on the etcd StatefulSet's pods."""
    endpoint = effective_settings(cluster).cluster_etcd
    found = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoint)
    assert found, f"got {endpoint}, expected http://<service>:<port>"
    service, port = service_port(cluster, found[1], int(found[2]))
    etcd = find(cluster, "StatefulSet", "etcd")
    assert matches({"matchLabels": service["spec"]["selector"]},
                   etcd["spec"]["template"]["metadata"]["labels"])
    container_ports = {p["name"]: p["containerPort"] for p in etcd_container(cluster)["ports"]}
    listen = etcd_flags(etcd_container(cluster))["listen-client-urls"]
    assert listen == f"http://0.0.0.0:{container_ports[port['targetPort']]}"


def test_cluster_etcd_members_name_each_other(cluster):
    """The etcd StatefulSet's --initial-cluster lists exactly its replicas by their stable
    names under its headless Service, each advertising its peer port, and its image is
    pinned to a release."""
    etcd = find(cluster, "StatefulSet", "etcd")
    container = etcd_container(cluster)
    flags = etcd_flags(container)
    headless = find(cluster, "Service", etcd["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    peer_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "peer")
    members = [f"etcd-{i}=http://etcd-{i}.{headless['metadata']['name']}:{peer_port}"
               for i in range(etcd["spec"]["replicas"])]
    assert flags["initial-cluster"].split(",") == members
    assert etcd["spec"]["replicas"] % 2 == 1, "an even member count adds no fault tolerance"
    assert flags["initial-advertise-peer-urls"] == (
        f"http://$(POD_NAME).{headless['metadata']['name']}:{peer_port}")
    assert re.fullmatch(r"quay\.io/coreos/etcd:v\d+\.\d+\.\d+", container["image"])
    (pod_name,) = container["env"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (claim,) = etcd["spec"]["volumeClaimTemplates"]
    assert mounts[flags["data-dir"]] == claim["metadata"]["name"]


def test_cluster_shared_volume_is_read_write_many_at_the_state_dir(cluster):
    """--state-dir is the mount of one ReadWriteMany claim every server pod shares."""
    state_dir = effective_settings(cluster).state_dir
    mounts = {m["mountPath"]: m["name"] for m in server_container(cluster)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload(cluster)["spec"]["template"]["spec"]["volumes"]}
    claim_name = volumes[mounts[state_dir]]["persistentVolumeClaim"]["claimName"]
    claim = find(cluster, "PersistentVolumeClaim", claim_name)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_cluster_grace_period_covers_the_hand_off(cluster):
    """A terminating pod has time to drain, finish its calls and hand its models off, which
    takes longer than a lease TTL (so a SIGKILL never cuts a hand-off that would be cheaper
    than the crash it becomes)."""
    settings = effective_settings(cluster)
    seconds = workload(cluster)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert seconds > settings.cluster_lease_ttl
    assert seconds >= settings.drain_period + settings.grace_period + 4 * settings.cluster_lease_ttl
    assert settings.checkpoint_every_seconds > 0, "a crash would lose every unsaved step"


def test_envoy_gateway_hashes_the_header_the_sdk_sends(cluster):
    """The BackendTrafficPolicy hashes the SDK's routing header (the same the servers read)
    consistently, on the GRPCRoute that attaches to the Gateway's listener and sends every
    call to the servers' grpc port."""
    from nnserve.service.cluster.routing import ROUTING_HEADER as SERVER_ROUTING_HEADER

    assert SERVER_ROUTING_HEADER == ROUTING_HEADER
    policy = find(cluster, "BackendTrafficPolicy")["spec"]
    route = find(cluster, "GRPCRoute")
    gateway = find(cluster, "Gateway")
    assert policy["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute",
                                     "name": route["metadata"]["name"]}]
    balancer = policy["loadBalancer"]
    assert balancer["type"] == "ConsistentHash"
    assert balancer["consistentHash"] == {"type": "Headers", "headers": [{"name": ROUTING_HEADER}]}
    (parent,) = route["spec"]["parentRefs"]
    assert (parent["kind"], parent["name"]) == ("Gateway", gateway["metadata"]["name"])
    (listener,) = gateway["spec"]["listeners"]
    assert parent["sectionName"] == listener["name"] and listener["protocol"] == "HTTP"
    assert listener["allowedRoutes"]["kinds"] == [{"group": "gateway.networking.k8s.io",
                                                   "kind": "GRPCRoute"}]
    (rule,) = route["spec"]["rules"]
    (backend,) = rule["backendRefs"]
    service, port = service_port(cluster, backend["name"], backend["port"])
    assert service["spec"]["selector"] == pod_labels(cluster)
    assert port["name"] == "grpc" and port["targetPort"] == "grpc"


def test_gateway_schemas_refuse_unknown_fields(cluster):
    """A misspelt field of the hash policy or the route fails validation."""
    policy = find(cluster, "BackendTrafficPolicy")
    policy["spec"]["loadBalancer"]["consistentHash"]["headers"][0]["nmae"] = ROUTING_HEADER
    with pytest.raises(jsonschema.ValidationError, match="nmae"):
        crd_validator(policy["apiVersion"], policy["kind"]).validate(policy)
    route = find(cluster, "GRPCRoute")
    route["spec"]["rules"][0]["backendRef"] = route["spec"]["rules"][0].pop("backendRefs")
    with pytest.raises(jsonschema.ValidationError, match="backendRef"):
        crd_validator(route["apiVersion"], route["kind"]).validate(route)


def nginx_variable(header):
    """nginx's variable for a request header: $http_ and the name, lower case, - as _."""
    return "$http_" + header.lower().replace("-", "_")


def test_nginx_router_config_is_the_template_rendered(cluster):
    """The router's nginx.conf is deploy/nginx's template rendered with the values its header
    names (as tests/cluster_support.py renders it for the tests that run nginx), hashing
    the SDK's routing header and listening on the router's container port; the ConfigMap
    carries it unchanged."""
    from cluster_support import NGINX_TEMPLATE

    values = {"NNSERVE_LISTEN": "0.0.0.0:8080", "NNSERVE_SERVERS": "include /tmp/upstreams.conf;",
              "NNSERVE_PID": "/tmp/nginx.pid", "NNSERVE_TEMP": "/tmp"}
    expected = NGINX_TEMPLATE.read_text()
    for name, value in values.items():
        expected = expected.replace("${" + name + "}", value)
    config = (CLUSTER / "nginx.conf").read_text()
    header = config.removesuffix(expected)
    assert header != config, "nginx.conf is not the template rendered: render it again"
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"hash {nginx_variable(ROUTING_HEADER)} consistent;" in config
    router = find(cluster, "Deployment", "nnserve-router")
    pod = router["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    configmap = find(cluster, "ConfigMap", volumes[mounts["/etc/nnserve-router"]]["configMap"]["name"])
    assert configmap["data"]["nginx.conf"] == config
    assert configmap["data"]["router.sh"] == (CLUSTER / "router.sh").read_text()
    assert container["command"] == ["/bin/sh", "/etc/nnserve-router/router.sh"]
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the pid file, the list, the buffers


def test_nginx_router_lists_the_server_pods(cluster):
    """router.sh resolves a headless Service of the server pods and writes their grpc port;
    it is valid sh; the router's Service leads to its pods' port."""
    router = find(cluster, "Deployment", "nnserve-router")
    (container,) = router["spec"]["template"]["spec"]["containers"]
    environ = {v["name"]: v["value"] for v in container["env"]}
    headless = find(cluster, "Service", environ["NNSERVE_HEADLESS_SERVICE"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == pod_labels(cluster)
    grpc_port = effective_settings(cluster).port
    script = (CLUSTER / "router.sh").read_text()
    assert f'print "server " $1 ":{grpc_port};"' in script
    assert subprocess.run(["sh", "-n", str(CLUSTER / "router.sh")]).returncode == 0
    service = find(cluster, "Service", "nnserve-router")
    assert service["spec"]["selector"] == router["spec"]["template"]["metadata"]["labels"]
    assert not matches(router["spec"]["selector"], pod_labels(cluster))
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container["ports"][0]["name"]


def test_adapter_rule_serves_the_gauge_the_servers_export():
    """The autoscaled HPA's Pods metric is the name prometheus-adapter's rule serves, from a
    series named as the gauge a live server exports, per namespace and pod."""
    from metrics_support import scrape
    from service_support import running_server

    rule, = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    hpa = find(render(K8S / "overlays/cluster-autoscaled"), "HorizontalPodAutoscaler")
    assert rule["name"]["as"] == hpa["spec"]["metrics"][1]["pods"]["metric"]["name"]
    series = re.fullmatch(r"(\w+)\{.*\}", rule["seriesQuery"])[1]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    with running_server() as live:
        exported = {name for name, _ in scrape(live.server.metrics_port)}
    assert series in exported
