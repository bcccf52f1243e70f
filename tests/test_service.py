"""Every ModelService RPC's success path, against a real server over real gRPC."""

import inspect

import grpc
import numpy as np
import pytest

from nnserve.model import Network, warmup
from nnserve.v1.models import spec_from_proto
from service_support import (call_error, classifier_spec, make_batch, pb, running_server,
                             to_array, to_tensor)


@pytest.fixture(scope="module")
def live():
    warmup()
    with running_server() as running:
        yield running


def _create(stub, spec, name=""):
    return stub.CreateModel(pb.CreateModelRequest(spec=spec, name=name), timeout=30).model


def test_lifecycle_create_get_list_delete(live):
    """A created model is found by id and by name, listed, deleted, and its name freed."""
    stub = live.stub
    model = _create(stub, classifier_spec(), name="lifecycle")
    assert len(model.id) == 32 and model.name == "lifecycle"
    assert (model.step, model.version, model.num_parameters) == (0, 0, 4 * 8 + 8 + 8 * 3 + 3)
    assert model.create_time.ToNanoseconds() > 0 and model.update_time == model.create_time
    assert stub.GetModel(pb.GetModelRequest(model=model.id)).model == model
    assert stub.GetModel(pb.GetModelRequest(model="lifecycle")).model == model
    listed = stub.ListModels(pb.ListModelsRequest(page_size=1000)).models
    assert model.id in [m.id for m in listed]

    deleted = stub.DeleteModel(pb.DeleteModelRequest(model="lifecycle")).model
    assert deleted == model
    call_error(stub.GetModel, pb.GetModelRequest(model=model.id), grpc.StatusCode.NOT_FOUND)
    again = _create(stub, classifier_spec(), name="lifecycle")
    assert again.id != model.id
    stub.DeleteModel(pb.DeleteModelRequest(model=again.id))


def test_unset_hyperparameters_take_network_defaults(live):
    """A spec without optional fields gets Network's keyword defaults, reported by GetModel."""
    model = _create(live.stub, classifier_spec())
    spec = model.spec
    defaults = {name: p.default for name, p in inspect.signature(Network).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key in ("learning_rate", "momentum", "nesterov", "weight_decay", "eps", "seed"):
        assert spec.HasField(key) and getattr(spec, key) == defaults[key], key
    assert tuple(spec.betas) == tuple(defaults["betas"])
    live.stub.DeleteModel(pb.DeleteModelRequest(model=model.id))


@pytest.mark.parametrize("dtype", [pb.DATA_TYPE_FLOAT32, pb.DATA_TYPE_FLOAT64], ids=["float32", "float64"])
@pytest.mark.parametrize("hyper", [dict(optimizer=pb.OPTIMIZER_SGD, momentum=0.9, nesterov=True),
                                   dict(optimizer=pb.OPTIMIZER_ADAM, weight_decay=1e-3)],
                         ids=["sgd-nesterov", "adam"])
def test_train_predict_evaluate_and_move_state_bit_exactly(live, dtype, hyper):
    """Train, predict and evaluate equal the in-process Network bit for bit, and a state moved
    to a second model through GetState/SetState continues exactly like the original."""
    stub = live.stub
    spec = classifier_spec((5, 7, 6, 3), dtype=dtype, learning_rate=0.05, seed=3, **hyper)
    local = Network(**spec_from_proto(spec))
    np_dtype = local.dtype
    rng = np.random.default_rng(0)
    batches = [make_batch(rng, 8, 5, 3, np_dtype) for _ in range(5)]
    source = _create(stub, spec, name=f"source-{np_dtype.name}-{hyper['optimizer']}")

    for number, (x, y) in enumerate(batches[:3], start=1):
        reply = stub.TrainStep(pb.TrainStepRequest(model=source.id, x=to_tensor(x), y=to_tensor(y)))
        assert (reply.step, reply.version) == (number, number)
        assert reply.loss == local.train_step(x, y)

    probe = batches[4][0]
    predicted = stub.Predict(pb.PredictRequest(model=source.name, x=to_tensor(probe)))
    outputs = to_array(predicted.outputs)
    assert outputs.dtype == np_dtype and outputs.shape == (8, 3) and predicted.version == 3
    np.testing.assert_array_equal(outputs, local.predict(probe))

    x, y = batches[4]
    evaluated = stub.Evaluate(pb.EvaluateRequest(model=source.id, x=to_tensor(x), y=to_tensor(y)))
    expected = local.evaluate(x, y)
    assert (evaluated.loss, evaluated.accuracy, evaluated.version) == (
        expected["loss"], expected["accuracy"], 3)

    state = stub.GetState(pb.GetStateRequest(model=source.id)).state
    assert state.step == 3 and len(state.weights) == 3
    assert sorted(slot.name for slot in state.slots) == sorted(local.get_state()["slots"])
    for (w, b), layer in zip(local.get_weights(), state.weights):
        np.testing.assert_array_equal(to_array(layer.weights), w)
        np.testing.assert_array_equal(to_array(layer.biases), b)

    target = _create(stub, state.spec)
    moved = stub.SetState(pb.SetStateRequest(model=target.id, state=state))
    assert (moved.step, moved.version) == (3, 1)
    for x, y in batches[3:]:
        replies = [stub.TrainStep(pb.TrainStepRequest(model=m, x=to_tensor(x), y=to_tensor(y)))
                   for m in (source.id, target.id)]
        assert replies[0].loss == replies[1].loss == local.train_step(x, y)
        assert replies[0].step == replies[1].step
    states = [stub.GetState(pb.GetStateRequest(model=m)).state for m in (source.id, target.id)]
    assert states[0].SerializeToString() == states[1].SerializeToString()
    outputs = [to_array(stub.Predict(pb.PredictRequest(model=m, x=to_tensor(probe))).outputs)
               for m in (source.id, target.id)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], local.predict(probe))

    for m in (source.id, target.id):
        stub.DeleteModel(pb.DeleteModelRequest(model=m))
    listed = {m.id for m in stub.ListModels(pb.ListModelsRequest(page_size=1000)).models}
    assert not listed & {source.id, target.id}


def test_list_models_pages_in_creation_order(live):
    """ListModels pages through models oldest first, and a deletion between pages skips nothing."""
    stub = live.stub
    before = {m.id for m in stub.ListModels(pb.ListModelsRequest(page_size=1000)).models}
    created = [_create(stub, classifier_spec()).id for _ in range(5)]
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListModels(pb.ListModelsRequest(page_size=2, page_token=token))
        assert len(page.models) <= 2
        seen += [m.id for m in page.models if m.id not in before]
        pages += 1
        if pages == 1:
            stub.DeleteModel(pb.DeleteModelRequest(model=created[0]))  # already listed
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    default_page = stub.ListModels(pb.ListModelsRequest()).models
    assert [m.id for m in default_page if m.id not in before] == created[1:]
    for model in created[1:]:
        stub.DeleteModel(pb.DeleteModelRequest(model=model))


def test_evaluate_reports_accuracy_only_for_classification(live):
    """Evaluate sets accuracy for cross-entropy losses and leaves it unset for mse."""
    stub = live.stub
    spec = pb.ModelSpec(layers=[3, 2], activations=[pb.ACTIVATION_IDENTITY], loss=pb.LOSS_MSE,
                        optimizer=pb.OPTIMIZER_SGD, init=pb.INIT_XAVIER, dtype=pb.DATA_TYPE_FLOAT64)
    model = _create(stub, spec)
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    reply = stub.Evaluate(pb.EvaluateRequest(model=model.id, x=to_tensor(x), y=to_tensor(y)))
    assert not reply.HasField("accuracy") and reply.loss == Network(**spec_from_proto(spec)).evaluate(x, y)["loss"]
    stub.DeleteModel(pb.DeleteModelRequest(model=model.id))


def test_targets_as_int32_ids_and_probability_rows(live):
    """Cross-entropy targets travel as int32 class ids or as float probability rows alike."""
    stub = live.stub
    model = _create(stub, classifier_spec(dtype=pb.DATA_TYPE_FLOAT64))
    x = np.random.default_rng(1).normal(size=(6, 4))
    ids = np.array([0, 1, 2, 2, 1, 0], dtype=np.int32)
    rows = np.eye(3)[ids]
    by_ids = stub.Evaluate(pb.EvaluateRequest(model=model.id, x=to_tensor(x), y=to_tensor(ids)))
    by_rows = stub.Evaluate(pb.EvaluateRequest(model=model.id, x=to_tensor(x), y=to_tensor(rows)))
    assert by_ids.loss == pytest.approx(by_rows.loss, rel=1e-12)
    assert by_ids.accuracy == by_rows.accuracy
    stub.DeleteModel(pb.DeleteModelRequest(model=model.id))


def test_default_message_size_takes_a_1024_by_784_float64_batch(live):
    """With default settings a 1024 x 784 float64 batch trains and predicts."""
    stub = live.stub
    model = _create(stub, classifier_spec((784, 16, 10), dtype=pb.DATA_TYPE_FLOAT64))
    x, y = make_batch(np.random.default_rng(2), 1024, 784, 10, np.float64)
    reply = stub.TrainStep(pb.TrainStepRequest(model=model.id, x=to_tensor(x), y=to_tensor(y)))
    assert reply.step == 1
    outputs = to_array(stub.Predict(pb.PredictRequest(model=model.id, x=to_tensor(x))).outputs)
    assert outputs.shape == (1024, 10)
    stub.DeleteModel(pb.DeleteModelRequest(model=model.id))


def test_update_time_follows_weight_changes(live):
    """update_time moves on TrainStep and SetState and stays put on Predict."""
    stub = live.stub
    model = _create(stub, classifier_spec())
    x, y = make_batch(np.random.default_rng(3), 4, 4, 3)
    stub.TrainStep(pb.TrainStepRequest(model=model.id, x=to_tensor(x), y=to_tensor(y)))
    trained = stub.GetModel(pb.GetModelRequest(model=model.id)).model
    assert trained.update_time.ToNanoseconds() > model.update_time.ToNanoseconds()
    stub.Predict(pb.PredictRequest(model=model.id, x=to_tensor(x)))
    assert stub.GetModel(pb.GetModelRequest(model=model.id)).model.update_time == trained.update_time
    state = stub.GetState(pb.GetStateRequest(model=model.id)).state
    stub.SetState(pb.SetStateRequest(model=model.id, state=state))
    restored = stub.GetModel(pb.GetModelRequest(model=model.id)).model
    assert restored.update_time.ToNanoseconds() > trained.update_time.ToNanoseconds()
    assert (restored.step, restored.version) == (1, 2)
    stub.DeleteModel(pb.DeleteModelRequest(model=model.id))


@pytest.mark.parametrize("model_dtype, weights_dtype, hyper", [
    (pb.DATA_TYPE_FLOAT32, np.float32, dict(optimizer=pb.OPTIMIZER_ADAM)),
    (pb.DATA_TYPE_FLOAT64, np.float64, dict(optimizer=pb.OPTIMIZER_SGD, momentum=0.9)),
    (pb.DATA_TYPE_FLOAT64, np.float32, dict(optimizer=pb.OPTIMIZER_ADAM)),
], ids=["float32-adam", "float64-momentum", "float32-weights-into-float64"])
def test_set_weights_replaces_weights_and_keeps_optimizer_state_and_step(live, model_dtype, weights_dtype,
                                                                          hyper):
    """SetWeights replaces the weights exactly, keeps step and optimizer slots, adds 1 to the
    version, and the next TrainSteps equal an in-process Network's that did set_weights there."""
    stub = live.stub
    spec = classifier_spec((5, 7, 3), dtype=model_dtype, learning_rate=0.05, seed=3, **hyper)
    local = Network(**spec_from_proto(spec))
    rng = np.random.default_rng(11)
    batches = [make_batch(rng, 8, 5, 3, local.dtype) for _ in range(4)]
    model = _create(stub, spec)
    for x, y in batches[:2]:
        reply = stub.TrainStep(pb.TrainStepRequest(model=model.id, x=to_tensor(x), y=to_tensor(y)))
        assert reply.loss == local.train_step(x, y)
    before = stub.GetState(pb.GetStateRequest(model=model.id)).state
    trained = stub.GetModel(pb.GetModelRequest(model=model.id)).model

    weights = [(rng.normal(size=(5, 7)).astype(weights_dtype), rng.normal(size=7).astype(weights_dtype)),
               (rng.normal(size=(7, 3)).astype(weights_dtype), rng.normal(size=3).astype(weights_dtype))]
    reply = stub.SetWeights(pb.SetWeightsRequest(model=model.id, weights=[
        pb.LayerParameters(weights=to_tensor(w), biases=to_tensor(b)) for w, b in weights]))
    local.set_weights(weights)
    assert (reply.step, reply.version) == (2, 3)

    described = stub.GetModel(pb.GetModelRequest(model=model.id)).model
    assert (described.step, described.version) == (2, 3)
    assert described.update_time.ToNanoseconds() > trained.update_time.ToNanoseconds()
    after = stub.GetState(pb.GetStateRequest(model=model.id)).state
    assert after.step == 2 and len(after.weights) == 2
    assert [s.SerializeToString() for s in after.slots] == [s.SerializeToString() for s in before.slots]
    assert len(after.slots) == (2 if hyper["optimizer"] == pb.OPTIMIZER_ADAM else 1)
    for (w, b), layer in zip(weights, after.weights):
        got_w, got_b = to_array(layer.weights), to_array(layer.biases)
        assert got_w.dtype == local.dtype and got_b.dtype == local.dtype
        assert got_w.tobytes() == w.astype(local.dtype).tobytes()
        assert got_b.tobytes() == b.astype(local.dtype).tobytes()

    for number, (x, y) in enumerate(batches[2:], start=3):
        reply = stub.TrainStep(pb.TrainStepRequest(model=model.id, x=to_tensor(x), y=to_tensor(y)))
        assert reply.loss == local.train_step(x, y)
        assert (reply.step, reply.version) == (number, number + 1)
    final = stub.GetState(pb.GetStateRequest(model=model.id)).state
    for (w, b), layer in zip(local.get_weights(), final.weights):
        assert to_array(layer.weights).tobytes() == w.tobytes()
        assert to_array(layer.biases).tobytes() == b.tobytes()
    for slot in final.slots:
        for (w, b), layer in zip(local.get_state()["slots"][slot.name], slot.layers):
            assert to_array(layer.weights).tobytes() == w.tobytes()
            assert to_array(layer.biases).tobytes() == b.tobytes()
    stub.DeleteModel(pb.DeleteModelRequest(model=model.id))
