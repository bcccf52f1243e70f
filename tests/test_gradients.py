"""Gradients of Network against three references: finite differences, tests/reference.py, PyTorch.

Networks are tiny ([3, 4, 3, 2], batch 5) and float64, with random non-zero biases, for
every hidden activation and every output/loss pairing the API accepts.
"""

import numpy as np
import pytest

import reference
from gradient_cases import central_differences
from kernel_cases import (HIDDEN_ACTIVATIONS, OUTPUT_LOSS_PAIRS, assert_close_to_scale, pair_id,
                          random_inputs, random_targets, random_weights)
from nnserve.model import Network

LAYERS = [3, 4, 3, 2]
N_SAMPLES = 5
# Central differences (gradient_cases.FD_STEP) have truncation error ~1e-13 and rounding
# error ~1e-10 relative to a loss of order 1, far inside the 1e-6 bound below.
FD_RTOL = 1e-6
# No relu/leaky_relu pre-activation may lie this close to 0: perturbing one parameter by
# FD_STEP moves every pre-activation by far less, so no difference quotient crosses a kink.
KINK_MARGIN = 1e-3
REFERENCE_RTOL = 1e-12
TORCH_VALUE_RTOL = 1e-12
TORCH_GRADIENT_RTOL = 1e-11

CASES = [(hidden, pair) for hidden in HIDDEN_ACTIVATIONS for pair in OUTPUT_LOSS_PAIRS]
CASE_IDS = [f"hidden_{hidden}-{pair_id(pair)}" for hidden, pair in CASES]


def distance_to_kinks(weights, activations, x):
    """Return the smallest |z| over the layers whose activation has a kink at z = 0."""
    pre_activations, _ = reference.forward(weights, activations, x)
    kinked = [np.abs(z).min() for z, name in zip(pre_activations, activations)
              if name in ("relu", "leaky_relu")]
    return min(kinked, default=np.inf)


def make_case(hidden, pair):
    """Return (network, weights, x, y) for one case, its data clear of relu kinks.

    The data come from the first of a fixed list of seeds whose pre-activations all stay
    KINK_MARGIN away from 0 on relu-family layers, so the case is deterministic.
    """
    output, loss, kind = pair
    activations = [hidden, hidden, output]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        weights = random_weights(rng, LAYERS)
        x = random_inputs(rng, N_SAMPLES, LAYERS[0])
        y = random_targets(rng, loss, kind, N_SAMPLES, LAYERS[-1])
        if distance_to_kinks(weights, activations, x) > KINK_MARGIN:
            break
    else:
        pytest.fail(f"no seed in range(20) keeps {activations} pre-activations {KINK_MARGIN} from 0")
    network = Network(LAYERS, activations, loss, dtype="float64")
    network.set_weights(weights)
    return network, weights, x, y


def finite_difference_gradients(network, weights, x, y):
    """Return [(dW, db), ...] by central differences of Network.evaluate's loss."""
    def loss_at(perturbed):
        network.set_weights(perturbed)
        return network.evaluate(x, y)["loss"]

    estimates = central_differences(loss_at, weights)
    network.set_weights(weights)
    return estimates


@pytest.mark.parametrize("hidden, pair", CASES, ids=CASE_IDS)
def test_gradients_match_central_finite_differences(hidden, pair):
    """Network.gradients equals central differences of the loss for every W and b, array-wise relative error < 1e-6."""
    network, weights, x, y = make_case(hidden, pair)
    _, analytic = network.gradients(x, y)
    numeric = finite_difference_gradients(network, weights, x, y)
    for layer, ((dW, db), (fd_W, fd_b)) in enumerate(zip(analytic, numeric)):
        for name, got, expected in (("dW", dW, fd_W), ("db", db, fd_b)):
            assert got.shape == expected.shape and got.dtype == np.float64
            # Relative to the array's largest entry: entries that are 0 (dead relu units)
            # or tiny would make an elementwise relative error meaningless.
            assert_close_to_scale(got, expected, FD_RTOL, f"layer {layer} {name}")
    assert any(np.any(g != 0) for pair_ in analytic for g in pair_), "all gradients are zero"


@pytest.mark.parametrize("hidden, pair", CASES, ids=CASE_IDS)
def test_gradients_and_loss_match_reference(hidden, pair):
    """Network.gradients returns the same loss and gradients as tests/reference.py, to 1e-12 relative."""
    network, weights, x, y = make_case(hidden, pair)
    loss, gradients = network.gradients(x, y)
    expected_loss, expected = reference.loss_and_gradients(weights, network.spec["activations"],
                                                           pair[1], x, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected_loss, rel=REFERENCE_RTOL)
    assert len(gradients) == len(expected)
    for layer, ((dW, db), (ref_W, ref_b)) in enumerate(zip(gradients, expected)):
        assert dW.dtype == db.dtype == np.float64
        assert_close_to_scale(dW, ref_W, REFERENCE_RTOL, f"layer {layer} dW")
        assert_close_to_scale(db, ref_b, REFERENCE_RTOL, f"layer {layer} db")


@pytest.mark.torch
@pytest.mark.parametrize("hidden, pair", CASES, ids=CASE_IDS)
def test_forward_loss_and_gradients_match_torch(hidden, pair):
    """Predictions, loss and gradients equal PyTorch's autograd on torch.nn.Linear layers holding the same weights."""
    pytest.importorskip("torch", reason="torch not installed: PyTorch comparison needs the bench extra")
    from torch_mirror import TorchMirror

    network, weights, x, y = make_case(hidden, pair)
    mirror = TorchMirror(weights, network.spec["activations"], pair[1])
    outputs = network.predict(x)
    expected_outputs = mirror.predict(x)
    assert outputs.shape == expected_outputs.shape == (N_SAMPLES, LAYERS[-1])
    assert outputs.dtype == expected_outputs.dtype == np.float64
    assert_close_to_scale(outputs, expected_outputs, TORCH_VALUE_RTOL, "predictions")

    loss, gradients = network.gradients(x, y)
    expected_loss, expected = mirror.gradients(x, y)
    assert loss == pytest.approx(expected_loss, rel=TORCH_VALUE_RTOL)
    for layer, ((dW, db), (torch_W, torch_b)) in enumerate(zip(gradients, expected)):
        assert dW.shape == torch_W.shape and db.shape == torch_b.shape
        assert dW.dtype == torch_W.dtype == np.float64
        assert_close_to_scale(dW, torch_W, TORCH_GRADIENT_RTOL, f"layer {layer} dW")
        assert_close_to_scale(db, torch_b, TORCH_GRADIENT_RTOL, f"layer {layer} db")


@pytest.mark.parametrize("layers, activations, loss, kind, n_samples", [
    ([3, 2], ["softmax"], "cross_entropy", "class_ids", 5),
    ([3, 2], ["tanh"], "mse", "rows", 1),
    ([3, 5, 4, 3, 2], ["tanh", "leaky_relu", "sigmoid", "sigmoid"], "binary_cross_entropy", "rows", 5),
    ([3, 5, 4, 3, 2], ["sigmoid", "tanh", "identity", "softmax"], "cross_entropy", "probability_rows", 1),
], ids=["single_layer", "single_layer-one_sample", "four_layers", "four_layers-one_sample"])
def test_gradients_of_other_depths_and_single_samples_match_finite_differences_and_reference(
        layers, activations, loss, kind, n_samples):
    """Networks of one and four layers, with batches of 5 or of 1 sample, get the finite-difference and reference gradients."""
    rng = np.random.default_rng(21)
    weights = random_weights(rng, layers)
    x = random_inputs(rng, n_samples, layers[0])
    y = random_targets(rng, loss, kind, n_samples, layers[-1])
    assert distance_to_kinks(weights, activations, x) > KINK_MARGIN
    network = Network(layers, activations, loss, dtype="float64")
    network.set_weights(weights)
    _, gradients = network.gradients(x, y)
    numeric = finite_difference_gradients(network, weights, x, y)
    _, expected = reference.loss_and_gradients(weights, activations, loss, x, y)
    assert len(gradients) == len(layers) - 1
    for layer, ((dW, db), (fd_W, fd_b), (ref_W, ref_b)) in enumerate(zip(gradients, numeric, expected)):
        assert_close_to_scale(dW, fd_W, FD_RTOL, f"layer {layer} dW vs finite differences")
        assert_close_to_scale(db, fd_b, FD_RTOL, f"layer {layer} db vs finite differences")
        assert_close_to_scale(dW, ref_W, REFERENCE_RTOL, f"layer {layer} dW vs reference")
        assert_close_to_scale(db, ref_b, REFERENCE_RTOL, f"layer {layer} db vs reference")


@pytest.mark.parametrize("pair", OUTPUT_LOSS_PAIRS, ids=[pair_id(p) for p in OUTPUT_LOSS_PAIRS])
def test_float32_gradients_are_close_to_reference(pair):
    """A float32 network's loss and gradients equal the float64 reference to 1e-5 relative (float32 rounding)."""
    network64, weights, x, y = make_case("tanh", pair)
    network = Network(**{**network64.spec, "dtype": "float32"})
    network.set_weights([(W.astype(np.float32), b.astype(np.float32)) for W, b in weights])
    weights32 = [(W.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
                 for W, b in weights]
    x32 = x.astype(np.float32)
    y32 = y if y.dtype.kind == "i" else y.astype(np.float32)
    loss, gradients = network.gradients(x32, y32)
    expected_loss, expected = reference.loss_and_gradients(
        weights32, network.spec["activations"], pair[1], x32.astype(np.float64),
        y32 if y32.dtype.kind == "i" else y32.astype(np.float64))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for layer, ((dW, db), (ref_W, ref_b)) in enumerate(zip(gradients, expected)):
        assert dW.dtype == db.dtype == np.float32
        assert_close_to_scale(dW, ref_W, 1e-5, f"layer {layer} dW")
        assert_close_to_scale(db, ref_b, 1e-5, f"layer {layer} db")


@pytest.mark.parametrize("activation, expected_slope", [("relu", 0.0), ("leaky_relu", 0.01)],
                         ids=["relu", "leaky_relu"])
def test_kinked_activations_take_the_left_derivative_at_exactly_zero(activation, expected_slope):
    """At a pre-activation of exactly 0, relu passes no gradient and leaky_relu passes 0.01 of it (as PyTorch)."""
    # [1, 1, 1] identity-output net: z1 = x * w1 + b1 = 0 exactly for x = 1, w1 = 1, b1 = -1.
    network = Network([1, 1, 1], [activation, "identity"], "mse", dtype="float64")
    network.set_weights([(np.array([[1.0]]), np.array([-1.0])), (np.array([[2.0]]), np.array([0.5]))])
    x = np.array([[1.0]])
    y = np.array([[0.0]])
    _, gradients = network.gradients(x, y)
    # dL/dg = 2 (g - y) = 2 * 0.5 = 1 at g = 0.5; dL/dz1 = 1 * w2 * f'(0) = 2 f'(0).
    assert gradients[1][1][0] == 1.0
    assert gradients[0][1][0] == 2.0 * expected_slope
    assert gradients[0][0][0, 0] == 2.0 * expected_slope


@pytest.mark.parametrize("loss, activation, x, y, expected", [
    ("mse", "identity", [[1.0, 2.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], (1 + 4 + 9) / 2),
    ("binary_cross_entropy", "sigmoid", [[0.0, 0.0]], [[1.0, 0.0]], 2 * np.log(2.0)),
    ("cross_entropy", "softmax", [[0.0, 0.0], [1.0, 1.0]], [0, 1], np.log(2.0)),
    ("cross_entropy", "softmax", [[np.log(3.0), 0.0]], [[0.5, 0.5]],
     0.5 * np.log(4 / 3) + 0.5 * np.log(4.0)),
], ids=["mse-sum-over-outputs-mean-over-batch", "bce-sum-over-outputs", "cross_entropy-class_ids",
        "cross_entropy-probability_rows"])
def test_loss_definitions_on_hand_computed_values(loss, activation, x, y, expected):
    """Each loss is the batch mean of a per-sample loss summed over outputs, checked on values computed by hand."""
    # A [2, 2] identity-weight layer makes the logits equal to x.
    network = Network([2, 2], [activation], loss, dtype="float64")
    network.set_weights([(np.eye(2), np.zeros(2))])
    y = np.array(y)
    assert network.evaluate(np.array(x), y)["loss"] == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("loss, activation, y, expected", [
    ("binary_cross_entropy", "sigmoid", [[1.0, 0.0]], 0.0),
    ("binary_cross_entropy", "sigmoid", [[0.0, 1.0]], 2000.0),
    ("cross_entropy", "softmax", [0], 0.0),
    ("cross_entropy", "softmax", [1], 2000.0),
], ids=["bce-right", "bce-wrong", "cross_entropy-right", "cross_entropy-wrong"])
def test_losses_from_logits_stay_finite_and_exact_for_huge_logits(loss, activation, y, expected):
    """Logits of +-1000 give the exact loss (0 when right, 2000 when wrong) and finite gradients, never inf or NaN."""
    # A [2, 2] identity-weight layer makes the logits equal to x = [1000, -1000].
    network = Network([2, 2], [activation], loss, dtype="float64")
    network.set_weights([(np.eye(2), np.zeros(2))])
    value, gradients = network.gradients(np.array([[1000.0, -1000.0]]), np.array(y))
    assert value == pytest.approx(expected, rel=1e-15, abs=1e-300)
    assert all(np.isfinite(g).all() for pair in gradients for g in pair)


def test_gradients_leave_the_network_unchanged():
    """Network.gradients changes neither weights, step nor version."""
    network, weights, x, y = make_case("tanh", OUTPUT_LOSS_PAIRS[0])
    version, step = network.version, network.step
    network.gradients(x, y)
    assert network.version == version and network.step == step
    for (W, b), (W0, b0) in zip(network.get_weights(), weights):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
