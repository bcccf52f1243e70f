"""nnserve's gRPC service: registry, servicer, error mapping, health and `nnserve serve`.

    from nnserve.service import Settings, create_server
    server, port = create_server(Settings(host="127.0.0.1", port=0))
    server.start()
    ...
    server.stop(grace=5).wait()

`create_server` and `Server` are imported on first use, so that `nnserve --help` and
the settings stay light (no grpc server, no numba).
"""

from .settings import Settings

__all__ = ["Server", "Settings", "create_server"]


def __getattr__(name):
    if name in ("Server", "create_server"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
