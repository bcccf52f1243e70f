"""A Network as an ONNX model, and an ONNX chain of dense layers as a Network's parts.

Export (`export_onnx`): opset 17, IR version 8, the model's element type (FLOAT or
DOUBLE) throughout. One Gemm per layer, z = input @ W + b, with W as nnserve holds it,
(n_in, n_out), so transB = 0 and the weights are written bit for bit; then the layer's
activation: identity none, sigmoid Sigmoid, tanh Tanh, relu Relu, softmax Softmax(axis=-1),
leaky_relu LeakyRelu(alpha=0.01) in float32 and PRelu(slope=[0.01]) in float64.
LeakyRelu's alpha is a float32 attribute, so a float64 runtime multiplies by
float32(0.01) = 0.00999999977648..., 2e-8 off nnserve's slope; PRelu's slope is a tensor
of the model's dtype and computes what nnserve computes. The graph's input is "input"
(batch, n_in) and its output "output" (batch, n_out), "batch" a dynamic dimension.
metadata_props hold the producer and its version, the step, the weights version and the
loss, and what the caller adds (the server: the model's id and name).

Import (`read_onnx`) takes what torch.onnx and skl2onnx make of a multi-layer perceptron:
one graph input (batch, n_in), then per layer a Gemm (transA 0, alpha and beta 1, either
transB) or a MatMul with an optional Add of the biases, the weights and biases stored as
initializers, then at most one of Relu, LeakyRelu (alpha 0.01), PRelu (slope 0.01),
Sigmoid, Tanh, or Softmax (axis 1 or -1) after the last layer only; the last node's output
is the graph's one output. float32 or float64 throughout. Anything else raises InvalidOnnx
naming the first node (index, name, op type) or the part it refuses; nothing is read from
files (external data is refused).
"""

import math
from dataclasses import dataclass

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as error:
    raise ImportError(f"ONNX export and import need the onnx package ({error}); install the "
                      "onnx extra: pip install 'nnserve[onnx]'") from error
from google.protobuf.message import DecodeError

from nnserve.kernels.codes import LEAKY_RELU_SLOPE

from .errors import InvalidOnnx
from .results import ExportedModel

__all__ = ["BATCH", "INPUT", "IR_VERSION", "OPSET", "OUTPUT", "DenseChain", "export_onnx",
           "read_onnx"]

OPSET = 17  # onnxruntime runs every op written here in float32 and float64 at this opset
IR_VERSION = 8  # the IR version of opset 17
INPUT, OUTPUT, BATCH = "input", "output", "batch"
PRODUCER = "nnserve"

_ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
_DTYPES = {element_type: dtype for dtype, element_type in _ELEMENT_TYPES.items()}
_PLAIN_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}  # op type: name
_PLAIN_OPS = {name: op_type for op_type, name in _PLAIN_ACTIVATIONS.items()}
_DOMAINS = ("", "ai.onnx")
_ACCEPTED = ("Gemm or MatMul (then an optional Add of the biases) per layer, each followed by "
             "at most one of Relu, LeakyRelu (alpha 0.01), PRelu (slope 0.01), Sigmoid, Tanh, "
             "or Softmax after the last layer")


def _nnserve_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnserve")
    except PackageNotFoundError:
        return "unknown"


# -- export ----------------------------------------------------------------------------------

def _activation_node(activation, source, target, name, dtype, initializers):
    """The node computing `activation` from `source` into `target` (identity has none)."""
    if activation == "softmax":
        return helper.make_node("Softmax", [source], [target], name=name, axis=-1)
    if activation == "leaky_relu" and dtype == np.float32:
        return helper.make_node("LeakyRelu", [source], [target], name=name, alpha=LEAKY_RELU_SLOPE)
    if activation == "leaky_relu":
        slope = f"{name}.slope"
        initializers.append(numpy_helper.from_array(np.array([LEAKY_RELU_SLOPE], dtype), slope))
        return helper.make_node("PRelu", [source, slope], [target], name=name)
    return helper.make_node(_PLAIN_OPS[activation], [source], [target], name=name)


def export_onnx(spec, weights, *, step, version, metadata=None):
    """Return the ONNX model of a network (spec as Network.spec, weights [(W, b), ...]) as
    ExportedModel bytes carrying `step` and `version`. `metadata` (str -> str) is added to
    metadata_props; the producer, step, weights version and loss entries are nnserve's."""
    dtype = np.dtype(spec["dtype"])
    element_type = _ELEMENT_TYPES[dtype]
    nodes, initializers = [], []
    current, last = INPUT, len(weights) - 1
    for i, ((layer_weights, biases), activation) in enumerate(zip(weights, spec["activations"])):
        layer = f"layer{i}"
        initializers += [numpy_helper.from_array(layer_weights, f"{layer}.weights"),
                         numpy_helper.from_array(biases, f"{layer}.biases")]
        z = OUTPUT if i == last and activation == "identity" else f"{layer}.z"
        nodes.append(helper.make_node("Gemm", [current, f"{layer}.weights", f"{layer}.biases"], [z],
                                      name=f"{layer}.gemm"))
        current = z
        if activation != "identity":
            a = OUTPUT if i == last else f"{layer}.a"
            nodes.append(_activation_node(activation, current, a, f"{layer}.{activation}", dtype,
                                          initializers))
            current = a
    graph = helper.make_graph(
        nodes, "nnserve",
        [helper.make_tensor_value_info(INPUT, element_type, [BATCH, spec["layers"][0]])],
        [helper.make_tensor_value_info(OUTPUT, element_type, [BATCH, spec["layers"][-1]])],
        initializer=initializers)
    producer_version = _nnserve_version()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name=PRODUCER,
                              producer_version=producer_version)
    helper.set_model_props(model, {**(metadata or {}), "producer": PRODUCER,
                                   "producer_version": producer_version, "step": str(step),
                                   "weights_version": str(version), "loss": spec["loss"]})
    return ExportedModel(model.SerializeToString(), step, version)


# -- import ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DenseChain:
    """What an ONNX chain of dense layers holds, as Network takes it: layers [n_in, ...,
    n_out], one activation name per layer, the dtype name, and weights [(W (n_in, n_out),
    b (n_out,)), ...] of that dtype."""

    layers: list
    activations: list
    dtype: str
    weights: list


def _type_name(element_type):
    try:
        return TensorProto.DataType.Name(element_type)
    except ValueError:
        return str(element_type)


def _broadcasts(shape, target):
    """True when an array of `shape` broadcasts to `target` without growing it."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def _describe(node, index):
    name = f" {node.name!r}" if node.name else ""
    return f"node {index}{name} ({node.op_type})"


def _parse(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidOnnx(f"model: got {type(data).__name__}, expected the bytes of an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(data))
    except DecodeError as error:
        raise InvalidOnnx(f"model: got {len(data)} bytes that do not parse as an ONNX ModelProto "
                          f"({error})") from None
    if not model.graph.node:
        raise InvalidOnnx("model: got a graph without nodes, expected an ONNX model of dense layers")
    return model


def _tensor_shape(value, what):
    """(element type, [dim or None, ...] or None when unknown) of a graph input or output."""
    if not value.type.HasField("tensor_type"):
        raise InvalidOnnx(f"{what} {value.name!r}: got a {value.type.WhichOneof('value')} type, "
                          "expected a tensor (batch, features)")
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return tensor_type.elem_type, None
    dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
    if len(dims) != 2:
        raise InvalidOnnx(f"{what} {value.name!r}: got {len(dims)} dimensions, expected 2 "
                          "(batch, features)")
    return tensor_type.elem_type, dims


def _array(tensor, dtype, where):
    """The initializer's values, checked to be of `dtype` and complete before they are read."""
    label = f"{where}: initializer {tensor.name!r}"
    if tensor.data_location == TensorProto.EXTERNAL:
        raise InvalidOnnx(f"{label}: got external data, expected its values inside the model "
                          "(nnserve reads no files)")
    if tensor.data_type != _ELEMENT_TYPES[dtype]:
        raise InvalidOnnx(f"{label}: got element type {_type_name(tensor.data_type)}, expected "
                          f"{_type_name(_ELEMENT_TYPES[dtype])} like the graph's input")
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise InvalidOnnx(f"{label}: got dimensions {dims}, expected dimensions >= 0")
    count = math.prod(dims)
    if tensor.HasField("raw_data"):
        got, expected, unit = len(tensor.raw_data), count * dtype.itemsize, "bytes"
    else:
        values = tensor.float_data if dtype == np.float32 else tensor.double_data
        got, expected, unit = len(values), count, "values"
    if got != expected:
        raise InvalidOnnx(f"{label}: got {got} {unit}, expected {expected} for dimensions {dims}")
    return numpy_helper.to_array(tensor).astype(dtype, copy=False)


def _number(node, name, default, where):
    """A numeric attribute of the node, or `default` when it is absent."""
    for attribute in node.attribute:
        if attribute.name == name:
            if attribute.type == onnx.AttributeProto.INT:
                return attribute.i
            if attribute.type == onnx.AttributeProto.FLOAT:
                return attribute.f
            kind = onnx.AttributeProto.AttributeType.Name(attribute.type)
            raise InvalidOnnx(f"{where}: got attribute {name} of type {kind}, expected a number")
    return default


class _ChainReader:
    """Reads a graph's nodes in order, each extending the chain of layers by one step:
    a layer (Gemm, MatMul), its biases (Add after MatMul) or its activation."""

    def __init__(self, graph):
        self.constants = {tensor.name: tensor for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in self.constants]
        if len(inputs) != 1:
            raise InvalidOnnx(f"graph inputs: got {len(inputs)} {[value.name for value in inputs]}, "
                              "expected one, the batch (batch, n_in)")
        element_type, dims = _tensor_shape(inputs[0], "input")
        if element_type not in _DTYPES:
            raise InvalidOnnx(f"input {inputs[0].name!r}: got element type {_type_name(element_type)}, "
                              "expected FLOAT or DOUBLE")
        self.dtype = _DTYPES[element_type]
        self.current = inputs[0].name  # the tensor the next node must read: the chain's end
        self.widths = [dims[1] if dims else None]  # n_in unknown until the first layer
        self.weights = []  # [W, b or None], one per layer
        self.activations = []  # a name, or None while the layer has none yet
        self.previous_op = None  # an Add must follow a MatMul
        self.readers = {"Gemm": self.gemm, "MatMul": self.matmul, "Add": self.add,
                        "LeakyRelu": self.leaky_relu, "PRelu": self.prelu, "Softmax": self.softmax,
                        **{op_type: self.plain_activation for op_type in _PLAIN_ACTIVATIONS}}

    def read(self, node, index):
        """Extend the chain by `node`, or raise InvalidOnnx naming it."""
        where = _describe(node, index)
        reader = self.readers.get(node.op_type) if node.domain in _DOMAINS else None
        if reader is None:
            domain = f" of domain {node.domain!r}" if node.domain not in _DOMAINS else ""
            raise InvalidOnnx(f"{where}: got an operator{domain} nnserve does not support, expected "
                              f"{_ACCEPTED}")
        if self.activations and self.activations[-1] == "softmax":
            raise InvalidOnnx(f"{where}: got a node after Softmax, expected Softmax last (nnserve's "
                              "softmax is an output activation)")
        if len(node.output) != 1:
            raise InvalidOnnx(f"{where}: got {len(node.output)} outputs, expected 1")
        reader(node, where)
        self.current, self.previous_op = node.output[0], node.op_type

    def constant_inputs(self, node, where, expected, required=(), optional=(), *, data_at=(0,)):
        """{position: array} of the node's initializer inputs, after checking that it reads
        the chain's end at one of the positions `data_at`, the `required` initializers and
        perhaps the `optional` ones, and nothing else (`expected` says so in words)."""
        data = [i for i, name in enumerate(node.input) if name and name not in self.constants]
        constants = {i for i, name in enumerate(node.input) if name and name in self.constants}
        if (len(data) != 1 or node.input[data[0]] != self.current or data[0] not in data_at
                or not set(required) <= constants <= set(required) | set(optional)):
            raise InvalidOnnx(f"{where}: got inputs {list(node.input)}, expected "
                              f"{self.current!r} (the chain so far){expected}")
        return {i: _array(self.constants[node.input[i]], self.dtype, where) for i in constants}

    # -- layers ------------------------------------------------------------------------

    def gemm(self, node, where):
        forms = tuple(_number(node, name, default, where)
                      for name, default in (("transA", 0), ("alpha", 1.0), ("beta", 1.0)))
        if forms != (0, 1.0, 1.0):
            raise InvalidOnnx(f"{where}: got transA={forms[0]}, alpha={forms[1]:g}, beta={forms[2]:g}, "
                              "expected transA=0, alpha=1, beta=1")
        constants = self.constant_inputs(node, where, ", the weights initializer and perhaps the "
                                         "biases initializer", required=(1,), optional=(2,))
        weights, transposed = constants[1], _number(node, "transB", 0, where) != 0
        self.add_layer(where, weights.T if transposed and weights.ndim == 2 else weights,
                       f"{weights.shape}{' (transB=1)' if transposed else ''}")
        if 2 in constants:
            self.set_biases(where, constants[2])

    def matmul(self, node, where):
        weights = self.constant_inputs(node, where, " then the weights initializer", required=(1,))[1]
        self.add_layer(where, weights, weights.shape)

    def add(self, node, where):
        if self.previous_op != "MatMul":
            raise InvalidOnnx(f"{where}: got an Add that does not follow a MatMul, expected Add only "
                              "to add a MatMul's biases")
        constants = self.constant_inputs(node, where, " and the biases initializer", optional=(0, 1),
                                         data_at=(0, 1))
        if len(constants) != 1:
            raise InvalidOnnx(f"{where}: got inputs {list(node.input)}, expected {self.current!r} "
                              "and the biases initializer")
        self.set_biases(where, *constants.values())

    def add_layer(self, where, weights, shown_shape):
        n_in = self.widths[-1]
        if weights.ndim != 2 or (n_in is not None and weights.shape[0] != n_in):
            raise InvalidOnnx(f"{where}: got weights of shape {shown_shape}, expected "
                              f"{n_in or 'n_in'} inputs (the width of the chain so far)")
        self.widths[-1] = weights.shape[0]
        self.widths.append(weights.shape[1])
        self.weights.append([weights, None])
        self.activations.append(None)

    def set_biases(self, where, biases):
        n_out = self.widths[-1]
        if biases.shape not in ((n_out,), (1, n_out)):
            raise InvalidOnnx(f"{where}: got biases of shape {biases.shape}, expected ({n_out},) or "
                              f"(1, {n_out})")
        self.weights[-1][1] = biases.reshape(n_out)

    # -- activations -------------------------------------------------------------------

    def set_activation(self, where, activation):
        if not self.activations or self.activations[-1] is not None:
            placement = "before any layer" if not self.activations else "after an activation"
            raise InvalidOnnx(f"{where}: got an activation {placement}, expected {_ACCEPTED}")
        self.activations[-1] = activation

    def plain_activation(self, node, where):
        self.constant_inputs(node, where, " only")
        self.set_activation(where, _PLAIN_ACTIVATIONS[node.op_type])

    def leaky_relu(self, node, where):
        alpha = _number(node, "alpha", LEAKY_RELU_SLOPE, where)
        if np.float32(alpha) != np.float32(LEAKY_RELU_SLOPE):
            raise InvalidOnnx(f"{where}: got alpha={alpha:g}, expected {LEAKY_RELU_SLOPE} (nnserve's "
                              "leaky_relu slope)")
        self.constant_inputs(node, where, " only")
        self.set_activation(where, "leaky_relu")

    def prelu(self, node, where):
        slope = self.constant_inputs(node, where, " then the slope initializer", required=(1,))[1]
        if (slope.size == 0 or np.any(slope != self.dtype.type(LEAKY_RELU_SLOPE))
                or not _broadcasts(slope.shape, (1, self.widths[-1]))):
            raise InvalidOnnx(f"{where}: got slope {slope.ravel()[:4].tolist()} of shape "
                              f"{slope.shape}, expected {LEAKY_RELU_SLOPE} for every unit "
                              "(nnserve's leaky_relu slope)")
        self.set_activation(where, "leaky_relu")

    def softmax(self, node, where):
        axis = _number(node, "axis", -1, where)
        if axis not in (1, -1):
            raise InvalidOnnx(f"{where}: got axis={axis}, expected 1 or -1 (each row)")
        self.constant_inputs(node, where, " only")
        self.set_activation(where, "softmax")

    def chain(self, graph):
        """The DenseChain read, after checking that it ends at the graph's one output."""
        if not self.weights:
            raise InvalidOnnx(f"graph: got no Gemm or MatMul node, expected {_ACCEPTED}")
        if len(graph.output) != 1 or graph.output[0].name != self.current:
            raise InvalidOnnx(f"graph outputs: got {[value.name for value in graph.output]}, expected "
                              f"one, {self.current!r} (the output of the last node)")
        element_type, dims = _tensor_shape(graph.output[0], "output")
        n_out = self.widths[-1]
        if element_type != _ELEMENT_TYPES[self.dtype] or (dims and dims[1] not in (None, n_out)):
            raise InvalidOnnx(f"output {self.current!r}: got element type {_type_name(element_type)} "
                              f"and shape {'unknown' if dims is None else dims}, expected "
                              f"{_type_name(_ELEMENT_TYPES[self.dtype])} (batch, {n_out})")
        weights = [(w, np.zeros(w.shape[1], self.dtype) if b is None else b) for w, b in self.weights]
        return DenseChain(layers=list(self.widths), dtype=self.dtype.name, weights=weights,
                          activations=[a or "identity" for a in self.activations])


def read_onnx(data):
    """Return the DenseChain of a serialized ONNX model (bytes); InvalidOnnx naming the
    first node or part it refuses (see the module's docstring for what it takes)."""
    graph = _parse(data).graph
    reader = _ChainReader(graph)
    for index, node in enumerate(graph.node):
        reader.read(node, index)
    return reader.chain(graph)
