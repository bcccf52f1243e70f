"""Durable datasets and training-job records under `--state-dir`, beside the models' files.

- DIR/datasets/<id>.npz: x, y and a `meta` JSON (format, id, name, create_time_ns,
  sha256), with a `sha256` member over every other (format.members_digest): written once,
  when the upload completes and before it is acknowledged; read with allow_pickle=False.
- DIR/jobs/<id>.json: a job's arguments, state and progress, rewritten when it starts,
  at most once a second at its epoch ends, and when it ends.

Both are written atomically (store.write_atomically). A damaged file is reported by name
and renamed to *.corrupt, as a model's checkpoint is.
"""

import json
import logging
import time

import numpy as np

from .format import CorruptCheckpoint, members_digest
from .store import fsync_directory, quarantine, remove_leftovers, write_atomically

__all__ = ["DatasetFiles", "JobFiles", "read_dataset", "dataset_arrays"]

logger = logging.getLogger(__name__)

FORMAT = 1
# Job records are rewritten at epoch ends at most this often (each write is an fsync).
JOB_RECORD_INTERVAL = 1.0


class _Folder:
    """One subfolder of the state directory, its files named <id><suffix>."""

    def __init__(self, state_dir, name, suffix, what):
        self.directory = state_dir / name  # made with its first file
        self._suffix = suffix
        self._what = what
        if self.directory.is_dir():
            remove_leftovers(self.directory, what)

    def path(self, record_id):
        """The file of a record, its folder made if need be."""
        self.directory.mkdir(exist_ok=True)
        return self.directory / f"{record_id}{self._suffix}"

    def paths(self):
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob(f"*{self._suffix}") if not p.name.startswith("."))

    def remove(self, record_id):
        if self.directory.is_dir():
            (self.directory / f"{record_id}{self._suffix}").unlink(missing_ok=True)
            fsync_directory(self.directory)

    def quarantine(self, path, error):
        """Set a damaged file aside (store.quarantine) and log it by name."""
        target = quarantine(path)
        logger.error("%s %s is corrupt, skipped: %s", self._what, path.name, error, extra={
            "event": "checkpoint_corrupt", "file": path.name, "moved_to": target.name})

    def read_all(self, read):
        """[(path, record)] of every file `read` accepts; the others are quarantined."""
        records = []
        for path in self.paths():
            try:
                records.append((path, read(path)))
            except CorruptCheckpoint as error:
                self.quarantine(path, error)
        return records


def dataset_arrays(dataset):
    """The members of a dataset's .npz file: meta (JSON), x, y and their sha256."""
    meta = {"format": FORMAT, "id": dataset.id, "name": dataset.name,
            "create_time_ns": dataset.create_time_ns, "sha256": dataset.sha256}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
              "x": dataset.x, "y": dataset.y}
    arrays["sha256"] = members_digest(arrays)
    return arrays


def read_dataset(file, dataset_id):
    """{"id", "name", "create_time_ns", "sha256", "x", "y"} of a dataset's .npz (a path or a
    binary file) that must hold `dataset_id`; CorruptCheckpoint if it does not read whole
    or verify."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # any failure to parse the archive means the file is damaged
        raise CorruptCheckpoint(f"unreadable archive ({type(error).__name__}: {error})") from None
    stored = arrays.pop("sha256", None)
    if set(arrays) != {"meta", "x", "y"} or stored is None:
        raise CorruptCheckpoint(f"members: got {sorted(arrays)}, expected meta, x, y and sha256")
    if stored.shape != (32,) or not np.array_equal(stored, members_digest(arrays)):
        raise CorruptCheckpoint("sha256: got a checksum that does not match the content")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except ValueError as error:
        raise CorruptCheckpoint(f"meta: got undecodable JSON ({error})") from None
    if meta.get("format") != FORMAT or meta.get("id") != dataset_id:
        raise CorruptCheckpoint(f"meta: got format {meta.get('format')!r} and id {meta.get('id')!r}, "
                                f"expected format {FORMAT} and the file's id {dataset_id!r}")
    return {**meta, **arrays}


class DatasetFiles(_Folder):
    """The datasets of a state directory, all restored at start."""

    shared = False  # SharedDatasetFiles (cluster mode) are read when asked for instead

    def __init__(self, state_dir):
        super().__init__(state_dir, "datasets", ".npz", "dataset")

    def write(self, dataset):
        arrays = dataset_arrays(dataset)
        write_atomically(self.path(dataset.id), lambda file: np.savez(file, **arrays))

    def read(self, path):
        return read_dataset(path, path.stem)


class JobFiles(_Folder):
    """The training-job records of a state directory."""

    def __init__(self, state_dir):
        super().__init__(state_dir, "jobs", ".json", "job record")
        self._written = {}  # job id -> time.monotonic() of its last epoch-end write

    def write(self, record, *, epoch_end=False):
        """Write a job's record; at an epoch end only if the last write is a second old."""
        now = time.monotonic()
        if epoch_end and now - self._written.get(record["id"], -JOB_RECORD_INTERVAL) < JOB_RECORD_INTERVAL:
            return
        self._written[record["id"]] = now
        data = json.dumps(record, allow_nan=False).encode()
        write_atomically(self.path(record["id"]), lambda file: file.write(data))

    def remove(self, record_id):
        self._written.pop(record_id, None)
        super().remove(record_id)

    def read(self, path):
        try:
            record = json.loads(path.read_bytes().decode())
        except (OSError, ValueError) as error:
            raise CorruptCheckpoint(f"unreadable JSON ({type(error).__name__}: {error})") from None
        if not isinstance(record, dict) or path.name != f"{record.get('id')}.json":
            raise CorruptCheckpoint(f"id: got {record.get('id') if isinstance(record, dict) else record!r}, "
                                    f"expected the file's name {path.stem!r}")
        return record
