"""Checkpoints of a cluster in one shared place, each made current by a fenced etcd commit.

A write goes to a new file <id>.<token>.<version>.npz (whole or absent: an atomic rename in
a shared directory, one PUT in an S3 bucket), then `Membership.commit` points the model's
etcd pointer at it if `token` is still the owner's. A stale owner (paused or cut off while
another took over) writes only files of its own older token, its commit fails, and its
file is deleted: it never changes what the new owner restores from. Once a commit
succeeds, the file it replaced is deleted. A commit that could not reach etcd may or may
not have been applied: its file is kept until a later commit of the model settles it, and
a server that adopts a model deletes every file of other tokens but the one it restored.

Training-job records live beside them, one JSON file per job named after its model
(`job.<model id>.<job id>.json`), written only while this server owns the model: the
server that adopts a model reads its jobs back, and one that was running reads FAILED,
"interrupted" (what a single server reports after a crash). Deleting a model deletes them.
Datasets too (`dataset.<id>.npz`, the single server's format), written before the upload
is acknowledged and read by any server the first time a call names the id there.

No lock: the servers of a cluster share the place, and etcd decides who writes what.
"""

import io
import json
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..checkpoints.format import CorruptCheckpoint, decode, encode
from ..checkpoints.store import fsync_directory, write_atomically
from ..checkpoints.training_records import JOB_RECORD_INTERVAL, dataset_arrays, read_dataset
from ..errors import Unavailable

__all__ = ["BucketFiles", "DirectoryFiles", "SharedCheckpointStore", "SharedDatasetFiles", "SharedJobFiles",
           "StaleCheckpoint", "shared_files"]

logger = logging.getLogger(__name__)


class StaleCheckpoint(Exception):
    """A checkpoint whose commit etcd refused: another server owns the model now."""


class DirectoryFiles:
    """Checkpoint files in a directory every server mounts (a ReadWriteMany volume)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, name, write):
        return write_atomically(self.directory / name, write)

    def delete(self, name):
        (self.directory / name).unlink(missing_ok=True)
        fsync_directory(self.directory)

    def open(self, name):
        return self.directory / name

    def names(self, prefix):
        return [path.name for path in self.directory.glob(f"{prefix}*")
                if path.suffix in (".npz", ".json")]


class BucketFiles:
    """Checkpoint files as objects under s3://bucket/prefix in S3-compatible storage.

    boto3 takes the credentials and the endpoint (AWS_ENDPOINT_URL for MinIO, Ceph and the
    like) from the environment, as every AWS tool does. A PUT is atomic: an object is whole
    or absent. Raises OSError at start when the bucket cannot be reached.
    """

    def __init__(self, url):
        import boto3  # the s3 extra: needed for a bucket only
        from botocore.exceptions import BotoCoreError, ClientError

        parts = urlsplit(url)
        self._bucket, self._prefix = parts.netloc, parts.path.strip("/")
        if self._prefix:
            self._prefix += "/"
        self._s3 = boto3.client("s3")
        try:
            self._s3.head_bucket(Bucket=self._bucket)
        except (BotoCoreError, ClientError) as error:
            raise OSError(f"state_dir: cannot reach bucket {self._bucket!r} ({error})") from None

    def write(self, name, write):
        buffer = io.BytesIO()
        write(buffer)
        body = buffer.getvalue()
        self._s3.put_object(Bucket=self._bucket, Key=self._prefix + name, Body=body)
        return len(body)

    def delete(self, name):
        self._s3.delete_object(Bucket=self._bucket, Key=self._prefix + name)

    def open(self, name):
        answer = self._s3.get_object(Bucket=self._bucket, Key=self._prefix + name)
        return io.BytesIO(answer["Body"].read())

    def names(self, prefix):
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._prefix + prefix)
        return [item["Key"][len(self._prefix):] for page in pages for item in page.get("Contents", ())]


def shared_files(state_dir):
    """The files of --state-dir in cluster mode: a bucket for s3://bucket/prefix, else a
    directory."""
    return BucketFiles(state_dir) if state_dir.startswith("s3://") else DirectoryFiles(state_dir)


class SharedCheckpointStore:
    """CheckpointStore's interface (write, remove, close) on files all servers share."""

    def __init__(self, files, membership):
        self.files = files
        self._membership = membership
        self._committed = {}  # model id -> (name, file of its last commit)
        self._unsettled = {}  # model id -> files whose commit could not reach etcd
        self.on_stale = []  # hooks run with a model id whose commit was refused

    def adopted(self, model_id, name, file):
        """Note the committed file a claimed model was restored from, and delete the files
        of its earlier owners that no commit of theirs can make current any more."""
        self._committed[model_id] = (name, file)
        token = self._membership.token(model_id)
        for leftover in self.files.names(f"{model_id}."):
            if leftover != file and leftover.split(".")[1] != str(token):
                self.files.delete(leftover)

    def write(self, record):
        model_id = record["id"]
        token = self._membership.token(model_id)
        if token is None:
            raise Unavailable(f"model {model_id}: not owned by this server any more")
        self._membership.check_writable("checkpoint")
        file = f"{model_id}.{token}.{record['version']}.npz"
        size = self.files.write(file, lambda out: np.savez(out, **encode(record)))
        try:
            committed = self._membership.commit(model_id, token, file)
        except Unavailable:
            self._unsettled.setdefault(model_id, []).append(file)
            raise
        if not committed:
            self.files.delete(file)
            logger.error("checkpoint of model %s rejected: another server owns it now",
                         model_id, extra={"event": "checkpoint_stale", "model_id": model_id,
                                          "token": token})
            for hook in self.on_stale:
                hook(model_id)
            raise StaleCheckpoint(f"model {model_id}: token {token} is no longer the owner's")
        _, previous = self._committed.get(model_id, (None, None))
        self._committed[model_id] = (record["name"], file)
        for replaced in [previous, *self._unsettled.pop(model_id, ())]:
            if replaced and replaced != file:
                self.files.delete(replaced)
        return size

    def remove(self, model_id):
        """Delete a model cluster-wide: its etcd keys (if we still own it), then its files."""
        name, file = self._committed.pop(model_id, ("", None))
        token = self._membership.token(model_id)
        if token is not None:
            self._membership.forget(model_id, token, name)
        for leftover in [file, *self._unsettled.pop(model_id, ()), *self.files.names(_job_prefix(model_id))]:
            if leftover:
                self.files.delete(leftover)

    def read(self, file):
        """The record in `file`, whose name must start with its model's id."""
        try:
            with np.load(self.files.open(file), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except Exception as error:  # any failure to parse the archive means the file is damaged
            raise CorruptCheckpoint(f"unreadable archive ({type(error).__name__}: {error})") from None
        record = decode(arrays)
        if not file.startswith(f"{record['id']}."):
            raise CorruptCheckpoint(f"meta.id: got {record['id']!r}, expected the file's {file!r}")
        return record

    def forget_local(self, model_id):
        """Drop what we know of a model another server owns now (its files are the owner's)."""
        self._committed.pop(model_id, None)
        self._unsettled.pop(model_id, None)

    def mark_clean_shutdown(self):
        """Every model's last commit is current: mark each clean and hand it off."""
        for model_id, (_, file) in list(self._committed.items()):
            token = self._membership.token(model_id)
            if token is not None and self._membership.commit(model_id, token, file, clean=True):
                self._membership.release(model_id)

    def close(self):
        self._membership.close()


def _job_prefix(model_id):
    return f"job.{model_id}."


class SharedJobFiles:
    """JobFiles' interface (write, remove) on the shared files, plus the records of one
    model for the server that adopts it."""

    def __init__(self, files, membership):
        self._files = files
        self._membership = membership
        self._written = {}  # job id -> (file name, time.monotonic() of its last write)

    def write(self, record, *, epoch_end=False):
        """Write a job's record while this server owns its model (a server that lost it
        leaves the new owner's record alone); at an epoch end only once a second."""
        name = f"{_job_prefix(record['model_id'])}{record['id']}.json"
        now = time.monotonic()
        _, last = self._written.get(record["id"], (None, -JOB_RECORD_INTERVAL))
        if epoch_end and now - last < JOB_RECORD_INTERVAL:
            return
        if not self._membership.owns(record["model_id"]):
            return
        self._written[record["id"]] = (name, now)
        data = json.dumps(record, allow_nan=False).encode()
        try:
            self._files.write(name, lambda out: out.write(data))
        except Exception as error:  # a bucket's errors are boto's; the job table expects OSError
            raise OSError(f"job record {name}: {error}") from error

    def remove(self, record_id):
        name, _ = self._written.pop(record_id, (None, None))
        if name is not None:
            self._files.delete(name)

    def records(self, model_id):
        """The job records of a model, oldest first; an unreadable one is logged and skipped."""
        records = []
        for name in self._files.names(_job_prefix(model_id)):
            try:
                with _opened(self._files.open(name)) as file:
                    record = json.loads(file.read().decode())
                if not isinstance(record, dict) or name != f"{_job_prefix(model_id)}{record.get('id')}.json":
                    raise ValueError("its id is not the file's")
            except (OSError, ValueError) as error:
                logger.error("job record %s is corrupt, skipped: %s", name, error,
                             extra={"event": "checkpoint_corrupt", "file": name})
                continue
            self._written[record["id"]] = (name, -JOB_RECORD_INTERVAL)
            records.append(record)
        return sorted(records, key=lambda record: (record["create_time_ns"], record["id"]))


class SharedDatasetFiles:
    """DatasetFiles' interface (write, remove) on the shared files, plus reading one
    dataset by id: a cluster's datasets are found by any server, not restored at start."""

    shared = True

    def __init__(self, files):
        self._files = files

    @staticmethod
    def _name(dataset_id):
        return f"dataset.{dataset_id}.npz"

    def write(self, dataset):
        arrays = dataset_arrays(dataset)
        try:
            self._files.write(self._name(dataset.id), lambda out: np.savez(out, **arrays))
        except Exception as error:  # a bucket's errors are boto's; the upload expects OSError
            raise OSError(f"dataset {dataset.id}: {error}") from error

    def remove(self, dataset_id):
        self._files.delete(self._name(dataset_id))

    def exists(self, dataset_id):
        return self._name(dataset_id) in self._files.names(self._name(dataset_id))

    def read(self, dataset_id):
        """The record of a dataset (read_dataset's), or None when there is no such file;
        CorruptCheckpoint when it does not verify."""
        if not self.exists(dataset_id):
            return None
        with _opened(self._files.open(self._name(dataset_id))) as file:
            return read_dataset(file, dataset_id)


def _opened(file):
    """A directory's Path or a bucket's BytesIO, as a binary file to read."""
    return file.open("rb") if isinstance(file, Path) else file
