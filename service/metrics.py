"""Prometheus metrics of one server: the series, per-model bookkeeping, the /metrics endpoint.

Each server has its own `prometheus_client.CollectorRegistry` (several servers in one
process never clash), served by a small HTTP server of its own at /metrics.

- gRPC, with the names go-grpc-prometheus made conventional (labels grpc_type,
  grpc_service, grpc_method): grpc_server_started_total, grpc_server_handled_total
  (+ grpc_code), grpc_server_handling_seconds, grpc_server_msg_received_total,
  grpc_server_msg_sent_total. MetricsInterceptor (service/grpc_metrics.py) feeds them.
- The REST port (service/http): nnserve_http_requests_total (labels method, route: the
  route's template such as /v2/models/{model}/infer, or "unmatched"; status: the HTTP
  status) and nnserve_http_request_duration_seconds (method, route), from the request's
  arrival to its response.
- Per model (label `model`: its name, else its id): nnserve_train_steps_total,
  nnserve_train_examples_total, nnserve_train_loss (last batch), nnserve_train_batch_loss
  (summary), nnserve_train_step_duration_seconds, nnserve_predict_rows_total,
  nnserve_predict_duration_seconds. At most `metrics_max_models` models have a label of
  their own at once; further ones share model="__overflow__". A deleted model's series
  are removed and its label slot freed.
- Registry: nnserve_models, nnserve_parameters, nnserve_parameter_bytes (read at scrape).
- nnserve_build_info: version, numba's threading layer and thread count, the BLAS.

Per call the model hooks do a dictionary lookup and prometheus_client increments on label
children created once per model; they format no strings. The service computes nothing:
the registry passes the loss and row counts it already has.
"""

import contextlib
import math
import socket
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary
from prometheus_client import make_wsgi_app

__all__ = ["OVERFLOW_MODEL", "Metrics", "MetricsHTTPServer", "NO_METRICS"]

OVERFLOW_MODEL = "__overflow__"
# Sub-millisecond resolution: a batch-1 Predict is handled in well under a millisecond.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MERGED_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def build_info():
    """nnserve_build_info's labels: version, threading_layer, threads (the kernels' BLAS), blas."""
    from importlib.metadata import PackageNotFoundError, version

    from nnserve.model import runtime_info

    try:
        nnserve_version = version("nnserve")
    except PackageNotFoundError:
        nnserve_version = "unknown"
    runtime = runtime_info()
    blas = ", ".join(f"{pool['internal_api']} {pool['version']} ({pool['num_threads']} threads)"
                     for pool in runtime["blas"])
    return {"version": nnserve_version, "threading_layer": runtime["threading_layer"],
            "threads": str(runtime["blas_threads"]), "blas": blas or "unknown"}


def _blas_threads():
    from nnserve.model.thread_budget import BUDGET

    threads = BUDGET.threads()
    if threads is None:
        from nnserve.model import runtime_info

        threads = runtime_info()["blas_threads"]
    return threads if threads is not None else float("nan")


class _ModelSeries:
    """The label children of one model (or of the overflow), created once."""

    __slots__ = ("label", "steps", "examples", "loss", "batch_loss", "step_seconds",
                 "predict_rows", "predict_seconds", "job_steps", "job_examples_per_second")

    def __init__(self, metrics, label):
        self.label = label
        self.steps = metrics.train_steps.labels(label)
        self.examples = metrics.train_examples.labels(label)
        self.loss = metrics.train_loss.labels(label)
        self.batch_loss = metrics.train_batch_loss.labels(label)
        self.step_seconds = metrics.train_step_seconds.labels(label)
        self.predict_rows = metrics.predict_rows.labels(label)
        self.predict_seconds = metrics.predict_seconds.labels(label)
        self.job_steps = metrics.job_steps.labels(label)
        self.job_examples_per_second = metrics.job_examples_per_second.labels(label)


class NullMetrics:
    """The registry's hooks doing nothing: a Registry built without metrics."""

    def model_added(self, entry):
        pass

    def model_removed(self, entry):
        pass

    def trained(self, entry, n_samples, loss, seconds):
        pass

    def predicted(self, entry, n_samples, seconds):
        pass

    def trained_steps(self, entry, rows, losses, seconds):
        pass

    def job_stepped(self, entry, steps, examples_per_second):
        pass

    def predict_merged(self, rows):
        pass

    def predict_queued(self, seconds):
        pass

    def http_handled(self, method, route, status, seconds):
        pass

    def in_flight(self):
        """A context manager counting one request in progress while it is entered."""
        return contextlib.nullcontext()


NO_METRICS = NullMetrics()


class Metrics(NullMetrics):
    """All metrics of one server, in `self.registry` (a CollectorRegistry of its own).

    The model Registry calls model_added/model_removed (under its lock) and
    trained/predicted after each successful call; `watch_registry` makes the registry
    gauges read the model table at scrape time.
    """

    def __init__(self, max_models=100):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.max_models = max_models

        self.started = Counter("grpc_server_started_total", "RPCs started on the server.",
                               _GRPC_LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled_total",
                               "RPCs completed on the server, regardless of success or failure.",
                               _GRPC_LABELS + ("grpc_code",), registry=registry)
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the handler's start to its response or error (application level).",
            _GRPC_LABELS, buckets=LATENCY_BUCKETS, registry=registry)
        self.msg_received = Counter("grpc_server_msg_received_total",
                                    "Request messages received on the server.",
                                    _GRPC_LABELS, registry=registry)
        self.msg_sent = Counter("grpc_server_msg_sent_total",
                                "Response messages sent by the server.",
                                _GRPC_LABELS, registry=registry)

        # What an autoscaler (deploy/k8s/overlays/cluster) scales on besides CPU: the load a
        # pod has right now. Streams are not counted: one open for an hour is no load.
        self.requests_in_flight = Gauge(
            "nnserve_requests_in_flight", "Unary gRPC calls and REST requests being handled now.",
            registry=registry)
        # The kernels' BLAS thread count now: --threads, or --training-threads while a job or a
        # TrainStream computes alone (nnserve.model.thread_budget); read at scrape time.
        self.blas_threads = Gauge(
            "nnserve_blas_threads", "BLAS threads a matrix product of the kernels may use now "
            "(--threads; --training-threads while a training job or TrainStream computes alone).",
            registry=registry)
        self.blas_threads.set_function(_blas_threads)
        self.http_requests = Counter("nnserve_http_requests_total",
                                     "Requests answered on the REST port, by route template and "
                                     "HTTP status.", ("method", "route", "status"), registry=registry)
        self.http_seconds = Histogram(
            "nnserve_http_request_duration_seconds",
            "Time from a REST request's arrival to its response.",
            ("method", "route"), buckets=LATENCY_BUCKETS, registry=registry)
        self._http_series = {}  # (method, route, status) -> (counter child, histogram child)

        model = ("model",)
        self.train_steps = Counter("nnserve_train_steps_total", "Train steps applied.", model,
                                   registry=registry)
        self.train_examples = Counter("nnserve_train_examples_total",
                                      "Samples (rows of x) trained on.", model, registry=registry)
        self.train_loss = Gauge("nnserve_train_loss",
                                "Loss of the last train batch (before its update).", model,
                                registry=registry)
        self.train_batch_loss = Summary("nnserve_train_batch_loss",
                                        "Train batch losses (before each update).", model,
                                        registry=registry)
        self.train_step_seconds = Histogram(
            "nnserve_train_step_duration_seconds",
            "Time of one train step in the model, including waiting for its lock.",
            model, buckets=LATENCY_BUCKETS, registry=registry)
        self.predict_rows = Counter("nnserve_predict_rows_total", "Samples (rows of x) predicted.",
                                    model, registry=registry)
        self.predict_seconds = Histogram(
            "nnserve_predict_duration_seconds",
            "Time of one Predict in the model, including waiting for its lock.",
            model, buckets=LATENCY_BUCKETS, registry=registry)

        # Dynamic batching (--batch-max-rows), for all models together.
        self.merged_rows = Histogram(
            "nnserve_predict_merged_rows", "Rows per kernel call of merged Predicts.",
            buckets=MERGED_ROWS_BUCKETS, registry=registry)
        self.queue_seconds = Histogram(
            "nnserve_predict_queue_seconds",
            "Time a merged Predict waited in its model's queue before its kernel call.",
            buckets=LATENCY_BUCKETS, registry=registry)

        self.job_steps = Counter("nnserve_training_job_steps_total",
                                 "Train steps applied by training jobs (also counted in "
                                 "nnserve_train_steps_total).", model, registry=registry)
        self.job_examples_per_second = Gauge(
            "nnserve_training_job_examples_per_second",
            "Samples per second of the model's latest training job since it started.", model,
            registry=registry)
        self.training_jobs = Gauge("nnserve_training_jobs", "Training jobs held, by state.",
                                   ("state",), registry=registry)
        self.datasets = Gauge("nnserve_datasets", "Datasets held.", registry=registry)
        self.dataset_bytes = Gauge("nnserve_dataset_bytes", "Bytes of all datasets (x and y).",
                                   registry=registry)

        self.models = Gauge("nnserve_models", "Models held.", registry=registry)
        self.parameters = Gauge("nnserve_parameters", "Weights and biases of all models.",
                                registry=registry)
        self.parameter_bytes = Gauge("nnserve_parameter_bytes",
                                     "Bytes of all models' parameters (parameters x 4 or 8).",
                                     registry=registry)
        self.build = Info("nnserve_build", "Version and numeric runtime of this server.",
                          registry=registry)
        self.build.info(build_info())

        self._lock = threading.Lock()
        self._series = {}  # model id -> _ModelSeries (its own, or the overflow's)
        self._own = 0  # models with a label of their own
        self._overflow = None

    # -- registry gauges ------------------------------------------------------

    def watch_registry(self, registry):
        """Make the registry gauges read `registry` (a service Registry) at scrape time."""
        self.models.set_function(lambda: len(registry))
        self.parameters.set_function(lambda: registry.num_parameters)
        self.parameter_bytes.set_function(lambda: registry.parameter_bytes)

    def watch_datasets(self, datasets):
        """Make the dataset gauges read `datasets` (a DatasetStore) at scrape time."""
        self.datasets.set_function(lambda: datasets.count)
        self.dataset_bytes.set_function(lambda: datasets.stored_bytes)

    def watch_jobs(self, jobs):
        """Make nnserve_training_jobs{state} read `jobs` (a JobTable) at scrape time."""
        for state in jobs.STATE_NAMES:
            self.training_jobs.labels(state).set_function(
                lambda state=state: jobs.count_by_state()[state])

    # -- per-model series (the Registry's hooks) ------------------------------------------

    def model_added(self, entry):
        """Give a new model its series: its own label while under the cap, else the overflow's."""
        with self._lock:
            if self._own < self.max_models:
                self._own += 1
                series = _ModelSeries(self, entry.name or entry.id)
            else:
                if self._overflow is None:
                    self._overflow = _ModelSeries(self, OVERFLOW_MODEL)
                series = self._overflow
            self._series[entry.id] = series

    def model_removed(self, entry):
        """Drop a deleted model's series and free its label (the overflow's stay)."""
        with self._lock:
            series = self._series.pop(entry.id, None)
            if series is None or series is self._overflow:
                return
            self._own -= 1
            for metric in (self.train_steps, self.train_examples, self.train_loss,
                           self.train_batch_loss, self.train_step_seconds, self.predict_rows,
                           self.predict_seconds, self.job_steps, self.job_examples_per_second):
                metric.remove(series.label)

    def trained(self, entry, n_samples, loss, seconds):
        """Record one train step of `n_samples` rows that returned `loss`."""
        series = self._series.get(entry.id)
        if series is None:  # deleted meanwhile
            return
        series.steps.inc()
        series.examples.inc(n_samples)
        series.loss.set(loss)
        series.batch_loss.observe(loss)
        series.step_seconds.observe(seconds)

    def trained_steps(self, entry, rows, losses, seconds):
        """Record many train steps at once (a training job's, in order): what trained() per
        step records, at a fraction of the cost. Counters and gauges take the totals; the
        batch-loss summary and the step-duration histogram take their counts and sums
        through prometheus_client's value cells (no public bulk call exists; the result
        equals one observe per step up to the rounding of the sums, which
        tests/test_metrics.py checks)."""
        series = self._series.get(entry.id)
        if series is None or not rows:
            return
        series.steps.inc(len(rows))
        series.examples.inc(sum(rows))
        series.loss.set(losses[-1])
        series.batch_loss._count.inc(len(losses))
        series.batch_loss._sum.inc(math.fsum(losses))
        histogram = series.step_seconds
        buckets = np.searchsorted(histogram._upper_bounds, seconds, side="left")
        for bucket, count in zip(*np.unique(buckets, return_counts=True)):
            histogram._buckets[bucket].inc(int(count))
        histogram._sum.inc(math.fsum(seconds))

    def predicted(self, entry, n_samples, seconds):
        """Record one Predict of `n_samples` rows."""
        series = self._series.get(entry.id)
        if series is None:
            return
        series.predict_rows.inc(n_samples)
        series.predict_seconds.observe(seconds)

    def predict_merged(self, rows):
        """Record one kernel call of merged Predicts, of `rows` rows."""
        self.merged_rows.observe(rows)

    def predict_queued(self, seconds):
        """Record how long one merged Predict waited for its kernel call."""
        self.queue_seconds.observe(seconds)

    def in_flight(self):
        return self.requests_in_flight.track_inprogress()

    def http_handled(self, method, route, status, seconds):
        """Record one answered REST request (`route`: its template; `status`: an int)."""
        key = (method, route, status)
        series = self._http_series.get(key)
        if series is None:  # called on the REST port's event loop only: no lock needed
            series = self._http_series[key] = (self.http_requests.labels(method, route, str(status)),
                                               self.http_seconds.labels(method, route))
        series[0].inc()
        series[1].observe(seconds)

    def job_stepped(self, entry, steps, examples_per_second):
        """Record train steps of a training job (trained() counts them as train steps too)."""
        series = self._series.get(entry.id)
        if series is None:
            return
        series.job_steps.inc(steps)
        series.job_examples_per_second.set(examples_per_second)


# -- the HTTP endpoint ----------------------------------------------------------------------

class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes are not events worth a log line
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind resolves the host's FQDN, which can hang on a machine
        # without DNS; the name is only used for WSGI's SERVER_NAME.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MetricsHTTPServer:
    """prometheus_client's WSGI app for one CollectorRegistry, on its own port.

    The constructor binds (port 0 picks a free one; `port` says which); start() serves
    from a daemon thread; close() stops serving and frees the port.
    """

    def __init__(self, registry, host, port):
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        server_class = _ThreadingWSGIServer6 if family == socket.AF_INET6 else _ThreadingWSGIServer
        self._httpd = server_class((host, port), _QuietHandler)
        self._httpd.set_app(make_wsgi_app(registry))
        self.port = self._httpd.server_port
        self._thread = None

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            name="nnserve-metrics", daemon=True)
            self._thread.start()

    def close(self):
        """Stop serving (waits up to half a second for the loop to notice) and unbind."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
