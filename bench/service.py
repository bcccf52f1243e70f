"""`nnserve bench service`: nnserve over gRPC against the bare-gRPC floor and PyTorch behind grpcio.

Up to four servers, each in its own process, all loaded by the same client
(`nnserve.clients.loadtest`, grpc.aio through the generated stubs) with the same
concurrency:

- floor: a bare `grpc.server` whose Predict only decodes the tensor and returns a fixed
  result (bench/bare_server.py), the best a Python gRPC service can do on this machine;
- weights (batch-1 Predict cases only): the floor reading a float32 copy of the model's
  weights once per Predict: the ceiling for any server that reads its weights per request;
- torch: the same server calling a PyTorch model of the same architecture (skipped, and
  said so, when torch is not installed);
- nnserve: `nnserve serve` with its defaults (metrics on).

Cases on [784, 256, 256, 10] (relu, relu, softmax; float32): batch-1 Predict with 1 and 8
calls in flight, batch-256 Predict and batch-256 TrainStep with 4 in flight. Then the
training-job cases (bench/training_jobs.py) on an nnserve server of their own.

The servers run side by side (idle but for the one under load) and take turns: each case
runs `--rounds` rounds, and in each round every server is loaded for `--duration` /
rounds (after creating its model, one warm-up call and 0.2 s unreported), in an order
that rotates from round to round. A server's figures are the medians over the rounds,
and a ratio between two servers is the median of the rounds' ratios, so a drift in the
machine's speed (this 2-core machine is shared and noisy) reaches every server alike
instead of favouring the one measured in a quiet minute. Resident memory (VmRSS of
/proc/PID/status) is read at idle after a warm-up load, and at the end of the last case;
VmHWM gives the peak. The in-process `Network.train_step` rate is measured first, in
this process, with no server running.
"""

import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from nnserve.bench.training_jobs import format_jobs, job_targets, measure_jobs
from nnserve.clients.loadtest import LoadSpec, parse_duration, run as run_load

__all__ = ["CASES", "LAYERS", "run"]

LAYERS = (784, 256, 256, 10)
# (name, operation, batch, calls in flight)
CASES = (
    ("predict b1 x1", "predict", 1, 1),
    ("predict b1 x8", "predict", 1, 8),
    ("predict b256 x4", "predict", 256, 4),
    ("train b256 x4", "train", 256, 4),
)
BATCH_1_CASES = tuple(case for case in CASES if case[2] == 1)
RPC = {"predict": "Predict", "train": "TrainStep"}
ROUNDS = 5  # each case's time is split into this many turns per server
ROUND_WARMUP_SECONDS = 0.2  # unreported load before each turn
STARTUP_SECONDS = 180  # nnserve compiles its kernels on a cold cache (about 40 s)


# -- servers in their own processes ---------------------------------------------------------

class ServerProcess:
    """A server subprocess whose output goes to a temporary file; `port` once it listens."""

    def __init__(self, name, command, ready):
        self.name = name
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        text=True)
        self.port = self._wait_for_port(ready)

    def _wait_for_port(self, ready):
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            self._log.seek(0)
            for line in self._log:
                port = ready(line)
                if port:
                    return port
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        self._log.seek(0)
        raise RuntimeError(f"{self.name} server did not start:\n{self._log.read()[-4000:]}")

    def memory_mib(self):
        """{"rss": VmRSS, "peak": VmHWM} of the process, in MiB."""
        fields = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(rest.split()[0]) / 1024  # kB
        return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _bare_ready(line):
    return int(line.split()[1]) if line.startswith("PORT ") else None


def _nnserve_ready(line):
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event.get("port") if event.get("event") == "serving" else None


def _servers():
    """[(name, command, readiness parser, cases)]; torch's command is None without torch."""
    python = sys.executable
    bare = [python, "-m", "nnserve.bench.bare_server"]
    return [
        ("floor", bare + ["floor"], _bare_ready, CASES),
        ("weights", bare + ["weights"], _bare_ready, BATCH_1_CASES),
        ("torch", bare + ["torch"] if importlib.util.find_spec("torch") else None, _bare_ready,
         CASES),
        ("nnserve", [python, "-m", "nnserve.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                     "--metrics-port", "-1", "--log-format", "json"], _nnserve_ready, CASES),
    ]


# -- measuring ------------------------------------------------------------------------------

def in_process_train(seconds, batch=256):
    """Examples/s of Network.train_step on batch-`batch` float32 steps, here, for `seconds`."""
    from nnserve.model import Network, warmup

    warmup()
    rng = np.random.default_rng(0)
    network = Network(list(LAYERS), ["relu", "relu", "softmax"], "cross_entropy",
                      learning_rate=0.01, dtype="float32")
    x = rng.standard_normal((batch, LAYERS[0]), dtype=np.float32)
    y = rng.integers(0, LAYERS[-1], batch)
    for _ in range(5):
        network.train_step(x, y)
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        network.train_step(x, y)
        steps += 1
    return steps * batch / (time.perf_counter() - started)


def _load(port, operation, batch, concurrency, seconds, warmup):
    report = run_load(LoadSpec(target=f"127.0.0.1:{port}", duration=seconds,
                               concurrency=concurrency, mix={operation: 1}, batch=batch,
                               layers=LAYERS, models=1, warmup=warmup))
    if not report["ok"]:
        raise RuntimeError(f"unexpected status codes {report['unexpected_codes']} "
                           f"({operation}, batch {batch}, {concurrency} in flight)")
    return report["rpcs"][RPC[operation]]


def _warm_up(server):
    """Load every path and buffer the cases use, then let the server idle."""
    _load(server.port, "train", 256, 4, 1.0, warmup=0)
    _load(server.port, "predict", 256, 4, 0.5, warmup=0)
    _load(server.port, "predict", 1, 8, 0.5, warmup=0)


def _median_row(rows):
    """The median of each figure over the rounds' rows (keys of the first row)."""
    return {key: statistics.median(row[key] for row in rows) for key, value in rows[0].items()
            if isinstance(value, (int, float))}


def measure_servers(servers, seconds, rounds=ROUNDS):
    """Start every server, warm each up, then run each case in `rounds` rounds of
    seconds / rounds each, the servers taking turns within a round (in an order that
    rotates from round to round), so that a drift of the machine's speed during the run
    reaches every server alike. Return {name: figures}, each case's row the median over
    the rounds, with the rounds' rows under "rounds".

    servers: [(name, command, readiness parser, cases)].
    """
    cases_of = {name: {case[0] for case in cases} for name, _, _, cases in servers}
    started = {}
    try:
        for name, command, ready, _ in servers:
            print(f"{name}: starting ...", file=sys.stderr, flush=True)
            started[name] = ServerProcess(name, command, ready)
            _warm_up(started[name])
        time.sleep(1.0)
        idle = {name: server.memory_mib() for name, server in started.items()}
        runs = {name: {} for name in started}
        names = list(started)
        for case, operation, batch, concurrency in CASES:
            print(f"{case}: {rounds} rounds ...", file=sys.stderr, flush=True)
            for round_ in range(rounds):
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    if case in cases_of[name]:
                        runs[name].setdefault(case, []).append(_load(
                            started[name].port, operation, batch, concurrency, seconds / rounds,
                            warmup=ROUND_WARMUP_SECONDS))
        end = {name: server.memory_mib() for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()
    return {name: {"rss_idle_mib": idle[name]["rss"], "rss_end_mib": end[name]["rss"],
                   "rss_peak_mib": end[name]["peak"],
                   "cases": {case: _median_row(rows) for case, rows in runs[name].items()},
                   "rounds": runs[name]}
            for name in started}


# -- report ----------------------------------------------------------------------------------

def _rounds(server, case):
    """The rows of a case's rounds (one row when the figures have no rounds)."""
    return server.get("rounds", {}).get(case) or [server["cases"][case]]


def _ratio(results, name, reference, case, key):
    """The median over the rounds of name's figure divided by reference's in the same round."""
    pairs = zip(_rounds(results[name], case), _rounds(results[reference], case))
    return statistics.median(mine[key] / theirs[key] for mine, theirs in pairs)


def _ratios(results, in_process):
    """Per case and server: req/s and p99 against the floor (and the weights floor where it
    ran), each the median of the rounds' ratios (a round's servers ran minutes apart at
    most, seconds apart usually); TrainStep against in-process and torch."""
    ratios = {}
    for name, server in results.items():
        for case in server["cases"]:
            ratio = ratios.setdefault(case, {})[name] = {
                "requests_per_second_vs_floor": _ratio(results, name, "floor", case,
                                                       "requests_per_second"),
                "p99_vs_floor": _ratio(results, name, "floor", case, "p99_ms"),
            }
            if name != "weights" and case in results.get("weights", {}).get("cases", {}):
                ratio["requests_per_second_vs_weights_floor"] = _ratio(
                    results, name, "weights", case, "requests_per_second")
                ratio["p99_vs_weights_floor"] = _ratio(results, name, "weights", case, "p99_ms")
    train = "train b256 x4"
    nnserve = results["nnserve"]["cases"][train]["rows_per_second"]
    ratios[train]["nnserve"]["examples_per_second_vs_in_process"] = nnserve / in_process
    if "torch" in results:
        ratios[train]["nnserve"]["examples_per_second_vs_torch"] = _ratio(
            results, "nnserve", "torch", train, "rows_per_second")
        torch = results["torch"]["cases"][train]["rows_per_second"]
        ratios[train]["torch"]["examples_per_second_vs_in_process"] = torch / in_process
    return ratios


def _targets(results, ratios, jobs):
    """The issues' targets: (what, value, bound, met)."""
    rows = job_targets(jobs)
    for case in ("predict b1 x1", "predict b1 x8"):
        mine = ratios[case]["nnserve"]
        rows.append((f"{case}: req/s vs floor", mine["requests_per_second_vs_floor"], ">= 0.85",
                     mine["requests_per_second_vs_floor"] >= 0.85))
        rows.append((f"{case}: p99 vs floor", mine["p99_vs_floor"], "<= 1.3",
                     mine["p99_vs_floor"] <= 1.3))
    train = ratios["train b256 x4"]["nnserve"]
    rows.append(("train b256: examples/s vs in-process", train["examples_per_second_vs_in_process"],
                 ">= 0.6", train["examples_per_second_vs_in_process"] >= 0.6))
    if "examples_per_second_vs_torch" in train:
        rows.append(("train b256: examples/s vs torch server", train["examples_per_second_vs_torch"],
                     ">= 2", train["examples_per_second_vs_torch"] >= 2))
    idle = results["nnserve"]["rss_idle_mib"]
    rows.append(("nnserve resident memory at idle (MiB)", idle, "<= 250", idle <= 250))
    return [{"target": what, "value": value, "bound": bound, "met": met}
            for what, value, bound, met in rows]


def format_report(report):
    results, ratios = report["servers"], report["ratios"]
    lines = [f"{report['duration_seconds']:g} s per case and server in {report.get('rounds', 1)} "
             f"rounds (medians), layers {list(LAYERS)}, float32; "
             f"{report['machine']['cpus']} CPUs; torch {report['torch'] or 'not installed'}"]
    if report["torch"] is None:
        lines.append("torch: skipped (not installed; pip install 'nnserve[bench]')")
    lines.append(f"{'case':<16} {'server':<8} {'req/s':>9} {'rows/s':>10} {'p50 us':>8} "
                 f"{'p99 us':>8} {'x floor':>8} {'p99 x floor':>11} {'x weights':>9}")
    for case, *_ in CASES:
        for name, server in results.items():
            row = server["cases"].get(case)
            if row is None:
                continue
            ratio = ratios[case][name]
            versus_weights = ratio.get("requests_per_second_vs_weights_floor")
            lines.append(f"{case:<16} {name:<8} {row['requests_per_second']:>9.1f} "
                         f"{row['rows_per_second']:>10.0f} {row['p50_ms'] * 1e3:>8.0f} "
                         f"{row['p99_ms'] * 1e3:>8.0f} "
                         f"{ratio['requests_per_second_vs_floor']:>8.2f} "
                         f"{ratio['p99_vs_floor']:>11.2f} "
                         + (f"{versus_weights:>9.2f}" if versus_weights else f"{'':>9}"))
    lines.append(f"in-process Network.train_step b256: {report['in_process_examples_per_second']:.0f} "
                 "examples/s")
    lines.append("resident memory MiB (idle after warm-up / end of load / peak): " + ", ".join(
        f"{name} {s['rss_idle_mib']:.0f} / {s['rss_end_mib']:.0f} / {s['rss_peak_mib']:.0f}"
        for name, s in results.items()))
    lines.append(format_jobs(report["training_jobs"]))
    lines.append("targets:")
    for target in report["targets"]:
        lines.append(f"  {target['target']}: {target['value']:.2f} ({target['bound']}) "
                     f"{'met' if target['met'] else 'MISSED'}")
    return "\n".join(lines)


def _measure_jobs(rounds):
    """The training-job cases (bench/training_jobs.py) on an nnserve server of their own."""
    name, command, ready, _ = _servers()[-1]
    print("training jobs: starting nnserve ...", file=sys.stderr, flush=True)
    server = ServerProcess(name, command, ready)
    try:
        return measure_jobs(server.port, rounds)
    finally:
        server.stop()


def run(args):
    """The `nnserve bench service` handler."""
    try:
        seconds = parse_duration(args.duration)
    except ValueError as error:
        print(f"nnserve bench service: error: {error}", file=sys.stderr)
        return 2
    torch_version = None
    if importlib.util.find_spec("torch"):
        import torch

        torch_version = torch.__version__
    in_process = in_process_train(seconds)
    servers = []
    for server in _servers():
        if server[1] is None:
            print(f"{server[0]}: skipped, torch is not installed", file=sys.stderr)
        else:
            servers.append(server)
    results = measure_servers(servers, seconds, args.rounds)
    ratios = _ratios(results, in_process)
    jobs = _measure_jobs(args.rounds)
    import grpc

    report = {"duration_seconds": seconds, "rounds": args.rounds, "layers": list(LAYERS),
              "cases": [dict(zip(("case", "operation", "batch", "in_flight"), case)) for case in CASES],
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "grpcio": grpc.__version__, "platform": platform.platform()},
              "torch": torch_version, "in_process_examples_per_second": in_process,
              "servers": results, "ratios": ratios, "training_jobs": jobs}
    report["targets"] = _targets(results, ratios, jobs)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0
