"""Assemble the server: ModelService and the Open Inference Protocol over gRPC, the error
interceptor, health and reflection; the protocol over REST; metrics.

`create_server(settings)` binds the port (0 picks a free one) and returns the server
unstarted with the port it got. Health reports NOT_SERVING until `start()` (or
`set_serving()`), and again from the moment `stop()` begins. Unless `http_port` is 0, it
also binds the REST port (`Server.http_port`; -1 picks a free one), which serves from
`start()`, reports ready on the same terms as health, and stops with the gRPC port: no new
connections once the drain period is over, `grace` seconds for the requests in flight.
Unless `metrics_port` is 0,
it also binds the Prometheus /metrics port (`Server.metrics_port`; -1 picks a free one),
served from `start()` until every RPC has ended after `stop()`. With `health_port`, the
same health service is also served in plaintext on a port and threads of its own
(`Server.health_port`; -1 picks a free one), over the same span: for probes, which then
neither speak TLS nor queue behind a flood on the main port.
"""

import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nnserve.oip import grpc_service_pb2_grpc as oip_grpc
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc

from .auth import auth_interceptor
from .checkpoints import (Checkpointer, DatasetFiles, JobFiles, open_checkpoints, restore,
                          restore_training_data)
from .cluster.remote_inference import ClusterInference
from .cluster.routing import ClusterNode, ClusterRouter, OwnerChannels
from .cluster.shared_store import SharedCheckpointStore, SharedDatasetFiles, SharedJobFiles, shared_files
from .datasets import DatasetStore
from .errors import ErrorInterceptor
from .grpc_metrics import MetricsInterceptor
from .http import create_http_server
from .metrics import NO_METRICS, Metrics, MetricsHTTPServer
from .model_service import SERVICE_NAME, ModelServicer, timestamp
from .open_inference import OIP_SERVICE_NAME, OpenInference, OpenInferenceServicer
from .overload import StreamLimit, concurrency_limit, rpc_executor, rpc_limit
from .playground import Playground
from .reflection import enable_reflection
from .registry import Registry
from .settings import Settings
from .tls import forward_credentials, server_credentials, server_ssl_context
from .training_jobs import ADOPTED_FROM_LOST_SERVER, JobTable

__all__ = ["Server", "create_server"]

logger = logging.getLogger(__name__)

HEALTH_THREADS = 4  # Check takes microseconds; each Watch stream holds one thread


class Server:
    """A bound nnserve server; `registry` holds its models, `datasets` its datasets and
    `jobs` its training jobs.

    start() -> serving; stop(grace) -> health NOT_SERVING, drain period, then in-flight
    RPCs and REST requests get `grace` seconds while new ones are refused. `metrics` is the
    server's service.metrics.Metrics (NO_METRICS when disabled), `metrics_port` the bound
    /metrics port (0 when disabled), `health_port` the bound plaintext health port and
    `http_port` the bound REST port (each 0 when disabled).
    """

    def __init__(self, grpc_server, registry, datasets, jobs, health_servicer, settings, ready,
                 metrics=NO_METRICS, metrics_http=None, health_server=None, health_port=0,
                 http_server=None):
        self.grpc_server = grpc_server
        self.registry = registry
        self.datasets = datasets
        self.jobs = jobs
        self.health = health_servicer
        self.settings = settings
        self._ready = ready  # what the Open Inference Protocol's ServerReady reports
        self.metrics = metrics
        self._metrics_http = metrics_http
        self.metrics_port = metrics_http.port if metrics_http is not None else 0
        self._health_server = health_server
        self.health_port = health_port
        self._http_server = http_server
        self.http_port = http_server.port if http_server is not None else 0

    def start(self, *, serving=True):
        """Start answering RPCs, REST requests, scrapes and probes; health turns SERVING (and
        the protocol's ready true) unless serving=False."""
        if self._metrics_http is not None:
            self._metrics_http.start()
        if self._health_server is not None:
            self._health_server.start()
        self.grpc_server.start()
        if self._http_server is not None:
            self._http_server.start()
        if serving:
            self.set_serving()

    def set_serving(self):
        """Report SERVING for the server as a whole and for ModelService."""
        for service in (health.OVERALL_HEALTH, SERVICE_NAME, OIP_SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._ready.set()

    def stop(self, grace=None):
        """Shut down gracefully; return a threading.Event set once every RPC has ended.

        Health turns NOT_SERVING for good; RPCs are still accepted for the drain period,
        then refused, and those in flight get `grace` seconds (default: the settings').
        """
        grace = self.settings.grace_period if grace is None else grace
        self._ready.clear()
        self.health.enter_graceful_shutdown()
        if self.settings.drain_period:
            time.sleep(self.settings.drain_period)
        stopped = self._stop_then_close(grace)
        # Scrapes and probes still see the drain and the last RPCs; their ports close after.
        if self._metrics_http is not None:
            metrics_http, self._metrics_http = self._metrics_http, None
            threading.Thread(target=lambda: (stopped.wait(), metrics_http.close()),
                             name="nnserve-metrics-stop", daemon=True).start()
        if self._health_server is not None:
            health_server, self._health_server = self._health_server, None
            threading.Thread(target=lambda: (stopped.wait(), health_server.stop(0)),
                             name="nnserve-health-stop", daemon=True).start()
        return stopped

    def _stop_then_close(self, grace):
        """grpc's stop and the REST port's, then the training jobs' cancellation (they train
        through the grace period), then the registry's last checkpoints; the Event is set
        after all of them."""
        rpcs_ended = self.grpc_server.stop(grace)
        requests_ended = self._http_server.stop(grace) if self._http_server is not None else None
        closed = threading.Event()

        def close():
            rpcs_ended.wait()
            if requests_ended is not None:
                requests_ended.wait()
            try:
                self.jobs.close()
                self.registry.close()
            except Exception:
                logger.exception("closing the registry failed", extra={"event": "close_failed"})
            finally:
                closed.set()

        # Not a daemon: the interpreter waits for the last checkpoints before it exits.
        threading.Thread(target=close, name="nnserve-close").start()
        return closed


def _address(host, port):
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _bind(server, address, credentials):
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address}: {error}") from None
    if port == 0:  # older grpcio reports a failed bind this way
        raise OSError(f"cannot listen on {address}: got port 0 from gRPC, expected a bound port")
    return port


def _metrics_http(metrics, settings):
    """The bound (not yet serving) /metrics HTTP server of the settings."""
    host = (settings.metrics_host or settings.host).strip("[]")
    port_wanted = max(settings.metrics_port, 0)  # -1: any free port
    try:
        return MetricsHTTPServer(metrics.registry, host, port_wanted)
    except OSError as error:
        raise OSError(f"cannot listen on {_address(host, port_wanted)} for metrics: {error}") from None


def _health_server(health_servicer, host, port_wanted, metrics):
    """(grpc server, bound port): the health service alone, plaintext, on its own threads;
    its calls are counted in the same grpc_server_* series as on the main port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="nnserve-health"),
        # Beyond this, refused at once rather than queued: a probe never waits behind a Watch.
        maximum_concurrent_rpcs=HEALTH_THREADS,
        interceptors=[MetricsInterceptor(metrics)] if metrics is not NO_METRICS else [],
        options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = _address(host, port_wanted)
    try:
        return server, _bind(server, address, None)
    except OSError as error:
        raise OSError(f"{error} (--health-port)") from None


def _join_cluster(settings, metrics):
    """(Checkpointer on the shared directory, ClusterNode) of a server in cluster mode: its
    etcd lease granted, its registry made."""
    from .cluster.membership import Membership  # the etcd client: needed in cluster mode only

    membership = Membership(settings.cluster_etcd, settings.cluster_advertise, settings.cluster_lease_ttl)
    store = SharedCheckpointStore(shared_files(settings.state_dir), membership)
    # Steps acknowledged but not yet committed are what a failover loses: at most two
    # checkpoint intervals of them (one being committed, one filling), whatever etcd does.
    checkpoints = Checkpointer(store, settings.checkpoint_every_steps, settings.checkpoint_every_seconds,
                               max_unsaved_steps=2 * settings.checkpoint_every_steps)
    node = ClusterNode(membership, Registry(settings, metrics, checkpoints), store)
    return checkpoints, node


def create_server(settings=None):
    """Return (Server, port): a server bound to settings.host:settings.port, not started.

    With settings.state_dir, every model checkpointed there is restored before this
    returns (so before health can report SERVING).

    Raises OSError when the address cannot be bound (in use, or not an address of this
    machine) or the state directory cannot be used, OSError or ValueError for a TLS or
    tokens file that cannot be read.
    """
    settings = settings or Settings()
    prefixes = (f"/{SERVICE_NAME}/", f"/{OIP_SERVICE_NAME}/")  # the services of models
    credentials = server_credentials(settings)
    ssl_context = server_ssl_context(settings) if settings.http_port else None
    # Tokens first (nothing runs for a caller without one), then admission, then errors.
    # The REST port shares the first two: one token table, one admission count.
    auth, limit = auth_interceptor(settings), concurrency_limit(settings, prefixes)
    guards = [guard for guard in (auth, limit, StreamLimit(prefixes, settings.max_streams))
              if guard is not None]
    metrics = Metrics(settings.metrics_max_models) if settings.metrics_port else NO_METRICS
    checkpoints, node = (_join_cluster(settings, metrics) if settings.cluster_etcd
                         else (open_checkpoints(settings), None))  # the latter locks the state directory
    registry = node.registry if node else Registry(settings, metrics, checkpoints)
    # In cluster mode datasets and job records are in the shared place, read when a call
    # names a dataset and when a server adopts the model of a job.
    durable = settings.state_dir and not node and checkpoints.store.directory
    dataset_files = DatasetFiles(durable) if durable else None
    job_files = JobFiles(durable) if durable else None
    if node:
        dataset_files = SharedDatasetFiles(checkpoints.store.files)
        job_files = SharedJobFiles(checkpoints.store.files, node.membership)
    datasets = DatasetStore(settings, dataset_files)
    jobs = JobTable(settings, registry, datasets, metrics, checkpoints, timestamp, job_files)
    if node:
        def restore_jobs(model_id):
            for record in job_files.records(model_id):
                jobs.restore(record, ADOPTED_FROM_LOST_SERVER)

        node.on_adopted.append(restore_jobs)
    # The metrics interceptor comes first, so that it sees every status the others set.
    channels = (OwnerChannels(forward_credentials(settings), settings.cluster_tls_server_name)
                if node else None)
    router = ClusterRouter(node, channels, prefixes) if node else None
    interceptors = [*guards, *([router] if router else []), ErrorInterceptor(prefixes)]
    if metrics is not NO_METRICS:
        metrics.watch_registry(registry)
        metrics.watch_datasets(datasets)
        metrics.watch_jobs(jobs)
        interceptors.insert(0, MetricsInterceptor(metrics))
    server = grpc.server(
        rpc_executor(settings),
        maximum_concurrent_rpcs=rpc_limit(settings),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Fail on a port in use instead of silently sharing it with another process.
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry, datasets, jobs), server)
    ready = threading.Event()
    inference = OpenInference(registry, settings, ready.is_set)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(OpenInferenceServicer(inference), server)

    health_servicer = health.HealthServicer()
    for service in (health.OVERALL_HEALTH, SERVICE_NAME, OIP_SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server)

    metrics_http = health_server = http_server = None
    health_port = 0
    try:
        port = _bind(server, _address(settings.host, settings.port), credentials)
        if settings.metrics_port:
            metrics_http = _metrics_http(metrics, settings)
        if settings.health_port:
            health_server, health_port = _health_server(health_servicer, settings.host,
                                                        max(settings.health_port, 0), metrics)
        if settings.http_port:
            rest_inference = ClusterInference(inference, node, channels) if node else inference
            playground = Playground(registry, datasets, jobs, grpc_port=port,
                                    tls=credentials is not None, grafana_url=settings.grafana_url)
            http_server = create_http_server(settings, rest_inference, auth=auth, limit=limit,
                                             metrics=metrics, ssl_context=ssl_context,
                                             playground=playground)
    except OSError:
        if metrics_http is not None:
            metrics_http.close()
        if health_server is not None:
            health_server.stop(0)
        jobs.close()
        registry.close()  # releases the state directory
        raise
    if not node:  # a cluster's models are restored by the server that claims them, on demand
        restore(registry, checkpoints)
    if durable:
        restore_training_data(datasets, jobs, dataset_files, job_files)
    return Server(server, registry, datasets, jobs, health_servicer, settings, ready, metrics,
                  metrics_http, health_server, health_port, http_server), port
