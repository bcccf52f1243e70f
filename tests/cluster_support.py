"""Real parts for the cluster tests: free loopback ports, nginx from deploy/nginx's template,
etcd, `nnserve serve` processes; each started here and stopped at the end.

Waits are bounded polls (`wait_for`), never sleeps of a guessed length.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "nnserve.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"

__all__ = ["ETCD", "NGINX", "etcd", "etcd_cluster", "free_port", "nginx", "nnserve_process", "render_nginx",
           "require", "wait_for"]


def require(binary):
    """Skip the test when `binary` is not installed (.ci/run installs nginx and etcd)."""
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not installed (apt-get install nginx etcd-server)")


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


def _accepts(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def _process(args, port, log_path, **popen):
    """Run args (output to log_path) until the block ends (SIGTERM, then SIGKILL); yield the
    Popen once `port` accepts connections."""
    what = Path(args[0]).name
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        wait_for(lambda: _accepts(port) or process.poll() is not None, f"{what} on port {port}",
                 timeout=120)
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
def etcd(directory, client_port=None, peer_port=None):
    """Yield the client endpoint (http://127.0.0.1:port) of a one-member etcd in `directory`,
    on the ports given (default: free ones); started again with the same directory and
    ports, it is the same etcd with its data."""
    require(ETCD)
    client_port, peer_port = client_port or free_port(), peer_port or free_port()
    endpoint = f"http://127.0.0.1:{client_port}"
    args = [ETCD, "--name", "test", "--data-dir", str(Path(directory) / "etcd"),
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}"]
    with _process(args, client_port, Path(directory) / "etcd.log"):
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
def nnserve_process(directory, *flags, name="nnserve", port=None):
    """Yield (Popen, port) of `nnserve serve` on `port` (default: a free loopback port) with
    `flags`; its log is DIRECTORY/NAME.log."""
    port = port or free_port()
    args = [sys.executable, "-m", "nnserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", "0", "--http-port", "0", *flags]
    with _process(args, port, Path(directory) / f"{name}.log") as process:
        yield process, port
