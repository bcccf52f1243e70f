"""The divergence guard: a step that would make the loss or the state non-finite is refused
and changes nothing; ordinary training is never refused."""

import grpc
import numpy as np
import pytest

from nnserve.kernels import network_kernels as nk
from nnserve.model import Network, NonFiniteStep
from nnserve.model.batches import ROW_SUM_TOLERANCE
from service_support import call_error, classifier_spec, make_batch, pb, running_server, snapshot, to_tensor

OPTIMIZERS = [
    pytest.param({"optimizer": "sgd"}, id="sgd"),
    pytest.param({"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
                 id="sgd-nesterov-decay"),
    pytest.param({"optimizer": "adam", "weight_decay": 1e-3}, id="adam-decay"),
]


def _everything(network):
    state = network.get_state()
    arrays = [a for pair in state["weights"] for a in pair]
    arrays += [a for pairs in state["slots"].values() for pair in pairs for a in pair]
    return state["step"], network.version, arrays


def _assert_unchanged(before, after):
    assert before[0] == after[0] and before[1] == after[1]
    assert all(np.array_equal(a, b) for a, b in zip(before[2], after[2]))


def _batch(dtype, scale, n_samples=16):
    rng = np.random.default_rng(3)
    return (rng.standard_normal((n_samples, 4)) * scale).astype(dtype), rng.integers(0, 3, n_samples)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", OPTIMIZERS)
def test_huge_learning_rate_is_refused_once_the_loss_diverges_and_nothing_changes(dtype, options):
    """Training with a huge learning rate ends in NonFiniteStep naming the learning rate, with step, version, weights and slots as before the refused call."""
    learning_rate = 1e30 if dtype == "float32" else 1e300
    network = Network([4, 8, 3], ["relu", "softmax"], "cross_entropy",
                      learning_rate=learning_rate, dtype=dtype, **options)
    x, y = _batch(dtype, 100.0)
    for _ in range(200):
        before = _everything(network)
        try:
            network.train_step(x, y)
        except NonFiniteStep as error:
            assert "learning_rate" in str(error) and "unchanged" in str(error)
            _assert_unchanged(before, _everything(network))
            break
    else:
        pytest.fail("training never diverged within 200 steps")
    assert network.step == before[0]
    assert all(np.isfinite(a).all() for a in _everything(network)[2])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_update_that_would_overflow_is_refused_even_when_the_loss_is_finite(optimizer):
    """With learning_rate 3e38 in float32 the first step's loss is finite but its update is not: it is refused and the network is untouched."""
    network = Network([4, 8, 3], ["relu", "softmax"], "cross_entropy", optimizer=optimizer,
                      learning_rate=3e38, dtype="float32")
    x, y = _batch("float32", 1e4)
    before = _everything(network)
    with pytest.raises(NonFiniteStep, match="would make parameters or optimizer state non-finite"):
        network.train_step(x, y)
    _assert_unchanged(before, _everything(network))


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("options", OPTIMIZERS)
def test_the_guard_changes_no_result_of_ordinary_training(options, batch):
    """Steps the guard lets through are the ones the unguarded kernel computes: 50 steps equal a run that takes the guarded path every time."""
    guarded = Network([4, 8, 3], ["tanh", "softmax"], "cross_entropy", learning_rate=0.05,
                      dtype="float64", **options)
    checked = Network(**guarded.spec)
    x, y = _batch("float64", 1.0, batch)
    for _ in range(50):
        guarded.train_step(x, y)
        # settle() refreshes the exact bounds first and then runs the same kernel.
        with checked._lock.write:
            step = checked._step + 1
            targets, class_ids = _targets(checked, y, x)
            workspace = checked._workspace(batch)
            rows = (x, targets, class_ids, checked._loss_code, ROW_SUM_TOLERANCE)
            assert checked._guard.settle(lambda force: nk.train_step(
                checked._net, rows, workspace, checked._optimizer, checked._guard_args, step,
                force)[1])
            checked._step, checked._version = step, checked._version + 1
    for (w1, b1), (w2, b2) in zip(guarded.get_weights(), checked.get_weights()):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)


def _targets(network, y, x):
    from nnserve.model.batches import check_targets

    return check_targets(y, "cross_entropy", network.n_outputs, x.shape[0], network.dtype)


def test_a_diverging_train_step_over_grpc_is_failed_precondition_and_changes_nothing():
    """TrainStep on a model whose learning rate makes it diverge answers FAILED_PRECONDITION naming the learning rate, and GetModel/GetState are unchanged."""
    rng = np.random.default_rng(0)
    with running_server() as running:
        stub = running.stub
        model = stub.CreateModel(pb.CreateModelRequest(
            spec=classifier_spec(learning_rate=1e30))).model.id
        x, y = make_batch(rng, 16, 4, 3)
        request = pb.TrainStepRequest(model=model, x=to_tensor(x * 1e3), y=to_tensor(y))
        for _ in range(50):
            before = snapshot(stub, model)
            try:
                stub.TrainStep(request, timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "learning_rate" in error.details()
                break
        else:
            pytest.fail("the model never diverged")
        assert snapshot(stub, model) == before
        details = call_error(stub.TrainStep, request, grpc.StatusCode.FAILED_PRECONDITION)
        assert "unchanged" in details
