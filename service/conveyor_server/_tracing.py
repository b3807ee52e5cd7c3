"""Trace context on the server, with or without OpenTelemetry.

The `traceparent` a submitting call sends is kept with its task whatever
is installed: it is a string, checked for its W3C shape, and a malformed
one is dropped rather than refused (a tracing bug upstream must not stop
work). Spans are made only when the process traces: OpenTelemetry's API
is loaded and a tracer provider is set (by a `--tasks` module, or by
`opentelemetry-instrument`). Conveyor itself never imports OpenTelemetry
first: until something else has, every hook here is a no-op that costs a
dictionary lookup. (Some libraries load the API on their own when it is
installed, redis-py 8 among them; without a provider that still makes no
spans.)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from grpc import aio

if TYPE_CHECKING:
    from conveyor_server._attempts import HandlerReturned, RunningAttempt

__all__ = [
    "TRACEPARENT",
    "AttemptTrace",
    "attempt_trace",
    "rpc_interceptors",
    "submit_traceparent",
    "task_traceparent",
    "tracing_in_use",
    "valid_traceparent",
]

TRACEPARENT = "traceparent"

# version-traceid-parentid-flags; a later version may append fields.
_SHAPE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_LENGTH = 512


def valid_traceparent(value: str | None) -> str | None:
    """The W3C `traceparent` in `value` (its four known fields), or None when
    there is none or it is malformed: version ff, ids of zeros, extra fields
    on version 00, upper-case hex."""
    if not value or len(value) > _MAX_LENGTH:
        return None
    match = _SHAPE.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return match.group(0)[:55]


def task_traceparent(request: Any, call: str | None) -> str | None:
    """The trace context a task submitted by `request` keeps: the call's
    (`call`: the server's span of the call when it traces, else the caller's
    metadata), unless the request carries a valid one of another trace
    itself: a batch of several callers' submits carries each one's own."""
    own = valid_traceparent(request.traceparent) if request.traceparent else None
    if own is None or (call is not None and call[3:35] == own[3:35]):
        return call
    return own


def traceparent_in(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The valid `traceparent` entry of a call's metadata, if any."""
    for key, value in metadata or ():
        if key == TRACEPARENT and isinstance(value, str):
            return valid_traceparent(value)
    return None


def tracing_in_use() -> bool:
    """Whether this process traces: OpenTelemetry's tracing API is loaded
    (by someone else) and a tracer provider is set."""
    if "opentelemetry.trace" not in sys.modules:
        return False
    from conveyor_server import _otel

    return _otel.provider_set()


def submit_traceparent(incoming: str | None) -> str | None:
    """What a task submitted now keeps: the current span's context when the
    server traces (its SubmitTask span, a child of the caller's), else the
    caller's own, checked."""
    if tracing_in_use():
        from conveyor_server import _otel

        current = _otel.current_traceparent()
        if current is not None:
            return current
    return valid_traceparent(incoming)


def rpc_interceptors() -> list[aio.ServerInterceptor]:
    """A server span per RPC when the process traces; none otherwise."""
    if not tracing_in_use():
        return []
    from conveyor_server import _otel

    return [_otel.RpcSpans()]


class AttemptTrace(Protocol):
    """The span of one attempt: `active()` around the handler call makes it
    current (spans the handler makes are its children); `ending(post)` ends
    it with the attempt's outcome just before the outcome is posted, so the
    span is exported before anyone can see the task finish."""

    def active(self) -> AbstractContextManager[Any]: ...

    def ending(
        self, post: Callable[[HandlerReturned], None]
    ) -> Callable[[HandlerReturned], None]: ...


class _NoTrace:
    def active(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def ending(self, post: Callable[[HandlerReturned], None]) -> Callable[[HandlerReturned], None]:
        return post


_NO_TRACE = _NoTrace()


def attempt_trace(running: RunningAttempt) -> AttemptTrace:
    """The span of an attempt starting now on this thread; a no-op when the
    process does not trace."""
    if not tracing_in_use():
        return _NO_TRACE
    from conveyor_server import _otel

    return _otel.AttemptSpan(running)
