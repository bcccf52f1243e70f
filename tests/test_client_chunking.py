"""predict and evaluate of more rows than one call carries: split into chunks, sync and async.

Real servers on 127.0.0.1, real gRPC. A predict's chunks go over one PredictStream, an
evaluate's as one unary call each. The clients below are Client / AsyncClient subclasses
that record each Predict/Evaluate call and each PredictStream message as (method, rows),
count the streams they open, and may run a hook before a call or message (to train the
model between two chunks at a chosen point); then they make the real call.
"""

import asyncio
import threading

import grpc
import numpy as np
import pytest

from client_support import live_server, same_arrays
from nnserve.clients import AsyncClient, Client, NNServeError
from nnserve.clients.errors import MixedVersionsError
from nnserve.clients.chunking import MAX_ROWS_PER_CALL, MAX_VERSION_ROUNDS, MESSAGE_HEADROOM
from nnserve.model import Network

SMALL_MAX_ROWS = 64
READS = ("Predict", "Evaluate")
RECORDED = {"Predict": "PredictStream", "Evaluate": "Evaluate"}  # how a chunk travels


class RecordingClient(Client):
    """A Client that records (method, rows) of each Predict/Evaluate call and PredictStream
    message, counts its streams, and can run a hook first.

    before(method, number): called before the number-th (1-based) recorded call or message
    is sent. A stream message then waits for the reply to the one before it, so that the
    hook falls between the two as it did between two calls (the stream would otherwise
    have sent it ahead).
    """

    def __init__(self, *args, before=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        self.streams = 0
        self.before = before
        self._replied = threading.Condition()
        self._replies = 0

    def _record(self, method, request):
        self.calls.append((method, request.x.shape[0]))
        if self.before is not None:
            number = len(self.calls)
            with self._replied:
                self._replied.wait_for(lambda: self._replies >= number - 1, timeout=30)
            self.before(method, number)

    def _reply(self):
        with self._replied:
            self._replies += 1
            self._replied.notify_all()

    def _call(self, method, request, timeout=None, route=None):
        if method in READS:
            self._record(method, request)
        reply = super()._call(method, request, timeout, route)
        if method in READS:
            self._reply()
        return reply

    def _bidi(self, method, requests, timeout=None, route=""):
        self.streams += 1

        def recorded():
            for request in requests:
                self._record(method, request)
                yield request

        return _RecordedCall(super()._bidi(method, recorded(), timeout, route), self._reply)


class _RecordedCall:
    """A stream's call whose replies are counted as they are read."""

    def __init__(self, call, on_reply):
        self._call = call
        self._on_reply = on_reply

    def __iter__(self):
        for reply in self._call:
            self._on_reply()
            yield reply

    async def __aiter__(self):
        async for reply in self._call:
            self._on_reply()
            yield reply

    def cancel(self):
        return self._call.cancel()


class RecordingAsyncClient(AsyncClient):
    """RecordingClient's twin for AsyncClient (its hook, a sync function, runs on the loop)."""

    def __init__(self, *args, before=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        self.streams = 0
        self.before = before
        self._replies = 0
        self._replied = asyncio.Event()  # set at each reply, for the one hook waiting

    async def _record(self, method, request):
        self.calls.append((method, request.x.shape[0]))
        if self.before is not None:
            number = len(self.calls)
            while self._replies < number - 1:
                self._replied.clear()
                await self._replied.wait()
            self.before(method, number)

    def _reply(self):
        self._replies += 1
        self._replied.set()

    async def _call(self, method, request, timeout=None, route=None):
        if method in READS:
            await self._record(method, request)
        reply = await super()._call(method, request, timeout, route)
        if method in READS:
            self._reply()
        return reply

    def _bidi(self, method, requests, timeout=None, route=""):
        self.streams += 1

        async def recorded():
            async for request in requests:
                await self._record(method, request)
                yield request

        return _RecordedCall(super()._bidi(method, recorded(), timeout, route), self._reply)


@pytest.fixture(scope="module")
def small():
    """A server taking at most SMALL_MAX_ROWS rows per request."""
    with live_server(max_rows_per_request=SMALL_MAX_ROWS) as running:
        yield running


@pytest.fixture(scope="module")
def default():
    """A server with the default settings (max_rows_per_request 16384, 64 MiB messages)."""
    with live_server() as running:
        yield running


@pytest.fixture
def models():
    """Delete every model appended to the list at the end of the test."""
    created = []
    yield created
    for model in created:
        try:
            model.delete()
        except NNServeError:
            pass


def _data(seed, n_samples, n_in, n_classes, dtype):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, n_in)).astype(dtype)
    return x, rng.integers(0, n_classes, size=n_samples).astype(np.int64)


def _twin(model):
    """An in-process Network with the remote model's current state (bit for bit)."""
    network = Network(**model.spec)
    network.set_state(model.get_state())
    return network


def _per_chunk(network, x, sizes):
    """The network's predictions of x computed chunk by chunk, concatenated."""
    starts = np.cumsum([0, *sizes])
    return np.concatenate([network.predict(x[a:b]) for a, b in zip(starts[:-1], starts[1:])])


def _chunks(n_samples, rows):
    return [min(rows, n_samples - start) for start in range(0, n_samples, rows)]


def _trained_classifier(client, models, layers, dtype, steps=3, **extra):
    """A relu/softmax classifier trained a few steps, so its weights are not the initial ones."""
    model = client.create_model(layers, ["tanh"] * (len(layers) - 2) + ["softmax"], "cross_entropy",
                                optimizer="adam", learning_rate=0.01, seed=3, dtype=dtype, **extra)
    models.append(model)
    for step in range(steps):
        model.train_step(*_data(100 + step, 32, layers[0], layers[-1], dtype))
    return model


# -- splitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_explicit_batch_size_predicts_more_rows_than_the_server_takes(small, models, dtype):
    """1000 rows on a server taking 64 per request: batch_size=64 sends 16 chunks over one
    PredictStream whose outputs, concatenated, are the in-process network's chunk by chunk,
    bit for bit. The automatic size (16384) does not know this server's limit: one call,
    refused."""
    with RecordingClient(small.target) as client:
        model = _trained_classifier(client, models, [5, 7, 3], dtype)
        x, _ = _data(1, 1000, 5, 3, dtype)
        network = _twin(model)

        outputs = model.predict(x, batch_size=SMALL_MAX_ROWS)
        sizes = _chunks(1000, SMALL_MAX_ROWS)
        assert client.calls == [("PredictStream", n) for n in sizes] and sizes[-1] == 40
        assert client.streams == 1
        assert outputs.shape == (1000, 3) and outputs.dtype == np.dtype(dtype)
        assert same_arrays(outputs, _per_chunk(network, x, sizes))

        client.calls.clear()
        assert same_arrays(model.predict(x, batch_size=np.int64(50)), _per_chunk(network, x, [50] * 20))
        assert client.calls == [("PredictStream", 50)] * 20 and client.streams == 2

        with pytest.raises(NNServeError) as caught:
            model.predict(x)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_rows_per_request" in caught.value.message


def test_one_call_when_x_fits_and_chunks_equal_one_call_predicts(small, models):
    """x that fits goes whole in one Predict call (batch_size None, equal or larger): the
    Network's predict of x. Split, each chunk's outputs are those of one remote predict of
    that chunk's rows."""
    with RecordingClient(small.target) as client:
        model = _trained_classifier(client, models, [5, 7, 3], "float32")
        x, _ = _data(2, 40, 5, 3, "float32")
        whole = _twin(model).predict(x)
        for batch_size in (None, 40, 1000):
            client.calls.clear()
            assert same_arrays(model.predict(x, batch_size=batch_size), whole)
            assert client.calls == [("Predict", 40)]

        client.calls.clear()
        chunked = model.predict(x, batch_size=16)
        assert client.calls == [("PredictStream", 16), ("PredictStream", 16), ("PredictStream", 8)]
        assert client.streams == 1
        one_call_each = [model.predict(x[start:start + 16]) for start in (0, 16, 32)]
        assert same_arrays(chunked, np.concatenate(one_call_each))


def test_automatic_split_above_the_default_row_limit(default, models):
    """On a default server, 40000 rows split by themselves into 16384-row chunks (one
    PredictStream for predict, unary calls for evaluate); one call of them all is refused."""
    n_samples = 40_000
    with RecordingClient(default.target) as client:
        model = client.create_model([4, 3], ["softmax"], "cross_entropy", seed=1)
        models.append(model)
        model.train_step(*_data(3, 16, 4, 3, "float32"))
        x, y = _data(4, n_samples, 4, 3, "float32")
        network = _twin(model)

        outputs = model.predict(x)
        sizes = [MAX_ROWS_PER_CALL, MAX_ROWS_PER_CALL, n_samples - 2 * MAX_ROWS_PER_CALL]
        assert client.calls == [("PredictStream", n) for n in sizes] and client.streams == 1
        assert same_arrays(outputs, _per_chunk(network, x, sizes))

        client.calls.clear()
        metrics = model.evaluate(x, y)
        assert client.calls == [("Evaluate", n) for n in sizes]
        expected = network.evaluate(x, y)
        assert metrics["accuracy"] == expected["accuracy"]
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)

        with pytest.raises(NNServeError) as caught:
            model.predict(x, batch_size=n_samples)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("layers, dtype, expected_rows", [
    # requests of 512 float32 inputs: 2048 bytes a row
    ([512, 2], "float32", ((1 << 20) - MESSAGE_HEADROOM) // 2048),
    # replies of 600 float64 outputs: 4800 bytes a row
    ([2, 600], "float64", ((1 << 20) - MESSAGE_HEADROOM) // 4800),
], ids=["request-bound", "reply-bound"])
def test_automatic_split_within_the_clients_message_size(default, models, layers, dtype,
                                                         expected_rows):
    """With max_message_bytes=1 MiB the automatic size keeps each request and reply within it;
    the whole x in one call exceeds it."""
    with RecordingClient(default.target, max_message_bytes=1 << 20) as client:
        model = client.create_model(layers, ["sigmoid"], "mse", seed=2, dtype=dtype)
        models.append(model)
        x = np.random.default_rng(5).normal(size=(1100, layers[0])).astype(dtype)
        outputs = model.predict(x)
        sizes = _chunks(1100, expected_rows)
        assert len(sizes) >= 3 and client.calls == [("PredictStream", n) for n in sizes]
        assert same_arrays(outputs, _per_chunk(_twin(model), x, sizes))
        with pytest.raises(NNServeError) as caught:
            model.predict(x, batch_size=1100)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- evaluate ------------------------------------------------------------------------------------


EVALUATE_CASES = {
    "cross-entropy-ids": (dict(layers=[6, 9, 4], activations=["relu", "softmax"], loss="cross_entropy"),
                          lambda rng, n: rng.integers(0, 4, size=n).astype(np.int64)),
    "cross-entropy-rows": (dict(layers=[6, 9, 4], activations=["relu", "softmax"], loss="cross_entropy"),
                           lambda rng, n: rng.dirichlet(np.ones(4), size=n)),
    "binary-2-outputs": (dict(layers=[6, 9, 2], activations=["tanh", "sigmoid"],
                              loss="binary_cross_entropy"),
                         lambda rng, n: (rng.random((n, 2)) > 0.5).astype(np.float64)),
    "mse": (dict(layers=[6, 9, 3], activations=["tanh", "identity"], loss="mse"),
            lambda rng, n: rng.normal(size=(n, 3))),
}


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=list(EVALUATE_CASES))
def test_chunked_evaluate_equals_in_process_evaluate(small, models, case):
    """Over 16 calls of 64 rows, the loss is the in-process loss of all 1000 rows within rtol
    1e-6 and the accuracy is exactly its accuracy (float64 model)."""
    arguments, targets = EVALUATE_CASES[case]
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1000, 6))
    y = targets(rng, 1000)
    with RecordingClient(small.target) as client:
        model = client.create_model(**arguments, optimizer="sgd", learning_rate=0.1, seed=4,
                                    dtype="float64")
        models.append(model)
        model.train_step(x[:64], y[:64])
        metrics = model.evaluate(x, y, batch_size=SMALL_MAX_ROWS)
        assert client.calls == [("Evaluate", n) for n in _chunks(1000, SMALL_MAX_ROWS)]
        expected = _twin(model).evaluate(x, y)
        assert set(metrics) == set(expected)
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6, abs=0)
        if "accuracy" in expected:
            assert metrics["accuracy"] == expected["accuracy"]


def test_chunked_evaluate_refuses_mismatched_rows_before_any_call(small, models):
    """x and y of different lengths, split: INVALID_ARGUMENT from the client, no call made."""
    with RecordingClient(small.target) as client:
        model = _trained_classifier(client, models, [5, 7, 3], "float32", steps=0)
        x, y = _data(7, 200, 5, 3, "float32")
        with pytest.raises(NNServeError) as caught:
            model.evaluate(x, y[:199], batch_size=64)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "y: got 199 rows, expected 200" in caught.value.message
        assert client.calls == []


# -- one weights version -------------------------------------------------------------------------


def _train_before(client, model, numbers):
    """A hook training `model` one step (through its own handle) before the given calls."""
    trainer = client.get_model(model.id)
    x, y = _data(8, 16, model.n_inputs, model.n_outputs, model.dtype)

    def before(method, number):
        if number in numbers:
            trainer.train_step(x, y)
    return before


def test_chunks_that_saw_an_older_version_are_predicted_again(small, models):
    """Trained between chunk 1 and chunk 2, chunk 1 is asked again: 3 messages (a second
    PredictStream for the re-run) or 3 Evaluate calls, every output from the trained weights
    (version 4), none from the weights before."""
    with RecordingClient(small.target) as client:
        model = _trained_classifier(client, models, [5, 7, 3], "float32")
        x, y = _data(9, 100, 5, 3, "float32")
        before = _twin(model).predict(x[:50])
        client.before = _train_before(client, model, {2})

        outputs = model.predict(x, batch_size=50)
        assert client.calls == [("PredictStream", 50)] * 3 and client.streams == 2
        assert model.version == 4
        client.before = None
        assert same_arrays(outputs, _per_chunk(_twin(model), x, [50, 50]))
        assert not same_arrays(outputs[:50], before)

        client.calls.clear()
        client.before = _train_before(client, model, {2})
        metrics = model.evaluate(x, y, batch_size=50)
        assert client.calls == [("Evaluate", 50)] * 3 and model.version == 5
        client.before = None
        expected = _twin(model).evaluate(x, y)
        assert metrics["accuracy"] == expected["accuracy"]
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)


@pytest.mark.parametrize("method", READS)
def test_a_model_that_keeps_changing_raises_mixed_versions_error(small, models, method):
    """Trained before every call, two chunks never agree: after MAX_VERSION_ROUNDS re-runs of
    the older one, MixedVersionsError (an NNServeError, ABORTED) says which versions, and
    nothing is returned."""
    with RecordingClient(small.target) as client:
        model = _trained_classifier(client, models, [5, 7, 3], "float32", steps=0)
        x, y = _data(10, 100, 5, 3, "float32")
        client.before = _train_before(client, model, set(range(1, 100)))
        with pytest.raises(MixedVersionsError) as caught:
            if method == "Predict":
                model.predict(x, batch_size=50)
            else:
                model.evaluate(x, y, batch_size=50)
    error = caught.value
    calls = 2 + MAX_VERSION_ROUNDS
    assert client.calls == [(RECORDED[method], 50)] * calls
    # chunk 1 was last asked on call 5 (version 5), chunk 2 on call 4 (version 4)
    assert error.versions == [5, 4] and model.version == 5
    assert isinstance(error, NNServeError) and error.code == grpc.StatusCode.ABORTED
    assert error.method == method and "got chunks answered by weights versions [4, 5]" in str(error)


# -- arguments -------------------------------------------------------------------------------


BAD_BATCH_SIZES = [0, -3, 2.5, 8.0, "8", True, np.float64(4), [8]]


@pytest.mark.parametrize("batch_size", BAD_BATCH_SIZES, ids=repr)
def test_bad_batch_size_raises_value_error_before_any_call(small, models, batch_size):
    """A batch_size that is not None or an integer >= 1: ValueError "got X, expected Y", no call."""
    with RecordingClient(small.target) as client:
        model = _trained_classifier(client, models, [5, 7, 3], "float32", steps=0)
        x, y = _data(11, 10, 5, 3, "float32")
        with pytest.raises(ValueError, match=r"batch_size: got .*, expected None \(automatic\) or "
                                             r"an integer >= 1"):
            model.predict(x, batch_size=batch_size)
        with pytest.raises(ValueError, match="batch_size: got"):
            model.evaluate(x, y, batch_size=batch_size)
        assert client.calls == []

        async def scenario():
            async with RecordingAsyncClient(small.target) as aclient:
                remote = await aclient.get_model(model.id)
                for call in (lambda: remote.predict(x, batch_size=batch_size),
                             lambda: remote.evaluate(x, y, batch_size=batch_size)):
                    with pytest.raises(ValueError, match="batch_size: got"):
                        await call()
                return aclient.calls

        assert asyncio.run(scenario()) == []


# -- async ---------------------------------------------------------------------------------------


def test_async_chunks_equal_the_sync_client_bit_for_bit(small, default, models):
    """The async client makes the same calls and returns the same arrays and metrics, for an
    explicit batch_size and the automatic split; after a version change between its chunks
    it re-runs the older one as the sync client does."""
    with RecordingClient(small.target) as client, RecordingClient(default.target) as big_client:
        model = _trained_classifier(client, models, [5, 7, 3], "float64")
        x, y = _data(12, 1000, 5, 3, "float64")
        big = big_client.create_model([4, 3], ["softmax"], "cross_entropy", seed=1)
        models.append(big)
        x_big, y_big = _data(13, 20_000, 4, 3, "float32")

        sync = (model.predict(x, batch_size=SMALL_MAX_ROWS),
                model.evaluate(x, y, batch_size=SMALL_MAX_ROWS),
                big.predict(x_big), big.evaluate(x_big, y_big))
        sync_calls = client.calls + big_client.calls

        async def reads():
            async with RecordingAsyncClient(small.target) as aclient:
                async with RecordingAsyncClient(default.target) as abig_client:
                    remote = await aclient.get_model(model.id)
                    abig = await abig_client.get_model(big.id)
                    results = (await remote.predict(x, batch_size=SMALL_MAX_ROWS),
                               await remote.evaluate(x, y, batch_size=SMALL_MAX_ROWS),
                               await abig.predict(x_big), await abig.evaluate(x_big, y_big))
                    return results, aclient.calls + abig_client.calls

        results, calls = asyncio.run(reads())
        assert calls == sync_calls
        assert len(calls) == 2 * len(_chunks(1000, SMALL_MAX_ROWS)) + 2 * 2
        assert same_arrays(results[0], sync[0]) and same_arrays(results[2], sync[2])
        assert results[1] == sync[1] and results[3] == sync[3]

        async def rerun():
            async with RecordingAsyncClient(small.target) as aclient:
                remote = await aclient.get_model(model.id)
                aclient.before = _train_before(client, model, {2})
                outputs = await remote.predict(x[:100], batch_size=50)
                return outputs, aclient.calls, remote.version

        outputs, calls, version = asyncio.run(rerun())
        assert calls == [("PredictStream", 50)] * 3 and version == 4
        assert same_arrays(outputs, _per_chunk(_twin(model), x[:100], [50, 50]))
        client.calls.clear()
        assert same_arrays(model.predict(x[:100], batch_size=50), outputs)
        assert client.calls == [("PredictStream", 50)] * 2


# -- estimators ----------------------------------------------------------------------------------


def test_remote_estimator_predicts_more_rows_than_one_call_takes(default):
    """A server-trained NNClassifier predicts 20000 rows (two calls) as the in-process one does
    chunk by chunk, bit for bit: the estimators split through RemoteModel.predict."""
    from nnserve.clients import NNClassifier

    rng = np.random.default_rng(14)
    x_train = rng.normal(size=(200, 6))
    y_train = (x_train[:, 0] > 0).astype(int) + (x_train[:, 1] > 0)
    x = rng.normal(size=(20_000, 6))
    settings = dict(hidden_layer_sizes=(8,), epochs=2, batch_size=32, random_state=0)
    local = NNClassifier(**settings).fit(x_train, y_train)
    remote = NNClassifier(**settings, target=default.target).fit(x_train, y_train)
    try:
        proba = remote.predict_proba(x)
        sizes = [MAX_ROWS_PER_CALL, 20_000 - MAX_ROWS_PER_CALL]
        expected = np.concatenate([local.predict_proba(x[:sizes[0]]), local.predict_proba(x[sizes[0]:])])
        assert proba.shape == (20_000, 3) and same_arrays(proba, expected)
        assert same_arrays(remote.predict(x), local.classes_[expected.argmax(axis=1)])
    finally:
        remote.close()
