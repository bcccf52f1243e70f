"""Checkpoints of a cluster in one shared directory, each made current by a fenced etcd commit.

A write goes to a new file DIR/<id>.<token>.<version>.npz (atomically, as the single-server
store writes), then `Membership.commit` points the model's etcd pointer at it if `token` is
still the owner's. A stale owner (paused or cut off while another took over) writes only
files of its own older token, its commit fails, and its file is deleted: it never changes
what the new owner restores from. Once a commit succeeds, the file it replaced is deleted.

No directory lock: the servers of a cluster share DIR, and etcd decides who writes what.
"""

import logging
from pathlib import Path

import numpy as np

from ..checkpoints.format import CorruptCheckpoint, decode, encode
from ..checkpoints.store import CheckpointStore, fsync_directory, write_atomically
from ..errors import Unavailable

__all__ = ["SharedCheckpointStore", "StaleCheckpoint"]

logger = logging.getLogger(__name__)


class StaleCheckpoint(Exception):
    """A checkpoint whose commit etcd refused: another server owns the model now."""


class SharedCheckpointStore(CheckpointStore):
    """CheckpointStore's interface (write, remove, read, close) on a shared directory."""

    def __init__(self, directory, membership):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.last_shutdown_clean = False  # per model in cluster mode: the pointer's "clean"
        self._membership = membership
        self._files = {}  # model id -> (name, file of its last commit)
        self.on_stale = []  # hooks run with a model id whose commit was refused

    def adopted(self, model_id, name, file):
        """Note the committed file a claimed model was restored from."""
        self._files[model_id] = (name, file)

    def write(self, record):
        model_id = record["id"]
        token = self._membership.token(model_id)
        if token is None:
            raise Unavailable(f"model {model_id}: not owned by this server any more")
        self._membership.check_writable("checkpoint")
        file = f"{model_id}.{token}.{record['version']}.npz"
        size = write_atomically(self.directory / file, lambda out: np.savez(out, **encode(record)))
        if not self._membership.commit(model_id, token, file):
            (self.directory / file).unlink(missing_ok=True)
            logger.error("checkpoint of model %s rejected: another server owns it now",
                         model_id, extra={"event": "checkpoint_stale", "model_id": model_id,
                                          "token": token})
            for hook in self.on_stale:
                hook(model_id)
            raise StaleCheckpoint(f"model {model_id}: token {token} is no longer the owner's")
        _, previous = self._files.get(model_id, (None, None))
        self._files[model_id] = (record["name"], file)
        if previous and previous != file:
            (self.directory / previous).unlink(missing_ok=True)
        return size

    def remove(self, model_id):
        """Delete a model cluster-wide: its etcd keys (if we still own it), then its file."""
        name, file = self._files.pop(model_id, ("", None))
        token = self._membership.token(model_id)
        if token is not None:
            self._membership.forget(model_id, token, name)
        if file:
            (self.directory / file).unlink(missing_ok=True)
            fsync_directory(self.directory)

    def path(self, file):
        return self.directory / file

    def read(self, path):
        """The record in `path`, whose name must start with its model's id."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except Exception as error:  # any failure to parse the archive means the file is damaged
            raise CorruptCheckpoint(f"unreadable archive ({type(error).__name__}: {error})") from None
        record = decode(arrays)
        if not Path(path).name.startswith(f"{record['id']}."):
            raise CorruptCheckpoint(f"meta.id: got {record['id']!r}, expected the file's {Path(path).name!r}")
        return record

    def forget_local(self, model_id):
        """Drop what we know of a model another server owns now (its files are the owner's)."""
        self._files.pop(model_id, None)

    def mark_clean_shutdown(self):
        """Every model's last commit is current: mark each clean and hand it off."""
        for model_id, (_, file) in list(self._files.items()):
            token = self._membership.token(model_id)
            if token is not None and self._membership.commit(model_id, token, file, clean=True):
                self._membership.release(model_id)

    def close(self):
        self._membership.close()
