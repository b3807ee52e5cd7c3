"""BatchSubmitTasks with partial_success, through a real server, on every store:
each request is answered on its own."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api, payload
from tests.support.server import ServerThread

MakeServer = Callable[..., ServerThread]


@pytest.fixture
def make_api(store_url: str, make_server: MakeServer) -> Iterator[Callable[..., Api]]:
    """A raw client of a fresh server on an empty store of each kind."""
    opened: list[Api] = []

    def make(**settings: object) -> Api:
        api = Api(make_server(store=store_url, **settings).address)
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.close()


def _submit_each(api: Api, requests: list[pb.SubmitTaskRequest]) -> list[pb.SubmitResult]:
    response = api.stub.BatchSubmitTasks(
        pb.BatchSubmitTasksRequest(requests=requests, partial_success=True), timeout=10
    )
    assert not response.tasks
    assert len(response.results) == len(requests)
    return list(response.results)


def _status(result: pb.SubmitResult) -> status_pb2.Status:
    assert result.WhichOneof("outcome") == "error", result
    # Wire-identical to google.rpc.Status.
    return status_pb2.Status.FromString(result.error.SerializeToString())


def _fields(status: status_pb2.Status) -> list[str]:
    found = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [violation.field for violation in bad_request.field_violations]
    return found


def test_a_refused_request_fails_only_itself(make_api: Callable[..., Api]) -> None:
    api = make_api()
    key = uuid.uuid4().hex
    earlier = api.submit("echo", {"n": 0}, idempotency_key=key)
    results = _submit_each(
        api,
        [
            pb.SubmitTaskRequest(type="echo", payload=payload(n=1)),
            pb.SubmitTaskRequest(type="echo", payload=payload(x=math.nan)),
            pb.SubmitTaskRequest(type="nope"),
            pb.SubmitTaskRequest(type="echo", payload=payload(n=9), idempotency_key=key),
            pb.SubmitTaskRequest(type="echo", payload=payload(n=4)),
        ],
    )
    bad_payload, unknown, conflict = _status(results[1]), _status(results[2]), _status(results[3])
    assert bad_payload.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # Named as in a lone SubmitTaskRequest, not requests[1].payload.x.
    assert _fields(bad_payload) == ["payload.x"]
    assert "payload.x" in bad_payload.message
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert _fields(unknown) == ["type"]
    assert conflict.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert key in conflict.message and earlier.id in conflict.message
    created = [results[0].task, results[4].task]
    assert [task.payload["n"] for task in created] == [1, 4]
    for task in created:
        assert api.get(task.id).id == task.id  # stored
    assert api.get(earlier.id).payload["n"] == 0


def test_a_key_repeated_in_the_batch(make_api: Callable[..., Api]) -> None:
    api = make_api()
    same, other = uuid.uuid4().hex, uuid.uuid4().hex
    first = pb.SubmitTaskRequest(type="echo", payload=payload(n=1), idempotency_key=same)
    clash = pb.SubmitTaskRequest(type="echo", payload=payload(n=1), idempotency_key=other)
    results = _submit_each(
        api,
        [
            first,
            pb.SubmitTaskRequest(type="echo", payload=payload(n=2)),
            first,
            clash,
            pb.SubmitTaskRequest(type="echo", payload=payload(n=2), idempotency_key=other),
        ],
    )
    # The same content under one key: one task, given to both.
    assert results[0].task.id == results[2].task.id
    # Different content under one key: the first wins, the second is refused.
    assert results[3].task.payload["n"] == 1
    assert _status(results[4]).code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert results[1].task.payload["n"] == 2
    assert api.get(results[1].task.id).id == results[1].task.id
    assert api.get(results[3].task.id).idempotency_key == other


def test_a_full_queue_accepts_what_fits_in_request_order(make_api: Callable[..., Api]) -> None:
    # Tasks delayed for an hour stay unfinished, so they hold their room.
    api = make_api(max_queue=3)
    api.submit("echo", {}, delay={"seconds": 3600})
    later = pb.SubmitTaskRequest(type="echo")
    later.delay.seconds = 3600
    results = _submit_each(api, [later, pb.SubmitTaskRequest(type="nope"), later, later, later])
    assert [r.WhichOneof("outcome") for r in results] == ["task", "error", "task", "error", "error"]
    for result in results[3:]:
        status = _status(result)
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "--max-queue" in status.message


def test_without_the_flag_a_batch_stays_all_or_nothing(make_api: Callable[..., Api]) -> None:
    api = make_api()
    label = uuid.uuid4().hex
    requests = [
        pb.SubmitTaskRequest(type="echo", labels={"run": label}),
        pb.SubmitTaskRequest(type="nope", labels={"run": label}),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = api.stub.ListTasks(pb.ListTasksRequest(labels={"run": label}), timeout=10)
    assert not listed.tasks


def test_too_many_requests_fail_the_whole_call(make_api: Callable[..., Api]) -> None:
    api = make_api()
    requests = [pb.SubmitTaskRequest(type="echo")] * 1001
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.BatchSubmitTasks(
            pb.BatchSubmitTasksRequest(requests=requests, partial_success=True), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000" in caught.value.details()


def test_a_tenant_quota_accepts_what_fits_and_refuses_the_rest(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(auth_tokens="token-a-0123456789abcdef=tenant-a", max_queue_per_tenant=2)
    later = pb.SubmitTaskRequest(type="echo")
    later.delay.seconds = 3600
    response = api.stub.BatchSubmitTasks(
        pb.BatchSubmitTasksRequest(requests=[later] * 3, partial_success=True),
        metadata=[("authorization", "Bearer token-a-0123456789abcdef")],
        timeout=10,
    )
    outcomes = [result.WhichOneof("outcome") for result in response.results]
    assert outcomes == ["task", "task", "error"]
    status = _status(response.results[2])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "tenant-a" in status.message and "--max-queue-per-tenant" in status.message


def test_an_unauthenticated_batch_fails_whole(make_api: Callable[..., Api]) -> None:
    api = make_api(auth_tokens="token-a-0123456789abcdef=tenant-a")
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.BatchSubmitTasks(
            pb.BatchSubmitTasksRequest(
                requests=[pb.SubmitTaskRequest(type="echo")], partial_success=True
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
