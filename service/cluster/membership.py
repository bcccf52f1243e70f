"""One server's standing in the cluster: its etcd lease, the models it owns, their pointers.

Keys (values are UTF-8 text):
- /nnserve/models/<id>/owner: the owner's advertise address, attached to its lease. Its
  create revision is the owner's fencing token: a new claim makes a new key, so a higher
  revision than any an older owner held.
- /nnserve/models/<id>/checkpoint: the model's last committed checkpoint, JSON
  {"file": name in the shared directory, "clean": bool}; clean means the owner released the
  model after that write (no version was handed out past it).
- /nnserve/names/<name>: the id of the model with that name.

The lease is kept alive by one thread. `readable()` holds while the lease is provably alive
in etcd (the last keepalive was sent less than a TTL ago), `writable()` while it is a
safety margin short of that; a server that cannot reach etcd thus stops writing before
another could claim its models, and stops reading once another could.
"""

import json
import logging
import threading
import time
from urllib.parse import urlsplit

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception
from etcd3gw.lease import Lease
from etcd3gw.utils import _decode, _encode

from ..errors import AlreadyExists, Unavailable

__all__ = ["LeaseLost", "Membership"]

logger = logging.getLogger(__name__)

_PREFIX = "/nnserve"
_REQUEST_SECONDS = 2.0  # one etcd request's timeout, well under any useful TTL


class LeaseLost(Exception):
    """etcd no longer knows this server's lease: its models may be someone else's now."""


def _owner_key(model_id):
    return f"{_PREFIX}/models/{model_id}/owner"


def _pointer_key(model_id):
    return f"{_PREFIX}/models/{model_id}/checkpoint"


def _name_key(name):
    return f"{_PREFIX}/names/{name}"


def _absent(key):
    return {"key": _encode(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}


def _created_at(key, revision):
    return {"key": _encode(key), "result": "EQUAL", "target": "CREATE", "create_revision": revision}


def _put(key, value, lease=None):
    put = {"key": _encode(key), "value": _encode(value)}
    if lease is not None:
        put["lease"] = lease
    return {"request_put": put}


def _delete(key):
    return {"request_delete_range": {"key": _encode(key)}}


def _range(key):
    return {"request_range": {"key": _encode(key)}}


def _first_kv(response):
    """(value, create revision) of the one key a range response found, or (None, 0)."""
    kvs = response.get("response_range", response).get("kvs") or []
    if not kvs:
        return None, 0
    value = _decode(kvs[0]["value"]).decode() if "value" in kvs[0] else ""
    return value, int(kvs[0]["create_revision"])


class _Endpoints:
    """The members of an etcd cluster, asked one at a time.

    A request that could not connect (refused: never sent) goes on to the next member at
    once. One that timed out is not sent again (etcd may have applied it: a claim sent
    twice would fail its own "only if absent"), but the next request starts at the next
    member. The lease and every key are the cluster's, so any member serves any request.
    """

    def __init__(self, endpoints):
        self._clients = []
        for endpoint in endpoints.split(","):
            url = urlsplit(endpoint.strip())
            self._clients.append(Etcd3Client(host=url.hostname, port=url.port or 2379,
                                             protocol=url.scheme or "http", timeout=_REQUEST_SECONDS))
        self._current = 0
        self._lock = threading.Lock()

    def __call__(self, request, *args):
        """request(client, *args) on the current member, then the others if it is down."""
        for attempt in range(len(self._clients)):
            with self._lock:
                index = self._current
            try:
                return request(self._clients[index], *args)
            except (ConnectionFailedError, ConnectionTimeoutError) as error:
                with self._lock:
                    if self._current == index:
                        self._current = (index + 1) % len(self._clients)
                logger.warning("etcd member %d of %d unreachable: %s", index + 1, len(self._clients),
                               _reason(error), extra={"event": "etcd_member_unreachable", "member": index})
                if isinstance(error, ConnectionTimeoutError) or attempt == len(self._clients) - 1:
                    raise


def _reason(error):
    """An etcd error for a log line: etcd3gw's connection errors carry no text, their type
    is the reason."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _transaction(client, request):
    return client.transaction(request)


def _refresh(client, lease_id):
    return Lease(lease_id, client).refresh()


def _revoke(client, lease_id):
    return Lease(lease_id, client).revoke()


class Membership:
    """This server's lease and claims in etcd (module docstring).

    endpoints: "http://host:port" of etcd, or a comma-separated list of its members';
    advertise: the host:port other servers reach this one at; ttl: the lease's seconds.
    Raises Unavailable when etcd cannot be reached at start.
    """

    def __init__(self, endpoints, advertise, ttl):
        self._etcd = _Endpoints(endpoints)
        self.advertise = advertise
        self._ttl = ttl
        # Refuse writes this long before the lease could expire: the keepalive's own latency
        # and clock rate differences between this machine and etcd's.
        self._margin = max(1.0, ttl / 5)
        self._lock = threading.Lock()
        self._tokens = {}  # model id -> fencing token of our claim
        self._lease = None
        self._alive_since_send = -float("inf")  # monotonic time the last good keepalive was sent
        self.on_lease_lost = []  # hooks run when a lease lapsed: our models may be others' now
        self._stopping = threading.Event()
        self._grant()
        self._thread = threading.Thread(target=self._keep_alive, name="nnserve-lease", daemon=True)
        self._thread.start()

    # -- the lease ---------------------------------------------------------------------

    def _call(self, what, request, *args):
        """request(etcd client, *args) on a member that answers; Unavailable if none does."""
        try:
            return self._etcd(request, *args)
        except Etcd3Exception as error:
            raise Unavailable(f"cluster: cannot {what} in etcd ({type(error).__name__}); "
                              "try again") from None

    def _grant(self):
        sent = time.monotonic()
        lease = self._call("grant a lease", Etcd3Client.lease, self._ttl)
        with self._lock:
            self._lease, self._alive_since_send = lease, sent
        logger.info("cluster lease granted", extra={"event": "lease_granted", "lease": lease.id,
                                                    "ttl": self._ttl, "advertise": self.advertise})

    def _keep_alive(self):
        while not self._stopping.wait(self._ttl / 4):
            sent = time.monotonic()
            try:
                ttl = self._etcd(_refresh, self._lease.id)
            except Exception as error:  # etcd unreachable: keep trying, the margin protects us
                logger.warning("cluster lease keepalive failed: %s", _reason(error),
                               extra={"event": "lease_keepalive_failed"})
                continue
            if ttl > 0:
                with self._lock:
                    self._alive_since_send = sent
                continue
            self._lease_lost()

    def _lease_lost(self):
        """Our owner keys are gone: forget every claim, tell the hooks, start a new lease."""
        with self._lock:
            lost, self._tokens = list(self._tokens), {}
            self._alive_since_send = -float("inf")
        logger.error("cluster lease expired: %d models given up", len(lost),
                     extra={"event": "lease_lost", "models": len(lost)})
        for hook in self.on_lease_lost:
            hook(lost)
        try:
            self._grant()
        except Unavailable:
            pass  # the next keepalive round finds the old lease dead again and retries

    def readable(self):
        """Whether the lease is certainly alive in etcd now (reads of owned models are safe)."""
        return time.monotonic() < self._alive_since_send + self._ttl

    def writable(self):
        """Whether the lease is alive with a safety margin to spare (writes are safe)."""
        return time.monotonic() < self._alive_since_send + self._ttl - self._margin

    def check_writable(self, method):
        """Raise Unavailable unless writes are safe."""
        if not self.writable():
            raise Unavailable(f"{method}: this server cannot prove its cluster lease is alive "
                              "(etcd unreachable); writes are refused until it can")

    def check_readable(self, method):
        if not self.readable():
            raise Unavailable(f"{method}: this server's cluster lease may have expired "
                              "(etcd unreachable); try again")

    # -- ownership ---------------------------------------------------------------------

    def token(self, model_id):
        """Our fencing token of a model, or None when we do not own it."""
        with self._lock:
            return self._tokens.get(model_id)

    def owns(self, model_id):
        return self.token(model_id) is not None

    def owner(self, model_id):
        """The advertise address of a model's owner, or None when nobody owns it."""
        return _first_kv(self._call("read an owner", _transaction,
                                    {"compare": [], "success": [_range(_owner_key(model_id))]})
                         ["responses"][0])[0]

    def resolve(self, key):
        """The id of a model key: the key itself when it is no name, else the name's id (or None)."""
        if len(key) == 32 and all(c in "0123456789abcdef" for c in key):
            return key
        response = self._call("read a name", _transaction,
                              {"compare": [], "success": [_range(_name_key(key))]})
        return _first_kv(response["responses"][0])[0]

    def pointer(self, model_id):
        """The committed checkpoint of a model ({"file", "clean"}), or None."""
        response = self._call("read a checkpoint pointer", _transaction,
                              {"compare": [], "success": [_range(_pointer_key(model_id))]})
        value = _first_kv(response["responses"][0])[0]
        return json.loads(value) if value else None

    def claim(self, model_id):
        """Take an unowned model that has a committed checkpoint; return (True, pointer) when
        it is ours now, (False, owner address or None) when another holds it or it has none."""
        self.check_writable("claim")
        response = self._call("claim a model", _transaction, {
            "compare": [_absent(_owner_key(model_id))],
            "success": [_put(_owner_key(model_id), self.advertise, self._lease.id),
                        _range(_pointer_key(model_id))],
            "failure": [_range(_owner_key(model_id))]})
        if not response.get("succeeded"):
            return False, _first_kv(response["responses"][0])[0]
        token = int(response["header"]["revision"])
        value = _first_kv(response["responses"][1])[0]
        if value is None:  # deleted meanwhile, or never committed: not a model to adopt
            self._unclaim(model_id, token)
            return False, None
        with self._lock:
            self._tokens[model_id] = token
        return True, json.loads(value)

    def claim_new(self, model_id, name):
        """Own a model being created: its id and name must be unused cluster-wide
        (AlreadyExists otherwise)."""
        self.check_writable("CreateModel")
        compare = [_absent(_owner_key(model_id)), _absent(_pointer_key(model_id))]
        success = [_put(_owner_key(model_id), self.advertise, self._lease.id)]
        if name:
            compare.append(_absent(_name_key(name)))
            success.append(_put(_name_key(name), model_id))
        response = self._call("claim a new model", _transaction,
                              {"compare": compare, "success": success, "failure": []})
        if not response.get("succeeded"):
            raise AlreadyExists(f"id {model_id!r} or name {name!r}: got one in use in the "
                                "cluster, expected an unused id and name")
        with self._lock:
            self._tokens[model_id] = int(response["header"]["revision"])

    def commit(self, model_id, token, file, clean=False):
        """Point a model's checkpoint at `file` if `token` is still its owner's; return
        whether it was (False: a newer owner took over, this write is stale)."""
        pointer = json.dumps({"file": file, "clean": clean})
        response = self._call("commit a checkpoint", _transaction, {
            "compare": [_created_at(_owner_key(model_id), token)],
            "success": [_put(_pointer_key(model_id), pointer)], "failure": []})
        return bool(response.get("succeeded"))

    def forget(self, model_id, token, name):
        """Delete a model cluster-wide (owner, pointer, name) if `token` still owns it."""
        success = [_delete(_owner_key(model_id)), _delete(_pointer_key(model_id))]
        if name:
            success.append(_delete(_name_key(name)))
        self._call("delete a model", _transaction, {
            "compare": [_created_at(_owner_key(model_id), token)], "success": success, "failure": []})
        with self._lock:
            self._tokens.pop(model_id, None)

    def release(self, model_id):
        """Give a model up (its owner key deleted if still ours); the next request anywhere
        claims it from its pointer."""
        with self._lock:
            token = self._tokens.pop(model_id, None)
        if token is not None:
            self._unclaim(model_id, token)

    def _unclaim(self, model_id, token):
        self._call("release a model", _transaction, {
            "compare": [_created_at(_owner_key(model_id), token)],
            "success": [_delete(_owner_key(model_id))], "failure": []})

    def close(self):
        """Stop the keepalive and revoke the lease: every owner key of ours goes at once."""
        self._stopping.set()
        self._thread.join()
        with self._lock:
            self._tokens.clear()
        try:
            self._etcd(_revoke, self._lease.id)
        except Exception as error:  # etcd gone: the lease expires by itself after the TTL
            logger.warning("cluster lease not revoked: %s", _reason(error), extra={"event": "lease_revoke_failed"})
