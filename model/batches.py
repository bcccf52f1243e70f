"""The batch rule: which x and y a model takes, written once for the model and the SDK.

- x: a 2-D array (n_samples, n_in) of the model's dtype, n_samples >= 1, every value
  finite. A dtype that casts to the model's safely (numpy's "safe" rule: float32 into a
  float64 model, int8 into either) is cast; a lossy one (float64 into a float32 model) is
  refused, never rounded silently. Lists are read as arrays of the model's dtype.
- y for cross_entropy: class ids, 1-D (n_samples,) of any integer dtype, each in
  [0, n_out); or probability rows (n_samples, n_out), each >= 0 and summing to 1 within
  ROW_SUM_TOLERANCE.
- y for mse and binary_cross_entropy: (n_samples, n_out) of the model's dtype (cast as x
  is), or 1-D (n_samples,) when n_out is 1. binary_cross_entropy targets lie in [0, 1] and
  may be integer 0/1 labels of any integer dtype.

Numpy only, so the client SDK applies the rule's casts before sending (`inputs_array`,
`targets_array`: what the wire carries) and the model applies the whole rule on arrival
(`BatchRule`). The proto's Tensor comments point here.
"""

import numpy as np

from .errors import InvalidBatch

__all__ = ["ROW_SUM_TOLERANCE", "WIRE_DTYPES", "BatchRule", "check_inputs", "check_targets",
           "inputs_array", "targets_array"]

# How far a row of cross_entropy probability targets may sum from 1.
ROW_SUM_TOLERANCE = 1e-3
# The dtypes a Tensor carries (nnserve.v1.DataType).
WIRE_DTYPES = ("float32", "float64", "int32", "int64")


def inputs_array(x, dtype):
    """x as an array to send to a model computing in `dtype`: cast only as the rule casts
    (lists to dtype, other non-wire dtypes only when the cast is safe); anything else is
    sent as it is, for the model to accept or refuse."""
    if not isinstance(x, np.ndarray):
        return np.asarray(x, dtype=dtype)
    if x.dtype.name not in WIRE_DTYPES and np.can_cast(x.dtype, dtype, "safe"):
        return x.astype(dtype)
    return x


def targets_array(y, dtype, loss):
    """y as an array to send: class ids (n,) as integers for cross_entropy, else of `dtype`,
    cast as inputs_array casts."""
    class_ids = loss == "cross_entropy" and np.ndim(y) == 1
    if not isinstance(y, np.ndarray):
        y = np.asarray(y) if class_ids else np.asarray(y, dtype=dtype)
    if y.dtype.name not in WIRE_DTYPES:
        if class_ids and y.dtype.kind in "iu" and np.can_cast(y.dtype, np.int64, "safe"):
            return y.astype(np.int64)
        if np.can_cast(y.dtype, dtype, "safe"):
            return y.astype(dtype)
    return y


class BatchRule:
    """The rule for one model: batches as its kernels take them, cheaply when they already
    are, and the InvalidBatch that explains a refusal.

    The fast paths check structure only (type, dtype, shape, contiguity: a few hundred
    nanoseconds); the kernels check values (finite, in range) before they change anything,
    and only when a kernel refuses a batch does `refuse` look again, with numpy, to say
    which value and why. Numpy's own checks cost a few microseconds, as much as a whole
    train step of a small network.
    """

    def __init__(self, n_inputs, n_outputs, loss, dtype):
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.loss = loss
        self.dtype = np.dtype(dtype)
        self._class_ids_allowed = loss == "cross_entropy"
        self._labels_allowed = loss == "binary_cross_entropy"
        self._no_targets = np.empty((0, n_outputs), dtype=self.dtype)
        self._no_class_ids = np.empty(0, dtype=np.int64)

    def inputs(self, x):
        """x as the kernels take it: (n_samples, n_in) C-contiguous of the model's dtype."""
        if (type(x) is np.ndarray and x.dtype == self.dtype and x.ndim == 2
                and x.shape[1] == self.n_inputs and x.shape[0] and x.flags.c_contiguous):
            return x
        return check_inputs(x, self.n_inputs, self.dtype)

    def targets(self, y, n_samples):
        """(targets (n, n_out), class_ids (n,) int64) as the kernels take them; the unused
        one of the pair is empty."""
        if type(y) is np.ndarray and y.flags.c_contiguous:
            if (self._class_ids_allowed and y.dtype == np.int64 and y.ndim == 1
                    and y.shape[0] == n_samples):
                return self._no_targets, y
            if y.dtype == self.dtype and y.shape == (n_samples, self.n_outputs):
                return y, self._no_class_ids
            if self.n_outputs == 1 and y.shape == (n_samples,) and (
                    y.dtype == self.dtype or (self._labels_allowed and y.dtype.kind in "biu")):
                # 0/1 labels as integers: the kernel checks they are in [0, 1].
                return y.astype(self.dtype).reshape(n_samples, 1), self._no_class_ids
        return check_targets(y, self.loss, self.n_outputs, n_samples, self.dtype)

    def refuse(self, x, y=None):
        """Raise the InvalidBatch that says which value of a batch the kernel refused."""
        x = check_inputs(x, self.n_inputs, self.dtype)
        if y is not None:
            check_targets(y, self.loss, self.n_outputs, x.shape[0], self.dtype)
        raise InvalidBatch("x, y: got values the kernels refuse, expected finite inputs and "
                           "targets in the loss's range")


def _as_array(name, value, dtype, *, allow_integers=False):
    """Return `value` as a C-contiguous array of `dtype`, refusing lossy casts."""
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        exact_labels = allow_integers and kind in "biu"
        if not exact_labels and not np.can_cast(value.dtype, dtype, "safe"):
            raise InvalidBatch(f"{name}: got dtype {value.dtype}, expected {dtype.name} or a dtype that "
                             f"casts to it safely (convert with {name}.astype(np.{dtype.name}))")
        return np.ascontiguousarray(value, dtype=dtype)
    try:
        return np.ascontiguousarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InvalidBatch(f"{name}: got {type(value).__name__} that is not a numeric array "
                         f"({error}), expected an array of {dtype.name}") from None


def _check_finite(name, array):
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise InvalidBatch(f"{name}: got a non-finite value {array[tuple(bad)]} at index "
                         f"{tuple(int(i) for i in bad)}, expected only finite numbers")


def check_inputs(x, n_in, dtype):
    """Return x as a C-contiguous (n_samples, n_in) array of dtype."""
    x = _as_array("x", x, dtype)
    if x.ndim != 2 or x.shape[1] != n_in:
        hint = "; reshape a single sample with x[None, :]" if x.ndim == 1 else ""
        raise InvalidBatch(f"x: got shape {x.shape}, expected (n_samples, {n_in}){hint}")
    if x.shape[0] == 0:
        raise InvalidBatch("x: got an empty batch (0 rows), expected at least one sample")
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
            raise InvalidBatch(f"y: got class ids of dtype {y_array.dtype}, expected integers "
                             "(convert with y.astype(np.int64))")
        if y_array.shape[0] != n_samples:
            raise InvalidBatch(f"y: got {y_array.shape[0]} class ids, expected {n_samples} (one per row of x)")
        if y_array.size and (y_array.min() < 0 or y_array.max() >= n_out):
            bad = y_array[(y_array < 0) | (y_array >= n_out)][0]
            raise InvalidBatch(f"y: got class id {bad}, expected ids in [0, {n_out})")
        return np.empty((0, n_out), dtype=dtype), np.ascontiguousarray(y_array, dtype=np.int64)

    if loss == "cross_entropy" and y_array.dtype.kind in "iu" and y_array.ndim == 2 and y_array.shape[1] == 1:
        raise InvalidBatch(f"y: got class ids of shape {y_array.shape}, expected shape ({n_samples},) "
                         "(flatten them with y.ravel())")
    targets = _as_array("y", y, dtype, allow_integers=loss == "binary_cross_entropy")
    if targets.ndim == 1 and n_out == 1:
        targets = targets.reshape(-1, 1)
    if targets.shape != (n_samples, n_out):
        expected = f"({n_samples}, {n_out})"
        if loss == "cross_entropy":
            expected = f"({n_samples},) class ids or {expected} probability rows"
        raise InvalidBatch(f"y: got shape {targets.shape}, expected {expected}")
    _check_finite("y", targets)
    if loss == "binary_cross_entropy" and (targets.min() < 0 or targets.max() > 1):
        raise InvalidBatch(f"y: got targets in [{targets.min()}, {targets.max()}], expected values "
                         "in [0, 1] for binary_cross_entropy")
    if loss == "cross_entropy":
        if targets.min() < 0:
            raise InvalidBatch(f"y: got a negative probability {targets.min()}, expected rows of "
                             "probabilities >= 0 that sum to 1")
        sums = targets.sum(axis=1, dtype=np.float64)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
            raise InvalidBatch(f"y: got a probability row {worst} summing to {sums[worst]:.6g}, "
                             "expected rows that sum to 1 (or pass class ids of shape (n,))")
    return targets, no_ids
