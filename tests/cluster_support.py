"""Real parts for the cluster tests: free loopback ports, nginx from deploy/nginx's template,
etcd, `nnserve serve` processes; each started here and stopped at the end. A private network
of Linux network namespaces on a bridge (`private_network`) runs etcd and servers each on an
address of its own, and cuts one namespace's path to an address (`cut_off`).

Waits are bounded polls (`wait_for`), never sleeps of a guessed length.
"""

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from nnserve.clients import NNServeError

ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "nnserve.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"

__all__ = ["ETCD", "NGINX", "Network", "assert_restored", "cluster_server", "cluster_keys", "committed_version", "cut_off", "etcd",
           "etcd_cluster", "free_port", "nginx", "nnserve_process", "owner_keys", "private_network",
           "render_nginx", "require", "settled", "trained_models", "unavailable", "wait_for"]


def require(binary):
    """Skip the test when `binary` is not installed; fail it under .ci/run (NNSERVE_CI set),
    which installs nginx and etcd."""
    if not os.access(binary, os.X_OK):
        missing = f"{binary} is not installed (apt-get install nginx etcd-server)"
        if os.environ.get("NNSERVE_CI"):
            pytest.fail(missing + "; .ci/run should have installed it")
        pytest.skip(missing)


def free_port():
    """A loopback port free at the moment of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, what, timeout=60.0, every=0.05):
    """Poll condition() until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(every)


def _accepts(port, host="127.0.0.1"):
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def _process(args, port, log_path, host="127.0.0.1", namespace=None, **popen):
    """Run args (output to log_path) until the block ends (SIGTERM, then SIGKILL); yield the
    Popen once host:`port` accepts connections. With `namespace`, args run in that network
    namespace (`ip netns exec` execs them: the Popen is the process itself) and `host` is
    its address, which this host reaches through the bridge of `private_network`."""
    what = Path(args[0]).name
    if namespace:
        args = ["ip", "netns", "exec", namespace, *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        wait_for(lambda: _accepts(port, host) or process.poll() is not None,
                 f"{what} on {host}:{port}", timeout=120)
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}: "
                                 f"{Path(log_path).read_text(errors='replace')[-3000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a test may have stopped it
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def render_nginx(listen_port, server_ports, directory):
    """The template rendered for nginx on listen_port in front of 127.0.0.1:server_ports."""
    servers = " ".join(f"server 127.0.0.1:{port};" for port in server_ports)
    temp = Path(directory) / "temp"
    temp.mkdir(exist_ok=True)
    values = {"NNSERVE_LISTEN": f"127.0.0.1:{listen_port}", "NNSERVE_SERVERS": servers,
              "NNSERVE_PID": Path(directory) / "nginx.pid", "NNSERVE_TEMP": temp}
    text = NGINX_TEMPLATE.read_text()
    for name, value in values.items():  # as envsubst with a list: nginx's own $variables stay
        text = text.replace("${" + name + "}", str(value))
    return text


@contextlib.contextmanager
def nginx(server_ports, directory):
    """Yield the port of an nginx routing on x-nnserve-model to 127.0.0.1:server_ports."""
    require(NGINX)
    port = free_port()
    config = Path(directory) / "nginx.conf"
    config.write_text(render_nginx(port, server_ports, directory))
    with _process([NGINX, "-p", str(directory), "-c", str(config)], port,
                  Path(directory) / "nginx.log"):
        yield port


@contextlib.contextmanager
def etcd(directory, client_port=None, peer_port=None, host="127.0.0.1", namespace=None):
    """Yield the client endpoint (http://HOST:port) of a one-member etcd in `directory`,
    on the ports given (default: free ones); started again with the same directory and
    ports, it is the same etcd with its data. With `namespace` (of `private_network`) it
    runs there, on that namespace's address `host`."""
    require(ETCD)
    client_port, peer_port = client_port or free_port(), peer_port or free_port()
    endpoint = f"http://{host}:{client_port}"
    args = [ETCD, "--name", "test", "--data-dir", str(Path(directory) / "etcd"),
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", f"http://{host}:{peer_port}",
            "--initial-advertise-peer-urls", f"http://{host}:{peer_port}",
            "--initial-cluster", f"test=http://{host}:{peer_port}"]
    with _process(args, client_port, Path(directory) / "etcd.log", host, namespace):
        yield endpoint


@contextlib.contextmanager
def etcd_cluster(directory, size=3):
    """Yield [(client endpoint, Popen)] of the members of a `size`-member etcd cluster,
    each with its data in DIRECTORY/etcd-<i>; a member's Popen may be stopped by the test."""
    require(ETCD)
    ports = [(free_port(), free_port()) for _ in range(size)]
    initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
    with contextlib.ExitStack() as stack:
        members = []
        for i, (client, peer) in enumerate(ports):
            endpoint = f"http://127.0.0.1:{client}"
            args = [ETCD, "--name", f"m{i}", "--data-dir", str(Path(directory) / f"etcd-{i}"),
                    "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new"]
            # A member listens at once and answers once a quorum has started: start all first.
            process = stack.enter_context(_process(args, client, Path(directory) / f"etcd-{i}.log"))
            members.append((endpoint, process))
        yield members


@contextlib.contextmanager
def nnserve_process(directory, *flags, name="nnserve", port=None, host="127.0.0.1",
                    namespace=None):
    """Yield (Popen, port) of `nnserve serve` on host:`port` (default: a free loopback port)
    with `flags`; its log is DIRECTORY/NAME.log. With `namespace` (of `private_network`) it
    runs there, on that namespace's address `host`."""
    port = port or free_port()
    args = [sys.executable, "-m", "nnserve.cli", "serve", "--host", host, "--port", str(port),
            "--metrics-port", "0", "--http-port", "0", *flags]
    with _process(args, port, Path(directory) / f"{name}.log", host, namespace) as process:
        yield process, port


# -- a private network of namespaces ----------------------------------------------------

_NETWORKS = ipaddress.ip_network("10.241.0.0/16")  # the /24s private_network picks from


def cluster_server(stack, directory, endpoint, name, ttl=3, state_dir=None, flags=()):
    """Start `nnserve serve` in cluster mode under `stack` (lease `ttl` s, a checkpoint after
    every step, in DIRECTORY/shared unless `state_dir` names another place; more `flags`);
    return (process, target)."""
    port = free_port()
    process, _ = stack.enter_context(nnserve_process(
        directory, "--cluster-etcd", endpoint, "--cluster-advertise", f"127.0.0.1:{port}",
        "--cluster-lease-ttl", str(ttl), "--state-dir", state_dir or str(directory / "shared"),
        "--checkpoint-every-steps", "1", *flags, name=name, port=port))
    return process, f"127.0.0.1:{port}"


def _ip(*args, check=True):
    """Run `ip ARGS`; raise with its error output when it fails and `check`."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


class Network:
    """What `private_network` built: the bridge's name and host address, and
    `namespaces`, a list of (namespace name, address), one per namespace."""

    def __init__(self, bridge, host, namespaces):
        self.bridge, self.host, self.namespaces = bridge, host, namespaces


def _free_subnet(tag):
    """A /24 of 10.241.0.0/16 that no address or route of this host is in yet (from one the
    tag picks, so that concurrent runs try different ones first)."""
    used = _ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout
    subnets = list(_NETWORKS.subnets(new_prefix=24))[1:-1]
    start = tag % len(subnets)
    for subnet in subnets[start:] + subnets[:start]:
        if f"{'.'.join(str(subnet.network_address).split('.')[:3])}." not in used:
            return subnet
    pytest.skip("no free /24 in 10.241.0.0/16 for a private network")


@contextlib.contextmanager
def private_network(count):
    """Yield a Network of `count` network namespaces, each joined by a veth pair to a Linux
    bridge on this host, with an address of its own in a private /24 whose .1 is the
    bridge's (so this host reaches every namespace, and they reach each other); loopback is
    up in each. Names end in this process's id, so concurrent runs do not collide.
    Everything is deleted when the block ends, failed or not. Skips the test unless run as
    root with `ip netns` working."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    if not shutil.which("ip"):
        pytest.skip("the ip command (iproute2) is not installed")
    tag = os.getpid() % 10000
    bridge = f"nnbr{tag}"  # interface names: at most 15 characters
    subnet = _free_subnet(tag)
    hosts = list(subnet.hosts())
    with contextlib.ExitStack() as undo:
        first = f"nnserve-{tag}-0"
        added = _ip("netns", "add", first, check=False)
        if added.returncode:
            pytest.skip(f"ip netns add failed: {added.stderr.strip()}")
        undo.callback(_ip, "netns", "del", first, check=False)
        _ip("link", "add", bridge, "type", "bridge")
        undo.callback(_ip, "link", "del", bridge, check=False)
        _ip("addr", "add", f"{hosts[0]}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        namespaces = []
        for index in range(count):
            namespace, address = f"nnserve-{tag}-{index}", str(hosts[10 + index])
            outside, inside = f"nnv{tag}h{index}", f"nnv{tag}n{index}"
            if index:
                _ip("netns", "add", namespace)
                undo.callback(_ip, "netns", "del", namespace, check=False)
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
            undo.callback(_ip, "link", "del", outside, check=False)  # its peer goes with it
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            namespaces.append((namespace, address))
        yield Network(bridge, str(hosts[0]), namespaces)


@contextlib.contextmanager
def cut_off(namespace, address):
    """Within the block, `namespace` cannot reach `address` (a blackhole route to it there);
    everything else, and every path into the namespace, still works. Healed at the end."""
    _ip("-n", namespace, "route", "add", "blackhole", f"{address}/32")
    try:
        yield
    finally:
        _ip("-n", namespace, "route", "del", "blackhole", f"{address}/32", check=False)


# -- what the cluster keeps in etcd, and calls that settle --------------------------------

def _etcd_client(endpoint):
    from etcd3gw.client import Etcd3Client

    host, port = endpoint.removeprefix("http://").split(":")
    return Etcd3Client(host=host, port=int(port), timeout=5)


def cluster_keys(endpoint):
    """{key: value} of every key cluster mode keeps in etcd."""
    return {meta["key"].decode(): value.decode()
            for value, meta in _etcd_client(endpoint).get_prefix("/nnserve/")}


def owner_keys(endpoint):
    """{model id: (owner address, create revision: the owner's fencing token)} of every
    owner key in etcd."""
    owners = {}
    for value, meta in _etcd_client(endpoint).get_prefix("/nnserve/models/"):
        key = meta["key"].decode()
        if key.endswith("/owner"):
            owners[key.split("/")[3]] = (value.decode(), int(meta["create_revision"]))
    return owners


def committed_version(endpoint, model_id):
    """The weights version of a model's committed checkpoint (its file is written first and
    counts only once etcd points at it), or None."""
    pointer = cluster_keys(endpoint).get(f"/nnserve/models/{model_id}/checkpoint")
    return int(json.loads(pointer)["file"].split(".")[-2]) if pointer else None


def settled(call):
    """call()'s result once the cluster answers it (UNAVAILABLE while ownership moves)."""
    def attempt():
        try:
            return (call(),)
        except NNServeError as error:
            if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            return None
    return wait_for(attempt, "the cluster to answer", timeout=60, every=0.2)[0]


def unavailable(call):
    """Whether call() fails with UNAVAILABLE (False when it succeeds)."""
    try:
        call()
    except NNServeError as error:
        assert error.code == grpc.StatusCode.UNAVAILABLE, error
        return True
    return False


def trained_models(client, count, steps, rng, first=0):
    """`count` models created through `client` (every other one named net<index>, index from
    `first`), each trained `steps` steps."""
    models = []
    for index in range(first, first + count):
        model = client.create_model([3, 5, 2], ["tanh", "softmax"], "cross_entropy", seed=index,
                                    name=f"net{index}" if index % 2 else None)
        x = rng.normal(size=(8, 3)).astype(np.float32)
        y = rng.integers(0, 2, size=8)
        for _ in range(steps):
            model.train_step(x, y)
        models.append(model)
    return models


def assert_restored(client, model_id, state):
    """The model as `client`'s server answers it (once the cluster settles) has `state`'s
    step and weights, bit for bit; return it."""
    restored = settled(lambda: client.get_model(model_id).get_state())
    assert restored["step"] == state["step"]
    for (w, b), (w0, b0) in zip(restored["weights"], state["weights"]):
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(b, b0)
    return client.get_model(model_id)
