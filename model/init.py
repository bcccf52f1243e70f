"""Initial parameters, deterministic from an integer seed."""

import numpy as np


def initial_parameters(layer_sizes, init, seed, dtype):
    """Return the flat parameter vector: per layer W (n_in x n_out) then b = 0.

    he: W ~ Normal(0, sqrt(2 / n_in)) (Kaiming normal, fan-in, relu gain).
    xavier: W ~ Uniform(-a, a), a = sqrt(6 / (n_in + n_out)) (Glorot uniform).
    Draws are made in float64 from one numpy Generator and then cast, so a float32 and a
    float64 network with the same seed start from the same weights up to rounding.
    """
    rng = np.random.default_rng(seed)
    pieces = []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        if init == "he":
            weights = rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out))
        else:
            bound = np.sqrt(6.0 / (n_in + n_out))
            weights = rng.uniform(-bound, bound, size=(n_in, n_out))
        pieces.append(weights.ravel())
        pieces.append(np.zeros(n_out))
    return np.concatenate(pieces).astype(dtype)
