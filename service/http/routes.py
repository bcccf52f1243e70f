"""The Open Inference Protocol's REST binding (KServe v2) on an OpenInference, as an aiohttp
application.

Each route is the HTTP form of one method of inference.GRPCInferenceService and takes that
method's token scope (service/auth.py's table, so both ports share one rule). A request
goes: token -> admission (--max-concurrent-rpcs, shared with gRPC) -> body (at most
--max-message-bytes, refused by its Content-Length before it is read) -> the operation, on
a thread of the pool (decoding, predicting and encoding never run on the event loop) ->
the response. The health routes answer on the event loop, without token or admission:
probes must get through an overload. Every refusal is a JSON body `{"error": "..."}` with
the HTTP status of its gRPC code (service/errors.py: http_status); every request is counted
in nnserve_http_requests_total and timed in nnserve_http_request_duration_seconds.
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import NamedTuple

import grpc
from aiohttp import web

from nnserve.oip import model_config_pb2 as config_pb

from ..auth import bearer_token, required_scope
from ..errors import (DOMAIN_ERRORS, LimitExceeded, PermissionDenied, Unauthenticated, http_status,
                      internal_message, limit_message)
from ..open_inference import EXTENSIONS, OIP_SERVICE_NAME, PLATFORM, server_version
from ..playground.routes import add_playground_routes
from .bodies import HEADER_LENGTH, decode_infer, encode_infer

__all__ = ["ROUTES", "application"]

logger = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route matched (404, 405)
COUNTED_METHODS = frozenset({"GET", "POST"})  # other methods share one label: bounded series
JSON = "application/json"
READ_CHUNK = 1 << 16


class Reply(NamedTuple):
    """What an operation answers: status, body bytes and extra headers."""

    status: int
    body: bytes
    headers: dict


def _json(payload, status=200):
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), {"Content-Type": JSON})


# -- the operations: (inference, model, version, request body, header length) -> Reply --------

def _live(inference, model, version, body, header_length):
    return _json({"live": True})


def _ready(inference, model, version, body, header_length):
    ready = inference.ready()
    return _json({"ready": ready}, 200 if ready else 503)


def _server_metadata(inference, model, version, body, header_length):
    return _json({"name": PLATFORM, "version": server_version(), "extensions": list(EXTENSIONS)})


def _model_metadata(inference, model, version, body, header_length):
    versions, inputs, outputs = inference.metadata(model, version)
    return _json({"name": model, "versions": versions, "platform": PLATFORM,
                  "inputs": [{"name": n, "datatype": t, "shape": list(s)} for n, t, s in inputs],
                  "outputs": [{"name": n, "datatype": t, "shape": list(s)} for n, t, s in outputs]})


def _model_ready(inference, model, version, body, header_length):
    inference.entry(model, version)
    return _json({"name": model, "ready": True})


def _model_config(inference, model, version, body, header_length):
    """Triton's JSON form of the ModelConfig the gRPC binding returns (integers as numbers)."""
    config = inference.config(model, version)

    def tensor(spec):
        return {"name": spec.name, "data_type": config_pb.DataType.Name(spec.data_type),
                "dims": list(spec.dims)}

    return _json({"name": config.name, "platform": config.platform, "backend": config.backend,
                  "max_batch_size": config.max_batch_size,
                  "input": [tensor(spec) for spec in config.input],
                  "output": [tensor(spec) for spec in config.output]})


def _repository_index(inference, model, version, body, header_length):
    return _json([{"name": name, "version": current, "state": "READY"}
                  for name, current in inference.index()])


def _infer(inference, model, version, body, header_length):
    decoded = decode_infer(model, version, body, header_length)
    result_version, outputs = inference.infer(decoded.request)
    content, json_length = encode_infer(decoded, result_version, outputs)
    if json_length is None:
        return Reply(200, content, {"Content-Type": JSON})
    return Reply(200, content, {"Content-Type": "application/octet-stream",
                                HEADER_LENGTH: str(json_length)})


class Route(NamedTuple):
    method: str
    path: str  # aiohttp's template, also the metrics label
    grpc_method: str  # the method of inference.GRPCInferenceService it is the form of
    operation: object
    probe: bool = False  # answered on the event loop, without token or admission


VERSION = "/versions/{version}"
ROUTES = (
    Route("GET", "/v2/health/live", "ServerLive", _live, probe=True),
    Route("GET", "/v2/health/ready", "ServerReady", _ready, probe=True),
    Route("GET", "/v2", "ServerMetadata", _server_metadata),
    *(route for suffix in ("", VERSION) for route in (
        Route("GET", "/v2/models/{model}" + suffix, "ModelMetadata", _model_metadata),
        Route("GET", "/v2/models/{model}" + suffix + "/ready", "ModelReady", _model_ready),
        Route("GET", "/v2/models/{model}" + suffix + "/config", "ModelConfig", _model_config),
        Route("POST", "/v2/models/{model}" + suffix + "/infer", "ModelInfer", _infer))),
    Route("POST", "/v2/repository/index", "RepositoryIndex", _repository_index),
)


def _error(status, message, headers=None):
    return web.json_response({"error": message}, status=status, headers=headers)


class _Binding:
    """The routes' handlers and middleware over one OpenInference."""

    def __init__(self, inference, auth, limit, max_body_bytes, executor, metrics):
        self._inference = inference
        self._auth = auth  # AuthInterceptor or None (no tokens required)
        self._limit = limit  # ConcurrencyLimit or None
        self._max_body_bytes = max_body_bytes
        self._executor = executor
        self._metrics = metrics

    @web.middleware
    async def observed(self, request, handler):
        """Count and time the request; turn every refusal into a JSON error."""
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        try:
            with self._metrics.in_flight():
                response = await handler(request)
        except web.HTTPException as error:  # the router's: no such path, or not this method
            response = _error(error.status, self._router_message(request, error))
        except DOMAIN_ERRORS as error:
            response = self._refusal(request, error)
        except Exception as error:
            logger.exception("internal error in %s %s", request.method, route,
                             extra={"event": "internal_error", "method": f"{request.method} {route}"})
            response = _error(500, internal_message(error))
        method = request.method if request.method in COUNTED_METHODS else "OTHER"
        self._metrics.http_handled(method, route, response.status, time.perf_counter() - started)
        return response

    def _router_message(self, request, error):
        if error.status == 405:
            allowed = ", ".join(sorted(error.allowed_methods))
            return f"method: got {request.method} for {request.path}, expected {allowed}"
        return (f"path: got {request.path}, expected a route of the Open Inference Protocol "
                "(/v2, /v2/health/live|ready, /v2/models/{model}[/versions/{version}]"
                "[/ready|/config|/infer], /v2/repository/index)")

    def _refusal(self, request, error):
        status = http_status(error)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif status == 429:
            headers["Retry-After"] = "1"  # whole seconds only: gRPC's 50-250 ms pushback rounded up
        response = _error(status, str(error), headers)
        if status == 413 and request.can_read_body:
            response.force_close()  # the body stays unread: close rather than drain it
        return response

    def handler(self, route):
        scope = required_scope(f"/{OIP_SERVICE_NAME}/{route.grpc_method}")

        async def handle(request):
            model = request.match_info.get("model", "")
            version = request.match_info.get("version", "")
            if route.probe:
                return _response(route.operation(self._inference, model, version, b"", None))
            if scope is not None:
                self.authorize(request, f"{route.method} {route.path}", route.grpc_method, scope)
            with self._admission() as workers:
                body = await self.body(request)
                loop = asyncio.get_running_loop()
                inference = self._inference.for_caller(request.headers.get("Authorization", ""))
                reply = await loop.run_in_executor(
                    self._executor, _run, workers, route.operation, inference, model,
                    version, body, request.headers.get(HEADER_LENGTH))
            return _response(reply)

        return handle

    def authorize(self, request, label, operation, scope):
        """Refuse (Unauthenticated, PermissionDenied) a request without a bearer token of
        `scope`; `label` names the route in the log, `operation` what the scope is for."""
        if self._auth is None:
            return
        code = self._auth.refusal(bearer_token(request.headers.get("Authorization")), scope)
        if code is None:
            return
        logger.info("request refused: %s", code.name, extra={
            "event": "auth_refused", "method": label, "code": code.name, "peer": request.remote})
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise Unauthenticated("authorization: got no valid bearer token, expected the header "
                                  "'Authorization: Bearer <token>' with a token of this server")
        raise PermissionDenied(f"authorization: got a token without {scope} scope, expected one "
                               f"with {scope} scope for {operation}")

    async def call(self, function, *args):
        """function(*args) on the pool, admitted as any request (--max-concurrent-rpcs)."""
        with self._admission() as workers:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, _run, workers, function, *args)

    def _admission(self):
        return self._limit.admission() if self._limit is not None else contextlib.nullcontext()

    async def body(self, request):
        """The request body; LimitExceeded past --max-message-bytes (by Content-Length before
        reading any of it)."""
        if not request.can_read_body:
            return b""
        limit = self._max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise LimitExceeded(limit_message("max_message_bytes", f"a body of {length} bytes",
                                              f"{limit} bytes"))
        body = bytearray()
        while chunk := await request.content.read(READ_CHUNK):
            body += chunk
            if len(body) > limit:
                raise LimitExceeded(limit_message("max_message_bytes", f"a body of more than {limit} bytes",
                                                  f"{limit} bytes"))
        return bytes(body)


def _run(workers, operation, *args):
    """An operation on a pool thread, holding one of the shared worker slots if limited."""
    if workers is None:
        return operation(*args)
    with workers:
        return operation(*args)


def _response(reply):
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


def application(inference, *, auth, limit, max_body_bytes, executor, metrics, playground=None):
    """The aiohttp Application of the routes: `auth` an AuthInterceptor or None, `limit` a
    ConcurrencyLimit or None, `executor` the pool operations run on; with a `playground`
    (service.playground.Playground) also its page and API under /playground."""
    binding = _Binding(inference, auth, limit, max_body_bytes, executor, metrics)
    app = web.Application(middlewares=[binding.observed])
    for route in ROUTES:
        app.router.add_route(route.method, route.path, binding.handler(route))
    if playground is not None:
        add_playground_routes(app, binding, playground)
    return app
