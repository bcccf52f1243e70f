"""Checkpoint format, store and writer in-process: exact round trips, every kind of damage
refused, I/O outside the model's lock, coalescing, deletions final, versions kept."""

import logging
import os
import random
import threading
import time

import numpy as np
import pytest

from nnserve.model import Network
from nnserve.service.checkpoints import (CheckpointStore, Checkpointer, CorruptCheckpoint, decode,
                                         encode)
from nnserve.service.registry import ModelEntry
from service_support import (classifier_spec, make_batch, pb, running_server, snapshot, to_array,
                             to_tensor)


def _network(optimizer="adam", dtype="float32", momentum=0.0, steps=3):
    network = Network([5, 7, 3], ["tanh", "softmax"], "cross_entropy", optimizer=optimizer,
                      momentum=momentum, dtype=dtype, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        network.train_step(rng.normal(size=(6, 5)).astype(dtype), rng.integers(0, 3, size=6))
    return network


def _entry(network, name="m"):
    return ModelEntry(os.urandom(16).hex(), name, network, 1)


def _record(entry):
    state = entry.network.get_state()
    return {"id": entry.id, "name": entry.name, "spec": state["spec"], "step": state["step"],
            "version": state["version"], "create_time_ns": entry.create_time_ns,
            "update_time_ns": entry.update_time_ns, "weights": state["weights"], "slots": state["slots"]}


def _assert_same(record, expected):
    assert {k: v for k, v in record.items() if k not in ("weights", "slots")} == {
        k: v for k, v in expected.items() if k not in ("weights", "slots")}
    assert sorted(record["slots"]) == sorted(expected["slots"])
    for got, want in [(record["weights"], expected["weights"])] + [
            (record["slots"][name], expected["slots"][name]) for name in expected["slots"]]:
        assert len(got) == len(want)
        for (w1, b1), (w2, b2) in zip(got, want):
            assert w1.dtype == w2.dtype and b1.dtype == b2.dtype
            assert w1.tobytes() == w2.tobytes() and b1.tobytes() == b2.tobytes()


@pytest.mark.parametrize("optimizer, dtype, momentum", [
    ("sgd", "float32", 0.0), ("sgd", "float64", 0.9), ("adam", "float32", 0.0), ("adam", "float64", 0.0)])
def test_a_written_checkpoint_reads_back_bit_identical(tmp_path, optimizer, dtype, momentum):
    """write() then read() gives back spec, step, version, name, times, weights and slots exactly."""
    entry = _entry(_network(optimizer, dtype, momentum))
    store = CheckpointStore(tmp_path)
    record = _record(entry)
    store.write(record)
    _assert_same(store.read(store.path(entry.id)), record)
    assert store.path(entry.id).stat().st_mode & 0o777 == 0o600
    store.close()


def test_every_truncation_and_byte_flip_is_refused_or_harmless(tmp_path):
    """Truncated at 60 lengths and with 300 single bytes flipped, a checkpoint either raises
    CorruptCheckpoint or reads back exactly the original record: never anything else."""
    store = CheckpointStore(tmp_path)
    entry = _entry(_network())
    record = _record(entry)
    store.write(record)
    path = store.path(entry.id)
    original = path.read_bytes()
    rng = random.Random(0)
    damaged = [original[:n] for n in sorted({rng.randrange(len(original)) for _ in range(60)})]
    for _ in range(300):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        damaged.append(bytes(data))
    refused = 0
    for data in damaged:
        path.write_bytes(data)
        try:
            _assert_same(store.read(path), record)
        except CorruptCheckpoint:
            refused += 1
    # Flips in bookkeeping (zip timestamps, the .npy headers' padding) change nothing read.
    assert refused >= 0.7 * len(damaged)
    store.close()


def test_a_checksum_mismatch_and_pickles_are_refused(tmp_path):
    """Members changed after the checksum, or an object array (a pickle), are CorruptCheckpoint."""
    record = _record(_entry(_network()))
    members = encode(record)
    altered = dict(members, **{"weights.0.b": members["weights.0.b"] + 1})
    with pytest.raises(CorruptCheckpoint, match="sha256"):
        decode(altered)
    with pytest.raises(CorruptCheckpoint, match="sha256: got a checksum"):
        decode({k: v for k, v in members.items() if k != "slot.exp_avg.1.W"})
    path = tmp_path / f"{record['id']}.npz"
    with open(path, "wb") as file:
        np.savez(file, **dict(members, meta=np.array([{"x": 1}], dtype=object)))
    store = CheckpointStore(tmp_path)
    with pytest.raises(CorruptCheckpoint, match="Object arrays cannot be loaded"):
        store.read(path)
    store.close()


def test_the_store_is_one_process_per_directory_and_clears_unfinished_writes(tmp_path):
    """A second store on a locked directory raises OSError; opening removes temporary files."""
    leftover = tmp_path / ".0123.npz.abc.tmp"
    leftover.write_bytes(b"half a file")
    store = CheckpointStore(tmp_path)
    assert not leftover.exists()
    with pytest.raises(OSError, match="locked by another process"):
        CheckpointStore(tmp_path)
    store.close()
    CheckpointStore(tmp_path).close()


class _SlowStore(CheckpointStore):
    """A store whose writes take `delay` seconds and are counted."""

    def __init__(self, directory, delay):
        super().__init__(directory)
        self.delay, self.writes = delay, []

    def write(self, record):
        time.sleep(self.delay)
        self.writes.append(record["step"])
        return super().write(record)


def test_file_io_happens_outside_the_model_lock_and_saves_coalesce(tmp_path):
    """While a slow checkpoint write runs, train steps on the same model go on; the 50 steps
    asked to be saved one by one are written a few times, the last write holding the last step."""
    store = _SlowStore(tmp_path, delay=0.3)
    checkpointer = Checkpointer(store, every_steps=1)
    network = Network([3, 4, 2], ["relu", "softmax"], "cross_entropy")
    entry = _entry(network)
    checkpointer.track(entry)
    rng = np.random.default_rng(1)
    durations = []
    for _ in range(50):
        x, y = rng.normal(size=(2, 3)).astype(np.float32), rng.integers(0, 2, size=2)
        started = time.perf_counter()
        network.train_step(x, y)
        durations.append(time.perf_counter() - started)
        checkpointer.trained(entry)
    assert max(durations) < store.delay  # no step waited for a write
    checkpointer.close()  # saves what is not yet saved
    assert 1 <= len(store.writes) <= 3 and store.writes[-1] == 50
    store = CheckpointStore(tmp_path)
    assert store.read(store.path(entry.id))["step"] == 50
    store.close()


def test_a_removed_model_is_never_written_again(tmp_path):
    """Saves queued, running or requested after a model is untracked and removed never bring
    its file back, whatever the interleaving."""
    store = _SlowStore(tmp_path, delay=0.002)
    checkpointer = Checkpointer(store, every_steps=1)
    entries = [_entry(Network([2, 3, 1], ["relu", "sigmoid"], "binary_cross_entropy")) for _ in range(40)]
    for entry in entries:
        checkpointer.track(entry)

    def churn(entry, delete):
        for _ in range(5):
            checkpointer.trained(entry)
            checkpointer.save(entry, wait=False)
        if delete:
            checkpointer.untrack(entry)
            checkpointer.remove(entry, wait=False)
            checkpointer.trained(entry)
            checkpointer.save(entry, wait=False)

    threads = [threading.Thread(target=churn, args=(entry, i % 2 == 0)) for i, entry in enumerate(entries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    checkpointer.close()
    files = {path.stem for path in tmp_path.glob("*.npz")}
    assert files == {entry.id for i, entry in enumerate(entries) if i % 2 == 1}


def test_the_time_trigger_saves_an_idle_model(tmp_path):
    """With every_seconds, one train step is on disk that long later without another step."""
    store = CheckpointStore(tmp_path)
    checkpointer = Checkpointer(store, every_seconds=0.2)
    network = Network([3, 4, 2], ["relu", "softmax"], "cross_entropy")
    entry = _entry(network)
    checkpointer.track(entry)
    checkpointer.save(entry)
    network.train_step(np.ones((1, 3), np.float32), np.array([1]))
    checkpointer.trained(entry)
    deadline = time.monotonic() + 5
    while store.read(store.path(entry.id))["step"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    checkpointer.close()


class _FailingStore(CheckpointStore):
    def write(self, record):
        raise OSError(28, "No space left on device")


def test_a_failed_write_is_logged_and_the_model_keeps_serving(tmp_path, caplog):
    """A checkpoint write that fails (disk full) is logged with the model id; the RPC succeeds."""
    from nnserve.service import Settings, create_server
    from nnserve.service import server as server_module

    caplog.set_level(logging.ERROR, logger="nnserve.service.checkpoints")
    real = server_module.open_checkpoints
    server_module.open_checkpoints = lambda settings: Checkpointer(_FailingStore(settings.state_dir))
    try:
        server, _ = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0, state_dir=str(tmp_path)))
    finally:
        server_module.open_checkpoints = real
    entry = server.registry.create({"layers": [2, 2], "activations": ["softmax"], "loss": "cross_entropy"})
    assert server.registry.get(entry.id) is entry
    failed = [r for r in caplog.records if getattr(r, "event", "") == "checkpoint_failed"]
    assert failed and failed[0].model_id == entry.id and "No space left" in failed[0].getMessage()
    server.stop(0).wait(10)


class _FailingOnceStore(CheckpointStore):
    """A store whose first write fails, as on a disk that was full for a moment."""

    def __init__(self, directory):
        super().__init__(directory)
        self.failed = False

    def write(self, record):
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return super().write(record)


@pytest.mark.parametrize(("store_class", "clean"), [(_FailingOnceStore, True), (_FailingStore, False)])
def test_a_failed_write_made_good_leaves_the_shutdown_clean(tmp_path, store_class, clean):
    """A model whose failed write a later one replaced (here close()'s flush) is saved, and
    the shutdown is clean; a model whose last write failed makes it unclean."""
    checkpointer = Checkpointer(store_class(tmp_path))
    entry = _entry(_network())
    checkpointer.track(entry)
    checkpointer.save(entry)
    checkpointer.close()
    assert CheckpointStore(tmp_path).last_shutdown_clean is clean


def test_versions_steps_names_and_times_survive_a_restart(tmp_path):
    """After stop and a new server on the same directory, GetModel and GetState are identical
    (version included: SetState and train steps counted), and the next step is version + 1."""
    rng = np.random.default_rng(3)
    with running_server(state_dir=str(tmp_path)) as live:
        stub = live.stub
        first = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(), name="kept")).model
        second = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(optimizer=pb.OPTIMIZER_ADAM))).model
        stub.DeleteModel(pb.DeleteModelRequest(model=second.id))
        third = stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec((4, 5, 3)))).model
        for _ in range(4):
            x, y = make_batch(rng, 8, 4, 3)
            stub.TrainStep(pb.TrainStepRequest(model="kept", x=to_tensor(x), y=to_tensor(y)))
        state = stub.GetState(pb.GetStateRequest(model="kept")).state
        assert stub.SetState(pb.SetStateRequest(model="kept", state=state)).version == 5
        before = [snapshot(stub, model) for model in (first.id, third.id)]
    with running_server(state_dir=str(tmp_path)) as live:
        stub = live.stub
        assert [snapshot(stub, model) for model in (first.id, third.id)] == before
        assert [m.id for m in stub.ListModels(pb.ListModelsRequest()).models] == [first.id, third.id]
        x, y = make_batch(rng, 8, 4, 3)
        reply = stub.TrainStep(pb.TrainStepRequest(model="kept", x=to_tensor(x), y=to_tensor(y)))
        assert (reply.step, reply.version) == (5, 6)
        assert stub.Predict(pb.PredictRequest(model="kept", x=to_tensor(x))).version == 6
        assert stub.Evaluate(pb.EvaluateRequest(model="kept", x=to_tensor(x), y=to_tensor(y))).version == 6


def test_set_weights_is_checkpointed_before_its_reply(tmp_path):
    """SetWeights writes the model's checkpoint before answering (new weights, kept slots and
    step, its version), and a server restarted on the directory serves exactly that model."""
    rng = np.random.default_rng(8)
    with running_server(state_dir=str(tmp_path), checkpoint_every_seconds=0) as live:
        stub = live.stub
        model = stub.CreateModel(pb.CreateModelRequest(
            spec=classifier_spec(optimizer=pb.OPTIMIZER_ADAM), name="swapped")).model
        for _ in range(2):
            x, y = make_batch(rng, 8, 4, 3)
            stub.TrainStep(pb.TrainStepRequest(model="swapped", x=to_tensor(x), y=to_tensor(y)))
        slots = stub.GetState(pb.GetStateRequest(model="swapped")).state.slots
        weights = [(rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)),
                   (rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32))]
        reply = stub.SetWeights(pb.SetWeightsRequest(model="swapped", weights=[
            pb.LayerParameters(weights=to_tensor(w), biases=to_tensor(b)) for w, b in weights]))
        assert (reply.step, reply.version) == (2, 3)
        with np.load(tmp_path / f"{model.id}.npz", allow_pickle=False) as archive:
            record = decode({name: archive[name] for name in archive.files})
        assert (record["step"], record["version"]) == (2, 3)
        _assert_same({"weights": record["weights"], "slots": record["slots"]}, {
            "weights": weights,
            "slots": {slot.name: [(to_array(layer.weights), to_array(layer.biases)) for layer in slot.layers]
                      for slot in slots}})
        before = snapshot(stub, "swapped")
    with running_server(state_dir=str(tmp_path)) as live:
        assert snapshot(live.stub, "swapped") == before
        x, y = make_batch(rng, 8, 4, 3)
        reply = live.stub.TrainStep(pb.TrainStepRequest(model="swapped", x=to_tensor(x), y=to_tensor(y)))
        assert (reply.step, reply.version) == (3, 4)
