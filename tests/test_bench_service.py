"""`nnserve bench service`'s pieces: the reference servers in their processes, and the report."""

import sys

import grpc
import numpy as np
import pytest

from nnserve.bench import service
from nnserve.bench.service import CASES, ServerProcess
from nnserve.bench.training_jobs import JOB_CASES
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.tensors import to_array, to_tensor

from service_support import classifier_spec, running_server


def _reference_server(kind):
    return ServerProcess(kind, [sys.executable, "-m", "nnserve.bench.bare_server", kind],
                         service._bare_ready)


def _exercise(port):
    """CreateModel, Predict of 3 rows, TrainStep; return (outputs, loss)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        model = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec((4, 8, 3))),
                                 timeout=30).model.id
        x = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
        outputs = to_array(stub.Predict(pb.PredictRequest(model=model, x=to_tensor(x)),
                                        timeout=30).outputs)
        y = to_tensor(np.array([0, 1, 2], np.int64))
        loss = stub.TrainStep(pb.TrainStepRequest(model=model, x=to_tensor(x), y=y), timeout=30).loss
        stub.DeleteModel(pb.DeleteModelRequest(model=model), timeout=30)
    return outputs, loss


@pytest.mark.parametrize("kind", ["floor", "weights"])
def test_floor_servers_decode_and_answer_a_fixed_result_of_the_right_shape(kind):
    """The floor processes print their port, answer Predict with zeros shaped (rows, n_out)
    and TrainStep with a fixed reply, and report their resident memory."""
    server = _reference_server(kind)
    try:
        outputs, loss = _exercise(server.port)
        memory = server.memory_mib()
    finally:
        server.stop()
    assert outputs.shape == (3, 3) and outputs.dtype == np.float32 and not outputs.any()
    assert loss == 0.0
    assert 0 < memory["rss"] <= memory["peak"]
    assert server.process.returncode == 0


@pytest.mark.torch
def test_torch_server_computes_softmax_outputs_and_a_training_loss():
    """The PyTorch process answers Predict with probability rows and TrainStep with a real loss."""
    pytest.importorskip("torch")
    server = _reference_server("torch")
    try:
        outputs, loss = _exercise(server.port)
    finally:
        server.stop()
    assert outputs.shape == (3, 3) and np.allclose(outputs.sum(axis=1), 1, atol=1e-6)
    assert loss > 0


def _row(requests_per_second, p99_ms, rows_per_call):
    return {"requests_per_second": requests_per_second, "rows_per_second": requests_per_second
            * rows_per_call, "p50_ms": p99_ms / 2, "p99_ms": p99_ms}


def _job_figures(job_vs_in_process):
    """Training-job figures whose job rate is the given fraction of in-process, per case."""
    jobs = {name: {"in_process_steps_per_second": 1000.0, "job_steps_per_second": 1000.0 * ratio,
                   "job_end_to_end_steps_per_second": 900.0 * ratio, "job_vs_in_process": ratio,
                   "end_to_end_vs_in_process": 0.9 * ratio}
            for (name, *_), ratio in zip(JOB_CASES, job_vs_in_process)}
    jobs[JOB_CASES[0][0]].update(unary_steps_per_second=40.0, unary_vs_in_process=0.04)
    jobs["predict while training"] = {"idle_p50_us": 500.0, "during_job_p50_us": 900.0}
    return jobs


def test_report_ratios_and_targets_follow_the_figures():
    """Ratios divide by the floor's figures, TrainStep compares with in-process and torch, and
    each target says whether it is met."""
    def server(scale, p99, rss):
        return {"rss_idle_mib": rss, "rss_end_mib": rss + 10, "rss_peak_mib": rss + 20,
                "cases": {case: _row(1000 * scale, p99, batch) for case, _, batch, *_ in CASES}}

    results = {"floor": server(1.0, 1.0, 50), "torch": server(0.5, 2.0, 330),
               "nnserve": server(0.9, 1.2, 200)}
    results["weights"] = server(0.6, 1.5, 60)
    results["weights"]["cases"] = {case: results["weights"]["cases"][case]
                                   for case, *_ in service.BATCH_1_CASES}
    in_process = 1000 * 0.9 * 256 / 0.5  # nnserve's TrainStep examples/s is half of it
    ratios = service._ratios(results, in_process)
    assert ratios["predict b1 x1"]["nnserve"]["requests_per_second_vs_floor"] == pytest.approx(0.9)
    assert ratios["predict b1 x8"]["torch"]["p99_vs_floor"] == pytest.approx(2.0)
    versus_weights = ratios["predict b1 x8"]["nnserve"]
    assert versus_weights["requests_per_second_vs_weights_floor"] == pytest.approx(1.5)
    assert versus_weights["p99_vs_weights_floor"] == pytest.approx(0.8)
    assert "requests_per_second_vs_weights_floor" not in ratios["predict b256 x4"]["nnserve"]
    train = ratios["train b256 x4"]["nnserve"]
    assert train["examples_per_second_vs_in_process"] == pytest.approx(0.5)
    assert train["examples_per_second_vs_torch"] == pytest.approx(1.8)
    jobs = _job_figures([0.85, 0.95, 0.4])
    targets = {t["target"]: t["met"] for t in service._targets(results, ratios, jobs)}
    assert targets["nnserve predict b1 x1: req/s vs floor"]
    assert targets["nnserve predict b1 x8: p99 vs floor"]
    digits, mnist, tiny = (name for name, *_ in JOB_CASES)
    assert targets[f"job {digits}: steps/s vs in-process"]
    assert targets[f"job {mnist}: examples/s vs in-process"]
    assert not targets[f"job {tiny}: steps/s vs in-process"]
    assert not targets["train b256: examples/s vs in-process"]
    assert not targets["train b256: examples/s vs torch server"]
    assert targets["nnserve resident memory at idle (MiB)"]
    text = service.format_report({"duration_seconds": 1.0, "machine": {"cpus": 2}, "torch": "x",
                                  "in_process_examples_per_second": in_process,
                                  "servers": results, "ratios": ratios, "training_jobs": jobs,
                                  "targets": service._targets(results, ratios, jobs)})
    assert "MISSED" in text and "predict b256 x4" in text and "nnserve 200 / 210 / 220" in text
    assert "nnserve predict b1 x1: req/s vs floor: 0.900 (>= 0.85) met" in text
    assert f"{tiny}" in text and "while a job trains it 900 us" in text
    weights_rows = [line for line in text.splitlines() if line.split()[3:4] == ["weights"]]
    assert len(weights_rows) == len(service.BATCH_1_CASES)


def test_ratios_are_medians_of_each_rounds_ratio():
    """With rounds, a ratio compares servers within each round, then takes the median: a
    slow round (the machine busy) slows both servers and leaves the ratio alone."""
    def server(per_round):
        rounds = {case: [_row(rate, 1.0, batch) for rate in per_round] for case, _, batch, *_ in CASES}
        return {"rss_idle_mib": 1, "rss_end_mib": 1, "rss_peak_mib": 1, "rounds": rounds,
                "cases": {case: service._median_row(rows) for case, rows in rounds.items()}}

    results = {"floor": server([1000, 100, 1000]), "nnserve": server([800, 80, 800])}
    ratios = service._ratios(results, in_process=1.0)
    assert ratios["predict b1 x8"]["nnserve"]["requests_per_second_vs_floor"] == pytest.approx(0.8)
    assert results["nnserve"]["cases"]["predict b1 x8"]["requests_per_second"] == 800


def test_servers_take_turns_in_rounds_and_report_medians():
    """measure_servers on the two floors, 2 rounds: every case the floor runs and only the
    batch-1 cases for the weights floor, a row per round, the median as the case's figure,
    and memory read from both processes."""
    servers = [server for server in service._servers() if server[0] in ("floor", "weights")]
    results = service.measure_servers(servers, seconds=0.2, rounds=2)
    assert set(results) == {"floor", "weights"}
    assert set(results["floor"]["cases"]) == {case for case, *_ in CASES}
    assert set(results["weights"]["cases"]) == {case for case, *_ in service.BATCH_1_CASES}
    for figures in results.values():
        assert 0 < figures["rss_idle_mib"] and 0 < figures["rss_end_mib"] <= figures["rss_peak_mib"]
        for case, rows in figures["rounds"].items():
            assert len(rows) == 2 and all(row["requests_per_second"] > 0 for row in rows)
            assert figures["cases"][case]["requests_per_second"] == pytest.approx(
                (rows[0]["requests_per_second"] + rows[1]["requests_per_second"]) / 2)


def test_streams_compare_with_nnserve_unary_calls_and_in_process():
    """A stream case's ratio divides by nnserve's unary case of the same messages, round by
    round; the batch-256 TrainStream compares with in-process; the batched server's Predicts
    with the floor."""
    def server(scale, cases):
        rows = {case.name: [_row(1000 * scale * factor, 1.0, case.batch) for factor in (1, 2)]
                for case in cases}
        return {"rss_idle_mib": 100, "rss_end_mib": 1, "rss_peak_mib": 1, "rounds": rows,
                "cases": {name: service._median_row(r) for name, r in rows.items()}}

    results = {"floor": server(1.0, service.CASES), "nnserve": server(0.5, service.CASES),
               "batched": server(0.9, service.BATCH_1_CASES)}
    for case in service.STREAM_CASES:  # streams 2.5x nnserve's unary rate, tiny ones 4x
        scale = 2.0 if case.layers == service.TINY_LAYERS else 1.25
        extra = server(scale, [case])
        results["nnserve"]["rounds"].update(extra["rounds"])
        results["nnserve"]["cases"].update(extra["cases"])
    tiny = service.Case("tiny train b4 x1", "train", 4, 1, layers=service.TINY_LAYERS)
    unary_tiny = server(0.5, [tiny])
    results["nnserve"]["rounds"].update(unary_tiny["rounds"])
    results["nnserve"]["cases"].update(unary_tiny["cases"])
    in_process = 1875 * 256 / 0.5  # the TrainStream's examples/s (median of 1250, 2500) is half
    ratios = service._ratios(results, in_process)
    assert ratios["stream predict b1 x8"]["nnserve"]["messages_per_second_vs_unary"] == pytest.approx(2.5)
    assert ratios["tiny stream train b4 x1"]["nnserve"]["messages_per_second_vs_unary"] == pytest.approx(4)
    assert "requests_per_second_vs_floor" not in ratios["stream predict b1 x1"]["nnserve"]
    assert ratios["predict b1 x8"]["batched"]["requests_per_second_vs_floor"] == pytest.approx(0.9)
    targets = {t["target"]: t["met"] for t in service._targets(results, ratios, _job_figures([1, 1, 1]))}
    assert targets["stream predict b1 x1: messages/s vs unary"]
    assert targets["tiny stream train b4 x1: messages/s vs unary"]
    assert not targets["stream train b256 x1: examples/s vs in-process"]
    assert targets["batched predict b1 x8: req/s vs floor"]
    assert not targets["nnserve predict b1 x8: req/s vs floor"]


def test_mixed_case_reports_both_sides_of_one_model():
    """The mixed case loads one model with Predicts and TrainSteps at once: its row is the
    Predicts', with the TrainSteps' rate and latencies beside them, and the report prints
    the TrainSteps on a line of their own."""
    case, = service.MIXED_CASES
    with running_server() as running:
        row = service._load(running.port, case._replace(batch=8, layers=(4, 8, 3), in_flight=4),
                            0.5, warmup=0)
    assert row["requests_per_second"] > 0 and row["train_requests_per_second"] > 0
    assert 0 < row["p50_ms"] <= row["p99_ms"] and 0 < row["train_p50_ms"] <= row["train_p99_ms"]
    results = {"nnserve": {"rss_idle_mib": 1, "rss_end_mib": 1, "rss_peak_mib": 1,
                           "cases": {case.name: dict(row, rows_per_second=1.0)}}}
    text = service.format_report({"duration_seconds": 1.0, "machine": {"cpus": 2}, "torch": "x",
                                  "in_process_examples_per_second": 1.0, "servers": results,
                                  "ratios": {case.name: {"nnserve": {}}},
                                  "training_jobs": _job_figures([1, 1, 1]), "targets": []})
    predict_line, train_line = [line for line in text.splitlines()
                                if line.startswith((case.name, "  its TrainSteps"))]
    assert predict_line.split()[3:5] == ["nnserve", f"{row['requests_per_second']:.1f}"]
    assert train_line.split()[2:4] == ["nnserve", f"{row['train_requests_per_second']:.1f}"]
