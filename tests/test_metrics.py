"""Prometheus metrics: scraped over HTTP from a real server, parsed with prometheus_client's parser.

Every test reads exact values: each counter moves by what the calls made imply, no more.
"""

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from nnserve.service import Settings, create_server
from nnserve.service.metrics import NO_METRICS, OVERFLOW_MODEL

from metrics_support import SERVICE, rpc, scrape, value
from service_support import classifier_spec, make_batch, pb, running_server, to_tensor


def moved(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def _create(live, name="", layers=(4, 8, 3)):
    request = pb.CreateModelRequest(spec=classifier_spec(layers), name=name)
    return live.stub.CreateModel(request, timeout=30).model


def _train(live, model, rows, seed=0):
    x, y = make_batch(np.random.default_rng(seed), rows, 4, 3)
    return live.stub.TrainStep(pb.TrainStepRequest(model=model, x=to_tensor(x), y=to_tensor(y)),
                               timeout=60)


def _predict(live, model, rows):
    x, _ = make_batch(np.random.default_rng(1), rows, 4, 3)
    return live.stub.Predict(pb.PredictRequest(model=model, x=to_tensor(x)), timeout=60)


def test_train_steps_count_steps_examples_and_losses_per_model():
    """3 TrainSteps of 5 rows add 3 steps and 15 examples; the loss gauge is the last returned
    loss, and the loss summary and step-duration histogram each count 3 with the losses' sum."""
    with running_server() as live:
        model = _create(live, name="mnist")
        losses = [_train(live, "mnist", 5, seed).loss for seed in range(3)]
        samples = scrape(live.server.metrics_port)
    assert value(samples, "nnserve_train_steps_total", model="mnist") == 3
    assert value(samples, "nnserve_train_examples_total", model="mnist") == 15
    assert value(samples, "nnserve_train_loss", model="mnist") == losses[-1]
    assert value(samples, "nnserve_train_batch_loss_count", model="mnist") == 3
    assert value(samples, "nnserve_train_batch_loss_sum", model="mnist") == pytest.approx(sum(losses))
    assert value(samples, "nnserve_train_step_duration_seconds_count", model="mnist") == 3
    assert value(samples, "nnserve_train_step_duration_seconds_bucket", model="mnist", le="+Inf") == 3
    assert value(samples, "nnserve_train_step_duration_seconds_sum", model="mnist") > 0
    assert value(samples, "nnserve_train_steps_total", model=model.id) == 0  # named: label is the name


def test_predicts_count_rows_and_durations_labelled_by_id_when_unnamed():
    """Predicts of 7 and 2 rows add 9 rows and 2 observed durations under the model's id."""
    with running_server() as live:
        model = _create(live).id
        _predict(live, model, 7)
        _predict(live, model, 2)
        samples = scrape(live.server.metrics_port)
    assert value(samples, "nnserve_predict_rows_total", model=model) == 9
    assert value(samples, "nnserve_predict_duration_seconds_count", model=model) == 2
    assert value(samples, "nnserve_predict_duration_seconds_bucket", model=model, le="+Inf") == 2
    assert value(samples, "nnserve_train_steps_total", model=model) == 0


def test_rejected_calls_move_no_model_counter():
    """A TrainStep and a Predict refused with INVALID_ARGUMENT count no step, example or row."""
    with running_server() as live:
        model = _create(live, name="m").id
        bad = to_tensor(np.zeros((2, 5), np.float32))  # 5 features for a 4-input model
        for call, request in ((live.stub.TrainStep, pb.TrainStepRequest(model=model, x=bad, y=bad)),
                              (live.stub.Predict, pb.PredictRequest(model=model, x=bad))):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        samples = scrape(live.server.metrics_port)
    for name in ("nnserve_train_steps_total", "nnserve_train_examples_total",
                 "nnserve_train_step_duration_seconds_count", "nnserve_predict_rows_total",
                 "nnserve_predict_duration_seconds_count"):
        assert value(samples, name, model="m") == 0, name
    assert value(samples, "grpc_server_handled_total",
                 **rpc("TrainStep", "INVALID_ARGUMENT")) == 1


def test_grpc_counters_move_exactly_per_method_and_code():
    """Started, handled (by code), handling-seconds count and messages received/sent move once
    per call; a NOT_FOUND call sends no message."""
    with running_server() as live:
        model = _create(live).id
        before = scrape(live.server.metrics_port)
        for _ in range(4):
            _predict(live, model, 1)
        with pytest.raises(grpc.RpcError) as caught:
            live.stub.GetModel(pb.GetModelRequest(model="missing"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        live.stub.GetModel(pb.GetModelRequest(model=model), timeout=30)
        after = scrape(live.server.metrics_port)
    predict, get = rpc("Predict"), rpc("GetModel")
    assert moved(before, after, "grpc_server_started_total", **predict) == 4
    assert moved(before, after, "grpc_server_handled_total", **rpc("Predict", "OK")) == 4
    assert moved(before, after, "grpc_server_handling_seconds_count", **predict) == 4
    assert moved(before, after, "grpc_server_handling_seconds_bucket", le="+Inf", **predict) == 4
    assert moved(before, after, "grpc_server_msg_received_total", **predict) == 4
    assert moved(before, after, "grpc_server_msg_sent_total", **predict) == 4
    assert moved(before, after, "grpc_server_started_total", **get) == 2
    assert moved(before, after, "grpc_server_handled_total", **rpc("GetModel", "NOT_FOUND")) == 1
    assert moved(before, after, "grpc_server_handled_total", **rpc("GetModel", "OK")) == 1
    assert moved(before, after, "grpc_server_handling_seconds_count", **get) == 2
    assert moved(before, after, "grpc_server_msg_received_total", **get) == 2
    assert moved(before, after, "grpc_server_msg_sent_total", **get) == 1
    assert moved(before, after, "grpc_server_started_total", **rpc("CreateModel")) == 0


def test_handling_seconds_has_sub_millisecond_buckets():
    """grpc_server_handling_seconds has buckets at 100 us, 250 us and 500 us, cumulative up to +Inf."""
    with running_server() as live:
        _create(live)
        samples = scrape(live.server.metrics_port)
    buckets = {dict(labels)["le"]: count for (name, labels), count in samples.items()
               if name == "grpc_server_handling_seconds_bucket"
               and dict(labels)["grpc_method"] == "CreateModel"}
    assert {"0.0001", "0.00025", "0.0005", "0.001", "+Inf"} <= set(buckets)
    assert buckets["+Inf"] == 1
    ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
    assert all(a[1] <= b[1] for a, b in zip(ordered, ordered[1:]))


def test_other_services_and_streaming_rpcs_are_counted():
    """A health Check counts as UNARY under grpc.health.v1.Health; a reflection call as a
    BIDI_STREAM with one message received and one sent."""
    with running_server() as live:
        health_pb2_grpc.HealthStub(live.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert SERVICE in ProtoReflectionDescriptorDatabase(live.channel).get_services()
        samples = scrape(live.server.metrics_port)
    check = rpc("Check", service="grpc.health.v1.Health")
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **check) == 1
    assert value(samples, "grpc_server_msg_sent_total", **check) == 1
    reflect = rpc("ServerReflectionInfo", service="grpc.reflection.v1alpha.ServerReflection",
                  grpc_type="BIDI_STREAM")
    assert value(samples, "grpc_server_started_total", **reflect) == 1
    assert value(samples, "grpc_server_msg_received_total", **reflect) == 1
    assert value(samples, "grpc_server_msg_sent_total", **reflect) == 1


def test_a_cancelled_server_stream_counts_as_cancelled():
    """A health Watch cancelled after its first message counts as a SERVER_STREAM handled with
    CANCELLED, one message sent."""
    with running_server() as live:
        stream = health_pb2_grpc.HealthStub(live.channel).Watch(health_pb2.HealthCheckRequest(),
                                                                timeout=10)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        stream.cancel()
        watch = rpc("Watch", service="grpc.health.v1.Health", grpc_type="SERVER_STREAM")
        for _ in range(100):
            samples = scrape(live.server.metrics_port)
            if value(samples, "grpc_server_handling_seconds_count", **watch):
                break
            time.sleep(0.02)
    assert value(samples, "grpc_server_handled_total", grpc_code="CANCELLED", **watch) == 1
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **watch) == 0
    assert value(samples, "grpc_server_started_total", **watch) == 1
    assert value(samples, "grpc_server_msg_sent_total", **watch) == 1


def test_registry_gauges_follow_create_and_delete():
    """nnserve_models, nnserve_parameters and nnserve_parameter_bytes add each created model
    (float32: 4 bytes, float64: 8 per parameter) and drop it when deleted."""
    with running_server() as live:
        assert value(scrape(live.server.metrics_port), "nnserve_models") == 0
        small = _create(live, layers=(4, 8, 3))  # 4*8+8 + 8*3+3 = 67 parameters
        request = pb.CreateModelRequest(spec=classifier_spec((10, 2), dtype=pb.DATA_TYPE_FLOAT64))
        wide = live.stub.CreateModel(request, timeout=30).model  # 22 parameters
        samples = scrape(live.server.metrics_port)
        assert (small.num_parameters, wide.num_parameters) == (67, 22)
        assert value(samples, "nnserve_models") == 2
        assert value(samples, "nnserve_parameters") == 89
        assert value(samples, "nnserve_parameter_bytes") == 67 * 4 + 22 * 8
        live.stub.DeleteModel(pb.DeleteModelRequest(model=small.id), timeout=30)
        samples = scrape(live.server.metrics_port)
    assert value(samples, "nnserve_models") == 1
    assert value(samples, "nnserve_parameters") == 22
    assert value(samples, "nnserve_parameter_bytes") == 22 * 8


def test_build_info_names_version_threading_layer_threads_and_blas():
    """nnserve_build_info is 1 with version, threading_layer, threads and blas labels."""
    with running_server() as live:
        samples = scrape(live.server.metrics_port)
    [(labels, info)] = [(dict(labels), v) for (name, labels), v in samples.items()
                        if name == "nnserve_build_info"]
    assert info == 1
    assert set(labels) == {"version", "threading_layer", "threads", "blas"}
    assert labels["version"] and labels["blas"] and int(labels["threads"]) >= 1


def test_models_past_the_cap_share_the_overflow_label():
    """With --metrics-max-models 2 the third model reports as model="__overflow__"; deleting
    a labelled model removes its series and frees its slot for the next model."""
    with running_server(metrics_max_models=2) as live:
        for name in ("a", "b", "c"):
            _create(live, name=name)
            _train(live, name, 2)
        samples = scrape(live.server.metrics_port)
        assert value(samples, "nnserve_train_steps_total", model="a") == 1
        assert value(samples, "nnserve_train_steps_total", model="b") == 1
        assert value(samples, "nnserve_train_steps_total", model="c") == 0
        assert value(samples, "nnserve_train_steps_total", model=OVERFLOW_MODEL) == 1
        assert value(samples, "nnserve_train_examples_total", model=OVERFLOW_MODEL) == 2

        live.stub.DeleteModel(pb.DeleteModelRequest(model="a"), timeout=30)
        _create(live, name="d")
        _train(live, "d", 3)
        _train(live, "c", 4)
        samples = scrape(live.server.metrics_port)
    labels = {dict(labels)["model"] for (name, labels) in samples
              if name == "nnserve_train_steps_total"}
    assert labels == {"b", "d", OVERFLOW_MODEL}
    assert value(samples, "nnserve_train_steps_total", model="d") == 1
    assert value(samples, "nnserve_train_examples_total", model=OVERFLOW_MODEL) == 6


def test_metrics_port_zero_disables_metrics():
    """With metrics_port 0 no metrics port is bound, no metrics are kept, and RPCs work."""
    with running_server(metrics_port=0) as live:
        assert live.server.metrics_port == 0 and live.server.metrics is NO_METRICS
        model = _create(live).id
        assert _predict(live, model, 3).version == 0


def test_a_metrics_port_in_use_is_an_error():
    """Binding a metrics port another server holds raises OSError naming the metrics address."""
    with running_server() as live:
        taken = live.server.metrics_port
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken} for metrics"):
            create_server(Settings(host="127.0.0.1", port=0, metrics_port=taken))


def test_metrics_port_closes_after_stop():
    """After stop() has let every RPC end, the metrics port stops answering."""
    server, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=-1, http_port=0))
    server.start()
    port = server.metrics_port
    assert value(scrape(port), "nnserve_models") == 0
    server.stop(0).wait(10)
    for _ in range(50):
        try:
            scrape(port)
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the metrics port still answers 2.5 s after stop()")


def test_many_steps_at_once_record_what_one_step_at_a_time_records():
    """trained_steps (a training job's batches of steps) leaves every series as trained() per
    step does: counts, buckets and the last loss exactly, the sums up to their rounding."""
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest

    from nnserve.service.metrics import Metrics

    class Entry:
        id = name = "m"

    rng = np.random.default_rng(3)
    rows = [int(n) for n in rng.integers(1, 64, 300)]
    losses = [float(v) for v in rng.exponential(1.0, 300)]
    seconds = [float(v) for v in rng.exponential(0.002, 300)] + [0.0001, 10.0, 99.0]
    rows += [1, 1, 1]
    losses += [0.5, 0.5, 0.5]
    one_by_one, at_once = Metrics(), Metrics()
    for metrics in (one_by_one, at_once):
        metrics.model_added(Entry())
    for step in zip(rows, losses, seconds):
        one_by_one.trained(Entry(), *step)
    at_once.trained_steps(Entry(), rows, losses, seconds)

    def samples(metrics):
        text = generate_latest(metrics.registry).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples
                if s.name.startswith("nnserve_train") and not s.name.endswith("_created")}

    expected, got = samples(one_by_one), samples(at_once)
    assert expected.keys() == got.keys() and len(expected) > 20
    for key, wanted in expected.items():
        if key[0].endswith("_sum"):
            assert got[key] == pytest.approx(wanted, rel=1e-12), key
        else:
            assert got[key] == wanted, key


def test_requests_in_flight_counts_unary_calls_and_rest_requests_being_handled():
    """nnserve_requests_in_flight is 1 while an UploadDataset (a call with one answer) waits
    for its last chunk and while a REST request waits for the rest of its body, 0 before
    and after; an open stream is not counted."""
    import socket
    import threading

    from job_support import upload_requests

    x, y = make_batch(np.random.default_rng(0), 8, 4, 3)
    with running_server() as live:
        port = live.server.metrics_port
        assert value(scrape(port), "nnserve_requests_in_flight") == 0
        release = threading.Event()
        first, *rest = upload_requests(x, y, rows_per_chunk=4)

        def requests():
            yield first
            release.wait(30)
            yield from rest

        def no_requests():
            release.wait(30)
            yield from ()

        upload = live.stub.UploadDataset.future(requests(), timeout=60)
        stream = live.stub.PredictStream(no_requests(), timeout=60)  # open until released
        _wait_until(lambda: value(scrape(port), "grpc_server_started_total",
                                  **rpc("PredictStream", grpc_type="BIDI_STREAM")) == 1)
        _wait_until(lambda: value(scrape(port), "nnserve_requests_in_flight") == 1)
        assert value(scrape(port), "nnserve_requests_in_flight") == 1
        release.set()
        upload.result()
        list(stream)
        _wait_until(lambda: value(scrape(port), "nnserve_requests_in_flight") == 0)

        with socket.create_connection(("127.0.0.1", live.server.http_port), timeout=30) as rest_call:
            rest_call.sendall(b"POST /v2/models/none/infer HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{")
            _wait_until(lambda: value(scrape(port), "nnserve_requests_in_flight") == 1)
            rest_call.sendall(b'"a": 1}  ')
            assert rest_call.recv(100).startswith(b"HTTP/1.1 ")
        _wait_until(lambda: value(scrape(port), "nnserve_requests_in_flight") == 0)


def _wait_until(condition, attempts=400):
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")
