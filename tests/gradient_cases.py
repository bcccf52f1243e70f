"""Central finite differences of a scalar function of [(W, b), ...] for the gradient tests."""

import numpy as np

__all__ = ["FD_STEP", "central_differences"]

# Central differences with this step have truncation error ~1e-13 and rounding error
# ~1e-10 relative to a loss of order 1.
FD_STEP = 1e-6


def central_differences(objective, weights):
    """[(dW, db), ...]: (objective(p + h) - objective(p - h)) / 2h for every parameter p."""
    estimates = []
    for layer, pair in enumerate(weights):
        layer_estimate = []
        for part in (0, 1):
            estimate = np.zeros_like(pair[part])
            for index in np.ndindex(pair[part].shape):
                values = []
                for sign in (+1, -1):
                    perturbed = [[W.copy(), b.copy()] for W, b in weights]
                    perturbed[layer][part][index] += sign * FD_STEP
                    values.append(objective(perturbed))
                estimate[index] = (values[0] - values[1]) / (2 * FD_STEP)
            layer_estimate.append(estimate)
        estimates.append(tuple(layer_estimate))
    return estimates
