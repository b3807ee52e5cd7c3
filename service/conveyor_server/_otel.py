"""Spans, with OpenTelemetry: one per RPC, and one per attempt.

Imported by `_tracing` only once the process traces. The attempt's span
follows the messaging semantic conventions for a consumer: on the first
attempt it is a child of the span that submitted the task, so one trace
runs from the caller through SubmitTask into the handler; a retry starts a
trace of its own that links to the submitting span, as a trace would grow
without bound (and hours long) if every retry hung under the request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from conveyor_server._attempts import HandlerReturned, RunningAttempt

__all__ = ["AttemptSpan", "RpcSpans", "current_traceparent"]

_tracer = trace.get_tracer("conveyor_server")
# The stored context is always W3C, whatever propagators the process set.
_W3C = TraceContextTextMapPropagator()

# The codes the RPC semantic conventions count as a server's error.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def provider_set() -> bool:
    """Whether the process set a tracer provider: before that, spans record
    nothing, and making them would only cost time."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None without one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


# --- RPCs ---------------------------------------------------------------------------


class RpcSpans(aio.ServerInterceptor):
    """A SERVER span around every call, continuing the caller's trace context
    (read with the process's propagators) and named `service/method`."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        # Wrapped once per (method, handler): auth hands out one per tenant.
        key = f"{method} {id(handler)}"
        wrapped = self._handlers.get(key)
        if wrapped is None:
            wrapped = self._handlers[key] = _traced(handler, method)
        return wrapped


def _rpc_span(method: str, context: aio.ServicerContext[Any, Any]) -> trace.Span:
    service, _, name = method.lstrip("/").partition("/")
    carrier = {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }
    return _tracer.start_span(
        f"{service}/{name}",
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


def _current(span: trace.Span) -> contextlib.AbstractContextManager[Any]:
    """`span` made current. Its status is set from the call's code or the
    attempt's outcome, not from an exception: an abort raises one for every
    refusal, and a handler's is already an outcome."""
    current: contextlib.AbstractContextManager[Any] = trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )
    return current


def _end_rpc(span: trace.Span, context: aio.ServicerContext[Any, Any], failed: bool) -> None:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        status = code
    else:
        status = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", status.value[0])
    if status in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, status.name))
    span.end()


def _traced(handler: Handler, method: str) -> Handler:
    """`handler` with a span around each call. Only unary and
    server-streaming methods (all Conveyor has) are wrapped."""
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_call(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            span = _rpc_span(method, context)
            failed = True
            try:
                with _current(span):
                    response = await unary(request, context)
                failed = False
                return response
            finally:
                _end_rpc(span, context, failed)

        return grpc.unary_unary_rpc_method_handler(
            unary_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        async def stream_call(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            span = _rpc_span(method, context)
            failed = True
            # Attached for the generator's own steps only: a context token
            # held across a yield would be detached in another context.
            try:
                behaviour = stream(request, context)
                if not hasattr(behaviour, "__aiter__"):
                    # A refusal (no token): a coroutine that aborts the call.
                    with _current(span):
                        await behaviour
                    failed = False
                    return
                async with contextlib.aclosing(_in_span(span, behaviour)) as responses:
                    async for response in responses:
                        yield response
                failed = False
            finally:
                _end_rpc(span, context, failed)

        return grpc.unary_stream_rpc_method_handler(
            stream_call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


async def _in_span(span: trace.Span, responses: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """Step `responses` with `span` current during each step."""
    ctx = trace.set_span_in_context(span)
    iterator = aiter(responses)
    try:
        while True:
            token = otel_context.attach(ctx)
            try:
                response = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(token)
            yield response
    finally:
        closing = getattr(iterator, "aclose", None)
        if closing is not None:
            await closing()


# --- attempts -----------------------------------------------------------------------


class AttemptSpan:
    """The CONSUMER span of one attempt, started when the attempt starts."""

    __slots__ = ("_span",)

    def __init__(self, running: RunningAttempt) -> None:
        parent = _W3C.extract({"traceparent": running.traceparent or ""})
        submitted = trace.get_current_span(parent).get_span_context()
        links: list[Link] = []
        if running.attempt > 1 and submitted.is_valid:
            # A retry: a new trace, linked to the one that submitted the task.
            links.append(Link(submitted, {"conveyor.task.attempt": running.attempt}))
            parent = otel_context.Context()
        elif not submitted.is_valid:
            parent = otel_context.Context()
        task_type = running.ctx.type
        attributes: dict[str, str | int] = {
            "messaging.system": "conveyor",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": task_type,
            "messaging.message.id": running.task_id,
            "conveyor.task.id": running.task_id,
            "conveyor.task.type": task_type,
            "conveyor.task.attempt": running.attempt,
        }
        if running.tenant:
            attributes["conveyor.task.tenant"] = running.tenant
        self._span = _tracer.start_span(
            f"process {task_type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )

    def active(self) -> contextlib.AbstractContextManager[Any]:
        return _current(self._span)

    def ending(self, post: Callable[[HandlerReturned], None]) -> Callable[[HandlerReturned], None]:
        span = self._span

        def end_then_post(returned: HandlerReturned) -> None:
            failure = returned.failure
            if failure is not None:
                span.set_attribute("error.type", failure.code)
                span.set_status(Status(StatusCode.ERROR, failure.message[:256]))
            span.end()
            post(returned)

        return end_then_post
