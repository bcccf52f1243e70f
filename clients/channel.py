"""How the SDK talks to a server: channel options, retry policy, TLS and the bearer token.

Retries are gRPC's own: the channel's service config gives the idempotent methods (the
ones that change nothing) a retry policy with exponential backoff on UNAVAILABLE, and on
RESOURCE_EXHAUSTED when the server is overloaded: its refusals carry a
`grpc-retry-pushback-ms` hint (when to try again), while its limit errors (too many rows,
too many models) carry -1, which tells gRPC not to retry them. Methods that change a
model (CreateModel, DeleteModel, TrainStep, SetState, SetWeights, ImportModel) are never
retried: a TrainStep whose reply was lost may have been applied, and applying it twice
would train twice. Nor are the bidirectional streams (TrainStream, PredictStream). Retries
happen inside the call's one deadline.

Every call that names a model carries it in the `x-nnserve-model` metadata too
(`routing_metadata`): a consistent-hash proxy in front of several servers routes on it, so
each model's calls reach one server (docs/cluster.md).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TARGET", "DEFAULT_TIMEOUT", "IDEMPOTENT_METHODS",
           "MUTATING_METHODS", "ROUTING_HEADER", "SERVICE_NAME", "STREAMING_METHODS", "TLS", "Connection",
           "auth_metadata", "channel_credentials", "channel_options", "connection", "model_ref",
           "route_of", "routing_metadata", "service_config"]

SERVICE_NAME = "nnserve.v1.ModelService"
DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 30.0  # seconds per call, retries included
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # the server's default limit
ROUTING_HEADER = "x-nnserve-model"  # the model a call is for, which a proxy hashes

# Read-only methods: running one twice has the effect of running it once.
IDEMPOTENT_METHODS = ("GetModel", "ListModels", "Predict", "Evaluate", "GetState", "GetDataset",
                      "ListDatasets", "GetTrainingJob", "ListTrainingJobs", "WatchTrainingJob",
                      "ExportModel")
MUTATING_METHODS = ("CreateModel", "DeleteModel", "TrainStep", "SetState", "SetWeights",
                    "UploadDataset", "DeleteDataset", "CreateTrainingJob", "CancelTrainingJob",
                    "ImportModel")
# Bidirectional streams, never retried either: a retried TrainStream would send again
# steps the server may have applied, and gRPC can replay a stream only until its first
# reply (or 256 KiB sent), after which a failure reaches the caller anyway, so a retry
# would not be transparent. A failed stream raises at the position it reached
# (clients/streams.py); the caller decides what to send again.
STREAMING_METHODS = ("TrainStream", "PredictStream")

RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}


def service_config():
    """The channel's service config: a retry policy for the idempotent methods only.

    Retry throttling stops retrying while most calls fail, so an outage does not turn
    into a retry storm.
    """
    return {
        "methodConfig": [{
            "name": [{"service": SERVICE_NAME, "method": method} for method in IDEMPOTENT_METHODS],
            "retryPolicy": RETRY_POLICY,
        }],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }


def channel_options(*, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, server_name=None):
    """The options every SDK channel (sync or grpc.aio) is created with."""
    options = [
        ("grpc.service_config", json.dumps(service_config())),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.primary_user_agent", "nnserve-python-client"),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def _pem(value, what):
    """PEM bytes from bytes, PEM text, or a path to a PEM file."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    if isinstance(value, (str, Path)):
        return Path(value).read_bytes()
    raise TypeError(f"tls {what}: got {type(value).__name__}, expected PEM bytes, PEM text or a path")


@dataclass(frozen=True)
class TLS:
    """TLS settings of a channel; `Client(tls=True)` is `TLS()`.

    Parameters
    ----------
    ca : bytes, str or path-like, optional
        Root certificates the server's certificate must chain to (PEM). None: the
        system's roots.
    cert, key : bytes, str or path-like, optional
        The client's certificate chain and private key (PEM) for mutual TLS; both or
        neither.
    server_name : str, optional
        The name to check the server's certificate against instead of the target's host
        (for a certificate issued to another name than the address dialled).
    """

    ca: object = None
    cert: object = None
    key: object = None
    server_name: str = None

    def __post_init__(self):
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: got only one of cert and key, expected both (mutual TLS) or neither")

    def credentials(self):
        """The grpc.ChannelCredentials these settings describe."""
        return grpc.ssl_channel_credentials(root_certificates=_pem(self.ca, "ca"),
                                            private_key=_pem(self.key, "key"),
                                            certificate_chain=_pem(self.cert, "cert"))


def channel_credentials(tls):
    """(credentials or None for plaintext, server name override) for the `tls` argument.

    tls: None or False (plaintext), True (TLS with the system's roots), a TLS, or
    grpc.ChannelCredentials made by the caller.
    """
    if tls is None or tls is False:
        return None, None
    if tls is True:
        tls = TLS()
    if isinstance(tls, TLS):
        return tls.credentials(), tls.server_name
    if isinstance(tls, grpc.ChannelCredentials):
        return tls, None
    raise TypeError(f"tls: got {type(tls).__name__}, expected None, a bool, nnserve.clients.TLS "
                    "or grpc.ChannelCredentials")


def auth_metadata(token):
    """The call metadata that carries a bearer token: (("authorization", "Bearer <token>"),).

    Sent on every call. Without TLS the token travels in clear text: use tls= beyond
    loopback.
    """
    if token is None:
        return ()
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise ValueError("token: expected a non-empty string without line breaks")
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Connection:
    """Everything a client needs to open its channel and make its calls."""

    target: str
    timeout: float
    metadata: tuple
    credentials: object
    options: list
    max_message_bytes: int  # either direction (the options say the same); < 0: no limit


def connection(target, *, timeout, token, tls, max_message_bytes):
    """Check a client's arguments and return its Connection."""
    if not isinstance(target, str) or not target:
        raise ValueError(f"target: got {target!r}, expected 'host:port'")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: got {timeout!r}, expected a number of seconds > 0")
    credentials, server_name = channel_credentials(tls)
    return Connection(target=target, timeout=float(timeout), metadata=auth_metadata(token),
                      credentials=credentials,
                      options=channel_options(max_message_bytes=max_message_bytes,
                                              server_name=server_name),
                      max_message_bytes=max_message_bytes)


def route_of(request):
    """The routing key of a request: the model it names (`model`, or for CreateModel and
    ImportModel the `id` it asks for), "" when it names none."""
    for field in ("model", "id"):
        key = getattr(request, field, "")
        if key and isinstance(key, str):
            return key
    return ""


def routing_metadata(metadata, route):
    """`metadata` with the routing header of `route` added (unchanged when route is "")."""
    return (*metadata, (ROUTING_HEADER, route)) if route else metadata


def model_ref(model):
    """The id or name string of a model argument: a string, or a RemoteModel's id."""
    ref = getattr(model, "id", model)
    if not isinstance(ref, str):
        raise TypeError(f"model: got {type(model).__name__}, expected an id, a name or a RemoteModel")
    return ref
