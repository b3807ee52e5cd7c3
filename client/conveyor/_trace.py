"""The trace context every call carries, when the application traces.

OpenTelemetry is an optional extra (`conveyor[otel]`). The SDK never
imports it on its own: a process traces only once something in it has
imported `opentelemetry.trace` (the application's own tracing set-up, or
auto-instrumentation). Until then every call goes out exactly as without
the extra, and importing `conveyor` costs nothing more. (Some libraries
load OpenTelemetry's API on their own when it is installed, redis-py 8 among
them; then a call carries the current context, if there is one.)
"""

from __future__ import annotations

import sys

__all__ = ["current_traceparent", "outgoing_metadata", "tracing_in_use"]

Metadata = tuple[tuple[str, str], ...]


def tracing_in_use() -> bool:
    """Whether this process uses OpenTelemetry: without a tracer there is no
    current span, so no context worth sending."""
    return "opentelemetry.trace" in sys.modules


def outgoing_metadata(metadata: Metadata) -> Metadata:
    """`metadata` plus the W3C trace context (`traceparent`, `tracestate`)
    of the current span, read in the calling thread or task."""
    if not tracing_in_use():
        return metadata
    try:
        from conveyor import _otel
    except ImportError:  # the API module without the rest of the extra
        return metadata
    return _otel.with_trace_context(metadata)


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, when the application
    traces: what a submit that travels in a batch of other callers' submits
    carries in its own request."""
    for key, value in outgoing_metadata(()):
        if key == "traceparent":
            return value
    return None
