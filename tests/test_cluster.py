"""Cluster mode with real parts: etcd leases and fenced commits (service/cluster), `nnserve
serve` processes sharing one checkpoint directory, forwarding to a model's owner, and
failover after kill -9 and SIGTERM."""

import contextlib
import json
import signal

import grpc
import numpy as np
import pytest

from cluster_support import (assert_restored, cluster_keys, cluster_server, committed_version,
                             etcd, free_port, settled, trained_models, unavailable, wait_for)
from nnserve.clients import Client, NNServeError

pytest.importorskip("etcd3gw")

TTL = 3


def test_a_call_for_another_servers_model_is_forwarded_to_its_owner(tmp_path):
    """A model created on server A answers Predict, TrainStep, GetModel by name and the
    streams sent straight to server B, which forwards them: A's model counts every step."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        _, target_a = cluster_server(stack, tmp_path, endpoint, "a")
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b")
        client_a = stack.enter_context(Client(target_a))
        client_b = stack.enter_context(Client(target_b))
        (_, named) = trained_models(client_a, 2, 1, np.random.default_rng(0))
        via_b = client_b.get_model(named.name)
        assert via_b.id == named.id and via_b.step == 1
        x = np.zeros((4, 3), np.float32)
        via_b.train_step(x, np.zeros(4, np.int64))
        assert len(list(via_b.train_stream([(x, np.zeros(4, np.int64))] * 2))) == 2
        np.testing.assert_array_equal(via_b.predict(x), named.predict(x))
        assert named.refresh().step == 4


def test_a_killed_servers_models_resume_elsewhere_at_their_last_checkpoint(tmp_path):
    """After kill -9 of the server that owns them, each model answers from another server
    (once the lease expired) with the weights and step of its last committed checkpoint,
    bit-identical, and trains on from there."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        process_a, target_a = cluster_server(stack, tmp_path, endpoint, "a")
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b")
        with Client(target_a) as client_a:
            models = trained_models(client_a, 6, 3, np.random.default_rng(1))
            states = {model.id: model.get_state() for model in models}
        for model_id in states:  # checkpoints are committed behind the steps
            wait_for(lambda: committed_version(endpoint, model_id) == 3, "the commits")
        process_a.send_signal(signal.SIGKILL)
        process_a.wait()
        client_b = stack.enter_context(Client(target_b, timeout=5))
        for model_id, state in states.items():
            assert state["step"] == 3
            moved = assert_restored(client_b, model_id, state)
            moved.train_step(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
            assert moved.refresh().step == 4


def test_a_killed_servers_jobs_read_failed_interrupted_where_their_model_is_adopted(tmp_path):
    """The job records are shared: after kill -9 of the server running a job, the server
    that adopts the model reports that job FAILED, "interrupted at epoch E, step S: the server
    training it left the cluster ..." (its last recorded progress), and the model's finished
    job as it ended; deleting the model deletes the records."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        process_a, target_a = cluster_server(stack, tmp_path, endpoint, "a")
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b")
        rng = np.random.default_rng(3)
        x, y = rng.normal(size=(64, 3)).astype(np.float32), rng.integers(0, 2, size=64)
        with Client(target_a) as client_a:
            model = client_a.create_model([3, 5, 2], ["tanh", "softmax"], "cross_entropy")
            dataset = client_a.upload_dataset(x, y, route=model.id)
            finished = model.start_training(dataset, epochs=2, batch_size=8)
            finished.wait()
            running = model.start_training(dataset, epochs=1_000_000, batch_size=8)
            # Epoch ends are recorded at most once a second: wait for a record with progress.
            shared = tmp_path / "shared" / f"job.{model.id}.{running.id}.json"
            wait_for(lambda: shared.exists() and json.loads(shared.read_text())["epoch"] > 0,
                     "the running job's record to show progress")
        process_a.send_signal(signal.SIGKILL)
        process_a.wait()
        client_b = stack.enter_context(Client(target_b, timeout=5))
        settled(lambda: client_b.get_model(model.id))  # B adopts the model, and its jobs
        interrupted = client_b.get_training_job(running.id)
        assert interrupted.state == "failed"
        assert interrupted.error.startswith("interrupted at epoch ")
        assert "left the cluster" in interrupted.error and "adopted the model" in interrupted.error
        assert 0 < interrupted.step
        ended = client_b.get_training_job(finished.id)
        assert (ended.state, ended.step) == ("succeeded", 16)
        assert len(ended.result()["loss"]) == 2
        client_b.get_model(model.id).delete()
        assert not list((tmp_path / "shared").glob(f"job.{model.id}.*"))


def test_a_dataset_uploaded_to_one_server_trains_a_model_on_another_and_outlives_it(tmp_path):
    """Datasets are shared: one uploaded to A (no routing) is found by B when a job on B's
    model names it; deleted through A, B forgets its copy; another one still trains on B
    after A is killed."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        process_a, target_a = cluster_server(stack, tmp_path, endpoint, "a")
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b")
        client_a = stack.enter_context(Client(target_a))
        client_b = stack.enter_context(Client(target_b))
        rng = np.random.default_rng(4)
        x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, size=40)
        first = client_a.upload_dataset(x, y, name="shared-points")
        model = client_b.create_model([3, 5, 2], ["tanh", "softmax"], "cross_entropy")
        job = model.start_training(first, epochs=2, batch_size=10)
        assert len(job.wait()["loss"]) == 2 and model.refresh().step == 8
        assert client_b.get_dataset(first.id).sha256 == first.sha256
        client_a.delete_dataset(first.id)
        with pytest.raises(NNServeError) as gone:
            client_b.get_dataset(first.id)
        assert gone.value.code == grpc.StatusCode.NOT_FOUND
        second = client_a.upload_dataset(x[:20], y[:20])
        process_a.send_signal(signal.SIGKILL)
        process_a.wait()
        assert len(model.start_training(second, epochs=1, batch_size=10).wait()["loss"]) == 1
        assert model.refresh().step == 10
        client_b.delete_dataset(second.id)
        assert not list((tmp_path / "shared").glob("dataset.*"))


def test_sigterm_hands_every_model_off_with_nothing_lost(tmp_path):
    """A server stopped with SIGTERM checkpoints and releases its models: another server
    serves each one at once (no lease to wait for), with every acknowledged step and the
    same version."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        process_a, target_a = cluster_server(stack, tmp_path, endpoint, "a")
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b")
        with Client(target_a) as client_a:
            models = trained_models(client_a, 4, 5, np.random.default_rng(2))
            seen = {model.id: (model.refresh().step, model.version) for model in models}
        process_a.send_signal(signal.SIGTERM)
        assert process_a.wait(60) == 0
        with Client(target_b) as client_b:
            for model_id, (step, version) in seen.items():
                moved = client_b.get_model(model_id)
                assert (moved.step, moved.version) == (step, version) == (5, 5)


def test_a_stale_owners_checkpoint_commit_is_rejected_and_its_file_deleted(tmp_path):
    """Once an owner's lease is gone and another server claimed the model, the old owner's
    commit (its token) fails, its file is deleted and the pointer keeps the new owner's."""
    from nnserve.service.cluster.membership import Membership
    from nnserve.service.cluster.shared_store import DirectoryFiles, SharedCheckpointStore, StaleCheckpoint

    model_id = "ab" * 16
    record = {"id": model_id, "name": "", "spec": {"layers": [1, 1], "activations": ["identity"],
                                                   "loss": "mse"},
              "step": 0, "version": 0, "create_time_ns": 0, "update_time_ns": 0,
              "weights": [(np.zeros((1, 1), np.float32), np.zeros(1, np.float32))], "slots": {}}
    with etcd(tmp_path) as endpoint:
        old, new = Membership(endpoint, "old:1", TTL), Membership(endpoint, "new:1", TTL)
        old_store = SharedCheckpointStore(DirectoryFiles(tmp_path / "shared"), old)
        new_store = SharedCheckpointStore(DirectoryFiles(tmp_path / "shared"), new)
        try:
            old.claim_new(model_id, "")
            old_store.write(record)
            assert new.claim(model_id) == (False, "old:1")
            old._lease.revoke()  # as if it expired while the old owner was paused
            won, pointer = new.claim(model_id)
            assert won and pointer["file"] == f"{model_id}.{old.token(model_id)}.0.npz"
            new_store.adopted(model_id, "", pointer["file"])
            new_store.write({**record, "version": 1})
            with pytest.raises(StaleCheckpoint):
                old_store.write({**record, "version": 7})
            assert new.pointer(model_id)["file"] == f"{model_id}.{new.token(model_id)}.1.npz"
            assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [new.pointer(model_id)["file"]]
        finally:
            new.close()
            old._stopping.set()


def test_a_paused_owner_refuses_writes_and_its_model_never_moves_backwards(tmp_path):
    """An owner stopped (SIGSTOP) past its lease loses the model to another server, which
    trains on; resumed, the old owner refuses or forwards writes, and the model keeps the
    new owner's steps."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(etcd(tmp_path))
        process_a, target_a = cluster_server(stack, tmp_path, endpoint, "a")
        _, target_b = cluster_server(stack, tmp_path, endpoint, "b")
        x, y = np.zeros((2, 3), np.float32), np.zeros(2, np.int64)
        with Client(target_a) as client_a:
            (model,) = trained_models(client_a, 1, 2, np.random.default_rng(3))
        # Checkpoints are written behind the steps: stop A once version 2's is committed.
        wait_for(lambda: committed_version(endpoint, model.id) == 2, "the commit")
        process_a.send_signal(signal.SIGSTOP)
        client_b = stack.enter_context(Client(target_b, timeout=2))
        moved = settled(lambda: client_b.get_model(model.id))
        assert moved.step == 2
        for _ in range(3):
            moved.train_step(x, y)
        process_a.send_signal(signal.SIGCONT)
        with Client(target_a, timeout=5) as client_a:  # A refuses the write, or forwards it to B
            try:
                client_a.get_model(model.id).train_step(x, y)
                expected = 6
            except NNServeError as error:
                assert error.code == grpc.StatusCode.UNAVAILABLE, error
                expected = 5
            assert moved.refresh().step == expected
            assert settled(lambda: client_a.get_model(model.id).step) == expected


def test_an_etcd_restart_loses_and_duplicates_no_model(tmp_path):
    """With etcd stopped, the servers answer reads of their models while their leases are
    provably alive and refuse writes with UNAVAILABLE from when they cannot prove it; etcd
    started again on its data and port, they write again: each model has exactly one owner
    key (its owner's, whose lease etcd renewed when it came back), its step count equals its
    acknowledged steps, its committed checkpoint catches up with it, and a graceful stop
    hands it off as cleanly as without the outage."""
    # A longer lease than the other tests': reads must outlast the moment writes stop.
    ttl = 10
    client_port, peer_port = free_port(), free_port()
    x, y = np.zeros((2, 3), np.float32), np.zeros(2, np.int64)
    with contextlib.ExitStack() as stack:
        etcd_run = contextlib.ExitStack()
        endpoint = etcd_run.enter_context(etcd(tmp_path, client_port, peer_port))
        processes, targets = zip(*(cluster_server(stack, tmp_path, endpoint, name, ttl)
                                   for name in "ab"))
        clients = [stack.enter_context(Client(target, timeout=5)) for target in targets]
        models = [model for seed, client in enumerate(clients)
                  for model in trained_models(client, 3, 2, np.random.default_rng(seed), 3 * seed)]
        acknowledged = {model.id: 2 for model in models}
        owners = {key: value for key, value in cluster_keys(endpoint).items()
                  if key.endswith("/owner")}
        assert len(owners) == len(models)
        predictions = {model.id: model.predict(x) for model in models}

        etcd_run.close()  # etcd stops (SIGTERM) and its port closes
        for model in models:  # the leases are still provably alive: reads are served
            np.testing.assert_array_equal(model.predict(x), predictions[model.id])

        def refused(model):
            """Train one step; whether it was refused (else it counts as acknowledged)."""
            if unavailable(lambda: model.train_step(x, y)):
                return True
            acknowledged[model.id] += 1
            return False

        for model in models:
            wait_for(lambda: refused(model), f"model {model.id} to refuse writes", timeout=4 * ttl,
                     every=0.2)

        with etcd(tmp_path, client_port, peer_port) as endpoint:
            for model in models:
                wait_for(lambda: not refused(model), f"model {model.id} to accept writes again",
                         timeout=60, every=0.2)
            keys = cluster_keys(endpoint)
            assert {k: v for k, v in keys.items() if k.endswith("/owner")} == owners
            for model in models:
                assert model.refresh().step == acknowledged[model.id]
                version = model.version
                wait_for(lambda: json.loads(cluster_keys(endpoint)[
                    f"/nnserve/models/{model.id}/checkpoint"])["file"].endswith(f".{version}.npz"),
                    f"model {model.id}'s checkpoint of version {version}")
                # Either server answers for it (one owns it, the other forwards): no copy.
                for client in clients:
                    assert client.get_model(model.id).step == acknowledged[model.id]
            # The checkpoints that failed during the outage were written since: a graceful
            # stop still hands off cleanly, and B continues A's models at A's versions.
            seen = {model.id: (model.refresh().step, model.version) for model in models
                    if owners[f"/nnserve/models/{model.id}/owner"] == targets[0]}
            assert seen
            processes[0].send_signal(signal.SIGTERM)
            assert processes[0].wait(60) == 0
            for model_id, step_version in seen.items():
                moved = clients[1].get_model(model_id)
                assert (moved.step, moved.version) == step_version
            stack.close()  # B hands off and revokes its lease while etcd is up
