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
calls in flight, batch-256 Predict and batch-256 TrainStep with 4 in flight, on every
server. On nnserve only, the streams (`nnserve loadtest --stream`: the same messages over
1 or 8 PredictStreams, a batch-256 TrainStream) and batch-4 TrainSteps of a [2, 8, 8, 1]
network, unary and over one TrainStream. On nnserve and torch, "mixed b256 x8": 8 callers
each sending batch-256 Predicts and TrainSteps to one model, half and half at random
(what each side waits for at the model's lock; the TrainSteps' figures on a line of
their own). And a second nnserve, "batched", with dynamic
batching on (BATCHED_FLAGS), on the batch-1 Predict cases. Then the training-job cases
(bench/training_jobs.py) on an nnserve server of their own.

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
from typing import NamedTuple

import numpy as np

from nnserve.bench.open_inference import (format_open_inference, measure_open_inference,
                                          open_inference_targets)
from nnserve.bench.training_jobs import format_jobs, job_targets, measure_jobs
from nnserve.clients.loadtest import LoadSpec, parse_duration, run as run_load

__all__ = ["CASES", "LAYERS", "Case", "run"]

LAYERS = (784, 256, 256, 10)
TINY_LAYERS = (2, 8, 8, 1)


class Case(NamedTuple):
    name: str
    operation: str  # "predict" or "train"
    batch: int  # rows per message
    in_flight: int  # unary calls in flight, or streams open
    stream: bool = False
    layers: tuple = LAYERS
    mixed: bool = False  # Predicts and, half of the calls, TrainSteps of the same rows, one model


# Every server runs these.
CASES = (
    Case("predict b1 x1", "predict", 1, 1),
    Case("predict b1 x8", "predict", 1, 8),
    Case("predict b256 x4", "predict", 256, 4),
    Case("train b256 x4", "train", 256, 4),
)
BATCH_1_CASES = tuple(case for case in CASES if case.batch == 1)
# nnserve's own: streams against its unary calls.
STREAM_CASES = (
    Case("stream predict b1 x1", "predict", 1, 1, stream=True),
    Case("stream predict b1 x8", "predict", 1, 8, stream=True),
    Case("stream train b256 x1", "train", 256, 1, stream=True),
    Case("tiny train b4 x1", "train", 4, 1, layers=TINY_LAYERS),
    Case("tiny stream train b4 x1", "train", 4, 1, stream=True, layers=TINY_LAYERS),
)
# Predicts while the same model trains: what each side waits for at the model's lock.
MIXED_CASES = (Case("mixed b256 x8", "predict", 256, 8, mixed=True),)
ALL_CASES = CASES + STREAM_CASES + MIXED_CASES
BATCHED_FLAGS = ("--batch-max-rows", "64", "--batch-max-delay-us", "0")
RPC = {("predict", False): "Predict", ("train", False): "TrainStep",
       ("predict", True): "PredictStream", ("train", True): "TrainStream"}
ROUNDS = 5  # each case's time is split into this many turns per server
ROUND_WARMUP_SECONDS = 0.2  # unreported load before each turn
QUIET_SECONDS = 0.5  # between turns: the last server's BLAS threads stop spinning
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


def _nnserve_ports(line):
    """(gRPC port, REST port) from nnserve's serving line."""
    port = _nnserve_ready(line)
    return (port, json.loads(line).get("http_port", 0)) if port else None


def _servers():
    """[(name, command, readiness parser, cases)]; torch's command is None without torch."""
    python = sys.executable
    bare = [python, "-m", "nnserve.bench.bare_server"]
    nnserve = [python, "-m", "nnserve.cli", "serve", "--host", "127.0.0.1", "--port", "0",
               "--metrics-port", "-1", "--http-port", "0", "--log-format", "json"]
    return [
        ("floor", bare + ["floor"], _bare_ready, CASES),
        ("weights", bare + ["weights"], _bare_ready, BATCH_1_CASES),
        ("torch", bare + ["torch"] if importlib.util.find_spec("torch") else None, _bare_ready,
         CASES + MIXED_CASES),
        ("nnserve", nnserve, _nnserve_ready, ALL_CASES),
        ("batched", nnserve + list(BATCHED_FLAGS), _nnserve_ready, BATCH_1_CASES),
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


def _load(port, case, seconds, warmup):
    """The case's row of figures; a mixed case's are its Predicts', with its TrainSteps'
    rate and latency quantiles under train_*."""
    mix = {"predict": 1, "train": 1} if case.mixed else {case.operation: 1}
    report = run_load(LoadSpec(target=f"127.0.0.1:{port}", duration=seconds,
                               concurrency=case.in_flight, mix=mix,
                               batch=case.batch, layers=case.layers, models=1, warmup=warmup,
                               stream=case.stream))
    if not report["ok"]:
        raise RuntimeError(f"unexpected status codes {report['unexpected_codes']} ({case.name})")
    row = report["rpcs"][RPC[case.operation, case.stream]]
    if case.stream:  # a stream's messages count as its requests here
        row = dict(row, requests_per_second=row["messages_per_second"])
    if case.mixed:
        train = report["rpcs"]["TrainStep"]
        row = dict(row, **{f"train_{key}": train[key]
                           for key in ("requests_per_second", "p50_ms", "p99_ms")})
    return row


def _warm_up(server, cases):
    """Load every path and buffer the cases use, then let the server idle."""
    for case in cases:
        _load(server.port, case, 1.0 if case.operation == "train" else 0.5, warmup=0)


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
    cases_of = {name: cases for name, _, _, cases in servers}
    started = {}
    try:
        for name, command, ready, cases in servers:
            print(f"{name}: starting ...", file=sys.stderr, flush=True)
            started[name] = ServerProcess(name, command, ready)
            _warm_up(started[name], cases)
        time.sleep(1.0)
        idle = {name: server.memory_mib() for name, server in started.items()}
        runs = {name: {} for name in started}
        names = list(started)
        for case in ALL_CASES:
            print(f"{case.name}: {rounds} rounds ...", file=sys.stderr, flush=True)
            for round_ in range(rounds):
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    if case in cases_of[name]:
                        runs[name].setdefault(case.name, []).append(_load(
                            started[name].port, case, seconds / rounds, warmup=ROUND_WARMUP_SECONDS))
                        time.sleep(QUIET_SECONDS)
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
    """The median over the rounds of name's figure divided by reference's in the same round;
    `case` may be a pair (name's case, reference's case)."""
    mine, theirs = case if isinstance(case, tuple) else (case, case)
    pairs = zip(_rounds(results[name], mine), _rounds(results[reference], theirs))
    return statistics.median(a[key] / b[key] for a, b in pairs)


def _ratios(results, in_process):
    """Per case and server: req/s and p99 against the floor (and the weights floor) where
    they ran the case, each the median of the rounds' ratios (a round's servers ran minutes
    apart at most, seconds apart usually); TrainStep against in-process and torch; nnserve's
    streams against its own unary calls of the same messages."""
    ratios = {}
    for name, server in results.items():
        for case in server["cases"]:
            ratio = ratios.setdefault(case, {})[name] = {}
            for reference, suffix in (("floor", "floor"), ("weights", "weights_floor")):
                if name != reference and case in results.get(reference, {}).get("cases", {}):
                    ratio[f"requests_per_second_vs_{suffix}"] = _ratio(
                        results, name, reference, case, "requests_per_second")
                    ratio[f"p99_vs_{suffix}"] = _ratio(results, name, reference, case, "p99_ms")
            if name == "floor":
                ratio.update(requests_per_second_vs_floor=1.0, p99_vs_floor=1.0)
    train = "train b256 x4"
    nnserve = results["nnserve"]["cases"][train]["rows_per_second"]
    ratios[train]["nnserve"]["examples_per_second_vs_in_process"] = nnserve / in_process
    if "torch" in results:
        ratios[train]["nnserve"]["examples_per_second_vs_torch"] = _ratio(
            results, "nnserve", "torch", train, "rows_per_second")
        torch = results["torch"]["cases"][train]["rows_per_second"]
        ratios[train]["torch"]["examples_per_second_vs_in_process"] = torch / in_process
    for stream, unary in STREAM_VERSUS_UNARY.items():
        if stream in results["nnserve"]["cases"]:
            ratios[stream]["nnserve"]["messages_per_second_vs_unary"] = _ratio(
                results, "nnserve", "nnserve", (stream, unary), "requests_per_second")
    stream_train = "stream train b256 x1"
    if stream_train in results["nnserve"]["cases"]:
        rate = results["nnserve"]["cases"][stream_train]["rows_per_second"]
        ratios[stream_train]["nnserve"]["examples_per_second_vs_in_process"] = rate / in_process
    return ratios


# Each stream case against the unary case of the same messages and in-flight count.
STREAM_VERSUS_UNARY = {"stream predict b1 x1": "predict b1 x1",
                       "stream predict b1 x8": "predict b1 x8",
                       "tiny stream train b4 x1": "tiny train b4 x1"}


def _targets(results, ratios, jobs, open_inference=None):
    """The issues' targets: (what, value, bound, met)."""
    rows = job_targets(jobs)
    if open_inference:
        rows += open_inference_targets(open_inference)

    def at_least(what, value, bound):
        rows.append((what, value, f">= {bound}", value >= bound))

    def at_most(what, value, bound):
        rows.append((what, value, f"<= {bound}", value <= bound))

    for name in ("nnserve", "batched"):
        for case in ("predict b1 x1", "predict b1 x8"):
            mine = ratios[case].get(name)
            if mine is None:
                continue
            at_least(f"{name} {case}: req/s vs floor", mine["requests_per_second_vs_floor"], 0.85)
            at_most(f"{name} {case}: p99 vs floor", mine["p99_vs_floor"], 1.3)
    train = ratios["train b256 x4"]["nnserve"]
    at_least("train b256: examples/s vs in-process", train["examples_per_second_vs_in_process"], 0.6)
    if "examples_per_second_vs_torch" in train:
        at_least("train b256: examples/s vs torch server", train["examples_per_second_vs_torch"], 2)
    for stream, bound in (("stream predict b1 x1", 2), ("stream predict b1 x8", 2),
                          ("tiny stream train b4 x1", 3)):
        mine = ratios.get(stream, {}).get("nnserve")
        if mine is not None:
            at_least(f"{stream}: messages/s vs unary", mine["messages_per_second_vs_unary"], bound)
    mine = ratios.get("stream train b256 x1", {}).get("nnserve")
    if mine is not None:
        at_least("stream train b256 x1: examples/s vs in-process",
                 mine["examples_per_second_vs_in_process"], 0.75)
    at_most("nnserve resident memory at idle (MiB)", results["nnserve"]["rss_idle_mib"], 250)
    return [{"target": what, "value": value, "bound": bound, "met": met}
            for what, value, bound, met in rows]


def format_report(report):
    results, ratios = report["servers"], report["ratios"]
    lines = [f"{report['duration_seconds']:g} s per case and server in {report.get('rounds', 1)} "
             f"rounds (medians), layers {list(LAYERS)} (tiny: {list(TINY_LAYERS)}), float32; "
             f"{report['machine']['cpus']} CPUs; torch {report['torch'] or 'not installed'}; "
             f"batched: nnserve serve {' '.join(BATCHED_FLAGS)}"]
    if report["torch"] is None:
        lines.append("torch: skipped (not installed; pip install 'nnserve[bench]')")
    lines.append(f"{'case':<24} {'server':<8} {'msg/s':>9} {'rows/s':>10} {'p50 us':>8} "
                 f"{'p99 us':>8} {'x floor':>8} {'p99 x floor':>11} {'x weights':>9} {'x unary':>8}")
    for case in ALL_CASES:
        for name, server in results.items():
            row = server["cases"].get(case.name)
            if row is None:
                continue
            ratio = ratios[case.name][name]

            def column(key, width, ratio=ratio):
                value = ratio.get(key)
                return f"{value:>{width}.2f}" if value is not None else " " * width

            lines.append(f"{case.name:<24} {name:<8} {row['requests_per_second']:>9.1f} "
                         f"{row['rows_per_second']:>10.0f} {row['p50_ms'] * 1e3:>8.0f} "
                         f"{row['p99_ms'] * 1e3:>8.0f} {column('requests_per_second_vs_floor', 8)} "
                         f"{column('p99_vs_floor', 11)} "
                         f"{column('requests_per_second_vs_weights_floor', 9)} "
                         f"{column('messages_per_second_vs_unary', 8)}")
            if case.mixed:
                rate = row["train_requests_per_second"]
                lines.append(f"{'  its TrainSteps':<24} {name:<8} {rate:>9.1f} "
                             f"{rate * case.batch:>10.0f} {row['train_p50_ms'] * 1e3:>8.0f} "
                             f"{row['train_p99_ms'] * 1e3:>8.0f}")
    lines.append(f"in-process Network.train_step b256: {report['in_process_examples_per_second']:.0f} "
                 "examples/s")
    lines.append("resident memory MiB (idle after warm-up / end of load / peak): " + ", ".join(
        f"{name} {s['rss_idle_mib']:.0f} / {s['rss_end_mib']:.0f} / {s['rss_peak_mib']:.0f}"
        for name, s in results.items()))
    lines.append(format_jobs(report["training_jobs"]))
    if report.get("open_inference"):
        lines.append(format_open_inference(report["open_inference"]))
    lines.append("targets:")
    for target in report["targets"]:
        # Three decimals: at two, a value just under its bound printed as the bound itself.
        lines.append(f"  {target['target']}: {target['value']:.3f} ({target['bound']}) "
                     f"{'met' if target['met'] else 'MISSED'}")
    return "\n".join(lines)


def _on_own_nnserve(what, measure, *flags, ready=_nnserve_ready):
    """measure(port) against an `nnserve serve` of its own (defaults and `flags`); `ready`
    reads the port (or ports) from its serving line."""
    name, command, _, _ = next(server for server in _servers() if server[0] == "nnserve")
    print(f"{what}: starting nnserve ...", file=sys.stderr, flush=True)
    server = ServerProcess(name, [*command, *flags], ready)
    try:
        return measure(server.port)
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
    jobs = _on_own_nnserve("training jobs", lambda port: measure_jobs(port, args.rounds))
    open_inference = _on_own_nnserve(
        "open inference", lambda ports: measure_open_inference(*ports, args.rounds),
        "--http-port", "-1", ready=_nnserve_ports)
    import grpc

    report = {"duration_seconds": seconds, "rounds": args.rounds, "layers": list(LAYERS),
              "cases": [case._asdict() for case in ALL_CASES], "batched_flags": list(BATCHED_FLAGS),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "grpcio": grpc.__version__, "platform": platform.platform()},
              "torch": torch_version, "in_process_examples_per_second": in_process,
              "servers": results, "ratios": ratios, "training_jobs": jobs,
              "open_inference": open_inference}
    report["targets"] = _targets(results, ratios, jobs, open_inference)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0
