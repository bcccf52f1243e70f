"""When checkpoints are written: `Checkpointer`, and `NO_CHECKPOINTS` for models in memory only.

One background thread does the file work; the only cost to a model's own calls is
`Network.get_state()`'s copy under the model's read lock. Requests for one model coalesce
(a model queued to be saved is saved once, from its state at that moment), and a deletion
is final: once a model is untracked nothing writes its file again. A close() marks the
shutdown clean when every model's last write succeeded (a failed write that a later one of
the same model made good, as after a full disk was freed or etcd came back, leaves nothing
unsaved).

With `max_unsaved_steps` (cluster mode), a train step waits in `admit` while that many of
its model's acknowledged steps are not durable yet, and is refused (UNAVAILABLE, before it
changes anything) when the write that would make them durable failed: what a crash or a
partition loses is then bounded by the setting, not by how long the failure lasts.
"""

import collections
import logging
import threading
import time

from ..errors import Unavailable
from .store import CheckpointStore

__all__ = ["NO_CHECKPOINTS", "Checkpointer", "open_checkpoints"]

logger = logging.getLogger(__name__)

# How long a train step waits in `admit` for its model's checkpoint before it is refused:
# past one etcd request's timeout (2 s), short of the SDK's usual deadlines (5 s and more).
ADMIT_SECONDS = 3.0


class _Job:
    __slots__ = ("kind", "entry", "done", "error")

    def __init__(self, kind, entry):
        self.kind = kind  # "save" or "remove"
        self.entry = entry
        self.done = threading.Event()
        self.error = None


class _Tracked:
    __slots__ = ("entry", "dirty_since", "steps", "writing")

    def __init__(self, entry):
        self.entry = entry
        self.dirty_since = None  # time.monotonic() of the first step not in a checkpoint
        self.steps = 0  # train steps since the last snapshot
        self.writing = 0  # train steps in the snapshot being written (not durable yet)


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

    def __init__(self, store, every_steps=0, every_seconds=0.0, max_unsaved_steps=0):
        self.store = store
        self._every_steps = every_steps
        self._every_seconds = every_seconds
        self._max_unsaved_steps = max_unsaved_steps
        self._condition = threading.Condition()
        self._tracked = {}  # model id -> _Tracked
        self._queue = collections.OrderedDict()  # model id -> _Job, oldest first
        self._closing = False
        self._closed = False
        self._failed = set()  # ids whose last write failed: the shutdown is then not clean
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
            # Nothing of it is left to save (a removal that follows counts on its own).
            self._failed.discard(entry.id)

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

    def admit(self, entry, method):
        """Return when a train step of `entry` may be applied (module docstring); raise
        Unavailable when its model's steps cannot be made durable now."""
        if not self._max_unsaved_steps:
            return
        deadline = time.monotonic() + ADMIT_SECONDS
        with self._condition:
            while True:
                tracked = self._tracked.get(entry.id)
                if tracked is None or tracked.steps + tracked.writing < self._max_unsaved_steps:
                    return
                if entry.id in self._failed and not tracked.writing:
                    self._schedule(entry, "save")  # again: the disk or etcd may be back
                    raise Unavailable(
                        f"{method}: model {entry.id} has {tracked.steps} acknowledged steps whose "
                        "checkpoint could not be written (see the server's log); train steps are "
                        f"refused until it is, so that at most {self._max_unsaved_steps} "
                        "acknowledged steps are ever not durable")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(f"{method}: model {entry.id}'s checkpoint is not written "
                                      f"after {ADMIT_SECONDS:g} s; try again")
                self._condition.wait(left)

    def trained(self, entry, steps=1):
        """Count train steps of `entry`; schedule a save when an interval is reached."""
        with self._condition:
            tracked = self._tracked.get(entry.id)
            if tracked is None:
                return
            tracked.steps += steps
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
        if not self._failed:
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
                    tracked.dirty_since = None
                    tracked.writing, tracked.steps = tracked.writing + tracked.steps, 0
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
                if job.kind != "skip":
                    with self._condition:
                        self._failed.discard(job.entry.id)
                        self._settled(job, durable=True)
            except Exception as error:  # a full disk must not stop the other models' writes
                job.error = f"{type(error).__name__}: {error}"
                logger.error("checkpoint %s of model %s failed: %s", job.kind, job.entry.id, job.error,
                             extra={"event": "checkpoint_failed", "model_id": job.entry.id})
                with self._condition:
                    self._failed.add(job.entry.id)
                    tracked = self._settled(job, durable=False)
                    if job.kind == "save" and tracked is not None and tracked.dirty_since is None:
                        tracked.dirty_since = time.monotonic()  # try again at the next interval
            job.done.set()

    def _settled(self, job, durable):
        """A save's steps are durable now, or unsaved again; wake admit(). Under the condition."""
        tracked = self._tracked.get(job.entry.id)
        if tracked is not None and job.kind == "save":
            if not durable:
                tracked.steps += tracked.writing
            tracked.writing = 0
            self._condition.notify_all()
        return tracked


class _NoCheckpoints:
    """What the registry calls when models are kept in memory only: nothing happens."""

    def track(self, entry):
        pass

    untrack = track

    def save(self, entry, wait=True):
        pass

    remove = save

    def admit(self, entry, method):
        pass

    def trained(self, entry, steps=1):
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
