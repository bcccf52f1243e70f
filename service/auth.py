"""Bearer tokens with two scopes, checked before a ModelService call runs.

Tokens come from files named by `--read-tokens-file` and `--write-tokens-file`: one token
per line, surrounding whitespace stripped, blank lines and lines starting with `#`
ignored. A token is 16 to 4096 printable ASCII characters without spaces (a random
32-byte token, `python -c "import secrets; print(secrets.token_urlsafe(32))"`, is what to
use). A token listed in both files has write scope.

The files are read at start (a missing or malformed file stops the start) and again when
one of them changes on disk, because a restart would lose the models held in memory:
rotating a token must not need one. A ModelService call looks at the files' stat
signatures (mtime, size, inode, following symlinks, so the symlink swap Kubernetes does
for a mounted Secret counts) at most once per `RELOAD_INTERVAL` seconds, on the caller's
thread (no watcher thread; the call that looks pays a few stats, the others one clock
read). A changed pair of files replaces the whole token table at once: a removed token is
refused from then on, an added one accepted, a token moved between the files takes the
scope of its new file; calls already admitted run on. A replacement that cannot be read
or is malformed is logged once (`auth_reload_failed`, naming the file and line) and the
previous tokens stay in use until the next change, so a bad edit cannot lock every
client out.

Clients send the metadata `authorization: Bearer <token>` on every call (on the REST port,
the header `Authorization: Bearer <token>`; service/http asks `AuthInterceptor.refusal` with
the scope of the gRPC method each route mirrors, so both ports share one table and one rule).

- read scope: GetModel, ListModels, Predict, Evaluate, GetState, GetDataset, ListDatasets,
  GetTrainingJob, ListTrainingJobs, WatchTrainingJob, PredictStream, ExportModel
  (`READ_METHODS`), and every method of the Open Inference Protocol
  (inference.GRPCInferenceService) but two, and so every route of the REST port but two;
- write scope: every other ModelService method, including any added later;
- no token needed: the health service (for probes), the protocol's ServerLive and
  ServerReady (its probes; on the REST port /v2/health/live and /v2/health/ready), server
  reflection (it describes the public contract, not models) and the metrics port.

No or an unknown token -> UNAUTHENTICATED; a read token on a write method ->
PERMISSION_DENIED. Tokens are held only as SHA-256 digests, a presented token is
compared with every known digest by `hmac.compare_digest` (no early exit), and no token
or digest is ever logged or put in an error message.
"""

import hashlib
import hmac
import logging
import os
import threading
import time
from pathlib import Path

import grpc

__all__ = ["PROTECTED_SERVICES", "READ", "READ_METHODS", "RELOAD_INTERVAL", "WRITE", "AuthInterceptor",
           "auth_interceptor", "bearer_token", "read_tokens_file", "required_scope"]

logger = logging.getLogger(__name__)

READ, WRITE = "read", "write"
READ_METHODS = frozenset({"GetModel", "ListModels", "Predict", "Evaluate", "GetState",
                          "GetDataset", "ListDatasets", "GetTrainingJob", "ListTrainingJobs",
                          "WatchTrainingJob", "PredictStream", "ExportModel"})
OIP_READ_METHODS = frozenset({"ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
                              "ModelStreamInfer", "ModelConfig", "RepositoryIndex"})
# Per protected service: (the methods a read token may call, the methods that need no token).
# Any other method of these services needs write scope, so a method added later is closed
# until it is listed.
PROTECTED_SERVICES = {
    "nnserve.v1.ModelService": (READ_METHODS, frozenset()),
    "inference.GRPCInferenceService": (OIP_READ_METHODS, frozenset({"ServerLive", "ServerReady"})),
}
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096
# Seconds between two looks at the tokens files: a rotation takes effect within about this
# long, and the calls in between pay one clock read instead of two stats.
RELOAD_INTERVAL = 1.0


def _valid_token(token):
    return (MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH and token.isascii()
            and token.isprintable() and " " not in token)


def read_tokens_file(path, option):
    """Return the tokens of one tokens file; ValueError (naming the line, never the token)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as error:
        raise OSError(f"{option}: cannot read {path}: {error.strerror or error}") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if not _valid_token(token):
            raise ValueError(f"{option} {path} line {number}: got a token of {len(token)} characters, "
                             f"expected {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} printable ASCII "
                             "characters without spaces")
        tokens.append(token)
    if not tokens:
        raise ValueError(f"{option} {path}: got no token, expected at least one (one per line)")
    return tokens


def required_scope(method):
    """READ or WRITE for a method ("/package.Service/Name") that needs a token, else None."""
    service, _, name = method[1:].rpartition("/")
    rule = PROTECTED_SERVICES.get(service)
    if rule is None or name in rule[1]:
        return None
    return READ if name in rule[0] else WRITE


def _digest(token):
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def bearer_token(value):
    """The token of an authorization value `Bearer <token>`, or None (no value, another scheme)."""
    scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _bearer(metadata):
    """The token of the `authorization: Bearer <token>` metadata, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            return bearer_token(value)
    return None


def _refusal(code, message, method, handler):
    """A handler of the same kind as `handler` (unary or streaming, either way) that ends
    the call with `code` before reading any request."""
    def refuse(request, context):
        logger.info("call refused: %s", message, extra={
            "event": "auth_refused", "method": method, "code": code.name, "peer": context.peer()})
        context.abort(code, message)

    def refuse_stream(request, context):
        refuse(request, context)
        yield  # never reached: a generator, as a response-streaming handler must be

    if handler is not None and handler.response_streaming:
        factory = (grpc.stream_stream_rpc_method_handler if handler.request_streaming
                   else grpc.unary_stream_rpc_method_handler)
        return factory(refuse_stream)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)  # no deserializer: the bytes stay unread


class AuthInterceptor(grpc.ServerInterceptor):
    """Let a call to a protected service through only with a token of the method's scope.

    The tokens come from the files and follow them when they change (see the module
    docstring); `reload_interval` is the least number of seconds between two looks.
    Raises OSError or ValueError when a file cannot be read or is malformed at start.
    """

    def __init__(self, read_tokens_file="", write_tokens_file="", *, reload_interval=RELOAD_INTERVAL):
        self._files = [(path, option, scope) for path, option, scope in (
            (read_tokens_file, "read_tokens_file", READ), (write_tokens_file, "write_tokens_file", WRITE))
            if path]
        self._interval = reload_interval
        self._lock = threading.Lock()  # one looker at a time, so a change is loaded and logged once
        self._signatures = self._stat()  # before reading, so a write during the read shows up next time
        self._scopes, self.counts = self._load()
        self._next_look = time.monotonic() + reload_interval
        self._unauthenticated = {}  # method -> handler, built once
        self._denied = {}

    def _stat(self):
        signatures = []
        for path, _, _ in self._files:
            try:
                info = os.stat(path)  # follows symlinks: a re-pointed link changes st_ino
                signatures.append((info.st_mtime_ns, info.st_size, info.st_ino))
            except OSError:
                signatures.append(None)
        return signatures

    def _load(self):
        """(digest table, token counts by scope) of the files; OSError or ValueError."""
        scopes, counts = {}, {READ: 0, WRITE: 0}
        for path, option, scope in self._files:  # the write file comes last: a token in both has write scope
            tokens = read_tokens_file(path, option)
            scopes.update((_digest(token), scope) for token in tokens)
            counts[scope] = len(tokens)
        return list(scopes.items()), counts

    def _reload_if_changed(self):
        if not self._lock.acquire(blocking=False):
            return  # no call waits behind another's file reads; it uses the current table
        try:
            now = time.monotonic()
            if now < self._next_look:  # another call looked since this one read the clock
                return
            self._next_look = now + self._interval
            signatures = self._stat()
            if signatures == self._signatures:
                return
            # Remembered even when the load fails: one error per bad state, and the next
            # change (a fixed file) is tried again.
            self._signatures = signatures
            try:
                scopes, counts = self._load()
            except (OSError, ValueError) as error:  # their messages name the file and line only
                logger.error("tokens files changed but cannot be loaded; keeping the previous tokens: %s",
                             error, extra={"event": "auth_reload_failed"})
                return
            except Exception as error:  # never fail a call over it; the message might quote the file
                logger.error("tokens files changed but cannot be loaded; keeping the previous tokens: %s",
                             type(error).__name__, extra={"event": "auth_reload_failed"})
                return
            self._scopes = scopes  # one assignment: a call sees the old table or the new, whole
            self.counts = counts
            logger.info("bearer tokens reloaded", extra={
                "event": "auth_reloaded", "read_tokens": counts[READ], "write_tokens": counts[WRITE]})
        finally:
            self._lock.release()

    def scope(self, token):
        """READ, WRITE or None: compared with every known token in constant time."""
        presented = _digest(token)
        found = None
        for digest, scope in self._scopes:  # a reload rebinds the attribute; this loop keeps its list
            if hmac.compare_digest(presented, digest) and found != WRITE:
                found = scope
        return found

    def refusal(self, token, required):
        """None when `token` (None: no token presented) may make a call of scope `required`;
        else the code to refuse it with: UNAUTHENTICATED (no or an unknown token) or
        PERMISSION_DENIED (a read token where write scope is required). Looks at the tokens
        files first when the reload interval has passed."""
        if time.monotonic() >= self._next_look:
            self._reload_if_changed()
        scope = self.scope(token) if token is not None else None
        if scope is None:
            return grpc.StatusCode.UNAUTHENTICATED
        if scope == READ and required == WRITE:
            return grpc.StatusCode.PERMISSION_DENIED
        return None

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        required = required_scope(method)
        if required is None:
            return continuation(handler_call_details)  # health, reflection, probes: open
        name = method.rpartition("/")[2]
        code = self.refusal(_bearer(handler_call_details.invocation_metadata), required)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            handler = self._unauthenticated.get(method)
            if handler is None:
                handler = self._unauthenticated[method] = _refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "authorization: got no valid bearer token, expected metadata "
                    "'authorization: Bearer <token>' with a token of this server", method,
                    continuation(handler_call_details))
            return handler
        if code == grpc.StatusCode.PERMISSION_DENIED:
            handler = self._denied.get(method)
            if handler is None:
                handler = self._denied[method] = _refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"authorization: got a token with read scope, expected write scope for {name} "
                    f"(read scope allows {', '.join(sorted(READ_METHODS))})", method,
                    continuation(handler_call_details))
            return handler
        return continuation(handler_call_details)


def auth_interceptor(settings):
    """The AuthInterceptor the settings ask for, or None when neither tokens file is set."""
    if not (settings.read_tokens_file or settings.write_tokens_file):
        return None
    # RELOAD_INTERVAL is looked up here, not bound as a default, so a test can shorten it.
    interceptor = AuthInterceptor(settings.read_tokens_file, settings.write_tokens_file,
                                  reload_interval=RELOAD_INTERVAL)
    logger.info("bearer tokens required", extra={
        "event": "auth_enabled", "read_tokens": interceptor.counts[READ],
        "write_tokens": interceptor.counts[WRITE]})
    if not settings.tls_cert and settings.host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        logger.warning("bearer tokens travel in clear text without --tls-cert", extra={
            "event": "auth_without_tls", "host": settings.host})
    return interceptor
