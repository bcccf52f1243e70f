"""NNClassifier and NNRegressor: scikit-learn's own checks in-process, and remote == in-process."""

import gc
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from client_support import live_server, same_arrays
from nnserve.clients import Client, NNClassifier, NNRegressor

# Small networks and few epochs keep scikit-learn's ~100 checks to a few seconds; they
# still learn the checks' blobs well enough (check_classifiers_train wants accuracy > 0.83).
SMALL = dict(hidden_layer_sizes=(16,), learning_rate=0.01, epochs=30, batch_size=32, random_state=0)

EXPECTED_FAILURES = {
    "NNRegressor": {
        "check_methods_subset_invariance":
            "predictions for a subset of rows come from a BLAS product of another shape "
            "(a one-row batch takes a different kernel), which sums in another order; in "
            "float32 a row can then differ by one ulp (~1.2e-7 relative), above the check's "
            "rtol of 1e-7. Regression outputs near 1 show it; probabilities stay within its "
            "absolute tolerance, and float64 networks pass.",
    },
}


def _expected_failures(estimator):
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


@parametrize_with_checks([NNClassifier(**SMALL), NNRegressor(**SMALL)],
                         expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    """The in-process estimators pass scikit-learn's checks, except the ones listed with reasons."""
    check(estimator)


@pytest.fixture(scope="module")
def live():
    with live_server() as running:
        yield running


def _classification(seed=0, n_classes=3):
    x, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=n_classes,
                               random_state=seed)
    return x, y


def test_classifier_shapes_and_string_labels():
    """String labels come back as themselves; predict_proba is (n, n_classes) rows summing to 1."""
    x, ids = _classification()
    labels = np.array(["cat", "dog", "emu"])[ids]
    model = NNClassifier(**SMALL).fit(x, labels)
    assert list(model.classes_) == ["cat", "dog", "emu"] and model.n_features_in_ == 6
    proba = model.predict_proba(x)
    assert proba.shape == (120, 3) and proba.dtype == np.float64
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    predicted = model.predict(x)
    assert predicted.shape == (120,) and set(predicted) <= {"cat", "dog", "emu"}
    assert same_arrays(predicted, model.classes_[proba.argmax(axis=1)])
    assert model.score(x, labels) > 0.8
    assert len(model.loss_curve_) == model.n_iter_ == SMALL["epochs"]


def test_classifier_partial_fit_needs_classes_and_keeps_them():
    """partial_fit needs every class on its first call, trains one epoch per call, refuses others."""
    x, ids = _classification()
    labels = np.array(["a", "b", "c"])[ids]
    model = NNClassifier(**SMALL)
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(x, labels)
    model.partial_fit(x[:20], labels[:20], classes=["c", "b", "a"])
    assert list(model.classes_) == ["a", "b", "c"] and model.n_iter_ == 1
    model.partial_fit(x[20:], labels[20:])
    assert model.n_iter_ == 2 and len(model.loss_curve_) == 2
    assert model.predict_proba(x[:5]).shape == (5, 3)
    with pytest.raises(ValueError, match="'z'"):
        model.partial_fit(x[:3], np.array(["a", "z", "b"]))
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(x[:3], labels[:3], classes=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        NNClassifier(**SMALL).fit(x, np.zeros(len(x)))


def test_regressor_shapes_single_and_multi_output():
    """predict returns (n,) for 1-D targets and (n, k) for k targets, as float64."""
    x, y = make_regression(n_samples=80, n_features=5, n_targets=2, random_state=1)
    y = y / y.std(axis=0)
    one = NNRegressor(**SMALL).fit(x, y[:, 0])
    two = NNRegressor(**SMALL).fit(x, y)
    assert one.predict(x).shape == (80,) and two.predict(x).shape == (80, 2)
    assert one.predict(x).dtype == np.float64 and two.n_outputs_ == 2
    assert one.score(x, y[:, 0]) > 0.5
    two.partial_fit(x, y)
    with pytest.raises(ValueError, match="targets"):
        two.partial_fit(x, y[:, :1])


@pytest.mark.parametrize("make", [NNClassifier, NNRegressor])
def test_remote_and_in_process_estimators_agree_exactly(live, make):
    """With the same random_state a server-trained estimator equals the in-process one bit for bit."""
    if make is NNClassifier:
        x, y = _classification(seed=2)
        y = np.array(["no", "maybe", "yes"])[y]
        extra = dict(classes=["no", "maybe", "yes"])
    else:
        x, y = make_regression(n_samples=120, n_features=6, random_state=2)
        y = y / y.std()
        extra = {}
    settings = dict(SMALL, epochs=5, optimizer="sgd", momentum=0.9, random_state=7)
    local = make(**settings).fit(x, y).partial_fit(x[:50], y[:50], **extra)
    remote = make(**settings, target=live.target).fit(x, y).partial_fit(x[:50], y[:50], **extra)
    try:
        assert local.loss_curve_ == remote.loss_curve_ and remote.n_iter_ == 6
        assert same_arrays(local.predict(x), remote.predict(x))
        if make is NNClassifier:
            assert same_arrays(local.predict_proba(x), remote.predict_proba(x))
        assert remote._model.step == local._model.step
    finally:
        remote.close()


def test_remote_estimator_owns_its_server_model(live):
    """Refit, close() and garbage collection delete the model; a pickle carries the state."""
    x, y = _classification(seed=3)
    with Client(live.target) as client:
        def ids():
            return {m.id for m in client.list_models()}

        before = ids()
        model = NNClassifier(**SMALL, target=live.target).fit(x, y)
        first = model._model.id
        assert ids() - before == {first}
        model.fit(x, y)
        assert ids() - before == {model._model.id} and model._model.id != first

        restored = pickle.loads(pickle.dumps(model))  # the state travels, not the model
        assert same_arrays(restored.predict_proba(x), model.predict_proba(x))
        assert len(ids() - before) == 2
        restored.close()
        with pytest.raises(NotFittedError, match="closed"):
            restored.predict(x)
        del model
        gc.collect()
        assert ids() == before

        unfitted = clone(NNClassifier(**SMALL, target=live.target))
        assert unfitted.get_params()["target"] == live.target and ids() == before
