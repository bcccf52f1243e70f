"""Training jobs against a real server: bit-exact against Network.fit, watched, cancelled,
refused, queued, counted; and the SDK's fit on top of them.

No test waits on the clock: a job meant to run "long" has a million epochs and is always
cancelled (or ended by a deletion) by the test itself, and every wait is a watch stream
that ends with the job.
"""

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from client_support import live_server
from job_support import (classification_data, events_to_end, history_of, job_request, upload,
                         wait_ended)
from metrics_support import scrape, value
from nnserve.clients import Client, NNServeError
from nnserve.clients import jobs as sdk_jobs
from nnserve.model import Network, NonFiniteStep
from nnserve.model.fit import fit_plan
from nnserve.v1.models import spec_from_proto, state_to_proto
from service_support import call_error, classifier_spec, pb, snapshot, to_array, to_tensor

LONG = 1_000_000  # epochs of a job that only ends when the test ends it
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    pb.TRAINING_JOB_STATE_QUEUED, pb.TRAINING_JOB_STATE_RUNNING, pb.TRAINING_JOB_STATE_SUCCEEDED,
    pb.TRAINING_JOB_STATE_FAILED, pb.TRAINING_JOB_STATE_CANCELLED)
CURRENT, STARTED, PROGRESS, EPOCH_END, ENDED = (
    pb.TRAINING_JOB_EVENT_KIND_CURRENT, pb.TRAINING_JOB_EVENT_KIND_STARTED,
    pb.TRAINING_JOB_EVENT_KIND_PROGRESS, pb.TRAINING_JOB_EVENT_KIND_EPOCH_END,
    pb.TRAINING_JOB_EVENT_KIND_ENDED)
X, Y = classification_data(7, 64)  # 8 batches of 8 per epoch


@pytest.fixture(scope="module")
def live():
    with live_server() as running:
        yield running


@pytest.fixture(scope="module")
def single_worker():
    """A server with --job-workers 1: a second job waits QUEUED while the first runs."""
    with live_server(job_workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(live):
    """X, Y uploaded to the module's server."""
    return upload(live.stub, X, Y, name="train64")


def _create_model(stub, **spec_fields):
    spec = classifier_spec(seed=3, learning_rate=0.05, **spec_fields)
    return stub.CreateModel(pb.CreateModelRequest(spec=spec), timeout=30).model


def _network_like(stub, model_id):
    """An in-process Network built from the server model's spec (the same initial weights)."""
    return Network(**spec_from_proto(stub.GetModel(pb.GetModelRequest(model=model_id), timeout=30).model.spec))


def _state_bytes(stub, model_id):
    return stub.GetState(pb.GetStateRequest(model=model_id), timeout=30).state.SerializeToString()


def _start(stub, model, dataset_id, **fields):
    return stub.CreateTrainingJob(job_request(model, dataset_id, **fields), timeout=30).job


def _watch_until(stub, job_id, predicate):
    """The first event of a watch that satisfies `predicate`; the watch is then closed."""
    stream = stub.WatchTrainingJob(pb.WatchTrainingJobRequest(job=job_id), timeout=60)
    try:
        for event in stream:
            if predicate(event):
                return event
            assert event.kind != ENDED, event
    finally:
        stream.cancel()
    raise AssertionError("the watch ended without the awaited event")


def _running_long_job(stub, model, dataset_id, **fields):
    """A job of LONG epochs that has applied at least one step (progress after every step)."""
    job = _start(stub, model, dataset_id, epochs=LONG, progress_every_steps=1, **fields)
    _watch_until(stub, job.id, lambda event: event.job.state == RUNNING and event.job.step >= 1)
    return job


def _cancel(stub, job_id):
    return stub.CancelTrainingJob(pb.CancelTrainingJobRequest(job=job_id), timeout=60).job


def _replay(network, x, y, steps, *, versions=(), probe=None, **fit_options):
    """Run the first `steps` train steps of Network.fit's plan on `network`; return
    {version: (predict(probe x), evaluate(probe x, probe y), state proto bytes)} at the
    given versions."""
    seen = {}

    def record():
        if network.version in versions:
            seen[network.version] = (network.predict(probe[0]), network.evaluate(*probe),
                                     state_to_proto(network.get_state()).SerializeToString())

    record()
    plan = fit_plan(x, y, progress=False, **fit_options)
    call = next(plan)
    while network.step < steps:
        name, *args = call
        result = getattr(network, name)(*args)
        if name == "train_step":
            record()
        call = plan.send(result)
    plan.close()
    return seen


# -- bit for bit ----------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer, hyper, shuffle, validate", [
    pytest.param(pb.OPTIMIZER_SGD, {"momentum": 0.9}, True, True, id="sgd-momentum-shuffled-validated"),
    pytest.param(pb.OPTIMIZER_ADAM, {}, True, False, id="adam-shuffled"),
    pytest.param(pb.OPTIMIZER_SGD, {"momentum": 0.9, "nesterov": True}, False, False, id="sgd-nesterov-in-order"),
    pytest.param(pb.OPTIMIZER_ADAM, {"weight_decay": 1e-3}, False, True, id="adam-in-order-validated"),
])
def test_a_job_equals_network_fit_bit_for_bit(live, optimizer, hyper, shuffle, validate):
    """A job over 45 rows (the last batch of each epoch smaller) ends SUCCEEDED with the
    history (==) and the weights, optimizer slots and step (bit for bit) of an in-process
    Network.fit with the same arguments."""
    x, y = classification_data(11, 45)
    x_val, y_val = classification_data(12, 9)
    train = upload(live.stub, x, y)
    validation = upload(live.stub, x_val, y_val) if validate else None
    model = _create_model(live.stub, optimizer=optimizer, **hyper)
    network = _network_like(live.stub, model.id)
    options = dict(epochs=3, batch_size=8, shuffle=shuffle, seed=5)
    job = _start(live.stub, model.id, train.id, validation_dataset=validation.id if validate else "", **options)
    assert (job.total_steps, job.shuffle, job.seed) == (18, shuffle, 5)
    ended = wait_ended(live.stub, job.id)
    expected = network.fit(x, y, validation_data=(x_val, y_val) if validate else None, **options)
    assert ended.state == SUCCEEDED and ended.error == "" and (ended.epoch, ended.step) == (3, 18)
    assert history_of(ended) == expected
    assert set(expected) == ({"loss", "val_loss", "val_accuracy"} if validate else {"loss"})
    assert _state_bytes(live.stub, model.id) == state_to_proto(network.get_state()).SerializeToString()
    described = live.stub.GetModel(pb.GetModelRequest(model=model.id), timeout=30).model
    assert (described.step, described.version) == (network.step, network.version) == (18, 18)
    assert live.stub.GetTrainingJob(pb.GetTrainingJobRequest(job=job.id), timeout=30).job == ended
    for stored in (train, validation):
        if stored is not None:
            live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=stored.id), timeout=30)


def test_a_job_of_zero_epochs_succeeds_without_a_step(live, dataset):
    """epochs 0 is allowed: the job SUCCEEDS with no step, an empty history and the model as it was."""
    model = _create_model(live.stub)
    before = snapshot(live.stub, model.id)
    ended = wait_ended(live.stub, _start(live.stub, model.id, dataset.id, epochs=0).id)
    assert (ended.state, ended.step, ended.total_steps, len(ended.history)) == (SUCCEEDED, 0, 0, 0)
    assert snapshot(live.stub, model.id) == before


# -- watching -------------------------------------------------------------------------------

def test_two_watchers_see_the_same_events_in_order(single_worker):
    """Two watchers attached while the job is QUEUED each see CURRENT, STARTED, then progress
    (every 5 steps) and epoch-end (every 8) messages in step order, which together carry
    every epoch's metrics exactly once, then ENDED with the whole history; events that came
    faster than a watcher's message interval share a message. Each event's version is the
    model's after the job's steps; a third watcher that leaves early changes nothing."""
    stub = single_worker.stub
    train = upload(stub, X, Y)
    blocker = _running_long_job(stub, _create_model(stub).id, train.id)
    model = _create_model(stub)
    job = _start(stub, model.id, train.id, epochs=4, progress_every_steps=5)
    watches = [stub.WatchTrainingJob(pb.WatchTrainingJobRequest(job=job.id), timeout=60) for _ in range(3)]
    firsts = [next(watch) for watch in watches]  # each watcher is attached once it has its first event
    watches[2].cancel()
    _cancel(stub, blocker.id)
    seen = [[first] + list(watch) for first, watch in zip(firsts[:2], watches[:2])]

    histories = []
    for events in seen:
        assert [e.kind for e in events[:2]] == [CURRENT, STARTED] and events[-1].kind == ENDED
        assert (events[0].job.state, events[0].job.step) == (QUEUED, 0)
        assert (events[-1].job.state, events[-1].job.step, events[-1].job.epoch) == (SUCCEEDED, 32, 4)
        middle = events[2:-1]
        assert {e.kind for e in middle} <= {PROGRESS, EPOCH_END}
        steps = [e.job.step for e in middle]
        assert steps == sorted(steps) and all(step % 5 == 0 or step % 8 == 0 for step in steps)
        assert all(e.job.epoch == e.job.step // 8 for e in middle if e.kind == EPOCH_END)
        assert all(e.version == e.job.step for e in events)
        epochs = [metrics for e in middle if e.kind == EPOCH_END for metrics in e.job.history]
        assert len(epochs) == 4 and list(events[-1].job.history) == epochs
        histories.append(history_of(events[-1].job))
    assert histories[0] == histories[1]
    assert wait_ended(stub, job.id).step == 32


def test_watching_an_ended_job_gives_one_ended_event(live, dataset):
    """A watch of a finished job sends one ENDED event with the whole history, then ends OK."""
    job = _start(live.stub, _create_model(live.stub).id, dataset.id, epochs=2)
    wait_ended(live.stub, job.id)
    events = events_to_end(live.stub, job.id)
    assert [(e.kind, e.job.state, len(e.job.history)) for e in events] == [(ENDED, SUCCEEDED, 2)]


# -- cancel, and reading a model while its job runs ----------------------------------------

def test_cancel_stops_the_job_between_steps_and_the_model_keeps_them(live, dataset):
    """CancelTrainingJob on a running job returns it CANCELLED; the model's step and version
    equal the job's step, and its state equals Network.fit's after that many steps, bit for
    bit (no half-applied step); cancelling again returns the job unchanged."""
    model = _create_model(live.stub, optimizer=pb.OPTIMIZER_ADAM)
    network = _network_like(live.stub, model.id)
    job = _running_long_job(live.stub, model.id, dataset.id, seed=9)
    cancelled = _cancel(live.stub, job.id)
    assert cancelled.state == CANCELLED and cancelled.error == "cancelled by CancelTrainingJob"
    assert cancelled.step >= 1 and cancelled.HasField("end_time")
    described = live.stub.GetModel(pb.GetModelRequest(model=model.id), timeout=30).model
    assert described.step == described.version == cancelled.step
    _replay(network, X, Y, cancelled.step, epochs=LONG, batch_size=8, seed=9)
    assert _state_bytes(live.stub, model.id) == state_to_proto(network.get_state()).SerializeToString()
    assert _cancel(live.stub, job.id) == cancelled


def test_reads_during_a_job_see_whole_steps_in_order(live, dataset):
    """While a job runs, Predict and Evaluate replies carry non-decreasing versions and equal,
    bit for bit, an in-process Network's results after that many of the same steps; GetState
    is the state of the version it names."""
    model = _create_model(live.stub)
    network = _network_like(live.stub, model.id)
    probe = (X[:5], Y[:5])
    job = _running_long_job(live.stub, model.id, dataset.id)
    predictions, evaluations, versions = [], [], []
    for _ in range(20):
        reply = live.stub.Predict(pb.PredictRequest(model=model.id, x=to_tensor(probe[0])), timeout=30)
        predictions.append((reply.version, to_array(reply.outputs)))
        versions.append(reply.version)
        reply = live.stub.Evaluate(pb.EvaluateRequest(model=model.id, x=to_tensor(probe[0]),
                                                      y=to_tensor(probe[1])), timeout=30)
        evaluations.append((reply.version, reply.loss, reply.accuracy))
        versions.append(reply.version)
    state = live.stub.GetState(pb.GetStateRequest(model=model.id), timeout=30)
    versions.append(state.version)
    assert live.stub.GetTrainingJob(pb.GetTrainingJobRequest(job=job.id), timeout=30).job.state == RUNNING
    steps = _cancel(live.stub, job.id).step

    assert versions == sorted(versions) and versions[0] >= 1 and versions[-1] <= steps
    expected = _replay(network, X, Y, steps, versions=set(versions), probe=probe,
                       epochs=LONG, batch_size=8, seed=0)
    for version, outputs in predictions:
        assert outputs.tobytes() == expected[version][0].tobytes(), version
    for version, loss, accuracy in evaluations:
        assert (loss, accuracy) == (expected[version][1]["loss"], expected[version][1]["accuracy"]), version
    assert state.state.SerializeToString() == expected[state.version][2]


def test_writes_to_a_model_in_training_are_refused_naming_the_job(live, dataset):
    """TrainStep, SetState and SetWeights on a model whose job runs are FAILED_PRECONDITION
    naming the job; after it is cancelled they work again."""
    model = _create_model(live.stub)
    job = _running_long_job(live.stub, model.id, dataset.id)
    state = live.stub.GetState(pb.GetStateRequest(model=model.id), timeout=30).state
    writes = [
        (live.stub.TrainStep, pb.TrainStepRequest(model=model.id, x=to_tensor(X[:4]), y=to_tensor(Y[:4]))),
        (live.stub.SetState, pb.SetStateRequest(model=model.id, state=state)),
        (live.stub.SetWeights, pb.SetWeightsRequest(model=model.id, weights=state.weights)),
    ]
    for method, request in writes:
        details = call_error(method, request, grpc.StatusCode.FAILED_PRECONDITION)
        assert f"training job {job.id}" in details and "CancelTrainingJob" in details
    steps = _cancel(live.stub, job.id).step
    assert live.stub.GetModel(pb.GetModelRequest(model=model.id), timeout=30).model.version == steps
    for method, request in writes:
        method(request, timeout=30)
    assert live.stub.GetModel(pb.GetModelRequest(model=model.id), timeout=30).model.version == steps + 3


def test_a_second_job_on_a_model_is_refused_naming_the_first(live, dataset):
    """While a model has an unfinished job, CreateTrainingJob on it is FAILED_PRECONDITION
    naming that job, and no job is added; once it ended a new one is accepted."""
    model = _create_model(live.stub)
    job = _running_long_job(live.stub, model.id, dataset.id)
    details = call_error(live.stub.CreateTrainingJob, job_request(model.id, dataset.id),
                         grpc.StatusCode.FAILED_PRECONDITION)
    assert f"training job {job.id}" in details
    listed = live.stub.ListTrainingJobs(pb.ListTrainingJobsRequest(model=model.id), timeout=30).jobs
    assert [j.id for j in listed] == [job.id]
    _cancel(live.stub, job.id)
    second = _start(live.stub, model.id, dataset.id)
    assert wait_ended(live.stub, second.id).state == SUCCEEDED


# -- a job's end by failure or deletion -----------------------------------------------------

def test_a_step_the_guard_refuses_fails_the_job_and_leaves_the_model_unchanged(live):
    """With learning_rate 3e38 in float32 and inputs near 1e4 the first step is refused: the
    job ends FAILED with 'epoch 1, step 1: ' and the guard's message (as Network.fit raises
    it), and the model is exactly as before."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 4)) * 1e4).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int64)
    train = upload(live.stub, x, y)
    model = live.stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(learning_rate=3e38)),
                                  timeout=30).model
    network = _network_like(live.stub, model.id)
    with pytest.raises(NonFiniteStep) as refusal:
        network.fit(x, y, epochs=2, batch_size=16)
    assert "would make parameters or optimizer state non-finite" in str(refusal.value)
    before = snapshot(live.stub, model.id)
    ended = wait_ended(live.stub, _start(live.stub, model.id, train.id, epochs=2, batch_size=16).id)
    assert ended.state == FAILED and ended.error == f"epoch 1, step 1: {refusal.value}"
    assert (ended.step, ended.epoch) == (0, 0)
    assert snapshot(live.stub, model.id) == before
    live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=train.id), timeout=30)


def test_deleting_the_model_cancels_its_job(live, dataset):
    """DeleteModel on a model in training ends its job CANCELLED with an error naming the
    deleted model."""
    model = _create_model(live.stub)
    job = _running_long_job(live.stub, model.id, dataset.id)
    live.stub.DeleteModel(pb.DeleteModelRequest(model=model.id), timeout=30)
    ended = wait_ended(live.stub, job.id)
    assert ended.state == CANCELLED and ended.error == f"cancelled: model {model.id} was deleted"


@pytest.mark.parametrize("role", ["dataset", "validation_dataset"])
def test_deleting_a_dataset_cancels_the_jobs_that_use_it(live, role):
    """DeleteDataset of a job's training (or validation) dataset ends the job CANCELLED with an
    error naming the dataset; the model keeps the job's steps."""
    deleted = upload(live.stub, X, Y)
    other = upload(live.stub, X[:8], Y[:8])
    train, validation = (deleted, other) if role == "dataset" else (other, deleted)
    model = _create_model(live.stub)
    job = _running_long_job(live.stub, model.id, train.id, validation_dataset=validation.id)
    live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=deleted.id), timeout=30)
    ended = wait_ended(live.stub, job.id)
    assert ended.state == CANCELLED and ended.error == f"cancelled: dataset {deleted.id} was deleted"
    assert live.stub.GetModel(pb.GetModelRequest(model=model.id), timeout=30).model.step == ended.step
    live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=other.id), timeout=30)


# -- refused jobs ---------------------------------------------------------------------------

@pytest.mark.parametrize("x, y, role", [
    pytest.param(X, np.where(np.arange(64) == 10, 3, Y), "dataset", id="class-id-out-of-range"),
    pytest.param(X, np.full((64, 2), 0.5, np.float32), "dataset", id="y-of-another-width"),
    pytest.param(X.astype(np.float64), Y, "dataset", id="float64-x-for-a-float32-model"),
    pytest.param(X[:, :3], Y, "validation_dataset", id="validation-x-of-another-width"),
])
def test_a_dataset_that_does_not_fit_the_model_is_refused_with_train_steps_message(live, dataset, x, y, role):
    """CreateTrainingJob with a dataset whose inputs or targets do not fit the model is
    INVALID_ARGUMENT with the message TrainStep gives for the same rows, naming the dataset;
    no job is created and the model is unchanged."""
    model = _create_model(live.stub)
    bad = upload(live.stub, x, y)
    before = snapshot(live.stub, model.id)
    train_step = call_error(live.stub.TrainStep, pb.TrainStepRequest(
        model=model.id, x=to_tensor(x), y=to_tensor(y)), grpc.StatusCode.INVALID_ARGUMENT)
    request = (job_request(model.id, bad.id) if role == "dataset"
               else job_request(model.id, dataset.id, validation_dataset=bad.id))
    details = call_error(live.stub.CreateTrainingJob, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert f"{role} {bad.id}: {train_step}" in details
    assert live.stub.ListTrainingJobs(pb.ListTrainingJobsRequest(model=model.id), timeout=30).jobs == []
    assert snapshot(live.stub, model.id) == before
    live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=bad.id), timeout=30)


def test_max_jobs_is_resource_exhausted_naming_the_flag():
    """With --max-jobs 1, a job on another model while one is unfinished is RESOURCE_EXHAUSTED
    naming --max-jobs; once the first ended it is accepted."""
    with live_server(max_jobs=1) as server:
        train = upload(server.stub, X, Y)
        first = _running_long_job(server.stub, _create_model(server.stub).id, train.id)
        other = _create_model(server.stub).id
        details = call_error(server.stub.CreateTrainingJob, job_request(other, train.id),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "--max-jobs" in details and "expected at most 1 unfinished jobs" in details
        _cancel(server.stub, first.id)
        assert wait_ended(server.stub, _start(server.stub, other, train.id).id).state == SUCCEEDED


def test_with_one_worker_a_second_job_waits_queued_until_the_first_ends(single_worker):
    """With --job-workers 1, jobs on other models wait QUEUED (no start time, their models
    untouched) while the first runs; a queued job cancelled never starts; once the first is
    cancelled the next runs to SUCCEEDED, starting after the first ended."""
    stub = single_worker.stub
    train = upload(stub, X, Y)
    first = _running_long_job(stub, _create_model(stub).id, train.id)
    waiting, dropped = _create_model(stub), _create_model(stub)
    queued = _start(stub, waiting.id, train.id, epochs=2)
    never = _start(stub, dropped.id, train.id, epochs=2)
    for job in (queued, never):
        now = stub.GetTrainingJob(pb.GetTrainingJobRequest(job=job.id), timeout=30).job
        assert now.state == QUEUED and not now.HasField("start_time") and now.step == 0
    assert stub.GetModel(pb.GetModelRequest(model=waiting.id), timeout=30).model.version == 0
    cancelled = _cancel(stub, never.id)
    assert cancelled.state == CANCELLED and not cancelled.HasField("start_time") and cancelled.step == 0
    first_ended = _cancel(stub, first.id)
    ended = wait_ended(stub, queued.id)
    assert ended.state == SUCCEEDED and ended.step == 16
    assert ended.start_time.ToNanoseconds() >= first_ended.end_time.ToNanoseconds()
    assert stub.GetModel(pb.GetModelRequest(model=dropped.id), timeout=30).model.version == 0
    listed = stub.ListTrainingJobs(pb.ListTrainingJobsRequest(model=waiting.id), timeout=30).jobs
    assert [(j.id, j.state) for j in listed] == [(queued.id, SUCCEEDED)]


# -- metrics --------------------------------------------------------------------------------

def test_a_jobs_steps_are_counted_exactly():
    """After 2 TrainSteps of 5 rows and a job of 3 epochs over 45 rows in batches of 8 (18
    steps), the model has 20 train steps, 18 job steps and 145 examples; the loss gauge is the
    job's last loss; one job reads succeeded and none any other state."""
    x, y = classification_data(13, 45)
    with live_server() as server:
        stub = server.stub
        stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec(), name="m"), timeout=30)
        for seed in range(2):
            batch_x, batch_y = classification_data(seed, 5)
            stub.TrainStep(pb.TrainStepRequest(model="m", x=to_tensor(batch_x), y=to_tensor(batch_y)), timeout=30)
        train = upload(stub, x, y)
        events = events_to_end(stub, _start(stub, "m", train.id, epochs=3, batch_size=8).id)
        samples = scrape(server.server.metrics_port)
    assert events[-1].job.state == SUCCEEDED and events[-1].job.step == 18
    assert value(samples, "nnserve_train_steps_total", model="m") == 20
    assert value(samples, "nnserve_training_job_steps_total", model="m") == 18
    assert value(samples, "nnserve_train_examples_total", model="m") == 2 * 5 + 3 * 45
    assert value(samples, "nnserve_train_batch_loss_count", model="m") == 20
    assert value(samples, "nnserve_train_loss", model="m") == events[-1].recent_loss
    assert value(samples, "nnserve_training_jobs", state="succeeded") == 1
    for state in ("queued", "running", "failed", "cancelled"):
        assert value(samples, "nnserve_training_jobs", state=state) == 0, state


# -- the SDK --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(live):
    with Client(live.target, timeout=30) as client:
        yield client


ARGUMENTS = dict(layers=[4, 8, 3], activations=["tanh", "softmax"], loss="cross_entropy",
                 learning_rate=0.05, seed=3)


@pytest.mark.parametrize("hyper", [{"optimizer": "sgd", "momentum": 0.9}, {"optimizer": "adam"}],
                         ids=["sgd-momentum", "adam"])
def test_the_sdks_fit_equals_network_fit_and_deletes_what_it_uploaded(client, hyper):
    """RemoteModel.fit (upload, job, watch) returns Network.fit's history and leaves its
    weights bit for bit; the datasets it uploaded (train and validation) are deleted after."""
    x, y = classification_data(21, 45)
    options = dict(epochs=3, batch_size=8, seed=4, validation_data=classification_data(22, 9))
    datasets_before = client.list_datasets()
    model = client.create_model(**ARGUMENTS, **hyper)
    network = Network(**ARGUMENTS, **hyper)
    assert model.fit(x, y, **options) == network.fit(x, y, **options)
    assert (model.step, model.version) == (network.step, network.version) == (18, 18)
    assert model.get_state()["step"] == 18
    for (w_remote, b_remote), (w_local, b_local) in zip(model.get_weights(), network.get_weights()):
        assert w_remote.tobytes() == w_local.tobytes() and b_remote.tobytes() == b_local.tobytes()
    assert client.list_datasets() == datasets_before


def test_the_sdks_fit_reuses_an_uploaded_dataset(client, live):
    """fit(RemoteDataset) trains on the stored dataset (the job names it), equals Network.fit
    bit for bit, and leaves the dataset stored."""
    x, y = classification_data(23, 40)
    x_val, y_val = classification_data(24, 8)
    remote, remote_val = client.upload_dataset(x, y), client.upload_dataset(x_val, y_val)
    try:
        model = client.create_model(**ARGUMENTS)
        network = Network(**ARGUMENTS)
        options = dict(epochs=2, batch_size=16, seed=6)
        history = model.fit(remote, validation_data=remote_val, **options)
        assert history == network.fit(x, y, validation_data=(x_val, y_val), **options)
        assert [w.tobytes() for pair in model.get_weights() for w in pair] == [
            w.tobytes() for pair in network.get_weights() for w in pair]
        (job,) = live.stub.ListTrainingJobs(pb.ListTrainingJobsRequest(model=model.id), timeout=30).jobs
        assert (job.dataset, job.validation_dataset) == (remote.id, remote_val.id)
        assert {d.id for d in client.list_datasets()} >= {remote.id, remote_val.id}
    finally:
        client.delete_dataset(remote)
        client.delete_dataset(remote_val)


def test_an_interrupt_during_the_sdks_fit_cancels_the_job(client, live, monkeypatch):
    """A KeyboardInterrupt while fit watches its job propagates after the job was cancelled
    (CANCELLED, the model at the job's step) and the uploaded datasets were deleted."""
    original = sdk_jobs.TrainingJob.watch

    def interrupted(job):
        for event in original(job):
            yield event
            raise KeyboardInterrupt

    monkeypatch.setattr(sdk_jobs.TrainingJob, "watch", interrupted)
    datasets_before = client.list_datasets()
    model = client.create_model(**ARGUMENTS)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y, epochs=LONG, batch_size=8)
    (job,) = live.stub.ListTrainingJobs(pb.ListTrainingJobsRequest(model=model.id), timeout=30).jobs
    assert job.state == CANCELLED and job.error == "cancelled by CancelTrainingJob"
    assert model.refresh().step == job.step
    assert client.list_datasets() == datasets_before


def test_a_failed_job_makes_the_sdks_fit_raise_and_still_deletes_its_datasets(client):
    """When the guard fails the job, fit raises NNServeError FAILED_PRECONDITION with the
    job's error, the model is unchanged and the uploaded datasets are deleted."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 4)) * 1e4).astype(np.float32)
    y = rng.integers(0, 3, 16)
    datasets_before = client.list_datasets()
    model = client.create_model([4, 8, 3], ["relu", "softmax"], "cross_entropy", learning_rate=3e38)
    with pytest.raises(NNServeError) as caught:
        model.fit(x, y, epochs=1, batch_size=16)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "epoch 1, step 1: train step refused" in caught.value.message
    assert model.refresh().version == 0
    assert client.list_datasets() == datasets_before


# -- kernel variants ------------------------------------------------------------------------

_VARIANTS_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from nnserve.kernels import network_kernels as nk
from nnserve.model import warmup
from job_support import classification_data, job_request, upload, wait_ended
from service_support import classifier_spec, pb, running_server

warmup()
kernels = ("train_step", "predict", "evaluate")
before = {{name: len(getattr(nk, name).signatures) for name in kernels}}
with running_server() as live:
    x, y = classification_data(0, 16)
    train = upload(live.stub, x, y)
    model = live.stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec()), timeout=30).model
    job = live.stub.CreateTrainingJob(job_request(model.id, train.id, shuffle=False,
                                                  validation_dataset=train.id), timeout=30).job
    assert wait_ended(live.stub, job.id).state == pb.TRAINING_JOB_STATE_SUCCEEDED
after = {{name: len(getattr(nk, name).signatures) for name in kernels}}
print(json.dumps([before, after]))
"""


def test_a_job_over_a_stored_dataset_needs_no_kernel_variant_beyond_warmup():
    """In a fresh process after warmup(), a job without shuffling and with validation adds no
    compiled variant to the train_step, predict or evaluate kernels."""
    script = _VARIANTS_SCRIPT.format(tests=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert after == before
