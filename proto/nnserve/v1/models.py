"""The contract's model codec: ModelSpec, ModelState and TrainingOptions <-> the plain dicts
of `Network`, and the ModelFormat names.

`nnserve.kernels.Network(**spec)` takes and `Network.spec` / `get_state()` return plain
dicts whose names are the proto enum value names lower-cased without their prefix
(ACTIVATION_LEAKY_RELU <-> "leaky_relu"). The decoders reject UNSPECIFIED and unknown
enum values; everything else (layer sizes, hyper-parameter ranges, array shapes) is
Network's to check. Numpy and protobuf only, like tensors.py.
"""

import numpy as np

from .nnserve_pb2 import (Activation, DataType, Init, LayerParameters, Loss, ModelFormat,
                          ModelSpec, ModelState, Optimizer, OptimizerSlot, TrainingOptions)
from .tensors import InvalidMessage, to_array, to_tensor

__all__ = ["format_from_proto", "layers_from_proto", "layers_to_proto", "options_from_proto",
           "options_to_proto", "spec_from_proto", "spec_to_proto", "state_from_proto",
           "state_to_proto"]

# Optional scalar fields: unset in the message means Network's default.
_TRAINING_OPTIONAL = ("learning_rate", "momentum", "nesterov", "weight_decay", "eps")
_OPTIONAL = (*_TRAINING_OPTIONAL, "l1", "seed")


class _EnumCodec:
    """Names <-> values of one proto enum, without its prefix and UNSPECIFIED."""

    def __init__(self, enum, prefix):
        self.enum = enum
        self.names = {value: name[len(prefix):].lower()
                      for name, value in enum.items() if value != 0}
        self.values = {name: value for value, name in self.names.items()}

    def name(self, value, field):
        name = self.names.get(value)
        if name is None:
            label = self.enum.Name(value) if value in self.enum.values() else str(value)
            expected = ", ".join(self.enum.Name(v) for v in self.names)
            raise InvalidMessage(f"{field}: got {label}, expected one of {expected}")
        return name

    def value(self, name, field):
        value = self.values.get(name)
        if value is None:
            raise InvalidMessage(f"{field}: got {name!r}, expected one of {', '.join(self.values)}")
        return value


_ACTIVATION = _EnumCodec(Activation, "ACTIVATION_")
_LOSS = _EnumCodec(Loss, "LOSS_")
_OPTIMIZER = _EnumCodec(Optimizer, "OPTIMIZER_")
_INIT = _EnumCodec(Init, "INIT_")
_DATA_TYPE = _EnumCodec(DataType, "DATA_TYPE_")
_FORMAT = _EnumCodec(ModelFormat, "MODEL_FORMAT_")
_KEYS = {"layers", "activations", "loss", "optimizer", "init", "dtype", "betas", *_OPTIONAL}
_OPTION_KEYS = {"loss", "optimizer", "betas", *_TRAINING_OPTIONAL}


def spec_from_proto(message, field="spec"):
    """Return the keyword arguments of Network(**spec) that `message` sets.

    Unset optional hyper-parameters are left out, so Network's defaults apply (the proto
    documents them). Raises InvalidMessage for an UNSPECIFIED or unknown enum value.
    """
    spec = {
        "layers": list(message.layers),
        "activations": [_ACTIVATION.name(value, f"{field}.activations[{i}]")
                        for i, value in enumerate(message.activations)],
        "loss": _LOSS.name(message.loss, f"{field}.loss"),
        "optimizer": _OPTIMIZER.name(message.optimizer, f"{field}.optimizer"),
        "init": _INIT.name(message.init, f"{field}.init"),
        "dtype": _DATA_TYPE.name(message.dtype, f"{field}.dtype"),
    }
    for key in _OPTIONAL:
        if message.HasField(key):
            spec[key] = getattr(message, key)
    if message.betas:
        spec["betas"] = list(message.betas)
    return spec


def spec_to_proto(spec):
    """Return a ModelSpec from a dict like Network.spec; absent optional keys stay unset.

    Raises InvalidMessage for an unknown key or enum name. Values are not range-checked
    here: the server does that (INVALID_ARGUMENT).
    """
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise InvalidMessage(f"spec: got unknown keys {unknown}, expected some of {sorted(_KEYS)}")
    message = ModelSpec(
        layers=spec.get("layers", ()),
        activations=[_ACTIVATION.value(name, f"activations[{i}]")
                     for i, name in enumerate(spec.get("activations", ()))],
        loss=_LOSS.value(spec.get("loss"), "loss"),
        optimizer=_OPTIMIZER.value(spec.get("optimizer"), "optimizer"),
        init=_INIT.value(spec.get("init"), "init"),
        dtype=_DATA_TYPE.value(_dtype_name(spec.get("dtype")), "dtype"),
        betas=spec.get("betas", ()),
    )
    for key in _OPTIONAL:
        if key in spec:
            setattr(message, key, spec[key])
    return message


def options_from_proto(message, field="options"):
    """Return the keyword arguments of Network.from_onnx that TrainingOptions `message` sets
    (loss, optimizer, and the optional hyper-parameters that are set). Raises InvalidMessage
    for an UNSPECIFIED or unknown enum value."""
    options = {"loss": _LOSS.name(message.loss, f"{field}.loss"),
               "optimizer": _OPTIMIZER.name(message.optimizer, f"{field}.optimizer")}
    for key in _TRAINING_OPTIONAL:
        if message.HasField(key):
            options[key] = getattr(message, key)
    if message.betas:
        options["betas"] = list(message.betas)
    return options


def options_to_proto(options):
    """Return TrainingOptions from a dict of Network.from_onnx's keywords; absent optional
    keys stay unset. Raises InvalidMessage for an unknown key or enum name."""
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise InvalidMessage(f"options: got unknown keys {unknown}, expected some of {sorted(_OPTION_KEYS)}")
    message = TrainingOptions(loss=_LOSS.value(options.get("loss"), "loss"),
                              optimizer=_OPTIMIZER.value(options.get("optimizer"), "optimizer"),
                              betas=options.get("betas", ()))
    for key in _TRAINING_OPTIONAL:
        if key in options:
            setattr(message, key, options[key])
    return message


def format_from_proto(value, field="format"):
    """The name of a ModelFormat value ("onnx"); InvalidMessage for UNSPECIFIED or unknown."""
    return _FORMAT.name(value, field)


def _dtype_name(dtype):
    """"float32" for "float32", np.float32 or np.dtype("float32"); anything else unchanged."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype


def layers_from_proto(layers, field="weights"):
    """Return [(W, b), ...] (writable copies) from repeated LayerParameters.

    Raises InvalidTensor for an undecodable tensor, named `field[i].weights` or
    `field[i].biases`. Count, shapes, dtypes and values are Network's to check.
    """
    return [(to_array(layer.weights, f"{field}[{i}].weights"),
             to_array(layer.biases, f"{field}[{i}].biases"))
            for i, layer in enumerate(layers)]


def layers_to_proto(pairs, field="weights"):
    """Return a list of LayerParameters from [(W, b), ...] like Network.get_weights().

    Raises InvalidMessage when an entry is not a pair, InvalidTensor for an array whose
    dtype the contract lacks.
    """
    layers = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes, dict)) or not hasattr(pair, "__len__") or len(pair) != 2:
            got = f"of length {len(pair)}" if hasattr(pair, "__len__") else "without a length"
            raise InvalidMessage(f"{field}[{i}]: got {type(pair).__name__} {got}, expected a pair (W, b)")
        layers.append(LayerParameters(weights=to_tensor(pair[0], f"{field}[{i}].weights"),
                                      biases=to_tensor(pair[1], f"{field}[{i}].biases")))
    return layers


def state_from_proto(message, field="state"):
    """Return the dict Network.set_state takes; arrays are writable copies.

    Raises InvalidMessage (or its subclass InvalidTensor) for an undecodable spec or
    tensor, or a slot name given twice.
    """
    slots = {}
    for i, slot in enumerate(message.slots):
        if slot.name in slots:
            raise InvalidMessage(f"{field}.slots[{i}]: got slot name {slot.name!r} a second time, "
                                 "expected each slot once")
        slots[slot.name] = layers_from_proto(slot.layers, f"{field}.slots[{i}].layers")
    return {
        "spec": spec_from_proto(message.spec, f"{field}.spec"),
        "step": message.step,
        "weights": layers_from_proto(message.weights, f"{field}.weights"),
        "slots": slots,
    }


def state_to_proto(state):
    """Return a ModelState from Network.get_state()'s dict."""
    return ModelState(
        spec=spec_to_proto(state["spec"]),
        step=state["step"],
        weights=layers_to_proto(state["weights"], "state.weights"),
        slots=[OptimizerSlot(name=name, layers=layers_to_proto(pairs, f"state.slots[{name!r}]"))
               for name, pairs in state["slots"].items()],
    )
