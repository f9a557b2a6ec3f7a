"""What the proxy's server interceptors share: each wraps a method's handler once and reuses
the wrapper on every later call of that method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    # grpc's classes are not generic at run time; only the stubs are.
    _Interceptor = grpc.aio.ServerInterceptor


class HandlerWrapper(_Interceptor):
    """A server interceptor that replaces the handlers `_wraps` accepts by `_wrap(handler)`."""

    def __init__(self) -> None:
        # Handlers are fixed per method, so each is wrapped once rather than on every call.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def _wraps(self, method: str, handler: Handler) -> bool:
        raise NotImplementedError

    def _wrap(self, handler: Handler) -> Handler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        # None (an unknown method) is passed through for grpc to answer UNIMPLEMENTED.
        handler: Handler | None = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self._wraps(method, handler):
            return handler  # type: ignore[return-value]
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
