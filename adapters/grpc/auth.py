"""Authentication at the transport: a server interceptor and the per-call principal it sets.

What the credentials mean is the application's business (application.authentication); the
interceptor only collects them. It cannot hand the principal to the servicer through grpc
objects without leaking them into use cases, so it wraps each RPC handler: the wrapper
authenticates, stores the Principal in a ContextVar, then runs the real handler in the same
task, where the servicer's principal provider (`current_principal`) reads it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

from adapters.grpc.wrapping import HandlerWrapper
from application.authentication import Credentials, IdentifyCaller
from application.ports import RefusalObserver
from domain.errors import AuthenticationFailed
from domain.principal import ANONYMOUS, Principal

log = logging.getLogger("llm_proxy.auth")

# Probes and tooling must work without credentials; they reveal nothing about models.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# The reason a refusal is counted under.
UNAUTHENTICATED = "unauthenticated"

_principal: ContextVar[Principal] = ContextVar("llm_proxy_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """The caller of the RPC running in this task; ANONYMOUS when nothing authenticated it."""
    return _principal.get()


if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]


class AuthInterceptor(HandlerWrapper):
    """Authenticates every call except health and reflection.

    It only gathers what the caller presented (authorization metadata, the verified client
    certificate's name) and hands it to the application's IdentifyCaller, which every
    transport shares.
    """

    def __init__(
        self, identify: IdentifyCaller | None = None, refusals: RefusalObserver | None = None
    ) -> None:
        if identify is None or not identify.enabled:
            raise ValueError("an AuthInterceptor needs a token verifier or a peer identity")
        super().__init__()
        self._identify = identify
        # Refusals are logged through this, rate-limited; without it, one line each.
        self._refusals = refusals
        self._needs_peer = identify.needs_peer_subject

    def _wraps(self, method: str, handler: Handler) -> bool:
        return not method.startswith(EXEMPT_PREFIXES)

    def authenticate(self, context: Context) -> Principal:
        return self._identify(credentials(context, peer=self._needs_peer))

    def _admit(self, context: Context) -> str | None:
        """Sets the caller's principal, or returns why the call is refused.

        Synchronous on purpose: on the accepted path, which is nearly every call, it costs no
        coroutine; only a refusal needs to await the abort.
        """
        try:
            _principal.set(self.authenticate(context))
        except AuthenticationFailed as exc:
            if self._refusals is not None:
                self._refusals.call_refused(UNAUTHENTICATED, context.peer(), exc.message)
            else:
                log.info("unauthenticated call refused: %s", exc.message)
            return exc.message
        return None

    def _wrap(self, handler: Handler) -> Handler:
        # grpc-stubs types behaviours as synchronous; on an aio server they are async. A call
        # is checked the same way whether its request is one message or a stream of them.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._checked_call(handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._checked_stream(handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._checked_call(handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._checked_stream(handler.stream_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _checked_call(self, behaviour: Any) -> Any:
        """A behaviour answering one response, run only for an admitted caller."""
        admit = self._admit
        refuse = _refuse

        async def checked(request: Any, context: Context) -> Any:
            if (refused := admit(context)) is not None:
                await refuse(context, refused)
            return await behaviour(request, context)

        return checked

    def _checked_stream(self, behaviour: Any) -> Any:
        """A behaviour yielding responses, run only for an admitted caller."""
        admit = self._admit
        refuse = _refuse

        async def checked(request: Any, context: Context) -> AsyncIterator[Any]:
            if (refused := admit(context)) is not None:
                await refuse(context, refused)
            async for item in behaviour(request, context):
                yield item

        return checked


async def _refuse(context: Context, reason: str) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)


def credentials(context: Context, *, peer: bool) -> Credentials:
    """What the caller of this call presented, uninterpreted."""
    authorization = tuple(
        value
        for key, value in context.invocation_metadata() or ()
        if key == "authorization" and isinstance(value, str)
    )
    subject: str | None = None
    if peer:
        names = list(context.auth_context().get("x509_common_name", ()))
        if names:
            subject = names[0].decode("utf-8", "replace")
    return Credentials(authorization, subject)
