"""The contract: generated code current, every element documented, codecs exact and strict."""

import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from nnserve.model import ACTIVATIONS, INITS, LOSSES, OPTIMIZERS, Network
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1.models import (layers_from_proto, layers_to_proto, spec_from_proto, spec_to_proto,
                               state_from_proto, state_to_proto)
from nnserve.v1.tensors import InvalidMessage, InvalidTensor, to_array, to_tensor

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def test_generated_code_matches_the_proto(tmp_path):
    """Regenerating from proto/ with the pinned grpcio-tools reproduces the committed files
    exactly (nnserve.v1 and nnserve.oip), and no committed generated file lacks its proto."""
    subprocess.run([sys.executable, str(PROTO_DIR / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    fresh = sorted(path.relative_to(tmp_path) for path in tmp_path.glob("nnserve/*/*_pb2*"))
    committed = sorted(path.relative_to(PROTO_DIR) for path in PROTO_DIR.glob("nnserve/*/*_pb2*"))
    assert fresh == committed and len(fresh) == 9
    for name in fresh:
        assert filecmp.cmp(tmp_path / name, PROTO_DIR / name, shallow=False), (
            f"{PROTO_DIR / name} is stale: run `python proto/generate.py` and commit the result")


def _source_info(tmp_path):
    from grpc_tools import protoc
    from importlib import resources

    out = tmp_path / "descriptor.pb"
    status = protoc.main(["protoc", f"--proto_path={PROTO_DIR}",
                          f"--proto_path={resources.files('grpc_tools') / '_proto'}",
                          "--include_source_info", f"--descriptor_set_out={out}",
                          "nnserve/v1/nnserve.proto"])
    assert status == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def test_every_message_field_enum_and_method_has_a_comment(tmp_path):
    """Every message, field, enum, enum value, the service and each method carry a comment."""
    proto = _source_info(tmp_path)
    comments = {tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
                for loc in proto.source_code_info.location}
    elements = []
    for i, message in enumerate(proto.message_type):  # 4: message_type, 2: field
        elements.append(((4, i), message.name))
        elements += [((4, i, 2, j), f"{message.name}.{field.name}") for j, field in enumerate(message.field)]
    for i, enum in enumerate(proto.enum_type):  # 5: enum_type, 2: value
        elements.append(((5, i), enum.name))
        elements += [((5, i, 2, j), value.name) for j, value in enumerate(enum.value)]
    for i, service in enumerate(proto.service):  # 6: service, 2: method
        elements.append(((6, i), service.name))
        elements += [((6, i, 2, j), f"{service.name}.{m.name}") for j, m in enumerate(service.method)]
    undocumented = [name for path, name in elements if not comments.get(path)]
    assert undocumented == []


def test_enum_names_are_the_kernels_names():
    """Each enum's value names, lower-cased without prefix, are exactly the names Network takes."""
    def names(enum, prefix):
        return tuple(n[len(prefix):].lower() for n, v in enum.items() if v)

    assert names(pb.Activation, "ACTIVATION_") == ACTIVATIONS
    assert names(pb.Loss, "LOSS_") == LOSSES
    assert names(pb.Optimizer, "OPTIMIZER_") == OPTIMIZERS
    assert names(pb.Init, "INIT_") == INITS
    assert all(v == 0 for enum in (pb.Activation, pb.Loss, pb.Optimizer, pb.Init, pb.DataType)
               for n, v in enum.items() if n.endswith("_UNSPECIFIED"))


# -- tensors -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3), (1, 0, 4)])
def test_tensor_round_trip_is_exact(dtype, shape):
    """Arrays of every supported dtype and shape come back bit-identical, dtype and shape included."""
    array = (np.random.default_rng(0).normal(size=shape) * 1000).astype(dtype)
    tensor = to_tensor(array)
    assert tuple(tensor.shape) == shape and len(tensor.content) == array.nbytes
    back = to_array(tensor)
    assert back.dtype == array.dtype and back.shape == shape and back.flags.writeable
    assert back.tobytes() == array.tobytes()


def test_tensor_bytes_are_little_endian_row_major():
    """Content is row-major and little-endian, also for big-endian or Fortran-ordered input."""
    array = np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3))
    tensor = to_tensor(array)
    assert tensor.dtype == pb.DATA_TYPE_FLOAT64
    assert tensor.content == np.arange(6, dtype="<f8").tobytes()


def test_tensor_view_without_copy_is_read_only_and_shares_the_bytes():
    """copy=False returns a read-only array over the message's bytes."""
    tensor = to_tensor(np.arange(4, dtype=np.float32))
    view = to_array(tensor, copy=False)
    assert not view.flags.writeable and view.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("tensor, message", [
    (pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[2, 2], content=b"\0" * 12),
     "t: got 12 bytes, expected 16 (shape [2, 2] x 4 bytes of float32)"),
    (pb.Tensor(dtype=pb.DATA_TYPE_INT64, shape=[3], content=b"\0" * 25), "t: got 25 bytes, expected 24"),
    (pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[-1, -4], content=b"\0" * 16),
     "t: got shape [-1, -4], expected dimensions >= 0"),
    (pb.Tensor(shape=[1], content=b"\0" * 4), "t: got dtype DATA_TYPE_UNSPECIFIED, expected one of"),
    (pb.Tensor(dtype=17, shape=[1], content=b"\0" * 4), "t: got dtype 17, expected one of"),
    (pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[1] * 33, content=b"\0" * 4),
     "t: got 33 dimensions, expected at most 32"),
    (pb.Tensor(dtype=pb.DATA_TYPE_FLOAT64, shape=[1 << 40, 1 << 40], content=b""),
     "got 0 bytes, expected 9671406556917033397649408"),
])
def test_malformed_tensor_is_rejected_before_reading_elements(tensor, message):
    """Unknown dtypes, negative dimensions and byte lengths other than shape x itemsize raise InvalidTensor."""
    with pytest.raises(InvalidTensor) as caught:
        to_array(tensor, "t")
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("array", [np.zeros(2, np.float16), np.zeros(2, bool), np.zeros(2, np.uint8),
                                   np.array(["a"]), np.zeros(2, complex)], ids=lambda a: a.dtype.name)
def test_unsupported_dtypes_are_not_encoded(array):
    """Encoding refuses dtypes the contract lacks instead of casting them silently."""
    with pytest.raises(InvalidTensor, match=f"got dtype {array.dtype}, expected float32, float64, int32 or int64"):
        to_tensor(array)


def test_contract_codecs_import_without_numba_or_the_service():
    """nnserve.v1's codecs import with numpy and protobuf alone (client installs have no numba)."""
    code = ("import sys, nnserve.v1.tensors, nnserve.v1.models, nnserve.v1.nnserve_pb2_grpc; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'scipy') "
            "or m.startswith(('nnserve.service', 'nnserve.kernels'))]; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# -- specs and states ----------------------------------------------------------------------

def test_spec_and_state_survive_the_round_trip():
    """Network.spec and get_state() go through ModelSpec/ModelState and back unchanged."""
    network = Network([3, 5, 2], ["tanh", "sigmoid"], "binary_cross_entropy", optimizer="adam",
                      learning_rate=0.003, weight_decay=0.1, betas=(0.8, 0.95), eps=1e-6,
                      init="xavier", seed=12, dtype="float64")
    network.train_step(np.ones((2, 3)), np.ones((2, 2)))
    assert spec_from_proto(spec_to_proto(network.spec)) == network.spec
    state = network.get_state()
    back = state_from_proto(pb.ModelState.FromString(state_to_proto(state).SerializeToString()))
    assert back["spec"] == state["spec"] and back["step"] == 1
    assert set(back["slots"]) == {"exp_avg", "exp_avg_sq"}
    for name in ("weights", *[f"slots.{slot}" for slot in state["slots"]]):
        ours = state["weights"] if name == "weights" else state["slots"][name[6:]]
        theirs = back["weights"] if name == "weights" else back["slots"][name[6:]]
        for (w, b), (w2, b2) in zip(ours, theirs):
            assert w.tobytes() == w2.tobytes() and b.tobytes() == b2.tobytes()


def test_layer_parameters_codec_is_exact_and_names_what_it_refuses():
    """layers_to_proto/layers_from_proto carry (W, b) pairs bit for bit; a non-pair or an
    undecodable tensor is InvalidMessage naming the entry."""
    pairs = Network([3, 4, 2], ["relu", "softmax"], "cross_entropy", dtype="float64", seed=2).get_weights()
    back = layers_from_proto(layers_to_proto(pairs))
    assert [(w.dtype, w.shape, w.tobytes(), b.dtype, b.shape, b.tobytes()) for w, b in back] == [
        (w.dtype, w.shape, w.tobytes(), b.dtype, b.shape, b.tobytes()) for w, b in pairs]
    with pytest.raises(InvalidMessage, match=r"weights\[1\]: got tuple of length 3, expected a pair \(W, b\)"):
        layers_to_proto([pairs[0], (*pairs[1], pairs[1][1])])
    layers = layers_to_proto(pairs)
    layers[0].biases.content = b""
    with pytest.raises(InvalidTensor, match=r"weights\[0\].biases: got 0 bytes, expected 32"):
        layers_from_proto(layers)


def test_spec_without_optional_fields_leaves_network_defaults_to_network():
    """Unset optional fields are absent from the decoded spec, so Network's defaults apply."""
    spec = spec_from_proto(pb.ModelSpec(layers=[2, 1], activations=[pb.ACTIVATION_SIGMOID],
                                        loss=pb.LOSS_MSE, optimizer=pb.OPTIMIZER_SGD,
                                        init=pb.INIT_HE, dtype=pb.DATA_TYPE_FLOAT32))
    assert spec == {"layers": [2, 1], "activations": ["sigmoid"], "loss": "mse", "optimizer": "sgd",
                    "init": "he", "dtype": "float32"}


@pytest.mark.parametrize("spec, message", [
    ({"layers": [2, 1], "activations": ["gelu"], "loss": "mse", "optimizer": "sgd", "init": "he",
      "dtype": "float32"}, "activations[0]: got 'gelu', expected one of identity, sigmoid"),
    ({"layers": [2, 1], "activations": ["relu"], "loss": "mse", "optimizer": "sgd", "init": "he",
      "dtype": "float16"}, "dtype: got 'float16', expected one of float32, float64, int32, int64"),
    ({"layers": [2, 1], "colour": "red"}, "spec: got unknown keys ['colour']"),
])
def test_spec_encoding_rejects_unknown_names(spec, message):
    """Encoding a spec with an unknown key or name raises InvalidMessage saying what was expected."""
    with pytest.raises(InvalidMessage, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec_to_proto(spec)
