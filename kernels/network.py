"""The in-process model: a feed-forward network with its optimizer, composed of kernels.

Concurrency: one reader-writer lock per network. `predict`, `evaluate`, `gradients`,
`get_weights` and `get_state` share it and run concurrently with each other; `train_step`,
`set_weights` and `set_state` hold it alone, in arrival order. So a reader sees the weights
of exactly one version, never a half-applied update. Updates are in place: a second copy
of the parameters would double the memory streamed per step, which is what bounds a
small-batch step's speed.
"""

import math

import fasteners
import numpy as np

from . import network_kernels as nk
from . import optimizers
from .codes import ACTIVATIONS, LOSSES, OPTIMIZERS, SLOTS
from .guard import DivergenceGuard, NonFiniteStep, all_finite
from .init import initial_parameters
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
        self._lock = fasteners.ReaderWriterLock()

        self._slot_names = self._active_slots(spec)
        self._slots = {name: np.zeros_like(params) for name in self._slot_names}
        # The kernel takes two slot arrays always; unused ones are empty.
        slot_arrays = [self._slots[name] for name in self._slot_names]
        self._slot_args = tuple(slot_arrays + [np.empty(0, dtype=self._dtype)] * (2 - len(slot_arrays)))
        self._guard = DivergenceGuard(spec, self._dtype)
        self._guard.refresh(params, self._slots.values())
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

    # -- reading -----------------------------------------------------------------------

    def predict(self, x):
        """Return the output activations for x (n_samples, n_in), shape (n_samples, n_out)."""
        return self.predict_versioned(x)[0]

    def predict_versioned(self, x):
        """Return (outputs, version): the predictions and the weights version they used."""
        x = check_inputs(x, self.n_inputs, self._dtype)
        with self._lock.read_lock():
            outputs = nk.predict(self._params, self._layer_sizes, self._activation_codes, x)
            return outputs, self._version

    def evaluate(self, x, y):
        """Return {"loss": ...} plus "accuracy" for classification losses; no update."""
        return self.evaluate_versioned(x, y)[0]

    def evaluate_versioned(self, x, y):
        x = check_inputs(x, self.n_inputs, self._dtype)
        targets, class_ids = check_targets(y, self._spec["loss"], self.n_outputs, x.shape[0],
                                           self._dtype)
        with self._lock.read_lock():
            loss, outputs = nk.evaluate(self._params, self._layer_sizes, self._activation_codes,
                                        self._loss_code, x, targets, class_ids)
            version = self._version
        metrics = {"loss": float(loss)}
        if self._spec["loss"] == "cross_entropy":
            truth = class_ids if class_ids.size else targets.argmax(axis=1)
            metrics["accuracy"] = float(np.mean(outputs.argmax(axis=1) == truth))
        elif self._spec["loss"] == "binary_cross_entropy":
            metrics["accuracy"] = float(np.mean((outputs >= 0.5) == (targets >= 0.5)))
        return metrics, version

    def gradients(self, x, y):
        """Return (loss, [(dW, db), ...]): the batch loss and its gradient; no update."""
        x = check_inputs(x, self.n_inputs, self._dtype)
        targets, class_ids = check_targets(y, self._spec["loss"], self.n_outputs, x.shape[0],
                                           self._dtype)
        outputs, logits, deltas = self._new_workspace(x.shape[0])
        grads = np.empty_like(self._params)
        with self._lock.read_lock():
            loss, _, _ = nk.train_step(self._params, self._layer_sizes, self._activation_codes,
                                       self._loss_code, x, targets, class_ids, outputs, logits,
                                       deltas, grads, nk.GRADIENTS_ONLY, self._hyper,
                                       *self._slot_args, self._step + 1, 0.0)
        if not math.isfinite(loss):
            raise NonFiniteStep(f"loss: got {loss}, expected a finite number; the weights or "
                                "inputs are too large for the gradient to be computed")
        return float(loss), self._split(grads)

    def get_weights(self):
        """Return a copy of the weights as [(W (n_in, n_out), b (n_out,)), ...]."""
        with self._lock.read_lock():
            return self._split(self._params)

    def get_state(self):
        """Return everything needed to resume training bit-exactly elsewhere.

        {"spec": dict, "step": int, "weights": [(W, b), ...],
         "slots": {"momentum_buffer" | "exp_avg" | "exp_avg_sq": [(W, b), ...]}}
        """
        with self._lock.read_lock():
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
        """Return (loss, step, version) of one optimizer step on the batch."""
        x = check_inputs(x, self.n_inputs, self._dtype)
        targets, class_ids = check_targets(y, self._spec["loss"], self.n_outputs, x.shape[0],
                                           self._dtype)
        with self._lock.write_lock():
            workspace = self._workspace(x.shape[0])
            step = self._step + 1
            loss, bound, applied = self._run_step(x, targets, class_ids, workspace, step,
                                                  self._guard.gradient_limit(step))
            if not math.isfinite(loss):
                raise NonFiniteStep(
                    f"train step refused: the batch loss is {loss} before any update (expected a "
                    f"finite number); the weights have grown too large, likely from a too high "
                    f"learning_rate ({self._spec['learning_rate']:g}); the model is unchanged")
            if applied:
                self._guard.advance(bound, step)
            else:
                self._guarded_step(x, targets, class_ids, workspace, step)
            self._step = step
            self._version += 1
            return float(loss), self._step, self._version

    def _run_step(self, x, targets, class_ids, workspace, step, gradient_limit):
        outputs, logits, deltas, grads = workspace
        return nk.train_step(self._params, self._layer_sizes, self._activation_codes,
                             self._loss_code, x, targets, class_ids, outputs, logits, deltas,
                             grads, self._optimizer_code, self._hyper, *self._slot_args, step,
                             gradient_limit)

    def _guarded_step(self, x, targets, class_ids, workspace, step):
        """The step the guard could not prove finite from its bounds: check it for real."""
        self._guard.refresh(self._params, self._slots.values())
        _, bound, applied = self._run_step(x, targets, class_ids, workspace, step,
                                           self._guard.gradient_limit(step))
        if applied:
            self._guard.advance(bound, step)
            return
        backup = [array.copy() for array in (self._params, *self._slots.values())]
        self._run_step(x, targets, class_ids, workspace, step, np.inf)
        if not all_finite((self._params, *self._slots.values())):
            for array, saved in zip((self._params, *self._slots.values()), backup):
                array[:] = saved
            raise NonFiniteStep(
                "train step refused: the update would make parameters or optimizer state "
                "non-finite (expected finite values), likely from a too high learning_rate "
                f"({self._spec['learning_rate']:g}) or too large inputs; the model is unchanged")
        self._guard.refresh(self._params, self._slots.values())

    def set_weights(self, weights):
        """Replace the weights; optimizer state and step count are kept."""
        flat = self._join("weights", weights)
        with self._lock.write_lock():
            self._params[:] = flat
            self._guard.refresh(self._params, self._slots.values())
            self._version += 1

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
        with self._lock.write_lock():
            self._params[:] = flat
            for name, values in flat_slots.items():
                self._slots[name][:] = values
            self._step = int(step)
            self._guard.refresh(self._params, self._slots.values())
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
