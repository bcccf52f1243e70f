"""Where a call for a model runs: here (owned, or claimed and restored now) or at its owner.

`ClusterNode.locate` decides from the call's model key: its `x-nnserve-model` header, or
for the Open Inference Protocol's model calls (whose clients, tritonclient and the like,
send no such header) the model named in the request. `ClusterRouter`, a server
interceptor, runs the call here or forwards it unchanged (request bytes, metadata,
deadline) to the owner's advertise address and relays the owner's answer. A forwarded call
carries `x-nnserve-forwarded-by` and is never forwarded again: if ownership moved in
between, it fails UNAVAILABLE and the caller tries again. Calls without a key run here.
"""

import logging
import threading

import grpc
from google.protobuf.message import DecodeError

from nnserve.oip import grpc_service_pb2 as oip

from ..checkpoints import VERSION_GAP_AFTER_CRASH
from ..errors import Unavailable
from ..interceptor_base import MethodInterceptor

__all__ = ["FORWARDED_HEADER", "ROUTING_HEADER", "ClusterNode", "ClusterRouter", "OwnerChannels",
           "forwarded_metadata"]

logger = logging.getLogger(__name__)

ROUTING_HEADER = "x-nnserve-model"
FORWARDED_HEADER = "x-nnserve-forwarded-by"
# The calls that change something: refused here once the lease is in doubt.
WRITE_METHODS = frozenset({"CreateModel", "DeleteModel", "TrainStep", "SetState", "SetWeights",
                           "TrainStream", "UploadDataset", "DeleteDataset", "CreateTrainingJob",
                           "CancelTrainingJob", "ImportModel"})
# The Open Inference Protocol's unary model calls: their request message, whose field
# `model_name` or `name` names the model.
_OIP_SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_MODEL_IN_REQUEST = {f"/{_OIP_SERVICE}/{method}": (message, field) for method, message, field in (
    ("ModelInfer", oip.ModelInferRequest, "model_name"),
    ("ModelMetadata", oip.ModelMetadataRequest, "name"),
    ("ModelReady", oip.ModelReadyRequest, "name"),
    ("ModelConfig", oip.ModelConfigRequest, "name"))}


def _model_in_request(method, request):
    """The model a unary call's raw request names ("" when the method names none or the
    bytes do not parse: the call then runs here and fails as any malformed request)."""
    found = _MODEL_IN_REQUEST.get(method)
    if found is None:
        return ""
    message, field = found
    try:
        return getattr(message.FromString(request), field)
    except DecodeError:
        return ""


class ClusterNode:
    """This server in the cluster: its Membership, its registry and the shared store."""

    def __init__(self, membership, registry, store):
        self.membership = membership
        self.registry = registry
        registry.cluster = self
        self._store = store
        self._claiming = threading.Lock()  # one claim at a time: two calls never race ourselves
        self.on_adopted = []  # hooks run with the id of a model restored here (its jobs' records)
        membership.on_lease_lost.append(self._evict)
        store.on_stale.append(lambda model_id: self._evict([model_id]))

    def _evict(self, model_ids):
        for model_id in model_ids:
            self.registry.evict(model_id)
            self._store.forget_local(model_id)

    def locate(self, key, method, forwarded):
        """None: serve the call here; else the address of the model's owner."""
        membership = self.membership
        entry = self.registry.find(key)
        if entry is not None and membership.owns(entry.id):
            self._check_lease(method)
            return None
        model_id = membership.resolve(key)
        if model_id is None:  # no such name in the cluster: answered here (NOT_FOUND, or created)
            return None
        with self._claiming:
            if membership.owns(model_id):
                self._check_lease(method)
                return None
            owner = membership.owner(model_id)
            if owner is None:
                pointer = membership.pointer(model_id)
                if pointer is None:  # no such model, or one being created (CreateModel's id)
                    return None
                won, found = membership.claim(model_id)
                if won:
                    self._adopt(model_id, found)
                    return None
                owner = found
                if owner is None:
                    return None
        if owner == membership.advertise or forwarded:
            # Our own key from before a restart (it expires with that lease), or a forward
            # that raced a hand-off: either settles within a TTL.
            raise Unavailable(f"{method}: model {key} is changing owner; try again")
        return owner

    def _check_lease(self, method):
        if method in WRITE_METHODS:
            self.membership.check_writable(method)
        else:
            self.membership.check_readable(method)

    def _adopt(self, model_id, pointer):
        """Restore a just-claimed model from its committed checkpoint."""
        try:
            record = self._store.read(pointer["file"])
            if not pointer["clean"]:  # its last owner may have handed out later versions
                record["version"] += VERSION_GAP_AFTER_CRASH
            self.registry.restore(record)
        except BaseException:
            self.membership.release(model_id)
            raise
        self._store.adopted(model_id, record["name"], pointer["file"])
        for hook in self.on_adopted:
            hook(model_id)
        logger.info("model adopted", extra={"event": "model_adopted", "model_id": model_id,
                                            "file": pointer["file"], "step": record["step"]})

    # -- what the registry asks -----------------------------------------------------------

    def claim_new(self, model_id, name):
        self.membership.claim_new(model_id, name)

    def abandon_new(self, model_id, name):
        token = self.membership.token(model_id)
        if token is not None:
            self.membership.forget(model_id, token, name)

    def check_writable(self, method):
        self.membership.check_writable(method)


class _NoCluster:
    """What the registry calls on a single server: nothing happens."""

    def claim_new(self, model_id, name):
        pass

    abandon_new = claim_new

    def check_writable(self, method):
        pass


NO_CLUSTER = _NoCluster()


def forwarded_metadata(metadata, advertise):
    """A forward's metadata: the caller's (its token included), less what gRPC sets itself,
    and the forwarding server's address."""
    kept = [(key, value) for key, value in metadata
            if not key.startswith((":", "grpc-")) and key not in ("user-agent", "te", "content-type")]
    return (*kept, (FORWARDED_HEADER, advertise))


class OwnerChannels:
    """One channel per owner address, opened on first use, for every forward: plaintext, or
    TLS with `credentials` (service.tls.forward_credentials), the owner's certificate checked
    for `server_name` (empty: the address's host)."""

    def __init__(self, credentials=None, server_name=""):
        self._credentials = credentials
        self._options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._channels = {}  # owner address -> grpc.Channel
        self._lock = threading.Lock()

    def __call__(self, address):
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = (
                    grpc.secure_channel(address, self._credentials, options=self._options)
                    if self._credentials else grpc.insecure_channel(address, options=self._options))
            return channel


class ClusterRouter(MethodInterceptor):
    """Run each model call here or at its owner (module docstring). Placed before the
    ErrorInterceptor, whose handlers take raw request bytes, as forwarding does."""

    def __init__(self, node, channels, prefixes):
        super().__init__()
        self._node = node
        self._channels = channels
        self._prefixes = prefixes

    def _target(self, method, context, request=b""):
        """None to run here, else (channel, metadata, timeout) of the forward; aborts with
        UNAVAILABLE when etcd cannot say. `request`: a unary call's raw request."""
        metadata = dict(context.invocation_metadata())
        key = metadata.get(ROUTING_HEADER) or _model_in_request(method, request)
        if not key:
            return None
        name = method.rsplit("/", 1)[-1]
        try:
            owner = self._node.locate(key, name, FORWARDED_HEADER in metadata)
        except Unavailable as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        if owner is None:
            return None
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None and remaining < 1e6 else None
        return (self._channels(owner),
                forwarded_metadata(context.invocation_metadata(), self._node.membership.advertise),
                timeout)

    def wrap(self, method, handler):
        if not method.startswith(self._prefixes):
            return handler
        serialize = handler.response_serializer
        target_of = self._target

        def relay(call, context):
            context.add_callback(call.cancel)
            try:
                yield from call
            except grpc.RpcError as error:
                context.abort(error.code(), error.details())

        if handler.unary_unary is not None:
            def unary_unary(request, context):
                target = target_of(method, context, request)
                if target is None:
                    return serialize(handler.unary_unary(request, context))
                channel, metadata, timeout = target
                try:
                    return channel.unary_unary(method)(request, metadata=metadata, timeout=timeout)
                except grpc.RpcError as error:
                    context.abort(error.code(), error.details())
            return grpc.unary_unary_rpc_method_handler(unary_unary)
        if handler.stream_unary is not None:
            def stream_unary(requests, context):
                target = target_of(method, context)
                if target is None:
                    return serialize(handler.stream_unary(requests, context))
                channel, metadata, timeout = target
                try:
                    return channel.stream_unary(method)(requests, metadata=metadata, timeout=timeout)
                except grpc.RpcError as error:
                    context.abort(error.code(), error.details())
            return grpc.stream_unary_rpc_method_handler(stream_unary)
        if handler.unary_stream is not None:
            def unary_stream(request, context):
                target = target_of(method, context, request)
                if target is None:
                    yield from map(serialize, handler.unary_stream(request, context))
                    return
                channel, metadata, timeout = target
                yield from relay(channel.unary_stream(method)(request, metadata=metadata,
                                                              timeout=timeout), context)
            return grpc.unary_stream_rpc_method_handler(unary_stream)
        if handler.stream_stream is not None:
            def stream_stream(requests, context):
                target = target_of(method, context)
                if target is None:
                    yield from map(serialize, handler.stream_stream(requests, context))
                    return
                channel, metadata, timeout = target
                yield from relay(channel.stream_stream(method)(requests, metadata=metadata,
                                                               timeout=timeout), context)
            return grpc.stream_stream_rpc_method_handler(stream_stream)
        return handler
