"""The shape shared by the interceptors that wrap each method's handler."""

import grpc

__all__ = ["MethodInterceptor"]


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
