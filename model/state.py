"""A network's state as users hold it: weights as [(W, b), ...] per layer, optimizer slots
likewise, and the checks that a state given back fits the network.

The kernels keep parameters in one flat vector, layer after layer: W (n_in x n_out,
row-major) then b (n_out). `Layout` converts between the two forms.
"""

import numpy as np

from .errors import IncompatibleState, InvalidState

__all__ = ["STATE_KEYS", "STRUCTURE", "Layout", "check_structure"]

# What get_state() returns ("version" too, which set_state ignores: loading a state is a
# change of its own, with a new version).
STATE_KEYS = ("spec", "step", "weights", "slots")
# The spec keys that fix a network's structure: a state moves only between equal ones.
STRUCTURE = ("layers", "activations", "loss", "optimizer", "dtype")


class Layout:
    """The per-layer view of a flat parameter vector for `layers` [n_in, ..., n_out]."""

    def __init__(self, layers, dtype):
        self.layers = list(layers)
        self.dtype = np.dtype(dtype)

    def split(self, flat):
        """Copies of [(W (n_in, n_out), b (n_out,)), ...] from a flat vector."""
        pieces, offset = [], 0
        for n_in, n_out in zip(self.layers[:-1], self.layers[1:]):
            weights = flat[offset:offset + n_in * n_out].reshape(n_in, n_out).copy()
            offset += n_in * n_out
            pieces.append((weights, flat[offset:offset + n_out].copy()))
            offset += n_out
        return pieces

    def join(self, name, pairs):
        """Validate [(W, b), ...] against the layer sizes and return it flattened."""
        n_layers = len(self.layers) - 1
        if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__len__"):
            raise InvalidState(f"{name}: got {type(pairs).__name__}, expected a list of {n_layers} "
                               "(W, b) pairs, one per layer")
        if len(pairs) != n_layers:
            raise InvalidState(f"{name}: got {len(pairs)} pairs, expected a list of {n_layers} "
                               "(W, b) pairs, one per layer")
        pieces = []
        for i, pair in enumerate(pairs):
            if not hasattr(pair, "__len__") or len(pair) != 2:
                got = f"length {len(pair)}" if hasattr(pair, "__len__") else "no length"
                raise InvalidState(f"{name}[{i}]: got {type(pair).__name__} of {got}, "
                                   "expected a pair (W, b)")
            n_in, n_out = self.layers[i], self.layers[i + 1]
            for part, array, shape in (("W", pair[0], (n_in, n_out)), ("b", pair[1], (n_out,))):
                label = f"{name}[{i}].{part}"
                if not isinstance(array, np.ndarray):
                    raise InvalidState(f"{label}: got {type(array).__name__}, expected a numpy array")
                if array.shape != shape:
                    raise InvalidState(f"{label}: got shape {array.shape}, expected {shape}")
                if not np.can_cast(array.dtype, self.dtype, "safe"):
                    raise InvalidState(f"{label}: got dtype {array.dtype}, expected {self.dtype.name}")
                if not np.isfinite(array).all():
                    raise InvalidState(f"{label}: got non-finite values, expected only finite numbers")
                pieces.append(array.astype(self.dtype, copy=False).ravel())
        return np.concatenate(pieces)


def check_structure(state, spec):
    """Raise unless `state` is a get_state() dict of a network with `spec`'s structure.

    InvalidState for a malformed dict; IncompatibleState for a well-formed state of
    another structure (the one check of it, for in-process and served models alike).
    """
    if not isinstance(state, dict):
        raise InvalidState(f"state: got {type(state).__name__}, expected a dict with keys "
                           f"{', '.join(STATE_KEYS)} (as returned by get_state)")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise InvalidState(f"state: got keys {sorted(state)}, expected also {missing} "
                           "(as returned by get_state)")
    theirs = state["spec"]
    if not isinstance(theirs, dict):
        raise InvalidState(f"state: got spec {theirs!r} of type {type(theirs).__name__}, "
                           "expected a dict like Network.spec")
    for key in STRUCTURE:
        if list(np.atleast_1d(theirs.get(key))) != list(np.atleast_1d(spec[key])):
            raise IncompatibleState(
                f"state.spec.{key}: got {theirs.get(key)!r}, expected {spec[key]!r} (this "
                "model's); create a model with state['spec'] to load this state")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InvalidState(f"state: got step={step!r}, expected an integer >= 0")
