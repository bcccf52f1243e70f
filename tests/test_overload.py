"""Overload: past --max-concurrent-rpcs calls are refused at once, health keeps answering,
memory stays bounded, and refusals tell retrying clients when (or whether) to retry."""

import json
import statistics
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nnserve.model import warmup
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from process_support import ServeProcess
from service_support import classifier_spec, make_batch, pb, running_server, to_tensor

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SERVING = health_pb2.HealthCheckResponse.SERVING
WIDE = classifier_spec((784, 512, 512, 10))  # a batch-1024 TrainStep takes ~40 ms on one thread


def _rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class _Prober(threading.Thread):
    """Health checks every 20 ms and RSS samples, until stopped."""

    def __init__(self, channel, pid):
        super().__init__(daemon=True)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.pid = pid
        self.stop = threading.Event()
        self.checks = []  # (status or code, seconds)
        self.peak_rss = _rss_mib(pid)

    def run(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status = self.health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            except grpc.RpcError as error:
                status = error.code()
            self.checks.append((status, time.perf_counter() - started))
            self.peak_rss = max(self.peak_rss, _rss_mib(self.pid))
            time.sleep(0.02)


def _flood(stub, request, clients):
    """`clients` TrainSteps at once; return [(code, seconds, details, trailing metadata)]."""
    results, done = [], threading.Semaphore(0)

    def finished(call, started):
        code = call.code()
        details = call.details() if code != grpc.StatusCode.OK else ""
        results.append((code, time.perf_counter() - started, details, dict(call.trailing_metadata() or ())))
        done.release()

    for _ in range(clients):
        started = time.perf_counter()
        call = stub.TrainStep.future(request, timeout=120)
        call.add_done_callback(lambda call, started=started: finished(call, started))
    for _ in range(clients):
        assert done.acquire(timeout=120)
    return results


def test_excess_calls_are_refused_promptly_health_answers_and_memory_is_bounded():
    """`nnserve serve --max-concurrent-rpcs 4 --workers 2` under floods of 32 and 160 concurrent
    batch-1024 TrainSteps (3.2 MB each): the excess gets RESOURCE_EXHAUSTED in a fraction of
    a served call's time, health checks answer SERVING (or, at the flood's peak, busy), and the server's memory grows by far
    less than the requests offered (160 x 3.2 MB)."""
    with ServeProcess("--max-concurrent-rpcs", "4", "--workers", "2") as server, server.channel() as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        stub.CreateModel(pb.CreateModelRequest(spec=WIDE, name="wide"), timeout=30)
        x, y = make_batch(np.random.default_rng(0), 1024, 784, 10)
        request = pb.TrainStepRequest(model="wide", x=to_tensor(x), y=to_tensor(y))
        for _ in range(2):  # workspaces allocated, kernels warm
            stub.TrainStep(request, timeout=60)
        baseline = _rss_mib(server.process.pid)
        prober = _Prober(channel, server.process.pid)
        prober.start()
        results = _flood(stub, request, 32) + _flood(stub, request, 32) + _flood(stub, request, 160)
        prober.stop.set()
        prober.join(timeout=10)

    codes = [code for code, *_ in results]
    assert set(codes) == {grpc.StatusCode.OK, EXHAUSTED}
    refused = [(seconds, details, trailers) for code, seconds, details, trailers in results if code == EXHAUSTED]
    assert len(refused) >= 150
    refusal_times = [seconds for seconds, _, _ in refused]
    served_times = [seconds for code, seconds, _, _ in results if code == grpc.StatusCode.OK]
    # Promptly, measured against the same run rather than a clock budget: a refusal takes a
    # fraction of what a served call takes, and never anything like a queued call's wait.
    assert statistics.median(refusal_times) < statistics.median(served_times) / 2, (
        refusal_times, served_times)
    assert max(refusal_times) < 10.0, refusal_times
    ours = [(details, trailers) for _, details, trailers in refused if "max_concurrent_rpcs" in details]
    assert len(ours) >= len(refused) // 2  # the rest: gRPC's own cap, before reading the message
    assert all(50 <= int(trailers["grpc-retry-pushback-ms"]) <= 250 for _, trailers in ours)
    assert "--max-concurrent-rpcs" in ours[0][0]

    assert len(prober.checks) >= 5
    # A flood that also fills the reserved threads meets gRPC's own cap, health checks
    # included (service/overload.py documents it: "busy", not "down"); nothing else.
    assert all(status in (SERVING, EXHAUSTED) for status, _ in prober.checks), prober.checks
    assert sum(status == SERVING for status, _ in prober.checks) > len(prober.checks) // 2
    assert max(seconds for _, seconds in prober.checks) < 5.0
    assert prober.peak_rss - baseline < 256, (baseline, prober.peak_rss)


def _retrying_channel(target, codes):
    """A channel with a retry policy for Predict on `codes` (no throttling, to see pushback alone)."""
    policy = {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "0.2s", "backoffMultiplier": 2,
              "retryableStatusCodes": codes}
    config = {"methodConfig": [{"name": [{"service": "nnserve.v1.ModelService", "method": "Predict"}],
                                "retryPolicy": policy}]}
    return grpc.insecure_channel(target, options=[("grpc.service_config", json.dumps(config)),
                                                  ("grpc.enable_retries", 1)])


def _refused_predicts(live):
    """The server's count of Predict calls answered RESOURCE_EXHAUSTED (its metrics)."""
    return live.server.metrics.registry.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "UNARY", "grpc_service": "nnserve.v1.ModelService", "grpc_method": "Predict",
        "grpc_code": "RESOURCE_EXHAUSTED"}) or 0


def test_refusals_tell_retrying_clients_when_or_whether_to_retry():
    """An overload refusal carries a 50-250 ms retry pushback, so Predicts through a channel that
    retries RESOURCE_EXHAUSTED all succeed once the load passes, while the same calls without
    retries are refused; a limit (max_rows_per_request) says 'do not retry' and is not retried."""
    warmup()
    with running_server(max_concurrent_rpcs=2, workers=1, max_rows_per_request=1024) as live:
        stub = live.stub
        stub.CreateModel(pb.CreateModelRequest(spec=WIDE, name="wide"), timeout=30)
        stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(), name="small"), timeout=30)
        x, y = make_batch(np.random.default_rng(1), 1024, 784, 10)
        train = pb.TrainStepRequest(model="wide", x=to_tensor(x), y=to_tensor(y))
        stub.TrainStep(train, timeout=60)
        small_x, _ = make_batch(np.random.default_rng(2), 2, 4, 3)
        predict = pb.PredictRequest(model="small", x=to_tensor(small_x))

        def occupy(seconds):
            """Two threads keep both admission slots busy with TrainSteps; return once a plain
            Predict is refused. The load passes `seconds` after that refusal (timed from the
            refusal, not from the start: on a slow machine the slots fill late)."""
            stop = threading.Event()

            def loop():
                while not stop.is_set():
                    try:
                        stub.TrainStep(train, timeout=60)
                    except grpc.RpcError as error:  # a Predict had the slot this moment
                        assert error.code() == EXHAUSTED

            threads = [threading.Thread(target=loop) for _ in range(2)]
            for thread in threads:
                thread.start()
            for _ in range(10_000):
                try:
                    stub.Predict(predict, timeout=10)
                except grpc.RpcError as error:
                    assert error.code() == EXHAUSTED and "max_concurrent_rpcs" in error.details()
                    threading.Timer(seconds, stop.set).start()
                    return threads
                time.sleep(0.002)
            stop.set()
            raise AssertionError("no Predict was refused while the slots were busy")

        with _retrying_channel(live.target, ["RESOURCE_EXHAUSTED"]) as channel:
            retrying = pb_grpc.ModelServiceStub(channel)
            busy = occupy(0.1)  # with the step under way, within 4 retry pauses (>= 4 x 50 ms)
            refused_before = _refused_predicts(live)
            replies = [retrying.Predict.future(predict, timeout=10) for _ in range(4)]
            assert all(reply.result().outputs.shape == [2, 3] for reply in replies)
            assert _refused_predicts(live) > refused_before  # refused at first, then served on a retry
            for thread in busy:
                thread.join()

            too_many_rows = pb.PredictRequest(model="small", x=to_tensor(np.zeros((1025, 4), np.float32)))
            refused_before = _refused_predicts(live)
            try:
                retrying.Predict(too_many_rows, timeout=10)
                raise AssertionError("a request over max_rows_per_request was served")
            except grpc.RpcError as error:
                assert error.code() == EXHAUSTED and "max_rows_per_request" in error.details()
                assert dict(error.trailing_metadata())["grpc-retry-pushback-ms"] == "-1"
            assert _refused_predicts(live) == refused_before + 1  # answered once, not retried


def test_without_a_limit_nothing_is_refused():
    """--max-concurrent-rpcs 0 (the default) admits every call: 24 concurrent TrainSteps all succeed."""
    warmup()
    with running_server(workers=2) as live:
        live.stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(), name="m"), timeout=30)
        x, y = make_batch(np.random.default_rng(0), 8, 4, 3)
        request = pb.TrainStepRequest(model="m", x=to_tensor(x), y=to_tensor(y))
        assert {code for code, *_ in _flood(live.stub, request, 24)} == {grpc.StatusCode.OK}
