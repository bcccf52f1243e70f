"""The server's settings: one frozen object, read once at the edge from flags and NNSERVE_*.

Each field is one option: `--some-option` on `nnserve serve`, `NNSERVE_SOME_OPTION` in the
environment; a flag beats the environment, which beats the default. Adding a field adds
the flag, the variable and their help. Nothing below the edge reads the environment.
"""

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = ["ENV_PREFIX", "Settings", "add_arguments", "env_name", "settings_from_args"]

ENV_PREFIX = "NNSERVE_"
_LOG_FORMATS = ("text", "json")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _option(default, help, *, low=None, high=None, choices=None):
    return field(default=default, metadata={"help": help, "low": low, "high": high,
                                            "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Every option of the server, with its default."""

    host: str = _option("0.0.0.0", "address to listen on (0.0.0.0: all IPv4 interfaces, [::]: all)")
    port: int = _option(50051, "gRPC port; 0 picks a free port (the log line says which)",
                        low=0, high=65535)
    http_port: int = _option(
        8000, "Open Inference Protocol (KServe v2) REST port, on --host, with the TLS and tokens "
        "of --port; 0 disables it, -1 picks a free port (the log line says which)",
        low=-1, high=65535)
    workers: int = _option(16, "threads handling RPCs (and as many more for REST requests); "
                           "more queue", low=1)
    grace_period: float = _option(10.0, "seconds in-flight RPCs and REST requests get to finish on "
                                  "shutdown", low=0.0)
    drain_period: float = _option(0.0, "seconds health reports NOT_SERVING before shutdown "
                                  "starts refusing RPCs (time for load balancers to notice)", low=0.0)
    max_models: int = _option(1000, "models held at once", low=1)
    max_parameters_per_model: int = _option(10_000_000, "weights and biases of one model", low=1)
    max_total_parameter_bytes: int = _option(
        1 << 30, "bytes of all models' parameters together (parameters x 4 or 8; optimizer "
        "state and buffers take about 2-4 times more)", low=1)
    max_rows_per_request: int = _option(16384, "samples (rows of x) in one request", low=1)
    max_datasets: int = _option(100, "datasets held at once (UploadDataset)", low=1)
    max_dataset_bytes: int = _option(1 << 30, "bytes of one dataset (x and y together)", low=1)
    max_total_dataset_bytes: int = _option(4 << 30, "bytes of all datasets together, uploads in "
                                           "progress included", low=1)
    max_jobs: int = _option(100, "unfinished (queued or running) training jobs at once", low=1)
    job_workers: int = _option(2, "training jobs running at once; more wait QUEUED (one job "
                               "keeps about one core busy)", low=1)
    max_message_bytes: int = _option(64 << 20, "size of one gRPC message, either direction, "
                                     "and of one REST request body (1024 x 784 float64 rows "
                                     "take 6.3 MiB)", low=1024,
                                     high=(1 << 31) - 1)
    max_concurrent_rpcs: int = _option(
        0, "ModelService and Open Inference Protocol calls (REST requests included) admitted "
        "at once, running or waiting for a worker; more get RESOURCE_EXHAUSTED (HTTP 429) at "
        "once (0: no limit, calls queue without bound)", low=0)
    max_streams: int = _option(
        64, "TrainStream, PredictStream and ModelStreamInfer calls open at once (each holds a thread "
        "of its own while open); more get RESOURCE_EXHAUSTED at once", low=1)
    batch_max_rows: int = _option(
        0, "merge concurrent Predicts on one model (unary and stream messages) into kernel calls "
        "of up to this many rows; a merged row can differ in the last bits from the row "
        "predicted alone (0: off, every request computed alone)", low=0)
    batch_max_delay_us: int = _option(
        0, "with --batch-max-rows, microseconds a Predict waits for others to merge with (0: "
        "merge only the requests already queued, never wait)", low=0, high=1_000_000)
    state_dir: str = _option("", "directory of durable model checkpoints, restored on start "
                             "(empty: models live in memory only); in cluster mode the directory "
                             "all servers share, or s3://bucket/prefix (the s3 extra)")
    checkpoint_every_steps: int = _option(0, "with --state-dir, checkpoint a model after this many "
                                          "unsaved train steps (0: no step trigger)", low=0)
    checkpoint_every_seconds: float = _option(
        10.0, "with --state-dir, checkpoint a model this many seconds after its first unsaved "
        "train step (0: no time trigger; shutdown, create, delete, SetState and SetWeights "
        "always write)", low=0.0)
    tls_cert: str = _option("", "PEM certificate chain file: serve TLS (with --tls-key) instead "
                            "of plaintext")
    tls_key: str = _option("", "PEM private key file of --tls-cert")
    tls_client_ca: str = _option("", "PEM CA certificates file: require clients to present a "
                                 "certificate it signed (mutual TLS; needs --tls-cert)")
    read_tokens_file: str = _option("", "file of bearer tokens, one per line, that may call the "
                                    "reading methods (Predict, Evaluate, GetModel, ListModels, "
                                    "GetState, GetDataset, ListDatasets, GetTrainingJob, "
                                    "ListTrainingJobs, WatchTrainingJob, PredictStream, "
                                    "ExportModel); with either tokens file ModelService needs a "
                                    "token")
    write_tokens_file: str = _option("", "file of bearer tokens, one per line, that may call "
                                     "every ModelService method")
    threads: int = _option(
        1, "BLAS threads per matrix product; 1 lets concurrent requests use the cores side by "
        "side (2 callers on 2 cores: 1.7x the throughput of 2 BLAS threads each, which "
        "oversubscribe and stall); 0 leaves BLAS's default (one per core)", low=0)
    training_threads: int = _option(
        0, "BLAS threads per matrix product of a training job's or a TrainStream's step while "
        "no other model computes (a lone batch-256 [784, 256, 256, 10] job: 1.6x faster with 2 "
        "than 1); the count drops back to --threads the moment another call starts; 0: one per "
        "core this process may use, 1: never more than --threads", low=0)
    metrics_port: int = _option(9464, "Prometheus metrics port (HTTP, path /metrics); 0 disables "
                                "them, -1 picks a free port (the log line says which)",
                                low=-1, high=65535)
    metrics_host: str = _option("", "address the metrics port listens on; empty: the same as "
                                "--host")
    metrics_max_models: int = _option(100, "models with a metrics label of their own at once; "
                                      "further ones share model=\"__overflow__\"", low=0)
    health_port: int = _option(
        0, "plaintext port serving only the gRPC health service, on threads of its own, for "
        "probes: reachable with --tls-cert on, and not refused by a flood of calls on the main "
        "port (0: health on the main port only; -1 picks a free port, the log line says which)",
        low=-1, high=65535)
    cluster_etcd: str = _option(
        "", "etcd endpoint (http://host:port, or a comma-separated list of the etcd cluster's "
        "members', tried in turn when one is down) of cluster mode: models are owned through etcd "
        "leases, calls for another server's model are forwarded to it, and --state-dir is the "
        "directory all servers share (empty: a single server, no etcd)")
    cluster_advertise: str = _option("", "with --cluster-etcd, the host:port the other servers "
                                     "reach this one at (required in cluster mode)")
    cluster_lease_ttl: int = _option(5, "with --cluster-etcd, seconds of this server's etcd lease: "
                                     "a crashed server's models move after this long", low=2,
                                     high=300)
    cluster_ca: str = _option("", "with --cluster-etcd and --tls-cert (required then): PEM CA "
                              "certificates that signed the other servers' certificates; calls "
                              "forwarded to a model's owner go over TLS checked against them, "
                              "presenting --tls-cert as a client certificate when "
                              "--tls-client-ca is set")
    cluster_tls_server_name: str = _option("", "with --cluster-ca, the name an owner's certificate "
                                           "must carry for forwards (empty: the host of its "
                                           "--cluster-advertise address)")
    grafana_url: str = _option("", "base URL of a Grafana holding deploy/grafana's dashboard "
                               "(uid nnserve): the playground links each model's panels there "
                               "(empty: it shows the PromQL query instead)")
    log_format: str = _option("text", "log lines as plain text or one JSON object each",
                              choices=_LOG_FORMATS)
    log_level: str = _option("info", "least severe level logged", choices=_LOG_LEVELS)

    def __post_init__(self):
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            accepted = (int, float) if spec.type is float else spec.type
            meta = spec.metadata
            if (isinstance(value, bool) or not isinstance(value, accepted)
                    or (meta["low"] is not None and value < meta["low"])
                    or (meta["high"] is not None and value > meta["high"])
                    or (meta["choices"] is not None and value not in meta["choices"])):
                raise ValueError(f"{spec.name}: got {value!r}, expected {_describe(spec)}")
        if self.cluster_etcd and not (self.cluster_advertise and self.state_dir):
            raise ValueError("cluster_etcd: got it without cluster_advertise or state_dir, expected "
                             "both (the address others forward to, the shared checkpoint directory)")
        if self.cluster_etcd and self.tls_cert and not self.cluster_ca:
            raise ValueError("cluster_ca: got none with tls_cert in cluster mode, expected the CA "
                             "file that signed the servers' certificates (forwards between "
                             "servers use TLS)")
        if self.cluster_ca and not (self.cluster_etcd and self.tls_cert):
            raise ValueError("cluster_ca: got it without cluster_etcd and tls_cert, expected both "
                             "(it checks the certificates of the servers a cluster forwards to)")
        if self.state_dir.startswith("s3://") and not self.cluster_etcd:
            raise ValueError(f"state_dir: got {self.state_dir!r} without cluster_etcd, expected a "
                             "directory (an S3 bucket holds a cluster's checkpoints only)")

    @classmethod
    def from_env(cls, environ=None, **overrides):
        """Return Settings from NNSERVE_* variables (default os.environ), then overrides."""
        environ = os.environ if environ is None else environ
        values = {}
        for spec in dataclasses.fields(cls):
            text = environ.get(env_name(spec.name))
            if text is not None:
                values[spec.name] = _parse(spec, text, env_name(spec.name))
        values.update(overrides)
        return cls(**values)


def env_name(name):
    """The environment variable of a settings field: port -> NNSERVE_PORT."""
    return ENV_PREFIX + name.upper()


def _describe(spec):
    meta = spec.metadata
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    kind = {int: "an integer", float: "a number", str: "a string"}[spec.type]
    if meta["low"] is not None and meta["high"] is not None:
        return f"{kind} in [{meta['low']}, {meta['high']}]"
    if meta["low"] is not None:
        return f"{kind} >= {meta['low']}"
    return kind


def _parse(spec, text, source):
    try:
        return spec.type(text.strip()) if spec.type is not str else text
    except ValueError:
        raise ValueError(f"{source}: got {text!r}, expected {_describe(spec)}") from None


def add_arguments(parser):
    """Add one flag per field to an argparse parser, its help naming variable and default."""
    for spec in dataclasses.fields(Settings):
        flag = "--" + spec.name.replace("_", "-")
        parser.add_argument(
            flag, default=None, metavar=spec.name.upper() if not spec.metadata["choices"] else None,
            choices=spec.metadata["choices"], type=lambda text, spec=spec, flag=flag: _parse(spec, text, flag),
            help=f"{spec.metadata['help']} [env {env_name(spec.name)}; default {spec.default}]")


def settings_from_args(args, environ=None):
    """Return Settings from parsed flags (add_arguments), falling back to the environment."""
    overrides = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(Settings)
                 if getattr(args, spec.name, None) is not None}
    return Settings.from_env(environ, **overrides)
