"""scikit-learn estimators on nnserve networks: `NNClassifier` and `NNRegressor`.

Both train in-process (a `nnserve.model.Network`, which needs numba: the `server` extra)
or, given `target=`, on an nnserve server through `Client` (no numba needed). Either way
the model sees the same spec, the same seeds and the same batches (`nnserve.model.fit`),
so the two modes give bit-identical models.

On a server, the estimator owns the model it created: refitting, `close()` or garbage
collection delete it. Pickling a fitted estimator stores its state (weights, optimizer
state, step), not a reference to the server's model; unpickled, it trains and predicts
in-process, or re-creates its model on its `target` on first use.
"""

import weakref

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from .channel import DEFAULT_TIMEOUT

__all__ = ["NNClassifier", "NNRegressor"]

_XAVIER_ACTIVATIONS = ("tanh", "sigmoid", "identity")
_SEED_BOUND = 2**31 - 1
_CLEANUP_TIMEOUT = 5.0  # seconds for deleting a server model nobody will use again


def _delete_quietly(model):
    """Delete an estimator's server model and close its client (refit, close, collection).

    Best effort with a short deadline: the server may be gone, and then so is the model.
    """
    try:
        model.client._call("DeleteModel", model._delete_request(), timeout=_CLEANUP_TIMEOUT)
    except Exception:  # noqa: BLE001 - nothing to do about a model that cannot be reached
        pass
    finally:
        model.client.close()


class _NNEstimator(BaseEstimator):
    """What NNClassifier and NNRegressor share: parameters, backends, epochs, pickling."""

    _output_activation = None  # set by subclasses
    _loss = None

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate=0.001, momentum=0.0, nesterov=False, weight_decay=0.0,
                 betas=(0.9, 0.999), eps=1e-8, init=None, batch_size=200, epochs=200,
                 shuffle=True, random_state=None, dtype="float32", target=None, token=None,
                 tls=None, timeout=DEFAULT_TIMEOUT, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.init = init
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.target = target
        self.token = token
        self.tls = tls
        self.timeout = timeout
        self.verbose = verbose

    # -- the model ---------------------------------------------------------------------

    def _spec(self, n_in, n_out, seed):
        hidden = [int(size) for size in np.atleast_1d(self.hidden_layer_sizes)]
        init = self.init or ("xavier" if self.activation in _XAVIER_ACTIVATIONS else "he")
        spec = {"layers": [n_in, *hidden, n_out],
                "activations": [self.activation] * len(hidden) + [self._output_activation],
                "loss": self._loss, "optimizer": self.optimizer,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                "betas": list(self.betas), "eps": self.eps, "init": init, "seed": seed,
                "dtype": np.dtype(self.dtype).name}
        if self.optimizer == "sgd":
            spec.update(momentum=self.momentum, nesterov=self.nesterov)
        return spec

    def _build(self, spec, state=None):
        """Create the model (a Network, or a RemoteModel on `target`), optionally with a state."""
        self.close()
        if self.target is None:
            from nnserve.model import Network

            model = Network(**spec)
        else:
            from .client import Client

            client = Client(self.target, timeout=self.timeout, token=self.token, tls=self.tls)
            try:
                model = client.create_model(**spec)
            except Exception:
                client.close()
                raise
            self._finalizer = weakref.finalize(self, _delete_quietly, model)
        if state is not None:
            model.set_state(state)
        self._model = model

    def _fitted_model(self):
        model = getattr(self, "_model", None)
        if model is None:  # unpickled with a target: re-create the model there
            state = getattr(self, "_pending_state", None)
            if state is None:
                raise NotFittedError(f"{type(self).__name__}: got a closed estimator, expected "
                                     "a fitted one (call fit again after close())")
            self._build(state["spec"], state)
            del self._pending_state
        return self._model

    def close(self):
        """Release the model now (on a server: delete it); fit again to use the estimator."""
        finalizer = self.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer()
        self.__dict__.pop("_model", None)

    def _start(self, n_in, n_out):
        """Seeds and a fresh model for a fit from scratch."""
        random_state = check_random_state(self.random_state)
        init_seed, shuffle_seed = (int(s) for s in random_state.randint(_SEED_BOUND, size=2))
        self._shuffle_rng = np.random.default_rng(shuffle_seed)
        self._build(self._spec(n_in, n_out, init_seed))
        self.loss_curve_ = []
        self.n_iter_ = 0

    def _epochs(self, x, targets, epochs):
        """Train for `epochs` passes over (x, targets) in the estimator's batches."""
        batch_size = min(self.batch_size, len(x))
        # Network.fit in-process; on a server, RemoteModel.fit: one upload and a training job.
        history = self._fitted_model().fit(x, targets, epochs=epochs, batch_size=batch_size,
                                           shuffle=self.shuffle,
                                           seed=int(self._shuffle_rng.integers(_SEED_BOUND)),
                                           progress=None if self.verbose else False)
        self.loss_curve_.extend(history["loss"])
        self.n_iter_ += epochs

    def _inputs(self, X, *, reset):
        X = validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))
        return np.array(X, dtype=self.dtype, order="C")  # writable, contiguous, the model's dtype

    def _outputs(self, X):
        check_is_fitted(self)
        x = self._inputs(X, reset=False)
        return self._fitted_model().predict(x).astype(np.float64)

    # -- pickling: the state travels, not the model ---------------------------------------

    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ may return __dict__ itself
        model = state.pop("_model", None)
        state.pop("_finalizer", None)
        if model is not None:
            state["_pending_state"] = model.get_state()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_pending_state" in self.__dict__ and self.target is None:
            self._fitted_model()  # in-process: rebuild now, nothing to connect to


class NNClassifier(ClassifierMixin, _NNEstimator):
    """A multi-layer perceptron classifier: softmax outputs trained with cross-entropy.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100,)
    activation : {"relu", "leaky_relu", "tanh", "sigmoid", "identity"}, default "relu"
        Of every hidden layer.
    optimizer : {"adam", "sgd"}, default "adam"
    learning_rate, momentum, nesterov, weight_decay, betas, eps
        The optimizer's, with torch.optim's conventions (momentum and nesterov: sgd only).
    init : {"he", "xavier"} or None
        None: "he" for relu-family activations, "xavier" otherwise.
    batch_size : int, default 200
        Rows per train step (at most the number of samples).
    epochs : int, default 200
        Passes over the data in fit; partial_fit makes one.
    shuffle : bool, default True
        A new sample order every epoch.
    random_state : int, RandomState or None
        Seeds the weights and the sample orders.
    dtype : {"float32", "float64"}
        What the network computes in; inputs are converted to it.
    target : str or None
        "host:port" of an nnserve server to train on; None trains in-process.
    token, tls, timeout
        Passed to nnserve.clients.Client when target is set.
    verbose : bool
        A progress bar on stderr (when it is a terminal).

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    loss_curve_ : list of float
        Training loss per epoch (batch losses averaged by size).
    n_iter_ : int
        Epochs trained.
    """

    _output_activation = "softmax"
    _loss = "cross_entropy"

    def fit(self, X, y):
        """Train a new network for `epochs` epochs on X (n_samples, n_features), y (n_samples,)."""
        X, y = validate_data(self, X, y, reset=True, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        classes = unique_labels(y)
        self._check_classes(classes)
        self.classes_ = classes
        self._start(X.shape[1], len(self.classes_))
        self._epochs(np.array(X, dtype=self.dtype, order="C"), self._class_ids(y), self.epochs)
        return self

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on (X, y); the first call needs `classes` (all labels) unless fitted."""
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes: got None on the first call to partial_fit, expected "
                             "every label the classifier will see")
        if classes is not None:
            labels = unique_labels(classes)
            if not first and not np.array_equal(labels, self.classes_):
                raise ValueError(f"classes: got {labels!r}, expected {self.classes_!r} "
                                 "(the classes of the first call)")
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        if first:
            self._check_classes(labels)
            self.classes_ = labels
            self._start(X.shape[1], len(self.classes_))
        self._epochs(np.array(X, dtype=self.dtype, order="C"), self._class_ids(y), 1)
        return self

    @staticmethod
    def _check_classes(classes):
        if len(classes) < 2:
            raise ValueError(f"y: got 1 class ({classes[0]!r}), expected at least 2 classes")

    def _class_ids(self, y):
        ids = np.searchsorted(self.classes_, y)
        unknown = (ids >= len(self.classes_)) | (self.classes_[np.minimum(ids, len(self.classes_) - 1)] != y)
        if unknown.any():
            raise ValueError(f"y: got label {y[unknown][0]!r}, expected one of {list(self.classes_)}")
        return ids.astype(np.int64)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of classes_."""
        return self._outputs(X)

    def predict(self, X):
        """The most probable class of each sample, (n_samples,)."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class NNRegressor(RegressorMixin, _NNEstimator):
    """A multi-layer perceptron regressor: identity outputs trained with squared error.

    Parameters are NNClassifier's. y may be (n_samples,) or (n_samples, n_targets); predict
    returns the same shape, as float64.

    Attributes
    ----------
    n_features_in_ : int
    n_outputs_ : int
    loss_curve_ : list of float
        Training loss per epoch.
    n_iter_ : int
        Epochs trained.
    """

    _output_activation = "identity"
    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Train a new network for `epochs` epochs on X (n_samples, n_features) and y."""
        X, y = validate_data(self, X, y, reset=True, multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32))
        self._y_ndim = y.ndim
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._start(X.shape[1], self.n_outputs_)
        self._epochs(np.array(X, dtype=self.dtype, order="C"), self._targets(y), self.epochs)
        return self

    def partial_fit(self, X, y):
        """Train one epoch on (X, y), starting a network on the first call."""
        first = not hasattr(self, "n_outputs_")
        X, y = validate_data(self, X, y, reset=first, multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32))
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if first:
            self._y_ndim = y.ndim
            self.n_outputs_ = n_outputs
            self._start(X.shape[1], n_outputs)
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y: got {n_outputs} targets, expected {self.n_outputs_} "
                             "(as in the first call)")
        self._epochs(np.array(X, dtype=self.dtype, order="C"), self._targets(y), 1)
        return self

    def _targets(self, y):
        return np.array(y.reshape(len(y), -1), dtype=self.dtype, order="C")

    def predict(self, X):
        """Predictions (n_samples,) or (n_samples, n_targets) as in fit, float64."""
        outputs = self._outputs(X)
        return outputs.ravel() if self._y_ndim == 1 else outputs
