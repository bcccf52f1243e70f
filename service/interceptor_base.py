"""The shape shared by the interceptors that wrap each method's handler."""

import grpc

__all__ = ["MethodInterceptor", "UnaryMethodInterceptor"]


class MethodInterceptor(grpc.ServerInterceptor):
    """Replace each method's handler with `wrap(method, handler)`, built once per method.

    The wrapped handler is built on a method's first call and reused while gRPC hands back
    the same handler, so a call pays one dict lookup here. Unknown methods pass through
    (gRPC answers UNIMPLEMENTED itself).
    """

    def __init__(self):
        self._wrapped = {}  # method -> (handler from the continuation, wrapped handler)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, method, handler):
        """Return the RpcMethodHandler that replaces `handler` for `method` (or `handler`)."""
        raise NotImplementedError


class UnaryMethodInterceptor(MethodInterceptor):
    """Wrap the unary-unary methods under `prefix` with `wrap_unary`; others pass through."""

    def __init__(self, prefix):
        super().__init__()
        self._prefix = prefix

    def wrap(self, method, handler):
        if handler.unary_unary is None or not method.startswith(self._prefix):
            return handler
        return self.wrap_unary(method, handler)

    def wrap_unary(self, method, handler):
        """Return the RpcMethodHandler that replaces the unary-unary `handler` for `method`."""
        raise NotImplementedError
