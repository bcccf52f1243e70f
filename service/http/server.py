"""The REST port: bound when the server is created, served by aiohttp from a thread running
an event loop of its own from start() to stop().

stop(grace) mirrors grpc's: the listening socket closes at once (new connections are
refused), idle keep-alive connections close, requests in flight get `grace` seconds to
answer and are cancelled after that; the returned Event is set once the loop has ended.
Operations run on a pool of `--workers` threads of the port's own, so a slow predict never
holds up the event loop, nor a REST flood the gRPC workers.
"""

import asyncio
import socket
import threading
from concurrent import futures

from aiohttp import web

from .routes import application

__all__ = ["HTTPServer", "create_http_server"]

# aiohttp takes a timeout <= 0 for "no timeout": a grace of 0 must still end.
LEAST_GRACE = 0.001


def _listening_socket(host, port):
    """A bound, listening TCP socket on host:port (0: any free port), SO_REUSEPORT off."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    dualstack = family == socket.AF_INET6 and host == "::" and socket.has_dualstack_ipv6()
    return socket.create_server((host, port), family=family, dualstack_ipv6=dualstack)


class HTTPServer:
    """An aiohttp application on a socket of its own; `port` is the bound port."""

    def __init__(self, app, sock, ssl_context, executor):
        self._app = app
        self._socket = sock
        self._ssl_context = ssl_context
        self._executor = executor
        self.port = sock.getsockname()[1]
        self._loop = None
        self._thread = None
        self._runner = None
        self._site = None
        self._stopping = False
        self._closed = threading.Event()

    def start(self):
        """Serve from a thread of its own; returns once the port accepts connections."""
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="nnserve-http", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result()

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._closed.set()

    async def _serve(self):
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.SockSite(self._runner, self._socket, ssl_context=self._ssl_context)
        await self._site.start()

    def stop(self, grace):
        """Stop serving; return a threading.Event set once every request has ended (within
        `grace` seconds) and the port is closed."""
        if self._stopping:
            return self._closed
        self._stopping = True
        if self._thread is None:  # never started
            self._socket.close()
            self._executor.shutdown(wait=False)
            self._closed.set()
        else:
            asyncio.run_coroutine_threadsafe(self._shutdown(grace), self._loop)
        return self._closed

    async def _shutdown(self, grace):
        try:
            await self._site.stop()
            server = self._runner.server
            server.pre_shutdown()  # idle keep-alive connections close; busy ones after their answer
            await server.shutdown(max(grace, LEAST_GRACE))
            await self._runner.cleanup()
        finally:
            asyncio.get_running_loop().stop()


def create_http_server(settings, inference, *, auth, limit, metrics, ssl_context, playground=None):
    """The bound, not yet serving, REST port of the settings (http_port -1: any free port),
    with the playground's page and API when given one. Raises OSError when it cannot be
    bound."""
    host = settings.host.strip("[]")
    port_wanted = max(settings.http_port, 0)
    try:
        sock = _listening_socket(host, port_wanted)
    except OSError as error:
        address = f"[{host}]:{port_wanted}" if ":" in host else f"{host}:{port_wanted}"
        raise OSError(f"cannot listen on {address} for HTTP (--http-port): {error}") from None
    executor = futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="nnserve-http")
    app = application(inference, auth=auth, limit=limit, max_body_bytes=settings.max_message_bytes,
                      executor=executor, metrics=metrics, playground=playground)
    return HTTPServer(app, sock, ssl_context, executor)
