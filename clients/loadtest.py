"""`nnserve loadtest`: a bounded-time grpc.aio load generator that mixes train and predict.

    nnserve loadtest --target localhost:50051 --duration 10s --concurrency 16 \\
        --mix predict=10,train=3,create=1,fit=1 --batch 1 --json report.json
    nnserve loadtest --target localhost:50051 --stream --window 16 --mix predict=3,train=1

It creates its own models (`--models`, deleted at the end), then `--concurrency` workers
each keep one call in flight until `--duration` has passed, choosing each call by the
`--mix` weights:

- predict: Predict on one of the models, `--batch` rows;
- train: TrainStep on one of the models, `--batch` rows with class ids;
- evaluate: Evaluate on one of the models;
- create: CreateModel of another model of the same spec, then DeleteModel of it (both
  timed, each under its own RPC name);
- fit: one training job run to its end: CreateTrainingJob (1 epoch over a dataset of
  FIT_ROWS rows with class ids, `--fit-batch` rows per step) then WatchTrainingJob until
  its last event, timed together as "Fit" (including time QUEUED when more fits run than
  the server has job workers). The dataset is uploaded once at setup
  (UploadDataset: a header, then chunks of rows). A model has at most one unfinished job
  and refuses TrainStep while it trains, so fits run on models of their own: one per
  worker, taken from a pool for the length of a job, never used by the other operations.
  A job that ends otherwise than SUCCEEDED counts as JOB_FAILED or JOB_CANCELLED.

With `--stream`, predict and train are messages instead of calls: each worker keeps a
PredictStream and a TrainStream open for the whole run (those of the kinds in the mix,
opened on first use: `--concurrency` streams of each kind) and puts a message on one
without waiting for its reply, up to `--window` unanswered per stream (then it waits for
a reply). Their rows, "PredictStream" and "TrainStream", count messages (messages/s) and
time each from its send to its reply; a refused message counts under its own status
code, and a failed stream under the stream's, for each message it had not answered (a new
stream is then opened). The other operations stay calls. At the end each stream is closed
and read to its end. A stream's deadline is `--duration` plus `--timeout`.

Requests are built once and reused, and calls go straight through the generated stubs
(no SDK conversions, no retries), so the figures are the server's and gRPC's. The report
gives requests/s, p50/p90/p99/max latency and counts by status code per RPC, as a table
and as JSON (the total counts every call and message); the exit status is 1 when a status
code other than OK (and `--expect`) appeared. Targets other than loopback are refused
unless `--allow-remote`. The models and the dataset are deleted at the end.
"""

import asyncio
import collections
import contextlib
import functools
import ipaddress
import json
import random
import secrets
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import grpc
import numpy as np

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.tensors import to_tensor

from .channel import TLS, auth_metadata
from .jobs import upload_requests

__all__ = ["LoadSpec", "LoadTestError", "check_target", "format_report", "loadtest_command",
           "parse_duration", "parse_mix", "run", "run_async"]

OPERATIONS = ("predict", "train", "evaluate", "create", "fit")
# The operations --stream sends as messages, and the stream method of each.
STREAMED = {"predict": "PredictStream", "train": "TrainStream"}
DEFAULT_LAYERS = (784, 256, 256, 10)
# Rows of the dataset each fit trains on for one epoch: a job of a few steps, long enough
# to be a job (queued, started, stepped, ended), short enough to run many in a load test.
FIT_ROWS = 256
_MAX_MESSAGE_BYTES = 256 << 20
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}  # of a refused message


class LoadTestError(Exception):
    """The load test could not run: bad arguments, unreachable target, failed setup."""


@dataclass(frozen=True)
class LoadSpec:
    """What to run. Durations in seconds; mix maps operation names to integer weights."""

    target: str
    duration: float = 10.0
    concurrency: int = 16
    mix: dict = field(default_factory=lambda: {"predict": 10, "train": 3, "create": 1})
    batch: int = 1
    fit_batch: int = 32  # rows per train step of a fit's job
    layers: tuple = DEFAULT_LAYERS
    models: int = 1
    timeout: float = 30.0
    warmup: float = 0.0
    seed: int = 0
    expect: tuple = ()  # status code names accepted besides OK
    stream: bool = False  # predict and train as messages on each worker's streams
    window: int = 16  # with stream: messages sent and unanswered at once per stream
    token: str = None
    tls: object = None  # None (plaintext) or a nnserve.clients.TLS


# -- arguments --------------------------------------------------------------------------------

def parse_duration(text, *, allow_zero=False):
    """Seconds from '10s', '500ms', '2m' or a bare number of seconds."""
    units = (("ms", 1e-3), ("s", 1.0), ("m", 60.0))
    value = text.strip()
    scale = 1.0
    for suffix, factor in units:
        if value.endswith(suffix):
            value, scale = value[: -len(suffix)], factor
            break
    try:
        seconds = float(value) * scale
    except ValueError:
        raise ValueError(f"duration: got {text!r}, expected a number with s, ms or m "
                         "(e.g. 10s)") from None
    if not (seconds >= 0 if allow_zero else seconds > 0):
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"duration: got {text!r}, expected {least} seconds")
    return seconds


def parse_mix(text):
    """{"predict": 10, ...} from 'predict=10,train=3,create=1'; weights are integers >= 0."""
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in OPERATIONS:
            raise ValueError(f"mix: got operation {name!r}, expected one of {', '.join(OPERATIONS)}")
        try:
            mix[name] = int(weight)
        except ValueError:
            raise ValueError(f"mix: got weight {weight!r} for {name}, expected an integer") from None
        if mix[name] < 0:
            raise ValueError(f"mix: got weight {mix[name]} for {name}, expected >= 0")
    if not any(mix.values()):
        raise ValueError(f"mix: got {text!r}, expected at least one weight > 0")
    return mix


def _host_of(target):
    """The host part of a gRPC target ('dns:///h:p', 'ipv4:h:p', '[::1]:p', 'h:p', 'unix:...')."""
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
            break
    if target.startswith("["):
        return target[1:target.find("]")]
    host, _, _ = target.rpartition(":")
    return host or target


def check_target(target, allow_remote=False):
    """Raise LoadTestError unless the target is on this machine (or allow_remote).

    Loopback addresses, 'localhost', names that resolve only to loopback, and unix sockets
    are local.
    """
    if allow_remote or target.startswith(("unix:", "unix-abstract:")):
        return
    host = _host_of(target)
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(info[4][0].split("%")[0])
                         for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        except OSError as error:
            raise LoadTestError(f"target: cannot resolve {host!r}: {error}") from None
    if not addresses or not all(address.is_loopback for address in addresses):
        raise LoadTestError(
            f"target: got {target!r} ({', '.join(sorted(map(str, addresses)))}), expected a "
            "loopback address; pass --allow-remote to load a server on another machine")


# -- the run ---------------------------------------------------------------------------------

def _spec(layers, seed):
    """relu layers and a softmax classifier, or one sigmoid output with binary cross-entropy."""
    binary = layers[-1] == 1
    return pb.ModelSpec(
        layers=layers, activations=[pb.ACTIVATION_RELU] * (len(layers) - 2)
        + [pb.ACTIVATION_SIGMOID if binary else pb.ACTIVATION_SOFTMAX],
        loss=pb.LOSS_BINARY_CROSS_ENTROPY if binary else pb.LOSS_CROSS_ENTROPY,
        optimizer=pb.OPTIMIZER_SGD, learning_rate=0.01, init=pb.INIT_HE, seed=seed,
        dtype=pb.DATA_TYPE_FLOAT32)


def _labels(rng, layers, rows):
    """Class ids for a softmax classifier, 0/1 labels for one sigmoid output."""
    return rng.integers(0, max(layers[-1], 2), rows).astype(np.int64)


class _Recorder:
    """Latencies (ns) and status codes per RPC name."""

    def __init__(self):
        self.latencies = {}
        self.codes = {}

    def add(self, rpc, nanoseconds, code):
        self.latencies.setdefault(rpc, []).append(nanoseconds)
        counts = self.codes.get(rpc)
        if counts is None:
            counts = self.codes[rpc] = Counter()
        counts[code] += 1


def _fit_data(spec):
    """The fit dataset: FIT_ROWS rows of the models' width, class ids of their outputs."""
    rng = np.random.default_rng(spec.seed + 1)
    x = rng.standard_normal((FIT_ROWS, spec.layers[0]), dtype=np.float32)
    y = _labels(rng, spec.layers, FIT_ROWS)
    return x, y


async def _create_model(stub, spec, index, name, metadata):
    """CreateModel of the load test's spec (seed + index); its id."""
    request = pb.CreateModelRequest(spec=_spec(spec.layers, spec.seed + index), name=name)
    try:
        created = await stub.CreateModel(request, timeout=spec.timeout, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        raise LoadTestError(f"setup: CreateModel failed with {error.code().name}: "
                            f"{error.details()}") from None
    return created.model.id


async def _upload_dataset(stub, spec, name, metadata):
    """UploadDataset of the fit dataset (a header, then chunks); its id."""
    x, y = _fit_data(spec)
    requests = list(upload_requests(x, y, name, _MAX_MESSAGE_BYTES))
    try:
        uploaded = await stub.UploadDataset(iter(requests), timeout=spec.timeout, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        raise LoadTestError(f"setup: UploadDataset failed with {error.code().name}: "
                            f"{error.details()}") from None
    return uploaded.dataset.id


class _Calls:
    """The operations of one run, with their prebuilt requests."""

    def __init__(self, stub, spec, model_ids, metadata, fit_model_ids=(), dataset_id=None):
        rng = np.random.default_rng(spec.seed)
        x = to_tensor(rng.standard_normal((spec.batch, spec.layers[0]), dtype=np.float32))
        y = to_tensor(_labels(rng, spec.layers, spec.batch))
        self._stub = stub
        self._timeout = spec.timeout
        self._metadata = metadata
        self._predict = [pb.PredictRequest(model=m, x=x) for m in model_ids]
        self._train = [pb.TrainStepRequest(model=m, x=x, y=y) for m in model_ids]
        self._evaluate = [pb.EvaluateRequest(model=m, x=x, y=y) for m in model_ids]
        self._create = pb.CreateModelRequest(spec=_spec(spec.layers, spec.seed + 1))
        # The fit models' pool, as their jobs' requests: one model per worker, so a fit never
        # waits for one; a model is out of the pool while its job runs, so no two jobs meet.
        self._fit_jobs = asyncio.Queue()
        for model_id in fit_model_ids:
            self._fit_jobs.put_nowait(pb.CreateTrainingJobRequest(
                model=model_id, dataset=dataset_id, epochs=1, batch_size=spec.fit_batch,
                seed=spec.seed))

    async def _call(self, recorder, rpc, method, request):
        started = time.perf_counter_ns()
        try:
            response = await method(request, timeout=self._timeout, metadata=self._metadata)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            response, code = None, error.code().name
        recorder.add(rpc, time.perf_counter_ns() - started, code)
        return response

    async def predict(self, recorder, rng):
        await self._call(recorder, "Predict", self._stub.Predict, rng.choice(self._predict))

    async def train(self, recorder, rng):
        await self._call(recorder, "TrainStep", self._stub.TrainStep, rng.choice(self._train))

    async def evaluate(self, recorder, rng):
        await self._call(recorder, "Evaluate", self._stub.Evaluate, rng.choice(self._evaluate))

    async def create(self, recorder, rng):
        created = await self._call(recorder, "CreateModel", self._stub.CreateModel, self._create)
        if created is not None:
            await self._call(recorder, "DeleteModel", self._stub.DeleteModel,
                             pb.DeleteModelRequest(model=created.model.id))

    async def fit(self, recorder, rng):
        request = await self._fit_jobs.get()
        try:
            started = time.perf_counter_ns()
            code = await self._train_to_end(request)
            recorder.add("Fit", time.perf_counter_ns() - started, code)
        finally:
            self._fit_jobs.put_nowait(request)

    async def _train_to_end(self, request):
        """Run one job to its end: "OK" when it SUCCEEDED, else the status code or end state.
        A job whose watch failed is cancelled, so that its model is free for the next fit."""
        job_id = None
        try:
            created = await self._stub.CreateTrainingJob(request, timeout=self._timeout,
                                                         metadata=self._metadata)
            job_id, state = created.job.id, created.job.state
            async for event in self._stub.WatchTrainingJob(pb.WatchTrainingJobRequest(job=job_id),
                                                           timeout=self._timeout,
                                                           metadata=self._metadata):
                state = event.job.state
        except grpc.aio.AioRpcError as error:
            if job_id is not None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self._stub.CancelTrainingJob(pb.CancelTrainingJobRequest(job=job_id),
                                                       timeout=self._timeout,
                                                       metadata=self._metadata)
            return error.code().name
        if state == pb.TRAINING_JOB_STATE_SUCCEEDED:
            return "OK"
        return "JOB_" + pb.TrainingJobState.Name(state)[len("TRAINING_JOB_STATE_"):]

    def open_stream(self, operation, recorder, window, timeout):
        """A _Stream of predict or train messages, on a new stream."""
        method = STREAMED[operation]
        requests = self._predict if operation == "predict" else self._train
        call = getattr(self._stub, method)(timeout=timeout, metadata=self._metadata)
        return _Stream(call, method, requests, recorder, window)


class _Stream:
    """One stream of a worker: a message sent whenever the worker asks, at most `window`
    unanswered (the worker waits for a permit); each reply recorded with the time since
    its message was sent, under the code of its `error`, if any."""

    def __init__(self, call, method, requests, recorder, window):
        self._call = call
        self._method = method
        self._requests = requests
        self._recorder = recorder
        self._permits = asyncio.Semaphore(window)
        self._sent_at = collections.deque()  # perf_counter_ns of the unanswered messages
        self.broken = False  # the stream failed: open another
        self._reader = asyncio.ensure_future(self._read())

    async def send(self, rng):
        """Send one message once a permit is free; False when the stream failed meanwhile."""
        await self._permits.acquire()
        if self.broken:
            return False
        self._sent_at.append(time.perf_counter_ns())
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # A failed stream: the reader records this message with the stream's code.
            await self._call.write(rng.choice(self._requests))
        return True

    async def _read(self):
        try:
            async for reply in self._call:
                error = reply.error.code if reply.WhichOneof("result") == "error" else 0
                self._answered(_CODE_NAMES.get(error, "UNKNOWN") if error else "OK")
        except grpc.aio.AioRpcError as failure:
            self.broken = True
            while self._sent_at:
                self._answered(failure.code().name)
            self._permits.release()  # a worker waiting to send sees `broken`

    def _answered(self, code):
        self._recorder.add(self._method, time.perf_counter_ns() - self._sent_at.popleft(), code)
        self._permits.release()

    async def close(self):
        """Close the stream and record the replies still to come."""
        if not self.broken:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._call.done_writing()
        await self._reader


class _WorkerStreams:
    """A worker's streams, one per streamed operation it sends, opened on first use (and
    again after one failed) and closed at the end."""

    def __init__(self, calls, recorder, window, timeout):
        self._open = functools.partial(calls.open_stream, recorder=recorder, window=window,
                                       timeout=timeout)
        self._streams = {}

    async def send(self, operation, rng):
        while True:
            stream = self._streams.get(operation)
            if stream is None or stream.broken:
                stream = self._streams[operation] = self._open(operation)
            if await stream.send(rng):
                return

    async def close(self):
        for stream in self._streams.values():
            await stream.close()


@contextlib.asynccontextmanager
async def _operations(calls, spec, recorder, stream_timeout):
    """The operations of one worker by name, each an `await operation(rng)`: calls, and
    with --stream, predict and train as messages on the worker's own streams (closed and
    read to their end on exit)."""
    operations = {name: functools.partial(getattr(calls, name), recorder) for name in OPERATIONS}
    if not spec.stream:
        yield operations
        return
    streams = _WorkerStreams(calls, recorder, spec.window, stream_timeout)
    operations.update({name: functools.partial(streams.send, name) for name in STREAMED})
    try:
        yield operations
    finally:
        await streams.close()


async def _load(calls, spec, seconds, recorder):
    """`spec.concurrency` workers, each one call in flight (or with --stream, its streams'
    windows), until `seconds` have passed."""
    plan = [name for name, weight in spec.mix.items() for _ in range(weight)]
    deadline = time.perf_counter() + seconds

    async def worker(index):
        rng = random.Random(spec.seed * 1000 + index)
        async with _operations(calls, spec, recorder, seconds + spec.timeout) as operations:
            while time.perf_counter() < deadline:
                await operations[rng.choice(plan)](rng)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(spec.concurrency)))
    return time.perf_counter() - started


async def run_async(spec):
    """Run the load test described by `spec`; return the report dict (see format_report)."""
    options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
               ("grpc.primary_user_agent", "nnserve-loadtest")]
    metadata = auth_metadata(spec.token)
    if spec.tls is not None:
        if spec.tls.server_name:
            options.append(("grpc.ssl_target_name_override", spec.tls.server_name))
        channel = grpc.aio.secure_channel(spec.target, spec.tls.credentials(), options=options)
    else:
        channel = grpc.aio.insecure_channel(spec.target, options=options)
    async with channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=min(spec.timeout, 10))
        except asyncio.TimeoutError:
            raise LoadTestError(f"target: cannot connect to {spec.target} within 10 s") from None
        stub = pb_grpc.ModelServiceStub(channel)
        tag = secrets.token_hex(3)
        model_ids, fit_model_ids, dataset_id = [], [], None
        try:
            for index in range(spec.models):
                model_ids.append(await _create_model(stub, spec, index, f"loadtest-{tag}-{index}",
                                                     metadata))
            if spec.mix.get("fit"):
                dataset_id = await _upload_dataset(stub, spec, f"loadtest-{tag}", metadata)
                for index in range(spec.concurrency):
                    fit_model_ids.append(await _create_model(
                        stub, spec, spec.models + index, f"loadtest-{tag}-fit-{index}", metadata))
            calls = _Calls(stub, spec, model_ids, metadata, fit_model_ids, dataset_id)
            warm = _Recorder()  # one call (message) of each operation, then the warm-up load: not reported
            async with _operations(calls, spec, warm, spec.timeout) as operations:
                for name in OPERATIONS:
                    if spec.mix.get(name):
                        await operations[name](random.Random(spec.seed))
            if spec.warmup:
                await _load(calls, spec, spec.warmup, warm)
            recorder = _Recorder()
            elapsed = await _load(calls, spec, spec.duration, recorder)
        finally:
            # The report says what happened; a missing model or dataset is not our concern here.
            for model_id in model_ids + fit_model_ids:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.DeleteModel(pb.DeleteModelRequest(model=model_id),
                                           timeout=spec.timeout, metadata=metadata)
            if dataset_id is not None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=dataset_id),
                                             timeout=spec.timeout, metadata=metadata)
    return _report(spec, recorder, elapsed)


def run(spec):
    """Synchronous run_async: the report dict."""
    return asyncio.run(run_async(spec))


def _report(spec, recorder, elapsed):
    expected = {"OK", *spec.expect}
    rows = {}
    every = []
    all_codes = Counter()
    rows_per_call = {"Predict": spec.batch, "TrainStep": spec.batch, "Evaluate": spec.batch,
                     "Fit": FIT_ROWS, "PredictStream": spec.batch, "TrainStream": spec.batch}
    for rpc in sorted(recorder.latencies):
        latencies = np.asarray(recorder.latencies[rpc], dtype=np.int64)
        every.append(latencies)
        codes = recorder.codes[rpc]
        all_codes.update(codes)
        rows[rpc] = _row(latencies, codes, elapsed, "messages" if rpc in STREAMED.values() else "calls")
        if rpc in rows_per_call:
            rows[rpc]["rows_per_second"] = codes["OK"] * rows_per_call[rpc] / elapsed
    total = _row(np.concatenate(every) if every else np.empty(0, np.int64), all_codes, elapsed)
    unexpected = sorted(code for code in all_codes if code not in expected)
    settings = asdict(spec)
    settings.pop("token")
    settings["tls"] = spec.tls is not None
    settings["layers"] = list(spec.layers)
    settings["expect"] = list(spec.expect)
    return {"settings": settings, "elapsed_seconds": elapsed, "rpcs": rows, "total": total,
            "unexpected_codes": unexpected, "ok": not unexpected}


def _row(latencies, codes, elapsed, unit="calls"):
    """A report row: the count and rate of calls (requests_per_second) or of stream messages
    (messages_per_second), latency quantiles and status codes."""
    rate = "requests_per_second" if unit == "calls" else "messages_per_second"
    row = {unit: int(latencies.size), rate: latencies.size / elapsed}
    if latencies.size:
        quantiles = np.percentile(latencies, [50, 90, 99]) / 1e6
        row.update(zip(("p50_ms", "p90_ms", "p99_ms"), map(float, quantiles)))
        row["max_ms"] = float(latencies.max() / 1e6)
    else:
        row.update(p50_ms=None, p90_ms=None, p99_ms=None, max_ms=None)  # no call finished
    row["codes"] = dict(sorted(codes.items()))
    return row


def format_report(report):
    """The report as a text table: one row per RPC and a total."""
    s = report["settings"]
    mix = ",".join(f"{name}={weight}" for name, weight in s["mix"].items())
    fit = (f" (+{s['concurrency']} for fit: {FIT_ROWS} rows, batch {s['fit_batch']})"
           if s["mix"].get("fit") else "")
    lines = [f"target {s['target']}: {report['elapsed_seconds']:.2f} s, concurrency "
             f"{s['concurrency']}, mix {mix}, batch {s['batch']}, layers "
             f"{s['layers']}, {s['models']} model(s){fit}",
             f"{'rpc':<14} {'calls':>8} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'max ms':>8}  codes"]
    for name, row in [*report["rpcs"].items(), ("total", report["total"])]:
        codes = " ".join(f"{code}={count}" for code, count in row["codes"].items())
        times = " ".join(f"{'-':>8}" if row[key] is None else f"{row[key]:>8.3f}"
                         for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        count, rate = (row["calls"], row["requests_per_second"]) if "calls" in row else (
            row["messages"], row["messages_per_second"])
        lines.append(f"{name:<14} {count:>8} {rate:>9.1f} {times}  {codes}")
    streamed = [name for name in report["rpcs"] if name in STREAMED.values()]
    if streamed:
        lines.append(f"{', '.join(streamed)}: messages, not calls, over {s['concurrency']} "
                     f"stream(s) each (window {s['window']}); latency from a message's send "
                     "to its reply")
    for name, row in report["rpcs"].items():
        if "rows_per_second" in row:
            done = "trained by jobs that succeeded" if name == "Fit" else "answered OK"
            lines.append(f"{name}: {row['rows_per_second']:.1f} rows/s {done}")
    if report["unexpected_codes"]:
        lines.append("unexpected status codes: " + ", ".join(report["unexpected_codes"]))
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------------

def _spec_from_args(args):
    for name, value, low in (("concurrency", args.concurrency, 1), ("batch", args.batch, 1),
                             ("fit_batch", args.fit_batch, 1), ("models", args.models, 1),
                             ("window", args.window, 1)):
        if value < low:
            raise ValueError(f"{name}: got {value}, expected >= {low}")
    try:
        layers = tuple(int(n) for n in args.layers.split(","))
    except ValueError:
        raise ValueError(f"layers: got {args.layers!r}, expected comma-separated integers") from None
    if len(layers) < 2 or min(layers) < 1:
        raise ValueError(f"layers: got {args.layers!r}, expected at least two widths >= 1")
    expect = tuple(code.strip().upper() for code in args.expect.split(",") if code.strip())
    for code in expect:
        if code not in grpc.StatusCode.__members__:
            raise ValueError(f"expect: got {code!r}, expected gRPC status code names")
    return LoadSpec(target=args.target, duration=parse_duration(args.duration),
                    concurrency=args.concurrency, mix=parse_mix(args.mix), batch=args.batch,
                    fit_batch=args.fit_batch, layers=layers, models=args.models,
                    timeout=parse_duration(args.timeout),
                    warmup=parse_duration(args.warmup, allow_zero=True),
                    seed=args.seed, expect=expect, token=args.token, stream=args.stream,
                    window=args.window,
                    tls=TLS(ca=args.tls_ca) if args.tls_ca else None)


def loadtest_command(args):
    """The `nnserve loadtest` handler (flags in nnserve.cli.main): 0 when every status was
    expected, 1 if not or when the test could not run, 2 on bad arguments."""
    try:
        spec = _spec_from_args(args)
        check_target(spec.target, args.allow_remote)
    except (ValueError, LoadTestError) as error:
        print(f"nnserve loadtest: error: {error}", file=sys.stderr)
        return 2
    try:
        report = run(spec)
    except LoadTestError as error:
        print(f"nnserve loadtest: error: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0 if report["ok"] else 1

