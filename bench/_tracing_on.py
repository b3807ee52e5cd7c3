"""The traced server of bench/tracing.py, loaded with `--tasks
bench._tracing_on`: a tracer provider whose spans go through a
BatchSpanProcessor to an exporter that drops them, so the figures hold
what Conveyor and the SDK spend, not what a network exporter would."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class DroppingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
trace.set_tracer_provider(_provider)
