"""Datasets and training jobs across restarts of a real `nnserve serve` with --state-dir."""

import time

import numpy as np

from nnserve.clients import Client
from nnserve.model import Network
from nnserve.service.checkpoints import decode
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from process_support import ServeProcess
from service_support import make_batch, pb, to_tensor


def _upload(client, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=300)
    return x, y, client.upload_dataset(x, y, name=f"data-{seed}")


def _long_job(client, dataset):
    """A model and a job on it that runs far longer than any test waits."""
    model = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy", seed=1)
    job = model.start_training(dataset, epochs=1_000_000, batch_size=4)
    events = job.watch()
    while next(events).step < 50:  # it is running and has applied some steps
        pass
    events.close()
    return model, job


def _checkpointed_step(state_dir, model_id):
    """The step of the model's checkpoint file once one with 20 steps or more is on disk."""
    path = state_dir / f"{model_id}.npz"
    while True:  # each file is whole: checkpoints are renamed into place
        with np.load(path, allow_pickle=False) as archive:
            step = decode({name: archive[name] for name in archive.files})["step"]
        if step >= 20:
            return step
        time.sleep(0.01)


def test_sigterm_ends_a_running_job_interrupted_and_keeps_its_model_and_dataset(tmp_path):
    """SIGTERM stops a running job after the grace period as FAILED "interrupted at epoch E,
    step S", checkpoints its model at exactly that step, and after a restart the job reads the
    same, the model is at that step and the dataset is back bit for bit (same sha256)."""
    flags = ("--state-dir", str(tmp_path), "--checkpoint-every-seconds", "0", "--grace-period", "0.2")
    with ServeProcess(*flags) as server, Client(server.target) as client:
        x, y, dataset = _upload(client, 1)
        model, job = _long_job(client, dataset)
        assert server.terminate() == 0
        ended = [e for e in server.named("job_ended") if e["job_id"] == job.id]
        assert len(ended) == 1 and ended[0]["state"] == "failed"
        step = ended[0]["step"]
    with ServeProcess(*flags) as server, Client(server.target) as client:
        restored = client.get_training_job(job.id)
        assert restored.state == "failed"
        assert restored.error.startswith(f"interrupted at epoch {ended[0]['epoch']}, step {step}: "
                                         "the server shut down")
        assert client.get_model(model.id).step == step
        again = client.get_dataset("data-1")
        assert (again.id, again.rows, again.sha256) == (dataset.id, 300, dataset.sha256)
        # The restored dataset trains as the original: the same fit in-process and on it.
        fresh = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy", seed=2)
        network = Network([4, 8, 3], ["relu", "softmax"], "cross_entropy", seed=2)
        assert fresh.fit(again, epochs=2, batch_size=16) == network.fit(x, y, epochs=2, batch_size=16)


def test_sigkill_leaves_the_job_interrupted_and_the_model_at_its_last_checkpoint(tmp_path):
    """After SIGKILL mid-job a restart reports the job FAILED, "interrupted at epoch E, step S",
    with the model at its last checkpoint (no further than the job got) and the dataset back."""
    flags = ("--state-dir", str(tmp_path), "--checkpoint-every-steps", "20",
             "--checkpoint-every-seconds", "0")
    with ServeProcess(*flags) as server, Client(server.target) as client:
        _, _, dataset = _upload(client, 2)
        model, job = _long_job(client, dataset)
        saved = _checkpointed_step(tmp_path, model.id)
        server.kill()
    with ServeProcess(*flags) as server, Client(server.target) as client:
        restored = client.get_training_job(job.id)
        assert restored.state == "failed"
        assert "interrupted at epoch" in restored.error and "without shutting down" in restored.error
        step = client.get_model(model.id).step
        assert step >= saved >= 20  # the last checkpoint, no older than the one seen before the kill
        assert client.get_dataset(dataset.id).sha256 == dataset.sha256
        with server.channel() as channel:  # no job holds the model any more: TrainStep works
            x, y = make_batch(np.random.default_rng(0), 4, 4, 3)
            reply = pb_grpc.ModelServiceStub(channel).TrainStep(
                pb.TrainStepRequest(model=model.id, x=to_tensor(x), y=to_tensor(y)), timeout=10)
            assert reply.step == step + 1
