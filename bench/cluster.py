"""`nnserve bench cluster`: what cluster mode's routing and failover cost (docs/cluster.md).

On this machine, with real parts: a one-member etcd, `nnserve serve` processes in cluster
mode sharing one checkpoint directory, and nginx rendered from
deploy/nginx/nnserve.conf.template (so this needs a source checkout, and the etcd and nginx
binaries: Debian's etcd-server and nginx).

- The proxy's cost: one model is created through nginx (the SDK's routing header puts it on
  the server nginx's ring picks, which owns it), then called one call at a time through
  nginx ("routed") and straight to its owner ("direct"): batch-1 Predict and batch-32
  TrainStep. Each case runs `--rounds` rounds, each round loading both paths for
  `--duration` / rounds / 2, in an order that alternates from round to round; the figures
  are the medians over the rounds, and the ratio is the median of the rounds' ratios of
  median latencies (routed / direct).
- Recovery: for each model size and count, a fresh server A creates that many models,
  trains one step on each and commits its checkpoint; A is killed (SIGKILL) and the clock
  starts. Server B is asked for each model in turn until it answers (it claims and
  restores it once A's lease has expired); reported are the seconds until the first and
  the last model answered, which include that expiry (up to the TTL after A's last
  keepalive, so a little under the TTL after the kill).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["measure_proxy", "measure_recovery", "run"]

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "nnserve.conf.template"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STARTUP_SECONDS = 180  # a server's first start compiles its kernels
PROXY_LAYERS = (784, 256, 256, 10)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def _process(args, port, log_path):
    """Run args until the block ends (SIGTERM, then SIGKILL); yield the Popen once `port`
    accepts connections."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{Path(args[0]).name} did not start: "
                                   f"{Path(log_path).read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _etcd(stack, directory):
    """Start a one-member etcd in `directory`; return its endpoint."""
    client_port, peer_port = _free_port(), _free_port()
    endpoint = f"http://127.0.0.1:{client_port}"
    stack.enter_context(_process(
        [ETCD, "--name", "bench", "--data-dir", str(directory / "etcd"),
         "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"bench=http://127.0.0.1:{peer_port}"],
        client_port, directory / "etcd.log"))
    return endpoint


def _server(stack, directory, endpoint, name, ttl):
    """Start `nnserve serve` in cluster mode (a checkpoint after every step); return
    (Popen, port)."""
    port = _free_port()
    process = stack.enter_context(_process(
        [sys.executable, "-m", "nnserve.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--http-port", "0", "--cluster-etcd", endpoint,
         "--cluster-advertise", f"127.0.0.1:{port}", "--cluster-lease-ttl", str(ttl),
         "--state-dir", str(directory / "shared"), "--checkpoint-every-steps", "1"],
        port, directory / f"{name}.log"))
    return process, port


def _nginx(stack, directory, server_ports):
    """Start nginx from the template in front of 127.0.0.1:server_ports; return its port."""
    port = _free_port()
    temp = directory / "nginx-temp"
    temp.mkdir(exist_ok=True)
    values = {"NNSERVE_LISTEN": f"127.0.0.1:{port}",
              "NNSERVE_SERVERS": " ".join(f"server 127.0.0.1:{p};" for p in server_ports),
              "NNSERVE_PID": str(directory / "nginx.pid"), "NNSERVE_TEMP": str(temp)}
    text = TEMPLATE.read_text()
    for name, value in values.items():  # as envsubst with a list: nginx's own $variables stay
        text = text.replace("${" + name + "}", value)
    config = directory / "nginx.conf"
    config.write_text(text)
    stack.enter_context(_process([NGINX, "-p", str(directory), "-c", str(config)], port,
                                 directory / "nginx.log"))
    return port


def _etcd_value(endpoint, key):
    """The value of `key` in etcd, or None."""
    from etcd3gw.client import Etcd3Client

    host, port = endpoint.removeprefix("http://").split(":")
    values = Etcd3Client(host=host, port=int(port), timeout=5).get(key)
    return values[0].decode() if values else None


def _owner(endpoint, model_id):
    """The advertise address etcd names as the model's owner, or None."""
    return _etcd_value(endpoint, f"/nnserve/models/{model_id}/owner")


def _pointer_file(endpoint, model_id):
    """The file of the model's last committed checkpoint, or None."""
    pointer = _etcd_value(endpoint, f"/nnserve/models/{model_id}/checkpoint")
    return json.loads(pointer)["file"] if pointer else None


def _create(client, layers, seed):
    return client.create_model(list(layers), ["relu"] * (len(layers) - 2) + ["softmax"],
                               "cross_entropy", seed=seed)


def _timed_calls(call, seconds):
    """Call `call` one at a time for `seconds`; return (median latency in s, calls/s)."""
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    return statistics.median(latencies), len(latencies) / (time.perf_counter() - started)


def measure_proxy(endpoint, routed_port, seconds, rounds):
    """{case: {"direct"|"routed": {"p50_ms", "calls_per_second"}, "ratio"}} (module docstring)."""
    from nnserve.clients import Client

    rng = np.random.default_rng(0)
    with Client(f"127.0.0.1:{routed_port}") as routed_client:
        routed = _create(routed_client, PROXY_LAYERS, 0)
        owner = _owner(endpoint, routed.id)
        with Client(owner) as direct_client:
            direct = direct_client.get_model(routed.id)
            x1 = rng.standard_normal((1, PROXY_LAYERS[0])).astype(np.float32)
            x32 = rng.standard_normal((32, PROXY_LAYERS[0])).astype(np.float32)
            y32 = rng.integers(0, PROXY_LAYERS[-1], 32)
            cases = {"predict b1": lambda model: model.predict(x1),
                     "train b32": lambda model: model.train_step(x32, y32)}
            results = {}
            for case, call in cases.items():
                for model in (direct, routed):
                    call(model)  # warm-up: connections, the first call's allocations
                figures = {"direct": [], "routed": []}
                for round_index in range(rounds):
                    order = (("direct", direct), ("routed", routed))
                    for path, model in order if round_index % 2 == 0 else order[::-1]:
                        figures[path].append(
                            _timed_calls(lambda: call(model), seconds / rounds / 2))
                results[case] = {
                    path: {"p50_ms": 1e3 * statistics.median(f[0] for f in rows),
                           "calls_per_second": statistics.median(f[1] for f in rows)}
                    for path, rows in figures.items()}
                results[case]["ratio"] = statistics.median(
                    routed_row[0] / direct_row[0]
                    for direct_row, routed_row in zip(figures["direct"], figures["routed"]))
            routed.delete()
    return results


def _answer(client, model_id):
    """Whether the server answers GetModel for the model now (UNAVAILABLE: not yet)."""
    import grpc

    from nnserve.clients import NNServeError

    try:
        client.get_model(model_id)
        return True
    except NNServeError as error:
        if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise
        return False


def measure_recovery(directory, endpoint, survivor_port, counts, sizes, ttl, timeout=120.0):
    """[{"layers", "models", "ttl", "first_seconds", "all_seconds"}] (module docstring)."""
    from nnserve.clients import Client

    rows = []
    with Client(f"127.0.0.1:{survivor_port}", timeout=5) as survivor:
        for layers in sizes:
            for count in counts:
                with contextlib.ExitStack() as stack:
                    victim, port = _server(stack, directory, endpoint,
                                           f"victim-{len(rows)}", ttl)
                    with Client(f"127.0.0.1:{port}") as client:
                        models = [_create(client, layers, seed) for seed in range(count)]
                        x = np.zeros((4, layers[0]), np.float32)
                        for model in models:
                            model.train_step(x, np.zeros(4, np.int64))
                    for model in models:  # checkpoints are committed behind the steps
                        deadline = time.monotonic() + timeout
                        while not str(_pointer_file(endpoint, model.id)).endswith(".1.npz"):
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"model {model.id}: no checkpoint committed")
                            time.sleep(0.05)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed = time.monotonic()
                    answered = []
                    for model in models:
                        while not _answer(survivor, model.id):
                            if time.monotonic() - killed > timeout:
                                raise RuntimeError(f"model {model.id} did not recover")
                            time.sleep(0.02)
                        answered.append(time.monotonic() - killed)
                    rows.append({"layers": list(layers), "models": count, "ttl": ttl,
                                 "first_seconds": answered[0], "all_seconds": answered[-1]})
                    for model in models:
                        survivor.get_model(model.id).delete()
    return rows


def format_report(report):
    lines = [f"proxy cost: nginx (consistent hash on x-nnserve-model) vs direct to the owner, "
             f"{report['layers']}, one call at a time",
             f"{'case':<12} {'direct p50 ms':>14} {'routed p50 ms':>14} {'routed/direct':>14} "
             f"{'direct calls/s':>15} {'routed calls/s':>15}"]
    for case, row in report["proxy"].items():
        lines.append(f"{case:<12} {row['direct']['p50_ms']:>14.3f} {row['routed']['p50_ms']:>14.3f} "
                     f"{row['ratio']:>14.2f} {row['direct']['calls_per_second']:>15.0f} "
                     f"{row['routed']['calls_per_second']:>15.0f}")
    lines += ["", "recovery after kill -9 of the owner (includes waiting for its lease to expire, "
              "up to the TTL after its last keepalive)",
              f"{'layers':<20} {'models':>7} {'ttl s':>6} {'first s':>8} {'all s':>8}"]
    for row in report["recovery"]:
        lines.append(f"{','.join(map(str, row['layers'])):<20} {row['models']:>7} {row['ttl']:>6} "
                     f"{row['first_seconds']:>8.2f} {row['all_seconds']:>8.2f}")
    return "\n".join(lines)


def run(args):
    """The `nnserve bench cluster` handler."""
    from nnserve.clients.loadtest import parse_duration

    try:
        seconds = parse_duration(args.duration)
    except ValueError as error:
        print(f"nnserve bench cluster: error: {error}", file=sys.stderr)
        return 2
    missing = [str(path) for path in (ETCD, NGINX) if not os.access(path, os.X_OK)]
    if not TEMPLATE.exists():
        missing.append(f"{TEMPLATE} (a source checkout)")
    if missing:
        print(f"nnserve bench cluster: error: needs {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        counts = tuple(int(count) for count in args.models.split(","))
        sizes = tuple(tuple(int(width) for width in layers.split(","))
                      for layers in args.recovery_layers.split(";"))
    except ValueError as error:
        print(f"nnserve bench cluster: error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nnserve-bench-cluster-") as name, \
            contextlib.ExitStack() as stack:
        directory = Path(name)
        endpoint = _etcd(stack, directory)
        ports = [_server(stack, directory, endpoint, f"server-{index}", args.lease_ttl)[1]
                 for index in range(2)]
        routed_port = _nginx(stack, directory, ports)
        report = {"duration_seconds": seconds, "rounds": args.rounds, "layers": list(PROXY_LAYERS),
                  "proxy": measure_proxy(endpoint, routed_port, seconds, args.rounds),
                  "recovery": measure_recovery(directory, endpoint, ports[1], counts, sizes,
                                               args.lease_ttl)}
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0
