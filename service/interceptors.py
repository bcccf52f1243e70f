"""The shape shared by the interceptors that wrap each ModelService method's behaviour."""

import grpc

__all__ = ["UnaryMethodInterceptor"]


class UnaryMethodInterceptor(grpc.ServerInterceptor):
    """Wrap every unary-unary method under `prefix`, once per method; `wrap` says how.

    The wrapped handler is built on a method's first call and reused while gRPC hands back
    the same handler, so a call pays one dict lookup here.
    """

    def __init__(self, prefix):
        self._prefix = prefix
        self._wrapped = {}  # method -> (handler from the continuation, wrapped handler)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefix):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, method, handler):
        """Return the RpcMethodHandler that replaces `handler` for `method`."""
        raise NotImplementedError
