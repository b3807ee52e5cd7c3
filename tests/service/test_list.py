"""ListTasks: newest first, filters, AIP-158 paging."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api


def list_all(api: Api, **filters: object) -> list[task_pb2.Task]:
    tasks: list[task_pb2.Task] = []
    token = ""
    while True:
        response = api.stub.ListTasks(
            pb.ListTasksRequest(page_token=token, **filters),
            timeout=10,  # type: ignore[arg-type]
        )
        tasks.extend(response.tasks)
        token = response.next_page_token
        if not token:
            return tasks


def test_pages_cover_everything_newest_first(api: Api) -> None:
    run = uuid.uuid4().hex
    ids = [api.submit("echo", {"i": i}, labels={"run": run}).id for i in range(7)]
    first = api.stub.ListTasks(pb.ListTasksRequest(page_size=3, labels={"run": run}), timeout=10)
    assert len(first.tasks) == 3 and first.next_page_token
    listed = list_all(api, page_size=3, labels={"run": run})
    assert [t.id for t in listed] == ids[::-1]


def test_last_page_has_no_token(api: Api) -> None:
    run = uuid.uuid4().hex
    for _ in range(2):
        api.submit("echo", {}, labels={"run": run})
    response = api.stub.ListTasks(pb.ListTasksRequest(page_size=2, labels={"run": run}), timeout=10)
    assert len(response.tasks) == 2
    assert response.next_page_token == ""


def test_filters_by_state_type_and_labels(api: Api) -> None:
    run = uuid.uuid4().hex
    ok = api.wait(api.submit("echo", {}, labels={"run": run, "kind": "a"}).id)
    bad = api.wait(api.submit("fail", {}, labels={"run": run, "kind": "b"}).id)
    waiting = api.submit(
        "echo", {}, labels={"run": run, "kind": "a"}, delay=duration_pb2.Duration(seconds=60)
    )
    by_state = list_all(api, labels={"run": run}, states=[task_pb2.TASK_STATE_FAILED])
    assert [t.id for t in by_state] == [bad.id]
    by_type = list_all(api, labels={"run": run}, type="echo")
    assert [t.id for t in by_type] == [waiting.id, ok.id]
    by_labels = list_all(api, labels={"run": run, "kind": "a"})
    assert [t.id for t in by_labels] == [waiting.id, ok.id]
    pending = list_all(api, labels={"run": run}, states=[task_pb2.TASK_STATE_PENDING])
    assert [t.id for t in pending] == [waiting.id]
    two_states = list_all(
        api,
        labels={"run": run},
        states=[task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_SUCCEEDED],
        page_size=1,
    )
    assert [t.id for t in two_states] == [waiting.id, ok.id]
    api.stub.CancelTask(pb.CancelTaskRequest(id=waiting.id), timeout=10)


def test_page_size_is_capped(api: Api) -> None:
    response = api.stub.ListTasks(pb.ListTasksRequest(page_size=10**6), timeout=10)
    assert len(response.tasks) <= 1000


def test_new_tasks_do_not_shift_pages(api: Api) -> None:
    run = uuid.uuid4().hex
    ids = [api.submit("echo", {}, labels={"run": run}).id for _ in range(4)]
    first = api.stub.ListTasks(pb.ListTasksRequest(page_size=2, labels={"run": run}), timeout=10)
    api.submit("echo", {}, labels={"run": run})
    second = api.stub.ListTasks(
        pb.ListTasksRequest(page_size=2, labels={"run": run}, page_token=first.next_page_token),
        timeout=10,
    )
    assert [t.id for t in second.tasks] == [ids[1], ids[0]]


def test_pages_stay_readable_by_a_stock_client(make_api, store_url: str) -> None:  # type: ignore[no-untyped-def]
    # The raw Api's channel keeps gRPC's default 4 MiB receive limit.
    _, api = make_api(store=store_url)
    blob = "x" * (250 * 1024)
    ids = [
        api.submit("echo", {"blob": blob, "i": i}, delay=duration_pb2.Duration(seconds=600)).id
        for i in range(40)
    ]
    pages: list[int] = []
    token = ""
    listed: list[str] = []
    while True:
        response = api.stub.ListTasks(pb.ListTasksRequest(page_token=token), timeout=10)
        assert response.ByteSize() < 4 * 1024 * 1024
        pages.append(len(response.tasks))
        listed.extend(task.id for task in response.tasks)
        token = response.next_page_token
        if not token:
            break
    assert listed == ids[::-1]
    assert len(pages) > 1 and min(pages) >= 1


def test_basic_view_leaves_out_payload_and_result(api: Api) -> None:
    run = uuid.uuid4().hex
    done = api.wait(api.submit("echo", {"k": "v"}, labels={"run": run}).id)

    def listed(**fields: object) -> task_pb2.Task:
        request = pb.ListTasksRequest(labels={"run": run}, **fields)  # type: ignore[arg-type]
        [task] = api.stub.ListTasks(request, timeout=10).tasks
        return task

    basic = listed(view=pb.TASK_VIEW_BASIC)
    assert basic.id == done.id and basic.state == task_pb2.TASK_STATE_SUCCEEDED
    assert basic.version == done.version and basic.labels == done.labels
    assert not basic.payload.fields and not basic.HasField("result")
    # Unset means FULL, as before the view existed.
    assert listed(view=pb.TASK_VIEW_FULL) == done
    assert listed() == done


def test_unknown_view_is_invalid_argument(api: Api) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.ListTasks(pb.ListTasksRequest(view=7), timeout=10)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "view" in caught.value.details()
