"""train_stream, predict_stream, fit(stream=True) and a large predict over one PredictStream,
sync and async, against real servers on 127.0.0.1: bit-exact results, per-message errors,
the window, cancellation and deadlines.

Most tests run once with Client and once with AsyncClient (`kind`). Server-side effects are
read from the server itself: the model's step count, and its gRPC metrics (how many
streams started and ended, how many messages they carried).
"""

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

from client_support import batches, live_server, same_arrays
from metrics_support import rpc, scrape, value
from nnserve.clients import AsyncClient, Client, NNServeError
from nnserve.model import Network

SPEC = dict(layers=[5, 12, 4], activations=["tanh", "softmax"], loss="cross_entropy",
            optimizer="adam", learning_rate=0.01, seed=7)
KINDS = ["sync", "async"]
MAX_ROWS = 64
WINDOW = 4


@pytest.fixture(scope="module")
def live():
    """A server taking at most MAX_ROWS rows per request, its /metrics on a free port."""
    with live_server(max_rows_per_request=MAX_ROWS) as running:
        yield running


@pytest.fixture(scope="module")
def client(live):
    with Client(live.target) as client:
        yield client


@pytest.fixture
def model(client):
    """A fresh remote model of SPEC, deleted after the test."""
    created = client.create_model(**SPEC)
    yield created
    with contextlib.suppress(NNServeError):
        created.delete()


def _data(count, n_samples=8, dtype=np.float32, seed=1):
    return batches(seed, count, n_samples, SPEC["layers"][0], SPEC["layers"][-1], dtype)


def _run_stream(kind, target, model_id, method, items, **options):
    """(results, error): what a model's `method` stream ("train_stream" or "predict_stream")
    yielded, through a fresh Client or AsyncClient, and the exception that ended it (None
    if none)."""
    async def scenario():
        async with AsyncClient(target) as aclient:
            remote = await aclient.get_model(model_id)
            results = []
            try:
                async for result in getattr(remote, method)(items, **options):
                    results.append(result)
            except Exception as error:
                return results, error
            return results, None

    if kind == "async":
        return asyncio.run(scenario())
    with Client(target) as sync_client:
        remote = sync_client.get_model(model_id)
        results = []
        try:
            for result in getattr(remote, method)(items, **options):
                results.append(result)
        except Exception as error:
            return results, error
        return results, None


def _same_weights(left, right):
    return all(same_arrays(w1, w2) and same_arrays(b1, b2)
               for (w1, b1), (w2, b2) in zip(left, right))


def _ended(live, method):
    """Counter of status codes of the server's finished streams of `method`."""
    return Counter({dict(labels)["grpc_code"]: count
                    for (name, labels), count in scrape(live.server.metrics_port).items()
                    if name == "grpc_server_handled_total" and count
                    and ("grpc_method", method) in labels})


def _counts(live, method, grpc_type):
    """(calls started, messages received) of a method, as the server counted them."""
    samples = scrape(live.server.metrics_port)
    labels = rpc(method, grpc_type=grpc_type)
    return (value(samples, "grpc_server_started_total", **labels),
            value(samples, "grpc_server_msg_received_total", **labels))


async def _aenumerate(iterator):
    count = 0
    async for item in iterator:
        count += 1
        yield count, item


def _wait_for(condition, what):
    """Poll until `condition()` holds (the server finishes a stream on its own threads)."""
    give_up = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < give_up, f"still waiting for {what}"
        time.sleep(0.01)


# -- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_train_stream_equals_in_process_train_steps_bit_for_bit(live, client, kind, dtype):
    """25 batches (the last five smaller) over one TrainStream give the losses, steps and
    versions of a twin Network's train_step calls, bit for bit, and leave the same weights;
    the async client takes an async generator."""
    spec = {**SPEC, "dtype": dtype}
    model = client.create_model(**spec)
    network = Network(**spec)
    data = _data(20, 8, dtype) + _data(5, 3, dtype, seed=2)

    async def produce():
        for batch in data:
            yield batch

    try:
        losses, error = _run_stream(kind, live.target, model.id, "train_stream",
                                    produce() if kind == "async" else iter(data), window=WINDOW)
        assert error is None
        expected = [network.train_step(x, y) for x, y in data]
        assert [float(loss) for loss in losses] == [float(loss) for loss in expected]
        assert [(loss.step, loss.version) for loss in losses] == [(n, n) for n in range(1, 26)]
        assert (model.refresh().step, model.version) == (network.step, network.version) == (25, 25)
        assert _same_weights(model.get_weights(), network.get_weights())
    finally:
        model.delete()


@pytest.mark.parametrize("kind", KINDS)
def test_predict_stream_equals_in_process_predict(live, client, model, kind):
    """Inputs of 1 to 64 rows over one PredictStream (a plain list for the async client too)
    give the twin Network's predictions bit for bit, each with the version that computed it."""
    for x, y in _data(3):
        model.train_step(x, y)
    network = Network(**SPEC)
    network.set_state(model.get_state())
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(n, 5)).astype(np.float32) for n in (1, 7, 64, 2, 33)]

    outputs, error = _run_stream(kind, live.target, model.id, "predict_stream", xs, window=2)
    assert error is None and len(outputs) == len(xs)
    for got, x in zip(outputs, xs):
        assert got.shape == (len(x), 4) and got.dtype == np.float32
        assert same_arrays(got, network.predict(x)) and got.version == 3


# -- refusals ---------------------------------------------------------------------------------


BAD_BATCHES = {
    "class id out of range": (lambda x, y: (x, np.full_like(y, 7)), "y: got class id 7"),
    "NaN input": (lambda x, y: (np.full_like(x, np.nan), y), "x: got a non-finite value nan"),
}


@pytest.mark.parametrize("bad", BAD_BATCHES, ids=list(BAD_BATCHES))
@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_batch_raises_at_its_position_with_the_steps_applied_after_it(
        live, client, model, kind, bad):
    """Batch 6 of 12 refused: the 5 losses before it come out, then NNServeError
    INVALID_ARGUMENT with the server's message. No batch is taken after the refusal is
    read, and those sent before it (at most window - 1) were applied: applied_after holds
    exactly their steps, the model's step count is the number of good batches sent, and
    its weights are a twin's trained on exactly those batches."""
    make_bad, message = BAD_BATCHES[bad]
    data = _data(12)
    data[5] = make_bad(*data[5])
    pulled = []

    def producer():
        for batch in data:
            pulled.append(batch)
            yield batch

    losses, error = _run_stream(kind, live.target, model.id, "train_stream", producer(),
                                window=WINDOW)
    assert len(losses) == 5 and isinstance(error, NNServeError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.method == "TrainStream"
    assert message in error.message
    sent = len(pulled)
    assert 6 <= sent <= 6 + WINDOW - 1
    assert [loss.step for loss in error.applied_after] == list(range(6, sent))
    assert model.refresh().step == sent - 1

    network = Network(**SPEC)
    applied = data[:5] + data[6:sent]
    expected = [network.train_step(x, y) for x, y in applied]
    assert [float(loss) for loss in losses + error.applied_after] == [float(loss) for loss in expected]
    assert _same_weights(model.get_weights(), network.get_weights())


@pytest.mark.parametrize("kind", KINDS)
def test_an_item_that_cannot_be_sent_raises_at_its_position(live, client, model, kind):
    """An item that is no (x, y) pair is refused by the client (INVALID_ARGUMENT, nothing sent
    after it, applied_after empty), and an exception of the caller's iterable comes out as
    it is; either way after the losses of the 3 batches before it, which are all the model
    trained on."""
    data = _data(6)
    not_a_pair = data[:3] + [data[3][0]] + data[4:]
    losses, error = _run_stream(kind, live.target, model.id, "train_stream", not_a_pair)
    assert len(losses) == 3 and isinstance(error, NNServeError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.applied_after == ()
    assert "expected (x, y) pairs (refused by the client before sending)" in error.message
    assert model.refresh().step == 3

    def failing():
        yield from data[:3]
        raise RuntimeError("the data source failed")

    losses, error = _run_stream(kind, live.target, model.id, "train_stream", failing())
    assert len(losses) == 3 and type(error) is RuntimeError
    assert str(error) == "the data source failed" and model.refresh().step == 6


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_input_ends_a_predict_stream_at_its_position(live, model, kind):
    """An input of the wrong width, third of five: two outputs, then INVALID_ARGUMENT."""
    xs = [x for x, _ in _data(5)]
    xs[2] = np.zeros((4, 3), np.float32)
    outputs, error = _run_stream(kind, live.target, model.id, "predict_stream", xs)
    assert len(outputs) == 2 and isinstance(error, NNServeError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.method == "PredictStream"
    assert "x: got shape (4, 3), expected (n_samples, 5)" in error.message


# -- flow control, cancellation, deadlines ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_window_bounds_the_batches_taken_ahead_of_the_losses_read(live, model, kind):
    """Nothing is taken from the batches before the first loss is asked for; whenever the
    caller holds its n-th loss, at most n + window batches have been taken (gRPC would
    buffer whatever it is given: the bound is the SDK's), and the stream does fill its
    window: the producer reaches n + window while the caller holds loss n."""
    data = _data(20)
    pulled = []

    def producer():
        for batch in data:
            pulled.append(batch)
            yield batch

    def ahead_reached(consumed):
        return len(pulled) >= min(consumed + WINDOW, len(data))

    if kind == "sync":
        losses = model.train_stream(producer(), window=WINDOW)
        assert pulled == []
        for consumed, _ in enumerate(losses, 1):
            assert len(pulled) <= consumed + WINDOW
            _wait_for(lambda: ahead_reached(consumed), f"{consumed + WINDOW} batches taken")
            assert len(pulled) <= consumed + WINDOW
    else:
        async def scenario():
            async with AsyncClient(live.target) as aclient:
                remote = await aclient.get_model(model.id)
                losses = remote.train_stream(producer(), window=WINDOW)
                await asyncio.sleep(0)
                assert pulled == []
                consumed = 0
                async for _ in losses:
                    consumed += 1
                    assert len(pulled) <= consumed + WINDOW
                    for _ in range(10_000):
                        if ahead_reached(consumed):
                            break
                        await asyncio.sleep(0.001)
                    assert ahead_reached(consumed) and len(pulled) <= consumed + WINDOW
                return consumed

        assert asyncio.run(scenario()) == len(data)
    assert model.refresh().step == len(data)


@pytest.mark.parametrize("kind", KINDS)
def test_leaving_early_cancels_the_stream(live, client, model, kind):
    """Breaking out after 5 losses of an endless stream cancels it: the server ends the
    stream CANCELLED, at most 5 + window batches were ever taken from the producer, and the
    model applied at least the 5 steps read and no batch beyond those taken (counted once
    the server's stream has ended, so no step can follow)."""
    pulled = []

    def endless():
        for batch in itertools.cycle(_data(3)):
            pulled.append(batch)
            yield batch

    ended = _ended(live, "TrainStream")
    if kind == "sync":
        for consumed, _ in enumerate(model.train_stream(endless(), window=WINDOW), 1):
            if consumed == 5:
                break
    else:
        async def scenario():
            async with AsyncClient(live.target) as aclient:
                remote = await aclient.get_model(model.id)
                async with contextlib.aclosing(remote.train_stream(endless(), window=WINDOW)) as losses:
                    async for consumed, _ in _aenumerate(losses):
                        if consumed == 5:
                            break

        asyncio.run(scenario())
    _wait_for(lambda: _ended(live, "TrainStream") != ended, "the server to end the stream")
    assert _ended(live, "TrainStream") - ended == Counter({"CANCELLED": 1})
    assert 5 <= model.refresh().step <= len(pulled) <= 5 + WINDOW


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_has_the_deadline_it_is_given(live, model, kind):
    """timeout=0.3 on a stream whose producer stalls: NNServeError DEADLINE_EXCEEDED after the
    losses that came, and the model kept the steps applied before."""
    data = _data(2)
    resume = threading.Event()

    def stalling():
        yield data[0]
        resume.wait(30)
        yield data[1]

    async def astalling():
        yield data[0]
        await asyncio.sleep(30)
        yield data[1]

    try:
        losses, error = _run_stream(kind, live.target, model.id, "train_stream",
                                    stalling() if kind == "sync" else astalling(), timeout=0.3)
    finally:
        resume.set()
    assert len(losses) == 1 and isinstance(error, NNServeError)
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED and error.method == "TrainStream"
    assert model.refresh().step == 1


def test_a_stream_outlives_the_clients_per_call_timeout(live, model):
    """A client whose calls have a 0.2 s deadline keeps a stream open longer (streams have
    none unless given one): a producer pausing 0.5 s between batches trains all three."""
    def slow():
        for index, batch in enumerate(_data(3)):
            if index:
                time.sleep(0.5)
            yield batch

    with Client(live.target, timeout=0.2) as hasty:
        losses = list(hasty.get_model(model.id).train_stream(slow()))
    assert [loss.step for loss in losses] == [1, 2, 3]


def test_a_stream_refused_as_a_whole_raises_like_a_unary_call():
    """Beyond the server's --max-streams the stream itself fails: RESOURCE_EXHAUSTED naming
    the flag, as NNServeError with the stream's method; the open stream is unaffected."""
    with live_server(max_streams=1) as narrow, Client(narrow.target) as narrow_client:
        remote = narrow_client.create_model(**SPEC)
        first = remote.train_stream(itertools.cycle(_data(2)))
        next(first)
        second, error = _run_stream("sync", narrow.target, remote.id, "predict_stream",
                                    [np.zeros((1, 5), np.float32)])
        assert second == [] and isinstance(error, NNServeError)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.method == "PredictStream"
        assert "max_streams" in error.message
        assert next(first).step == 2
        first.close()


def test_window_must_be_a_positive_integer(model):
    """window 0, 2.5 or True is refused with ValueError when the stream is asked for."""
    for window in (0, 2.5, True):
        with pytest.raises(ValueError, match="window: got"):
            model.train_stream([], window=window)
        with pytest.raises(ValueError, match="window: got"):
            model.predict_stream([], window=window)


# -- predict of a large input -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_large_predict_goes_over_one_predict_stream(live, model, kind):
    """1000 rows on a server taking 64 per request, batch_size=64: one PredictStream of 16
    messages and no unary Predict, as the server counted them; the outputs are the twin
    Network's chunk by chunk, bit for bit, with the model's version."""
    model.train_step(*_data(1)[0])
    network = Network(**SPEC)
    network.set_state(model.get_state())
    x = np.random.default_rng(4).normal(size=(1000, 5)).astype(np.float32)
    before = _counts(live, "PredictStream", "BIDI_STREAM"), _counts(live, "Predict", "UNARY")

    if kind == "sync":
        outputs = model.predict(x, batch_size=MAX_ROWS)
    else:
        async def scenario():
            async with AsyncClient(live.target) as aclient:
                return await (await aclient.get_model(model.id)).predict(x, batch_size=MAX_ROWS)

        outputs = asyncio.run(scenario())
    after = _counts(live, "PredictStream", "BIDI_STREAM"), _counts(live, "Predict", "UNARY")
    assert after[0][0] - before[0][0] == 1 and after[0][1] - before[0][1] == 16
    assert after[1] == before[1]
    expected = np.concatenate([network.predict(x[start:start + MAX_ROWS])
                               for start in range(0, 1000, MAX_ROWS)])
    assert same_arrays(outputs, expected) and outputs.version == 1


# -- fit(stream=True) -----------------------------------------------------------------------------


@pytest.mark.parametrize("validate", [False, True], ids=["no-validation", "validation"])
@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffle", "in-order"])
@pytest.mark.parametrize("kind", KINDS)
def test_streamed_fit_equals_network_fit_bit_for_bit(live, client, kind, shuffle, validate):
    """fit(stream=True) gives Network.fit's history, weights, step and version bit for bit
    (45 rows in batches of 8: the last one smaller), over one TrainStream for the whole fit,
    or one per epoch with validation; no dataset is uploaded and no job created."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(45, 5)).astype(np.float32)
    y = rng.integers(0, 4, size=45)
    options = dict(epochs=3, batch_size=8, shuffle=shuffle, seed=5,
                   validation_data=(x[:9], y[:9]) if validate else None)
    network = Network(**SPEC)
    model = client.create_model(**SPEC)
    before = _counts(live, "TrainStream", "BIDI_STREAM"), _counts(live, "UploadDataset", "CLIENT_STREAM")
    ended = _ended(live, "TrainStream")
    try:
        if kind == "sync":
            history = model.fit(x, y, stream=True, **options)
            seen = (model.step, model.version)
        else:
            async def scenario():
                async with AsyncClient(live.target) as aclient:
                    remote = await aclient.get_model(model.id)
                    return await remote.fit(x, y, stream=True, **options), (remote.step, remote.version)

            history, seen = asyncio.run(scenario())
        assert history == network.fit(x, y, **options)
        assert set(history) == ({"loss", "val_loss", "val_accuracy"} if validate else {"loss"})
        assert seen == (network.step, network.version) == (18, 18)
        assert _same_weights(model.get_weights(), network.get_weights())
        after = _counts(live, "TrainStream", "BIDI_STREAM"), _counts(live, "UploadDataset", "CLIENT_STREAM")
        streams = 3 if validate else 1
        assert after[0][0] - before[0][0] == streams
        assert after[0][1] - before[0][1] == 18 and after[1] == before[1]
        # Every stream was read to its end, none cancelled.
        assert _ended(live, "TrainStream") - ended == Counter({"OK": streams})
    finally:
        model.delete()


def test_streamed_fit_refuses_what_it_cannot_stream_before_any_call(client, model):
    """A RemoteDataset is TypeError with stream=True (a job trains on it); bad rows or batch
    size are ValueError; nothing is trained."""
    x, y = _data(1, 10)[0]
    dataset = client.upload_dataset(x, y)
    try:
        with pytest.raises(TypeError, match="RemoteDataset with stream=True"):
            model.fit(dataset, epochs=1, batch_size=2, stream=True)
    finally:
        client.delete_dataset(dataset)
    with pytest.raises(ValueError, match="expected 10"):
        model.fit(x, y[:9], epochs=1, batch_size=2, stream=True)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, epochs=1, batch_size=0, stream=True)
    assert model.refresh().step == 0


def test_streamed_fit_shows_the_progress_bar_of_the_fit_loop(model, capfd):
    """progress=True draws fit_plan's bar (one tick per step) on stderr; by default, without
    a terminal, nothing is printed."""
    x, y = _data(1, 12)[0]
    model.fit(x, y, epochs=2, batch_size=4, stream=True)
    assert capfd.readouterr() == ("", "")
    model.fit(x, y, epochs=2, batch_size=4, stream=True, progress=True)
    assert "6/6" in capfd.readouterr().err
