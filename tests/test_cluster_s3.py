"""Cluster mode with its checkpoints in S3-compatible object storage (--state-dir
s3://bucket/prefix): moto's S3 server (no S3 server is packaged in Debian), etcd and two
`nnserve serve` processes; after kill -9 of the owner the other server restores each model
from the bucket, bit-identical, and a committed object replaces the one before it."""

import contextlib
import json
import shutil
import signal

import numpy as np
import pytest

from cluster_support import (_process, assert_restored, cluster_keys, cluster_server,
                             committed_version, etcd, free_port, trained_models, wait_for)
from nnserve.clients import Client

boto3 = pytest.importorskip("boto3")
pytest.importorskip("etcd3gw")

TTL = 3
BUCKET = "checkpoints"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(directory):
    """Yield the endpoint URL of moto's S3 server, with BUCKET created."""
    server = shutil.which("moto_server")
    if server is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    with _process([server, "-H", "127.0.0.1", "-p", str(port)], port, directory / "s3.log"):
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, **{
            "aws_access_key_id": "test", "aws_secret_access_key": "test",
            "region_name": "us-east-1"}).create_bucket(Bucket=BUCKET)
        yield endpoint


def objects(endpoint):
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ()))


def test_a_killed_servers_models_resume_from_the_bucket(tmp_path, monkeypatch):
    """Models trained on A resume on B from their last committed objects after kill -9 of
    A; the bucket holds exactly one object per model, the one etcd points at, and the
    dataset uploaded to A, which a job on B trains with."""
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server(tmp_path))
        for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3}.items():
            monkeypatch.setenv(name, value)  # the servers' boto3 reads them, as in a pod
        endpoint = stack.enter_context(etcd(tmp_path))
        processes, targets = zip(*(cluster_server(stack, tmp_path, endpoint, name, TTL,
                                                  state_dir=f"s3://{BUCKET}/cluster")
                                   for name in "ab"))
        with Client(targets[0]) as client_a:
            models = trained_models(client_a, 3, 3, np.random.default_rng(5))
            states = {model.id: model.get_state() for model in models}
        for model_id in states:
            wait_for(lambda: committed_version(endpoint, model_id) == 3, "the commits")
        assert objects(s3) == sorted(f"cluster/{model_id}.{key}" for model_id in states
                                     for key in [_pointer_suffix(endpoint, model_id)])
        with Client(targets[0]) as client_a:
            dataset = client_a.upload_dataset(np.ones((8, 3), np.float32), np.zeros(8, np.int64))
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait()
        client_b = stack.enter_context(Client(targets[1], timeout=5))
        for model_id, state in states.items():
            assert state["step"] == 3
            moved = assert_restored(client_b, model_id, state)
            moved.train_step(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
            version = moved.refresh().version  # past the gap a crash leaves (docs/cluster.md)
            wait_for(lambda: committed_version(endpoint, model_id) == version, "B's commit")
        wait_for(lambda: len(objects(s3)) == len(states) + 1, "the replaced objects to go")
        assert f"cluster/dataset.{dataset.id}.npz" in objects(s3)
        job = moved.start_training(dataset, epochs=1, batch_size=4)
        assert len(job.wait()["loss"]) == 1
        assert f"cluster/job.{moved.id}.{job.id}.json" in objects(s3)


def _pointer_suffix(endpoint, model_id):
    """<token>.<version>.npz of the file a model's etcd pointer names."""
    file = json.loads(cluster_keys(endpoint)[f"/nnserve/models/{model_id}/checkpoint"])["file"]
    return file.split(".", 1)[1]
