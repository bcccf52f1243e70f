"""The checkpoint directory: one file per model, written atomically, one server at a time.

A write goes to a temporary file in the same directory, is fsynced, renamed over the old
file (`os.replace`, atomic) and the directory is fsynced: a crash leaves the old file or
the new one, never a mix. A file that cannot be read whole or does not verify is
`CorruptCheckpoint`; restore renames it to `*.corrupt` (`quarantine`).

The directory also keeps DIR/.clean-shutdown, the mark that every model's file was
current when the last server stopped (restore reads it, see restore.py).
"""

import fcntl
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from .format import CorruptCheckpoint, decode, encode

__all__ = ["CheckpointStore", "fsync_directory", "quarantine", "remove_leftovers", "write_atomically"]

logger = logging.getLogger(__name__)

_SUFFIX = ".npz"
_TEMPORARY = ".tmp"
_QUARANTINE = ".corrupt"
_LOCK_FILE = ".lock"
_CLEAN_MARK = ".clean-shutdown"


def fsync_directory(directory):
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(final, write):
    """Make `final` hold what write(file) writes, or leave it as it was: a temporary file in
    the same directory, fsync, rename over `final`, fsync of the directory. Return its size."""
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}{_TEMPORARY}")
    try:
        # Owner-only: the contents are the users' work. O_EXCL: never through a planted file.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(final.parent)
    return final.stat().st_size


def quarantine(path):
    """Rename a damaged file to <name>.corrupt (kept for inspection, not read again; an
    earlier one of the same name is kept too); return the new path."""
    target = path.with_name(path.name + _QUARANTINE)
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}{_QUARANTINE}.{counter}")
        counter += 1
    os.replace(path, target)
    fsync_directory(path.parent)
    return target


def remove_leftovers(directory, what):
    """Delete the temporary files a crash left in `directory` (never read: never complete)."""
    for leftover in directory.glob(f".*{_TEMPORARY}"):
        leftover.unlink()
        logger.info("removed an unfinished %s", what, extra={
            "event": "checkpoint_leftover_removed", "file": leftover.name})


class CheckpointStore:
    """The checkpoint files of one server: write, remove, read, list. One process per directory.

    Opening takes an exclusive lock on DIR/.lock (released when the process ends, however
    it ends) and deletes temporary files a crash left behind. Raises OSError when the
    directory cannot be made or another process holds it.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_descriptor = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_descriptor)
            raise OSError(f"state directory {self.directory}: got it locked by another process, "
                          "expected one server per state directory") from None
        remove_leftovers(self.directory, "checkpoint")
        mark = self.directory / _CLEAN_MARK
        self.last_shutdown_clean = mark.exists()
        mark.unlink(missing_ok=True)  # from here on, only a clean close() writes it again
        fsync_directory(self.directory)

    def path(self, model_id):
        return self.directory / f"{model_id}{_SUFFIX}"

    def paths(self):
        """The checkpoint files present, in name order."""
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if not p.name.startswith("."))

    def write(self, record):
        """Write a model's record atomically (temporary file, fsync, rename, fsync of the directory)."""
        return write_atomically(self.path(record["id"]), lambda file: np.savez(file, **encode(record)))

    def remove(self, model_id):
        """Delete a model's file (absent already is fine) and make the deletion durable."""
        self.path(model_id).unlink(missing_ok=True)
        fsync_directory(self.directory)

    def read(self, path):
        """Return the record in `path`; CorruptCheckpoint if any part of it fails to read or verify."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except Exception as error:  # any failure to parse the archive means the file is damaged
            raise CorruptCheckpoint(f"unreadable archive ({type(error).__name__}: {error})") from None
        record = decode(arrays)
        if path.name != f"{record['id']}{_SUFFIX}":
            raise CorruptCheckpoint(f"meta.id: got {record['id']!r}, expected the file's name {path.stem!r}")
        return record

    def quarantine(self, path):
        """Rename a damaged file to <name>.corrupt; return the new path."""
        return quarantine(path)

    def mark_clean_shutdown(self):
        """Record that every model's file is current (the next start restores versions as saved)."""
        (self.directory / _CLEAN_MARK).touch()
        fsync_directory(self.directory)

    def close(self):
        if self._lock_descriptor is not None:
            os.close(self._lock_descriptor)  # releases the flock
            self._lock_descriptor = None
