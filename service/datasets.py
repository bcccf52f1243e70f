"""Datasets: training data uploaded once (UploadDataset), held in memory for training jobs.

An upload is all or nothing: the header announces the rows, dtypes and widths; the bytes
are reserved against the limits at once (so concurrent uploads cannot overshoot them
together); each chunk is decoded, checked (dtype, width, finite values, no more rows than
announced) and copied into arrays allocated from the header; only a complete upload is
stored. Whether the targets fit a model is checked when a job starts, by the batch rule.
"""

import hashlib
import itertools
import logging
import re
import threading
import time
import uuid

import numpy as np

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.tensors import DTYPES, to_array

from .checkpoints.format import CorruptCheckpoint
from .errors import AlreadyExists, InvalidArgument, LimitExceeded, NotFound, limit_message
from .names import check_name, page_after, page_of

__all__ = ["DatasetStore", "StoredDataset"]

logger = logging.getLogger(__name__)

_DATASET_ID = re.compile("[0-9a-f]{32}")  # uuid4().hex, as StoredDataset makes them
_X_DTYPES = (pb.DATA_TYPE_FLOAT32, pb.DATA_TYPE_FLOAT64)
_Y_DTYPES = (pb.DATA_TYPE_FLOAT32, pb.DATA_TYPE_FLOAT64, pb.DATA_TYPE_INT32, pb.DATA_TYPE_INT64)


class StoredDataset:
    """One uploaded dataset: x (rows, n_in), y (rows,) or (rows, k)."""

    __slots__ = ("id", "name", "x", "y", "sequence", "sha256", "create_time_ns")

    def __init__(self, name, x, y, sequence, dataset_id=None, create_time_ns=None):
        self.id = dataset_id or uuid.uuid4().hex
        self.name = name
        # Jobs share the arrays and only read them. They stay writable all the same: numba
        # compiles a kernel variant per array flag, and warmup() prepares writable ones.
        self.x, self.y = x, y
        self.sequence = sequence
        digest = hashlib.sha256(x.tobytes())
        digest.update(y.tobytes())
        self.sha256 = digest.hexdigest()
        self.create_time_ns = create_time_ns or time.time_ns()

    @property
    def bytes(self):
        return self.x.nbytes + self.y.nbytes

    def describe(self, timestamp):
        return pb.Dataset(id=self.id, name=self.name, rows=len(self.x), x_shape=self.x.shape,
                          y_shape=self.y.shape, x_dtype=_dtype_value(self.x.dtype),
                          y_dtype=_dtype_value(self.y.dtype), bytes=self.bytes,
                          sha256=self.sha256, create_time=timestamp(self.create_time_ns))


def _dtype_value(dtype):
    return {name: value for value, name in DTYPES.items()}[np.dtype(dtype)]


def _dtype_choice(field, value, allowed):
    if value not in allowed:
        names = ", ".join(pb.DataType.Name(v) for v in allowed)
        label = pb.DataType.Name(value) if value in pb.DataType.values() else str(value)
        raise InvalidArgument(f"header.{field}: got {label}, expected one of {names}")
    return np.dtype(DTYPES[value])


class _Upload:
    """The arrays of an upload in progress, filled chunk by chunk from its header."""

    def __init__(self, header):
        if header.rows < 1:
            raise InvalidArgument(f"header.rows: got {header.rows}, expected at least 1")
        if header.x_width < 1:
            raise InvalidArgument(f"header.x_width: got {header.x_width}, expected at least 1 (n_in)")
        if header.y_width < 0:
            raise InvalidArgument(f"header.y_width: got {header.y_width}, expected 0 (y of shape "
                                  "(rows,)) or k >= 1 (y of shape (rows, k))")
        x_dtype = _dtype_choice("x_dtype", header.x_dtype, _X_DTYPES)
        y_dtype = _dtype_choice("y_dtype", header.y_dtype, _Y_DTYPES)
        self.rows = header.rows
        self.y_shape = (header.rows,) if header.y_width == 0 else (header.rows, header.y_width)
        self.bytes = header.rows * (header.x_width * x_dtype.itemsize
                                    + max(header.y_width, 1) * y_dtype.itemsize)
        self.x_shape = (header.rows, header.x_width)
        self.x_dtype, self.y_dtype = x_dtype, y_dtype
        self.x = self.y = None  # allocated once the limits have admitted the bytes
        self.filled = 0

    def allocate(self):
        self.x = np.empty(self.x_shape, self.x_dtype)
        self.y = np.empty(self.y_shape, self.y_dtype)

    def add(self, index, chunk):
        where = f"chunk {index}"
        if not chunk.HasField("x") or not chunk.HasField("y"):
            got = [name for name in ("x", "y") if chunk.HasField(name)] or ["nothing"]
            raise InvalidArgument(f"{where}: got {' and '.join(got)} only, expected both x and y rows")
        x = to_array(chunk.x, f"{where}.x", copy=False)
        y = to_array(chunk.y, f"{where}.y", copy=False)
        for name, array, dtype, shape in (("x", x, self.x_dtype, self.x_shape),
                                          ("y", y, self.y_dtype, self.y_shape)):
            if array.dtype != dtype:
                raise InvalidArgument(f"{where}.{name}: got dtype {array.dtype}, expected "
                                      f"{dtype.name} (the header's)")
            if array.ndim != len(shape) or array.shape[1:] != shape[1:] or not len(array):
                expected = ("(n >= 1, " + ", ".join(map(str, shape[1:])) + ")") if len(shape) > 1 else "(n >= 1,)"
                raise InvalidArgument(f"{where}.{name}: got shape {array.shape}, expected {expected} "
                                      "(the header's width)")
            if dtype.kind == "f" and not np.isfinite(array).all():
                raise InvalidArgument(f"{where}.{name}: got a non-finite value, expected only "
                                      "finite numbers")
        if len(x) != len(y):
            raise InvalidArgument(f"{where}: got {len(x)} rows of x and {len(y)} of y, expected "
                                  "as many of each")
        end = self.filled + len(x)
        if end > self.rows:
            raise InvalidArgument(f"{where}: got rows up to {end}, expected at most the header's "
                                  f"{self.rows}")
        self.x[self.filled:end] = x
        self.y[self.filled:end] = y
        self.filled = end


class DatasetStore:
    """The datasets of one server, addressed by id or name, within the settings' limits.

    `on_delete` hooks run with each deleted dataset (the job table cancels its jobs)."""

    def __init__(self, settings, files=None):
        self._settings = settings
        self._files = files  # checkpoints.DatasetFiles with --state-dir: written before acknowledged
        self._lock = threading.Lock()
        self._datasets = {}  # id -> StoredDataset, in upload order
        self._names = {}
        self._reserved_names = set()  # of uploads in progress
        self._sequence = itertools.count(1)
        self._bytes = 0  # stored and reserved by uploads in progress
        self._uploads = 0
        self.on_delete = []

    @property
    def count(self):
        return len(self._datasets)

    @property
    def stored_bytes(self):
        with self._lock:
            return sum(d.bytes for d in self._datasets.values())

    def upload(self, requests):
        """Store the dataset a stream of UploadDatasetRequest carries; return it."""
        requests = iter(requests)
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            got = "no message" if first is None else (first.WhichOneof("part") or "nothing")
            raise InvalidArgument(f"message 0: got {got}, expected the header")
        header = first.header
        if header.name:
            check_name("header.name", header.name)
        upload = _Upload(header)
        self._reserve(header.name, upload.bytes)
        try:
            upload.allocate()
            for index, request in enumerate(requests, start=1):
                if request.WhichOneof("part") != "chunk":
                    raise InvalidArgument(f"message {index}: got {request.WhichOneof('part') or 'nothing'}, "
                                          "expected a chunk (the header comes once, first)")
                upload.add(index, request.chunk)
            if upload.filled != upload.rows:
                raise InvalidArgument(f"chunks: got {upload.filled} rows, expected the header's "
                                      f"{upload.rows}")
            dataset = StoredDataset(header.name, upload.x, upload.y, 0)
            if self._files is not None:
                self._files.write(dataset)
        except BaseException:
            self._unreserve(header.name, upload.bytes)
            raise
        self._admit(dataset)
        return dataset

    def restore(self, record):
        """Add a dataset read back from the state directory (its id, name and time kept);
        LimitExceeded or AlreadyExists when it no longer fits."""
        x, y = record["x"], record["y"]
        self._reserve(record["name"], x.nbytes + y.nbytes)
        dataset = StoredDataset(record["name"], x, y, 0, record["id"], record["create_time_ns"])
        self._admit(dataset)
        return dataset

    def _admit(self, dataset):
        """Store a dataset whose name and bytes _reserve admitted; its bytes stay counted."""
        with self._lock:
            self._uploads -= 1
            self._reserved_names.discard(dataset.name)
            dataset.sequence = next(self._sequence)
            self._datasets[dataset.id] = dataset
            if dataset.name:
                self._names[dataset.name] = dataset

    def _unreserve(self, name, size):
        """Give back what _reserve took for an upload that failed."""
        with self._lock:
            self._uploads -= 1
            self._reserved_names.discard(name)
            self._bytes -= size

    def _reserve(self, name, size):
        settings = self._settings
        if size > settings.max_dataset_bytes:
            raise LimitExceeded(limit_message("max_dataset_bytes", f"{size} bytes",
                                              f"{settings.max_dataset_bytes} bytes"))
        with self._lock:
            if name and (name in self._names or name in self._reserved_names):
                raise AlreadyExists(f"header.name: got {name!r}, expected a dataset name not in use")
            if len(self._datasets) + self._uploads >= settings.max_datasets:
                raise LimitExceeded(limit_message("max_datasets", f"dataset {len(self._datasets) + self._uploads + 1}",
                                                  f"{settings.max_datasets} datasets"))
            if self._bytes + size > settings.max_total_dataset_bytes:
                raise LimitExceeded(limit_message(
                    "max_total_dataset_bytes", f"{self._bytes + size} bytes with this dataset's {size}",
                    f"{settings.max_total_dataset_bytes} bytes"))
            self._bytes += size
            self._uploads += 1
            if name:
                self._reserved_names.add(name)

    def get(self, ref, field="dataset"):
        if not ref:
            raise InvalidArgument(f"{field}: got '', expected a dataset id or name")
        with self._lock:
            dataset = self._datasets.get(ref) or self._names.get(ref)
        if self._files is not None and self._files.shared:
            dataset = self._shared(ref, dataset)
        if dataset is None:
            raise NotFound(f"{field}: got {ref!r}, expected the id or name of an existing dataset")
        return dataset

    def _shared(self, ref, dataset):
        """A cluster's dataset as the shared files have it: read on first use here, and
        forgotten here once another server deleted it (None then)."""
        if dataset is not None:
            if self._files.exists(dataset.id):
                return dataset
            self._forget(dataset)
            return None
        if not _DATASET_ID.fullmatch(ref):  # a name, or no id at all: nothing to look up
            return None
        try:
            record = self._files.read(ref)
        except CorruptCheckpoint as error:
            logger.error("dataset %s is corrupt in the shared store: %s", ref, error,
                         extra={"event": "checkpoint_corrupt", "dataset_id": ref})
            return None
        if record is None:
            return None
        try:
            return self.restore(record)
        except AlreadyExists:  # read at the same time by another call
            with self._lock:
                return self._datasets.get(ref)

    def list(self, page_size=0, page_token=""):
        after, size = page_after(page_size, page_token, "ListDatasetsResponse")
        with self._lock:
            return page_of(self._datasets.values(), after, size)

    def delete(self, ref):
        dataset = self.get(ref)
        if not self._forget(dataset):
            raise NotFound(f"dataset: got {ref!r}, expected the id or name of an existing dataset")
        for hook in self.on_delete:
            hook(dataset)
        if self._files is not None:
            self._files.remove(dataset.id)
        return dataset

    def _forget(self, dataset):
        """Drop a dataset from this server's table; False when it was not there."""
        with self._lock:
            if self._datasets.pop(dataset.id, None) is None:
                return False
            if dataset.name:
                del self._names[dataset.name]
            self._bytes -= dataset.bytes
        return True
