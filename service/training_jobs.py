"""Training jobs: the model layer's fit loop run next to the weights, watched over a stream.

A job trains one model on one uploaded dataset with nnserve.model.fit's loop, driving the
model's Network directly (the same calls, batches and history as Network.fit and the SDK's
RemoteModel.fit, so all three end bit-identical). `job_workers` threads run jobs; further
jobs wait QUEUED. A model has at most one unfinished job: the registry refuses TrainStep,
SetState and SetWeights on it meanwhile (`ModelEntry.job`), and a second job is refused.

Events (started, progress, epoch end, ended) are snapshots of the job's fields kept in a
short ring per job; each watcher turns them into messages on its own thread, outside the
job's lock, at most 20 a second (the ones that come faster are merged, see `_merged`):
every message costs the job's thread a GIL hand-over or two.
"""

import collections
import itertools
import logging
import math
import queue
import threading
import time
import uuid

from nnserve.model import InvalidInput, NonFiniteStep
from nnserve.model import fit as fitting
from nnserve.model.batches import check_inputs, check_targets
from nnserve.model.thread_budget import BUDGET
from nnserve.v1 import nnserve_pb2 as pb

from .errors import FailedPrecondition, InvalidArgument, LimitExceeded, NotFound, limit_message
from .names import page_after, page_of

__all__ = ["ADOPTED_FROM_LOST_SERVER", "JobTable", "TrainingJob"]

logger = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    pb.TRAINING_JOB_STATE_QUEUED, pb.TRAINING_JOB_STATE_RUNNING, pb.TRAINING_JOB_STATE_SUCCEEDED,
    pb.TRAINING_JOB_STATE_FAILED, pb.TRAINING_JOB_STATE_CANCELLED)
ENDED = (SUCCEEDED, FAILED, CANCELLED)
STATE_NAMES = {value: pb.TrainingJobState.Name(value)[len("TRAINING_JOB_STATE_"):].lower()
               for value in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)}
# Events kept per job for watchers; a slower watcher skips to the oldest kept.
_EVENTS_KEPT = 256
# A watcher sends at most one message per this many seconds (but the last at once).
MIN_EVENT_INTERVAL = 0.05
# Where a snapshot (TrainingJob.snapshot) keeps the history.
_HISTORY = 4
# Steps a job runs between two flushes of its counts (it also flushes at each event).
_STEPS_PER_FLUSH = 256
# Finished jobs kept for Get/List after they end (the oldest go first).
_FINISHED_KEPT = 1000
# What interrupted a job found unfinished in its record (JobTable.restore).
STOPPED_UNCLEANLY = "the server stopped without shutting down; the model is at its last checkpoint"
ADOPTED_FROM_LOST_SERVER = ("the server training it left the cluster without handing its model "
                            "over; this server adopted the model at its last committed checkpoint")


def _merged(events):
    """The messages of a run of events: STARTED and ENDED each stay one; consecutive
    PROGRESS and EPOCH_END events become one, an EPOCH_END when any epoch ended in it, the
    job as the last of them saw it, with the history of every epoch that ended in the run."""
    merged, run = [], []

    def close_run():
        if run:
            kinds = {event[0] for event in run}
            kind = (pb.TRAINING_JOB_EVENT_KIND_EPOCH_END if pb.TRAINING_JOB_EVENT_KIND_EPOCH_END in kinds
                    else pb.TRAINING_JOB_EVENT_KIND_PROGRESS)
            history = {}
            for event_kind, snapshot, *_ in run:
                if event_kind == pb.TRAINING_JOB_EVENT_KIND_EPOCH_END:
                    for name, values in snapshot[_HISTORY].items():
                        history.setdefault(name, []).extend(values)
            _, last, recent_loss, version = run[-1]
            snapshot = last if kind == pb.TRAINING_JOB_EVENT_KIND_PROGRESS else (
                last[:_HISTORY] + (history,) + last[_HISTORY + 1:])
            merged.append((kind, snapshot, recent_loss, version))
            run.clear()

    for event in events:
        if event[0] in (pb.TRAINING_JOB_EVENT_KIND_PROGRESS, pb.TRAINING_JOB_EVENT_KIND_EPOCH_END):
            run.append(event)
        else:
            close_run()
            merged.append(event)
    close_run()
    return merged


class _Cancelled(Exception):
    """Raised inside a job's loop before the next step once the job is cancelled."""


class TrainingJob:
    """One job: its arguments, where it is, and its events."""

    def __init__(self, entry, dataset, validation, *, epochs, batch_size, shuffle, seed,
                 every_steps, every_seconds, sequence):
        self.id = uuid.uuid4().hex
        self.entry = entry  # the model's registry entry, dataset and validation: while it may run
        self.dataset = dataset
        self.validation = validation
        self.model_id = entry.id
        self.dataset_id = dataset.id
        self.validation_id = validation.id if validation else ""
        self.epochs, self.batch_size, self.shuffle, self.seed = epochs, batch_size, shuffle, seed
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.sequence = sequence
        self.state = QUEUED
        self.epoch = self.step = 0
        self.total_steps = epochs * math.ceil(len(dataset.x) / batch_size)
        self.examples = 0
        self.history = {"loss": []}
        self.error = ""
        self.recent_loss = 0.0
        self.version = entry.network.version
        self.create_time_ns = time.time_ns()
        self.start_time_ns = self.end_time_ns = 0
        self.cancel_reason = None
        self.interrupted = False  # cancelled by a shutdown: it ends FAILED, "interrupted at ..."
        self.changed = threading.Condition()
        # (number, kind, snapshot, recent loss, version) of the latest events
        self.events = collections.deque(maxlen=_EVENTS_KEPT)
        self.event_count = 0

    # The attributes a job record keeps (DIR/jobs/<id>.json), under their own names.
    _RECORD = ("id", "model_id", "dataset_id", "validation_id", "epochs", "batch_size", "shuffle",
               "seed", "state", "epoch", "step", "total_steps", "examples", "history", "error",
               "create_time_ns", "start_time_ns", "end_time_ns")

    def record(self):
        """The job as a JSON-able dict (its durable record)."""
        return {key: getattr(self, key) for key in self._RECORD}

    @classmethod
    def from_record(cls, record, sequence):
        """An ended job read back from its record (no model or dataset objects: it never runs)."""
        job = cls.__new__(cls)
        for key in cls._RECORD:
            setattr(job, key, record[key])
        job.sequence = sequence
        job.entry = job.dataset = job.validation = None
        job.recent_loss, job.version = 0.0, 0
        job.cancel_reason, job.interrupted = None, False
        job.every_steps = job.every_seconds = 0
        job.changed = threading.Condition()
        job.events, job.event_count = collections.deque(maxlen=_EVENTS_KEPT), 0
        return job

    @property
    def ended(self):
        return self.state in ENDED

    @property
    def examples_per_second(self):
        """Samples trained per second from its start to its end (or to now); 0 before."""
        if not self.start_time_ns:
            return 0.0
        elapsed = ((self.end_time_ns or time.time_ns()) - self.start_time_ns) / 1e9
        return self.examples / elapsed if elapsed > 0 else 0.0

    def snapshot(self, full):
        """The job's fields now, for an event: the whole history when `full`, else only the
        latest epoch (so a progress event costs the same in epoch 1 and epoch 10,000)."""
        history = self.history if full else {name: values[-1:] for name, values in self.history.items()}
        return (self.state, self.epoch, self.step, self.examples_per_second,
                {name: list(values) for name, values in history.items()}, self.error,
                self.start_time_ns, self.end_time_ns)

    def describe(self, timestamp, snapshot=None):
        """The TrainingJob message of the job now, or as a snapshot() saw it."""
        state, epoch, step, rate, history, error, start_ns, end_ns = snapshot or self.snapshot(True)
        epochs = [pb.EpochMetrics(loss=loss) for loss in history["loss"]]
        for name in ("val_loss", "val_accuracy"):
            for metrics, value in zip(epochs, history.get(name, ())):
                setattr(metrics, name, value)
        message = pb.TrainingJob(
            id=self.id, model=self.model_id, dataset=self.dataset_id,
            validation_dataset=self.validation_id, state=state,
            epochs=self.epochs, batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed,
            epoch=epoch, step=step, total_steps=self.total_steps, examples_per_second=rate,
            history=epochs, error=error, create_time=timestamp(self.create_time_ns))
        if start_ns:
            message.start_time.CopyFrom(timestamp(start_ns))
        if end_ns:
            message.end_time.CopyFrom(timestamp(end_ns))
        return message


class _JobModel:
    """The Network as the fit loop sees it in a job. A step checks for cancellation, runs,
    and is noted in a local list; the notes reach the job's fields (what GetTrainingJob
    and the events show), the metrics and the checkpointer a batch at a time: at each
    event and every _STEPS_PER_FLUSH steps, so a step costs the job's thread next to nothing
    beyond the kernel (a [2, 8, 8, 1] step takes ~10 us)."""

    def __init__(self, table, job):
        self._table, self._job = table, job
        self._network = job.entry.network
        self._every_steps, self._every_seconds = job.every_steps, job.every_seconds
        self._step = job.step
        self._last_progress = time.monotonic()
        self._rows, self._losses, self._seconds = [], [], []  # of the steps not yet flushed
        self._version = job.version

    def train_step(self, x, y):
        if self._job.cancel_reason is not None:
            raise _Cancelled()
        started = time.perf_counter()
        BUDGET.alone()
        loss = self._network.train_step(x, y)
        self._seconds.append(time.perf_counter() - started)
        self._rows.append(len(x))
        self._losses.append(float(loss))
        self._version = loss.version
        self._step += 1
        if self._every_steps and self._step % self._every_steps == 0 or (
                self._every_seconds and time.monotonic() - self._last_progress >= self._every_seconds):
            self._last_progress = time.monotonic()
            self.flush()
            self._table.publish(self._job, pb.TRAINING_JOB_EVENT_KIND_PROGRESS)
        elif len(self._rows) >= _STEPS_PER_FLUSH:
            self.flush()
        return loss

    def evaluate(self, x, y):
        BUDGET.alone()
        return self._network.evaluate(x, y)

    def flush(self):
        """Bring the job's fields, the metrics and the checkpointer up to the last step."""
        if not self._rows:
            return
        job, entry = self._job, self._job.entry
        rows, losses, seconds = self._rows, self._losses, self._seconds
        self._rows, self._losses, self._seconds = [], [], []
        with job.changed:
            job.step = self._step
            job.examples += sum(rows)
            job.recent_loss, job.version = losses[-1], self._version
        metrics = self._table.metrics
        metrics.trained_steps(entry, rows, losses, seconds)
        metrics.job_stepped(entry, len(rows), job.examples_per_second)
        self._table.checkpoints.trained(entry, len(rows))
        entry.update_time_ns = time.time_ns()


class JobTable:
    """The jobs of one server, their workers and their watchers."""

    STATE_NAMES = tuple(STATE_NAMES.values())

    def __init__(self, settings, registry, datasets, metrics, checkpoints, timestamp, files):
        self.metrics = metrics
        self.checkpoints = checkpoints
        self._files = files  # checkpoints.JobFiles with --state-dir, else None
        self._settings = settings
        self._registry = registry
        self._timestamp = timestamp
        self._lock = threading.Lock()
        self._jobs = {}  # id -> TrainingJob, in creation order
        self._sequence = itertools.count(1)
        self._queue = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"nnserve-job-{i}", daemon=True)
                         for i in range(settings.job_workers)]
        for worker in self._workers:
            worker.start()
        datasets.on_delete.append(self._dataset_deleted)
        registry.on_delete.append(self.model_deleted)
        self._datasets = datasets

    # -- the RPCs ----------------------------------------------------------------------

    def create(self, request):
        if request.epochs < 0:
            raise InvalidArgument(f"epochs: got {request.epochs}, expected an integer >= 0")
        if request.batch_size < 1:
            raise InvalidArgument(f"batch_size: got {request.batch_size}, expected an integer >= 1")
        if request.batch_size > self._settings.max_rows_per_request:
            raise LimitExceeded(limit_message("max_rows_per_request", f"batch_size {request.batch_size}",
                                              f"{self._settings.max_rows_per_request} rows"))
        if request.seed < 0:
            raise InvalidArgument(f"seed: got {request.seed}, expected an integer >= 0")
        if request.progress_every_steps < 0 or not request.progress_every_seconds >= 0:
            raise InvalidArgument(
                f"progress_every_steps, progress_every_seconds: got {request.progress_every_steps}, "
                f"{request.progress_every_seconds}, expected numbers >= 0 (0: off)")
        entry = self._registry.get(request.model)
        dataset = self._datasets.get(request.dataset)
        validation = (self._datasets.get(request.validation_dataset, "validation_dataset")
                      if request.validation_dataset else None)
        for name, data in (("dataset", dataset), ("validation_dataset", validation)):
            if data is not None:
                self._check_fits(name, data, entry.network)
        with self._lock:
            unfinished = [job for job in self._jobs.values() if not job.ended]
            if entry.job is not None:
                raise FailedPrecondition(
                    f"model: got {request.model!r}, which training job {entry.job.id} is training "
                    f"({STATE_NAMES[entry.job.state]}); cancel it or wait for it to end")
            if len(unfinished) >= self._settings.max_jobs:
                raise LimitExceeded(limit_message("max_jobs", f"unfinished job {len(unfinished) + 1}",
                                                  f"{self._settings.max_jobs} unfinished jobs"))
            job = TrainingJob(entry, dataset, validation, epochs=request.epochs,
                              batch_size=request.batch_size,
                              shuffle=request.shuffle if request.HasField("shuffle") else True,
                              seed=request.seed, every_steps=request.progress_every_steps,
                              every_seconds=request.progress_every_seconds,
                              sequence=next(self._sequence))
            self._jobs[job.id] = job
            entry.job = job
            forgotten = self._forget_finished()
        if self._files is not None:
            for job_id in forgotten:  # file work outside the table's lock
                self._files.remove(job_id)
        self._save(job)
        logger.info("training job created", extra={"event": "job_created", "job_id": job.id,
                                                    "model_id": entry.id, "dataset_id": dataset.id})
        self._queue.put(job)
        return job

    @staticmethod
    def _check_fits(name, dataset, network):
        """The dataset against the model by the batch rule, with TrainStep's messages."""
        spec = network.spec
        try:
            check_inputs(dataset.x, network.n_inputs, network.dtype)
            check_targets(dataset.y, spec["loss"], network.n_outputs, len(dataset.x), network.dtype)
        except InvalidInput as error:
            raise InvalidArgument(f"{name} {dataset.id}: {error}") from None

    def get(self, job_id):
        if not job_id:
            raise InvalidArgument("job: got '', expected a training job id")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job: got {job_id!r}, expected the id of a training job of this server "
                           f"(finished jobs are kept until {_FINISHED_KEPT} newer ones finished)")
        return job

    def list(self, page_size=0, page_token="", model=""):
        after, size = page_after(page_size, page_token, "ListTrainingJobsResponse")
        model_id = self._registry.get(model).id if model else None
        with self._lock:
            return page_of((job for job in self._jobs.values()
                            if model_id is None or job.model_id == model_id), after, size)

    def cancel(self, job_id, reason="cancelled by CancelTrainingJob"):
        """Cancel a job and return it once the cancellation took effect (or it had ended)."""
        job = self.get(job_id)
        self._cancel_and_wait(job, reason)
        return job

    def watch(self, job_id, is_active):
        """Yield TrainingJobEvents: the job as it is (kind ENDED if it has ended), then its
        events until the ENDED one, at most one message per MIN_EVENT_INTERVAL (the events
        that come faster are merged, see _merged). Never holds the job's lock while a
        watcher sends."""
        job = self.get(job_id)
        with job.changed:
            seen = job.event_count
            ended = job.ended
            current = pb.TrainingJobEvent(
                kind=pb.TRAINING_JOB_EVENT_KIND_ENDED if ended else pb.TRAINING_JOB_EVENT_KIND_CURRENT,
                job=job.describe(self._timestamp), recent_loss=job.recent_loss, version=job.version)
        yield current
        sent = time.monotonic()
        while not ended:
            with job.changed:
                job.changed.wait_for(lambda: job.event_count > seen or not is_active(), timeout=1.0)
                # Each message costs the job's thread a GIL hand-over or two (measured: one
                # watcher sending an event per 1.7 ms epoch slowed a job by a fifth).
                job.changed.wait_for(lambda: job.ended or not is_active(),
                                     timeout=sent + MIN_EVENT_INTERVAL - time.monotonic())
                fresh = [event for number, *event in job.events if number > seen]
                seen = job.event_count
            if not is_active():
                return
            for kind, snapshot, recent_loss, version in _merged(fresh):
                yield pb.TrainingJobEvent(kind=kind, job=job.describe(self._timestamp, snapshot),
                                          recent_loss=recent_loss, version=version)
                ended = kind == pb.TRAINING_JOB_EVENT_KIND_ENDED
            sent = time.monotonic()

    def model_deleted(self, entry):
        """Cancel the job training a deleted model; return once it has stopped."""
        job = entry.job
        if job is not None:
            self._cancel_and_wait(job, f"cancelled: model {entry.id} was deleted")

    def _dataset_deleted(self, dataset):
        """Cancel the jobs using a deleted dataset; return once they have stopped."""
        with self._lock:
            using = [job for job in self._jobs.values() if not job.ended
                     and dataset in (job.dataset, job.validation)]
        for job in using:
            self._cancel_and_wait(job, f"cancelled: dataset {dataset.id} was deleted")

    def _cancel_and_wait(self, job, reason):
        self._cancel(job, reason)
        with job.changed:
            job.changed.wait_for(lambda: job.ended)

    def close(self):
        """Stop every unfinished job (FAILED, "interrupted at epoch E, step S": the server shut
        down) and wait for the workers to stop."""
        with self._lock:
            unfinished = [job for job in self._jobs.values() if not job.ended]
        for job in unfinished:
            self._cancel(job, "the server shut down", interrupted=True)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()

    # -- counting ----------------------------------------------------------------------

    def count_by_state(self):
        with self._lock:
            counts = collections.Counter(job.state for job in self._jobs.values())
        return {name: counts.get(state, 0) for state, name in STATE_NAMES.items()}

    # -- running -----------------------------------------------------------------------

    def publish(self, job, kind):
        """Record an event; the message is built when (and if) a watcher reads it."""
        with job.changed:
            job.event_count += 1
            job.events.append((job.event_count, kind, job.snapshot(kind == pb.TRAINING_JOB_EVENT_KIND_ENDED),
                               job.recent_loss, job.version))
            job.changed.notify_all()

    def _cancel(self, job, reason, interrupted=False):
        with job.changed:
            if job.ended or job.cancel_reason is not None:
                return
            job.cancel_reason, job.interrupted = reason, interrupted
            if job.state == QUEUED:  # never started: it ends here; the worker will skip it
                self._end(job, *self._stopped(job))

    @staticmethod
    def _stopped(job):
        """(end state, error) of a job its cancellation stopped."""
        if job.interrupted:
            return FAILED, f"interrupted at epoch {job.epoch}, step {job.step}: {job.cancel_reason}"
        return CANCELLED, job.cancel_reason

    def _end(self, job, state, error=""):
        """Move a job to an end state (called with job.changed held)."""
        job.state, job.error, job.end_time_ns = state, error, time.time_ns()
        with self._lock:
            if job.entry.job is job:
                job.entry.job = None
        job.entry = job.dataset = job.validation = None  # an ended job holds no model or data
        self._save(job)
        self.publish(job, pb.TRAINING_JOB_EVENT_KIND_ENDED)
        logger.info("training job ended", extra={
            "event": "job_ended", "job_id": job.id, "model_id": job.model_id,
            "state": STATE_NAMES[state], "epoch": job.epoch, "step": job.step, "error": error})

    def _work(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            with job.changed:
                if job.ended:
                    continue
                job.state, job.start_time_ns = RUNNING, time.time_ns()
            self._save(job)
            self.publish(job, pb.TRAINING_JOB_EVENT_KIND_STARTED)
            self._run(job)

    def _run(self, job):
        model = _JobModel(self, job)

        def epoch_ended(epoch, history):
            model.flush()
            with job.changed:
                job.epoch = epoch
                job.history = {name: list(values) for name, values in history.items()}
            self._save(job, epoch_end=True)
            self.publish(job, pb.TRAINING_JOB_EVENT_KIND_EPOCH_END)

        validation = (job.validation.x, job.validation.y) if job.validation else None
        stopped = None
        try:
            plan = fitting.fit_plan(job.dataset.x, job.dataset.y, epochs=job.epochs,
                                    batch_size=job.batch_size, shuffle=job.shuffle, seed=job.seed,
                                    validation_data=validation, progress=False,
                                    on_epoch=epoch_ended)
            fitting.run(plan, model)
        except Exception as error:  # every way out is recorded below, once the steps are counted
            stopped = error
        finally:
            BUDGET.done()
        model.flush()  # every step counted before anyone sees the end, or reads its message
        state, error = SUCCEEDED, ""
        if isinstance(stopped, _Cancelled):
            state, error = self._stopped(job)
        elif isinstance(stopped, (NonFiniteStep, InvalidInput)):
            state, error = FAILED, f"epoch {job.epoch + 1}, step {job.step + 1}: {stopped}"
        elif stopped is not None:
            logger.error("training job %s failed", job.id, exc_info=stopped,
                         extra={"event": "internal_error", "job_id": job.id})
            state, error = FAILED, f"internal error ({type(stopped).__name__}); the server logged the traceback"
        with job.changed:
            self._end(job, state, error)

    def _forget_finished(self):
        """Drop the oldest finished jobs beyond _FINISHED_KEPT (called under the table lock);
        return their ids."""
        finished = [job_id for job_id, job in self._jobs.items() if job.ended]
        forgotten = finished[:max(0, len(finished) - _FINISHED_KEPT)]
        for job_id in forgotten:
            del self._jobs[job_id]
        return forgotten

    def _save(self, job, epoch_end=False):
        """Write the job's record (with --state-dir); a failed write is logged, never fatal to
        the job (its model's checkpoints are what training needs)."""
        if self._files is None:
            return
        try:
            with job.changed:
                record = job.record()
            self._files.write(record, epoch_end=epoch_end)
        except OSError as error:
            logger.error("job record %s not written: %s", job.id, error,
                         extra={"event": "checkpoint_failed", "job_id": job.id})

    def restore(self, record, cause=STOPPED_UNCLEANLY):
        """Add a job read back from the state directory. One that had not ended was
        interrupted: it ends FAILED, "interrupted at epoch E, step S: <cause>" (its last
        recorded progress; its model is at its last checkpoint). The cause says what
        interrupted it: this server stopping without shutting down (the default), or in a
        cluster ADOPTED_FROM_LOST_SERVER."""
        with self._lock:
            if record["id"] in self._jobs:  # a cluster model adopted back: its jobs are here
                return self._jobs[record["id"]]
            job = TrainingJob.from_record(record, next(self._sequence))
            self._jobs[job.id] = job
        if not job.ended:
            job.state, job.end_time_ns = FAILED, time.time_ns()
            job.error = f"interrupted at epoch {job.epoch}, step {job.step}: {cause}"
            self._save(job)
        return job
