"""Dynamic batching (--batch-max-rows): concurrent Predicts merged into one kernel call, each
caller getting exactly its rows; a bad request refused alone; the metrics that count it."""

import threading

import grpc
import numpy as np

from metrics_support import scrape, value
from service_support import classifier_spec, pb, running_server, to_array, to_tensor

from nnserve.model import Network
from nnserve.v1.models import spec_from_proto

CALLERS = 6
ROWS = 3


def _model(live):
    spec = classifier_spec((4, 16, 3), seed=5)
    live.stub.CreateModel(pb.CreateModelRequest(spec=spec, name="m"), timeout=30)
    return Network(**spec_from_proto(spec))


def _together(live, xs, *, stream_callers=()):
    """Send one Predict per x at once (some over PredictStream); return {index: response or
    RpcError}."""
    start = threading.Barrier(len(xs))
    results = {}

    def call(index, x):
        request = pb.PredictRequest(model="m", x=to_tensor(x))
        start.wait(30)
        try:
            if index in stream_callers:
                (response,) = live.stub.PredictStream(iter([request]), timeout=30)
                results[index] = response.prediction if response.HasField("prediction") else response.error
            else:
                results[index] = live.stub.Predict(request, timeout=30)
        except grpc.RpcError as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(i, x)) for i, x in enumerate(xs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _check_merged(twin, xs, results):
    """Each caller's outputs equal the in-process outputs of its rows at its offset in a
    batch of the merged size (the other rows' values do not matter to a row's outputs)."""
    for index, response in results.items():
        x = xs[index]
        batch = np.zeros((response.merged_rows, x.shape[1]), x.dtype)
        batch[response.merged_offset:response.merged_offset + len(x)] = x
        expected = twin.predict(batch)[response.merged_offset:response.merged_offset + len(x)]
        np.testing.assert_array_equal(to_array(response.outputs), expected)
        assert response.version == twin.version


def test_concurrent_predicts_are_merged_and_each_gets_its_rows():
    """With room for all six callers and a long wait for company, the six requests (unary and
    stream messages) become one kernel call of 18 rows, each caller its own 3 rows."""
    xs = [np.random.default_rng(i).normal(size=(ROWS, 4)).astype(np.float32) for i in range(CALLERS)]
    with running_server(batch_max_rows=CALLERS * ROWS, batch_max_delay_us=1_000_000) as live:
        twin = _model(live)
        results = _together(live, xs, stream_callers={1, 4})
        assert {r.merged_rows for r in results.values()} == {CALLERS * ROWS}
        assert sorted(r.merged_offset for r in results.values()) == list(range(0, CALLERS * ROWS, ROWS))
        _check_merged(twin, xs, results)

        samples = scrape(live.server.metrics_port)
        assert value(samples, "nnserve_predict_merged_rows_count") == 1
        assert value(samples, "nnserve_predict_merged_rows_sum") == CALLERS * ROWS
        assert value(samples, "nnserve_predict_queue_seconds_count") == CALLERS
        assert value(samples, "nnserve_predict_rows_total", model="m") == CALLERS * ROWS


def test_a_bad_request_is_refused_alone():
    """One caller's NaN (or wrong width) never reaches the merged call: it gets
    INVALID_ARGUMENT, the others their outputs, merged without it."""
    xs = [np.random.default_rng(10 + i).normal(size=(ROWS, 4)).astype(np.float32) for i in range(CALLERS)]
    xs[2][1, 3] = np.nan
    xs[4] = np.ones((ROWS, 5), np.float32)
    good = CALLERS - 2
    with running_server(batch_max_rows=good * ROWS, batch_max_delay_us=1_000_000) as live:
        twin = _model(live)
        results = _together(live, xs, stream_callers={3, 4})
        assert results[2].code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "non-finite" in results[2].details()
        assert results[4].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]  # a stream message's error
        del results[2], results[4]
        assert {r.merged_rows for r in results.values()} == {good * ROWS}
        _check_merged(twin, xs, results)


def test_merging_follows_versions_and_row_limits():
    """Under training, every merged call computes on one version (each response's version is
    the twin's at some step, and its rows equal that version's outputs); no merged call
    exceeds --batch-max-rows; requests larger than it still run, alone."""
    max_rows = 7
    with running_server(batch_max_rows=max_rows) as live:
        spec = classifier_spec((4, 16, 3), seed=5, learning_rate=0.1)
        live.stub.CreateModel(pb.CreateModelRequest(spec=spec, name="m"), timeout=30)
        rng = np.random.default_rng(7)
        x_train = rng.normal(size=(8, 4)).astype(np.float32)
        y_train = rng.integers(0, 3, 8)
        twins = [Network(**spec_from_proto(spec))]  # twins[v]: the weights of version v
        steps = 20
        for _ in range(steps):
            twin = Network.from_state(twins[-1].get_state())
            twin.train_step(x_train, y_train)
            twins.append(twin)
        responses, stop = [], threading.Event()
        xs = [rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 2, 3, 9)]

        def predicting(x):
            while not stop.is_set():
                responses.append((x, live.stub.Predict(pb.PredictRequest(model="m", x=to_tensor(x)), timeout=30)))

        threads = [threading.Thread(target=predicting, args=(x,)) for x in xs for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in range(steps):
            live.stub.TrainStep(pb.TrainStepRequest(model="m", x=to_tensor(x_train), y=to_tensor(y_train)),
                                timeout=30)
        stop.set()
        for thread in threads:
            thread.join(60)
        for x, response in responses:
            twin = twins[response.version]
            if len(x) > max_rows:
                assert (response.merged_rows, response.merged_offset) == (len(x), 0)
            else:
                assert response.merged_rows <= max_rows
            _check_merged(twin, {0: x}, {0: response})
