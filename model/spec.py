"""Checks on a network's spec: every refusal is an InvalidSpec "got X, expected Y" that
says what to use instead."""

import math
import numbers

import numpy as np

from nnserve.kernels.codes import ACTIVATIONS, DTYPES, INITS, LOSSES, OPTIMIZERS

from .errors import InvalidSpec

__all__ = ["check_spec"]

_OUTPUT_FOR_LOSS = {"binary_cross_entropy": "sigmoid", "cross_entropy": "softmax"}


def _choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise InvalidSpec(f"{name}: got {value!r}, expected one of {', '.join(allowed)}")
    return value


def _real(name, value, *, low=None, low_inclusive=True, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidSpec(f"{name}: got {value!r}, expected a finite number")
    value = float(value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = ">=" if low_inclusive else ">"
        raise InvalidSpec(f"{name}: got {value!r}, expected a number {bound} {low}")
    if high is not None and value >= high:
        raise InvalidSpec(f"{name}: got {value!r}, expected a number < {high}")
    return value


def _integer(name, value, *, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InvalidSpec(f"{name}: got {value!r}, expected an integer >= {low}")
    return int(value)


def check_spec(layers, activations, loss, *, optimizer, learning_rate, momentum, nesterov,
               weight_decay, l1, betas, eps, init, seed, dtype):
    """Return the spec as a plain dict of builtins, or raise InvalidSpec."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or len(layers) < 2:
        raise InvalidSpec(f"layers: got {layers!r}, expected a list [n_in, ..., n_out] of at least two sizes")
    layers = [_integer(f"layers[{i}]", size, low=1) for i, size in enumerate(layers)]
    if isinstance(activations, str) or not hasattr(activations, "__len__"):
        raise InvalidSpec(f"activations: got {activations!r}, expected a list of names, one per layer after the input")
    if len(activations) != len(layers) - 1:
        raise InvalidSpec(f"activations: got {len(activations)} names, expected {len(layers) - 1} "
                         f"(one per layer after the input for layers={layers})")
    activations = [_choice(f"activations[{i}]", a, ACTIVATIONS) for i, a in enumerate(activations)]
    for i, activation in enumerate(activations[:-1]):
        if activation == "softmax":
            raise InvalidSpec(f"activations[{i}]: got 'softmax' on a hidden layer, expected it only on "
                             "the output layer; use relu, leaky_relu, tanh or sigmoid for hidden layers")
    loss = _choice("loss", loss, LOSSES)
    output = activations[-1]
    wanted = _OUTPUT_FOR_LOSS.get(loss)
    if wanted is not None and output != wanted:
        raise InvalidSpec(f"loss {loss!r}: got output activation {output!r}, expected {wanted!r}")
    if output == "softmax" and loss != "cross_entropy":
        raise InvalidSpec(f"output activation 'softmax': got loss {loss!r}, expected 'cross_entropy' "
                         "(or use identity/sigmoid outputs with mse)")
    if output == "softmax" and layers[-1] < 2:
        raise InvalidSpec("output activation 'softmax': got 1 output, expected at least 2 classes; "
                         "for two classes with one output use sigmoid with binary_cross_entropy")
    optimizer = _choice("optimizer", optimizer, OPTIMIZERS)
    learning_rate = _real("learning_rate", learning_rate, low=0.0, low_inclusive=False)
    momentum = _real("momentum", momentum, low=0.0, high=1.0)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise InvalidSpec(f"nesterov: got {nesterov!r}, expected True or False")
    nesterov = bool(nesterov)
    weight_decay = _real("weight_decay", weight_decay, low=0.0)
    l1 = _real("l1", l1, low=0.0)
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise InvalidSpec(f"betas: got {betas!r}, expected two numbers (beta1, beta2) in [0, 1)")
    betas = [_real(f"betas[{i}]", beta, low=0.0, high=1.0) for i, beta in enumerate(betas)]
    eps = _real("eps", eps, low=0.0, low_inclusive=False)
    if optimizer == "sgd" and nesterov and momentum == 0.0:
        raise InvalidSpec("nesterov: got True with momentum 0, expected a momentum > 0 "
                         "(Nesterov momentum needs momentum)")
    if optimizer == "adam" and (momentum != 0.0 or nesterov):
        raise InvalidSpec(f"momentum/nesterov: got momentum={momentum}, nesterov={nesterov} with adam, "
                         "expected them unset; adam's moments are set with betas")
    init = _choice("init", init, INITS)
    seed = _integer("seed", seed, low=0)
    # np.dtype(None) is float64: None must not slip through as a silent default.
    dtype = _choice("dtype", np.dtype(dtype).name if dtype is not None and _is_dtype(dtype)
                    else dtype, DTYPES)
    return {
        "layers": layers, "activations": activations, "loss": loss, "optimizer": optimizer,
        "learning_rate": learning_rate, "momentum": momentum, "nesterov": nesterov,
        "weight_decay": weight_decay, "l1": l1, "betas": betas, "eps": eps, "init": init,
        "seed": seed, "dtype": dtype,
    }


def _is_dtype(value):
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True
