"""Shared pieces of the dataset and training-job tests: raw UploadDataset streams, jobs
followed to their end, and the fit history of a TrainingJob message.

The streams are built here from the contract (header, then chunks of raw-byte Tensors),
not with the SDK's uploader, so the server is tested against the proto alone.
"""

import hashlib

import numpy as np

from service_support import pb, to_tensor

__all__ = ["ENDED_STATES", "chunk", "classification_data", "events_to_end", "header", "history_of",
           "job_request", "sha256_of", "upload", "upload_requests", "wait_ended"]

ENDED_STATES = (pb.TRAINING_JOB_STATE_SUCCEEDED, pb.TRAINING_JOB_STATE_FAILED,
                pb.TRAINING_JOB_STATE_CANCELLED)


def classification_data(seed, rows, n_in=4, n_classes=3, dtype=np.float32):
    """(x (rows, n_in) of dtype, y (rows,) int64 class ids in [0, n_classes)) from a seed."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, n_in)).astype(dtype),
            rng.integers(0, n_classes, size=rows).astype(np.int64))


def header(x, y, name="", rows=None):
    """The DatasetHeader announcing (x, y) (or `rows` rows of their dtypes and widths)."""
    return pb.DatasetHeader(name=name, rows=len(x) if rows is None else rows,
                            x_dtype=to_tensor(x[:0]).dtype, x_width=x.shape[1],
                            y_dtype=to_tensor(y[:0]).dtype, y_width=y.shape[1] if y.ndim == 2 else 0)


def chunk(x, y):
    """One UploadDatasetRequest carrying the rows (x, y)."""
    return pb.UploadDatasetRequest(chunk=pb.DatasetChunk(x=to_tensor(x), y=to_tensor(y)))


def upload_requests(x, y, name="", rows_per_chunk=None):
    """The UploadDataset stream of (x, y): the header, then chunks of rows_per_chunk rows."""
    step = rows_per_chunk or len(x)
    return [pb.UploadDatasetRequest(header=header(x, y, name))] + [
        chunk(x[start:start + step], y[start:start + step]) for start in range(0, len(x), step)]


def upload(stub, x, y, name="", rows_per_chunk=None):
    """Upload (x, y) through a raw stub; return the stored Dataset message."""
    return stub.UploadDataset(iter(upload_requests(x, y, name, rows_per_chunk)), timeout=30).dataset


def sha256_of(x, y):
    """The Dataset.sha256 the contract defines: of x's bytes then y's, lowercase hex."""
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()


def job_request(model, dataset, **fields):
    """A CreateTrainingJobRequest (epochs 1 and batch_size 8 unless given)."""
    return pb.CreateTrainingJobRequest(model=model, dataset=dataset,
                                       **{"epochs": 1, "batch_size": 8, **fields})


def events_to_end(stub, job_id):
    """Every event of one WatchTrainingJob stream, up to and including the ENDED one."""
    return list(stub.WatchTrainingJob(pb.WatchTrainingJobRequest(job=job_id), timeout=120))


def wait_ended(stub, job_id):
    """The TrainingJob once it has ended (the last event of a watch, whole history)."""
    job = events_to_end(stub, job_id)[-1].job
    assert job.state in ENDED_STATES, job
    return job


def history_of(job):
    """A TrainingJob message's history as Network.fit returns it (loss, val_loss, val_accuracy)."""
    history = {"loss": [epoch.loss for epoch in job.history]}
    if job.validation_dataset:
        history["val_loss"] = [epoch.val_loss for epoch in job.history]
        if any(epoch.HasField("val_accuracy") for epoch in job.history):
            history["val_accuracy"] = [epoch.val_accuracy for epoch in job.history]
    return history
