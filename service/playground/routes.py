"""The playground over HTTP: its page, JSON API and Server-Sent Events, added to the REST
port's aiohttp application (service/http/routes.py), with its auth, admission, pool,
metrics and JSON errors.

    GET  /playground                          the page (static files under /playground/static/)
    POST /playground/api/models               a new model from settings          (write)
    GET  /playground/api/models/{model}       its state: settings, data, model   (read)
    POST /playground/api/models/{model}/settings|play|pause|step|reset           (write)
    GET  /playground/api/models/{model}/frame    one frame with the whole history (read)
    GET  /playground/api/models/{model}/events   Server-Sent Events: `state` when the
         settings, data or model change, `frame` when the weights do (at most
         MAX_FRAMES_PER_SECOND), each with the history epochs the stream has not sent yet
         (read)

A token goes in the `Authorization: Bearer` header, on the events too (the page reads
them with fetch, which can set it, rather than EventSource, which cannot).
"""

import asyncio
import functools
import json
from importlib import resources

from aiohttp import web

from ..auth import READ, WRITE
from ..errors import InvalidArgument
from .frames import FrameCache, state

__all__ = ["add_playground_routes"]

# A stream looks at its session this often, on the event loop (two integers: no pool
# thread waits), and builds a message on the pool only when something changed.
MAX_FRAMES_PER_SECOND = 20
STATIC = resources.files(__package__) / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                ".png": "image/png"}
API = "/playground/api/models"
ACTIONS = ("play", "pause", "step", "reset")


def _json(payload, status=200):
    return web.Response(status=status, text=json.dumps(payload, separators=(",", ":")),
                        content_type="application/json")


class _Playground:
    def __init__(self, binding, playground):
        self._binding = binding
        self._playground = playground
        self._frames = FrameCache(playground.GRID)
        self._state = functools.partial(state, links=playground.links)

    async def _session(self, request, scope, operation):
        route = request.match_info.route.resource.canonical  # the template: no names in logs
        self._binding.authorize(request, f"{request.method} {route}", operation, scope)
        return await self._binding.call(self._playground.session, request.match_info["model"])

    async def _settings_body(self, request):
        body = await self._binding.body(request)
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError as error:
            raise InvalidArgument(f"body: got invalid JSON ({error}), expected a settings object") from None

    async def page(self, request):
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html")

    async def static(self, request):
        name = request.match_info["name"]
        suffix = name[name.rfind("."):]
        if suffix not in STATIC_TYPES or "/" in name or name.startswith("."):
            raise web.HTTPNotFound()
        path = STATIC / name
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=STATIC_TYPES[suffix])

    async def create(self, request):
        self._binding.authorize(request, f"POST {API}", "creating a playground model", WRITE)
        settings = await self._settings_body(request)
        session = await self._binding.call(self._playground.create, settings)
        return _json(await self._binding.call(self._state, session), status=201)

    async def get(self, request):
        session = await self._session(request, READ, "watching a playground model")
        return _json(await self._binding.call(self._state, session))

    async def settings(self, request):
        session = await self._session(request, WRITE, "changing a playground model")
        update = await self._settings_body(request)
        await self._binding.call(self._playground.update, session, update)
        return _json(await self._binding.call(self._state, session))

    def action(self, name):
        async def act(request):
            session = await self._session(request, WRITE, f"{name} in the playground")
            await self._binding.call(getattr(self._playground, name), session)
            return _json(await self._binding.call(self._state, session))
        return act

    async def frame(self, request):
        session = await self._session(request, READ, "watching a playground model")
        return _json(await self._binding.call(self._frames.frame, session))

    async def events(self, request):
        session = await self._session(request, READ, "watching a playground model")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        binding = self._binding
        revision = version = epoch = playing = None
        epochs_sent = 0
        try:
            while request.transport is not None and not request.transport.is_closing():
                if session.revision != revision:
                    current = await binding.call(self._state, session)
                    revision, epochs_sent = current["revision"], len(current["history"]["loss"])
                    await response.write(_event("state", current))
                    version = None  # a new model or data starts at a version seen before: draw it
                entry = session.entry  # None while a settings change replaces the model
                # The epoch too: a job's last epoch can end after the frame of its last step.
                if entry is not None and (entry.network.version, session.epoch_now(),
                                          session.playing) != (version, epoch, playing):
                    frame = await binding.call(self._frames.frame, session, epochs_sent)
                    if (frame["version"], frame["epoch"], frame["playing"]) != (version, epoch, playing):
                        version, epoch, playing = frame["version"], frame["epoch"], frame["playing"]
                        epochs_sent += len(frame["history"]["loss"])
                        await response.write(_event("frame", frame))
                await asyncio.sleep(1 / MAX_FRAMES_PER_SECOND)
        except ConnectionResetError:  # the page went away
            pass
        return response


def _event(kind, payload):
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def add_playground_routes(app, binding, playground):
    """Add the page, its files and its API to `app`; `binding` is the REST port's."""
    routes = _Playground(binding, playground)
    app.router.add_get("/playground", routes.page)
    app.router.add_get("/playground/static/{name}", routes.static)
    app.router.add_post(API, routes.create)
    app.router.add_get(API + "/{model}", routes.get)
    app.router.add_post(API + "/{model}/settings", routes.settings)
    for name in ACTIONS:
        app.router.add_post(f"{API}/{{model}}/{name}", routes.action(name))
    app.router.add_get(API + "/{model}/frame", routes.frame)
    app.router.add_get(API + "/{model}/events", routes.events)
