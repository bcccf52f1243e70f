"""Whole optimizer trajectories: Network against tests/reference.py and against torch.optim.

Each case trains a small float64 network for 100 steps on a fixed sequence of batches and
compares the loss returned by every step and the weights after every step. Tolerances
are relative to the largest magnitude of each compared array. Batch sizes run as 8, as 1
(single-sample steps take their own fused update path) and as mixes of sizes.
"""

import numpy as np
import pytest

import reference
from kernel_cases import assert_close_to_scale, random_inputs, random_targets
from nnserve.model import Network

N_STEPS = 100
TRAJECTORY_RTOL = 1e-10
# batch_1_to_7 uses more distinct batch sizes than a Network keeps workspaces for (4).
BATCH_SCHEDULES = {"batch_8": [8], "batch_1": [1], "batch_mixed": [1, 8, 3],
                   "batch_1_to_7": [1, 2, 3, 4, 5, 6, 7]}

# (id, Network keywords, target kind): each optimizer setting on a different loss.
CASES = [
    ("sgd-mse", dict(layers=[4, 6, 5, 3], activations=["tanh", "tanh", "identity"], loss="mse",
                     optimizer="sgd", learning_rate=0.05, init="xavier"), "rows"),
    ("sgd_decay-binary_cross_entropy",
     dict(layers=[4, 6, 5, 3], activations=["relu", "leaky_relu", "sigmoid"], loss="binary_cross_entropy",
          optimizer="sgd", learning_rate=0.1, weight_decay=0.02), "rows"),
    ("sgd_momentum-mse_sigmoid", dict(layers=[4, 6, 5, 3], activations=["sigmoid", "tanh", "sigmoid"],
                                      loss="mse", optimizer="sgd", learning_rate=0.1,
                                      momentum=0.5, init="xavier"), "rows"),
    ("sgd_nesterov_decay-cross_entropy_ids",
     dict(layers=[4, 6, 5, 3], activations=["relu", "relu", "softmax"], loss="cross_entropy",
          optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     "class_ids"),
    ("adam-binary_cross_entropy",
     dict(layers=[4, 6, 5, 3], activations=["leaky_relu", "tanh", "sigmoid"],
          loss="binary_cross_entropy", optimizer="adam", learning_rate=0.01), "rows"),
    ("adam_decay-cross_entropy_probabilities",
     dict(layers=[4, 6, 5, 3], activations=["tanh", "leaky_relu", "softmax"], loss="cross_entropy",
          optimizer="adam", learning_rate=0.005, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.05),
     "probability_rows"),
]
CASE_IDS = [case[0] for case in CASES]

OPTIMIZER_KEYWORDS = ("optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "betas",
                      "eps")


def make_batches(spec, kind, n_steps, schedule, seed=7):
    """Return n_steps (x, y) float64 batches valid for the spec's loss, sized by cycling through schedule."""
    rng = np.random.default_rng(seed)
    n_in, n_out = spec["layers"][0], spec["layers"][-1]
    sizes = [schedule[step % len(schedule)] for step in range(n_steps)]
    return [(random_inputs(rng, size, n_in), random_targets(rng, spec["loss"], kind, size, n_out))
            for size in sizes]


def optimizer_keywords(spec):
    return {key: spec[key] for key in OPTIMIZER_KEYWORDS if key in spec}


def nnserve_trajectory(network, batches):
    """Return (per-step losses, weights after each step) of Network.train_step."""
    losses, weights = [], []
    for x, y in batches:
        losses.append(network.train_step(x, y))
        weights.append(network.get_weights())
    return np.array(losses), weights


def assert_same_trajectory(got, expected, rtol):
    """Assert per-step losses and per-step weights agree within rtol of each array's scale."""
    got_losses, got_weights = got
    expected_losses, expected_weights = expected
    assert got_losses.shape == expected_losses.shape == (N_STEPS,)
    assert_close_to_scale(got_losses, expected_losses, rtol, "per-step losses")
    for step, (after, expected_after) in enumerate(zip(got_weights, expected_weights), start=1):
        for layer, ((W, b), (W_ref, b_ref)) in enumerate(zip(after, expected_after)):
            assert_close_to_scale(W, W_ref, rtol, f"step {step} layer {layer} W")
            assert_close_to_scale(b, b_ref, rtol, f"step {step} layer {layer} b")


@pytest.mark.parametrize("schedule", BATCH_SCHEDULES.values(), ids=BATCH_SCHEDULES.keys())
@pytest.mark.parametrize("case_id, keywords, kind", CASES, ids=CASE_IDS)
def test_trajectory_matches_reference(case_id, keywords, kind, schedule):
    """100 float64 train steps give the reference's per-step losses and per-step weights to 1e-10 relative."""
    network = Network(**keywords, seed=3, dtype="float64")
    spec = network.spec
    initial = network.get_weights()
    model = reference.ReferenceNetwork(initial, spec["activations"], spec["loss"],
                                       **optimizer_keywords(spec))
    batches = make_batches(spec, kind, N_STEPS, schedule)
    got = nnserve_trajectory(network, batches)
    expected_losses, expected_weights = [], []
    for x, y in batches:
        expected_losses.append(model.train_step(x, y))
        expected_weights.append(model.weights)
    assert network.step == N_STEPS
    assert_same_trajectory(got, (np.array(expected_losses), expected_weights), TRAJECTORY_RTOL)
    # The weights must have moved: a trajectory that stands still would match trivially.
    assert max(np.abs(W - W0).max() for (W, _), (W0, _) in zip(got[1][-1], initial)) > 1e-2


@pytest.mark.torch
@pytest.mark.parametrize("schedule", BATCH_SCHEDULES.values(), ids=BATCH_SCHEDULES.keys())
@pytest.mark.parametrize("case_id, keywords, kind", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch_optim(case_id, keywords, kind, schedule):
    """100 float64 train steps give torch.optim's per-step losses and weights (same initial weights and batches) to 1e-10 relative."""
    pytest.importorskip("torch", reason="torch not installed: PyTorch comparison needs the bench extra")
    import torch_mirror

    network = Network(**keywords, seed=3, dtype="float64")
    spec = network.spec
    mirror = torch_mirror.TorchMirror(network.get_weights(), spec["activations"], spec["loss"])
    optimizer = torch_mirror.make_optimizer(mirror, **optimizer_keywords(spec))
    batches = make_batches(spec, kind, N_STEPS, schedule)
    got = nnserve_trajectory(network, batches)
    expected_losses, expected_weights = [], []
    for x, y in batches:
        optimizer.zero_grad()
        loss = mirror.loss(x, y)
        loss.backward()
        optimizer.step()
        expected_losses.append(loss.item())
        expected_weights.append(mirror.get_weights())
    for (W, b), (W_torch, b_torch) in zip(got[1][-1], expected_weights[-1]):
        assert W.shape == W_torch.shape and b.shape == b_torch.shape
        assert W.dtype == W_torch.dtype == np.float64 and b.dtype == b_torch.dtype == np.float64
    assert_same_trajectory(got, (np.array(expected_losses), expected_weights), TRAJECTORY_RTOL)


FLOAT32_STEPS = 20
FLOAT32_RTOL = 1e-5


@pytest.mark.parametrize("schedule", BATCH_SCHEDULES.values(), ids=BATCH_SCHEDULES.keys())
@pytest.mark.parametrize("case_id, keywords, kind", CASES, ids=CASE_IDS)
def test_float32_network_follows_the_float64_one(case_id, keywords, kind, schedule):
    """After 20 steps a float32 network (same seed, same batches cast to float32) agrees with the float64 one to 1e-5 relative.

    Both start from the same float64 draws (float32 rounded), so the difference is float32
    rounding (unit roundoff 6e-8) accumulated over 20 forward/backward/update passes; the
    measured largest difference was 1e-6 of each array's scale, and 1e-5 leaves room for
    other BLAS builds while still catching a float32-only path that computes something else.
    """
    network64 = Network(**keywords, seed=3, dtype="float64")
    network32 = Network(**keywords, seed=3, dtype="float32")
    for x, y in make_batches(network64.spec, kind, FLOAT32_STEPS, schedule):
        network64.train_step(x, y)
        network32.train_step(x.astype(np.float32), y if y.dtype.kind == "i" else y.astype(np.float32))
    for layer, ((W32, b32), (W64, b64)) in enumerate(zip(network32.get_weights(), network64.get_weights())):
        assert W32.dtype == b32.dtype == np.float32
        assert_close_to_scale(W32, W64, FLOAT32_RTOL, f"layer {layer} W")
        assert_close_to_scale(b32, b64, FLOAT32_RTOL, f"layer {layer} b")
