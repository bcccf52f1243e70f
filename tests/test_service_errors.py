"""Each status code, triggered by a real request; the model is unchanged afterwards."""

import logging
import struct
from concurrent import futures

import grpc
import numpy as np
import pytest

from nnserve.model import warmup
from nnserve.service.errors import ErrorInterceptor, InvalidArgument
from service_support import (call_error, classifier_spec, make_batch, pb, running_server, snapshot,
                             to_tensor)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
RNG = np.random.default_rng(7)
X, Y = make_batch(RNG, 6, 4, 3)


@pytest.fixture(scope="module")
def live():
    warmup()
    with running_server() as running:
        yield running


@pytest.fixture(scope="module")
def victim(live):
    """A named model with two train steps behind it (step 2, version 2)."""
    stub = live.stub
    model = stub.CreateModel(pb.CreateModelRequest(
        spec=classifier_spec(optimizer=pb.OPTIMIZER_ADAM), name="victim")).model
    for _ in range(2):
        stub.TrainStep(pb.TrainStepRequest(model=model.id, x=to_tensor(X), y=to_tensor(Y)))
    return model.id


@pytest.fixture
def unchanged(live, victim):
    """Snapshot the victim before the test and assert it is identical after it."""
    before = snapshot(live.stub, victim)
    assert (before[0].step, before[0].version) == (2, 2)
    yield
    assert snapshot(live.stub, victim) == before


def _tensor(array, **override):
    tensor = to_tensor(array)
    for key, value in override.items():
        if key == "shape":
            del tensor.shape[:]
            tensor.shape.extend(value)
        else:
            setattr(tensor, key, value)
    return tensor


def _model_ids(stub):
    return [m.id for m in stub.ListModels(pb.ListModelsRequest(page_size=1000)).models]


# -- bad data to a model -------------------------------------------------------------------

_nan_x = X.copy()
_nan_x[1, 2] = np.nan
_inf_y = np.eye(3, dtype=np.float32)[Y]
_inf_y[0, 0] = np.inf
BAD_BATCHES = {
    "byte-length-short": (_tensor(X, content=X.tobytes()[:-4]), to_tensor(Y), "got 92 bytes, expected 96"),
    "byte-length-long": (to_tensor(X), _tensor(Y, content=Y.tobytes() + b"\0"), "got 49 bytes, expected 48"),
    "negative-dimension": (_tensor(X, shape=[-6, -4]), to_tensor(Y), "expected dimensions >= 0"),
    "too-many-dimensions": (_tensor(X, shape=[6, 4] + [1] * 100), to_tensor(Y), "got 102 dimensions"),
    "dtype-unspecified": (_tensor(X, dtype=pb.DATA_TYPE_UNSPECIFIED), to_tensor(Y), "DATA_TYPE_UNSPECIFIED"),
    "dtype-unknown": (_tensor(X, dtype=99), to_tensor(Y), "got dtype 99"),
    "x-missing": (pb.Tensor(), to_tensor(Y), "x: got dtype DATA_TYPE_UNSPECIFIED"),
    "wrong-shape": (to_tensor(X[:, :3]), to_tensor(Y), "got shape (6, 3), expected (n_samples, 4)"),
    "one-dimensional-x": (to_tensor(X[0]), to_tensor(Y[:1]), "expected (n_samples, 4)"),
    "float64-to-float32-model": (to_tensor(X.astype(np.float64)), to_tensor(Y), "got dtype float64"),
    "nan-in-x": (to_tensor(_nan_x), to_tensor(Y), "got a non-finite value nan at index (1, 2)"),
    "inf-in-y": (to_tensor(X), to_tensor(_inf_y), "non-finite"),
    "class-id-out-of-range": (to_tensor(X), to_tensor(np.array([0, 1, 2, 3, 0, 1])), "got class id 3, expected ids in [0, 3)"),
    "negative-class-id": (to_tensor(X), to_tensor(np.array([0, -1, 2, 0, 0, 1], dtype=np.int32)), "got class id -1"),
    "float-class-ids": (to_tensor(X), to_tensor(Y.astype(np.float32)), "expected integers"),
    "rows-mismatch": (to_tensor(X), to_tensor(Y[:5]), "got 5 class ids, expected 6"),
    "empty-batch": (to_tensor(X[:0]), to_tensor(Y[:0]), "empty batch"),
}


@pytest.mark.parametrize("name", BAD_BATCHES)
def test_bad_train_batch_is_invalid_argument(live, victim, unchanged, name):
    """A malformed TrainStep batch is INVALID_ARGUMENT with a got/expected message."""
    x, y, message = BAD_BATCHES[name]
    details = call_error(live.stub.TrainStep, pb.TrainStepRequest(model=victim, x=x, y=y), INVALID)
    assert message in details and "expected" in details


BAD_INPUTS = ["byte-length-short", "negative-dimension", "too-many-dimensions", "dtype-unspecified", "dtype-unknown",
              "x-missing", "wrong-shape", "one-dimensional-x", "float64-to-float32-model", "nan-in-x",
              "empty-batch"]


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_predict_and_evaluate_input_is_invalid_argument(live, victim, unchanged, name):
    """The same malformed x is INVALID_ARGUMENT for Predict and Evaluate too."""
    x, y, message = BAD_BATCHES[name]
    for method, request in ((live.stub.Predict, pb.PredictRequest(model=victim, x=x)),
                            (live.stub.Evaluate, pb.EvaluateRequest(model=victim, x=x, y=y))):
        assert message in call_error(method, request, INVALID)


def test_byte_length_is_checked_before_the_model_is_looked_up(live):
    """A byte-length mismatch to an unknown model is reported as INVALID_ARGUMENT, not NOT_FOUND."""
    x = _tensor(X, content=b"\0" * 10)
    details = call_error(live.stub.Predict, pb.PredictRequest(model="no-such-model", x=x), INVALID)
    assert "got 10 bytes, expected 96" in details


@pytest.mark.parametrize("rpc", ["GetModel", "DeleteModel", "GetState", "Predict", "TrainStep",
                                 "Evaluate", "SetState", "SetWeights"])
def test_unknown_model_is_not_found_and_empty_model_is_invalid(live, victim, unchanged, rpc):
    """An unknown id or name is NOT_FOUND, and an empty `model` INVALID_ARGUMENT, on every RPC."""
    method = getattr(live.stub, rpc)
    request_type = getattr(pb, f"{rpc}Request")
    extra = {}
    if rpc in ("Predict", "TrainStep", "Evaluate"):
        extra = {"x": to_tensor(X)} if rpc == "Predict" else {"x": to_tensor(X), "y": to_tensor(Y)}
    if rpc == "SetState":
        extra = {"state": live.stub.GetState(pb.GetStateRequest(model=victim)).state}
    if rpc == "SetWeights":
        extra = {"weights": live.stub.GetState(pb.GetStateRequest(model=victim)).state.weights}
    details = call_error(method, request_type(model="f" * 32, **extra), grpc.StatusCode.NOT_FOUND)
    assert f"got {'f' * 32!r}" in details
    call_error(method, request_type(model="nobody", **extra), grpc.StatusCode.NOT_FOUND)
    assert "got ''" in call_error(method, request_type(model="", **extra), INVALID)


# -- bad specs -----------------------------------------------------------------------------

def _spec(**override):
    spec = classifier_spec()
    for key, value in override.items():
        if isinstance(value, list):
            field = getattr(spec, key)
            del field[:]
            field.extend(value)
        else:
            setattr(spec, key, value)
    return spec


BAD_SPECS = {
    "activation-unspecified": (_spec(activations=[pb.ACTIVATION_UNSPECIFIED, pb.ACTIVATION_SOFTMAX]),
                               "spec.activations[0]: got ACTIVATION_UNSPECIFIED"),
    "activation-unknown": (_spec(activations=[pb.ACTIVATION_RELU, 42]), "spec.activations[1]: got 42"),
    "loss-unspecified": (_spec(loss=pb.LOSS_UNSPECIFIED), "spec.loss: got LOSS_UNSPECIFIED"),
    "optimizer-unspecified": (_spec(optimizer=pb.OPTIMIZER_UNSPECIFIED), "spec.optimizer: got OPTIMIZER_UNSPECIFIED"),
    "init-unspecified": (_spec(init=pb.INIT_UNSPECIFIED), "spec.init: got INIT_UNSPECIFIED"),
    "dtype-unspecified": (_spec(dtype=pb.DATA_TYPE_UNSPECIFIED), "spec.dtype: got DATA_TYPE_UNSPECIFIED"),
    "dtype-int32": (_spec(dtype=pb.DATA_TYPE_INT32), "dtype: got 'int32', expected one of float32, float64"),
    "softmax-hidden": (_spec(activations=[pb.ACTIVATION_SOFTMAX, pb.ACTIVATION_SOFTMAX]), "hidden layer"),
    "loss-output-mismatch": (_spec(loss=pb.LOSS_BINARY_CROSS_ENTROPY), "expected 'sigmoid'"),
    "too-few-activations": (_spec(activations=[pb.ACTIVATION_SOFTMAX]), "got 1 names, expected 2"),
    "one-layer": (_spec(layers=[4], activations=[]), "at least two sizes"),
    "zero-width": (_spec(layers=[4, 0, 3]), "layers[1]: got 0, expected an integer >= 1"),
    "negative-learning-rate": (_spec(learning_rate=-0.1), "learning_rate: got -0.1"),
    "nan-learning-rate": (_spec(learning_rate=float("nan")), "expected a finite number"),
    "momentum-one": (_spec(momentum=1.0), "momentum: got 1.0"),
    "nesterov-without-momentum": (_spec(nesterov=True), "nesterov: got True with momentum 0"),
    "three-betas": (_spec(optimizer=pb.OPTIMIZER_ADAM, betas=[0.9, 0.99, 0.999]), "betas"),
    "zero-eps": (_spec(optimizer=pb.OPTIMIZER_ADAM, eps=0.0), "eps: got 0.0"),
    "spec-missing": (None, "spec: got nothing, expected a ModelSpec"),
}


@pytest.mark.parametrize("name", BAD_SPECS)
def test_bad_spec_is_invalid_argument_and_creates_nothing(live, victim, unchanged, name):
    """A bad spec (including each UNSPECIFIED enum) is INVALID_ARGUMENT and adds no model."""
    spec, message = BAD_SPECS[name]
    before = _model_ids(live.stub)
    request = pb.CreateModelRequest(name="never") if spec is None else pb.CreateModelRequest(spec=spec, name="never")
    details = call_error(live.stub.CreateModel, request, INVALID)
    assert message in details
    assert _model_ids(live.stub) == before


@pytest.mark.parametrize("name", ["7abc", "has space", "x" * 64, "a/b", "0123456789abcdef0123456789ABCDEF",
                                  "abcdefabcdefabcdefabcdefabcdefab", "ü"])
def test_bad_name_is_invalid_argument(live, victim, unchanged, name):
    """A name that is malformed or has the form of an id is INVALID_ARGUMENT."""
    before = _model_ids(live.stub)
    details = call_error(live.stub.CreateModel,
                         pb.CreateModelRequest(spec=classifier_spec(), name=name), INVALID)
    assert details.startswith(f"name: got {name!r}, expected")
    assert _model_ids(live.stub) == before


def test_duplicate_name_is_already_exists(live, victim, unchanged):
    """Creating a model under a name in use is ALREADY_EXISTS and leaves the holder alone."""
    before = _model_ids(live.stub)
    details = call_error(live.stub.CreateModel,
                         pb.CreateModelRequest(spec=classifier_spec(), name="victim"),
                         grpc.StatusCode.ALREADY_EXISTS)
    assert "got 'victim', expected a name not in use" in details and victim in details
    assert _model_ids(live.stub) == before


# -- states --------------------------------------------------------------------------------

def test_state_of_another_architecture_is_failed_precondition(live, victim, unchanged):
    """SetState with a state whose layers differ from the model's is FAILED_PRECONDITION."""
    stub = live.stub
    other = stub.CreateModel(pb.CreateModelRequest(
        spec=classifier_spec((4, 5, 3), optimizer=pb.OPTIMIZER_ADAM))).model
    state = stub.GetState(pb.GetStateRequest(model=other.id)).state
    details = call_error(stub.SetState, pb.SetStateRequest(model=victim, state=state),
                         grpc.StatusCode.FAILED_PRECONDITION)
    assert "state.spec.layers: got [4, 5, 3], expected [4, 8, 3]" in details
    stub.DeleteModel(pb.DeleteModelRequest(model=other.id))


def _victim_state(stub, victim):
    return stub.GetState(pb.GetStateRequest(model=victim)).state


def _break_weights_shape(state):
    state.weights[0].weights.CopyFrom(to_tensor(np.zeros((8, 4), np.float32)))
    return "weights[0].W: got shape (8, 4), expected (4, 8)"


def _nan_in_slot(state):
    values = np.zeros((4, 8), np.float32)
    values[0, 0] = np.nan
    state.slots[0].layers[0].weights.CopyFrom(to_tensor(values))
    return "non-finite"


def _drop_slot(state):
    del state.slots[1]
    return "got optimizer slots"


def _negative_step(state):
    state.step = -1
    return "got step=-1"


def _short_bytes(state):
    state.weights[1].biases.content = state.weights[1].biases.content[:-1]
    return "state.weights[1].biases: got 11 bytes, expected 12"


def _duplicate_slot(state):
    state.slots.add().CopyFrom(state.slots[0])
    return "a second time"


@pytest.mark.parametrize("breaker", [_break_weights_shape, _nan_in_slot, _drop_slot, _negative_step,
                                     _short_bytes, _duplicate_slot], ids=lambda f: f.__name__[1:])
def test_malformed_state_is_invalid_argument(live, victim, unchanged, breaker):
    """A malformed state (shapes, NaN, slots, step, bytes) is INVALID_ARGUMENT and loads nothing."""
    state = _victim_state(live.stub, victim)
    message = breaker(state)
    details = call_error(live.stub.SetState, pb.SetStateRequest(model=victim, state=state), INVALID)
    assert message in details


def _layer(weights, biases):
    return pb.LayerParameters(weights=to_tensor(weights), biases=to_tensor(biases))


def _nan_at_end(array, value=np.nan):
    array = array.copy()
    array.flat[-1] = value
    return array


W0, B0 = np.ones((4, 8), np.float32), np.ones(8, np.float32)
W1, B1 = np.ones((8, 3), np.float32), np.ones(3, np.float32)
SHORT_BIASES = _layer(W1, B1)
SHORT_BIASES.biases.content = SHORT_BIASES.biases.content[:-1]
# name -> (weights of the (4, 8, 3) float32 victim with one defect, part of the expected message)
BAD_WEIGHTS = {
    "no-layers": ([], "weights: got 0 pairs, expected a list of 2 (W, b) pairs"),
    "one-layer-short": ([_layer(W0, B0)], "weights: got 1 pairs, expected a list of 2"),
    "one-layer-extra": ([_layer(W0, B0), _layer(W1, B1), _layer(W1, B1)], "weights: got 3 pairs"),
    "transposed-weights": ([_layer(W0.T.copy(), B0), _layer(W1, B1)],
                           "weights[0].W: got shape (8, 4), expected (4, 8)"),
    "wrong-bias-shape": ([_layer(W0, B1), _layer(W1, B1)], "weights[0].b: got shape (3,), expected (8,)"),
    "float64-into-float32": ([_layer(W0, B0), _layer(W1.astype(np.float64), B1)],
                             "weights[1].W: got dtype float64, expected float32"),
    "int32-into-float32": ([_layer(W0.astype(np.int32), B0), _layer(W1, B1)],
                           "weights[0].W: got dtype int32, expected float32"),
    "nan": ([_layer(W0, B0), _layer(W1, _nan_at_end(B1))], "weights[1].b: got non-finite values"),
    "infinity": ([_layer(_nan_at_end(W0, -np.inf), B0), _layer(W1, B1)],
                 "weights[0].W: got non-finite values"),
    "short-bytes": ([_layer(W0, B0), SHORT_BIASES], "weights[1].biases: got 11 bytes, expected 12"),
    "unset-biases": ([pb.LayerParameters(weights=to_tensor(W0)), _layer(W1, B1)],
                     "weights[0].biases: got dtype DATA_TYPE_UNSPECIFIED"),
}


@pytest.mark.parametrize("name", BAD_WEIGHTS)
def test_malformed_weights_are_invalid_argument(live, victim, unchanged, name):
    """SetWeights with another layer count, shape or dtype, a NaN or infinity, or a malformed
    tensor is INVALID_ARGUMENT and changes nothing (weights, slots, step, version, times)."""
    weights, message = BAD_WEIGHTS[name]
    details = call_error(live.stub.SetWeights, pb.SetWeightsRequest(model=victim, weights=weights), INVALID)
    assert message in details


def test_list_models_rejects_bad_paging(live):
    """A negative page_size or a foreign page_token is INVALID_ARGUMENT."""
    assert "page_size: got -1" in call_error(live.stub.ListModels, pb.ListModelsRequest(page_size=-1), INVALID)
    assert "page_token: got 'abc'" in call_error(live.stub.ListModels,
                                                 pb.ListModelsRequest(page_token="abc"), INVALID)
    assert "page_token: got '9999" in call_error(live.stub.ListModels,
                                                 pb.ListModelsRequest(page_token="9" * 5000), INVALID)


# -- limits --------------------------------------------------------------------------------

LIMITS = dict(max_models=3, max_parameters_per_model=200, max_total_parameter_bytes=1200,
              max_rows_per_request=8, max_message_bytes=4096)
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def limited():
    with running_server(**LIMITS) as running:
        yield running


def test_every_limit_is_resource_exhausted_naming_it(limited):
    """Each configured limit answers RESOURCE_EXHAUSTED naming the limit, and changes nothing."""
    stub = limited.stub
    small = classifier_spec((4, 8, 3))  # 67 parameters, 268 bytes as float32
    first = stub.CreateModel(pb.CreateModelRequest(spec=small, name="first")).model
    x, y = make_batch(np.random.default_rng(0), 8, 4, 3)
    stub.TrainStep(pb.TrainStepRequest(model=first.id, x=to_tensor(x), y=to_tensor(y)))
    before = snapshot(stub, first.id)

    details = call_error(stub.CreateModel, pb.CreateModelRequest(spec=classifier_spec((4, 40, 3))), EXHAUSTED)
    assert "limit max_parameters_per_model reached: got a spec with 323 parameters, expected at most 200" in details
    assert "--max-parameters-per-model" in details

    big = classifier_spec((4, 20, 3), dtype=pb.DATA_TYPE_FLOAT64)  # 163 parameters, 1304 bytes
    details = call_error(stub.CreateModel, pb.CreateModelRequest(spec=big), EXHAUSTED)
    assert "limit max_total_parameter_bytes reached: got 1572 bytes with this model's 1304" in details

    details = call_error(stub.TrainStep, pb.TrainStepRequest(
        model=first.id, x=to_tensor(np.zeros((9, 4), np.float32)), y=to_tensor(np.zeros(9, np.int64))),
        EXHAUSTED)
    assert "limit max_rows_per_request reached: got 9 rows, expected at most 8 rows" in details
    for method, request in ((stub.Predict, pb.PredictRequest(model=first.id, x=to_tensor(np.zeros((9, 4), np.float32)))),
                            (stub.Evaluate, pb.EvaluateRequest(model=first.id, x=to_tensor(np.zeros((9, 4), np.float32)),
                                                               y=to_tensor(np.zeros(9, np.int64))))):
        assert "max_rows_per_request" in call_error(method, request, EXHAUSTED)

    oversized = to_tensor(np.zeros((8, 200), np.float32))  # 6400 bytes > 4096
    call_error(stub.Predict, pb.PredictRequest(model=first.id, x=oversized), EXHAUSTED)

    others = [stub.CreateModel(pb.CreateModelRequest(spec=small)).model.id for _ in range(2)]
    details = call_error(stub.CreateModel, pb.CreateModelRequest(spec=small), EXHAUSTED)
    assert "limit max_models reached: got model 4, expected at most 3 models" in details
    assert snapshot(stub, first.id) == before

    for model in others:  # room again once models are deleted
        stub.DeleteModel(pb.DeleteModelRequest(model=model))
    stub.DeleteModel(pb.DeleteModelRequest(model=stub.CreateModel(pb.CreateModelRequest(spec=small)).model.id))
    stub.DeleteModel(pb.DeleteModelRequest(model=first.id))


# -- the mapping itself --------------------------------------------------------------------

class _Failing:
    """Handlers of a throwaway service: one raises a bug, one a domain error, one works."""

    def bug(self, request, context):
        return 1 // int(request == b"")  # ZeroDivisionError for a non-empty request

    def domain(self, request, context):
        raise InvalidArgument("thing: got 1, expected 2")

    def fine(self, request, context):
        return b"ok"


def test_unexpected_exception_is_internal_logged_once_and_server_keeps_serving(caplog):
    """A bug in a handler becomes INTERNAL, is logged once with its traceback, and the next call works."""
    failing = _Failing()
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(failing, name))
                for name in ("bug", "domain", "fine")}
    server = grpc.server(futures.ThreadPoolExecutor(2),
                         interceptors=[ErrorInterceptor("/test.Failing/")])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Failing", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = lambda name: channel.unary_unary(f"/test.Failing/{name}")(struct.pack("b", 1), timeout=10)
            with caplog.at_level(logging.ERROR, logger="nnserve.service.errors"):
                with pytest.raises(grpc.RpcError) as caught:
                    call("bug")
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert "ZeroDivisionError" in caught.value.details()
            records = [r for r in caplog.records if r.name == "nnserve.service.errors"]
            assert len(records) == 1 and records[0].exc_info and records[0].method == "/test.Failing/bug"
            with pytest.raises(grpc.RpcError) as caught:
                call("domain")
            assert (caught.value.code(), caught.value.details()) == (INVALID, "thing: got 1, expected 2")
            assert call("fine") == b"ok"
    finally:
        server.stop(0).wait(10)


def test_a_bug_in_the_model_layer_is_internal_and_only_its_refusals_are_invalid_argument(monkeypatch, caplog):
    """A ValueError that is no InvalidInput (a bug, not a refusal) out of the model layer is
    INTERNAL and logged, while an InvalidBatch from the same place is INVALID_ARGUMENT."""
    from nnserve.model import InvalidBatch
    from nnserve.model.batches import BatchRule

    warmup()
    with running_server() as running:
        stub = running.stub
        model = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec())).model
        x, _ = make_batch(np.random.default_rng(0), 3, 4, 3)
        request = pb.PredictRequest(model=model.id, x=to_tensor(x))
        assert stub.Predict(request, timeout=10).version == 0

        def buggy(self, x):
            raise ValueError("operands could not be broadcast together")

        monkeypatch.setattr(BatchRule, "inputs", buggy)
        with caplog.at_level(logging.ERROR, logger="nnserve.service.errors"):
            assert "ValueError" in call_error(stub.Predict, request, grpc.StatusCode.INTERNAL)
        assert [r.levelname for r in caplog.records if r.name == "nnserve.service.errors"] == ["ERROR"]

        def refusing(self, x):
            raise InvalidBatch("x: got a refusal, expected none")

        monkeypatch.setattr(BatchRule, "inputs", refusing)
        assert call_error(stub.Predict, request, INVALID) == "x: got a refusal, expected none"
        monkeypatch.undo()
        assert stub.Predict(request, timeout=10).version == 0
