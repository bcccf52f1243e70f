"""The in-process model: a feed-forward network with its optimizer, composed of kernels.

Concurrency: one reader-writer lock per network. `predict`, `evaluate`, `gradients`,
`get_weights` and `get_state` share it and run concurrently with each other; `train_step`,
`set_weights` and `set_state` hold it alone, and a waiting writer goes before new readers. So a reader sees the weights
of exactly one version, never a half-applied update. Updates are in place: a second copy
of the parameters would double the memory streamed per step, which is what bounds a
small-batch step's speed.

Validation: the Python side checks structure (type, dtype, shape, contiguity) and the
kernels check values (finite, in range) before they change anything; only when a kernel
refuses a batch does numpy look again, to say which value and why. Numpy's own checks cost
a few microseconds per call, as much as a whole step of a small network.
"""

import numpy as np

from . import guard
from . import network_kernels as nk
from . import optimizers
from .codes import ACTIVATIONS, LOSSES, OPTIMIZERS, SLOTS
from .guard import NonFiniteStep
from .init import initial_parameters
from .locks import ReadWriteLock
from .validation import check_inputs, check_spec, check_targets

# Workspaces are kept for this many distinct batch sizes (most recently used first).
_MAX_WORKSPACES = 4


class Network:
    """A multi-layer perceptron trained with mini-batch gradient descent.

    layers: [n_in, h1, ..., n_out]; activations: one name per layer after the input;
    loss: "mse", "binary_cross_entropy" (sigmoid output) or "cross_entropy" (softmax
    output). The optimizer keywords follow torch.optim.SGD and torch.optim.Adam.
    """

    def __init__(self, layers, activations, loss, *, optimizer="sgd", learning_rate=0.01,
                 momentum=0.0, nesterov=False, weight_decay=0.0, betas=(0.9, 0.999),
                 eps=1e-8, init="he", seed=0, dtype="float32"):
        spec = check_spec(layers, activations, loss, optimizer=optimizer,
                          learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay, betas=betas, eps=eps, init=init,
                          seed=seed, dtype=dtype)
        self._spec = spec
        self._dtype = np.dtype(spec["dtype"])
        self._layer_sizes = np.array(spec["layers"], dtype=np.int64)
        self._activation_codes = np.array([ACTIVATIONS.index(a) for a in spec["activations"]],
                                          dtype=np.int64)
        self._loss_code = LOSSES.index(spec["loss"])
        self._optimizer_code = OPTIMIZERS.index(spec["optimizer"])
        hyper = np.zeros(optimizers.N_HYPER)
        hyper[optimizers.LEARNING_RATE] = spec["learning_rate"]
        hyper[optimizers.MOMENTUM] = spec["momentum"]
        hyper[optimizers.NESTEROV] = float(spec["nesterov"])
        hyper[optimizers.WEIGHT_DECAY] = spec["weight_decay"]
        hyper[optimizers.BETA1], hyper[optimizers.BETA2] = spec["betas"]
        hyper[optimizers.EPS] = spec["eps"]
        self._hyper = hyper

        params = initial_parameters(spec["layers"], spec["init"], spec["seed"], self._dtype)
        self._params = params
        self._lock = ReadWriteLock()

        self._slot_names = self._active_slots(spec)
        self._slots = {name: np.zeros_like(params) for name in self._slot_names}
        # The kernel takes two slot arrays always; unused ones are empty.
        slot_arrays = [self._slots[name] for name in self._slot_names]
        self._slot_args = tuple(slot_arrays + [np.empty(0, dtype=self._dtype)] * (2 - len(slot_arrays)))
        self._bounds = np.zeros(3)
        self._ceiling = guard.ceiling(self._dtype)
        guard.refresh(self._bounds, self._params, self._slots.values())
        self._class_ids_allowed = spec["loss"] == "cross_entropy"
        self._labels_allowed = spec["loss"] == "binary_cross_entropy"
        self._no_targets = np.empty((0, self.n_outputs), dtype=self._dtype)
        self._no_class_ids = np.empty(0, dtype=np.int64)
        self._workspaces = {}
        self._step = 0
        self._version = 0

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

    # -- batches -----------------------------------------------------------------------

    def _inputs(self, x):
        """x as the kernels take it; only the structure is checked here, values in the kernel."""
        if (type(x) is np.ndarray and x.dtype == self._dtype and x.ndim == 2
                and x.shape[1] == self.n_inputs and x.shape[0] and x.flags.c_contiguous):
            return x
        return check_inputs(x, self.n_inputs, self._dtype)

    def _targets(self, y, n_samples):
        """(targets, class_ids) as the kernels take them; values are checked in the kernel."""
        if type(y) is np.ndarray and y.flags.c_contiguous:
            if (self._class_ids_allowed and y.dtype == np.int64 and y.ndim == 1
                    and y.shape[0] == n_samples):
                return self._no_targets, y
            if y.dtype == self._dtype and y.shape == (n_samples, self.n_outputs):
                return y, self._no_class_ids
            if self.n_outputs == 1 and y.shape == (n_samples,) and (
                    y.dtype == self._dtype or (self._labels_allowed and y.dtype.kind in "biu")):
                # 0/1 labels as integers: the kernel checks they are in [0, 1].
                return y.astype(self._dtype).reshape(n_samples, 1), self._no_class_ids
        return check_targets(y, self._spec["loss"], self.n_outputs, n_samples, self._dtype)

    def _refuse_batch(self, x, y):
        """Raise the ValueError that says which value of the batch the kernel refused."""
        x = check_inputs(x, self.n_inputs, self._dtype)
        if y is not None:
            check_targets(y, self._spec["loss"], self.n_outputs, x.shape[0], self._dtype)
        raise ValueError("x, y: got values the kernels refuse, expected finite inputs and "
                         "targets in the loss's range")

    # -- reading -----------------------------------------------------------------------

    def predict(self, x):
        """Return the output activations for x (n_samples, n_in), shape (n_samples, n_out)."""
        return self.predict_versioned(x)[0]

    def predict_versioned(self, x):
        """Return (outputs, version): the predictions and the weights version they used."""
        inputs = self._inputs(x)
        with self._lock.read:
            outputs, valid = nk.predict(self._params, self._layer_sizes, self._activation_codes,
                                        inputs)
            version = self._version
        if not valid:
            self._refuse_batch(x, None)
        return outputs, version

    def evaluate(self, x, y):
        """Return {"loss": ...} plus "accuracy" for classification losses; no update."""
        return self.evaluate_versioned(x, y)[0]

    def evaluate_versioned(self, x, y):
        inputs = self._inputs(x)
        targets, class_ids = self._targets(y, inputs.shape[0])
        with self._lock.read:
            loss, outputs, valid = nk.evaluate(self._params, self._layer_sizes,
                                               self._activation_codes, self._loss_code, inputs,
                                               targets, class_ids)
            version = self._version
        if not valid:
            self._refuse_batch(x, y)
        metrics = {"loss": float(loss)}
        if self._spec["loss"] == "cross_entropy":
            truth = class_ids if class_ids.size else targets.argmax(axis=1)
            metrics["accuracy"] = float(np.mean(outputs.argmax(axis=1) == truth))
        elif self._spec["loss"] == "binary_cross_entropy":
            metrics["accuracy"] = float(np.mean((outputs >= 0.5) == (targets >= 0.5)))
        return metrics, version

    def gradients(self, x, y):
        """Return (loss, [(dW, db), ...]): the batch loss and its gradient; no update."""
        inputs = self._inputs(x)
        targets, class_ids = self._targets(y, inputs.shape[0])
        workspace = self._new_workspace(inputs.shape[0]) + (np.empty_like(self._params),)
        with self._lock.read:
            loss, status = self._run_step(inputs, targets, class_ids, workspace, nk.GRADIENTS_ONLY,
                                          self._step + 1, force=False)
        if status == nk.BAD_BATCH:
            self._refuse_batch(x, y)
        if status == nk.LOSS_NOT_FINITE:
            raise NonFiniteStep(f"loss: got {loss}, expected a finite number; the weights or "
                                "inputs are too large for the gradient to be computed")
        return float(loss), self._split(workspace[3])

    def get_weights(self):
        """Return a copy of the weights as [(W (n_in, n_out), b (n_out,)), ...]."""
        with self._lock.read:
            return self._split(self._params)

    def get_state(self):
        """Return everything needed to resume training bit-exactly elsewhere.

        {"spec": dict, "step": int, "weights": [(W, b), ...],
         "slots": {"momentum_buffer" | "exp_avg" | "exp_avg_sq": [(W, b), ...]}}
        """
        with self._lock.read:
            return {
                "spec": self.spec,
                "step": self._step,
                "weights": self._split(self._params),
                "slots": {name: self._split(slot) for name, slot in self._slots.items()},
            }

    # -- writing -----------------------------------------------------------------------

    def train_step(self, x, y):
        """Apply one optimizer step on the batch; return the batch loss before the update."""
        return self.train_step_versioned(x, y)[0]

    def train_step_versioned(self, x, y):
        """Return (loss, step, version) of one optimizer step on the batch.

        Raises ValueError for a bad batch and NonFiniteStep when the divergence guard
        refuses the step; either way the network is unchanged.
        """
        inputs = self._inputs(x)
        targets, class_ids = self._targets(y, inputs.shape[0])
        with self._lock.write:
            step = self._step + 1
            workspace = self._workspace(inputs.shape[0])
            loss, status = self._run_step(inputs, targets, class_ids, workspace,
                                          self._optimizer_code, step, force=False)
            if status == nk.BAD_BATCH:
                self._refuse_batch(x, y)
            if status == nk.LOSS_NOT_FINITE:
                raise NonFiniteStep(
                    f"train step refused: the batch loss is {loss} before any update (expected a "
                    f"finite number); the weights have grown too large, likely from a too high "
                    f"learning_rate ({self._spec['learning_rate']:g}); the model is unchanged")
            if status == nk.OVER_LIMIT:
                self._guarded_step(inputs, targets, class_ids, workspace, step)
            self._step = step
            self._version += 1
            return float(loss), step, self._version

    def _run_step(self, x, targets, class_ids, workspace, optimizer, step, *, force):
        outputs, logits, deltas, grads = workspace
        return nk.train_step(self._params, self._layer_sizes, self._activation_codes,
                             self._loss_code, x, targets, class_ids, outputs, logits, deltas,
                             grads, optimizer, self._hyper, *self._slot_args, step,
                             self._bounds, self._ceiling, force)

    def _guarded_step(self, x, targets, class_ids, workspace, step):
        """The step the guard could not prove finite from its bounds: check it for real."""
        state = (self._params, *self._slots.values())
        guard.refresh(self._bounds, self._params, self._slots.values())
        _, status = self._run_step(x, targets, class_ids, workspace, self._optimizer_code, step,
                                   force=False)
        if status == nk.OK:
            return
        backup = [array.copy() for array in state]
        self._run_step(x, targets, class_ids, workspace, self._optimizer_code, step, force=True)
        if not guard.all_finite(state):
            for array, saved in zip(state, backup):
                array[:] = saved
            guard.refresh(self._bounds, self._params, self._slots.values())
            raise NonFiniteStep(
                "train step refused: the update would make parameters or optimizer state "
                "non-finite (expected finite values), likely from a too high learning_rate "
                f"({self._spec['learning_rate']:g}) or too large inputs; the model is unchanged")
        guard.refresh(self._bounds, self._params, self._slots.values())

    def set_weights(self, weights):
        """Replace the weights; optimizer state and step count are kept."""
        self.set_weights_versioned(weights)

    def set_weights_versioned(self, weights):
        """Replace the weights as set_weights does; return (step, version) right after.

        Both are read under the write lock, so version is the one this call produced.
        Raises ValueError for bad weights, and then the network is unchanged.
        """
        flat = self._join("weights", weights)
        with self._lock.write:
            self._params[:] = flat
            guard.refresh(self._bounds, self._params, self._slots.values())
            self._version += 1
            return self._step, self._version

    def set_state(self, state):
        """Restore weights, optimizer state and step count from get_state()'s result."""
        keys = ("spec", "step", "weights", "slots")
        if not isinstance(state, dict):
            raise ValueError(f"state: got {type(state).__name__}, expected a dict with keys "
                             f"{', '.join(keys)} (as returned by get_state)")
        missing = [key for key in keys if key not in state]
        if missing:
            raise ValueError(f"state: got keys {sorted(state)}, expected also {missing} "
                             "(as returned by get_state)")
        mine = self._spec
        theirs = state["spec"]
        if not isinstance(theirs, dict):
            raise ValueError(f"state: got spec {theirs!r} of type {type(theirs).__name__}, expected a dict "
                             "like Network.spec")
        for key in ("layers", "activations", "loss", "optimizer", "dtype"):
            if list(np.atleast_1d(theirs.get(key))) != list(np.atleast_1d(mine[key])):
                raise ValueError(f"state: got {key}={theirs.get(key)!r}, expected {mine[key]!r} "
                                 "(this network's spec); build Network(**state['spec']) instead")
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"state: got step={step!r}, expected an integer >= 0")
        flat = self._join("weights", state["weights"])
        slots = state["slots"] if isinstance(state["slots"], dict) else None
        if slots is None or set(slots) != set(self._slot_names):
            got = sorted(slots) if slots is not None else state["slots"]
            raise ValueError(f"state: got optimizer slots {got}, expected {sorted(self._slot_names)} "
                             f"for {mine['optimizer']} with momentum={mine['momentum']}")
        flat_slots = {name: self._join(f"slots[{name!r}]", slots[name]) for name in self._slot_names}
        with self._lock.write:
            self._params[:] = flat
            for name, values in flat_slots.items():
                self._slots[name][:] = values
            self._step = int(step)
            guard.refresh(self._bounds, self._params, self._slots.values())
            self._version += 1

    # -- internals ---------------------------------------------------------------------

    def _new_workspace(self, n_samples):
        width = int(self._layer_sizes[1:].sum())
        return (np.empty(n_samples * width, dtype=self._dtype),
                np.empty((n_samples, self.n_outputs), dtype=self._dtype),
                np.empty(n_samples * width, dtype=self._dtype))

    def _workspace(self, n_samples):
        """Buffers for one batch size, allocated once and reused (called under the lock)."""
        workspace = self._workspaces.pop(n_samples, None)
        if workspace is None:
            workspace = self._new_workspace(n_samples) + (np.empty_like(self._params),)
            while len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
        self._workspaces[n_samples] = workspace
        return workspace

    def _split(self, flat):
        layers, pieces, offset = self._spec["layers"], [], 0
        for n_in, n_out in zip(layers[:-1], layers[1:]):
            weights = flat[offset:offset + n_in * n_out].reshape(n_in, n_out).copy()
            offset += n_in * n_out
            pieces.append((weights, flat[offset:offset + n_out].copy()))
            offset += n_out
        return pieces

    def _join(self, name, pairs):
        """Validate [(W, b), ...] against the layer sizes and return it flattened."""
        layers = self._spec["layers"]
        n_layers = len(layers) - 1
        if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__len__"):
            raise ValueError(f"{name}: got {type(pairs).__name__}, expected a list of {n_layers} "
                             "(W, b) pairs, one per layer")
        if len(pairs) != n_layers:
            raise ValueError(f"{name}: got {len(pairs)} pairs, expected a list of {n_layers} (W, b) pairs, "
                             "one per layer")
        pieces = []
        for i, pair in enumerate(pairs):
            if not hasattr(pair, "__len__") or len(pair) != 2:
                got = f"length {len(pair)}" if hasattr(pair, "__len__") else "no length"
                raise ValueError(f"{name}[{i}]: got {type(pair).__name__} of {got}, "
                                 "expected a pair (W, b)")
            n_in, n_out = layers[i], layers[i + 1]
            for part, array, shape in (("W", pair[0], (n_in, n_out)), ("b", pair[1], (n_out,))):
                label = f"{name}[{i}].{part}"
                if not isinstance(array, np.ndarray):
                    raise ValueError(f"{label}: got {type(array).__name__}, expected a numpy array")
                if array.shape != shape:
                    raise ValueError(f"{label}: got shape {array.shape}, expected {shape}")
                if not np.can_cast(array.dtype, self._dtype, "safe"):
                    raise ValueError(f"{label}: got dtype {array.dtype}, expected {self._dtype.name}")
                if not np.isfinite(array).all():
                    raise ValueError(f"{label}: got non-finite values, expected only finite numbers")
                pieces.append(array.astype(self._dtype, copy=False).ravel())
        return np.concatenate(pieces)

    def __repr__(self):
        spec = self._spec
        return (f"Network(layers={spec['layers']}, activations={spec['activations']}, "
                f"loss={spec['loss']!r}, optimizer={spec['optimizer']!r}, dtype={spec['dtype']!r}, "
                f"step={self._step})")
