"""L1 regularization (`l1`): l1 * sign(W) added to the weights' gradient, not the biases',
0 at W = 0, before the optimizer's update; checked against central finite differences of
the penalized loss, a numpy reference of each optimizer, and torch.optim.

Networks are tiny ([2, 4, 3, 1] tanh, sigmoid output with binary cross-entropy), float64.
"""

import numpy as np
import pytest

from gradient_cases import central_differences
from nnserve.model import Network

LAYERS = [2, 4, 3, 1]
ACTIVATIONS = ["tanh", "tanh", "sigmoid"]
L1 = 0.05
LEARNING_RATE = 0.1
FD_RTOL = 1e-6
REFERENCE_RTOL = 1e-12


def make_case(n_samples=6, **optimizer):
    rng = np.random.default_rng(3)
    network = Network(LAYERS, ACTIVATIONS, "binary_cross_entropy", learning_rate=LEARNING_RATE,
                      l1=L1, init="xavier", seed=1, dtype="float64", **optimizer)
    weights = network.get_weights()
    weights = [(W, rng.normal(0, 0.5, b.shape)) for W, b in weights]  # non-zero biases
    network.set_weights(weights)
    x = rng.normal(0, 1, (n_samples, LAYERS[0]))
    y = (rng.random(n_samples) > 0.5).astype(np.float64)
    return network, weights, x, y


def penalized_gradients(network, weights, x, y):
    """Central differences of loss + L1 * sum|W| (weights only)."""
    def objective(perturbed):
        network.set_weights(perturbed)
        penalty = L1 * sum(np.abs(W).sum() for W, _ in perturbed)
        return network.evaluate(x, y)["loss"] + penalty

    estimates = central_differences(objective, weights)
    network.set_weights(weights)
    return estimates


@pytest.mark.parametrize("n_samples", [1, 6])
def test_a_plain_sgd_step_descends_the_penalized_loss(n_samples):
    """A plain SGD step with l1 moves every weight by -lr times the finite-difference gradient of loss + l1*sum|W|, and every bias by -lr times the loss's alone."""
    network, weights, x, y = make_case(n_samples)
    expected = penalized_gradients(network, weights, x, y)
    network.train_step(x, y)
    for layer, ((W0, b0), (W1, b1), (fd_W, fd_b)) in enumerate(zip(weights, network.get_weights(), expected)):
        np.testing.assert_allclose((W0 - W1) / LEARNING_RATE, fd_W, rtol=FD_RTOL, atol=1e-9,
                                   err_msg=f"layer {layer} W")
        np.testing.assert_allclose((b0 - b1) / LEARNING_RATE, fd_b, rtol=FD_RTOL, atol=1e-9,
                                   err_msg=f"layer {layer} b")


def test_a_weight_at_exactly_zero_gets_no_l1_push():
    """The subgradient of |W| at W = 0 is 0: a zero weight moves by -lr * dLoss/dW only."""
    network, weights, x, y = make_case()
    weights[0][0][0, 0] = 0.0
    network.set_weights(weights)
    _, grads = network.gradients(x, y)
    network.train_step(x, y)
    moved = network.get_weights()[0][0][0, 0]
    assert moved == pytest.approx(-LEARNING_RATE * grads[0][0][0, 0], rel=REFERENCE_RTOL)


def reference_step(weights, grads, optimizer, step=1):
    """One step of `optimizer` from zero state on loss gradients plus l1 * sign(W)."""
    result = []
    for (W, b), (dW, db) in zip(weights, grads):
        pair = []
        for p, g in ((W, dW + L1 * np.sign(W)), (b, db)):
            if optimizer["optimizer"] == "adam":
                beta1, beta2 = 0.9, 0.999
                m, v = (1 - beta1) * g, (1 - beta2) * g * g
                step_size = LEARNING_RATE / (1 - beta1 ** step)
                pair.append(p - step_size * m / (np.sqrt(v) / np.sqrt(1 - beta2 ** step) + 1e-8))
            else:  # momentum from a zero buffer: the first velocity is g
                pair.append(p - LEARNING_RATE * g)
        result.append(tuple(pair))
    return result


@pytest.mark.parametrize("optimizer", [{"optimizer": "sgd", "momentum": 0.9},
                                       {"optimizer": "adam"}], ids=["momentum", "adam"])
def test_other_optimizers_take_l1_into_their_gradient(optimizer):
    """Momentum SGD and Adam apply their update to the loss gradient plus l1 * sign(W), as the numpy reference."""
    network, weights, x, y = make_case(**optimizer)
    _, grads = network.gradients(x, y)
    network.train_step(x, y)
    for (W, b), (ref_W, ref_b) in zip(network.get_weights(), reference_step(weights, grads, optimizer)):
        np.testing.assert_allclose(W, ref_W, rtol=REFERENCE_RTOL)
        np.testing.assert_allclose(b, ref_b, rtol=REFERENCE_RTOL)


@pytest.mark.torch
def test_trajectory_matches_torch_with_an_l1_penalty():
    """Ten SGD steps with l1 equal torch.optim.SGD on BCE + l1 * sum|W| (torch's |W|' is 0 at 0)."""
    torch = pytest.importorskip("torch")
    network, weights, x, y = make_case()
    params = [torch.tensor(array, requires_grad=True) for pair in weights for array in pair]
    optimizer = torch.optim.SGD(params, lr=LEARNING_RATE)
    inputs, targets = torch.tensor(x), torch.tensor(y)[:, None]
    for _ in range(10):
        network.train_step(x, y)
        optimizer.zero_grad()
        a = inputs
        for layer in range(3):
            z = a @ params[2 * layer] + params[2 * layer + 1]
            a = torch.sigmoid(z) if layer == 2 else torch.tanh(z)
        loss = torch.nn.functional.binary_cross_entropy(a, targets)
        (loss + L1 * sum(p.abs().sum() for p in params[0::2])).backward()
        optimizer.step()
    for layer, (W, b) in enumerate(network.get_weights()):
        np.testing.assert_allclose(W, params[2 * layer].detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, params[2 * layer + 1].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_l1_is_in_the_spec_and_refused_when_negative():
    """`l1` is part of Network.spec (default 0) and a negative one is refused."""
    from nnserve.model import InvalidSpec

    assert Network([2, 1], ["identity"], "mse").spec["l1"] == 0.0
    with pytest.raises(InvalidSpec, match="l1: got -0.1"):
        Network([2, 1], ["identity"], "mse", l1=-0.1)


def test_the_sdk_and_the_contract_carry_l1():
    """create_model(l1=...) reaches the server's model: GetModel's spec has it, and the trained weights match a local Network's."""
    from nnserve.clients import Client
    from service_support import running_server

    with running_server(http_port=0) as running, Client(running.target) as client:
        remote = client.create_model(LAYERS, ACTIVATIONS, "binary_cross_entropy", l1=L1,
                                     learning_rate=LEARNING_RATE, init="xavier", seed=1,
                                     dtype="float64")
        assert remote.spec["l1"] == L1
        local, weights, x, y = make_case()
        remote.set_weights(weights)
        remote.train_step(x, y)
        local.train_step(x, y)
        for (W, b), (local_W, local_b) in zip(remote.get_weights(), local.get_weights()):
            np.testing.assert_array_equal(W, local_W)
            np.testing.assert_array_equal(b, local_b)
