"""Datasets and training jobs in the SDK: uploads in chunks, job handles, events.

`upload_requests` yields the UploadDataset stream of (x, y); `RemoteDataset` describes a
stored dataset; `TrainingJob` is the handle of a server-side job (watch, wait, cancel),
`JobEvent` one event of its watch stream. Nothing here does I/O except through the
client the handles hold.
"""

import datetime
from dataclasses import dataclass

import grpc
import numpy as np

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.tensors import to_tensor

from .chunking import MESSAGE_HEADROOM
from .errors import NNServeError, encoding

__all__ = ["AsyncTrainingJob", "JobEvent", "RemoteDataset", "TrainingJob", "as_dataset_pair",
           "dataset_ref", "job_request", "upload_arrays", "upload_requests"]

# Bytes of rows per upload message: large enough that per-message costs vanish, small
# enough to stream (flow control, memory) rather than build one huge message.
UPLOAD_CHUNK_BYTES = 4 << 20
_STATES = {value: name[len("TRAINING_JOB_STATE_"):].lower()
           for name, value in pb.TrainingJobState.items() if value}
_KINDS = {value: name[len("TRAINING_JOB_EVENT_KIND_"):].lower()
          for name, value in pb.TrainingJobEventKind.items() if value}
_DATA_TYPES = {"float32": pb.DATA_TYPE_FLOAT32, "float64": pb.DATA_TYPE_FLOAT64,
               "int32": pb.DATA_TYPE_INT32, "int64": pb.DATA_TYPE_INT64}


def upload_requests(x, y, name, max_message_bytes):
    """The UploadDataset stream: a header, then chunks of rows within the message size."""
    with encoding("UploadDataset"):
        if x.ndim != 2 or y.ndim not in (1, 2) or len(x) != len(y) or not len(x):
            raise ValueError(f"x, y: got shapes {x.shape} and {y.shape}, expected x (n, n_in) and "
                             "y (n,) or (n, k) with the same n >= 1")
        for label, array in (("x", x), ("y", y)):
            if array.dtype.name not in _DATA_TYPES:
                raise ValueError(f"{label}: got dtype {array.dtype}, expected float32, float64, "
                                 "int32 or int64")
        header = pb.DatasetHeader(name=name or "", rows=len(x), x_dtype=_DATA_TYPES[x.dtype.name],
                                  x_width=x.shape[1], y_dtype=_DATA_TYPES[y.dtype.name],
                                  y_width=y.shape[1] if y.ndim == 2 else 0)
    yield pb.UploadDatasetRequest(header=header)
    row_bytes = x[0].nbytes + y[0].nbytes
    budget = UPLOAD_CHUNK_BYTES if max_message_bytes < 0 else min(
        UPLOAD_CHUNK_BYTES, max_message_bytes - MESSAGE_HEADROOM)
    rows = max(1, budget // row_bytes)
    for start in range(0, len(x), rows):
        yield pb.UploadDatasetRequest(chunk=pb.DatasetChunk(
            x=to_tensor(x[start:start + rows], "x"), y=to_tensor(y[start:start + rows], "y")))


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset stored on the server (Client.upload_dataset); pass it to fit or
    start_training instead of arrays to train on it again without uploading."""

    id: str
    name: str
    rows: int
    x_shape: tuple
    y_shape: tuple
    bytes: int
    sha256: str
    create_time: datetime.datetime

    @classmethod
    def from_proto(cls, message):
        return cls(id=message.id, name=message.name, rows=message.rows,
                   x_shape=tuple(message.x_shape), y_shape=tuple(message.y_shape),
                   bytes=message.bytes, sha256=message.sha256,
                   create_time=message.create_time.ToDatetime(tzinfo=datetime.timezone.utc))


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's watch: why it came (kind: current, started, progress,
    epoch_end, ended), where the job was, its latest loss and the model's version."""

    kind: str
    state: str
    epoch: int
    step: int
    total_steps: int
    recent_loss: float
    examples_per_second: float
    version: int
    history: dict
    error: str

    @classmethod
    def from_proto(cls, message):
        job = message.job
        return cls(kind=_KINDS.get(message.kind, "unspecified"), state=_STATES[job.state],
                   epoch=job.epoch, step=job.step, total_steps=job.total_steps,
                   recent_loss=message.recent_loss, examples_per_second=job.examples_per_second,
                   version=message.version, history=history_of(job), error=job.error)


def history_of(job):
    """The fit history dict of a TrainingJob message, as Network.fit returns it: "loss";
    with a validation dataset "val_loss", and "val_accuracy" when it was measured."""
    history = {"loss": [epoch.loss for epoch in job.history]}
    if job.validation_dataset:
        history["val_loss"] = [epoch.val_loss for epoch in job.history]
        if job.history and all(epoch.HasField("val_accuracy") for epoch in job.history):
            history["val_accuracy"] = [epoch.val_accuracy for epoch in job.history]
    return history


class _JobHandle:
    """What the sync and async job handles share: the last job message seen and its reading."""

    def __init__(self, client, message, owned_datasets=()):
        self._client = client
        self._message = message
        self._owned = list(owned_datasets)

    @property
    def id(self):
        return self._message.id

    @property
    def _route(self):
        """The routing key of the job's calls: its model's id (the job runs on its server)."""
        return self._message.model

    @property
    def state(self):
        """queued, running, succeeded, failed or cancelled, as last seen (refresh() asks)."""
        return _STATES[self._message.state]

    @property
    def step(self):
        """Train steps the job had applied, as last seen."""
        return self._message.step

    @property
    def total_steps(self):
        return self._message.total_steps

    @property
    def error(self):
        return self._message.error

    @property
    def ended(self):
        return self._message.state in _ENDED

    def result(self):
        """The history of a SUCCEEDED job; NNServeError for a failed or cancelled one."""
        state = self._message.state
        if state == pb.TRAINING_JOB_STATE_FAILED:
            raise NNServeError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"training job {self.id} failed: {self.error}", "WatchTrainingJob")
        if state == pb.TRAINING_JOB_STATE_CANCELLED:
            raise NNServeError(grpc.StatusCode.CANCELLED,
                               f"training job {self.id} was {self.error}", "WatchTrainingJob")
        if state != pb.TRAINING_JOB_STATE_SUCCEEDED:
            raise NNServeError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"training job {self.id}: got state {self.state}, expected it ended",
                               "WatchTrainingJob")
        return history_of(self._message)

    def __repr__(self):
        return f"{type(self).__name__}(id={self.id!r}, state={self.state!r}, step={self.step})"


_ENDED = (pb.TRAINING_JOB_STATE_SUCCEEDED, pb.TRAINING_JOB_STATE_FAILED,
          pb.TRAINING_JOB_STATE_CANCELLED)


class TrainingJob(_JobHandle):
    """A training job on the server (RemoteModel.start_training).

    `watch()` iterates its events until it ends; `wait()` returns the history once it
    SUCCEEDED (NNServeError otherwise); `cancel()` stops it before its next step. Datasets
    the SDK uploaded for this job alone are deleted once it has ended and been waited for
    (or cancelled).
    """

    def refresh(self):
        self._message = self._client._call("GetTrainingJob", pb.GetTrainingJobRequest(job=self.id),
                                           route=self._route).job
        return self

    def watch(self):
        """Yield JobEvents: the job as it is, then each event, the last one kind "ended"."""
        for message in self._client._stream("WatchTrainingJob", pb.WatchTrainingJobRequest(job=self.id),
                                            route=self._route):
            self._message = message.job
            yield JobEvent.from_proto(message)

    def wait(self, timeout=None):
        """Block until the job ends (at most `timeout` seconds: DEADLINE_EXCEEDED); return its
        history if it SUCCEEDED. Raises NNServeError: FAILED_PRECONDITION with the job's
        error when it FAILED, CANCELLED when it was cancelled."""
        try:
            for event in self._client._stream("WatchTrainingJob", pb.WatchTrainingJobRequest(job=self.id),
                                              timeout=timeout, route=self._route):
                self._message = event.job
        finally:
            if self.ended:
                self._release()
        return self.result()

    def cancel(self):
        """Cancel the job; return self once the server has stopped it (or it had ended)."""
        self._message = self._client._call("CancelTrainingJob", pb.CancelTrainingJobRequest(job=self.id),
                                           route=self._route).job
        self._release()
        return self

    def _release(self):
        """Delete the datasets uploaded for this job alone (ignoring ones already gone)."""
        while self._owned:
            try:
                self._client.delete_dataset(self._owned.pop(), route=self._route)
            except NNServeError as error:
                if error.code != grpc.StatusCode.NOT_FOUND:
                    raise


class AsyncTrainingJob(_JobHandle):
    """TrainingJob for AsyncClient: the same methods, as coroutines; watch() is an async
    iterator."""

    async def refresh(self):
        reply = await self._client._call("GetTrainingJob", pb.GetTrainingJobRequest(job=self.id),
                                           route=self._route)
        self._message = reply.job
        return self

    async def watch(self):
        """Yield JobEvents: the job as it is, then each event, the last one kind "ended"."""
        async for message in self._client._stream("WatchTrainingJob",
                                                  pb.WatchTrainingJobRequest(job=self.id),
                                            route=self._route):
            self._message = message.job
            yield JobEvent.from_proto(message)

    async def wait(self, timeout=None):
        """Wait until the job ends; see TrainingJob.wait."""
        try:
            async for message in self._client._stream(
                    "WatchTrainingJob", pb.WatchTrainingJobRequest(job=self.id), timeout=timeout,
                    route=self._route):
                self._message = message.job
        finally:
            if self.ended:
                await self._release()
        return self.result()

    async def cancel(self):
        """Cancel the job; return self once the server has stopped it (or it had ended)."""
        reply = await self._client._call("CancelTrainingJob", pb.CancelTrainingJobRequest(job=self.id),
                                           route=self._route)
        self._message = reply.job
        await self._release()
        return self

    async def _release(self):
        while self._owned:
            try:
                await self._client.delete_dataset(self._owned.pop(), route=self._route)
            except NNServeError as error:
                if error.code != grpc.StatusCode.NOT_FOUND:
                    raise


def job_request(model_id, dataset, validation, *, epochs, batch_size, shuffle, seed,
                progress_every_steps, progress_every_seconds):
    """The CreateTrainingJobRequest of start_training (datasets: RemoteDataset or None)."""
    with encoding("CreateTrainingJob"):
        return pb.CreateTrainingJobRequest(
            model=model_id, dataset=dataset.id, epochs=epochs, batch_size=batch_size,
            shuffle=bool(shuffle), seed=seed, validation_dataset=validation.id if validation else "",
            progress_every_steps=progress_every_steps,
            progress_every_seconds=progress_every_seconds)


def dataset_ref(dataset):
    """The id or name string of a dataset given as one, or as a RemoteDataset."""
    return dataset.id if isinstance(dataset, RemoteDataset) else dataset


def upload_arrays(x, y):
    """(x, y) as upload_dataset sends them: integer x as float32, as the batch rule reads lists."""
    x, y = np.asarray(x), np.asarray(y)
    return (x.astype(np.float32) if x.dtype.kind in "biu" else x), y


def as_dataset_pair(data, y):
    """(x, y) of fit's or start_training's first arguments, or None for a RemoteDataset."""
    if isinstance(data, RemoteDataset):
        if y is not None:
            raise TypeError("y: got targets with a RemoteDataset, expected none (the dataset has them)")
        return None
    if y is None:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return data
        raise TypeError(f"data: got {type(data).__name__}, expected a RemoteDataset, an (x, y) "
                        "pair, or x with y")
    return data, y


