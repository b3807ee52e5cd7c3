"""The retry and resume decisions of `conveyor._flows`, step by step.

Beside the real-server tests: the sync `Client` on grpc_testing's fake
channel, where the test plays the service one call at a time, and the pure
flows driven with scripted outcomes, which is what `AsyncClient` runs too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
import grpc_testing
import pytest

from conveyor import (
    AsyncClient,
    Client,
    ConveyorError,
    DeadlineExceeded,
    TaskNotFound,
    TaskSpec,
    TaskState,
    Unavailable,
    WaitTimeout,
    _flows,
)
from conveyor.v1 import task_pb2, task_service_pb2

_R = TypeVar("_R")

SERVICE = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
GET = SERVICE.methods_by_name["GetTask"]
SUBMIT = SERVICE.methods_by_name["SubmitTask"]
WATCH = SERVICE.methods_by_name["WatchTask"]

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _task(version: int, *, done: bool = False, task_id: str = "t-1") -> task_pb2.Task:
    state = task_pb2.TASK_STATE_SUCCEEDED if done else task_pb2.TASK_STATE_RUNNING
    return task_pb2.Task(id=task_id, type="echo", state=state, version=version)


# --- the sync client on grpc_testing's fake channel ---------------------------------


class Caller:
    """Makes the client's calls on daemon threads while the test answers them;
    a daemon thread left waiting on the fake cannot hold the test run open."""

    def submit(self, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> futures.Future[_R]:
        future: futures.Future[_R] = futures.Future()

        def call() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=call, daemon=True).start()
        return future


@pytest.fixture
def fake() -> tuple[Any, Client, Caller]:
    """A fake channel, a Client on it, and a `Caller` to call from."""
    channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    return channel, Client._on_channel(channel, timeout=5.0), Caller()


def test_unary_call_is_retried_after_unavailable_twice(fake: Any) -> None:
    channel, client, pool = fake
    call = pool.submit(client.get, "t-1")
    for _ in range(2):
        _, request, rpc = channel.take_unary_unary(GET)
        assert request.id == "t-1"
        rpc.terminate(None, (), UNAVAILABLE, "warming up")
    _, request, rpc = channel.take_unary_unary(GET)
    rpc.terminate(task_service_pb2.GetTaskResponse(task=_task(4)), (), OK, "")
    assert call.result(timeout=5).version == 4


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_watch_reopens_from_the_last_version_after_a_cut(fake: Any) -> None:
    channel, client, pool = fake
    versions: list[int] = []

    def consume() -> None:
        versions.extend(task.version for task in client.watch("t-1"))

    consumed = pool.submit(consume)
    _, request, rpc = channel.take_unary_stream(WATCH)
    assert request.since_version == 0
    for version in (1, 2, 3):
        rpc.send_response(task_service_pb2.WatchTaskResponse(task=_task(version)))
    # The fake drops unread messages when the call fails, so cut only once all are read.
    _until(lambda: len(versions) == 3)
    rpc.terminate((), UNAVAILABLE, "moving")

    _, request, rpc = channel.take_unary_stream(WATCH)
    assert request.since_version == 3
    rpc.send_response(task_service_pb2.WatchTaskResponse(task=_task(4, done=True)))
    rpc.terminate((), OK, "")
    consumed.result(timeout=5)
    assert versions == [1, 2, 3, 4]


def test_submit_without_an_idempotency_key_is_not_retried(fake: Any) -> None:
    channel, client, pool = fake
    call = pool.submit(client.submit, "echo", {"a": 1})
    _, request, rpc = channel.take_unary_unary(SUBMIT)
    assert request.type == "echo"
    rpc.terminate(None, (), UNAVAILABLE, "draining")
    with pytest.raises(Unavailable, match="draining"):
        call.result(timeout=5)
    # A second SubmitTask would be waiting here; there is none.
    keyed = pool.submit(client.submit, "echo", {"a": 1}, idempotency_key="k")
    _, request, rpc = channel.take_unary_unary(SUBMIT)
    assert request.idempotency_key == "k"
    rpc.terminate(None, (), UNAVAILABLE, "draining")
    _, request, rpc = channel.take_unary_unary(SUBMIT)
    assert request.idempotency_key == "k"
    rpc.terminate(task_service_pb2.SubmitTaskResponse(task=_task(1)), (), OK, "")
    assert keyed.result(timeout=5).id == "t-1"


# --- the pure flows, as both drivers run them ----------------------------------------


class Script:
    """Plays a flow to the end with scripted outcomes and records its steps.

    `answer(step)` returns a step's outcome, or an exception to throw in.
    """

    def __init__(self, answer: Callable[[_flows.Step], Any]) -> None:
        self.answer = answer
        self.steps: list[_flows.Step] = []
        self.emitted: list[Any] = []

    def play(self, flow: _flows.Flow[_R]) -> _R:
        run = _flows.FlowRun(flow)
        try:
            for step in run.steps():
                self.steps.append(step)
                if isinstance(step, _flows.Emit):
                    self.emitted.append(step.task)
                    continue
                outcome = self.answer(step)
                if isinstance(outcome, Exception):
                    with run.answering():
                        raise outcome
                else:
                    run.reply = outcome
        finally:
            run.close()
        return run.result

    def of(self, kind: type[Any]) -> list[Any]:
        return [step for step in self.steps if isinstance(step, kind)]


def _unavailable() -> Unavailable:
    return Unavailable("moving", code=UNAVAILABLE)


def test_flow_retries_a_get_twice_with_backoff_then_succeeds() -> None:
    outcomes: list[Any] = [
        _unavailable(),
        _unavailable(),
        task_service_pb2.GetTaskResponse(task=_task(2)),
    ]
    script = Script(lambda step: outcomes.pop(0) if isinstance(step, _flows.Call) else None)
    assert script.play(_flows.get("t-1", None)).version == 2
    assert [step.method for step in script.of(_flows.Call)] == ["GetTask"] * 3
    assert [step.seconds for step in script.of(_flows.Sleep)] == [0.1, 0.2]


def test_flow_gives_up_after_three_tries() -> None:
    script = Script(lambda step: _unavailable() if isinstance(step, _flows.Call) else None)
    with pytest.raises(Unavailable):
        script.play(_flows.get("t-1", 1.5))
    assert len(script.of(_flows.Call)) == 3
    assert {step.rpc_timeout for step in script.of(_flows.Call)} == {1.5}


def test_flow_does_not_retry_a_submit_without_a_key_nor_a_retry() -> None:
    script = Script(lambda step: _unavailable() if isinstance(step, _flows.Call) else None)
    with pytest.raises(Unavailable):
        script.play(_flows.submit(TaskSpec("echo"), None))
    with pytest.raises(Unavailable):
        script.play(_flows.retry("t-1", None))
    assert [step.method for step in script.of(_flows.Call)] == ["SubmitTask", "RetryTask"]
    assert script.of(_flows.Sleep) == []


def test_flow_does_not_retry_other_codes() -> None:
    script = Script(lambda step: TaskNotFound("no", code=grpc.StatusCode.NOT_FOUND))
    with pytest.raises(TaskNotFound):
        script.play(_flows.get("t-1", None))
    assert len(script.steps) == 1


def _stream(*items: Any) -> Callable[[_flows.Step], Any]:
    """Outcomes of OpenWatch and Receive steps in turn: messages, errors, None for the end."""
    queue = list(items)

    def answer(step: _flows.Step) -> Any:
        if isinstance(step, _flows.Receive):
            return queue.pop(0)
        assert isinstance(step, _flows.OpenWatch | _flows.Sleep), step
        return None

    return answer


def _message(version: int, *, done: bool = False) -> task_service_pb2.WatchTaskResponse:
    return task_service_pb2.WatchTaskResponse(task=_task(version, done=done))


def test_flow_reopens_a_cut_watch_since_the_last_version() -> None:
    script = Script(_stream(_message(5), _message(6), _unavailable(), _message(7, done=True), None))
    script.play(_flows.watch("t-1", 4))
    assert [task.version for task in script.emitted] == [5, 6, 7]
    assert [step.request.since_version for step in script.of(_flows.OpenWatch)] == [4, 6]
    assert {step.timeout for step in script.of(_flows.OpenWatch)} == {None}
    assert [step.seconds for step in script.of(_flows.Sleep)] == [0.1]


def test_flow_gives_up_a_watch_after_three_cuts_in_a_row() -> None:
    script = Script(_stream(_message(1), _unavailable(), _unavailable(), _unavailable()))
    with pytest.raises(Unavailable):
        script.play(_flows.watch("t-1", 0))
    assert [step.request.since_version for step in script.of(_flows.OpenWatch)] == [0, 1, 1]


def test_flow_wait_reads_first_and_returns_a_finished_task() -> None:
    done = task_service_pb2.GetTaskResponse(task=_task(3, done=True))
    script = Script(lambda step: done)
    assert script.play(_flows.wait("t-1", None)).state is TaskState.SUCCEEDED
    assert script.of(_flows.OpenWatch) == []


def test_flow_wait_timeout_carries_the_last_snapshot() -> None:
    def answer(step: _flows.Step) -> Any:
        if isinstance(step, _flows.Call):
            return task_service_pb2.GetTaskResponse(task=_task(1))
        if isinstance(step, _flows.Receive):
            if not script.of(_flows.Receive)[1:]:
                return _message(2)
            return DeadlineExceeded("late", code=grpc.StatusCode.DEADLINE_EXCEEDED)
        return None

    script = Script(answer)
    with pytest.raises(WaitTimeout) as caught:
        script.play(_flows.wait("t-1", 30))
    assert caught.value.task is not None
    assert caught.value.task.version == 2
    assert isinstance(caught.value.__cause__, DeadlineExceeded)
    [opened] = script.of(_flows.OpenWatch)
    assert opened.request.since_version == 0
    assert opened.timeout is not None
    assert 0 < opened.timeout <= 30


def test_flow_wait_reads_again_when_the_stream_ends_early() -> None:
    reads = [task_service_pb2.GetTaskResponse(task=_task(v, done=v == 3)) for v in (1, 3)]
    received: list[Any] = [_message(2), None]

    def answer(step: _flows.Step) -> Any:
        if isinstance(step, _flows.Call):
            return reads.pop(0)
        return received.pop(0) if isinstance(step, _flows.Receive) else None

    script = Script(answer)
    assert script.play(_flows.wait("t-1", None)).version == 3
    assert [step.method for step in script.of(_flows.Call)] == ["GetTask", "GetTask"]
    assert len(script.of(_flows.OpenWatch)) == 1


def test_flow_wait_without_a_timeout_lets_deadline_exceeded_through() -> None:
    late = DeadlineExceeded("late", code=grpc.StatusCode.DEADLINE_EXCEEDED)
    script = Script(lambda step: late)
    with pytest.raises(DeadlineExceeded):
        script.play(_flows.wait("t-1", None))


def test_flow_pages_until_the_limit() -> None:
    pages = [
        task_service_pb2.ListTasksResponse(
            tasks=[_task(1, task_id="a"), _task(1, task_id="b")], next_page_token="p2"
        ),
        task_service_pb2.ListTasksResponse(
            tasks=[_task(1, task_id="c"), _task(1, task_id="d")], next_page_token="p3"
        ),
    ]
    script = Script(lambda step: pages.pop(0))
    script.play(_flows.list_tasks(None, None, {"k": "v"}, 2, 3))
    assert [task.id for task in script.emitted] == ["a", "b", "c"]
    requests = [step.request for step in script.of(_flows.Call)]
    assert [request.page_token for request in requests] == ["", "p2"]
    assert {request.page_size for request in requests} == {2}


def test_list_arguments_are_checked_when_called() -> None:
    with pytest.raises(ValueError, match="page_size"):
        _flows.list_tasks(None, None, None, 0, None)


# --- one docstring for both clients -------------------------------------------------


@pytest.mark.parametrize(
    "name", ["submit", "submit_batch", "get", "watch", "wait", "list", "cancel", "retry"]
)
def test_both_clients_share_each_public_docstring(name: str) -> None:
    doc = getattr(Client, name).__doc__
    assert doc
    assert getattr(AsyncClient, name).__doc__ == doc


def _cancelled() -> ConveyorError:
    return ConveyorError("CANCELLED", code=grpc.StatusCode.CANCELLED)


def test_flow_reopens_a_watch_shed_before_its_first_message() -> None:
    script = Script(_stream(_cancelled(), _cancelled(), _message(1), _message(2, done=True), None))
    script.play(_flows.watch("t-1", 0))
    assert [task.version for task in script.emitted] == [1, 2]
    assert [step.request.since_version for step in script.of(_flows.OpenWatch)] == [0, 0, 0]
    assert [step.seconds for step in script.of(_flows.Sleep)] == [0.1, 0.2]


def test_flow_does_not_reopen_a_watch_cancelled_after_a_message() -> None:
    script = Script(_stream(_message(1), _cancelled()))
    with pytest.raises(ConveyorError) as caught:
        script.play(_flows.watch("t-1", 0))
    assert caught.value.code is grpc.StatusCode.CANCELLED
    assert len(script.of(_flows.OpenWatch)) == 1


def _change(cursor: str, *, current: bool = False) -> task_service_pb2.WatchTasksResponse:
    return task_service_pb2.WatchTasksResponse(task=_task(1), cursor=cursor, current=current)


def test_flow_reopens_a_cut_task_feed_from_the_last_cursor() -> None:
    script = Script(_stream(_change("c1"), _change("c2"), _unavailable(), _change("c3"), None))
    script.play(_flows.watch_tasks(None, "echo", None, None, None, False))
    assert [change.cursor for change in script.emitted] == ["c1", "c2", "c3"]
    opened = script.of(_flows.OpenWatch)
    assert [step.method for step in opened] == ["WatchTasks", "WatchTasks"]
    assert [(step.request.cursor, step.request.type) for step in opened] == [
        ("", "echo"),
        ("c2", "echo"),
    ]


def test_flow_cut_during_the_current_tasks_sends_them_again() -> None:
    script = Script(
        _stream(
            _change("c0", current=True),
            _unavailable(),
            _change("c0", current=True),
            _change("c1"),
            _unavailable(),
            None,
        )
    )
    script.play(_flows.watch_tasks(None, None, None, None, None, True))
    opened = script.of(_flows.OpenWatch)
    assert [(s.request.cursor, s.request.include_current) for s in opened] == [
        ("", True),
        ("", True),
        ("c1", False),
    ]
    assert [change.current for change in script.emitted] == [True, True, False]
