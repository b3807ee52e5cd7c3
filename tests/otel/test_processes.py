"""One trace across processes on Redis: the caller here, SubmitTask in an
API process, the handler in a worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor import Client, TaskState
from tests.support.procs import Process, start_server, start_worker

pytestmark = pytest.mark.slow

TASKS = "tests.support.traced_tasks"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def exported(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_trace_runs_from_the_caller_through_an_api_process_into_a_worker_process(
    redis_url: str,
    tmp_path: Path,
    processes: list[Process],
    spans: InMemorySpanExporter,
    tracer: trace.Tracer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    span_file = tmp_path / "spans.jsonl"
    monkeypatch.setenv("CONVEYOR_TEST_SPANS", str(span_file))
    run_log = tmp_path / "runs.log"
    api, address = start_server("api", redis_url, run_log, workers=0, tasks=TASKS)
    processes.append(api)
    processes.append(start_worker("worker", redis_url, run_log, workers=2, tasks=TASKS))
    with Client(address) as client:
        with tracer.start_as_current_span("upload"):
            handle = client.submit("traced_flaky", max_attempts=2)
        task = handle.wait(timeout=30)
    assert task.state is TaskState.SUCCEEDED, task.error
    [caller] = [span for span in spans.get_finished_spans() if span.name == "upload"]

    # Each process ends (and here exports) a span before the outcome it
    # covers is answered or stored, so the lines are in the file already.
    lines = exported(span_file)
    [submit] = [s for s in lines if s["name"] == "conveyor.v1.TaskService/SubmitTask"]
    first, second = sorted(
        (s for s in lines if s["name"] == "process traced_flaky"),
        key=lambda s: s["attributes"]["conveyor.task.attempt"],
    )
    trace_id = f"{caller.context.trace_id:032x}"
    assert submit["trace_id"] == trace_id and submit["kind"] == "SERVER"
    assert submit["parent_id"] == f"{caller.context.span_id:016x}"
    assert submit["pid"] == api.pid
    assert first["trace_id"] == trace_id and first["kind"] == "CONSUMER"
    assert first["parent_id"] == submit["span_id"]
    assert first["status"] == "ERROR"
    assert first["pid"] != api.pid
    assert first["attributes"]["conveyor.task.id"] == task.id
    assert second["trace_id"] != trace_id and second["parent_id"] is None
    assert second["links"] == [submit["span_id"]]
    assert second["status"] == "UNSET"
