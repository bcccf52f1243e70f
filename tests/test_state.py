"""Network state: get_state/set_state resume training bit-exactly; spec, step and version bookkeeping."""

import json

import numpy as np
import pytest

from nnserve.model import Network

N_BEFORE = 7
N_AFTER = 5
BATCH_SIZE = 6

OPTIMIZERS = {
    "sgd_plain": dict(optimizer="sgd", learning_rate=0.05, weight_decay=1e-3),
    "sgd_momentum": dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                         weight_decay=1e-3),
    "adam": dict(optimizer="adam", learning_rate=0.01, weight_decay=1e-3),
}
DTYPES = ["float32", "float64"]


def make_network(optimizer, dtype):
    return Network([5, 8, 3], ["tanh", "softmax"], "cross_entropy", seed=4, dtype=dtype,
                   **OPTIMIZERS[optimizer])


def batches(dtype, n_steps, seed=11):
    """Batches alternating between BATCH_SIZE and single samples (their own update path)."""
    rng = np.random.default_rng(seed)
    sizes = [BATCH_SIZE if step % 2 == 0 else 1 for step in range(n_steps)]
    return [(rng.normal(size=(size, 5)).astype(dtype), rng.integers(0, 3, size=size)) for size in sizes]


def assert_bit_identical(got, expected):
    """Assert two [(W, b), ...] lists hold the same dtypes, shapes and bits."""
    assert len(got) == len(expected)
    for (W, b), (W_expected, b_expected) in zip(got, expected):
        assert W.dtype == W_expected.dtype and b.dtype == b_expected.dtype
        assert np.array_equal(W, W_expected) and np.array_equal(b, b_expected)


def train(network, steps):
    return [network.train_step(x, y) for x, y in steps]


def save_state(path, state):
    """Write a state with np.savez only: spec as JSON text, every array under its own name."""
    arrays = {"spec": np.array(json.dumps(state["spec"])), "step": np.array(state["step"])}
    for group, pairs in [("weights", state["weights"])] + [
            (f"slots.{name}", pairs) for name, pairs in state["slots"].items()]:
        for layer, (W, b) in enumerate(pairs):
            arrays[f"{group}.{layer}.W"] = W
            arrays[f"{group}.{layer}.b"] = b
    np.savez(path, **arrays)


def load_state(path):
    """Read save_state's file without pickle back into get_state's layout."""
    with np.load(path, allow_pickle=False) as data:
        spec = json.loads(str(data["spec"]))
        n_layers = len(spec["layers"]) - 1

        def pairs(group):
            return [(data[f"{group}.{layer}.W"], data[f"{group}.{layer}.b"]) for layer in range(n_layers)]

        slot_names = sorted({key.split(".")[1] for key in data.files if key.startswith("slots.")})
        return {"spec": spec, "step": int(data["step"]), "weights": pairs("weights"),
                "slots": {name: pairs(f"slots.{name}") for name in slot_names}}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_resuming_from_state_in_a_fresh_network_is_bit_identical(optimizer, dtype):
    """Training N steps, moving the state to Network(**state["spec"]) and training M more equals N + M uninterrupted steps bit for bit."""
    steps = batches(dtype, N_BEFORE + N_AFTER)
    uninterrupted = make_network(optimizer, dtype)
    expected_losses = train(uninterrupted, steps)

    first = make_network(optimizer, dtype)
    losses = train(first, steps[:N_BEFORE])
    state = first.get_state()
    resumed = Network(**state["spec"])
    resumed.set_state(state)
    assert resumed.step == N_BEFORE
    losses += train(resumed, steps[N_BEFORE:])

    assert losses == expected_losses
    assert resumed.step == uninterrupted.step == N_BEFORE + N_AFTER
    assert_bit_identical(resumed.get_weights(), uninterrupted.get_weights())
    final, expected_final = resumed.get_state(), uninterrupted.get_state()
    assert final["slots"].keys() == expected_final["slots"].keys()
    for name in final["slots"]:
        assert_bit_identical(final["slots"][name], expected_final["slots"][name])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_state_survives_a_savez_round_trip_without_pickle(optimizer, dtype, tmp_path):
    """A state written with np.savez and read with np.load(allow_pickle=False) resumes training bit-identically."""
    steps = batches(dtype, N_BEFORE + N_AFTER)
    uninterrupted = make_network(optimizer, dtype)
    train(uninterrupted, steps)

    first = make_network(optimizer, dtype)
    train(first, steps[:N_BEFORE])
    path = tmp_path / "state.npz"
    save_state(path, first.get_state())
    loaded = load_state(path)
    assert loaded["spec"] == first.spec
    resumed = Network(**loaded["spec"])
    resumed.set_state(loaded)
    train(resumed, steps[N_BEFORE:])
    assert_bit_identical(resumed.get_weights(), uninterrupted.get_weights())


SPECS = [
    pytest.param(dict(layers=[4, 7, 3], activations=["relu", "softmax"], loss="cross_entropy"),
                 id="defaults"),
    pytest.param(dict(layers=[2, 5, 5, 1], activations=["tanh", "sigmoid", "sigmoid"],
                      loss="binary_cross_entropy", optimizer="adam", learning_rate=0.003,
                      betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01, init="xavier", seed=12,
                      dtype="float64"), id="adam_xavier_float64"),
    pytest.param(dict(layers=[3, 2], activations=["identity"], loss="mse", momentum=0.5,
                      nesterov=True, seed=2 ** 40), id="single_layer_nesterov_big_seed"),
]


@pytest.mark.parametrize("keywords", SPECS)
def test_spec_round_trip_rebuilds_identical_initial_weights(keywords):
    """Network(**net.spec) has the same spec and bit-identical initial weights, and the spec is plain JSON."""
    network = Network(**keywords)
    spec = network.spec
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = Network(**spec)
    assert rebuilt.spec == spec
    assert_bit_identical(rebuilt.get_weights(), network.get_weights())


def test_spec_is_a_copy():
    """Mutating the returned spec does not change the network's spec."""
    network = Network([3, 4, 2], ["relu", "softmax"], "cross_entropy")
    spec = network.spec
    spec["layers"].append(9)
    spec["activations"][0] = "tanh"
    assert network.spec["layers"] == [3, 4, 2]
    assert network.spec["activations"] == ["relu", "softmax"]


def test_seed_determines_the_initial_weights():
    """The same seed gives bit-identical initial weights; another seed gives different ones."""
    def weights(seed):
        return Network([6, 5, 2], ["relu", "softmax"], "cross_entropy", seed=seed).get_weights()

    assert_bit_identical(weights(3), weights(3))
    assert not np.array_equal(weights(3)[0][0], weights(4)[0][0])


@pytest.mark.parametrize("init", ["he", "xavier"])
def test_initial_weights_follow_the_named_distribution_and_biases_are_zero(init):
    """he draws W ~ Normal(0, sqrt(2/n_in)), xavier W ~ Uniform(+-sqrt(6/(n_in+n_out))), biases start at 0."""
    n_in, n_out = 400, 300
    (W, b), = Network([n_in, n_out], ["relu"], "mse", init=init, dtype="float64").get_weights()
    assert W.shape == (n_in, n_out) and b.shape == (n_out,)
    assert np.array_equal(b, np.zeros(n_out))
    # 120,000 draws: the sample mean and std are within 1% of their values with huge margin.
    if init == "he":
        expected_std = np.sqrt(2.0 / n_in)
        assert abs(W.mean()) < 0.01 * expected_std
        assert W.std() == pytest.approx(expected_std, rel=0.01)
    else:
        bound = np.sqrt(6.0 / (n_in + n_out))
        assert -bound <= W.min() and W.max() <= bound
        assert W.min() < -0.999 * bound and W.max() > 0.999 * bound
        assert W.std() == pytest.approx(bound / np.sqrt(3.0), rel=0.01)


def test_float32_and_float64_networks_start_from_the_same_draws():
    """With the same seed, a float32 network's initial weights are the float64 network's rounded to float32."""
    keywords = dict(layers=[4, 6, 2], activations=["tanh", "softmax"], loss="cross_entropy", seed=9)
    weights32 = Network(**keywords, dtype="float32").get_weights()
    weights64 = Network(**keywords, dtype="float64").get_weights()
    assert_bit_identical(weights32, [(W.astype(np.float32), b.astype(np.float32)) for W, b in weights64])


def test_version_counts_weight_changes_and_step_counts_train_steps():
    """version rises by 1 on train_step, set_weights and set_state; step rises only on train_step (set_state restores it); the versioned calls return what they produced."""
    network = make_network("adam", "float64")
    x, y = batches("float64", 1)[0]
    assert (network.step, network.version) == (0, 0)

    network.train_step(x, y)
    assert (network.step, network.version) == (1, 1)
    state_after_one = network.get_state()
    loss = network.train_step(x, y)
    step, version = loss.step, loss.version
    assert isinstance(loss, float) and (step, version) == (2, 2) == (network.step, network.version)

    network.set_weights(network.get_weights())
    assert (network.step, network.version) == (2, 3)
    assert network.set_weights(network.get_weights()) == (2, 4) == (network.step, network.version)
    with pytest.raises(ValueError, match="got 1 pairs"):
        network.set_weights(network.get_weights()[:1])
    assert (network.step, network.version) == (2, 4)

    network.set_state(state_after_one)
    assert (network.step, network.version) == (1, 5)

    for read in (lambda: network.predict(x), lambda: network.evaluate(x, y),
                 lambda: network.gradients(x, y), network.get_weights, network.get_state):
        read()
    assert (network.step, network.version) == (1, 5)


def test_set_state_restores_an_earlier_point_exactly():
    """Restoring an earlier state rewinds weights, slots and step: replaying the same batches gives the same weights."""
    network = make_network("adam", "float32")
    steps = batches("float32", 6)
    train(network, steps[:3])
    checkpoint = network.get_state()
    train(network, steps[3:])
    after_first_pass = network.get_weights()
    network.set_state(checkpoint)
    assert_bit_identical(network.get_weights(), checkpoint["weights"])
    train(network, steps[3:])
    assert_bit_identical(network.get_weights(), after_first_pass)


def test_get_state_and_set_state_copy_their_arrays():
    """Arrays returned by get_state/get_weights, or passed to set_state/set_weights, are not shared with the network."""
    network = make_network("sgd_momentum", "float64")
    x, y = batches("float64", 1)[0]
    network.train_step(x, y)
    before = network.get_state()

    returned = network.get_state()
    returned["weights"][0][0][:] = 7.0
    returned["slots"]["momentum_buffer"][0][0][:] = 7.0
    network.get_weights()[0][1][:] = 7.0
    assert_bit_identical(network.get_state()["weights"], before["weights"])
    assert_bit_identical(network.get_state()["slots"]["momentum_buffer"], before["slots"]["momentum_buffer"])

    given = network.get_state()
    network.set_state(given)
    given["weights"][0][0][:] = 7.0
    given["slots"]["momentum_buffer"][0][0][:] = 7.0
    assert_bit_identical(network.get_state()["weights"], before["weights"])
    assert_bit_identical(network.get_state()["slots"]["momentum_buffer"], before["slots"]["momentum_buffer"])


def test_from_state_continues_the_version_and_refuses_what_is_no_state():
    """Network.from_state rebuilds a network at the state's step and version (a restored
    model continues its count), and a value that is no state is InvalidState or InvalidSpec."""
    from nnserve.model import InvalidSpec, InvalidState

    network = make_network("adam", "float64")
    x, y = batches("float64", 1)[0]
    for _ in range(3):
        network.train_step(x, y)
    network.set_weights(network.get_weights())
    state = network.get_state()
    restored = Network.from_state(state)
    assert (restored.step, restored.version) == (3, 4) == (network.step, network.version)
    assert restored.train_step(x, y) == network.train_step(x, y)
    with pytest.raises(InvalidState, match="without a spec dict"):
        Network.from_state({"spec": [1]})
    with pytest.raises(InvalidState, match="version"):
        Network.from_state({**state, "version": -1})
    with pytest.raises(InvalidSpec, match="bogus"):
        Network.from_state({**state, "spec": {**state["spec"], "bogus": 1}})
