"""Bearer tokens with two scopes, checked before a ModelService call runs.

Tokens come from files named by `--read-tokens-file` and `--write-tokens-file`: one token
per line, surrounding whitespace stripped, blank lines and lines starting with `#`
ignored. A token is 16 to 4096 printable ASCII characters without spaces (a random
32-byte token, `python -c "import secrets; print(secrets.token_urlsafe(32))"`, is what to
use). A token listed in both files has write scope. The files are read once at start;
restart (or roll the pods) to change them.

Clients send the metadata `authorization: Bearer <token>` on every call.

- read scope: GetModel, ListModels, Predict, Evaluate, GetState (`READ_METHODS`);
- write scope: every ModelService method, including any added later;
- no token needed: the health service (for probes), server reflection (it describes the
  public contract, not models) and the metrics port.

No or an unknown token -> UNAUTHENTICATED; a read token on a write method ->
PERMISSION_DENIED. Tokens are held only as SHA-256 digests, a presented token is
compared with every known digest by `hmac.compare_digest` (no early exit), and no token
or digest is ever logged or put in an error message.
"""

import hashlib
import hmac
import logging
from pathlib import Path

import grpc

__all__ = ["READ", "READ_METHODS", "WRITE", "AuthInterceptor", "auth_interceptor", "read_tokens_file"]

logger = logging.getLogger(__name__)

READ, WRITE = "read", "write"
READ_METHODS = frozenset({"GetModel", "ListModels", "Predict", "Evaluate", "GetState"})
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096


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


def _digest(token):
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def _bearer(metadata):
    """The token of the `authorization: Bearer <token>` metadata, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _refusal(code, message, method):
    def refuse(request, context):
        logger.info("call refused: %s", message, extra={
            "event": "auth_refused", "method": method, "code": code.name, "peer": context.peer()})
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)  # no deserializer: the bytes stay unread


class AuthInterceptor(grpc.ServerInterceptor):
    """Let a ModelService call (methods under `prefix`) through only with a token of its scope."""

    def __init__(self, prefix, read_tokens=(), write_tokens=()):
        self._prefix = prefix
        scopes = {_digest(token): READ for token in read_tokens}
        scopes.update({_digest(token): WRITE for token in write_tokens})
        self._scopes = list(scopes.items())
        self._unauthenticated = {}  # method -> handler, built once
        self._denied = {}

    def scope(self, token):
        """READ, WRITE or None: compared with every known token in constant time."""
        presented = _digest(token)
        found = None
        for digest, scope in self._scopes:
            if hmac.compare_digest(presented, digest) and found != WRITE:
                found = scope
        return found

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if not method.startswith(self._prefix):
            return continuation(handler_call_details)  # health, reflection: open
        name = method[len(self._prefix):]
        token = _bearer(handler_call_details.invocation_metadata)
        scope = self.scope(token) if token is not None else None
        if scope is None:
            handler = self._unauthenticated.get(method)
            if handler is None:
                handler = self._unauthenticated[method] = _refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "authorization: got no valid bearer token, expected metadata "
                    "'authorization: Bearer <token>' with a token of this server", method)
            return handler
        if scope == READ and name not in READ_METHODS:
            handler = self._denied.get(method)
            if handler is None:
                handler = self._denied[method] = _refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"authorization: got a token with read scope, expected write scope for {name} "
                    f"(read scope allows {', '.join(sorted(READ_METHODS))})", method)
            return handler
        return continuation(handler_call_details)


def auth_interceptor(settings, prefix):
    """The AuthInterceptor the settings ask for, or None when neither tokens file is set."""
    if not (settings.read_tokens_file or settings.write_tokens_file):
        return None
    read = read_tokens_file(settings.read_tokens_file, "read_tokens_file") if settings.read_tokens_file else ()
    write = (read_tokens_file(settings.write_tokens_file, "write_tokens_file")
             if settings.write_tokens_file else ())
    logger.info("bearer tokens required", extra={
        "event": "auth_enabled", "read_tokens": len(read), "write_tokens": len(write)})
    if not settings.tls_cert and settings.host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        logger.warning("bearer tokens travel in clear text without --tls-cert", extra={
            "event": "auth_without_tls", "host": settings.host})
    return AuthInterceptor(prefix, read, write)
