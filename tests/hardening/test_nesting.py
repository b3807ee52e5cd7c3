"""Payloads and results nest no deeper than a client can parse.

A Python client parses messages at most 100 levels deep. A task whose
payload or result went deeper was stored, but every GetTask, WatchTask and
ListTasks that carried it failed on the client with INTERNAL ("Exception
deserializing response"). Both limits sit where the deepest task a client
can still read ends: 32 nested containers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server import HandlerRegistry, TaskContext
from tests.support.fuzz import Code, answer_of, struct_of
from tests.support.raw_api import Api
from tests.support.server import ServerThread, test_config, test_registry

registry = HandlerRegistry()
registry.update(test_registry)


def nested(depth: int, innermost: Any) -> Any:
    """`depth` dicts around `innermost`: the deepest message for its depth
    (a dict costs three message levels, a list two)."""
    value = innermost
    for _ in range(depth):
        value = {"a": value}
    return value


@registry.task("nested_result")
def nested_result(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return nested(int(payload["depth"]), {"deepest": True})


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    thread = ServerThread(test_config(), registry=registry).start()
    client = Api(thread.address)
    yield client
    client.close()
    thread.stop()


def read_everywhere(api: Api, task_id: str) -> list[task_pb2.Task]:
    """The task as GetTask, WatchTask and ListTasks return it."""
    got = api.get(task_id)
    watched = [m.task for m in api.stub.WatchTask(pb.WatchTaskRequest(id=task_id), timeout=10)]
    listed = api.stub.ListTasks(pb.ListTasksRequest(type=got.type, page_size=1000), timeout=10)
    return [got, watched[-1], *[t for t in listed.tasks if t.id == task_id]]


@pytest.mark.parametrize(("depth", "accepted"), [(31, True), (32, True), (33, False)])
def test_payload_nesting_limit(api: Api, depth: int, accepted: bool) -> None:
    # The payload's top-level value is the first container of `depth`. (At 34
    # the request itself is too deep to parse; the fuzz tests cover that.)
    request = pb.SubmitTaskRequest(type="echo", payload=struct_of({"v": nested(depth - 1, 1)}))
    answer = answer_of(lambda: api.stub.SubmitTask(request, timeout=10))
    if not accepted:
        assert answer.code is Code.INVALID_ARGUMENT, answer
        assert answer.violations == [("payload", "nests deeper than 32 levels")]
        return
    assert answer.code is Code.OK, answer
    task_id = answer.response.task.id
    api.wait(task_id)
    for task in read_everywhere(api, task_id):
        assert task.payload == request.payload
        assert task.state == task_pb2.TASK_STATE_SUCCEEDED, task.error


@pytest.mark.parametrize(("depth", "stored"), [(31, True), (32, True), (33, False), (50, False)])
def test_result_nesting_limit(api: Api, depth: int, stored: bool) -> None:
    # The result itself is the first container; {"deepest": true} one more.
    task = api.wait(api.submit("nested_result", {"depth": depth - 1}).id)
    # Before the limit was 32, the results of 33 to 64 were stored: clients
    # failed to read them, and from 34 the server failed to, with UNKNOWN.
    for read in read_everywhere(api, task.id):
        if stored:
            assert read.state == task_pb2.TASK_STATE_SUCCEEDED, read.error
        else:
            assert read.state == task_pb2.TASK_STATE_FAILED
            assert read.error.code == "INVALID_RESULT"
            assert "nests deeper than 32 levels" in read.error.message
