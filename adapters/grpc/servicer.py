"""The VibectlLLMProxy service: decodes calls, drives the use cases, encodes their results."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import grpc

from adapters.grpc import mapping
from adapters.grpc.read_watch import ReadWatch
from application.caller_limits import DescribeCallerLimits
from application.describe_server import DescribeServer
from application.embed import EmbedText
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from domain.answer import Answer, Failure, StreamFinished, TextChunk
from domain.errors import LimitsUnavailable, MalformedCall, PermissionDenied, RateLimited
from domain.principal import ANONYMOUS, CallContext, Principal
from domain.request import ToolCall
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

log = logging.getLogger("llm_proxy.grpc")

PrincipalProvider = Callable[[], Principal]
# The transport label of requests served here, in metrics and logs.
GRPC = "grpc"


def _anonymous() -> Principal:
    return ANONYMOUS


class ProxyServicer(pb_grpc.VibectlLLMProxyServicer):
    def __init__(
        self,
        execute: ExecutePrompt,
        stream: StreamPrompt,
        describe: DescribeServer,
        principal: PrincipalProvider = _anonymous,
        caller_limits: DescribeCallerLimits | None = None,
        embed: EmbedText | None = None,
    ) -> None:
        self._embed = embed
        self._execute = execute
        self._stream = stream
        self._describe = describe
        self._principal = principal
        self._caller_limits = caller_limits

    def _context(self, context: grpc.aio.ServicerContext[object, object]) -> CallContext:
        return CallContext(
            principal=self._principal(), time_remaining=context.time_remaining(), transport=GRPC
        )

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ExecuteResponse:
        try:
            result = await self._execute(mapping.to_prompt_request(request), self._context(context))
        except Exception:
            log.exception("Execute failed unexpectedly")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        if isinstance(result, Answer):
            return mapping.to_answer_response(result.request_id, result)
        await self._abort_if_status(result, context)
        return pb.ExecuteResponse(
            request_id=result.request_id, error=mapping.to_error(result.error)
        )

    async def StreamExecute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChunk]:
        opened = self._stream(mapping.to_prompt_request(request), self._context(context))
        request_id = opened.request_id
        failure: Failure | None = None
        watch = ReadWatch(opened)
        try:
            async with opened as events:
                async for event in events:
                    if isinstance(event, TextChunk):
                        watch.sending()
                        yield pb.StreamChunk(request_id=request_id, text_chunk=event.text)
                        watch.sent()
                    elif isinstance(event, StreamFinished):
                        watch.sending()
                        yield mapping.to_metrics_chunk(request_id, event.metrics)
                        yield pb.StreamChunk(
                            request_id=request_id, complete=mapping.to_complete(event)
                        )
                        watch.sent()
                    elif isinstance(event, ToolCall):
                        watch.sending()
                        yield pb.StreamChunk(
                            request_id=request_id, tool_call=mapping.to_tool_call(event)
                        )
                        watch.sent()
                    else:
                        failure = event
        except Exception:
            log.exception("StreamExecute failed unexpectedly")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            watch.stop()
        # Outside the try: grpc's abort raises, and that must reach grpc, not the handler above.
        if failure is not None:
            await self._abort_if_status(failure, context)
            yield pb.StreamChunk(request_id=request_id, error=mapping.to_error(failure.error))

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EmbedResponse:
        if self._embed is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server serves no embeddings")
        assert self._embed is not None
        try:
            result = await self._embed(mapping.to_embed_request(request), self._context(context))
        except Exception:
            log.exception("Embed failed unexpectedly")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        if isinstance(result, Failure):
            await self._abort_if_status(result, context)
            return pb.EmbedResponse(
                request_id=result.request_id, error=mapping.to_error(result.error)
            )
        return pb.EmbedResponse(
            request_id=result.request_id, success=mapping.to_embed_success(result)
        )

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetServerInfoResponse:
        call = self._context(context)
        response = mapping.to_server_info(self._describe(call))
        if self._caller_limits is not None:
            mapping.to_caller_limits(await self._caller_limits(call.principal), response)
        return response

    @staticmethod
    async def _abort_if_status(
        failure: Failure, context: grpc.aio.ServicerContext[object, object]
    ) -> None:
        # Authorization and rate limits are transport-level statuses by contract; other
        # problems stay in-band.
        error = failure.error
        if isinstance(error, MalformedCall):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
        if isinstance(error, PermissionDenied):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, error.message)
        if isinstance(error, LimitsUnavailable):
            await context.abort(grpc.StatusCode.UNAVAILABLE, error.message)
        if isinstance(error, RateLimited):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                error.message,
                trailing_metadata=(("retry-after", f"{error.retry_after_s:.3f}"),),
            )
