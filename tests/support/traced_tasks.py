"""Tracing in a server or worker subprocess, loaded with `--tasks
tests.support.traced_tasks`: sets a tracer provider whose spans go, one
JSON object a line, to the file named by CONVEYOR_TEST_SPANS, and
registers a task type to trace."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from conveyor_server import TaskContext, task


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file shared by several processes."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_as_dict(span)) + "\n" for span in spans)
        with self._lock, open(self._path, "a", encoding="utf-8") as file:
            file.write(lines)  # one write per batch: appends do not interleave
        return SpanExportResult.SUCCESS


def _as_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "links": [f"{link.context.span_id:016x}" for link in span.links],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "pid": os.getpid(),
    }


_provider = TracerProvider()
_provider.add_span_processor(
    SimpleSpanProcessor(JsonLinesExporter(os.environ["CONVEYOR_TEST_SPANS"]))
)
trace.set_tracer_provider(_provider)


@task("traced_flaky")
def traced_flaky(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Fails its first attempt, so a retry is traced too."""
    if ctx.attempt < 2:
        raise ConnectionError("first attempt fails on purpose")
    return {"pid": os.getpid()}
