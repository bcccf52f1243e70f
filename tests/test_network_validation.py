"""Every bad spec or array given to Network raises ValueError saying what it got and expected.

For the methods of an existing network, the failed call must also leave it untouched:
weights and optimizer slots bit-identical, step and version unchanged.
"""

import numpy as np
import pytest

from nnserve.model import Network

VALID_SPEC = dict(layers=[3, 4, 2], activations=["relu", "softmax"], loss="cross_entropy")


def assert_message(error, fragments):
    """Assert the message follows "got X, expected Y" and names the offending values."""
    message = str(error.value)
    assert "got" in message and "expected" in message, (
        f"message does not say what was got and what was expected: {message!r}")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from message {message!r}"


# -- specs ---------------------------------------------------------------------------------

SPEC_CASES = [
    pytest.param(dict(loss="mse"), ["softmax", "'mse'", "'cross_entropy'"],
                 id="softmax_output_without_cross_entropy"),
    pytest.param(dict(activations=["relu", "sigmoid"]), ["'sigmoid'", "'softmax'"],
                 id="cross_entropy_without_softmax_output"),
    pytest.param(dict(activations=["relu", "identity"], loss="binary_cross_entropy"),
                 ["'identity'", "'sigmoid'"], id="binary_cross_entropy_without_sigmoid_output"),
    pytest.param(dict(activations=["softmax", "softmax"]), ["activations[0]", "'softmax'", "hidden"],
                 id="softmax_on_a_hidden_layer"),
    pytest.param(dict(layers=[3, 4, 1]), ["1 output", "at least 2"], id="softmax_with_one_output"),
    pytest.param(dict(activations=["swish", "softmax"]), ["'swish'", "relu"], id="unknown_activation"),
    pytest.param(dict(loss="hinge"), ["'hinge'", "mse"], id="unknown_loss"),
    pytest.param(dict(optimizer="rmsprop"), ["'rmsprop'", "adam"], id="unknown_optimizer"),
    pytest.param(dict(init="orthogonal"), ["'orthogonal'", "xavier"], id="unknown_init"),
    pytest.param(dict(dtype="float16"), ["'float16'", "float32"], id="unsupported_dtype_float16"),
    pytest.param(dict(dtype="int32"), ["'int32'", "float64"], id="unsupported_dtype_int32"),
    pytest.param(dict(dtype="double-ish"), ["'double-ish'", "float32"], id="unknown_dtype_name"),
    # np.dtype(None) is float64: None must not silently pick float64 when the default is float32.
    pytest.param(dict(dtype=None), ["None", "float32"], id="dtype_none"),
    pytest.param(dict(layers=[3, 0, 2]), ["layers[1]", "0", ">= 1"], id="zero_layer_size"),
    pytest.param(dict(layers=[3, -4, 2]), ["layers[1]", "-4"], id="negative_layer_size"),
    pytest.param(dict(layers=[0, 4, 2]), ["layers[0]", "0"], id="zero_inputs"),
    pytest.param(dict(layers=[3, 4.5, 2]), ["layers[1]", "4.5", "integer"], id="fractional_layer_size"),
    pytest.param(dict(layers=[3], activations=[]), ["[3]", "at least two"], id="single_layer_size"),
    pytest.param(dict(activations=["softmax"]), ["1 names", "expected 2"], id="too_few_activations"),
    pytest.param(dict(activations=["relu", "relu", "softmax"]), ["3 names", "expected 2"],
                 id="too_many_activations"),
    pytest.param(dict(activations="relu"), ["'relu'", "list"], id="activations_as_a_string"),
    pytest.param(dict(learning_rate=0.0), ["learning_rate", "0.0", "> 0"], id="zero_learning_rate"),
    pytest.param(dict(learning_rate=-0.1), ["learning_rate", "-0.1"], id="negative_learning_rate"),
    pytest.param(dict(learning_rate=float("nan")), ["learning_rate", "nan", "finite"],
                 id="nan_learning_rate"),
    pytest.param(dict(learning_rate=float("inf")), ["learning_rate", "inf", "finite"],
                 id="infinite_learning_rate"),
    pytest.param(dict(learning_rate="0.1"), ["learning_rate", "'0.1'"], id="learning_rate_as_a_string"),
    pytest.param(dict(momentum=-0.5), ["momentum", "-0.5", ">= 0"], id="negative_momentum"),
    pytest.param(dict(momentum=1.0), ["momentum", "1.0", "< 1"], id="momentum_of_one"),
    pytest.param(dict(nesterov=True), ["nesterov", "momentum 0"], id="nesterov_without_momentum"),
    pytest.param(dict(momentum=0.9, nesterov="yes"), ["nesterov", "'yes'"], id="nesterov_not_a_bool"),
    pytest.param(dict(weight_decay=-1e-4), ["weight_decay", "-0.0001"], id="negative_weight_decay"),
    pytest.param(dict(optimizer="adam", betas=(1.0, 0.999)), ["betas[0]", "1.0", "< 1"],
                 id="beta1_of_one"),
    pytest.param(dict(optimizer="adam", betas=(0.9,)), ["betas", "(0.9,)", "two numbers"],
                 id="one_beta"),
    pytest.param(dict(optimizer="adam", eps=0.0), ["eps", "0.0", "> 0"], id="zero_eps"),
    pytest.param(dict(optimizer="adam", momentum=0.9), ["momentum=0.9", "adam"], id="adam_with_momentum"),
    pytest.param(dict(seed=-1), ["seed", "-1", ">= 0"], id="negative_seed"),
    pytest.param(dict(seed=1.5), ["seed", "1.5", "integer"], id="fractional_seed"),
    pytest.param(dict(seed=True), ["seed", "True", "integer"], id="boolean_seed"),
]


@pytest.mark.parametrize("overrides, fragments", SPEC_CASES)
def test_bad_spec_is_rejected_with_got_and_expected(overrides, fragments):
    """Network(...) raises ValueError naming the bad spec value and what would be valid."""
    with pytest.raises(ValueError) as error:
        Network(**{**VALID_SPEC, **overrides})
    assert_message(error, fragments)


def test_valid_spec_variants_are_accepted():
    """The spec checks reject only what is wrong: numpy dtypes, numpy integers and tuples are fine."""
    network = Network(layers=(np.int64(3), 4, 2), activations=("tanh", "softmax"), loss="cross_entropy",
                      optimizer="sgd", momentum=0.9, nesterov=np.bool_(True), seed=np.int32(2),
                      dtype=np.float64)
    assert network.spec["layers"] == [3, 4, 2]
    assert network.spec["dtype"] == "float64" and network.spec["nesterov"] is True
    assert network.num_parameters == 3 * 4 + 4 + 4 * 2 + 2


# -- networks under test for the array checks ---------------------------------------------

NETWORKS = {
    "cross_entropy_float32": dict(layers=[3, 4, 2], activations=["relu", "softmax"],
                                  loss="cross_entropy", optimizer="adam"),
    "binary_cross_entropy_float32": dict(layers=[3, 4, 1], activations=["tanh", "sigmoid"],
                                         loss="binary_cross_entropy", momentum=0.9),
    "mse_float64": dict(layers=[3, 4, 2], activations=["tanh", "identity"], loss="mse",
                        momentum=0.5, dtype="float64"),
}
N_SAMPLES = 5


def valid_batch(name):
    """Return a valid (x, y) for the named network: 5 samples of its dtype."""
    spec = NETWORKS[name]
    rng = np.random.default_rng(0)
    dtype = spec.get("dtype", "float32")
    x = rng.normal(size=(N_SAMPLES, spec["layers"][0])).astype(dtype)
    if spec["loss"] == "cross_entropy":
        y = rng.integers(0, spec["layers"][-1], size=N_SAMPLES)
    elif spec["loss"] == "binary_cross_entropy":
        y = rng.integers(0, 2, size=(N_SAMPLES, spec["layers"][-1])).astype(dtype)
    else:
        y = rng.normal(size=(N_SAMPLES, spec["layers"][-1])).astype(dtype)
    return x, y


def trained_network(name):
    """Return the named network after two train steps, so its step, version and slots are non-trivial."""
    network = Network(**NETWORKS[name], seed=1)
    x, y = valid_batch(name)
    network.train_step(x, y)
    network.train_step(x, y)
    return network


def snapshot(network):
    return network.get_state(), network.step, network.version


def assert_unchanged(network, before):
    """Assert weights and slots are bit-identical and step and version unchanged."""
    state, step, version = before
    after, after_step, after_version = snapshot(network)
    assert after_step == step and after_version == version
    assert after["step"] == state["step"]
    for (W, b), (W0, b0) in zip(after["weights"], state["weights"]):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
    assert after["slots"].keys() == state["slots"].keys()
    for name in state["slots"]:
        for (W, b), (W0, b0) in zip(after["slots"][name], state["slots"][name]):
            assert np.array_equal(W, W0) and np.array_equal(b, b0)


def assert_rejected_without_change(network, call, fragments):
    before = snapshot(network)
    with pytest.raises(ValueError) as error:
        call()
    assert_message(error, fragments)
    assert_unchanged(network, before)


# -- x -------------------------------------------------------------------------------------

def _x_with(value, index=(1, 2)):
    x, _ = valid_batch("cross_entropy_float32")
    x[index] = value
    return x


X_CASES = [
    pytest.param(np.zeros(3, np.float32), ["shape (3,)", "(n_samples, 3)", "x[None, :]"], id="rank_1"),
    pytest.param(np.zeros((5, 3, 1), np.float32), ["shape (5, 3, 1)", "(n_samples, 3)"], id="rank_3"),
    pytest.param(np.zeros((5, 4), np.float32), ["shape (5, 4)", "(n_samples, 3)"], id="wrong_width"),
    pytest.param(np.zeros((0, 3), np.float32), ["empty batch", "0 rows"], id="empty_batch"),
    pytest.param(_x_with(np.nan), ["nan", "(1, 2)", "finite"], id="nan"),
    pytest.param(_x_with(-np.inf, (4, 0)), ["-inf", "(4, 0)", "finite"], id="negative_infinity"),
    pytest.param(np.zeros((5, 3), np.float64), ["dtype float64", "float32", "astype"],
                 id="float64_into_float32_network"),
    pytest.param(np.zeros((5, 3), np.int64), ["dtype int64", "float32"], id="int64_into_float32_network"),
    pytest.param(np.zeros((5, 3), np.complex64), ["dtype complex64", "float32"], id="complex"),
    pytest.param(np.full((5, 3), "a"), ["dtype <U1", "float32"], id="string_array"),
    pytest.param([["a", "b", "c"]], ["got list", "float32"], id="list_of_strings"),
    pytest.param(np.array([[1.0, None, 2.0]], dtype=object), ["dtype object", "float32"],
                 id="object_array"),
]


@pytest.mark.parametrize("method", ["train_step", "evaluate", "gradients", "predict"])
@pytest.mark.parametrize("bad_x, fragments", X_CASES)
def test_bad_x_is_rejected_and_the_network_is_unchanged(bad_x, fragments, method):
    """A bad x raises ValueError saying what it got and expected, and leaves weights, slots, step and version as they were."""
    network = trained_network("cross_entropy_float32")
    _, y = valid_batch("cross_entropy_float32")
    call = (lambda: network.predict(bad_x)) if method == "predict" else (
        lambda: getattr(network, method)(bad_x, y))
    assert_rejected_without_change(network, call, fragments)


# -- y -------------------------------------------------------------------------------------

def _y_with(name, value, index):
    _, y = valid_batch(name)
    y = y.copy()
    y[index] = value
    return y


_ROWS = np.tile(np.array([0.25, 0.75]), (N_SAMPLES, 1))
Y_CASES = [
    pytest.param("cross_entropy_float32", np.array([0, 1, 2, 0, 1]), ["class id 2", "[0, 2)"],
                 id="class_id_too_large"),
    pytest.param("cross_entropy_float32", np.array([0, 1, -1, 0, 1]), ["class id -1", "[0, 2)"],
                 id="negative_class_id"),
    pytest.param("cross_entropy_float32", np.array([0.0, 1.0, 1.0, 0.0, 1.0]),
                 ["dtype float64", "integers"], id="float_class_ids"),
    pytest.param("cross_entropy_float32", [0.0, 1.0, 1.0, 0.0, 1.0], ["dtype float64", "integers"],
                 id="float_class_ids_as_a_list"),
    pytest.param("cross_entropy_float32", np.array(["0", "1", "1", "0", "1"]), ["dtype <U1", "integers"],
                 id="string_class_ids"),
    pytest.param("cross_entropy_float32", np.array([0, 1, 1, 0]), ["4 class ids", "expected 5"],
                 id="too_few_class_ids"),
    pytest.param("cross_entropy_float32", np.ones((N_SAMPLES, 1), np.float32),
                 ["shape (5, 1)", "(5,) class ids", "(5, 2) probability rows"], id="targets_as_a_column"),
    pytest.param("cross_entropy_float32", np.tile(np.float32([0.5, 0.4]), (N_SAMPLES, 1)),
                 ["row 0", "summing to 0.9", "sum to 1"], id="probability_rows_not_summing_to_one"),
    pytest.param("cross_entropy_float32", np.tile(np.float32([1.5, -0.5]), (N_SAMPLES, 1)),
                 ["negative probability -0.5"], id="negative_probability"),
    pytest.param("cross_entropy_float32", np.full((N_SAMPLES, 3), 1 / 3, np.float32),
                 ["shape (5, 3)", "(5, 2) probability rows"], id="probability_rows_of_wrong_width"),
    pytest.param("cross_entropy_float32", _ROWS.astype(np.float32)[None], ["shape (1, 5, 2)"],
                 id="probability_rows_of_rank_3"),
    pytest.param("cross_entropy_float32", _ROWS, ["dtype float64", "float32"],
                 id="float64_probability_rows_into_float32_network"),
    pytest.param("cross_entropy_float32", np.where(np.arange(10).reshape(5, 2) == 3, np.nan,
                                                   _ROWS).astype(np.float32),
                 ["nan", "(1, 1)", "finite"], id="nan_in_probability_rows"),
    pytest.param("binary_cross_entropy_float32", _y_with("binary_cross_entropy_float32", 2.0, (3, 0)),
                 ["[0.0, 2.0]", "[0, 1]"], id="bce_target_above_one"),
    pytest.param("binary_cross_entropy_float32", _y_with("binary_cross_entropy_float32", -0.5, (0, 0)),
                 ["-0.5", "[0, 1]"], id="bce_target_below_zero"),
    pytest.param("binary_cross_entropy_float32", np.array([0, 1, 2, 0, 1]), ["2", "[0, 1]"],
                 id="bce_integer_label_two"),
    pytest.param("binary_cross_entropy_float32", np.zeros((N_SAMPLES, 2), np.float32),
                 ["shape (5, 2)", "(5, 1)"], id="bce_targets_of_wrong_width"),
    pytest.param("binary_cross_entropy_float32", _y_with("binary_cross_entropy_float32", np.inf, (2, 0)),
                 ["inf", "(2, 0)", "finite"], id="bce_infinite_target"),
    pytest.param("mse_float64", np.zeros(N_SAMPLES), ["shape (5,)", "(5, 2)"], id="mse_rank_1_for_two_outputs"),
    pytest.param("mse_float64", np.zeros((N_SAMPLES, 3)), ["shape (5, 3)", "(5, 2)"], id="mse_wrong_width"),
    pytest.param("mse_float64", np.zeros((4, 2)), ["shape (4, 2)", "(5, 2)"], id="mse_wrong_count"),
    pytest.param("mse_float64", _y_with("mse_float64", np.nan, (0, 1)), ["nan", "(0, 1)", "finite"],
                 id="mse_nan_target"),
    pytest.param("mse_float64", np.full((N_SAMPLES, 2), "x"), ["dtype <U1", "float64"], id="mse_string_targets"),
    pytest.param("mse_float64", np.zeros((N_SAMPLES, 2), np.complex128), ["dtype complex128", "float64"],
                 id="mse_complex_targets"),
]


@pytest.mark.parametrize("method", ["train_step", "evaluate", "gradients"])
@pytest.mark.parametrize("network_name, bad_y, fragments", Y_CASES)
def test_bad_y_is_rejected_and_the_network_is_unchanged(network_name, bad_y, fragments, method):
    """A bad y raises ValueError saying what it got and expected, and leaves weights, slots, step and version as they were."""
    network = trained_network(network_name)
    x, _ = valid_batch(network_name)
    assert_rejected_without_change(network, lambda: getattr(network, method)(x, bad_y), fragments)


def test_non_contiguous_and_fortran_inputs_give_the_same_results():
    """Strided and Fortran-ordered x and y are accepted and give bit-identical results to C-ordered copies."""
    network = trained_network("mse_float64")
    x, y = valid_batch("mse_float64")
    wide_x = np.zeros((N_SAMPLES, 6))
    wide_x[:, ::2] = x
    strided_x = wide_x[:, ::2]
    assert not strided_x.flags.c_contiguous
    fortran_y = np.asfortranarray(y)
    assert np.array_equal(network.predict(strided_x), network.predict(x))
    assert network.evaluate(np.asfortranarray(x), fortran_y) == network.evaluate(x, y)


# -- set_weights ---------------------------------------------------------------------------

def _replace(weights, layer, part, value):
    pairs = [list(pair) for pair in weights]
    pairs[layer][part] = value
    return [tuple(pair) for pair in pairs]


def _float32_weights():
    rng = np.random.default_rng(5)
    return [(rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)),
            (rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32))]


_GOOD = _float32_weights()
_NAN_W = _GOOD[1][0].copy()
_NAN_W[2, 1] = np.nan
# The first four cases fail on the original kernels/network.py: Network._join's structure
# messages ("weights: expected a list of 2 (W, b) pairs", "weights[1]: expected a pair") do
# not say what was got. The fix is to name it, e.g. "got a list of 1 pairs" / "got a dict".
SET_WEIGHTS_CASES = [
    pytest.param(_GOOD[:1], ["1", "expected a list of 2"], id="too_few_layers"),
    pytest.param(_GOOD + _GOOD[:1], ["3", "expected a list of 2"], id="too_many_layers"),
    pytest.param({"W": _GOOD[0][0]}, ["dict", "expected a list of 2"], id="a_dict"),
    pytest.param([_GOOD[0], (_GOOD[1][0],)], ["weights[1]", "expected a pair"], id="pair_missing_b"),
    pytest.param(_replace(_GOOD, 0, 0, _GOOD[0][0].T.copy()), ["weights[0].W", "shape (4, 3)", "(3, 4)"],
                 id="transposed_W"),
    pytest.param(_replace(_GOOD, 1, 1, np.zeros(3, np.float32)), ["weights[1].b", "shape (3,)", "(2,)"],
                 id="b_of_wrong_length"),
    pytest.param(_replace(_GOOD, 1, 1, np.zeros((1, 2), np.float32)), ["weights[1].b", "shape (1, 2)", "(2,)"],
                 id="b_as_a_row"),
    pytest.param(_replace(_GOOD, 0, 0, _GOOD[0][0].astype(np.float64)),
                 ["weights[0].W", "dtype float64", "float32"], id="float64_W_into_float32_network"),
    pytest.param(_replace(_GOOD, 0, 1, np.zeros(4, np.int64)), ["weights[0].b", "dtype int64", "float32"],
                 id="int64_b"),
    pytest.param(_replace(_GOOD, 0, 1, np.full(4, "0")), ["weights[0].b", "dtype <U1"], id="string_b"),
    pytest.param(_replace(_GOOD, 1, 0, _NAN_W), ["weights[1].W", "non-finite"], id="nan_in_W"),
    pytest.param(_replace(_GOOD, 0, 1, np.float32([0, np.inf, 0, 0])), ["weights[0].b", "non-finite"],
                 id="inf_in_b"),
    pytest.param(_replace(_GOOD, 0, 0, _GOOD[0][0].tolist()), ["weights[0].W", "got list", "numpy array"],
                 id="W_as_a_list"),
]


@pytest.mark.parametrize("bad_weights, fragments", SET_WEIGHTS_CASES)
def test_bad_set_weights_is_rejected_and_the_network_is_unchanged(bad_weights, fragments):
    """set_weights with wrong structure, shape, dtype or non-finite values raises ValueError and changes nothing."""
    network = trained_network("cross_entropy_float32")
    assert_rejected_without_change(network, lambda: network.set_weights(bad_weights), fragments)


def test_set_weights_accepts_safe_casts_and_copies():
    """set_weights takes float16 arrays into a float32 network and keeps a copy, not a view of the caller's arrays."""
    network = trained_network("cross_entropy_float32")
    weights = [(W.astype(np.float16), b.astype(np.float16)) for W, b in _GOOD]
    network.set_weights(weights)
    weights[0][0][:] = 0
    got = network.get_weights()
    assert got[0][0].dtype == np.float32
    assert np.array_equal(got[0][0], _GOOD[0][0].astype(np.float16).astype(np.float32))


# -- set_state -----------------------------------------------------------------------------

def _adam_state(**changes):
    """A valid state of the adam cross_entropy network, with top-level keys replaced."""
    return {**trained_network("cross_entropy_float32").get_state(), **changes}


def _adam_state_with_spec(**spec_changes):
    state = _adam_state()
    return {**state, "spec": {**state["spec"], **spec_changes}}


def _adam_state_with_slot(name, value):
    state = _adam_state()
    return {**state, "slots": {**state["slots"], name: value}}


_ADAM_SLOTS = _adam_state()["slots"]
_NAN_SLOT = [(W.copy(), b.copy()) for W, b in _ADAM_SLOTS["exp_avg"]]
_NAN_SLOT[0][1][0] = np.nan
SET_STATE_CASES = [
    pytest.param(_adam_state_with_spec(layers=[3, 5, 2]), ["state.spec.layers: got [3, 5, 2]", "[3, 4, 2]"],
                 id="other_layers"),
    pytest.param(_adam_state_with_spec(activations=["tanh", "softmax"]), ["activations", "'tanh'"],
                 id="other_activations"),
    pytest.param(_adam_state_with_spec(loss="mse"), ["state.spec.loss: got 'mse'", "'cross_entropy'"], id="other_loss"),
    pytest.param(_adam_state_with_spec(optimizer="sgd"), ["state.spec.optimizer: got 'sgd'", "'adam'"], id="other_optimizer"),
    pytest.param(_adam_state_with_spec(dtype="float64"), ["state.spec.dtype: got 'float64'", "'float32'"], id="other_dtype"),
    pytest.param({**_adam_state(), "slots": {"exp_avg": _ADAM_SLOTS["exp_avg"]}},
                 ["['exp_avg']", "['exp_avg', 'exp_avg_sq']"], id="missing_slot"),
    pytest.param({**_adam_state(), "slots": {}}, ["[]", "['exp_avg', 'exp_avg_sq']"], id="no_slots"),
    pytest.param({**_adam_state(), "slots": {**_ADAM_SLOTS, "momentum_buffer": _ADAM_SLOTS["exp_avg"]}},
                 ["momentum_buffer", "['exp_avg', 'exp_avg_sq']"], id="extra_slot"),
    pytest.param(_adam_state_with_slot("exp_avg", _ADAM_SLOTS["exp_avg"][:1]), ["exp_avg", "2"],
                 id="slot_with_too_few_layers"),
    pytest.param(_adam_state_with_slot("exp_avg", _NAN_SLOT), ["exp_avg", "non-finite"], id="nan_in_slot"),
    pytest.param(_adam_state(step=-1), ["step=-1", ">= 0"], id="negative_step"),
    pytest.param(_adam_state(step=2.0), ["step=2.0", "integer"], id="float_step"),
    pytest.param(_adam_state(weights=_replace(_GOOD, 0, 0, _GOOD[0][0].T.copy())),
                 ["weights[0].W", "shape (4, 3)"], id="weights_of_wrong_shape"),
    # These three fail on the original kernels/network.py: set_state's first check says only
    # "state: expected a dict with keys ...", never what it got (its keys or its type), and a
    # spec that is not a dict reaches `theirs.get(...)` and raises AttributeError instead.
    pytest.param({key: value for key, value in _adam_state().items() if key != "slots"},
                 ["slots"], id="missing_slots_key"),
    pytest.param([("spec", {})], ["list", "dict"], id="not_a_dict"),
    pytest.param(_adam_state(spec="adam"), ["spec", "'adam'"], id="spec_not_a_dict"),
]


@pytest.mark.parametrize("bad_state, fragments", SET_STATE_CASES)
def test_bad_set_state_is_rejected_and_the_network_is_unchanged(bad_state, fragments):
    """set_state with a mismatched spec, missing or extra slots or bad arrays raises ValueError and changes nothing."""
    network = trained_network("cross_entropy_float32")
    assert_rejected_without_change(network, lambda: network.set_state(bad_state), fragments)


def test_set_state_without_momentum_takes_no_slots():
    """plain sgd's state has no slots, and a momentum_buffer offered to it is rejected."""
    network = Network(**VALID_SPEC)
    state = network.get_state()
    assert state["slots"] == {}
    network.set_state(state)
    with pytest.raises(ValueError) as error:
        network.set_state({**state, "slots": {"momentum_buffer": state["weights"]}})
    assert_message(error, ["['momentum_buffer']", "[]"])
