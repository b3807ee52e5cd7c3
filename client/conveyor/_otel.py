"""The OpenTelemetry side of `_trace`: imported only once the process
traces, and only where the extra is installed."""

from __future__ import annotations

from opentelemetry import propagate

__all__ = ["with_trace_context"]


def with_trace_context(metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """`metadata` plus what the configured propagators write for the current
    context (by default `traceparent`, `tracestate` and `baggage`); the same
    metadata when there is no span to continue."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return metadata
    # gRPC metadata keys are lowercase; the W3C propagators already write them so.
    return (*metadata, *((key.lower(), value) for key, value in carrier.items()))
