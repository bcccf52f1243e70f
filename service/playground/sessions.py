"""Playground sessions: one per model, its settings, data, epoch and loss history, and the
training jobs that play and step it; shared by every page watching that model.

A session made by the playground owns a registry model named `playground-<hex>` (the name
stays when a settings change makes a new model; the id changes), its train and test data
sets in the DatasetStore, and at most one training job: play runs PLAY_EPOCHS epochs until
paused (cancelled), step runs one. The session reads the running job's epoch and history
(Session.progress); a follower thread per job folds the job into the session when it ends.
Any registry model can be opened by id or name: a session is made for it from its spec
(trainable on playground data when it has 2 inputs and 1 output; heat maps for any model
of 2 inputs).
"""

import contextlib
import threading
import uuid

import numpy as np

from nnserve.model import Network
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.tensors import to_tensor

from ..errors import FailedPrecondition, ModelNotFound, NotFound
from .data import CLASSIFICATION, DOMAIN, FEATURES, REGRESSION, feature_matrix, generate, split
from .settings import DEFAULTS, checked, model_spec, needs_new_data, needs_new_model

__all__ = ["Playground", "Session"]

PLAY_EPOCHS = 1_000_000  # "until paused"
PROGRESS_SECONDS = 0.05  # a job's progress events between epoch ends: the pages' frame clock
NAME_PREFIX = "playground-"


class Session:
    """The shared state of one model's playground."""

    def __init__(self, key, settings, owned):
        self.key = key  # the model's name (its id if unnamed): stable across new models
        self.settings = settings
        self.owned = owned  # made by the playground: settings may replace its model and data
        self.trainable = True
        self.entry = None
        self.train = self.test = None  # StoredDatasets
        self.points = None  # the page's view of the data: {"train": [...], "test": [...]}
        self.grid = None  # the heat maps' inputs: features of a GRID x GRID lattice
        self.epoch = 0
        self.history = {"loss": [], "val_loss": []}  # of ended jobs since the last reset
        self.job = None
        self.job_start_epoch = 0
        self.weight_seed = 0
        self.revision = 0  # counts changes of settings, data and model
        self.lock = threading.RLock()

    @property
    def playing(self):
        return self.job is not None and self.job.epochs == PLAY_EPOCHS

    def epoch_now(self):
        """The epoch as progress() would say, read without the lock (for a stream deciding
        whether a frame is due; progress() gives the one to show)."""
        job = self.job
        return self.epoch if job is None else self.job_start_epoch + job.epoch

    def progress(self):
        """(epoch, per-epoch train and test loss) since the last reset, read together (called
        under the lock): a running job's epoch and history change together."""
        if self.job is None:
            return self.epoch, self.history
        with self.job.changed:
            epoch, running = self.job.epoch, self.job.history
        return self.job_start_epoch + epoch, {name: self.history[name] + list(running.get(name, ()))
                                              for name in ("loss", "val_loss")}


class Playground:
    """The sessions of one server, over its registry, data sets and training jobs."""

    GRID = 40  # heat-map resolution: GRID x GRID points over the input square

    def __init__(self, registry, datasets, jobs, *, grpc_port=50051, tls=False, grafana_url=""):
        # What the page needs for its "use this model" commands and its Grafana link.
        self.links = {"grpc_port": grpc_port, "tls": tls, "grafana": grafana_url.rstrip("/")}
        self._registry = registry
        self._datasets = datasets
        self._jobs = jobs
        self._lock = threading.Lock()
        self._sessions = {}
        registry.on_delete.append(self._model_deleted)
        # The centres of GRID x GRID cells over the input square, row 0 at the top (x2 > 0).
        lattice = ((np.arange(self.GRID) + 0.5) / self.GRID * 2 * DOMAIN - DOMAIN).astype(np.float32)
        x1, x2 = np.meshgrid(lattice, lattice[::-1])
        self._lattice = np.stack([x1.ravel(), x2.ravel()], axis=1)

    # -- sessions ----------------------------------------------------------------------

    def create(self, update):
        """A new model, its data and session from DEFAULTS with `update` applied."""
        settings = checked(DEFAULTS, update or {})
        session = Session(NAME_PREFIX + uuid.uuid4().hex[:12], settings, owned=True)
        with session.lock:
            self._new_data(session)
            self._new_model(session)
        with self._lock:
            self._sessions[session.key] = session
        return session

    def session(self, ref):
        """The session of model `ref` (id or name), opened from the registry if need be."""
        with self._lock:
            session = self._sessions.get(ref)  # by name: also while a change replaces its model
        if session is not None:
            return session
        entry = self._registry.get(ref)
        key = entry.name or entry.id
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self._opened(entry)
        return session

    def _opened(self, entry):
        spec = entry.network.spec
        layers, activations = spec["layers"], spec["activations"]
        hidden_activation = activations[0] if len(activations) > 1 else "tanh"
        problem = ("classification" if spec["loss"] in ("binary_cross_entropy", "cross_entropy")
                   else "regression")
        settings = dict(DEFAULTS, hidden=layers[1:-1], problem=problem,
                        dataset=CLASSIFICATION[0] if problem == "classification" else REGRESSION[0],
                        activation="linear" if hidden_activation == "identity" else hidden_activation,
                        learning_rate=spec["learning_rate"], features=list(FEATURES)[:layers[0]])
        session = Session(entry.name or entry.id, settings, owned=entry.name.startswith(NAME_PREFIX))
        session.entry = entry
        session.trainable = (layers[0] == 2 and layers[-1] == 1
                             and spec["loss"] in ("binary_cross_entropy", "mse"))
        session.epoch = sum(len(job.history["loss"]) for job in self._model_jobs(entry))
        for job in self._model_jobs(entry):
            for name in ("loss", "val_loss"):
                session.history[name] += job.history.get(name, [])
        if session.trainable:
            with session.lock:
                self._new_data(session)
        elif layers[0] == 2:  # no playground data to train on, but heat maps over x1, x2
            session.grid = feature_matrix(self._lattice, settings["features"])
        return session

    def _model_jobs(self, entry):
        jobs, token = [], ""
        while True:
            page, token = self._jobs.list(0, token, entry.id)
            jobs += [job for job in page if job.ended]
            if not token:
                return jobs

    def _model_deleted(self, entry):
        """A model deleted by someone else (over gRPC): its session goes, with the data sets
        the playground made for it. (The playground's own replacements unset
        `session.entry` first, and are not this.)"""
        with self._lock:
            session = self._sessions.get(entry.name or entry.id)
            if session is None or session.entry is not entry:
                return
            del self._sessions[session.key]
        for dataset in (session.train, session.test):
            if dataset is not None:
                with contextlib.suppress(NotFound):
                    self._datasets.delete(dataset.id)

    # -- changes (each under the session's lock, each a new revision) -------------------

    def update(self, session, update):
        """Apply a settings change; a model or data change pauses, replaces and resumes."""
        with session.lock:
            settings = checked(session.settings, update)
            if settings == session.settings:
                return
            # A model the playground did not make keeps its spec: a new learning rate or
            # regularization would mean a new model under its name (a spec is fixed at
            # creation), rebuilt from playground settings that cannot hold every spec
            # (Adam, float64, per-layer activations), and a new id for its other users.
            if not session.owned and (needs_new_model(session.settings, settings)
                                      or model_spec(session.settings, 0) != model_spec(settings, 0)):
                raise FailedPrecondition(
                    f"model {session.key}: got a change of {sorted(update)}, which needs a new "
                    "model; expected only batch_size or data changes on a model the playground "
                    "did not make (open a new playground instead)")
            was_playing = session.playing
            self._pause(session)
            old, session.settings = session.settings, settings
            if needs_new_data(old, settings):
                try:
                    self._new_data(session)
                except Exception:  # refused (a data set limit): the settings stay as they were
                    session.settings = old
                    raise
            if needs_new_model(old, settings):
                self._new_model(session)
            elif model_spec(old, 0) != model_spec(settings, 0):
                self._respecified(session)
            session.revision += 1
            if was_playing:
                self._start(session, PLAY_EPOCHS)

    def play(self, session):
        with session.lock:
            if not session.playing:
                self._pause(session)
                self._start(session, PLAY_EPOCHS)

    def pause(self, session):
        with session.lock:
            self._pause(session)

    def step(self, session):
        """One epoch; returns once it has ended."""
        with session.lock:
            self._pause(session)
            job = self._start(session, 1)
        with job.changed:
            job.changed.wait_for(lambda: job.ended)
        self._finish(session, job)

    def reset(self, session):
        """New weights (a new seed), epoch 0, an empty history; the settings stay."""
        with session.lock:
            self._pause(session)
            session.weight_seed += 1
            fresh = Network(**dict(session.entry.network.spec, seed=session.weight_seed))
            self._registry.set_state(session.entry.id, fresh.get_state())
            self._restart_count(session)

    # -- internals (called under the session's lock) ------------------------------------

    def _restart_count(self, session):
        session.epoch = 0
        session.history = {"loss": [], "val_loss": []}
        session.revision += 1

    def _new_data(self, session):
        settings = session.settings
        points, targets = generate(settings["dataset"], settings["seed"], settings["noise"])
        (train_points, train_y), (test_points, test_y) = split(points, targets, settings["seed"],
                                                               settings["train_ratio"])
        features = settings["features"]
        train = self._upload(feature_matrix(train_points, features), train_y)
        test = self._upload(feature_matrix(test_points, features), test_y)
        for old in (session.train, session.test):
            if old is not None:
                self._datasets.delete(old.id)
        session.train, session.test = train, test
        session.points = {"train": np.column_stack([train_points, train_y]).round(3).tolist(),
                          "test": np.column_stack([test_points, test_y]).round(3).tolist()}
        session.grid = feature_matrix(self._lattice, features)

    def _upload(self, x, y):
        header = pb.DatasetHeader(rows=len(x), x_dtype=pb.DATA_TYPE_FLOAT32, x_width=x.shape[1],
                                  y_dtype=pb.DATA_TYPE_FLOAT32, y_width=0)
        chunk = pb.DatasetChunk(x=to_tensor(x), y=to_tensor(y))
        return self._datasets.upload([pb.UploadDatasetRequest(header=header),
                                      pb.UploadDatasetRequest(chunk=chunk)])

    def _new_model(self, session):
        if session.entry is not None:
            self._delete_model(session)
        session.weight_seed += 1
        session.entry = self._registry.create(model_spec(session.settings, session.weight_seed),
                                              session.key)
        self._restart_count(session)

    def _respecified(self, session):
        """The same weights under a new learning rate or regularization: a new model (its
        spec is fixed at creation) loaded with the old one's state (playground models only:
        their spec is the settings')."""
        state = session.entry.network.get_state()
        self._delete_model(session)
        session.entry = self._registry.create(model_spec(session.settings, session.weight_seed),
                                              session.key)
        self._registry.set_state(session.entry.id, state)

    def _delete_model(self, session):
        entry, session.entry = session.entry, None
        with contextlib.suppress(ModelNotFound):  # deleted over gRPC meanwhile
            self._registry.delete(entry.id)

    def _start(self, session, epochs):
        if not session.trainable:
            raise FailedPrecondition(
                f"model {session.key}: got a request to train, expected a model with 2 inputs and "
                "1 output (sigmoid with binary_cross_entropy, or mse) to train on playground data")
        request = pb.CreateTrainingJobRequest(
            model=session.entry.id, dataset=session.train.id, validation_dataset=session.test.id,
            epochs=epochs, batch_size=session.settings["batch_size"], seed=session.epoch,
            progress_every_seconds=PROGRESS_SECONDS)
        job = self._jobs.create(request)
        session.job, session.job_start_epoch = job, session.epoch
        threading.Thread(target=self._follow, args=(session, job), name="nnserve-playground",
                         daemon=True).start()
        return job

    def _pause(self, session):
        job = session.job
        if job is not None:
            self._jobs.cancel(job.id, "paused in the playground")
            self._finish(session, job)

    def _follow(self, session, job):
        """Finish the job in the session when it ends (a step's end, or a failure)."""
        with job.changed:
            job.changed.wait_for(lambda: job.ended)
        self._finish(session, job)

    def _finish(self, session, job):
        """Fold an ended job's epochs and history into the session (once)."""
        with session.lock:
            if session.job is not job:
                return
            with job.changed:
                history, epoch = job.history, job.epoch
            for name in ("loss", "val_loss"):
                session.history[name] = session.history[name] + list(history.get(name, ()))
            session.epoch = session.job_start_epoch + epoch
            session.job = None
