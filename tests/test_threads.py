"""Concurrency: Network methods called from 8 threads give exactly the single-threaded results.

Threads start together on a barrier so their calls overlap (the kernels release the GIL).
Every comparison is bit-exact: the same weights and inputs always go through the same
compiled code, so any difference is a race, not rounding.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nnserve.model import Network

N_THREADS = 8

SPECS = [
    dict(layers=[16, 48, 48, 4], activations=["relu", "tanh", "softmax"], loss="cross_entropy",
         optimizer="adam", learning_rate=1e-3),
    dict(layers=[16, 32, 3], activations=["leaky_relu", "sigmoid"], loss="binary_cross_entropy",
         momentum=0.9, nesterov=True, dtype="float64"),
    dict(layers=[16, 64, 2], activations=["tanh", "identity"], loss="mse", learning_rate=0.01),
    dict(layers=[16, 40, 40, 5], activations=["sigmoid", "relu", "softmax"], loss="cross_entropy",
         optimizer="adam", weight_decay=1e-3, dtype="float64"),
]


def make_batches(spec, n_steps, seed, batch_size=32):
    rng = np.random.default_rng(seed)
    dtype = spec.get("dtype", "float32")
    n_in, n_out = spec["layers"][0], spec["layers"][-1]
    result = []
    for _ in range(n_steps):
        x = rng.normal(size=(batch_size, n_in)).astype(dtype)
        if spec["loss"] == "cross_entropy":
            y = rng.integers(0, n_out, size=batch_size)
        elif spec["loss"] == "binary_cross_entropy":
            y = rng.uniform(size=(batch_size, n_out)).astype(dtype)
        else:
            y = rng.normal(size=(batch_size, n_out)).astype(dtype)
        result.append((x, y))
    return result


def assert_bit_identical(got, expected):
    for (W, b), (W_expected, b_expected) in zip(got, expected, strict=True):
        assert np.array_equal(W, W_expected) and np.array_equal(b, b_expected)


def run_together(tasks):
    """Run the callables on N_THREADS threads, released together by a barrier; return their results."""
    assert len(tasks) == N_THREADS
    barrier = threading.Barrier(N_THREADS)

    def start(task):
        barrier.wait(timeout=30)
        return task()

    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        return [future.result(timeout=120) for future in [pool.submit(start, task) for task in tasks]]


def test_training_several_networks_and_predicting_concurrently_matches_single_threaded_runs():
    """4 threads training 4 networks on fixed batch sequences and 4 threads predicting give the single-threaded losses, weights and predictions."""
    sequences = [make_batches(spec, 150, seed=index) for index, spec in enumerate(SPECS)]
    expected = []
    for spec, batches in zip(SPECS, sequences):
        network = Network(**spec, seed=1)
        losses = [network.train_step(x, y) for x, y in batches]
        expected.append((losses, network.get_weights()))

    fixed = Network(**SPECS[0], seed=5)
    probes = [np.random.default_rng(100 + i).normal(size=(n, 16)).astype(np.float32)
              for i, n in enumerate([1, 7, 64, 200])]
    expected_predictions = [fixed.predict(x) for x in probes]

    networks = [Network(**spec, seed=1) for spec in SPECS]

    def trainer(network, batches):
        return lambda: ([network.train_step(x, y) for x, y in batches], network.get_weights())

    def predictor(x):
        return lambda: [fixed.predict(x) for _ in range(150)]

    results = run_together([trainer(n, b) for n, b in zip(networks, sequences)]
                           + [predictor(x) for x in probes])

    for (losses, weights), (expected_losses, expected_weights) in zip(results[:4], expected):
        assert losses == expected_losses
        assert_bit_identical(weights, expected_weights)
    for predictions, expected_prediction in zip(results[4:], expected_predictions):
        assert all(np.array_equal(p, expected_prediction) for p in predictions)


def test_train_steps_from_eight_threads_on_one_network_lose_no_update():
    """8 threads each applying 25 steps of the same batch to one network equal 200 sequential steps bit for bit (no lost or torn update)."""
    spec = SPECS[3]
    x, y = make_batches(spec, 1, seed=3)[0]
    sequential = Network(**spec, seed=2)
    for _ in range(200):
        sequential.train_step(x, y)

    shared = Network(**spec, seed=2)
    results = run_together([lambda: [(lambda loss: (float(loss), loss.step, loss.version))(shared.train_step(x, y)) for _ in range(25)]] * N_THREADS)

    assert shared.step == 200 and shared.version == 200
    assert_bit_identical(shared.get_weights(), sequential.get_weights())
    # Every step got its own step number and version, each exactly once.
    steps = sorted(step for thread in results for _, step, _ in thread)
    assert steps == list(range(1, 201))
    assert sorted(version for thread in results for _, _, version in thread) == list(range(1, 201))


def test_predict_during_training_always_sees_one_published_version():
    """While one thread trains, 7 threads' predictions, weights and states each equal exactly those of the version they report (never a half-applied step)."""
    spec = SPECS[0]
    batches = make_batches(spec, 100, seed=9, batch_size=64)
    probe = np.random.default_rng(10).normal(size=(16, 16)).astype(np.float32)

    # Single-threaded record: predictions and weights of every version 0..100.
    replica = Network(**spec, seed=3)
    expected_predictions = [replica.predict(probe)]
    expected_weights = [replica.get_weights()]
    for x, y in batches:
        replica.train_step(x, y)
        expected_predictions.append(replica.predict(probe))
        expected_weights.append(replica.get_weights())
    known_predictions = {p.tobytes(): version for version, p in enumerate(expected_predictions)}

    network = Network(**spec, seed=3)
    training_done = threading.Event()

    def trainer():
        try:
            for x, y in batches:
                network.train_step(x, y)
        finally:
            training_done.set()
        return []

    def versioned_reader():
        seen = []
        while not training_done.is_set():
            outputs = network.predict(probe)
            version = outputs.version
            assert np.array_equal(outputs, expected_predictions[version]), f"version {version}"
            seen.append(version)
        return seen

    def plain_reader():
        seen = []
        while not training_done.is_set():
            outputs = network.predict(probe)
            assert outputs.tobytes() in known_predictions, "predict returned no published version's outputs"
            seen.append(known_predictions[outputs.tobytes()])
        return seen

    def weights_reader():
        seen = []
        while not training_done.is_set():
            state = network.get_state()
            assert_bit_identical(state["weights"], expected_weights[state["step"]])
            seen.append(state["step"])
        return seen

    results = run_together([trainer] + [versioned_reader] * 4 + [plain_reader] * 2 + [weights_reader])

    assert network.step == len(batches)
    for seen in results[1:]:
        # A reader never goes back in time.
        assert seen == sorted(seen)
    distinct = set().union(*map(set, results[1:]))
    assert len(distinct) >= 2, f"readers saw only versions {distinct}: no overlap with training happened"
    assert np.array_equal(network.predict(probe), expected_predictions[-1])


def test_read_write_lock_excludes_writers_prefers_them_and_loses_no_wakeup():
    """The Network's lock by itself: readers share it, a writer holds it alone, a waiting
    writer holds back new readers, and under 8 threads of mixed use every thread gets
    through (a release that skipped a needed notify would leave one waiting forever)."""
    from nnserve.model.locks import ReadWriteLock

    lock = ReadWriteLock()
    inside = {"readers": 0, "writers": 0}
    counts = threading.Lock()
    overlaps = []

    def use(side, kind, times):
        for _ in range(times):
            with side:
                with counts:
                    inside[kind] += 1
                    if inside["writers"] > 1 or (inside["writers"] and inside["readers"]):
                        overlaps.append(dict(inside))
                with counts:
                    inside[kind] -= 1

    threads = [threading.Thread(target=use, args=(lock.write if i % 2 else lock.read,
                                                  "writers" if i % 2 else "readers", 2000))
               for i in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread never got the lock"
    assert overlaps == []

    # A reader holds the lock; a writer queues behind it; a new reader queues behind the writer.
    order = []
    lock.read.__enter__()
    writer = threading.Thread(target=lambda: (lock.write.__enter__(), order.append("writer"),
                                              lock.write.__exit__(None, None, None)))
    writer.start()
    while not lock._writers_waiting:
        time.sleep(0.001)
    reader = threading.Thread(target=lambda: (lock.read.__enter__(), order.append("reader"),
                                              lock.read.__exit__(None, None, None)))
    reader.start()
    reader.join(timeout=0.2)
    assert reader.is_alive() and order == []  # held back while the writer waits
    lock.read.__exit__(None, None, None)
    writer.join(timeout=10)
    reader.join(timeout=10)
    assert order == ["writer", "reader"]


def _start_waiting(lock, side, name, entered, failures):
    """Start a thread that takes `side` ("read" or "write") of the lock, records `name` once
    inside (or in `failures` if its wait is interrupted) and leaves; returns only when the
    thread waits, so threads queue in the order this is called."""
    def take():
        try:
            with getattr(lock, side):
                entered.append(name)
        except KeyboardInterrupt:
            failures.append(name)

    counter = "_writers_waiting" if side == "write" else "_readers_waiting"
    waiting = getattr(lock, counter)
    thread = threading.Thread(target=take, name=name)
    thread.start()
    while getattr(lock, counter) == waiting:
        time.sleep(0.001)
    return thread


def _interruptible(lock, names):
    """Return interrupt(): the waits of the threads called `names` then raise
    KeyboardInterrupt, as Ctrl-C in a wait would (Condition.wait re-takes the mutex first)."""
    wait = lock._wait
    stop = threading.Event()

    def interruptible_wait():
        if threading.current_thread().name in names and stop.is_set():
            raise KeyboardInterrupt
        wait()

    def interrupt():
        stop.set()
        with lock._mutex:
            lock._changed.notify_all()  # the waits return, and those raise

    lock._wait = interruptible_wait
    return interrupt


def test_waiting_writers_enter_in_arrival_order_and_one_that_gives_up_is_skipped():
    """Writers queued behind a writer enter first come, first served (a release wakes them
    all: without the order, the first to take the mutex went in, often a newcomer), and a
    writer whose wait ends in an exception (Ctrl-C) leaves the queue moving, whether it was
    next in line or further back."""
    from nnserve.model.locks import ReadWriteLock

    lock = ReadWriteLock()
    entered, failures = [], []
    lock.write.__enter__()
    threads = [_start_waiting(lock, "write", f"writer {i}", entered, failures) for i in range(6)]
    lock.write.__exit__(None, None, None)
    with lock.write:  # asks after them (the releasing thread, running on): goes in last
        entered.append("late writer")
    for thread in threads:
        thread.join(timeout=10)
    assert entered == [f"writer {i}" for i in range(6)] + ["late writer"]

    interrupted = {"writer 0", "writer 2"}
    interrupt = _interruptible(lock, interrupted)
    entered.clear()
    lock.write.__enter__()
    threads = [_start_waiting(lock, "write", f"writer {i}", entered, failures) for i in range(4)]
    interrupt()
    for thread in threads:
        if thread.name in interrupted:
            thread.join(timeout=10)
    assert sorted(failures) == sorted(interrupted)
    lock.write.__exit__(None, None, None)
    for thread in threads:
        thread.join(timeout=10)
    assert entered == ["writer 1", "writer 3"]
    assert lock._writers_waiting == 0
    with lock.read:  # nothing left queued: both sides are free at once
        pass
    with lock.write:
        pass


def test_readers_and_writers_take_turns():
    """A reader that finds a writer inside (or waiting) goes in when that writer's turn ends,
    before writers that queued earlier but have not had their turn: a predict waits for one
    train step, not for every queued one. A writer that gives up its wait lets the readers
    waiting for it in."""
    from nnserve.model.locks import ReadWriteLock

    lock = ReadWriteLock()
    entered, failures = [], []
    lock.write.__enter__()
    threads = [_start_waiting(lock, "write", f"writer {i}", entered, failures) for i in range(2)]
    threads.append(_start_waiting(lock, "read", "reader", entered, failures))
    threads.append(_start_waiting(lock, "write", "writer 2", entered, failures))
    lock.write.__exit__(None, None, None)
    for thread in threads:
        thread.join(timeout=10)
    assert entered == ["reader", "writer 0", "writer 1", "writer 2"]

    # A reader inside; a writer waits for it; a second reader waits for that writer, which
    # gives up: the second reader goes in beside the first.
    interrupt = _interruptible(lock, {"quitter"})
    entered.clear()
    lock.read.__enter__()
    quitter = _start_waiting(lock, "write", "quitter", entered, failures)
    reader = _start_waiting(lock, "read", "second reader", entered, failures)
    interrupt()
    quitter.join(timeout=10)
    reader.join(timeout=10)
    assert failures == ["quitter"] and entered == ["second reader"]
    lock.read.__exit__(None, None, None)
    assert (lock._readers, lock._readers_waiting, lock._writers_waiting) == (0, 0, 0)
    with lock.write:
        pass
