"""Durable state with real `nnserve serve` processes: SIGKILL, SIGTERM, random kills, damaged files.

Each trainer records the exact state (GetState) after every step it trained and the batch
of every step it sent. After a restart a model must be exactly one of those states: the
one its checkpoint holds. A step whose reply was lost to the kill (applied, then killed
before the client heard of it) is recomputed in-process from the state before it.
"""

import random
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from threadpoolctl import threadpool_limits

from nnserve.model import Network
from nnserve.service.checkpoints import VERSION_GAP_AFTER_CRASH
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.models import state_from_proto, state_to_proto
from process_support import ServeProcess
from service_support import classifier_spec, make_batch, pb, to_tensor

SERVING = health_pb2.HealthCheckResponse.SERVING

SPECS = {  # name -> (ModelSpec, n_in, n_classes, dtype): no slots, momentum in float64, Adam
    "plain": (classifier_spec((4, 8, 3)), 4, 3, np.float32),
    "momentum": (classifier_spec((5, 7, 4), dtype=pb.DATA_TYPE_FLOAT64, momentum=0.9, nesterov=True),
                 5, 4, np.float64),
    "adam": (classifier_spec((6, 16, 3), optimizer=pb.OPTIMIZER_ADAM), 6, 3, np.float32),
}


class Trainer(threading.Thread):
    """Trains one model step by step until stopped or the server goes away."""

    def __init__(self, channel, model, n_in, n_classes, dtype, seed, batch=8):
        super().__init__(daemon=True)
        self.stub = pb_grpc.ModelServiceStub(channel)
        self.model, self.n_in, self.n_classes, self.dtype, self.batch = model, n_in, n_classes, dtype, batch
        self.rng = np.random.default_rng(seed)
        self.states = {}  # step -> ModelState the server returned right after that step
        self.batches = {}  # step -> (x, y) sent to produce it
        self.stop = threading.Event()
        self.acked = None

    def record(self):
        state = self.stub.GetState(pb.GetStateRequest(model=self.model), timeout=10).state
        self.states[state.step] = state
        return state.step

    def run(self):
        try:
            self.acked = self.record()
            while not self.stop.is_set():
                x, y = self.next_batch()
                self.batches[self.acked + 1] = (x, y)
                reply = self.stub.TrainStep(pb.TrainStepRequest(model=self.model, x=to_tensor(x),
                                                                y=to_tensor(y)), timeout=10)
                self.acked = reply.step
                self.record()
        except grpc.RpcError:
            pass  # the server went away

    def next_batch(self):
        return make_batch(self.rng, self.batch, self.n_in, self.n_classes, self.dtype)

    def expected(self, step):
        """The state the server held at `step`: as observed, or recomputed from the one before."""
        if step in self.states:
            return self.states[step]
        before = self.states.get(step - 1)
        assert before is not None and step in self.batches, (
            f"{self.model}: restored step {step}, expected one of {sorted(self.states)} or the step after")
        state = state_from_proto(before)
        network = Network(**state["spec"])
        network.set_state(state)
        with threadpool_limits(1):
            network.train_step(*self.batches[step])
        self.states[step] = state_to_proto(network.get_state())
        return self.states[step]


def _health(channel):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def _create_models(channel):
    stub = pb_grpc.ModelServiceStub(channel)
    return {name: stub.CreateModel(pb.CreateModelRequest(spec=spec, name=name), timeout=30).model.id
            for name, (spec, *_) in SPECS.items()}


def _trainers(channel, seed):
    return [Trainer(channel, name, n_in, n_classes, dtype, seed + i)
            for i, (name, (_, n_in, n_classes, dtype)) in enumerate(SPECS.items())]


def _check_restored(channel, trainer, *, crashes=0):
    """Assert the model is exactly a state its trainer saw (or the unacknowledged next one); return its step.

    Only train steps changed it, so its version is its step plus one gap per crash that
    found its file without a newer save (versions handed out after the last checkpoint are
    never reused): none after a clean shutdown, at least one after a crash."""
    stub = pb_grpc.ModelServiceStub(channel)
    model = stub.GetModel(pb.GetModelRequest(model=trainer.model), timeout=10).model
    state = stub.GetState(pb.GetStateRequest(model=trainer.model), timeout=10).state
    assert model.step == state.step
    gaps, rest = divmod(model.version - state.step, VERSION_GAP_AFTER_CRASH)
    assert rest == 0 and (1 <= gaps <= crashes if crashes else gaps == 0), (model.version, state.step)
    assert state == trainer.expected(state.step), f"{trainer.model} differs at step {state.step}"
    return state.step


def _train_for(trainers, seconds):
    for trainer in trainers:
        trainer.start()
    time.sleep(seconds)


def test_sigkill_mid_training_restores_every_model_exactly_at_its_last_checkpoint(tmp_path):
    """After SIGKILL in the middle of training, a restart brings every model back bit-identical
    (weights, optimizer slots, step, version) to a checkpoint at most a few steps old."""
    flags = ("--state-dir", str(tmp_path), "--checkpoint-every-steps", "5",
             "--checkpoint-every-seconds", "0")
    with ServeProcess(*flags) as server, server.channel() as channel:
        ids = _create_models(channel)
        trainers = _trainers(channel, seed=1)
        _train_for(trainers, 1.5)
        assert all(t.acked >= 20 for t in trainers), [t.acked for t in trainers]
        server.kill()
        for trainer in trainers:
            trainer.join(timeout=10)
    with ServeProcess(*flags) as server, server.channel() as channel:
        assert _health(channel) == SERVING
        restored = server.named("models_restored")
        assert restored and restored[0]["models"] == 3 and not server.named("checkpoint_corrupt")
        listed = pb_grpc.ModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10).models
        assert {(m.name, m.id) for m in listed} == {(name, ids[name]) for name in SPECS}
        for trainer in trainers:
            step = _check_restored(channel, trainer, crashes=1)
            # Checkpoints every 5 steps, written in the background (coalesced while it lags).
            assert 5 <= step <= trainer.acked + 1, (trainer.model, step, trainer.acked)


def test_sigterm_loses_nothing_and_training_continues_bit_exactly(tmp_path):
    """SIGTERM during training: every acknowledged step is on disk, and after a restart the next
    step gives exactly what the same step gives on the original model's state."""
    flags = ("--state-dir", str(tmp_path), "--checkpoint-every-seconds", "0")  # only shutdown writes
    with ServeProcess(*flags) as server, server.channel() as channel:
        _create_models(channel)
        trainers = _trainers(channel, seed=2)
        _train_for(trainers, 1.0)
        assert server.terminate() == 0
        for trainer in trainers:
            trainer.join(timeout=10)
        assert server.named("checkpoints_flushed")[0]["models"] == 3
    with ServeProcess(*flags) as server, server.channel() as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        for trainer in trainers:
            assert _check_restored(channel, trainer) == trainer.acked
            # One more step on the restored model equals the step computed in-process.
            x, y = trainer.next_batch()
            trainer.batches[trainer.acked + 1] = (x, y)
            reply = stub.TrainStep(pb.TrainStepRequest(model=trainer.model, x=to_tensor(x), y=to_tensor(y)),
                                   timeout=10)
            assert (reply.step, reply.version) == (trainer.acked + 1, trainer.acked + 1)
            state = stub.GetState(pb.GetStateRequest(model=trainer.model), timeout=10).state
            assert state == trainer.expected(trainer.acked + 1)


def test_random_kills_never_load_damaged_state(tmp_path):
    """Rounds of training, creating and deleting, each ended by SIGKILL at a random moment
    (often during a checkpoint write of a 3 MB model): every restart restores exactly a state
    the clients saw, every acknowledged create and delete, and never a damaged file."""
    rng = random.Random(6)
    big = classifier_spec((256, 512, 10), dtype=pb.DATA_TYPE_FLOAT64, optimizer=pb.OPTIMIZER_ADAM)
    flags = ("--state-dir", str(tmp_path), "--checkpoint-every-steps", "2",
             "--checkpoint-every-seconds", "0.02")
    alive, deleted, trainers = set(), set(), []
    deadline = time.monotonic() + 25
    rounds = interrupted_writes = 0
    while rounds < 8 and (rounds < 3 or time.monotonic() < deadline):
        with ServeProcess(*flags) as server, server.channel() as channel:
            stub = pb_grpc.ModelServiceStub(channel)
            assert _health(channel) == SERVING
            assert not server.named("checkpoint_corrupt") and not server.named("checkpoint_not_restored")
            interrupted_writes += len(server.named("checkpoint_leftover_removed"))
            names = {m.name for m in stub.ListModels(pb.ListModelsRequest(page_size=1000), timeout=10).models}
            assert alive <= names and not (deleted & names), (alive, deleted, names)
            if rounds == 0:
                _create_models(channel)
                stub.CreateModel(pb.CreateModelRequest(spec=big, name="big"), timeout=30)
            for trainer in trainers:  # the state after the last round's kill
                restored = _check_restored(channel, trainer, crashes=rounds)
                trainer.states = {s: v for s, v in trainer.states.items() if s <= restored}
                trainer.batches = {}
            # Acknowledged lifecycle changes are durable before the reply.
            created = f"churn-{rounds}"
            stub.CreateModel(pb.CreateModelRequest(spec=SPECS["plain"][0], name=created), timeout=30)
            alive.add(created)
            if rounds:
                stub.DeleteModel(pb.DeleteModelRequest(model=f"churn-{rounds - 1}"), timeout=30)
                alive.discard(f"churn-{rounds - 1}")
                deleted.add(f"churn-{rounds - 1}")
            fresh = _trainers(channel, seed=100 + rounds) + [Trainer(channel, "big", 256, 10, np.float64, 99 + rounds,
                                                               batch=4)]
            for old, new in zip(trainers, fresh):  # keep what is known of each model
                new.states, new.batches = old.states, old.batches
            trainers = fresh
            _train_for(trainers, rng.uniform(0.1, 0.8))
            server.kill()
            for trainer in trainers:
                trainer.join(timeout=10)
        rounds += 1
    with ServeProcess(*flags) as server, server.channel() as channel:
        assert not server.named("checkpoint_corrupt")
        for trainer in trainers:
            _check_restored(channel, trainer, crashes=rounds)
        assert server.terminate() == 0
    assert rounds >= 3
    assert interrupted_writes >= 1  # some kill did land in the middle of a write


# -- damaged files -------------------------------------------------------------------------

def _damage(tmp_path, ids):
    """Damage three checkpoints three ways; return {file name: how}."""
    truncated = tmp_path / f"{ids['plain']}.npz"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    altered = tmp_path / f"{ids['momentum']}.npz"
    with np.load(altered, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    members["weights.0.W"] = members["weights.0.W"] + 1.0  # the stored sha256 is now stale
    with open(altered, "wb") as file:
        np.savez(file, **members)

    pickled = tmp_path / f"{ids['adam']}.npz"
    with np.load(pickled, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    members["meta"] = np.array([{"loading me": "runs code"}], dtype=object)
    with open(pickled, "wb") as file:
        np.savez(file, **members)
    return {truncated.name: "truncated", altered.name: "altered", pickled.name: "pickled"}


def test_damaged_checkpoints_are_reported_by_name_and_skipped(tmp_path):
    """A truncated file, one whose content no longer matches its checksum and one holding a
    pickled object are each logged by file name and set aside as *.corrupt; the intact model
    loads and the server serves."""
    flags = ("--state-dir", str(tmp_path))
    with ServeProcess(*flags) as server, server.channel() as channel:
        ids = _create_models(channel)
        stub = pb_grpc.ModelServiceStub(channel)
        intact = stub.CreateModel(pb.CreateModelRequest(spec=SPECS["plain"][0], name="intact"), timeout=30).model
        x, y = make_batch(np.random.default_rng(0), 8, 4, 3)
        stub.TrainStep(pb.TrainStepRequest(model="intact", x=to_tensor(x), y=to_tensor(y)), timeout=10)
        before = stub.GetState(pb.GetStateRequest(model="intact"), timeout=10).state
        assert server.terminate() == 0
    damaged = _damage(tmp_path, ids)
    with ServeProcess(*flags) as server, server.channel() as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        assert _health(channel) == SERVING
        assert {e["file"] for e in server.named("checkpoint_corrupt")} == set(damaged)
        assert [m.id for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models] == [intact.id]
        assert stub.GetState(pb.GetStateRequest(model="intact"), timeout=10).state == before
        assert stub.GetModel(pb.GetModelRequest(model="intact"), timeout=10).model.version == 1
        server.terminate()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([".clean-shutdown", ".lock", f"{intact.id}.npz"]
                           + [name + ".corrupt" for name in damaged])


def test_a_second_server_on_the_same_state_directory_exits_1(tmp_path):
    """Two servers never share a state directory: the second says so and exits 1."""
    with ServeProcess("--state-dir", str(tmp_path)) as first:
        second = ServeProcess("--state-dir", str(tmp_path), wait=False)
        assert second.finish(timeout=60) == 1
        failed = second.named("start_failed")
        assert failed and "locked by another process" in failed[0]["message"]
        assert first.process.poll() is None
