"""The contract's tensor codec: numpy arrays <-> `nnserve.v1.Tensor`, for server and clients.

A Tensor is {dtype, shape, content}: the elements in row-major order, each little-endian.
Decoding checks, in this order, the dtype, the dimensions and the byte length
(product(shape) x element size) before it reads any element, and never loops in Python.
Numpy only: this module is imported by client installs without numba.
"""

import math

import numpy as np

from .nnserve_pb2 import DataType, Tensor

__all__ = ["DTYPES", "MAX_DIMENSIONS", "InvalidMessage", "InvalidTensor", "dtype_name", "to_array", "to_tensor"]

# DataType value -> numpy dtype of its little-endian wire form.
DTYPES = {
    DataType.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    DataType.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    DataType.DATA_TYPE_INT32: np.dtype("<i4"),
    DataType.DATA_TYPE_INT64: np.dtype("<i8"),
}
# numpy dtype, in either byte order -> DataType value. Keyed by dtype, not dtype.name:
# the name is computed in Python on every access (~1.5 us, per call on the Predict path).
_DATA_TYPES = {variant: value for value, dtype in DTYPES.items()
               for variant in (dtype, dtype.newbyteorder("<"), dtype.newbyteorder(">"))}
_EXPECTED = ", ".join(DataType.Name(value) for value in DTYPES)
MAX_DIMENSIONS = 32  # numpy's own limit is 64 (32 before numpy 2)


class InvalidMessage(ValueError):
    """A message that breaks the contract's rules; the text says got X, expected Y."""


class InvalidTensor(InvalidMessage):
    """A Tensor that cannot be decoded, or an array that cannot be encoded as one."""


def dtype_name(value):
    """Return a DataType value's name ("DATA_TYPE_FLOAT32"), or its number when unknown."""
    try:
        return DataType.Name(value)
    except ValueError:
        return str(value)


def to_array(tensor, name="tensor", *, copy=True):
    """Decode a Tensor into a numpy array of its dtype (native byte order).

    Parameters
    ----------
    tensor : nnserve.v1.Tensor
    name : str
        What the tensor is called in error messages ("x", "state.weights[0].biases").
    copy : bool
        True (default): a writable array that owns its memory. False: a read-only view of
        the message's bytes (no copy; a copy all the same on big-endian machines).

    Raises
    ------
    InvalidTensor
        Unknown or unspecified dtype, more than MAX_DIMENSIONS dimensions, a negative
        dimension, a byte length other than product(shape) x element size, or an empty
        shape too large for numpy ([2**62, 2**62, 0]).
    """
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidTensor(f"{name}: got dtype {dtype_name(tensor.dtype)}, expected one of {_EXPECTED}")
    shape = tuple(tensor.shape)
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidTensor(f"{name}: got {len(shape)} dimensions, expected at most {MAX_DIMENSIONS}")
    if any(size < 0 for size in shape):
        raise InvalidTensor(f"{name}: got shape {list(shape)}, expected dimensions >= 0")
    content = tensor.content
    expected = math.prod(shape) * dtype.itemsize
    if len(content) != expected:
        raise InvalidTensor(f"{name}: got {len(content)} bytes, expected {expected} "
                            f"(shape {list(shape)} x {dtype.itemsize} bytes of {dtype.name})")
    try:
        array = np.frombuffer(content, dtype=dtype).reshape(shape)
    except ValueError:  # no elements, yet dimensions numpy cannot hold, e.g. [2**62, 2**62, 0]
        raise InvalidTensor(f"{name}: got shape {list(shape)}, expected dimensions whose nonzero ones "
                            f"multiply to fewer than 2**63 bytes of {dtype.name}") from None
    if not dtype.isnative:  # big-endian machine: convert, which copies
        return array.astype(dtype.name)
    return array.copy() if copy else array


def to_tensor(array, name="array"):
    """Encode an array (or anything np.asarray accepts) as a Tensor.

    Raises
    ------
    InvalidTensor
        The dtype is not float32, float64, int32 or int64 (convert it first: no silent
        casts).
    """
    array = np.asarray(array)
    value = _DATA_TYPES.get(array.dtype)
    if value is None:
        raise InvalidTensor(f"{name}: got dtype {array.dtype}, expected float32, float64, int32 "
                            f"or int64 (convert with .astype())")
    wire = np.asarray(array, dtype=DTYPES[value], order="C")  # keeps 0-d (ascontiguousarray would not)
    return Tensor(dtype=value, shape=wire.shape, content=wire.tobytes())
