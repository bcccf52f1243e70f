"""ONNX export and import: onnxruntime computes what nnserve computes, weights cross bit for
bit both ways, and graphs nnserve cannot hold are refused by name, creating nothing."""

import asyncio
import subprocess
import sys
from importlib.metadata import version as package_version

import grpc
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from client_support import live_server, same_arrays
from nnserve.clients import AsyncClient, Client, NNServeError
from nnserve.model import ACTIVATIONS, ExportedModel, InvalidOnnx, InvalidSpec, Network
from service_support import pb, running_server

# Largest difference allowed between onnxruntime's and nnserve's outputs, relative to the
# largest output: the two multiply in another order and take exp and tanh from other libraries.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
MAX_PARAMETERS = 5_000


@pytest.fixture(scope="module")
def live():
    with live_server(max_parameters_per_model=MAX_PARAMETERS) as running:
        yield running


@pytest.fixture(scope="module")
def client(live):
    with Client(live.target, timeout=30) as client:
        yield client


def _onnxruntime(data, x):
    """The graph's output for x, computed by onnxruntime (CPU)."""
    session = onnxruntime.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _assert_close(got, want):
    """Same shape and dtype, and values within the dtype's TOLERANCE."""
    assert got.shape == want.shape and got.dtype == want.dtype
    tolerance = TOLERANCE[want.dtype.name]
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())


def _same_weights(left, right):
    return len(left) == len(right) and all(
        same_arrays(w1, w2) and same_arrays(b1, b2) for (w1, b1), (w2, b2) in zip(left, right))


def _net_spec(activation):
    """(activations, loss) of a [5, 7, 6, 3] network that has `activation` on its layers:
    the hidden ones and the output, or the output alone for softmax."""
    if activation == "softmax":
        return ["tanh", "leaky_relu", "softmax"], "cross_entropy"
    return [activation] * 3, "binary_cross_entropy" if activation == "sigmoid" else "mse"


def _batch(rng, loss, dtype, n_samples=32):
    x = rng.normal(size=(n_samples, 5)).astype(dtype)
    if loss == "cross_entropy":
        return x, rng.integers(0, 3, size=n_samples)
    return x, rng.uniform(size=(n_samples, 3)).astype(dtype)


def _trained(client, activation, dtype, steps=3, **options):
    """A model on the server with `activation` after `steps` train steps, and a batch."""
    activations, loss = _net_spec(activation)
    model = client.create_model([5, 7, 6, 3], activations, loss, dtype=dtype, learning_rate=0.2,
                                seed=4, **options)
    rng = np.random.default_rng(7)
    x, y = _batch(rng, loss, dtype)
    for _ in range(steps):
        model.train_step(x, y)
    return model, x, y


# -- graphs as other exporters write them ---------------------------------------------------

def _model_bytes(nodes, initializers, *, dtype, n_in, n_out, input_name="input", output_name="output",
                 extra_inputs=()):
    element_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(input_name, element_type, ["N", n_in]), *extra_inputs],
        [helper.make_tensor_value_info(output_name, element_type, ["N", n_out])],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def torch_style(dtype, layers=(4, 16, 8, 3), seed=0):
    """What torch.onnx.export writes for Sequential(Linear, ReLU, Linear, ReLU, Linear,
    Softmax(dim=1)): Gemm with transB=1 over (out, in) weights, then the activation."""
    rng = np.random.default_rng(seed)
    initializers, nodes, current = {}, [], "input"
    last = len(layers) - 2
    for i, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
        initializers[f"fc{i}.weight"] = rng.normal(size=(n_out, n_in)).astype(dtype)
        initializers[f"fc{i}.bias"] = rng.normal(size=n_out).astype(dtype)
        nodes.append(helper.make_node("Gemm", [current, f"fc{i}.weight", f"fc{i}.bias"],
                                      [f"/fc{i}/Gemm_output_0"], name=f"/fc{i}/Gemm",
                                      alpha=1.0, beta=1.0, transB=1))
        current = f"/fc{i}/Gemm_output_0"
        activation = "Softmax" if i == last else "Relu"
        output = "output" if i == last else f"/act{i}/{activation}_output_0"
        attributes = {"axis": 1} if activation == "Softmax" else {}
        nodes.append(helper.make_node(activation, [current], [output], name=f"/act{i}/{activation}",
                                      **attributes))
        current = output
    return _model_bytes(nodes, initializers, dtype=dtype, n_in=layers[0], n_out=layers[-1]), initializers


def skl2onnx_style(dtype, layers=(5, 8, 6, 2), seed=1):
    """What skl2onnx writes for an MLPRegressor with tanh hidden layers: MatMul over (in, out)
    coefficients, then Add of the intercepts (here once with the operands swapped), then Tanh."""
    rng = np.random.default_rng(seed)
    initializers, nodes, current = {}, [], "X"
    last = len(layers) - 2
    for i, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
        initializers[f"coefficient{i}"] = rng.normal(size=(n_in, n_out)).astype(dtype)
        initializers[f"intercepts{i}"] = rng.normal(size=(1, n_out)).astype(dtype)
        nodes.append(helper.make_node("MatMul", [current, f"coefficient{i}"], [f"mul_result{i}"],
                                      name=f"MatMul{i}"))
        added = "variable" if i == last else f"add_result{i}"
        operands = [f"intercepts{i}", f"mul_result{i}"] if i == 1 else [f"mul_result{i}", f"intercepts{i}"]
        nodes.append(helper.make_node("Add", operands, [added], name=f"Add{i}"))
        current = added
        if i < last:
            nodes.append(helper.make_node("Tanh", [current], [f"next_activations{i}"], name=f"Tanh{i}"))
            current = f"next_activations{i}"
    data = _model_bytes(nodes, initializers, dtype=dtype, n_in=layers[0], n_out=layers[-1],
                        input_name="X", output_name="variable")
    return data, initializers


def _dense(dtype, *activation_nodes, n_in=3, n_out=2):
    """A one-Gemm graph ("dense": input -> "z") followed by `activation_nodes` ending at "output"."""
    rng = np.random.default_rng(2)
    initializers = {"W": rng.normal(size=(n_in, n_out)).astype(dtype), "b": np.zeros(n_out, dtype)}
    gemm = helper.make_node("Gemm", ["input", "W", "b"], ["z" if activation_nodes else "output"], name="dense")
    return _model_bytes([gemm, *activation_nodes], initializers, dtype=dtype, n_in=n_in, n_out=n_out)


# -- export -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_onnxruntime_computes_the_predictions_of_an_exported_model(client, activation, dtype):
    """For every activation and both dtypes, onnxruntime's outputs of a trained model's export
    equal the server's predictions (float32 within 1e-5, float64 within 1e-12 of the scale)."""
    model, x, _ = _trained(client, activation, dtype)
    try:
        data = model.to_onnx()
        proto = onnx.load_from_string(bytes(data))
        onnx.checker.check_model(proto, full_check=True)
        assert (proto.ir_version, [(o.domain, o.version) for o in proto.opset_import]) == (8, [("", 17)])
        (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
        element_type = TensorProto.FLOAT if dtype == "float32" else TensorProto.DOUBLE
        for value, features in ((graph_input, 5), (graph_output, 3)):
            dims = value.type.tensor_type.shape.dim
            assert value.type.tensor_type.elem_type == element_type
            assert [(d.dim_param, d.dim_value) for d in dims] == [("batch", 0), ("", features)]
        assert (graph_input.name, graph_output.name) == ("input", "output")
        assert [n.op_type for n in proto.graph.node if n.op_type == "Gemm"] == ["Gemm"] * 3
        if activation == "leaky_relu":  # LeakyRelu's alpha is a float32: exact in float32 only
            assert {n.op_type for n in proto.graph.node} - {"Gemm"} == {
                "LeakyRelu" if dtype == "float32" else "PRelu"}
        predictions = model.predict(x)
        assert model.step == 3 and predictions.version == data.version == 3
        _assert_close(_onnxruntime(data, x), np.asarray(predictions))
    finally:
        model.delete()


def test_metadata_names_producer_version_model_step_and_weights_version(client):
    """An export through the server carries nnserve's name and version, the model's id and
    name, its step, weights version and loss, in metadata_props and ExportModelResponse."""
    model, x, y = _trained(client, "relu", "float32", steps=2, name="exported")
    try:
        model.set_weights(model.get_weights())  # a version without a step: step 2, version 3
        data = model.to_onnx()
        assert isinstance(data, ExportedModel) and (data.step, data.version) == (2, 3)
        assert (model.step, model.version) == (2, 3)
        proto = onnx.load_from_string(bytes(data))
        assert (proto.producer_name, proto.producer_version) == ("nnserve", package_version("nnserve"))
        assert {p.key: p.value for p in proto.metadata_props} == {
            "producer": "nnserve", "producer_version": package_version("nnserve"), "step": "2",
            "weights_version": "3", "loss": "mse", "model_id": model.id, "model_name": "exported"}
        session = onnxruntime.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
        assert session.get_modelmeta().custom_metadata_map["model_id"] == model.id
    finally:
        model.delete()


def test_export_of_a_network_in_process_has_no_model_id():
    """Network.to_onnx writes the producer, step, weights version and loss, plus the metadata
    given; the server's names are the server's to add."""
    network = Network([2, 3, 1], ["tanh", "sigmoid"], "binary_cross_entropy", seed=1)
    network.train_step(np.ones((2, 2), np.float32), np.array([0, 1]))
    props = {p.key: p.value for p in onnx.load_from_string(bytes(network.to_onnx({"team": "a"}))).metadata_props}
    assert props == {"team": "a", "producer": "nnserve", "producer_version": package_version("nnserve"),
                     "step": "1", "weights_version": "1", "loss": "binary_cross_entropy"}


# -- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_then_import_in_process_is_bit_identical(dtype):
    """Network.from_onnx(Network.to_onnx()) has the same weights and predictions bit for bit, at
    step 0 and version 0; with plain SGD both then train to the same weights."""
    rng = np.random.default_rng(3)
    for activation in ACTIVATIONS:
        activations, loss = _net_spec(activation)
        network = Network([5, 7, 6, 3], activations, loss, dtype=dtype, learning_rate=0.2, seed=2)
        x, y = _batch(rng, loss, dtype)
        for _ in range(3):
            network.train_step(x, y)
        copy = Network.from_onnx(network.to_onnx(), loss=loss, learning_rate=0.2)
        assert copy.spec["layers"] == [5, 7, 6, 3] and copy.spec["activations"] == activations
        assert copy.dtype == network.dtype and (copy.step, copy.version) == (0, 0)
        assert _same_weights(copy.get_weights(), network.get_weights()), activation
        assert same_arrays(copy.predict(x), network.predict(x)), activation
        network.train_step(x, y)
        copy.train_step(x, y)
        assert _same_weights(copy.get_weights(), network.get_weights()), activation


def test_export_then_import_through_the_server_is_bit_identical(client, tmp_path):
    """to_onnx(path) writes the file it returns; import_onnx of that path (or the bytes) makes a
    model with the same layers, activations, dtype and weights bit for bit, at step 0 and
    version 0, with the options given, whose predictions are the original's bit for bit."""
    model, x, y = _trained(client, "leaky_relu", "float64", optimizer="adam")
    path = tmp_path / "model.onnx"
    try:
        data = model.to_onnx(path)
        assert path.read_bytes() == data
        from_file = client.import_onnx(path, loss=model.spec["loss"], name="from-file",
                                       optimizer="sgd", momentum=0.9, learning_rate=0.05)
        from_bytes = client.import_onnx(data, loss=model.spec["loss"])
        for copy in (from_file, from_bytes):
            for key in ("layers", "activations", "dtype", "loss"):
                assert copy.spec[key] == model.spec[key]
            assert (copy.step, copy.version) == (0, 0)
            assert _same_weights(copy.get_weights(), model.get_weights())
            assert same_arrays(copy.predict(x), model.predict(x))
        assert from_file.name == "from-file" and from_file.spec["momentum"] == 0.9
        assert from_file.spec["learning_rate"] == 0.05 and from_bytes.spec["optimizer"] == "sgd"
        from_file.delete()
        from_bytes.delete()
    finally:
        model.delete()


def test_async_client_exports_and_imports_as_the_sync_one(live, client, tmp_path):
    """AsyncRemoteModel.to_onnx and AsyncClient.import_onnx send and return what the sync
    client's do: the same bytes, file and weights."""
    model, x, _ = _trained(client, "tanh", "float32")

    async def scenario():
        async with AsyncClient(live.target) as aclient:
            remote = await aclient.get_model(model.id)
            data = await remote.to_onnx(tmp_path / "async.onnx")
            imported = await aclient.import_onnx(tmp_path / "async.onnx", loss="mse")
            weights, outputs = await imported.get_weights(), await imported.predict(x)
            await imported.delete()
            return data, weights, outputs

    try:
        data, weights, outputs = asyncio.run(scenario())
        assert data == model.to_onnx() and (data.step, data.version) == (3, 3)
        assert (tmp_path / "async.onnx").read_bytes() == data
        assert _same_weights(weights, model.get_weights()) and same_arrays(outputs, model.predict(x))
    finally:
        model.delete()


def test_imported_model_survives_a_restart(tmp_path):
    """With --state-dir an imported model is checkpointed when created: after a restart it has
    its weights, step 0 and version 0."""
    data, _ = torch_style("float32")
    with running_server(state_dir=str(tmp_path)) as live, Client(live.target) as client:
        imported = client.import_onnx(data, loss="cross_entropy", name="kept")
        weights = imported.get_weights()
    with running_server(state_dir=str(tmp_path)) as live, Client(live.target) as client:
        restored = client.get_model("kept")
        assert (restored.step, restored.version) == (0, 0)
        assert _same_weights(restored.get_weights(), weights)


# -- import of other exporters' graphs -------------------------------------------------------------

def test_torch_style_gemm_graph_imports_and_trains(client):
    """A Gemm (transB=1) + Relu + Softmax graph as torch.onnx writes it imports with W = B.T bit
    for bit, predicts what onnxruntime computes from the same graph, and trains (step 1)."""
    data, initializers = torch_style("float32")
    model = client.import_onnx(data, loss="cross_entropy", optimizer="adam", learning_rate=0.01)
    try:
        assert model.spec["layers"] == [4, 16, 8, 3]
        assert model.spec["activations"] == ["relu", "relu", "softmax"]
        assert model.dtype == np.float32 and model.spec["optimizer"] == "adam"
        expected = [(initializers[f"fc{i}.weight"].T, initializers[f"fc{i}.bias"]) for i in range(3)]
        assert _same_weights(model.get_weights(), [(np.ascontiguousarray(w), b) for w, b in expected])
        x = np.random.default_rng(4).normal(size=(64, 4)).astype(np.float32)
        _assert_close(np.asarray(model.predict(x)), _onnxruntime(data, x))
        loss = model.train_step(x, np.arange(64) % 3)
        assert np.isfinite(loss) and (loss.step, loss.version) == (1, 1)
    finally:
        model.delete()


def test_skl2onnx_style_matmul_add_graph_imports_and_trains(client):
    """A float64 MatMul + Add + Tanh graph as skl2onnx writes an MLPRegressor imports with its
    coefficients and intercepts bit for bit, predicts what onnxruntime computes, and trains."""
    data, initializers = skl2onnx_style("float64")
    model = client.import_onnx(data, loss="mse")
    try:
        assert model.spec["layers"] == [5, 8, 6, 2] and model.dtype == np.float64
        assert model.spec["activations"] == ["tanh", "tanh", "identity"]
        expected = [(initializers[f"coefficient{i}"], initializers[f"intercepts{i}"].ravel()) for i in range(3)]
        assert _same_weights(model.get_weights(), expected)
        x = np.random.default_rng(5).normal(size=(64, 5))
        _assert_close(np.asarray(model.predict(x)), _onnxruntime(data, x))
        loss = model.train_step(x, np.zeros((64, 2)))
        assert np.isfinite(loss) and (loss.step, loss.version) == (1, 1)
    finally:
        model.delete()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("node, activation, loss", [
    (helper.make_node("Sigmoid", ["z"], ["output"]), "sigmoid", "binary_cross_entropy"),
    (helper.make_node("Sigmoid", ["z"], ["output"]), "sigmoid", "mse"),
    (helper.make_node("LeakyRelu", ["z"], ["output"], alpha=0.01), "leaky_relu", "mse"),
    (helper.make_node("LeakyRelu", ["z"], ["output"]), "leaky_relu", "mse"),  # alpha's default, 0.01
    (helper.make_node("Softmax", ["z"], ["output"], axis=-1), "softmax", "cross_entropy"),
])
def test_single_activations_import(node, activation, loss, dtype):
    """Each accepted activation node becomes its nnserve activation, with the losses that fit it."""
    network = Network.from_onnx(_dense(dtype, node), loss=loss)
    assert network.spec["activations"] == [activation] and network.spec["dtype"] == dtype


# -- refusals ------------------------------------------------------------------------------------

def test_unsupported_node_is_refused_by_name_and_creates_nothing(client):
    """A graph with a BatchNormalization is INVALID_ARGUMENT naming the node (index, name and
    operator), as is a LeakyRelu with alpha 0.2 (naming the alpha); no model is created."""
    rng = np.random.default_rng(6)
    normalization = {name: rng.uniform(0.5, 1.5, size=2).astype(np.float32)
                     for name in ("scale", "shift", "mean", "var")}
    data = _model_bytes(
        [helper.make_node("Gemm", ["input", "W", "b"], ["z"], name="dense"),
         helper.make_node("BatchNormalization", ["z", "scale", "shift", "mean", "var"], ["output"],
                          name="bn1")],
        {"W": rng.normal(size=(3, 2)).astype(np.float32), "b": np.zeros(2, np.float32), **normalization},
        dtype=np.float32, n_in=3, n_out=2)
    leaky = _dense(np.float32, helper.make_node("LeakyRelu", ["z"], ["output"], name="act", alpha=0.2))
    before = [model.id for model in client.list_models()]
    for graph, message in ((data, "node 1 'bn1' (BatchNormalization): got an operator nnserve does not support"),
                           (leaky, "node 1 'act' (LeakyRelu): got alpha=0.2, expected 0.01")):
        with pytest.raises(NNServeError) as caught:
            client.import_onnx(graph, loss="mse", name="refused")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.message
    assert [model.id for model in client.list_models()] == before


def test_limits_and_names_apply_as_for_create_model(live, client):
    """An import over --max-parameters-per-model is RESOURCE_EXHAUSTED, one with a taken name
    ALREADY_EXISTS, one with an UNSPECIFIED loss INVALID_ARGUMENT; none creates a model."""
    big, _ = torch_style("float32", layers=(64, 64, 16, 3))
    taken = client.create_model([4, 3], ["softmax"], "cross_entropy", name="taken")
    small, _ = torch_style("float32")
    before = [model.id for model in client.list_models()]
    try:
        with pytest.raises(NNServeError) as caught:
            client.import_onnx(big, loss="cross_entropy")
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_parameters_per_model" in caught.value.message and f"{MAX_PARAMETERS}" in caught.value.message
        with pytest.raises(NNServeError) as caught:
            client.import_onnx(small, loss="cross_entropy", name="taken")
        assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as caught:
            live.stub.ImportModel(pb.ImportModelRequest(format=pb.MODEL_FORMAT_ONNX, model_data=small,
                                                           options=pb.TrainingOptions()), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.loss: got LOSS_UNSPECIFIED" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            live.stub.ExportModel(pb.ExportModelRequest(model="taken"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "format: got MODEL_FORMAT_UNSPECIFIED" in caught.value.details()
        assert [model.id for model in client.list_models()] == before
    finally:
        taken.delete()


def _chain(*nodes, initializers, dtype=np.float32, n_in=3, n_out=2, **graph):
    return _model_bytes(list(nodes), initializers, dtype=dtype, n_in=n_in, n_out=n_out, **graph)


_W = np.ones((3, 2), np.float32)
_B = np.zeros(2, np.float32)
_GEMM = helper.make_node("Gemm", ["input", "W", "b"], ["z"], name="dense")


def _external_weights():
    weights = numpy_helper.from_array(_W, "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="/etc/passwd")
    graph = helper.make_graph([helper.make_node("Gemm", ["input", "W"], ["output"], name="dense")], "mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])],
                              initializer=[weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("data, message", [
    (b"\xff\xff not onnx", "model: got 11 bytes that do not parse as an ONNX ModelProto"),
    (_chain(_GEMM, helper.make_node("Relu", ["z"], ["output"]), initializers={"W": _W, "b": _B},
            extra_inputs=[helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 3])]),
     "graph inputs: got 2 ['input', 'mask'], expected one"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="dense"),
            initializers={"W": np.ones((4, 2), np.float32), "b": _B}),
     "node 0 'dense' (Gemm): got weights of shape (4, 2), expected 3 inputs"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="dense", transB=1),
            initializers={"W": _W, "b": _B}),
     "node 0 'dense' (Gemm): got weights of shape (3, 2) (transB=1), expected 3 inputs"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="dense"),
            initializers={"W": _W, "b": np.zeros(3, np.float32)}),
     "node 0 'dense' (Gemm): got biases of shape (3,), expected (2,) or (1, 2)"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="dense", alpha=2.0),
            initializers={"W": _W, "b": _B}),
     "got transA=0, alpha=2, beta=1, expected transA=0, alpha=1, beta=1"),
    (_chain(_GEMM, helper.make_node("Softmax", ["z"], ["s"], name="sm"),
            helper.make_node("Relu", ["s"], ["output"], name="r"), initializers={"W": _W, "b": _B}),
     "node 2 'r' (Relu): got a node after Softmax, expected Softmax last"),
    (_chain(_GEMM, helper.make_node("Relu", ["z"], ["a"], name="r"),
            helper.make_node("Tanh", ["a"], ["output"], name="t"), initializers={"W": _W, "b": _B}),
     "node 2 't' (Tanh): got an activation after an activation"),
    (_chain(_GEMM, helper.make_node("Add", ["z", "b"], ["output"], name="late"), initializers={"W": _W, "b": _B}),
     "node 1 'late' (Add): got an Add that does not follow a MatMul"),
    (_chain(_GEMM, helper.make_node("PRelu", ["z", "slope"], ["output"], name="p"),
            initializers={"W": _W, "b": _B, "slope": np.array([0.25], np.float32)}),
     "node 1 'p' (PRelu): got slope [0.25] of shape (1,), expected 0.01 for every unit"),
    (_chain(helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "input"], ["output"], name="skip"), initializers={"W": _W}),
     "node 1 'skip' (Add): got inputs ['mm', 'input'], expected 'mm'"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["z"]), helper.make_node("Relu", ["input"], ["output"]),
            initializers={"W": _W, "b": _B}), "node 1 (Relu): got inputs ['input'], expected 'z'"),
    (_chain(_GEMM, helper.make_node("Relu", ["z"], ["a"]), initializers={"W": _W, "b": _B}, output_name="z"),
     "graph outputs: got ['z'], expected one, 'a'"),
    (_chain(helper.make_node("Conv", ["input", "W"], ["output"], name="conv1"), initializers={"W": _W}),
     "node 0 'conv1' (Conv): got an operator nnserve does not support"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="dense"),
            initializers={"W": _W.astype(np.float64), "b": _B}),
     "node 0 'dense' (Gemm): initializer 'W': got element type DOUBLE, expected FLOAT like the graph's input"),
    (_chain(helper.make_node("Gemm", ["input", "W", "b"], ["output"]),
            initializers={"W": _W.astype(np.float16), "b": _B.astype(np.float16)}, dtype=np.float16),
     "input 'input': got element type FLOAT16, expected FLOAT or DOUBLE"),
    (_external_weights(), "initializer 'W': got external data, expected its values inside the model"),
], ids=["garbage", "second-input", "weights-shape", "transposed-weights-shape", "biases-shape",
        "gemm-alpha", "softmax-not-last", "two-activations", "add-without-matmul", "prelu-slope",
        "skip-connection", "branch", "output-not-the-end", "conv", "mixed-dtypes", "float16",
        "external-data"])
def test_graphs_nnserve_cannot_hold_are_refused_naming_what(data, message):
    """Network.from_onnx raises InvalidOnnx naming the first node or part it refuses."""
    with pytest.raises(InvalidOnnx) as caught:
        Network.from_onnx(data, loss="mse")
    assert message in str(caught.value)


@pytest.mark.parametrize("output, loss", [("Softmax", "mse"), ("Relu", "binary_cross_entropy"),
                                          ("Sigmoid", "cross_entropy")])
def test_a_loss_that_does_not_fit_the_output_is_refused(output, loss):
    """The loss is checked against the graph's output activation by Network's spec rules."""
    with pytest.raises(InvalidSpec, match="expected"):
        Network.from_onnx(_dense(np.float32, helper.make_node(output, ["z"], ["output"])), loss=loss)


# -- dependencies ------------------------------------------------------------------------------

def test_sdk_moves_onnx_bytes_without_the_onnx_package(live):
    """With onnx and numba made unimportable, the SDK still exports and imports a model."""
    code = ("import sys; sys.modules['onnx'] = sys.modules['numba'] = None\n"
            "from nnserve.clients import Client\n"
            f"with Client('{live.target}') as client:\n"
            "    model = client.create_model([2, 2], ['softmax'], 'cross_entropy')\n"
            "    copy = client.import_onnx(model.to_onnx(), loss='cross_entropy')\n"
            "    assert copy.get_weights()[0][0].tobytes() == model.get_weights()[0][0].tobytes()\n"
            "    model.delete(); copy.delete()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_model_layer_imports_without_onnx_and_says_what_to_install():
    """nnserve.model imports without onnx; to_onnx then raises ImportError naming the extra."""
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from nnserve.model import Network\n"
            "try:\n"
            "    Network([2, 1], ['identity'], 'mse').to_onnx()\n"
            "except ImportError as error:\n"
            "    assert \"pip install 'nnserve[onnx]'\" in str(error), error\n"
            "else:\n"
            "    raise AssertionError('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
