"""Traces across the queue: the caller's span, SubmitTask's server span and
the handler's span make one trace, on every store; a retry links back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import AsyncClient, Client, TaskState, Unauthenticated
from tests.support.http import Http
from tests.support.procs import wait_until
from tests.support.server import ServerThread

SUBMIT = "conveyor.v1.TaskService/SubmitTask"


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def attempts(spans: Sequence[ReadableSpan], task_id: str) -> list[ReadableSpan]:
    """The spans of a task's attempts, first first. Found by id: a server
    of an earlier test may still be running tasks of the same type."""
    found = [
        span
        for span in spans
        if span.name.startswith("process ")
        and dict(span.attributes or {}).get("conveyor.task.id") == task_id
    ]
    return sorted(found, key=lambda span: dict(span.attributes or {})["conveyor.task.attempt"])


def ids_of(span: ReadableSpan) -> str:
    """The version, trace id and span id of a W3C traceparent for `span`."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}"


def test_one_trace_runs_from_the_callers_span_through_submit_into_the_handler(
    make_server: Callable[..., ServerThread],
    store_url: str,
    spans: InMemorySpanExporter,
    tracer: trace.Tracer,
) -> None:
    thread = make_server(store=store_url)
    with Client(thread.address) as client:
        with tracer.start_as_current_span("checkout"):
            handle = client.submit("echo", {"order": 7})
        task = handle.wait(timeout=30)
    assert task.state is TaskState.SUCCEEDED
    finished = spans.get_finished_spans()
    caller = one(finished, "checkout")
    submit = one(finished, SUBMIT)
    [process] = attempts(finished, task.id)
    assert process.name == "process echo"
    assert submit.kind is SpanKind.SERVER
    assert submit.parent is not None and submit.parent.span_id == caller.context.span_id
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None and process.parent.span_id == submit.context.span_id
    assert {caller.context.trace_id, submit.context.trace_id, process.context.trace_id} == {
        caller.context.trace_id
    }
    assert dict(submit.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "conveyor.v1.TaskService",
        "rpc.method": "SubmitTask",
        "rpc.grpc.status_code": 0,
    }
    attributes = dict(process.attributes or {})
    assert attributes["conveyor.task.id"] == task.id
    assert attributes["conveyor.task.type"] == "echo"
    assert attributes["conveyor.task.attempt"] == 1
    assert "conveyor.task.tenant" not in attributes  # authentication is off
    assert process.status.status_code is StatusCode.UNSET
    # The task keeps the context its handler continued.
    assert task.raw.traceparent.rpartition("-")[0] == ids_of(submit)


def test_a_retry_starts_its_own_trace_linked_to_the_submitting_span(
    make_server: Callable[..., ServerThread], spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    thread = make_server()
    with Client(thread.address) as client:
        with tracer.start_as_current_span("import"):
            handle = client.submit("flaky", {"succeed_on": 2}, max_attempts=2)
        assert handle.wait(timeout=30).state is TaskState.SUCCEEDED
    finished = spans.get_finished_spans()
    submit = one(finished, SUBMIT)
    first, second = attempts(finished, handle.id)
    assert first.parent is not None and first.parent.span_id == submit.context.span_id
    assert first.status.status_code is StatusCode.ERROR
    assert dict(first.attributes or {})["error.type"] == "HANDLER_ERROR"
    assert second.parent is None
    assert second.context.trace_id != submit.context.trace_id
    assert [link.context.span_id for link in second.links] == [submit.context.span_id]
    assert second.status.status_code is StatusCode.UNSET


def test_spans_the_handler_makes_are_children_of_its_span(
    make_server: Callable[..., ServerThread], spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    from conveyor_server import HandlerRegistry, TaskContext

    registry = HandlerRegistry()

    @registry.task("nested")
    def nested(ctx: TaskContext, payload: dict[str, object]) -> str:
        with tracer.start_as_current_span("inner"):
            return "done"

    thread = ServerThread(make_server().config, registry=registry).start()
    try:
        with Client(thread.address) as client:
            assert client.submit("nested").wait(timeout=30).state is TaskState.SUCCEEDED
    finally:
        thread.stop()
    finished = spans.get_finished_spans()
    inner, process = one(finished, "inner"), one(finished, "process nested")
    assert inner.parent is not None and inner.parent.span_id == process.context.span_id


async def test_the_async_client_sends_the_context_of_the_awaiting_task(
    make_server: Callable[..., ServerThread], spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    thread = make_server()
    async with AsyncClient(thread.address) as client:

        async def submit(name: str) -> str:
            with tracer.start_as_current_span(name):
                handle = await client.submit("echo", {"name": name}, rpc_timeout=10)
                await client.wait(handle.id, timeout=30)
            return handle.id

        await asyncio.gather(submit("first"), submit("second"))
    finished = spans.get_finished_spans()
    submits = named(finished, SUBMIT)
    for name in ("first", "second"):
        caller = one(finished, name)
        assert any(
            span.parent is not None and span.parent.span_id == caller.context.span_id
            for span in submits
        ), name


def test_a_failing_rpc_marks_its_span_with_the_status_code(
    make_server: Callable[..., ServerThread], spans: InMemorySpanExporter
) -> None:
    thread = make_server()
    with Client(thread.address) as client, pytest.raises(Exception, match="not found"):
        client.get("0" * 26)
    # An abort answers the caller before the server's handler unwinds.
    wait_until(lambda: spans.get_finished_spans(), 10, "the GetTask span to end")
    span = one(spans.get_finished_spans(), "conveyor.v1.TaskService/GetTask")
    assert dict(span.attributes or {})["rpc.grpc.status_code"] == 5  # NOT_FOUND
    # NOT_FOUND is the caller's mistake, not the server's error.
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",) * 2,
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""),
        ("not a trace context", ""),
    ],
)
def test_http_submit_keeps_a_valid_traceparent_header_and_ignores_a_malformed_one(
    server: ServerThread, header: str, kept: str
) -> None:
    reply = Http(server).post("/v1/tasks", {"type": "echo"}, headers={"traceparent": header})
    assert reply.status == 200, reply.body
    assert reply.body["task"].get("traceparent", "") == kept


def test_a_watch_stream_has_its_span_and_so_has_a_refused_one(
    make_server: Callable[..., ServerThread],
    spans: InMemorySpanExporter,
    tracer: trace.Tracer,
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("token-of-team-a-0123456789 team-a\n")
    thread = make_server(auth_tokens_file=str(tokens))
    with (
        Client(thread.address, token="token-of-team-a-0123456789") as client,
        tracer.start_as_current_span("follow"),
    ):
        task = client.submit("echo")
        assert [t.state for t in client.watch(task.id)][-1] is TaskState.SUCCEEDED
    with Client(thread.address) as anonymous, pytest.raises(Unauthenticated):
        list(anonymous.watch(task.id))
    watch = "conveyor.v1.TaskService/WatchTask"
    wait_until(lambda: len(named(spans.get_finished_spans(), watch)) == 2, 10, "both watch spans")
    finished = spans.get_finished_spans()
    caller = one(finished, "follow")
    served, refused = sorted(
        named(finished, watch), key=lambda span: dict(span.attributes or {})["rpc.grpc.status_code"]
    )
    assert served.parent is not None and served.parent.span_id == caller.context.span_id
    assert dict(served.attributes or {})["rpc.grpc.status_code"] == 0
    assert dict(refused.attributes or {})["rpc.grpc.status_code"] == 16  # UNAUTHENTICATED
    [process] = attempts(finished, task.id)
    assert dict(process.attributes or {})["conveyor.task.tenant"] == "team-a"


def test_concurrent_submits_each_keep_their_own_trace(
    make_server: Callable[..., ServerThread], spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    """Submits from many threads, each in its own trace, coalesced: each
    task's attempt lands in the trace of the thread that submitted it."""
    thread = make_server()
    traces: dict[str, int] = {}
    start = threading.Barrier(8)

    def submit_in_own_trace(client: Client, index: int) -> None:
        with tracer.start_as_current_span(f"request-{index}") as span:
            start.wait()
            handles = [client.submit("echo", {"i": index, "n": n}) for n in range(5)]
        for handle in handles:
            traces[handle.id] = span.get_span_context().trace_id

    with Client(thread.address) as client:
        workers = [threading.Thread(target=submit_in_own_trace, args=(client, i)) for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        client.wait_all(list(traces), timeout=30)
    finished = spans.get_finished_spans()
    for task_id, trace_id in traces.items():
        [process] = attempts(finished, task_id)
        assert process.context.trace_id == trace_id, task_id


def test_an_async_handler_runs_in_its_attempts_span_too(
    make_server: Callable[..., ServerThread], spans: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    from conveyor_server import HandlerRegistry, TaskContext

    registry = HandlerRegistry()

    @registry.task("nap")
    async def nap(ctx: TaskContext, payload: dict[str, object]) -> str:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("inside"):
            return "rested"

    thread = ServerThread(make_server().config, registry=registry).start()
    try:
        with Client(thread.address) as client:
            with tracer.start_as_current_span("rest"):
                handle = client.submit("nap")
            assert handle.wait(timeout=30).state is TaskState.SUCCEEDED
    finally:
        thread.stop()
    finished = spans.get_finished_spans()
    caller = one(finished, "rest")
    [process] = attempts(finished, handle.id)
    inside = one(finished, "inside")
    assert process.context.trace_id == caller.context.trace_id
    assert inside.parent is not None and inside.parent.span_id == process.context.span_id


def test_submits_of_different_traces_share_one_wave_each_carrying_its_own(
    tracer: trace.Tracer,
) -> None:
    # A call carries one trace context in its metadata; each coalesced
    # request carries its caller's in its own field, so traces never keep
    # submits apart.
    from conveyor import TaskSpec
    from conveyor._coalesce import QueuedSubmit, SubmitQueue

    queue: SubmitQueue[QueuedSubmit] = SubmitQueue()
    assert queue.arrive(QueuedSubmit(TaskSpec("echo"), None, 5.0, 0.0))  # sent alone
    carried = []
    for index in range(3):
        with tracer.start_as_current_span(f"caller-{index}") as span:
            submit = QueuedSubmit(TaskSpec("echo"), None, 5.0, 0.0)
            carried.append((submit, span.get_span_context().trace_id))
            assert not queue.arrive(submit)
    wave = queue.next_wave()
    assert wave == [submit for submit, _ in carried]
    for submit, trace_id in carried:
        assert int(submit.request.traceparent.split("-")[1], 16) == trace_id
