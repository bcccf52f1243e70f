"""Checks on network specs and on the arrays given to a Network.

Every check raises ValueError with a message of the form "got X, expected Y" and says
what to use instead; nothing is changed before all checks have passed.
"""

import math
import numbers

import numpy as np

from .codes import ACTIVATIONS, DTYPES, INITS, LOSSES, OPTIMIZERS, ROW_SUM_TOLERANCE

_OUTPUT_FOR_LOSS = {"binary_cross_entropy": "sigmoid", "cross_entropy": "softmax"}


def _choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: got {value!r}, expected one of {', '.join(allowed)}")
    return value


def _real(name, value, *, low=None, low_inclusive=True, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: got {value!r}, expected a finite number")
    value = float(value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name}: got {value!r}, expected a number {bound} {low}")
    if high is not None and value >= high:
        raise ValueError(f"{name}: got {value!r}, expected a number < {high}")
    return value


def _integer(name, value, *, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {low}")
    return int(value)


def check_spec(layers, activations, loss, *, optimizer, learning_rate, momentum, nesterov,
               weight_decay, betas, eps, init, seed, dtype):
    """Return the spec as a plain dict of builtins, or raise ValueError."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or len(layers) < 2:
        raise ValueError(f"layers: got {layers!r}, expected a list [n_in, ..., n_out] of at least two sizes")
    layers = [_integer(f"layers[{i}]", size, low=1) for i, size in enumerate(layers)]
    if isinstance(activations, str) or not hasattr(activations, "__len__"):
        raise ValueError(f"activations: got {activations!r}, expected a list of names, one per layer after the input")
    if len(activations) != len(layers) - 1:
        raise ValueError(f"activations: got {len(activations)} names, expected {len(layers) - 1} "
                         f"(one per layer after the input for layers={layers})")
    activations = [_choice(f"activations[{i}]", a, ACTIVATIONS) for i, a in enumerate(activations)]
    for i, activation in enumerate(activations[:-1]):
        if activation == "softmax":
            raise ValueError(f"activations[{i}]: got 'softmax' on a hidden layer, expected it only on "
                             "the output layer; use relu, leaky_relu, tanh or sigmoid for hidden layers")
    loss = _choice("loss", loss, LOSSES)
    output = activations[-1]
    wanted = _OUTPUT_FOR_LOSS.get(loss)
    if wanted is not None and output != wanted:
        raise ValueError(f"loss {loss!r}: got output activation {output!r}, expected {wanted!r}")
    if output == "softmax" and loss != "cross_entropy":
        raise ValueError(f"output activation 'softmax': got loss {loss!r}, expected 'cross_entropy' "
                         "(or use identity/sigmoid outputs with mse)")
    if output == "softmax" and layers[-1] < 2:
        raise ValueError("output activation 'softmax': got 1 output, expected at least 2 classes; "
                         "for two classes with one output use sigmoid with binary_cross_entropy")
    optimizer = _choice("optimizer", optimizer, OPTIMIZERS)
    learning_rate = _real("learning_rate", learning_rate, low=0.0, low_inclusive=False)
    momentum = _real("momentum", momentum, low=0.0, high=1.0)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"nesterov: got {nesterov!r}, expected True or False")
    nesterov = bool(nesterov)
    weight_decay = _real("weight_decay", weight_decay, low=0.0)
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas: got {betas!r}, expected two numbers (beta1, beta2) in [0, 1)")
    betas = [_real(f"betas[{i}]", beta, low=0.0, high=1.0) for i, beta in enumerate(betas)]
    eps = _real("eps", eps, low=0.0, low_inclusive=False)
    if optimizer == "sgd" and nesterov and momentum == 0.0:
        raise ValueError("nesterov: got True with momentum 0, expected a momentum > 0 "
                         "(Nesterov momentum needs momentum)")
    if optimizer == "adam" and (momentum != 0.0 or nesterov):
        raise ValueError(f"momentum/nesterov: got momentum={momentum}, nesterov={nesterov} with adam, "
                         "expected them unset; adam's moments are set with betas")
    init = _choice("init", init, INITS)
    seed = _integer("seed", seed, low=0)
    # np.dtype(None) is float64: None must not slip through as a silent default.
    dtype = _choice("dtype", np.dtype(dtype).name if dtype is not None and _is_dtype(dtype)
                    else dtype, DTYPES)
    return {
        "layers": layers, "activations": activations, "loss": loss, "optimizer": optimizer,
        "learning_rate": learning_rate, "momentum": momentum, "nesterov": nesterov,
        "weight_decay": weight_decay, "betas": betas, "eps": eps, "init": init,
        "seed": seed, "dtype": dtype,
    }


def _is_dtype(value):
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def _as_array(name, value, dtype, *, allow_integers=False):
    """Return `value` as a C-contiguous array of `dtype`, refusing lossy casts."""
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        exact_labels = allow_integers and kind in "biu"
        if not exact_labels and not np.can_cast(value.dtype, dtype, "safe"):
            raise ValueError(f"{name}: got dtype {value.dtype}, expected {dtype.name} or a dtype that "
                             f"casts to it safely (convert with {name}.astype(np.{dtype.name}))")
        return np.ascontiguousarray(value, dtype=dtype)
    try:
        return np.ascontiguousarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: got {type(value).__name__} that is not a numeric array "
                         f"({error}), expected an array of {dtype.name}") from None


def _check_finite(name, array):
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name}: got a non-finite value {array[tuple(bad)]} at index "
                         f"{tuple(int(i) for i in bad)}, expected only finite numbers")


def check_inputs(x, n_in, dtype):
    """Return x as a C-contiguous (n_samples, n_in) array of dtype."""
    x = _as_array("x", x, dtype)
    if x.ndim != 2 or x.shape[1] != n_in:
        hint = "; reshape a single sample with x[None, :]" if x.ndim == 1 else ""
        raise ValueError(f"x: got shape {x.shape}, expected (n_samples, {n_in}){hint}")
    if x.shape[0] == 0:
        raise ValueError("x: got an empty batch (0 rows), expected at least one sample")
    _check_finite("x", x)
    return x


def check_targets(y, loss, n_out, n_samples, dtype):
    """Return (targets (n, n_out) of dtype, class_ids (n,) int64) for the kernels.

    cross_entropy takes class ids (n,) or probability rows (n, n_out); the unused one of
    the pair is returned empty. mse and binary_cross_entropy take (n, n_out), or (n,)
    when n_out is 1.
    """
    no_ids = np.empty(0, dtype=np.int64)
    y_array = y if isinstance(y, np.ndarray) else np.asarray(y)
    if loss == "cross_entropy" and y_array.ndim == 1:
        if y_array.dtype.kind not in "iu":
            raise ValueError(f"y: got class ids of dtype {y_array.dtype}, expected integers "
                             "(convert with y.astype(np.int64))")
        if y_array.shape[0] != n_samples:
            raise ValueError(f"y: got {y_array.shape[0]} class ids, expected {n_samples} (one per row of x)")
        if y_array.size and (y_array.min() < 0 or y_array.max() >= n_out):
            bad = y_array[(y_array < 0) | (y_array >= n_out)][0]
            raise ValueError(f"y: got class id {bad}, expected ids in [0, {n_out})")
        return np.empty((0, n_out), dtype=dtype), np.ascontiguousarray(y_array, dtype=np.int64)

    if loss == "cross_entropy" and y_array.dtype.kind in "iu" and y_array.ndim == 2 and y_array.shape[1] == 1:
        raise ValueError(f"y: got class ids of shape {y_array.shape}, expected shape ({n_samples},) "
                         "(flatten them with y.ravel())")
    targets = _as_array("y", y, dtype, allow_integers=loss == "binary_cross_entropy")
    if targets.ndim == 1 and n_out == 1:
        targets = targets.reshape(-1, 1)
    if targets.shape != (n_samples, n_out):
        expected = f"({n_samples}, {n_out})"
        if loss == "cross_entropy":
            expected = f"({n_samples},) class ids or {expected} probability rows"
        raise ValueError(f"y: got shape {targets.shape}, expected {expected}")
    _check_finite("y", targets)
    if loss == "binary_cross_entropy" and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(f"y: got targets in [{targets.min()}, {targets.max()}], expected values "
                         "in [0, 1] for binary_cross_entropy")
    if loss == "cross_entropy":
        if targets.min() < 0:
            raise ValueError(f"y: got a negative probability {targets.min()}, expected rows of "
                             "probabilities >= 0 that sum to 1")
        sums = targets.sum(axis=1, dtype=np.float64)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
            raise ValueError(f"y: got a probability row {worst} summing to {sums[worst]:.6g}, "
                             "expected rows that sum to 1 (or pass class ids of shape (n,))")
    return targets, no_ids
