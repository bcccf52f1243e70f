"""The in-process model: a feed-forward network with its optimizer, composed of kernels.

Concurrency: one reader-writer lock per network. `predict`, `evaluate`, `gradients`,
`get_weights` and `get_state` share it and run concurrently with each other; `train_step`,
`set_weights` and `set_state` hold it alone, and a waiting writer goes before new readers.
So a reader sees the weights of exactly one version, never a half-applied update, and
every call that reads or changes the weights returns the version it acted on
(nnserve.model.results). Updates are in place: a second copy of the parameters would
double the memory streamed per step, which is what bounds a small-batch step's speed.

Validation follows the batch rule (nnserve.model.batches): structure here, values in the
kernels, explanations by numpy only when a kernel refuses.
"""

import numpy as np

from nnserve.kernels import network_kernels as nk
from nnserve.kernels import optimizers
from nnserve.kernels.arguments import Guard, Net, Optimizer, Workspace
from nnserve.kernels.codes import ACTIVATIONS, LOSSES, OPTIMIZERS, SLOTS

from . import fit as fitting
from .batches import ROW_SUM_TOLERANCE, BatchRule, check_inputs, inputs_array, targets_array
from .errors import InvalidSpec, InvalidState, NonFiniteStep
from .guard import DivergenceGuard
from .init import initial_parameters
from .locks import ReadWriteLock
from .results import Change, Evaluation, Outputs, StepLoss
from .runtime import prime_blas
from .spec import check_spec
from .state import Layout, check_structure

__all__ = ["Network"]

# Workspaces are kept for this many distinct batch sizes (most recently used first).
_MAX_WORKSPACES = 4


class Network:
    """A multi-layer perceptron trained with mini-batch gradient descent.

    layers: [n_in, h1, ..., n_out]; activations: one name per layer after the input;
    loss: "mse", "binary_cross_entropy" (sigmoid output) or "cross_entropy" (softmax
    output). The optimizer keywords follow torch.optim.SGD and torch.optim.Adam; `l1` adds
    l1 * sign(W) to the weights' gradient (not the biases'; 0 at W = 0), as TensorFlow
    Playground's L1 regularization does, before either optimizer's update.
    """

    def __init__(self, layers, activations, loss, *, optimizer="sgd", learning_rate=0.01,
                 momentum=0.0, nesterov=False, weight_decay=0.0, l1=0.0, betas=(0.9, 0.999),
                 eps=1e-8, init="he", seed=0, dtype="float32"):
        spec = check_spec(layers, activations, loss, optimizer=optimizer,
                          learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay, l1=l1, betas=betas, eps=eps, init=init,
                          seed=seed, dtype=dtype)
        self._spec = spec
        self._dtype = np.dtype(spec["dtype"])
        self._layout = Layout(spec["layers"], self._dtype)
        self._batches = BatchRule(spec["layers"][0], spec["layers"][-1], spec["loss"], self._dtype)
        self._layer_sizes = np.array(spec["layers"], dtype=np.int64)
        self._activation_codes = np.array([ACTIVATIONS.index(a) for a in spec["activations"]],
                                          dtype=np.int64)
        self._loss_code = LOSSES.index(spec["loss"])
        hyper = np.zeros(optimizers.N_HYPER)
        hyper[optimizers.LEARNING_RATE] = spec["learning_rate"]
        hyper[optimizers.MOMENTUM] = spec["momentum"]
        hyper[optimizers.NESTEROV] = float(spec["nesterov"])
        hyper[optimizers.WEIGHT_DECAY] = spec["weight_decay"]
        hyper[optimizers.L1] = spec["l1"]
        hyper[optimizers.BETA1], hyper[optimizers.BETA2] = spec["betas"]
        hyper[optimizers.EPS] = spec["eps"]

        self._params = initial_parameters(spec["layers"], spec["init"], spec["seed"], self._dtype)
        prime_blas()
        self._lock = ReadWriteLock()
        self._slot_names = self._active_slots(spec)
        self._slots = {name: np.zeros_like(self._params) for name in self._slot_names}
        slot_arrays = [self._slots[name] for name in self._slot_names]
        self._guard = DivergenceGuard(self._params, slot_arrays)
        # train_step's structures (nnserve.kernels.arguments), built once: they hold this
        # network's arrays, which the kernel updates in place. Plain tuples, as the kernel
        # takes them (typing a namedtuple would cost 0.7 us a call).
        self._net = tuple(Net(params=self._params, layer_sizes=self._layer_sizes,
                              activations=self._activation_codes))
        # Two slots always; unused ones are empty.
        slot1, slot2 = slot_arrays + [np.empty(0, dtype=self._dtype)] * (2 - len(slot_arrays))
        self._optimizer = tuple(Optimizer(code=OPTIMIZERS.index(spec["optimizer"]), hyper=hyper,
                                          slot1=slot1, slot2=slot2))
        self._gradients_only = tuple(Optimizer(code=nk.GRADIENTS_ONLY, hyper=hyper, slot1=slot1,
                                               slot2=slot2))
        self._guard_args = tuple(Guard(bounds=self._guard.bounds, top=self._guard.ceiling))
        self._workspaces = {}
        self._step = 0
        self._version = 0

    @classmethod
    def from_state(cls, state):
        """The network get_state() described, at its step and at its weights version: a model
        restored elsewhere continues its version count (a version never names two weights)."""
        if not isinstance(state, dict) or not isinstance(state.get("spec"), dict):
            raise InvalidState(f"state: got {type(state).__name__} without a spec dict, expected "
                               "a dict as get_state() returns it")
        try:
            network = cls(**state["spec"])
        except TypeError as error:  # a key Network does not take
            raise InvalidSpec(f"state['spec']: got {sorted(state['spec'])}, expected Network's "
                              f"keywords ({error})") from None
        version = state.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
            raise InvalidState(f"state: got version={version!r}, expected an integer >= 0")
        network.set_state(state)
        network._version = int(version)
        return network

    @classmethod
    def from_onnx(cls, data, *, loss, optimizer="sgd", learning_rate=0.01, momentum=0.0,
                  nesterov=False, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        """The network of an ONNX model (bytes): its layers, activations, dtype and weights
        bit for bit, at step 0 and version 0, to train with `loss` and the optimizer
        keywords (init and seed stay at their defaults: the weights come from the graph).

        Takes a chain of dense layers as torch.onnx and skl2onnx write them (nnserve.model.onnx
        says which nodes); InvalidOnnx names the first node or part it refuses, InvalidSpec a
        loss that does not fit the output activation. Needs the `onnx` package.
        """
        from .onnx import read_onnx

        chain = read_onnx(data)
        network = cls(chain.layers, chain.activations, loss, optimizer=optimizer,
                      learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                      weight_decay=weight_decay, betas=betas, eps=eps, dtype=chain.dtype)
        network.set_weights(chain.weights)
        network._version = 0  # created with these weights, like any new network
        return network

    @staticmethod
    def _active_slots(spec):
        if spec["optimizer"] == "sgd" and spec["momentum"] == 0.0:
            return ()
        return SLOTS[spec["optimizer"]]

    # -- properties --------------------------------------------------------------------

    @property
    def spec(self):
        """A plain dict from which Network(**spec) rebuilds this network's initial state."""
        return {key: list(value) if isinstance(value, list) else value
                for key, value in self._spec.items()}

    @property
    def num_parameters(self):
        return int(self._params.size)

    @property
    def dtype(self):
        return self._dtype

    @property
    def step(self):
        """Number of train steps applied (restored by set_state)."""
        return self._step

    @property
    def version(self):
        """Counts every change of the weights: train steps, set_weights, set_state."""
        return self._version

    @property
    def n_inputs(self):
        return self._spec["layers"][0]

    @property
    def n_outputs(self):
        return self._spec["layers"][-1]

    # -- reading -----------------------------------------------------------------------

    def predict(self, x):
        """Return the output activations for x (n_samples, n_in): (n_samples, n_out) Outputs,
        an array whose `.version` is the weights version that computed it."""
        inputs = self._batches.inputs(x)
        with self._lock.read:
            outputs, valid = nk.predict(self._params, self._layer_sizes, self._activation_codes,
                                        inputs)
            version = self._version
        if not valid:
            self._batches.refuse(x)
        return Outputs.of(outputs, version)

    def layer_activations(self, x):
        """Return (activations, version): every layer's activations for x (n_samples, n_in),
        a list of (n_samples, n_units) arrays from the first hidden layer to the output, all
        from one forward pass over the weights of `version` (the playground's heat maps)."""
        inputs = self._batches.inputs(x)
        with self._lock.read:
            flat, valid = nk.layer_activations(self._params, self._layer_sizes,
                                               self._activation_codes, inputs)
            version = self._version
        if not valid:
            self._batches.refuse(x)
        n_samples = inputs.shape[0]
        bounds = np.cumsum([0] + [n_samples * n for n in self._spec["layers"][1:]])
        return ([flat[start:end].reshape(n_samples, -1) for start, end in zip(bounds[:-1], bounds[1:])],
                version)

    def checked_inputs(self, x):
        """x as predict takes it, every value checked now (predict leaves the finiteness
        check to the kernel): for rows that will be computed together with other callers',
        so that one caller's bad input is refused alone. InvalidBatch if refused."""
        return check_inputs(x, self.n_inputs, self._dtype)

    def evaluate(self, x, y):
        """Return {"loss": ...} plus "accuracy" for classification losses, with `.version`;
        no update."""
        inputs = self._batches.inputs(x)
        targets, class_ids = self._batches.targets(y, inputs.shape[0])
        with self._lock.read:
            loss, outputs, valid = nk.evaluate(self._params, self._layer_sizes,
                                               self._activation_codes, self._loss_code, inputs,
                                               targets, class_ids, ROW_SUM_TOLERANCE)
            version = self._version
        if not valid:
            self._batches.refuse(x, y)
        metrics = {"loss": float(loss)}
        if self._spec["loss"] == "cross_entropy":
            truth = class_ids if class_ids.size else targets.argmax(axis=1)
            metrics["accuracy"] = float(np.mean(outputs.argmax(axis=1) == truth))
        elif self._spec["loss"] == "binary_cross_entropy":
            metrics["accuracy"] = float(np.mean((outputs >= 0.5) == (targets >= 0.5)))
        return Evaluation(metrics, version)

    def gradients(self, x, y):
        """Return (loss, [(dW, db), ...]): the batch loss and its gradient; no update."""
        inputs = self._batches.inputs(x)
        targets, class_ids = self._batches.targets(y, inputs.shape[0])
        batch = (inputs, targets, class_ids, self._loss_code, ROW_SUM_TOLERANCE)  # a Batch
        workspace = self._new_workspace(inputs.shape[0])
        with self._lock.read:
            loss, status = nk.train_step(self._net, batch, tuple(workspace), self._gradients_only,
                                         self._guard_args, self._step + 1, False)
        if status == nk.BAD_BATCH:
            self._batches.refuse(x, y)
        if status == nk.LOSS_NOT_FINITE:
            raise NonFiniteStep(f"loss: got {loss}, expected a finite number; the weights or "
                                "inputs are too large for the gradient to be computed")
        return float(loss), self._layout.split(workspace.grads)

    def get_weights(self):
        """Return a copy of the weights as [(W (n_in, n_out), b (n_out,)), ...]."""
        with self._lock.read:
            return self._layout.split(self._params)

    def to_onnx(self, metadata=None):
        """Return the network as an ONNX model (nnserve.model.onnx says how): ExportedModel
        bytes with the `.step` and `.version` of the weights it holds, all from one version.
        `metadata` (str -> str) is added to the model's metadata_props. Needs the `onnx`
        package; the optimizer state is not exported."""
        from .onnx import export_onnx

        with self._lock.read:
            weights, step, version = self._layout.split(self._params), self._step, self._version
        return export_onnx(self.spec, weights, step=step, version=version, metadata=metadata)

    def get_state(self):
        """Return everything needed to resume training bit-exactly elsewhere, copied from one
        weights version:

        {"spec": dict, "step": int, "version": int, "weights": [(W, b), ...],
         "slots": {"momentum_buffer" | "exp_avg" | "exp_avg_sq": [(W, b), ...]}}
        """
        with self._lock.read:
            return {
                "spec": self.spec,
                "step": self._step,
                "version": self._version,
                "weights": self._layout.split(self._params),
                "slots": {name: self._layout.split(slot) for name, slot in self._slots.items()},
            }

    # -- writing -----------------------------------------------------------------------

    def train_step(self, x, y):
        """Apply one optimizer step on the batch; return the batch loss before the update, a
        StepLoss whose `.step` and `.version` are the ones this step produced.

        Raises InvalidBatch for a bad batch and NonFiniteStep when the divergence guard
        refuses the step; either way the network is unchanged.
        """
        inputs = self._batches.inputs(x)
        targets, class_ids = self._batches.targets(y, inputs.shape[0])
        # A Batch (nnserve.kernels.arguments) as the plain tuple the kernel takes, written out
        # here: a helper method would add a Python call to the hot path.
        batch = (inputs, targets, class_ids, self._loss_code, ROW_SUM_TOLERANCE)
        with self._lock.write:
            step = self._step + 1
            workspace = self._workspace(inputs.shape[0])
            loss, status = nk.train_step(self._net, batch, workspace, self._optimizer,
                                         self._guard_args, step, False)
            if status == nk.BAD_BATCH:
                self._batches.refuse(x, y)
            if status == nk.LOSS_NOT_FINITE:
                raise NonFiniteStep(
                    f"train step refused: the batch loss is {loss} before any update (expected a "
                    f"finite number); the weights have grown too large, likely from a too high "
                    f"learning_rate ({self._spec['learning_rate']:g}); the model is unchanged")
            if status == nk.OVER_LIMIT and not self._guard.settle(
                    lambda force: nk.train_step(self._net, batch, workspace, self._optimizer,
                                                self._guard_args, step, force)[1]):
                raise NonFiniteStep(
                    "train step refused: the update would make parameters or optimizer state "
                    "non-finite (expected finite values), likely from a too high learning_rate "
                    f"({self._spec['learning_rate']:g}) or too large inputs; the model is unchanged")
            self._step = step
            self._version += 1
            return StepLoss(loss, step, self._version)

    def fit(self, x, y, *, epochs, batch_size, shuffle=True, seed=0, validation_data=None,
            progress=None):
        """Train `epochs` passes over (x, y) in mini-batches; return the history.

        The loop of nnserve.model.fit (its docstring has the rules: batch order, the last
        batch, the per-epoch loss), so the SDK's RemoteModel.fit and a server's training
        job give this network's weights and history bit for bit.
        """
        x = inputs_array(x, self._dtype)
        y = targets_array(y, self._dtype, self._spec["loss"])
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            validation_data = (inputs_array(validation_data[0], self._dtype),
                               targets_array(validation_data[1], self._dtype, self._spec["loss"]))
        plan = fitting.fit_plan(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                                seed=seed, validation_data=validation_data, progress=progress)
        return fitting.run(plan, self)

    def set_weights(self, weights):
        """Replace the weights; optimizer state and step count are kept. Return the Change
        (step, version) this call produced; InvalidState (nothing changed) for bad weights."""
        flat = self._layout.join("weights", weights)
        with self._lock.write:
            self._params[:] = flat
            self._guard.refresh()
            self._version += 1
            return Change(self._step, self._version)

    def set_state(self, state):
        """Restore weights, optimizer state and step count from get_state()'s result (its
        "version" is not restored: loading is a change of its own). Return the Change.

        InvalidState for a malformed state, IncompatibleState for one of another structure
        (layers, activations, loss, optimizer, dtype); either way nothing changed.
        """
        check_structure(state, self._spec)
        flat = self._layout.join("weights", state["weights"])
        slots = state["slots"] if isinstance(state["slots"], dict) else None
        if slots is None or set(slots) != set(self._slot_names):
            got = sorted(slots) if slots is not None else state["slots"]
            raise InvalidState(f"state: got optimizer slots {got}, expected "
                               f"{sorted(self._slot_names)} for {self._spec['optimizer']} with "
                               f"momentum={self._spec['momentum']}")
        flat_slots = {name: self._layout.join(f"slots[{name!r}]", slots[name])
                      for name in self._slot_names}
        with self._lock.write:
            self._params[:] = flat
            for name, values in flat_slots.items():
                self._slots[name][:] = values
            self._step = int(state["step"])
            self._guard.refresh()
            self._version += 1
            return Change(self._step, self._version)

    # -- internals ---------------------------------------------------------------------

    def _new_workspace(self, n_samples):
        width = sum(self._spec["layers"][1:])
        return Workspace(outputs=np.empty(n_samples * width, dtype=self._dtype),
                         logits=np.empty((n_samples, self.n_outputs), dtype=self._dtype),
                         deltas=np.empty(n_samples * width, dtype=self._dtype),
                         grads=np.empty_like(self._params))

    def _workspace(self, n_samples):
        """Buffers for one batch size as the plain tuple train_step takes, allocated once
        and reused (called under the lock)."""
        workspace = self._workspaces.pop(n_samples, None)
        if workspace is None:
            workspace = tuple(self._new_workspace(n_samples))
            while len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
        self._workspaces[n_samples] = workspace
        return workspace

    def __repr__(self):
        spec = self._spec
        return (f"Network(layers={spec['layers']}, activations={spec['activations']}, "
                f"loss={spec['loss']!r}, optimizer={spec['optimizer']!r}, dtype={spec['dtype']!r}, "
                f"step={self._step})")
