"""A playground's settings: TF Playground's controls, checked, and the model spec they make.

Settings are a plain dict (JSON in and out). `checked` merges a partial update into the
current settings and refuses any value TF Playground would not offer, with the service's
"got X, expected Y" InvalidArgument, before anything changes.
"""

import numbers

from ..errors import InvalidArgument
from .data import CLASSIFICATION, FEATURES, REGRESSION

__all__ = ["DEFAULTS", "LEARNING_RATES", "REGULARIZATION_RATES", "checked", "model_spec",
           "needs_new_model", "needs_new_data"]

# TF Playground's lists (state.ts).
LEARNING_RATES = (0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10)
REGULARIZATION_RATES = (0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10)
ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
MAX_LAYERS, MAX_NEURONS = 6, 8

DEFAULTS = {
    "dataset": "circle", "seed": 1, "noise": 0, "train_ratio": 50, "batch_size": 10,
    "features": ["x1", "x2"], "hidden": [4, 2], "activation": "tanh", "learning_rate": 0.03,
    "regularization": "none", "regularization_rate": 0, "problem": "classification",
}

# Changing one of these makes a new model (new weights, epoch 0), as TF Playground resets.
_MODEL_KEYS = ("features", "hidden", "activation", "problem")
# Changing one of these makes new data (and, like TF Playground, new weights).
_DATA_KEYS = ("dataset", "seed", "noise", "train_ratio", "problem")


def _integer(key, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{key}: got {value!r}, expected an integer from {low} to {high}")
    return value


def _one_of(key, value, allowed):
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (value in allowed and (numeric or isinstance(value, str))):
        raise InvalidArgument(f"{key}: got {value!r}, expected one of "
                              f"{', '.join(map(str, allowed))}")
    return value


def _checked_value(key, value):
    if key == "dataset":
        return _one_of(key, value, CLASSIFICATION + REGRESSION)
    if key == "seed":
        return _integer(key, value, 0, 2**31 - 1)
    if key == "noise":
        return _integer(key, value, 0, 50)
    if key == "train_ratio":
        return _integer(key, value, 10, 90)
    if key == "batch_size":
        return _integer(key, value, 1, 30)
    if key == "features":
        if not isinstance(value, list) or not value or not set(value) <= set(FEATURES):
            raise InvalidArgument(f"features: got {value!r}, expected a non-empty list of "
                                  f"{', '.join(FEATURES)}")
        return [name for name in FEATURES if name in value]
    if key == "hidden":
        if not isinstance(value, list) or len(value) > MAX_LAYERS:
            raise InvalidArgument(f"hidden: got {value!r}, expected a list of at most "
                                  f"{MAX_LAYERS} layer sizes")
        return [_integer(f"hidden[{i}]", n, 1, MAX_NEURONS) for i, n in enumerate(value)]
    if key == "activation":
        return _one_of(key, value, ACTIVATIONS)
    if key == "learning_rate":
        return _one_of(key, value, LEARNING_RATES)
    if key == "regularization":
        return _one_of(key, value, ("none", "l1", "l2"))
    if key == "regularization_rate":
        return _one_of(key, value, REGULARIZATION_RATES)
    if key == "problem":
        return _one_of(key, value, ("classification", "regression"))
    raise InvalidArgument(f"settings: got {key!r}, expected only {', '.join(DEFAULTS)}")


def checked(current, update):
    """The settings `current` with `update` applied, every value checked; InvalidArgument
    for the first bad one (nothing changes). A data set of the other problem type switches
    the problem, and a problem switch picks its first data set, as TF Playground does."""
    if not isinstance(update, dict):
        raise InvalidArgument(f"settings: got {type(update).__name__}, expected an object")
    merged = dict(current)
    for key, value in update.items():
        merged[key] = _checked_value(key, value)
    if "dataset" in update:
        merged["problem"] = "classification" if merged["dataset"] in CLASSIFICATION else "regression"
    elif "problem" in update and update["problem"] != current.get("problem"):
        merged["dataset"] = CLASSIFICATION[0] if merged["problem"] == "classification" else REGRESSION[0]
    return merged


def needs_new_model(old, new):
    return any(old[key] != new[key] for key in _MODEL_KEYS + _DATA_KEYS)


def needs_new_data(old, new):
    return any(old[key] != new[key] for key in _DATA_KEYS + ("features",))


def model_spec(settings, seed):
    """Network's keywords for the settings: TF Playground's L2 rate is weight_decay (both
    add rate * W to the gradient), its L1 rate is l1 (adds rate * sign(W))."""
    classification = settings["problem"] == "classification"
    hidden = settings["hidden"]
    activation = "identity" if settings["activation"] == "linear" else settings["activation"]
    regularization, rate = settings["regularization"], float(settings["regularization_rate"])
    return {
        "layers": [len(settings["features"]), *hidden, 1],
        "activations": [activation] * len(hidden) + ["sigmoid" if classification else "identity"],
        "loss": "binary_cross_entropy" if classification else "mse",
        "learning_rate": float(settings["learning_rate"]),
        "weight_decay": rate if regularization == "l2" else 0.0,
        "init": "xavier" if activation in ("tanh", "sigmoid", "identity") else "he",
        "seed": seed, "dtype": "float32",
        **({"l1": rate} if regularization == "l1" else {}),
    }
