"""Infer bodies of the REST binding: a request body into the binding-neutral InferRequest,
Outputs into a response body, in JSON and in the binary tensor data extension.

A request body is one JSON object, `{"id", "parameters", "inputs": [{"name", "datatype",
"shape", "data" | "parameters": {"binary_data_size"}}], "outputs": [{"name", "parameters":
{"binary_data"}}]}`, optionally followed by raw tensor bytes: the header
`Inference-Header-Content-Length` then gives the JSON part's length, and each input with
`parameters.binary_data_size` takes that many of the bytes after it, in order
(little-endian, row-major). Otherwise an input's `data` holds its numbers, flat or nested
row by row. An output comes back as raw bytes when it asks (`parameters.binary_data`) or,
when it does not say, when the request's `parameters.binary_data_output` is true; the
response then has the same header, and the output `parameters.binary_data_size`.

What the protocol decides (the input's name, datatype, shape, byte length; the outputs)
is left to OpenInference.infer, as for gRPC, so both bindings give the same answers;
this module refuses only what JSON can get wrong that protobuf cannot. Other parameters
are ignored, as the gRPC binding ignores them.

JSON is read and written with orjson: a batch-256 JSON body of 200k numbers parses in
15 ms against the standard library's 64. A body orjson refuses is read again by the json
module, which also takes what orjson does not (integers beyond 64 bits, NaN and Infinity
literals), so that those get the same refusals as before, naming the value's problem.
"""

import json
from typing import NamedTuple

import orjson

from ..errors import InvalidArgument
from ..open_inference import DTYPES, InferRequest

__all__ = ["HEADER_LENGTH", "DecodedInfer", "decode_infer", "encode_infer"]

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMBER_DATATYPES = ("FP32", "FP64")  # those whose `data` is read; as gRPC reads fp32/fp64_contents only


class DecodedInfer(NamedTuple):
    """An InferRequest and how its response's outputs are to be encoded."""

    request: InferRequest
    binary: dict  # requested output name -> whether it is returned as raw bytes
    binary_default: bool  # for outputs not requested by name


def _kind(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _typed(value, expected_type, where):
    """`value`, if it is of the JSON type `expected_type` (int: an integer, not a boolean)."""
    valid = type(value) is int if expected_type is int else isinstance(value, expected_type)
    if not valid:
        expected = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                    int: "an integer"}[expected_type]
        raise InvalidArgument(f"{where}: got {_kind(value)}, expected {expected}")
    return value


def _get(mapping, key, expected_type, default, where):
    return _typed(mapping.get(key, default), expected_type, where)


_NUMBER_TYPES = {int, float}  # not bool, which JSON keeps apart


def _all_numbers(values):
    return set(map(type, values)) <= _NUMBER_TYPES


def _numbers(data, shape):
    """The values of an input's `data`, flat in row-major order; nested lists must follow
    `shape` level by level."""
    if data and isinstance(data[0], list):
        flat = []
        _flatten(data, shape, 0, flat)
        return flat
    if not _all_numbers(data):
        raise InvalidArgument("input data: got a value that is not a number, expected numbers "
                              "(a flat list, or lists nested as the shape)")
    return data


def _flatten(data, shape, depth, flat):
    if depth >= len(shape) or len(data) != shape[depth]:
        raise InvalidArgument(f"input data: got nested lists that do not follow the shape {shape}, "
                              "expected one list level per dimension, or a flat list")
    if depth == len(shape) - 1:
        if not _all_numbers(data):
            raise InvalidArgument("input data: got a value that is not a number, expected numbers")
        flat.extend(data)
        return
    for row in data:
        if not isinstance(row, list):
            raise InvalidArgument(f"input data: got {_kind(row)} where a list was expected, "
                                  f"expected lists nested as the shape {shape}")
        _flatten(row, shape, depth + 1, flat)


def _split(body, header_length):
    """(the JSON part, the bytes after it) of a request body."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InvalidArgument(f"{HEADER_LENGTH}: got {header_length!r}, expected the byte length of "
                              f"the JSON part, an integer in [0, {len(body)}]")
    return body[:length], body[length:]


def _input(tensor, binary):
    """(name, datatype, shape, values, bytes of `binary` it took) of one input object."""
    name = _get(tensor, "name", str, "", "input name")
    datatype = _get(tensor, "datatype", str, "", "input datatype")
    shape = _get(tensor, "shape", list, [], "input shape")
    if not all(type(size) is int for size in shape):
        raise InvalidArgument(f"input shape: got {shape}, expected a list of integers")
    parameters = _get(tensor, "parameters", dict, {}, "input parameters")
    if "binary_data_size" in parameters:
        size = _get(parameters, "binary_data_size", int, 0, "input parameters.binary_data_size")
        if "data" in tensor:
            raise InvalidArgument("input: got both data and parameters.binary_data_size, expected one")
        if not 0 <= size <= len(binary):
            raise InvalidArgument(f"input parameters.binary_data_size: got {size}, expected at most the "
                                  f"{len(binary)} bytes after the JSON part")
        return name, datatype, tuple(shape), binary[:size], size
    if "data" not in tensor:
        raise InvalidArgument("input: got neither data nor parameters.binary_data_size, expected one")
    data = _get(tensor, "data", list, [], "input data")
    values = _numbers(data, shape) if datatype in NUMBER_DATATYPES else ()
    return name, datatype, tuple(shape), values, 0


def _parsed(text):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode_infer(model, version, body, header_length=None):
    """The DecodedInfer of an infer request body (bytes) for `model` and `version` (the
    path's; '' for none). `header_length`: the Inference-Header-Content-Length header, or
    None. Raises InvalidArgument."""
    text, binary = _split(body, header_length)
    try:
        request = _parsed(text)
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8; absurd nesting
        raise InvalidArgument(f"request body: got no valid JSON ({error}), expected an inference "
                              "request object") from None
    if not isinstance(request, dict):
        raise InvalidArgument(f"request body: got {_kind(request)}, expected an inference request object")
    request_id = _get(request, "id", str, "", "id")
    inputs = _get(request, "inputs", list, [], "inputs")
    if len(inputs) != 1:
        raise InvalidArgument(f"inputs: got {len(inputs)}, expected one input named 'input'")
    tensor = _typed(inputs[0], dict, "inputs[0]")
    name, datatype, shape, values, used = _input(tensor, binary)
    if used != len(binary):
        raise InvalidArgument(f"request body: got {len(binary)} bytes after the JSON part, expected "
                              f"{used} (the inputs' parameters.binary_data_size)")
    parameters = _get(request, "parameters", dict, {}, "parameters")
    binary_default = _get(parameters, "binary_data_output", bool, False, "parameters.binary_data_output")
    names, binary_outputs = [], {}
    for output in _get(request, "outputs", list, [], "outputs"):
        _typed(output, dict, "outputs[]")
        output_name = _get(output, "name", str, "", "output name")
        output_parameters = _get(output, "parameters", dict, {}, "output parameters")
        names.append(output_name)
        binary_outputs[output_name] = _get(output_parameters, "binary_data", bool, binary_default,
                                           "output parameters.binary_data")
    infer = InferRequest(model, version, request_id, name, datatype, shape, values, tuple(names))
    return DecodedInfer(infer, binary_outputs, binary_default)


def encode_infer(decoded, version, outputs):
    """(body, the JSON part's length or None when all of it is JSON) of the response to a
    DecodedInfer, of the `version` and Outputs OpenInference.infer returned."""
    tensors, chunks = [], []
    for output in outputs:
        tensor = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if decoded.binary.get(output.name, decoded.binary_default):
            raw = output.array.astype(DTYPES[output.datatype], copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = output.array.ravel().tolist()  # float32 widened exactly to float64
        tensors.append(tensor)
    response = {"model_name": decoded.request.model, "model_version": version, "outputs": tensors}
    if decoded.request.id:
        response["id"] = decoded.request.id
    header = orjson.dumps(response)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
