"""Shared test inputs for the kernel tests: the activation/loss pairings and data makers.

Every maker takes an explicit numpy Generator so each test chooses its own seed.
"""

import numpy as np

HIDDEN_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")

# (output activation, loss, target kind): every output/loss pairing the API accepts.
# Target kinds: "rows" (n, n_out) of floats, "class_ids" (n,) int64, "probability_rows".
OUTPUT_LOSS_PAIRS = (
    ("identity", "mse", "rows"),
    ("sigmoid", "mse", "rows"),
    ("tanh", "mse", "rows"),
    ("relu", "mse", "rows"),
    ("leaky_relu", "mse", "rows"),
    ("sigmoid", "binary_cross_entropy", "rows"),
    ("softmax", "cross_entropy", "class_ids"),
    ("softmax", "cross_entropy", "probability_rows"),
)


def pair_id(pair):
    output, loss, kind = pair
    return f"{output}-{loss}" + (f"-{kind}" if loss == "cross_entropy" else "")


def random_weights(rng, layers, *, bias_scale=0.5):
    """Return [(W, b), ...] in float64 with W ~ N(0, 1/n_in) and non-zero biases."""
    return [(rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_in, n_out)),
             rng.normal(0.0, bias_scale, size=n_out))
            for n_in, n_out in zip(layers[:-1], layers[1:])]


def random_inputs(rng, n_samples, n_in):
    return rng.normal(0.0, 1.0, size=(n_samples, n_in))


def random_targets(rng, loss, kind, n_samples, n_out):
    """Return targets valid for the loss: floats, [0, 1] values, class ids or probability rows."""
    if loss == "mse":
        return rng.normal(0.0, 1.0, size=(n_samples, n_out))
    if loss == "binary_cross_entropy":
        # Fractional targets exercise the y-weighted terms beyond plain 0/1 labels.
        return rng.uniform(0.0, 1.0, size=(n_samples, n_out))
    if kind == "class_ids":
        return rng.integers(0, n_out, size=n_samples).astype(np.int64)
    return rng.dirichlet(np.ones(n_out), size=n_samples)


def largest_magnitude(array):
    """Return max|array|: the scale an array's tolerance is taken relative to."""
    return float(np.max(np.abs(array))) if np.size(array) else 0.0


def assert_close_to_scale(actual, expected, rtol, what):
    """Assert |actual - expected| <= rtol * max|expected| elementwise, after shape and dtype."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = largest_magnitude(expected)
    worst = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    assert worst <= rtol * scale, (
        f"{what}: largest difference {worst:.3e} exceeds {rtol:g} x max|expected| ({scale:.3e})")
