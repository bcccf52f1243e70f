"""The training-job cases of `nnserve bench service`: a server-side job against the same fit
in-process, and Predict's latency while a job trains the model.

For each case a dataset is uploaded once to an `nnserve serve` process, then, in
`rounds` x TURNS_PER_ROUND alternating turns, the in-process `Network.fit` (in this process, the server idle) and a
training job (CreateTrainingJob, watched to its end) run the same fit on a fresh model
each, after a pause that lets the other one's BLAS threads stop spinning. A job's rate is the server's own (its steps over its running time, as
GetTrainingJob reports it) and, end to end, the client's (from CreateTrainingJob to the
ended event). Ratios are medians of the rounds' ratios. The digits case also runs the fit
as one TrainStep RPC per batch (`fit_plan` driven on a RemoteModel: what the SDK's fit did
before jobs).
"""

import statistics
import time

import numpy as np

__all__ = ["JOB_CASES", "format_jobs", "measure_jobs"]

# (name, layers, activations, loss, rows, batch size, epochs)
JOB_CASES = (
    ("digits [64, 128, 10] b32", [64, 128, 10], ["relu", "softmax"], "cross_entropy", 1797, 32, 20),
    ("mnist-sized [784, 256, 256, 10] b256", [784, 256, 256, 10], ["relu", "relu", "softmax"],
     "cross_entropy", 8192, 256, 3),
    ("tiny [2, 8, 8, 1] b4", [2, 8, 8, 1], ["tanh", "tanh", "sigmoid"], "binary_cross_entropy",
     1000, 4, 4),
)
TARGETS = {JOB_CASES[0][0]: ("steps", 0.8), JOB_CASES[1][0]: ("examples", 0.9),
           JOB_CASES[2][0]: ("steps", 0.5)}
PREDICT_CALLS = 300  # batch-1 Predicts timed on the mnist-sized model, idle and during a job
# A pause before each timed fit: OpenBLAS's idle threads spin for a while after their last
# call (OPENBLAS_THREAD_TIMEOUT), and those of the fit just done, in this process or the
# server's, would take a core from the next one (measured: in-process 269 -> 420 steps/s
# on the mnist-sized case once the server's spinning threads were gone).
QUIET_SECONDS = 0.5
# Turns per job case for each of the command's --rounds: a turn takes a fraction of a
# second, and on this shared 2-core machine single turns range from 0.6x to 1.5x.
TURNS_PER_ROUND = 3


def _data(layers, loss, rows):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, layers[0])).astype(np.float32)
    classes = 2 if loss == "binary_cross_entropy" else layers[-1]
    return x, rng.integers(0, classes, size=rows)


def _job_rate(client, dataset, spec, batch, epochs):
    """(steps/s by the server's clock, steps/s end to end) of one job on a fresh model."""
    model = client.create_model(**spec)
    started = time.perf_counter()
    job = model.start_training(dataset, epochs=epochs, batch_size=batch)
    job.wait()
    end_to_end = time.perf_counter() - started
    message = job.refresh()._message
    running = (message.end_time.ToNanoseconds() - message.start_time.ToNanoseconds()) / 1e9
    model.delete()
    return message.step / running, message.step / end_to_end


def _in_process_rate(spec, x, y, batch, epochs):
    from nnserve.model import Network

    network = Network(**spec)
    started = time.perf_counter()
    network.fit(x, y, epochs=epochs, batch_size=batch, progress=False)
    return network.step / (time.perf_counter() - started)


def _unary_rate(client, spec, x, y, batch, epochs):
    """Steps/s of the fit loop driven one TrainStep RPC per batch from here."""
    from nnserve.model.fit import fit_plan, run

    model = client.create_model(**spec)
    started = time.perf_counter()
    run(fit_plan(x, y, epochs=epochs, batch_size=batch, progress=False), model)
    rate = model.refresh().step / (time.perf_counter() - started)
    model.delete()
    return rate


def _predict_p50_us(stub, model_id, x):
    from nnserve.v1 import nnserve_pb2 as pb
    from nnserve.v1.tensors import to_tensor

    request = pb.PredictRequest(model=model_id, x=to_tensor(x))
    times = []
    for _ in range(PREDICT_CALLS):
        started = time.perf_counter()
        stub.Predict(request, timeout=30)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def measure_jobs(port, rounds):
    """The job cases against the nnserve server on `port`: {case: figures}, and the
    Predict latency figures."""
    from nnserve.clients import Client

    results = {}
    with Client(f"127.0.0.1:{port}", timeout=600) as client:
        for name, layers, activations, loss, rows, batch, epochs in JOB_CASES:
            spec = dict(layers=layers, activations=activations, loss=loss, seed=1)
            x, y = _data(layers, loss, rows)
            dataset = client.upload_dataset(x, y)
            _in_process_rate(spec, x, y, batch, 1)  # warm: buffers, caches
            _job_rate(client, dataset, spec, batch, 1)
            turns = []
            for _ in range(rounds * TURNS_PER_ROUND):
                time.sleep(QUIET_SECONDS)
                in_process = _in_process_rate(spec, x, y, batch, epochs)
                time.sleep(QUIET_SECONDS)
                job, end_to_end = _job_rate(client, dataset, spec, batch, epochs)
                turns.append({"in_process_steps_per_second": in_process,
                              "job_steps_per_second": job,
                              "job_end_to_end_steps_per_second": end_to_end,
                              "job_vs_in_process": job / in_process,
                              "end_to_end_vs_in_process": end_to_end / in_process})
            figures = {key: statistics.median(turn[key] for turn in turns) for key in turns[0]}
            figures["rounds"] = turns
            figures["batch"] = batch
            if name == JOB_CASES[0][0]:
                unary = _unary_rate(client, spec, x, y, batch, epochs)
                figures["unary_steps_per_second"] = unary
                figures["unary_vs_in_process"] = unary / figures["in_process_steps_per_second"]
            client.delete_dataset(dataset)
            results[name] = figures
        results["predict while training"] = _predict_during_job(client)
    return results


def _predict_during_job(client):
    """Batch-1 Predict p50 on the mnist-sized model, idle and while a job trains it."""
    _, layers, activations, loss, rows, batch, _ = JOB_CASES[1]
    x, y = _data(layers, loss, rows)
    model = client.create_model(layers, activations, loss, seed=1)
    dataset = client.upload_dataset(x, y)
    stub = client._stub
    idle = _predict_p50_us(stub, model.id, x[:1])
    job = model.start_training(dataset, epochs=1_000_000, batch_size=batch)
    events = job.watch()
    next(events)  # the job exists; wait until it has applied a step
    while job.refresh().step == 0:
        time.sleep(0.01)
    during = _predict_p50_us(stub, model.id, x[:1])
    events.close()
    job.cancel()
    model.delete()
    client.delete_dataset(dataset)
    return {"idle_p50_us": idle, "during_job_p50_us": during}


def job_targets(results):
    """The issue's job targets: (what, value, bound, met)."""
    rows = []
    for name, (unit, bound) in TARGETS.items():
        value = results[name]["job_vs_in_process"]
        rows.append((f"job {name}: {unit}/s vs in-process", value, f">= {bound}", value >= bound))
    return rows


def format_jobs(results):
    lines = [f"{'training job case':<38} {'in-process':>11} {'job':>9} {'x':>6} "
             f"{'end-to-end':>11} {'x':>6}  (steps/s)"]
    for name, *_ in JOB_CASES:
        row = results[name]
        lines.append(f"{name:<38} {row['in_process_steps_per_second']:>11.0f} "
                     f"{row['job_steps_per_second']:>9.0f} {row['job_vs_in_process']:>6.2f} "
                     f"{row['job_end_to_end_steps_per_second']:>11.0f} "
                     f"{row['end_to_end_vs_in_process']:>6.2f}")
        if "unary_steps_per_second" in row:
            lines.append(f"{'  the same fit, one TrainStep RPC per batch':<38} "
                         f"{row['unary_steps_per_second']:>11.0f} "
                         f"({row['unary_vs_in_process']:.2f} of in-process)")
    predict = results["predict while training"]
    lines.append(f"Predict b1 p50 on the mnist-sized model: idle {predict['idle_p50_us']:.0f} us, "
                 f"while a job trains it {predict['during_job_p50_us']:.0f} us")
    return "\n".join(lines)
