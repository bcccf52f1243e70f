"""Durable models: one checkpoint file per model under `--state-dir`, written atomically.

The file format (`DIR/<model id>.npz`) is a NumPy .npz archive written by `np.savez` and
read with `allow_pickle=False`, so loading a checkpoint never runs code. Its members:

    meta          uint8 bytes of a JSON object: format, id, name, spec, step, version,
                  create_time_ns, update_time_ns, slots (the optimizer slot names)
    weights.I.W   layer I's weights (n_in, n_out); weights.I.b its biases (n_out,)
    slot.NAME.I.W, slot.NAME.I.b   the optimizer slot NAME, laid out like the weights
    sha256        32 bytes: SHA-256 over every other member's name, dtype, shape and bytes

A write goes to a temporary file in the same directory, is fsynced, renamed over the old
file (`os.replace`, atomic) and the directory is fsynced: a crash leaves the old file or
the new one, never a mix. A file that cannot be read whole, or whose checksum or content
does not match, is `CorruptCheckpoint`: reported by name, renamed to `*.corrupt`, never
half-loaded.

`Checkpointer` decides when to write. One background thread does the file work; the only
cost to a model's own calls is `Network.get_state()`'s copy under the model's read lock.
Requests for one model coalesce (a model queued to be saved is saved once, from its state
at that moment), and a deletion is final: once a model is untracked nothing writes its
file again.

Versions never name two different weights, even across a crash: a shutdown that saved
every model leaves DIR/.clean-shutdown behind (removed again at start). Without it, the
last run may have handed out versions past its last checkpoints, so restored models
continue VERSION_GAP_AFTER_CRASH versions later.
"""

import collections
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "VERSION_GAP_AFTER_CRASH", "CheckpointStore", "Checkpointer",
           "CorruptCheckpoint", "NO_CHECKPOINTS", "decode", "encode", "open_checkpoints"]

logger = logging.getLogger(__name__)

FORMAT = 1
_SUFFIX = ".npz"
_TEMPORARY = ".tmp"
_QUARANTINE = ".corrupt"
_LOCK_FILE = ".lock"
_CLEAN_MARK = ".clean-shutdown"
# More versions than one run could hand out between two checkpoints (2**32: a million
# train steps a second for over an hour), and few enough that int64 lasts 2**31 crashes.
VERSION_GAP_AFTER_CRASH = 1 << 32
_META_KEYS = {"format": int, "id": str, "name": str, "spec": dict, "step": int, "version": int,
              "create_time_ns": int, "update_time_ns": int, "slots": list}


class CorruptCheckpoint(Exception):
    """A checkpoint file that cannot be read whole or does not verify; says why."""


# -- the format ----------------------------------------------------------------------------

def _digest(arrays):
    """SHA-256 over the members' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        header = json.dumps([name, array.dtype.str, list(array.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header)
        digest.update(array.nbytes.to_bytes(8, "little"))
        digest.update(array.reshape(-1).view(np.uint8))
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def encode(record):
    """Return the .npz members of a model record.

    record: {"id", "name", "spec", "step", "version", "create_time_ns", "update_time_ns",
    "weights": [(W, b), ...], "slots": {name: [(W, b), ...]}}, the arrays as
    Network.get_state() returns them.
    """
    meta = {"format": FORMAT, "slots": sorted(record["slots"])}
    meta.update({key: record[key] for key in _META_KEYS if key not in meta})
    arrays = {"meta": np.frombuffer(json.dumps(meta, allow_nan=False).encode(), dtype=np.uint8)}
    for prefix, pairs in [("weights", record["weights"])] + [
            (f"slot.{name}", record["slots"][name]) for name in meta["slots"]]:
        for i, (weights, biases) in enumerate(pairs):
            arrays[f"{prefix}.{i}.W"] = weights
            arrays[f"{prefix}.{i}.b"] = biases
    arrays["sha256"] = _digest(arrays)
    return arrays


def _layers(arrays, prefix):
    pairs = []
    while f"{prefix}.{len(pairs)}.W" in arrays:
        i = len(pairs)
        pairs.append((arrays.pop(f"{prefix}.{i}.W"), arrays.pop(f"{prefix}.{i}.b", None)))
        if pairs[-1][1] is None:
            raise CorruptCheckpoint(f"member {prefix}.{i}.b: got nothing, expected the biases of {prefix}.{i}.W")
    return pairs


def decode(arrays):
    """Return the record of .npz members (as from `encode`); CorruptCheckpoint if they don't verify."""
    arrays = dict(arrays)
    stored = arrays.pop("sha256", None)
    if stored is None or "meta" not in arrays:
        raise CorruptCheckpoint(f"members: got {sorted(arrays)}, expected meta and sha256 among them")
    if stored.dtype != np.uint8 or stored.shape != (32,) or not np.array_equal(stored, _digest(arrays)):
        raise CorruptCheckpoint("sha256: got a checksum that does not match the content")
    raw = arrays.pop("meta")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptCheckpoint(f"meta: got undecodable JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CorruptCheckpoint(f"meta: got format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                                f"expected {FORMAT}")
    for key, kind in _META_KEYS.items():
        if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), kind):
            raise CorruptCheckpoint(f"meta.{key}: got {meta.get(key)!r}, expected a {kind.__name__}")
    record = {key: meta[key] for key in _META_KEYS if key not in ("format", "slots")}
    record["weights"] = _layers(arrays, "weights")
    record["slots"] = {name: _layers(arrays, f"slot.{name}") for name in meta["slots"]}
    if arrays:
        raise CorruptCheckpoint(f"members: got unexpected {sorted(arrays)}")
    return record


# -- the directory -------------------------------------------------------------------------

def _fsync_directory(directory):
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
        for leftover in self.directory.glob(f".*{_TEMPORARY}"):
            leftover.unlink()
            logger.info("removed an unfinished checkpoint", extra={
                "event": "checkpoint_leftover_removed", "file": leftover.name})
        mark = self.directory / _CLEAN_MARK
        self.last_shutdown_clean = mark.exists()
        mark.unlink(missing_ok=True)  # from here on, only a clean close() writes it again
        _fsync_directory(self.directory)

    def path(self, model_id):
        return self.directory / f"{model_id}{_SUFFIX}"

    def paths(self):
        """The checkpoint files present, in name order."""
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if not p.name.startswith("."))

    def write(self, record):
        """Write a model's record atomically (temporary file, fsync, rename, fsync of the directory)."""
        final = self.path(record["id"])
        temporary = self.directory / f".{final.name}.{uuid.uuid4().hex}{_TEMPORARY}"
        try:
            # Owner-only: the weights are the users' work. O_EXCL: never through a planted file.
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                np.savez(file, **encode(record))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        return final.stat().st_size

    def remove(self, model_id):
        """Delete a model's file (absent already is fine) and make the deletion durable."""
        self.path(model_id).unlink(missing_ok=True)
        _fsync_directory(self.directory)

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
        """Rename a damaged file to <name>.corrupt (kept for inspection, not read again)."""
        target = path.with_name(path.name + _QUARANTINE)
        counter = 1
        while target.exists():
            target = path.with_name(f"{path.name}{_QUARANTINE}.{counter}")
            counter += 1
        os.replace(path, target)
        _fsync_directory(self.directory)
        return target

    def mark_clean_shutdown(self):
        """Record that every model's file is current (the next start restores versions as saved)."""
        (self.directory / _CLEAN_MARK).touch()
        _fsync_directory(self.directory)

    def close(self):
        if self._lock_descriptor is not None:
            os.close(self._lock_descriptor)  # releases the flock
            self._lock_descriptor = None


# -- when to write -------------------------------------------------------------------------

class _Job:
    __slots__ = ("kind", "entry", "done", "error")

    def __init__(self, kind, entry):
        self.kind = kind  # "save" or "remove"
        self.entry = entry
        self.done = threading.Event()
        self.error = None


class _Tracked:
    __slots__ = ("entry", "dirty_since", "steps")

    def __init__(self, entry):
        self.entry = entry
        self.dirty_since = None  # time.monotonic() of the first step not in a checkpoint
        self.steps = 0  # train steps since the last snapshot


def _snapshot(entry):
    """The model's record: its state as get_state() copied it, from one weights version,
    labelled with that version."""
    state = entry.network.get_state()
    return {"id": entry.id, "name": entry.name, "spec": state["spec"], "step": int(state["step"]),
            "version": int(state["version"]), "create_time_ns": entry.create_time_ns,
            "update_time_ns": entry.update_time_ns, "weights": state["weights"],
            "slots": state["slots"]}


class Checkpointer:
    """Keeps every tracked model's checkpoint current; one writer thread.

    The registry calls track/untrack under its table lock (so a model deleted by name while
    it is being created is never written again), then save/remove outside it. Training
    marks a model dirty; it is saved once `every_steps` steps or `every_seconds` seconds
    have passed since its first unsaved step (either 0: that trigger is off), and at close().
    """

    def __init__(self, store, every_steps=0, every_seconds=0.0):
        self.store = store
        self._every_steps = every_steps
        self._every_seconds = every_seconds
        self._condition = threading.Condition()
        self._tracked = {}  # model id -> _Tracked
        self._queue = collections.OrderedDict()  # model id -> _Job, oldest first
        self._closing = False
        self._closed = False
        self._failures = 0  # failed writes: the shutdown is then not clean
        self._thread = threading.Thread(target=self._run, name="nnserve-checkpoints", daemon=True)
        self._thread.start()

    # -- called by the registry ----------------------------------------------------------

    def track(self, entry):
        """Start keeping `entry` durable (its file is written by save())."""
        with self._condition:
            self._tracked[entry.id] = _Tracked(entry)

    def untrack(self, entry):
        """Stop writing `entry`'s file for good (its removal is remove()'s)."""
        with self._condition:
            self._tracked.pop(entry.id, None)

    def save(self, entry, wait=True):
        """Write a tracked model's file now; with wait, return once it is durable."""
        with self._condition:
            if entry.id not in self._tracked or self._closing:
                return
            job = self._schedule(entry, "save")
        if wait:
            self._wait(job)

    def remove(self, entry, wait=True):
        """Delete an untracked model's file; with wait, return once the deletion is durable."""
        with self._condition:
            if self._closing:  # a call that outlived the shutdown's grace period
                return
            job = self._schedule(entry, "remove")
        if wait:
            self._wait(job)

    def trained(self, entry):
        """Count one train step of `entry`; schedule a save when an interval is reached."""
        with self._condition:
            tracked = self._tracked.get(entry.id)
            if tracked is None:
                return
            tracked.steps += 1
            if tracked.dirty_since is None:
                tracked.dirty_since = time.monotonic()
                self._condition.notify_all()  # the writer's next wake-up may be sooner now
            if self._every_steps and tracked.steps >= self._every_steps:
                self._schedule(entry, "save")

    def close(self):
        """Save every model with unsaved steps, wait for all writes, stop the thread. Idempotent."""
        with self._condition:
            if self._closed:
                return
            for tracked in self._tracked.values():
                if tracked.dirty_since is not None:
                    self._schedule(tracked.entry, "save")
            pending = len(self._queue)
            self._closing = True
            self._condition.notify_all()
        self._thread.join()
        if not self._failures:
            self.store.mark_clean_shutdown()
        self.store.close()
        self._closed = True
        logger.info("checkpoints flushed", extra={"event": "checkpoints_flushed", "models": pending})

    # -- the writer ----------------------------------------------------------------------

    def _schedule(self, entry, kind):
        """Queue (or merge into the queued) job for this model; called under the condition."""
        job = self._queue.get(entry.id)
        if job is None:
            job = self._queue[entry.id] = _Job(kind, entry)
            self._condition.notify_all()
        elif kind == "remove":
            job.kind = "remove"  # a queued save of a deleted model becomes its removal
        return job

    @staticmethod
    def _wait(job):
        job.done.wait()  # the writer logs a failure; the model stays in memory and is retried

    def _due(self):
        """Queue the dirty models whose time is up; return seconds until the next one is."""
        if not self._every_seconds:
            return None
        now, wait = time.monotonic(), None
        for tracked in self._tracked.values():
            if tracked.dirty_since is None or tracked.entry.id in self._queue:
                continue
            left = tracked.dirty_since + self._every_seconds - now
            if left <= 0:
                self._schedule(tracked.entry, "save")
            else:
                wait = left if wait is None else min(wait, left)
        return wait

    def _next_job(self):
        """Block until there is a job; None once closing with nothing left."""
        with self._condition:
            while True:
                timeout = self._due()
                if self._queue:
                    break
                if self._closing:
                    return None
                self._condition.wait(timeout)
            model_id, job = self._queue.popitem(last=False)
            if job.kind == "save":
                tracked = self._tracked.get(model_id)
                if tracked is None:  # deleted since: never write it again
                    job.kind = "skip"
                else:  # steps from here on go into the next checkpoint
                    tracked.dirty_since, tracked.steps = None, 0
            return job

    def _run(self):
        while True:
            job = self._next_job()
            if job is None:
                return
            started = time.perf_counter()
            try:
                if job.kind == "save":
                    size = self.store.write(_snapshot(job.entry))
                    logger.debug("checkpoint written", extra={
                        "event": "checkpoint_written", "model_id": job.entry.id, "bytes": size,
                        "seconds": round(time.perf_counter() - started, 4)})
                elif job.kind == "remove":
                    self.store.remove(job.entry.id)
            except Exception as error:  # a full disk must not stop the other models' writes
                self._failures += 1
                job.error = f"{type(error).__name__}: {error}"
                logger.error("checkpoint %s of model %s failed: %s", job.kind, job.entry.id, job.error,
                             extra={"event": "checkpoint_failed", "model_id": job.entry.id})
                with self._condition:
                    tracked = self._tracked.get(job.entry.id)
                    if job.kind == "save" and tracked is not None and tracked.dirty_since is None:
                        tracked.dirty_since = time.monotonic()  # try again at the next interval
            job.done.set()


class _NoCheckpoints:
    """What the registry calls when models are kept in memory only: nothing happens."""

    def track(self, entry):
        pass

    untrack = track

    def save(self, entry, wait=True):
        pass

    remove = save

    def trained(self, entry):
        pass

    def close(self):
        pass


NO_CHECKPOINTS = _NoCheckpoints()


def open_checkpoints(settings):
    """The Checkpointer of settings.state_dir, or NO_CHECKPOINTS when it is empty."""
    if not settings.state_dir:
        return NO_CHECKPOINTS
    return Checkpointer(CheckpointStore(settings.state_dir), settings.checkpoint_every_steps,
                        settings.checkpoint_every_seconds)


def restore(registry, checkpointer):
    """Load every checkpoint of checkpointer.store into the registry; return the count loaded.

    A damaged file is logged by name and renamed to *.corrupt; a model the registry refuses
    (a limit lowered since, a name taken) is logged and its file left in place.
    """
    from ..errors import InvalidArgument, ServiceError

    if checkpointer is NO_CHECKPOINTS:
        return 0
    store = checkpointer.store
    started = time.perf_counter()
    records = []
    for path in store.paths():
        try:
            records.append((path, store.read(path)))
        except CorruptCheckpoint as error:
            _report_corrupt(store, path, error)
    records.sort(key=lambda item: (item[1]["create_time_ns"], item[1]["id"]))
    if records and not store.last_shutdown_clean:
        logger.warning("the last run did not shut down cleanly: restored models continue %d "
                       "versions on", VERSION_GAP_AFTER_CRASH,
                       extra={"event": "versions_skipped", "gap": VERSION_GAP_AFTER_CRASH})
        for _, record in records:
            record["version"] += VERSION_GAP_AFTER_CRASH
    loaded = 0
    for path, record in records:
        try:
            registry.restore(record)
        except InvalidArgument as error:  # verified, yet not a valid model: damaged all the same
            _report_corrupt(store, path, error)
        except ServiceError as error:
            logger.error("checkpoint %s not restored: %s", path.name, error, extra={
                "event": "checkpoint_not_restored", "file": path.name})
        else:
            loaded += 1
    logger.info("restored %d models", loaded, extra={
        "event": "models_restored", "models": loaded, "directory": str(store.directory),
        "seconds": round(time.perf_counter() - started, 3)})
    return loaded


def _report_corrupt(store, path, error):
    target = store.quarantine(path)
    logger.error("checkpoint %s is corrupt, skipped: %s", path.name, error, extra={
        "event": "checkpoint_corrupt", "file": path.name, "moved_to": target.name})
