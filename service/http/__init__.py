"""The Open Inference Protocol (KServe v2) over HTTP/REST, a second front on the same
OpenInference as the gRPC binding: routes.py (the routes, their scopes, errors and metrics),
bodies.py (infer bodies, JSON and binary), server.py (the port, its thread and event loop).
"""

from .server import HTTPServer, create_http_server

__all__ = ["HTTPServer", "create_http_server"]
