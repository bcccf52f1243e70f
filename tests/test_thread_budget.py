"""The BLAS thread budget (nnserve.model.thread_budget) on the real OpenBLAS of the kernels:
a job's (or TrainStream's) thread gets more threads only while no other Network call runs, and loses them the
moment one starts; `nnserve serve` shows the count in nnserve_blas_threads."""

import threading
import time

import numpy as np
import pytest

from nnserve.clients import Client, NNServeError
from nnserve.model import Network
from nnserve.model.thread_budget import BUDGET, ThreadBudget, _openblas_functions

from metrics_support import scrape, value
from process_support import ServeProcess


@pytest.fixture
def budget():
    """The process's budget enabled (1 shared, 2 alone); the original count restored."""
    set_threads, get_threads = _openblas_functions()
    original = get_threads()
    assert BUDGET.enable(1, 2)
    try:
        yield BUDGET
    finally:
        BUDGET.disable()
        set_threads(original)


def on_thread(task):
    """Run `task` on a thread of its own (a job's thread, another request's); return its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(task()))
    thread.start()
    thread.join(timeout=60)
    return result[0]


def small_network():
    return Network([4, 8, 2], ["relu", "softmax"], "cross_entropy", seed=1)


def test_a_lone_job_step_gets_the_alone_count_and_gives_it_back_when_done(budget):
    assert budget.threads() == 1

    def job():
        budget.alone()
        raised = budget.threads()
        budget.done()
        return raised, budget.threads()

    assert on_thread(job) == (2, 1)


def test_another_call_starting_takes_the_count_back_and_the_jobs_own_step_does_not(budget):
    network, other = small_network(), small_network()
    x, y = np.ones((3, 4), np.float32), np.array([0, 1, 0])
    raised = threading.Event()
    predicted = threading.Event()
    seen = {}

    def job():
        budget.alone()
        network.train_step(x, y)  # its own lock: the count stays raised
        seen["after own step"] = budget.threads()
        raised.set()
        predicted.wait(timeout=30)
        seen["after the predict"] = budget.threads()
        budget.alone()  # nothing runs now: raised again
        seen["next step"] = budget.threads()
        budget.done()

    thread = threading.Thread(target=job)
    thread.start()
    assert raised.wait(timeout=30)
    other.predict(x)  # another model, another thread
    predicted.set()
    thread.join(timeout=30)
    assert seen == {"after own step": 2, "after the predict": 1, "next step": 2}
    assert budget.threads() == 1


def test_a_job_step_while_another_call_computes_keeps_the_shared_count(budget):
    budget.entered()  # another thread's call in progress (as a Network lock does it)
    try:
        assert on_thread(lambda: (budget.alone(), budget.threads())[1]) == 1
    finally:
        budget.left()
    assert on_thread(lambda: (budget.alone(), budget.threads(), budget.done())[1]) == 2


def test_disabled_it_changes_nothing():
    budget = ThreadBudget()
    assert not budget.enabled and budget.threads() is None
    budget.entered(), budget.alone(), budget.left(), budget.done()  # no-ops
    assert not budget.enable(2, 2)  # alone must exceed shared
    assert not budget.enabled


def test_the_server_raises_the_count_for_a_lone_job_and_drops_it_when_the_job_ends():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=512)
    with ServeProcess("--metrics-port", "-1", "--training-threads", "2") as server:
        metrics_port = server.named("serving")[-1]["metrics_port"]
        assert value(scrape(metrics_port), "nnserve_blas_threads") == 1
        with Client(server.target, timeout=30) as client:
            model = client.create_model([64, 128, 10], ["relu", "softmax"], "cross_entropy")
            job = model.start_training(client.upload_dataset(x, y), epochs=1_000_000, batch_size=256)
            seen = _until(lambda: value(scrape(metrics_port), "nnserve_blas_threads"), 2)
            assert seen == 2, "the lone job's steps never got 2 threads"
            job.cancel()
            with pytest.raises(NNServeError, match="cancelled"):
                job.wait()
            assert value(scrape(metrics_port), "nnserve_blas_threads") == 1


def _until(read, wanted, timeout=30):
    deadline = time.monotonic() + timeout
    while (got := read()) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_a_lone_train_stream_gets_the_training_count_until_it_closes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=256)
    stop = threading.Event()

    def batches():
        while not stop.is_set():
            yield x, y

    with ServeProcess("--metrics-port", "-1", "--training-threads", "2") as server:
        metrics_port = server.named("serving")[-1]["metrics_port"]
        with Client(server.target, timeout=30) as client:
            model = client.create_model([64, 128, 10], ["relu", "softmax"], "cross_entropy")
            losses = model.train_stream(batches())
            reader = threading.Thread(target=lambda: sum(1 for _ in losses))
            reader.start()
            try:
                seen = _until(lambda: value(scrape(metrics_port), "nnserve_blas_threads"), 2)
            finally:
                stop.set()
                reader.join(timeout=30)
            assert seen == 2, "the lone stream's steps never got 2 threads"
            assert _until(lambda: value(scrape(metrics_port), "nnserve_blas_threads"), 1) == 1
            assert model.refresh().step > 0


def test_with_matching_thread_counts_a_wide_network_trains_bit_for_bit_as_in_process():
    """A 784-wide layer sums in another order with 1 BLAS thread than with 2 (docs/design.md);
    with one thread on both sides, TrainSteps through the server and in-process agree."""
    rng = np.random.default_rng(2)
    batches = [(rng.normal(size=(32, 784)).astype(np.float32), rng.integers(0, 10, size=32))
               for _ in range(5)]
    spec = dict(layers=[784, 64, 10], activations=["relu", "softmax"], loss="cross_entropy", seed=4)
    set_threads, get_threads = _openblas_functions()
    original = get_threads()
    set_threads(1)
    try:
        network = Network(**spec)
        expected = [float(network.train_step(x, y)) for x, y in batches]
    finally:
        set_threads(original)
    with ServeProcess("--threads", "1", "--training-threads", "1") as server:
        with Client(server.target, timeout=30) as client:
            model = client.create_model(**spec)
            assert [float(model.train_step(x, y)) for x, y in batches] == expected
            for (w, b), (w0, b0) in zip(model.get_weights(), network.get_weights()):
                np.testing.assert_array_equal(w, w0)
                np.testing.assert_array_equal(b, b0)
