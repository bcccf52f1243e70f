"""TrainStream and PredictStream on a real server: order, per-message errors, cancellation,
flow control, admission, and the metrics they count (the proto's "Streams" rules)."""

import queue
import threading

import grpc
import numpy as np
import pytest

from metrics_support import rpc, scrape, value
from service_support import classifier_spec, make_batch, pb, running_server, snapshot, to_array, to_tensor

from nnserve.model import Network
from nnserve.v1.models import spec_from_proto

BIDI = "BIDI_STREAM"


def _model(live, name="m", layers=(4, 8, 3)):
    spec = classifier_spec(layers, learning_rate=0.05, seed=3)
    live.stub.CreateModel(pb.CreateModelRequest(spec=spec, name=name), timeout=30)
    return Network(**spec_from_proto(spec))


def _train_request(model, x, y):
    return pb.TrainStepRequest(model=model, x=to_tensor(x), y=to_tensor(y))


def _batches(seed, count, n=8):
    rng = np.random.default_rng(seed)
    return [make_batch(rng, n, 4, 3) for _ in range(count)]


def test_train_stream_applies_each_step_in_order_and_survives_a_bad_message():
    """One response per request, in order, equal to the same steps in-process; a refused
    message gets its error, changes nothing, and the stream goes on; metrics count messages."""
    with running_server() as live:
        twin = _model(live)
        batches = _batches(0, 6)
        bad = (batches[2][0], np.array([0, 1, 7, 0, 0, 0, 0, 0]))  # class 7 of 3
        requests = [_train_request("m", x, y) for x, y in batches[:2]]
        requests += [_train_request("m", *bad), _train_request("no-such-model", *batches[2])]
        requests += [_train_request("m", x, y) for x, y in batches[2:]]
        responses = list(live.stub.TrainStream(iter(requests), timeout=30))

        assert [r.WhichOneof("result") for r in responses] == ["step"] * 2 + ["error"] * 2 + ["step"] * 4
        assert responses[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "class id 7" in responses[2].error.message
        assert responses[3].error.code == grpc.StatusCode.NOT_FOUND.value[0]
        steps = [r.step for r in responses if r.HasField("step")]
        for (x, y), step in zip(batches, steps):
            expected = twin.train_step(x, y)
            assert (step.loss, step.step, step.version) == (expected, expected.step, expected.version)
        state = live.stub.GetState(pb.GetStateRequest(model="m"), timeout=30).state
        for layer, (w, b) in zip(state.weights, twin.get_weights()):
            np.testing.assert_array_equal(to_array(layer.weights), w)
            np.testing.assert_array_equal(to_array(layer.biases), b)

        samples = scrape(live.server.metrics_port)
        labels = rpc("TrainStream", grpc_type=BIDI)
        assert value(samples, "grpc_server_msg_received_total", **labels) == 8
        assert value(samples, "grpc_server_msg_sent_total", **labels) == 8
        assert value(samples, "grpc_server_handled_total", **rpc("TrainStream", "OK", grpc_type=BIDI)) == 1
        assert value(samples, "nnserve_train_steps_total", model="m") == 6  # a named model's label


def test_predict_stream_answers_in_order_with_versions():
    with running_server() as live:
        twin = _model(live)
        xs = [np.random.default_rng(i).normal(size=(i + 1, 4)).astype(np.float32) for i in range(5)]
        requests = [pb.PredictRequest(model="m", x=to_tensor(x)) for x in xs]
        requests.insert(2, pb.PredictRequest(model="m", x=to_tensor(np.ones((2, 5), np.float32))))
        responses = list(live.stub.PredictStream(iter(requests), timeout=30))
        assert responses[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "expected (n_samples, 4)" in responses[2].error.message
        del responses[2]
        for x, response in zip(xs, responses, strict=True):
            np.testing.assert_array_equal(to_array(response.prediction.outputs), twin.predict(x))
            assert response.prediction.version == 0
            assert (response.prediction.merged_rows, response.prediction.merged_offset) == (len(x), 0)


def test_concurrent_streams_and_unary_calls_lose_and_reorder_no_step():
    """8 streams and unary TrainSteps on one model: every step applied once, each stream's
    steps in the order sent (versions strictly increasing per stream), the final step count
    the total."""
    streams, per_stream, unary = 8, 40, 40
    with running_server() as live:
        _model(live)
        x, y = _batches(1, 1)[0]
        results, errors = {}, []

        def stream(index):
            try:
                requests = (_train_request("m", x, y) for _ in range(per_stream))
                results[index] = [r.step for r in live.stub.TrainStream(requests, timeout=60)]
            except Exception as error:  # reported below, in the test's thread
                errors.append(error)

        def unary_calls():
            results["unary"] = [live.stub.TrainStep(_train_request("m", x, y), timeout=60)
                                for _ in range(unary)]

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
        threads.append(threading.Thread(target=unary_calls))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        versions = []
        for steps in results.values():
            own = [s.version for s in steps]
            assert own == sorted(own) and len(set(own)) == len(own)
            assert all(s.step == s.version for s in steps)
            versions += own
        total = streams * per_stream + unary
        assert sorted(versions) == list(range(1, total + 1))
        assert live.stub.GetModel(pb.GetModelRequest(model="m"), timeout=30).model.step == total


def test_cancelled_stream_applies_no_further_step(caplog):
    """A stream cancelled while the server waits for its next message applies nothing more,
    ends CANCELLED, and is no internal error in the logs."""
    with running_server() as live:
        _model(live)
        x, y = _batches(2, 1)[0]
        release = threading.Event()

        def requests():
            for _ in range(3):
                yield _train_request("m", x, y)
            release.wait(30)  # hold the stream open with three steps sent
            for _ in range(100):
                yield _train_request("m", x, y)

        call = live.stub.TrainStream(requests(), timeout=60)
        answered = [next(call) for _ in range(3)]
        call.cancel()
        release.set()
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        assert [r.step.step for r in answered] == [1, 2, 3]
        # The server has ended the stream (the handled counter says so) with three steps.
        # Its code label is CANCELLED, or OK when the request iterator ended before gRPC
        # reported the cancellation to the handler (the sync server does not say which).
        _wait_for(lambda: sum(value(scrape(live.server.metrics_port), "grpc_server_handled_total",
                                    **rpc("TrainStream", code, grpc_type=BIDI))
                              for code in ("CANCELLED", "OK")) == 1)
        assert live.stub.GetModel(pb.GetModelRequest(model="m"), timeout=30).model.step == 3
    assert not [r for r in caplog.records if getattr(r, "event", "") == "internal_error"]


def _wait_for(condition, attempts=300):
    event = threading.Event()
    for _ in range(attempts):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError("condition not reached")


def _settled(read, pause=0.5, rounds=60):
    """The value of read() once it has stopped changing for `pause` seconds."""
    event, last = threading.Event(), read()
    for _ in range(rounds):
        event.wait(pause)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"still changing: {last}")


def test_a_client_that_stops_reading_holds_the_server_back():
    """Flow control: a client that sends many 1 MiB requests with 1 MiB answers and reads
    none stalls the stream after a bounded number (HTTP/2 windows): the server computes a
    few, the client's iterator is not even pulled for the rest; reading again finishes the
    stream with every answer."""
    width, rows, sent = 1024, 256, 300  # 256 x 1024 float32 = 1 MiB each way
    with running_server(max_message_bytes=8 << 20) as live:
        spec = pb.ModelSpec(layers=[width, width], activations=[pb.ACTIVATION_IDENTITY],
                            loss=pb.LOSS_MSE, optimizer=pb.OPTIMIZER_SGD, init=pb.INIT_HE,
                            dtype=pb.DATA_TYPE_FLOAT32)
        live.stub.CreateModel(pb.CreateModelRequest(spec=spec, name="wide"), timeout=30)
        request = pb.PredictRequest(model="wide", x=to_tensor(np.ones((rows, width), np.float32)))
        pulled = []

        def requests():
            for index in range(sent):
                pulled.append(index)
                yield request

        call = live.stub.PredictStream(requests(), timeout=120)
        predicted = _settled(lambda: value(scrape(live.server.metrics_port),
                                           "nnserve_predict_rows_total", model="wide"))
        answered = predicted // rows
        assert 1 <= answered < 50, answered
        assert len(pulled) < 100, len(pulled)
        assert sum(1 for _ in call) == sent


def test_stream_limit_and_admission_count_open_streams():
    """--max-streams refuses the stream beyond it (naming the flag) until one closes;
    under --max-concurrent-rpcs an open stream is an admitted call."""
    with running_server(max_streams=2, max_concurrent_rpcs=3) as live:
        _model(live)
        x = np.ones((1, 4), np.float32)
        gates = [queue.Queue() for _ in range(2)]

        def held(gate):
            while (item := gate.get()) is not None:
                yield item

        calls = [live.stub.PredictStream(held(gate), timeout=60) for gate in gates]
        for gate, call in zip(gates, calls):
            gate.put(pb.PredictRequest(model="m", x=to_tensor(x)))
            assert next(call).HasField("prediction")
        with pytest.raises(grpc.RpcError) as caught:
            list(live.stub.PredictStream(iter([pb.PredictRequest(model="m", x=to_tensor(x))]), timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams" in caught.value.details() and "--max-streams" in caught.value.details()
        # Two streams hold two of three admissions: one unary call still fits.
        live.stub.Predict(pb.PredictRequest(model="m", x=to_tensor(x)), timeout=30)

        gates[0].put(None)
        assert list(calls[0]) == []
        call = live.stub.PredictStream(iter([pb.PredictRequest(model="m", x=to_tensor(x))]), timeout=30)
        assert [r.WhichOneof("result") for r in call] == ["prediction"]
        gates[1].put(None)
        assert list(calls[1]) == []


def test_an_oversized_stream_message_ends_the_stream_and_changes_nothing():
    with running_server(max_message_bytes=64 << 10) as live:
        _model(live)
        before = snapshot(live.stub, "m")
        x, y = _batches(3, 1, n=8)[0]
        big = np.ones((4096, 4), np.float32)  # 64 KiB of x alone
        requests = [_train_request("m", x, y), _train_request("m", big, np.zeros(4096, np.int64))]
        call = live.stub.TrainStream(iter(requests), timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        after = snapshot(live.stub, "m")
        assert after[0].step in (before[0].step, before[0].step + 1)  # the first may have run
        live.stub.GetModel(pb.GetModelRequest(model="m"), timeout=30)  # still serving
