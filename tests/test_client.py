"""The synchronous client against a real server: lifecycle, bit-exact numbers, fit, errors."""

import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

from client_support import batches, live_server, same_arrays
from nnserve.clients import Client, ModelInfo, NNServeError, RemoteModel
from nnserve.model.fit import fit_plan, run
from nnserve.model import Network

MAX_ROWS = 256
MAX_PARAMETERS = 100_000


@pytest.fixture(scope="module")
def live():
    with live_server(max_rows_per_request=MAX_ROWS, max_parameters_per_model=MAX_PARAMETERS) as running:
        yield running


@pytest.fixture(scope="module")
def client(live):
    with Client(live.target, timeout=30) as client:
        yield client


@pytest.fixture
def classifier(client):
    """A fresh [4, 8, 3] relu/softmax classifier, deleted after the test."""
    model = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy", seed=5)
    yield model
    try:
        model.delete()
    except NNServeError:
        pass


def test_importing_the_sdk_does_not_import_numba():
    """`import nnserve.clients` loads neither numba, the kernels, the Network, the service nor
    scikit-learn (it shares only the model layer's numpy-only batch rule, fit loop and results)."""
    code = ("import sys, nnserve.clients; "
            "bad = [m for m in ('numba', 'nnserve.kernels', 'nnserve.model.network', 'nnserve.service', "
            "'sklearn') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_sdk_works_where_numba_cannot_be_imported(live):
    """With numba and scikit-learn made unimportable, a client still trains (by a job, over a
    stream) and predicts remotely."""
    code = ("import sys; sys.modules['numba'] = sys.modules['sklearn'] = None\n"
            "from nnserve.clients import Client\n"
            f"with Client('{live.target}') as client:\n"
            "    model = client.create_model([2, 1], ['sigmoid'], 'binary_cross_entropy')\n"
            "    model.fit([[0.0, 1.0]], [1.0], epochs=2, batch_size=1)\n"
            "    model.fit([[0.0, 1.0]], [1.0], epochs=2, batch_size=1, stream=True)\n"
            "    assert [loss.step for loss in model.train_stream([([[0.0, 1.0]], [1.0])])] == [5]\n"
            "    assert model.predict([[0.0, 1.0]]).shape == (1, 1) and model.step == 5\n"
            "    model.delete()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_create_get_list_delete(client):
    """A created model is described, found by id and name, listed, and deleted."""
    model = client.create_model([3, 5, 2], ["tanh", "softmax"], "cross_entropy", name="life",
                                optimizer="adam", learning_rate=0.002, seed=9, dtype="float64")
    assert isinstance(model, RemoteModel) and len(model.id) == 32 and model.name == "life"
    assert (model.step, model.version, model.num_parameters) == (0, 0, 3 * 5 + 5 + 5 * 2 + 2)
    assert model.dtype == np.float64 and (model.n_inputs, model.n_outputs) == (3, 2)
    assert model.spec == Network([3, 5, 2], ["tanh", "softmax"], "cross_entropy", optimizer="adam",
                                 learning_rate=0.002, seed=9, dtype="float64").spec
    assert model.info.create_time.tzinfo is not None

    for ref in (model.id, "life", model):
        assert client.get_model(ref).info == model.info
    assert model.id in [m.id for m in client.list_models()]

    deleted = client.delete_model("life")
    assert isinstance(deleted, ModelInfo) and deleted.id == model.id
    assert model.id not in [m.id for m in client.list_models()]


def test_list_models_follows_every_page(client):
    """list_models returns all models in creation order whatever the page size."""
    created = [client.create_model([2, 1], ["sigmoid"], "binary_cross_entropy") for _ in range(5)]
    try:
        for page_size in (1, 2, 3, 0):
            ids = [m.id for m in client.list_models(page_size=page_size)]
            assert [i for i in ids if i in {m.id for m in created}] == [m.id for m in created]
    finally:
        for model in created:
            model.delete()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_and_state_round_trip_bit_exactly(client, dtype):
    """Weights (extreme values included) and whole states go out and come back bit for bit."""
    model = client.create_model([3, 4, 2], ["relu", "softmax"], "cross_entropy", optimizer="adam",
                                dtype=dtype)
    copy = client.create_model([3, 4, 2], ["relu", "softmax"], "cross_entropy", optimizer="adam",
                               dtype=dtype, seed=99)
    try:
        info = np.finfo(dtype)
        rng = np.random.default_rng(1)
        weights = [(rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=4).astype(dtype)),
                   (rng.normal(size=(4, 2)).astype(dtype), rng.normal(size=2).astype(dtype))]
        weights[0][0].flat[:4] = [info.tiny / 4, -0.0, info.max, info.eps]  # subnormal, -0, extremes
        model.set_weights(weights)
        assert model.version == 1 and model.step == 0
        for (w, b), (w_back, b_back) in zip(weights, model.get_weights()):
            assert same_arrays(w, w_back) and same_arrays(b, b_back)

        x, y = batches(2, 1, 6, 3, 2, dtype)[0]
        model.set_weights([(rng.normal(size=w.shape).astype(dtype), b) for w, b in weights])
        for _ in range(2):
            model.train_step(x, y)
        state = model.get_state()
        assert state["step"] == 2 and set(state["slots"]) == {"exp_avg", "exp_avg_sq"}
        copy.set_state(state)
        assert copy.step == 2
        again = copy.get_state()
        pairs = [(state["weights"], again["weights"])]
        pairs += [(state["slots"][name], again["slots"][name]) for name in state["slots"]]
        for ours, theirs in pairs:
            for (w, b), (w_back, b_back) in zip(ours, theirs):
                assert same_arrays(w, w_back) and same_arrays(b, b_back)
        assert same_arrays(model.predict(x), copy.predict(x))
        assert model.predict(x).dtype == np.dtype(dtype)
    finally:
        model.delete()
        copy.delete()


def test_set_weights_is_atomic_with_concurrent_train_steps(client):
    """set_weights while other clients train loses no train step: every write gets its own
    version, the step counts every train step, and set_weights leaves the step alone."""
    model = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy", optimizer="adam", seed=5)
    n_trainers, n_steps, n_sets = 3, 20, 15
    x, y = batches(4, 1, 6, 4, 3)[0]
    weights = model.get_weights()
    versions, steps_seen, failures = [], [], []
    lock = threading.Lock()

    def train():
        handle = client.get_model(model.id)
        for _ in range(n_steps):
            handle.train_step(x, y)
            with lock:
                versions.append(handle.version)

    def set_weights():
        handle = client.get_model(model.id)
        for _ in range(n_sets):
            handle.set_weights(weights)
            with lock:
                versions.append(handle.version)
                steps_seen.append(handle.step)

    def guarded(work):
        try:
            work()
        except Exception as error:  # reported below: a thread's exception is otherwise lost
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(train,)) for _ in range(n_trainers)]
    threads.append(threading.Thread(target=guarded, args=(set_weights,)))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        total = n_trainers * n_steps + n_sets
        assert sorted(versions) == list(range(1, total + 1))
        assert steps_seen == sorted(steps_seen) and all(0 <= s <= n_trainers * n_steps for s in steps_seen)
        model.refresh()
        assert (model.step, model.version) == (n_trainers * n_steps, total)
        model.set_weights(weights)
        assert (model.step, model.version) == (n_trainers * n_steps, total + 1)
        for (w, b), (w_back, b_back) in zip(weights, model.get_weights()):
            assert same_arrays(w, w_back) and same_arrays(b, b_back)
    finally:
        model.delete()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", [dict(optimizer="sgd", momentum=0.9, nesterov=True),
                                       dict(optimizer="adam", weight_decay=1e-3)],
                         ids=["sgd-nesterov", "adam"])
def test_remote_model_equals_network_bit_for_bit(client, dtype, optimizer):
    """Train steps, predictions and evaluations equal the in-process Network's exactly."""
    arguments = dict(layers=[5, 7, 6, 3], activations=["tanh", "relu", "softmax"],
                     loss="cross_entropy", learning_rate=0.05, seed=3, dtype=dtype, **optimizer)
    model = client.create_model(**arguments)
    network = Network(**arguments)
    try:
        assert same_arrays(model.predict(batches(0, 1, 4, 5, 3, dtype)[0][0]),
                           network.predict(batches(0, 1, 4, 5, 3, dtype)[0][0]))
        data = batches(1, 6, 8, 5, 3, dtype)
        for number, (x, y) in enumerate(data[:5], start=1):
            assert model.train_step(x, y) == network.train_step(x, y)
            assert (model.step, model.version) == (number, number)
        probe, truth = data[5]
        outputs = model.predict(probe)
        assert outputs.dtype == np.dtype(dtype) and outputs.shape == (8, 3)
        assert same_arrays(outputs, network.predict(probe))
        assert model.evaluate(probe, truth) == network.evaluate(probe, truth)
        for (w, b), (w_net, b_net) in zip(model.get_weights(), network.get_weights()):
            assert same_arrays(w, w_net) and same_arrays(b, b_net)
        assert model.refresh().step == 5
    finally:
        model.delete()


def test_inputs_are_cast_as_network_casts_them(client):
    """Lists and safely castable arrays are accepted; a lossy float64 x is refused by the server."""
    model = client.create_model([2, 1], ["sigmoid"], "binary_cross_entropy", seed=1)
    network = Network(**model.spec)
    try:
        rows = [[0, 1], [1, 0]]
        assert same_arrays(model.predict(rows), network.predict(rows))
        small = np.array(rows, dtype=np.uint8)
        assert same_arrays(model.predict(small), network.predict(small))
        assert model.train_step(small, np.array([1, 0], dtype=np.uint8)) == \
            network.train_step(small, np.array([1, 0], dtype=np.uint8))
        with pytest.raises(NNServeError) as caught:
            model.predict(np.array(rows, dtype=np.float64))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "float64" in caught.value.message
    finally:
        model.delete()


def test_fit_equals_the_same_plan_run_in_process(client):
    """fit() sends exactly the batches fit_plan gives a Network: same history, same weights."""
    arguments = dict(layers=[4, 8, 3], activations=["relu", "softmax"], loss="cross_entropy",
                     optimizer="adam", learning_rate=0.01, seed=2)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    validation = (x[:10], y[:10])
    model = client.create_model(**arguments)
    try:
        history = model.fit(x, y, epochs=3, batch_size=16, seed=7, validation_data=validation)
        expected = run(fit_plan(x, y, epochs=3, batch_size=16, seed=7, validation_data=validation,
                                progress=False), network := Network(**arguments))
        assert history == expected
        assert set(history) == {"loss", "val_loss", "val_accuracy"} and len(history["loss"]) == 3
        assert (model.step, model.version) == (3 * 4, 3 * 4)
        assert same_arrays(model.predict(x), network.predict(x))
    finally:
        model.delete()


@pytest.mark.parametrize("optimizer, hyper, shuffle", [
    ("sgd", {"momentum": 0.9}, True), ("adam", {}, True), ("sgd", {"momentum": 0.9}, False)])
def test_network_fit_equals_remote_fit_bit_for_bit(client, optimizer, hyper, shuffle):
    """Network.fit in-process and RemoteModel.fit through the server give the same history and
    the same weights, bit for bit, with and without shuffling and with validation."""
    arguments = dict(layers=[4, 8, 3], activations=["tanh", "softmax"], loss="cross_entropy",
                     optimizer=optimizer, learning_rate=0.05, seed=3, **hyper)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(45, 4)).astype(np.float32)  # 45 rows: the last batch is smaller
    y = rng.integers(0, 3, size=45)
    validation = (x[:9], y[:9])
    options = dict(epochs=3, batch_size=8, shuffle=shuffle, seed=5, validation_data=validation)
    network = Network(**arguments)
    model = client.create_model(**arguments)
    try:
        assert model.fit(x, y, **options) == network.fit(x, y, **options)
        assert (model.step, model.version) == (network.step, network.version) == (18, 18)
        for (w_remote, b_remote), (w_local, b_local) in zip(model.get_weights(), network.get_weights()):
            assert same_arrays(w_remote, w_local) and same_arrays(b_remote, b_local)
    finally:
        model.delete()


def test_fit_is_silent_unless_stderr_is_a_terminal(client, capfd):
    """Without a terminal fit prints nothing; progress=True draws a tqdm bar on stderr."""
    model = client.create_model([2, 1], ["sigmoid"], "binary_cross_entropy")
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.float32)
    try:
        model.fit(x, y, epochs=2, batch_size=2)
        assert capfd.readouterr() == ("", "")
        model.fit(x, y, epochs=2, batch_size=2, progress=True)
        assert "4/4" in capfd.readouterr().err
    finally:
        model.delete()


def test_fit_rejects_bad_arguments_before_any_call(classifier):
    """Mismatched rows or a zero batch size raise ValueError and train nothing."""
    x, y = batches(0, 1, 6, 4, 3)[0]
    with pytest.raises(ValueError, match="expected 6"):
        classifier.fit(x, y[:5], epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        classifier.fit(x, y, epochs=1, batch_size=0)
    assert classifier.refresh().step == 0


X4, Y4 = batches(8, 1, 6, 4, 3)[0]


def _nan_inputs():
    x = X4.copy()
    x[1, 2] = np.nan
    return x


# (what to call on the client and the classifier, status code, text in the server's message)
ERROR_CASES = {
    "unknown-model": (lambda c, m: c.get_model("no-such-model"), "NOT_FOUND",
                      "expected the id or name of an existing model"),
    "empty-model": (lambda c, m: c.get_model(""), "INVALID_ARGUMENT", "model: got ''"),
    "name-taken": (lambda c, m: c.create_model([4, 3], ["softmax"], "cross_entropy", name="taken"),
                   "ALREADY_EXISTS", "expected a name not in use"),
    "bad-name": (lambda c, m: c.create_model([4, 3], ["softmax"], "cross_entropy", name="9lives"),
                 "INVALID_ARGUMENT", "starting with a letter"),
    "softmax-hidden": (lambda c, m: c.create_model([4, 3, 3], ["softmax", "softmax"], "cross_entropy"),
                       "INVALID_ARGUMENT", "only on the output layer"),
    "unknown-activation": (lambda c, m: c.create_model([4, 3], ["swish"], "mse"),
                           "INVALID_ARGUMENT", "got 'swish'"),
    "too-many-parameters": (lambda c, m: c.create_model([1000, 1000], ["identity"], "mse"),
                            "RESOURCE_EXHAUSTED", "max_parameters_per_model"),
    "too-many-rows": (lambda c, m: m.predict(np.zeros((MAX_ROWS + 1, 4), np.float32)),
                      "RESOURCE_EXHAUSTED", "max_rows_per_request"),
    "wrong-width": (lambda c, m: m.predict(np.zeros((2, 5), np.float32)), "INVALID_ARGUMENT",
                    "x: got shape (2, 5), expected (n_samples, 4)"),
    "nan-input": (lambda c, m: m.predict(_nan_inputs()), "INVALID_ARGUMENT", "non-finite"),
    "class-out-of-range": (lambda c, m: m.train_step(X4, np.full(6, 3)), "INVALID_ARGUMENT",
                           "expected ids in [0, 3)"),
    "evaluate-rows": (lambda c, m: m.evaluate(X4, Y4[:5]), "INVALID_ARGUMENT", "expected 6"),
    "complex-input": (lambda c, m: m.predict(X4.astype(np.complex64)), "INVALID_ARGUMENT",
                      "expected float32, float64, int32 or int64"),
    "state-of-other-layers": (lambda c, m: m.set_state(Network([4, 5, 3], ["relu", "softmax"],
                                                                "cross_entropy").get_state()),
                              "FAILED_PRECONDITION", "state.spec.layers"),
    "state-with-nan": (lambda c, m: m.set_weights([(np.full((4, 8), np.nan, np.float32), np.zeros(8, np.float32)),
                                                   (np.zeros((8, 3), np.float32), np.zeros(3, np.float32))]),
                       "INVALID_ARGUMENT", "non-finite"),
    "weights-of-one-layer": (lambda c, m: m.set_weights(m.get_weights()[:1]), "INVALID_ARGUMENT",
                             "weights: got 1 pairs, expected a list of 2"),
    "weights-not-pairs": (lambda c, m: m.set_weights([(*pair, pair[1]) for pair in m.get_weights()]),
                          "INVALID_ARGUMENT", "weights[0]: got tuple of length 3, expected a pair (W, b)"),
    "weights-not-a-list": (lambda c, m: m.set_weights("weights"), "INVALID_ARGUMENT",
                           "weights: got str, expected a list of (W, b) pairs"),
    "negative-page-size": (lambda c, m: c.list_models(page_size=-1), "INVALID_ARGUMENT", "page_size"),
    "deleted-model": (lambda c, m: (m.delete(), m.predict(X4)), "NOT_FOUND", "existing model"),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_error_paths_raise_nnserve_error_with_code_and_message(client, classifier, case):
    """Each failure raises NNServeError with the right status code and the server's message."""
    taken = client.create_model([4, 3], ["softmax"], "cross_entropy", name="taken")
    call, code, text = ERROR_CASES[case]
    try:
        with pytest.raises(NNServeError) as caught:
            call(client, classifier)
    finally:
        taken.delete()
    error = caught.value
    assert error.code == getattr(grpc.StatusCode, code), str(error)
    assert text in error.message and text in str(error)
    assert error.method and code in str(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_unreachable_server_is_unavailable():
    """A call to a port nobody listens on fails with NNServeError UNAVAILABLE."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"127.0.0.1:{port}", timeout=10) as client:
        with pytest.raises(NNServeError) as caught:
            client.delete_model("anything")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.method == "DeleteModel"


def test_closed_client_refuses_calls(live):
    """After close() (twice is fine) a call raises NNServeError CANCELLED."""
    client = Client(live.target)
    client.close()
    client.close()
    with pytest.raises(NNServeError) as caught:
        client.list_models()
    assert caught.value.code == grpc.StatusCode.CANCELLED and caught.value.method == "ListModels"
