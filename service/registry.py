"""The model table: ids, unique names, limits, and the calls into each model's Network.

Concurrency: the table has one lock, held only to look up, insert or remove an entry, so
one model's work never waits for another's. Each `Network` holds its own reader-writer
lock (train steps alone, predictions together), so no lock of ours is held around a
kernel call.

The model layer refuses with its own errors (nnserve.model.errors) and changes nothing
when it does; `_model_errors_as_status` maps exactly those: InvalidInput (spec, batch,
state) to InvalidArgument, IncompatibleState and NonFiniteStep to FailedPrecondition.
Anything else out of a Network is a bug, left to the ErrorInterceptor (INTERNAL, logged).
"""

import contextlib
import itertools
import logging
import threading
import time

from nnserve.model import IncompatibleState, InvalidInput, Network, NonFiniteStep

from .checkpoints import NO_CHECKPOINTS
from .cluster.routing import NO_CLUSTER
from .errors import (AlreadyExists, FailedPrecondition, InvalidArgument, LimitExceeded, ModelNotFound,
                     limit_message)
from .metrics import NO_METRICS
from .names import check_id, check_name, new_id, page_after, page_of
from .predict_batching import PredictBatcher, predict_alone

__all__ = ["ModelEntry", "Registry"]

logger = logging.getLogger(__name__)

_ITEMSIZE = {"float32": 4, "float64": 8}


class ModelEntry:
    """One model in the table: its identity, its Network, its timestamps (ns) and the
    training job that is training it (service.training_jobs), if any."""

    __slots__ = ("id", "name", "network", "sequence", "parameter_bytes", "create_time_ns",
                 "update_time_ns", "job")

    def __init__(self, model_id, name, network, sequence):
        self.id = model_id
        self.name = name
        self.network = network
        self.sequence = sequence  # creation order, for stable pagination
        self.parameter_bytes = network.num_parameters * network.dtype.itemsize
        self.create_time_ns = self.update_time_ns = time.time_ns()
        self.job = None

    def check_no_job(self, method):
        """Refuse a write that would interleave with this model's training job."""
        job = self.job
        if job is not None:
            raise FailedPrecondition(
                f"{method}: model {self.id} is being trained by training job {job.id}; "
                "cancel the job (CancelTrainingJob) or wait for it to end")


@contextlib.contextmanager
def _model_errors_as_status():
    """Turn the model layer's refusals (nothing changed) into the service's domain errors."""
    try:
        yield
    except (IncompatibleState, NonFiniteStep) as error:
        raise FailedPrecondition(str(error)) from None
    except InvalidInput as error:
        raise InvalidArgument(str(error)) from None


def _count_parameters(layers):
    """Parameters of a [n_in, ..., n_out] spec, or None when Network will reject it anyway."""
    if (not isinstance(layers, list) or len(layers) < 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers)):
        return None
    return sum(n_in * n_out + n_out for n_in, n_out in zip(layers[:-1], layers[1:]))


class Registry:
    """The models of one server, addressed by id or name, within the settings' limits."""

    def __init__(self, settings, metrics=NO_METRICS, checkpoints=NO_CHECKPOINTS, cluster=NO_CLUSTER):
        self._settings = settings
        self.cluster = cluster  # service.cluster: claims ids and names, fences writes; or nothing
        self._checkpoints = checkpoints  # service.checkpoints: keeps models durable, or nothing
        self._metrics = metrics  # told of each model added/removed, train step and Predict
        self._lock = threading.Lock()
        self._models = {}  # id -> ModelEntry, in creation order
        self._names = {}  # name -> ModelEntry
        self._sequence = itertools.count(1)
        self._parameter_bytes = 0
        self._num_parameters = 0
        self.on_delete = []  # hooks run with a deleted entry (the job table cancels its job)
        self._predict = predict_alone
        if settings.batch_max_rows:
            batcher = PredictBatcher(min(settings.batch_max_rows, settings.max_rows_per_request),
                                     settings.batch_max_delay_us / 1e6, metrics)
            self._predict = batcher.predict

    def __len__(self):
        return len(self._models)

    @property
    def parameter_bytes(self):
        """Sum over the models of parameters x element size."""
        return self._parameter_bytes

    @property
    def num_parameters(self):
        """Sum over the models of their weights and biases."""
        return self._num_parameters

    # -- lifecycle ---------------------------------------------------------------------

    def create(self, spec, name="", model_id=""):
        """Build a Network from `spec` (Network's keywords) and add it under `model_id` (or
        a new id); return its entry.

        Limits are checked before the weights are allocated and again when inserting.
        """
        self._check_identity(name, model_id)
        n_parameters = _count_parameters(spec.get("layers"))
        if n_parameters is not None:
            self._check_parameters(f"a spec with {n_parameters} parameters", n_parameters)
            itemsize = _ITEMSIZE.get(spec.get("dtype"))
            if itemsize is not None:
                with self._lock:
                    self._check_room(name, n_parameters * itemsize, model_id)
        with _model_errors_as_status():
            network = Network(**spec)
        return self._insert(name, network, "created", model_id)

    def import_onnx(self, data, options, name="", model_id=""):
        """Build a Network from ONNX bytes (Network.from_onnx, trained with `options`, its
        keywords) and add it within create's limits; return its entry.

        The graph came in one request, so the network is built before the limits are
        checked: the server's max message size bounds what that allocates.
        """
        self._check_identity(name, model_id)
        with _model_errors_as_status():
            network = Network.from_onnx(data, **options)
        self._check_parameters(f"a graph with {network.num_parameters} parameters",
                               network.num_parameters)
        return self._insert(name, network, "imported", model_id)

    @staticmethod
    def _check_identity(name, model_id):
        if name:
            check_name("name", name)
        if model_id:
            check_id("id", model_id)

    def _check_parameters(self, what, n_parameters):
        limit = self._settings.max_parameters_per_model
        if n_parameters > limit:
            raise LimitExceeded(limit_message("max_parameters_per_model", what, limit))

    def _insert(self, name, network, how, model_id=""):
        """Add a new network under `model_id` or a new id (and `name`) if it fits; checkpoint
        and log it."""
        model_id = model_id or new_id()
        self.cluster.claim_new(model_id, name)
        try:
            with self._lock:
                entry = ModelEntry(model_id, name, network, next(self._sequence))
                self._check_room(name, entry.parameter_bytes, model_id)
                self._models[entry.id] = entry
                if name:
                    self._names[name] = entry
                self._parameter_bytes += entry.parameter_bytes
                self._num_parameters += network.num_parameters
                self._metrics.model_added(entry)
                self._checkpoints.track(entry)
        except BaseException:
            self.cluster.abandon_new(model_id, name)
            raise
        self._checkpoints.save(entry)
        logger.info(f"model {how}", extra={"event": f"model_{how}", "model_id": entry.id,
                                           "model_name": name,
                                           "num_parameters": network.num_parameters})
        return entry

    def restore(self, record):
        """Add a model from its checkpoint record (service.checkpoints) with its id, name,
        times, step and version; InvalidArgument if the record is not a valid model."""
        with _model_errors_as_status():
            network = Network.from_state(record)
        with self._lock:
            entry = ModelEntry(record["id"], record["name"], network, next(self._sequence))
            if entry.id in self._models:
                raise AlreadyExists(f"id: got {entry.id!r}, expected an id not in use")
            self._check_room(entry.name, entry.parameter_bytes)
            entry.create_time_ns, entry.update_time_ns = record["create_time_ns"], record["update_time_ns"]
            self._models[entry.id] = entry
            if entry.name:
                self._names[entry.name] = entry
            self._parameter_bytes += entry.parameter_bytes
            self._num_parameters += network.num_parameters
            self._metrics.model_added(entry)
            self._checkpoints.track(entry)
        logger.info("model restored", extra={"event": "model_restored", "model_id": entry.id,
                                              "model_name": entry.name, "step": network.step,
                                              "version": network.version})
        return entry

    def close(self):
        """Write the last checkpoints (when models are durable); call once no RPC runs."""
        self._checkpoints.close()

    def _check_room(self, name, parameter_bytes, model_id=""):
        """Raise unless a model of this size, name and id fits (called under the lock)."""
        if model_id in self._models:
            raise AlreadyExists(f"id: got {model_id!r}, expected an id not in use")
        if name in self._names:
            raise AlreadyExists(f"name: got {name!r}, expected a name not in use "
                                f"(model {self._names[name].id} has it)")
        if len(self._models) >= self._settings.max_models:
            raise LimitExceeded(limit_message("max_models", f"model {len(self._models) + 1}",
                                               f"{self._settings.max_models} models"))
        total = self._parameter_bytes + parameter_bytes
        if total > self._settings.max_total_parameter_bytes:
            raise LimitExceeded(limit_message(
                "max_total_parameter_bytes",
                f"{total} bytes with this model's {parameter_bytes}",
                f"{self._settings.max_total_parameter_bytes} bytes"))

    def find(self, model):
        """The entry whose id or name is `model`, or None."""
        with self._lock:
            return self._models.get(model) or self._names.get(model)

    def evict(self, model_id):
        """Drop a model another server owns now, keeping its files (cluster mode); its
        training job is cancelled as on deletion."""
        entry = self._take_out(model_id)
        if entry is not None:
            logger.warning("model evicted: another server owns it now", extra={
                "event": "model_evicted", "model_id": entry.id, "model_name": entry.name})

    def _take_out(self, model_id):
        """Remove an entry from the table, its sums, metrics and checkpoint tracking, run the
        on_delete hooks, and return it (None if it was not there)."""
        with self._lock:
            entry = self._models.pop(model_id, None)
            if entry is None:
                return None
            if entry.name:
                del self._names[entry.name]
            self._parameter_bytes -= entry.parameter_bytes
            self._num_parameters -= entry.network.num_parameters
            self._metrics.model_removed(entry)
            self._checkpoints.untrack(entry)
        for hook in self.on_delete:
            hook(entry)
        return entry

    def get(self, model):
        """Return the entry whose id or name is `model`."""
        if not model:
            raise InvalidArgument("model: got '', expected a model id or name")
        with self._lock:
            entry = self._models.get(model) or self._names.get(model)
        if entry is None:
            raise ModelNotFound(f"model: got {model!r}, expected the id or name of an existing model")
        return entry

    def list(self, page_size=0, page_token=""):
        """Return (entries, next_page_token): one page in creation order."""
        after, size = page_after(page_size, page_token, "ListModelsResponse")
        with self._lock:
            return page_of(self._models.values(), after, size)

    def delete(self, model):
        """Remove a model; calls already running on it finish. Return its entry."""
        entry = self.get(model)
        if self._take_out(entry.id) is None:  # deleted meanwhile
            raise ModelNotFound(f"model: got {model!r}, expected the id or name of an existing model")
        self._checkpoints.remove(entry)
        logger.info("model deleted", extra={"event": "model_deleted", "model_id": entry.id,
                                            "model_name": entry.name})
        return entry

    # -- data plane --------------------------------------------------------------------

    def _check_rows(self, x):
        limit = self._settings.max_rows_per_request
        if x.ndim and x.shape[0] > limit:
            raise LimitExceeded(limit_message("max_rows_per_request", f"{x.shape[0]} rows",
                                               f"{limit} rows"))

    def train_step(self, model, x, y):
        """Return the StepLoss of one optimizer step (its .step and .version)."""
        entry = self.get(model)
        entry.check_no_job("TrainStep")
        self.cluster.check_writable("TrainStep")
        self._check_rows(x)
        self._checkpoints.admit(entry, "TrainStep")
        started = time.perf_counter()
        with _model_errors_as_status():
            loss = entry.network.train_step(x, y)
        self._metrics.trained(entry, x.shape[0], loss, time.perf_counter() - started)
        entry.update_time_ns = time.time_ns()
        self._checkpoints.trained(entry)
        return loss

    def predict(self, model, x):
        """Return the Prediction: its Outputs (.version: the weights that computed them) and
        the kernel call they came from (merged with others under --batch-max-rows)."""
        entry = self.get(model)
        self._check_rows(x)
        started = time.perf_counter()
        with _model_errors_as_status():
            prediction = self._predict(entry, x)
        self._metrics.predicted(entry, x.shape[0], time.perf_counter() - started)
        return prediction

    def evaluate(self, model, x, y):
        """Return the Evaluation ({"loss", ["accuracy"]} and .version)."""
        entry = self.get(model)
        self._check_rows(x)
        with _model_errors_as_status():
            return entry.network.evaluate(x, y)

    def get_state(self, model):
        """Return Network.get_state()'s dict (with the version it was copied from)."""
        return self.get(model).network.get_state()

    def export_onnx(self, model):
        """Return the model as ONNX bytes (Network.to_onnx: an ExportedModel with the .step
        and .version it holds), its metadata naming the model's id and name."""
        entry = self.get(model)
        names = {"model_id": entry.id, **({"model_name": entry.name} if entry.name else {})}
        return entry.network.to_onnx(names)

    def set_state(self, model, state):
        """Load a state dict (as from get_state); return the Change (step, version) it made.
        Checkpointed before returning."""
        entry = self.get(model)
        entry.check_no_job("SetState")
        self.cluster.check_writable("SetState")
        with _model_errors_as_status():
            change = entry.network.set_state(state)
        entry.update_time_ns = time.time_ns()
        self._checkpoints.save(entry)
        return change

    def set_weights(self, model, weights):
        """Replace the weights ([(W, b), ...]), keeping optimizer state and step; return the
        Change (step, version) it made. Checkpointed before returning, as set_state."""
        entry = self.get(model)
        entry.check_no_job("SetWeights")
        self.cluster.check_writable("SetWeights")
        with _model_errors_as_status():
            change = entry.network.set_weights(weights)
        entry.update_time_ns = time.time_ns()
        self._checkpoints.save(entry)
        return change
