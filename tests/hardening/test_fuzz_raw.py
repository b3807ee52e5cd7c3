"""Every TaskService and ScheduleService method fed bytes that are not what the client library
would send: random bytes, and real requests with bytes flipped, cut,
inserted or repeated. The server parses them itself; whatever it makes of
them, the answer is a clean status and, when OK, a response a client can
parse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor.v1 import task_service_pb2 as pb
from tests.support.fuzz import (
    FUZZ,
    Answer,
    Code,
    answer_of,
    assert_healthy,
    auth_metadata,
    check_clean,
    scaled,
)
from tests.support.raw_api import Api
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

RAW_EXAMPLES = 2200
Metadata = tuple[tuple[str, str | bytes], ...]
# Method name -> (its path, whether it streams, its response type).
METHODS = {
    method.name: (
        f"/{service.full_name}/{method.name}",
        method.server_streaming,
        getattr(module, method.output_type.name),
    )
    for module, service in (
        (pb, pb.DESCRIPTOR.services_by_name["TaskService"]),
        (spb, spb.DESCRIPTOR.services_by_name["ScheduleService"]),
    )
    for method in service.methods
}


@pytest.fixture(scope="module")
def seeds(fuzz_api: Api) -> dict[str, list[bytes]]:
    """Real requests of each method, to mutate."""
    api = fuzz_api
    done = api.wait(api.submit("echo", {"n": 1}, labels={"raw": "yes"}).id)
    failed = api.wait(api.submit("fail_permanently", {}).id)
    submit = pb.SubmitTaskRequest(
        type="echo", labels={"raw": "yes"}, idempotency_key="raw-1", max_attempts=2, priority=5
    )
    submit.payload.update({"text": "h\u00e9llo", "list": [1, 2.5, None, True], "nested": {"a": {}}})
    submit.timeout.seconds = 30
    schedule = spb.Schedule(
        id="raw", cron="0 3 * * *", time_zone="Europe/Paris", task=pb.SubmitTaskRequest(type="echo")
    )
    schedule.catch_up_window.seconds = 600
    requests: dict[str, list[Any]] = {
        "SubmitTask": [submit, pb.SubmitTaskRequest(type="echo")],
        "BatchSubmitTasks": [pb.BatchSubmitTasksRequest(requests=[submit, submit])],
        "GetTask": [pb.GetTaskRequest(id=done.id)],
        "WatchTask": [
            pb.WatchTaskRequest(id=done.id),
            pb.WatchTaskRequest(id=failed.id, since_version=1),
        ],
        "WatchTasks": [
            pb.WatchTasksRequest(labels={"raw": "yes"}, states=[3], include_current=True),
            pb.WatchTasksRequest(ids=[done.id, failed.id], type="echo", cursor="x.1"),
        ],
        "ListTasks": [
            pb.ListTasksRequest(page_size=2, states=[3, 4], type="echo", labels={"raw": "yes"})
        ],
        "CancelTask": [pb.CancelTaskRequest(id=done.id)],
        "RetryTask": [pb.RetryTaskRequest(id=failed.id)],
        "ListTaskTypes": [pb.ListTaskTypesRequest()],
        "ListWorkers": [pb.ListWorkersRequest()],
        "BatchCancelTasks": [
            pb.BatchCancelTasksRequest(ids=[done.id, failed.id]),
            pb.BatchCancelTasksRequest(filter=pb.TaskFilter(type="echo", labels={"raw": "yes"})),
        ],
        "BatchRetryTasks": [
            pb.BatchRetryTasksRequest(filter=pb.TaskFilter(states=[4], type="fail_permanently"))
        ],
        # Types no other request uses: the fuzz must not limit or pause echo.
        "UpdateTaskType": [
            pb.UpdateTaskTypeRequest(
                name="fuzz_limited",
                limits=pb.TaskTypeLimits(max_running=4, max_starts_per_second=2.5, burst=3),
                update_mask={"paths": ["max_running", "max_starts_per_second", "burst"]},
            )
        ],
        "PauseTaskType": [pb.PauseTaskTypeRequest(name="fuzz_paused")],
        "ResumeTaskType": [pb.ResumeTaskTypeRequest(name="fuzz_paused")],
        "CreateSchedule": [spb.CreateScheduleRequest(schedule=schedule)],
        "GetSchedule": [spb.GetScheduleRequest(id="raw")],
        "ListSchedules": [spb.ListSchedulesRequest(page_size=2)],
        "UpdateSchedule": [
            spb.UpdateScheduleRequest(schedule=schedule, update_mask={"paths": ["cron"]})
        ],
        "DeleteSchedule": [spb.DeleteScheduleRequest(id="raw-gone")],
        "PauseSchedule": [spb.PauseScheduleRequest(id="raw")],
        "ResumeSchedule": [spb.ResumeScheduleRequest(id="raw")],
        "TriggerSchedule": [spb.TriggerScheduleRequest(id="raw", request_id="r-1")],
        "GetTaskLogs": [
            pb.GetTaskLogsRequest(id=done.id),
            pb.GetTaskLogsRequest(id=failed.id, attempt=1, page_size=2, page_token="x.1"),
        ],
    }
    assert set(requests) == set(METHODS)
    return {name: [r.SerializeToString() for r in found] for name, found in requests.items()}


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "repeat"]))
        if edit == "flip" and index < len(data):
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set" and index < len(data):
            data[index] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12]))
        elif edit == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[index : index + draw(st.integers(1, 4))]
        elif edit == "cut":
            del data[index:]
        elif edit == "repeat":
            data[index:index] = data[max(0, index - 8) : index]
    return bytes(data)


def call_raw(
    channel: grpc.Channel, method: str, body: bytes, metadata: Metadata
) -> Callable[[], list[bytes]]:
    path, streaming, _ = METHODS[method]
    if method == "WatchTasks":
        # A WatchTasks stream that was accepted runs until cancelled: its
        # response headers say it was; then it is cancelled, with what came.
        feed = channel.unary_stream(path)

        def watch() -> list[bytes]:
            call: Any = feed(body, metadata=metadata, timeout=10)
            call.initial_metadata()
            if call.done():
                return list(call)
            call.cancel()
            return []

        return watch
    if streaming:
        stream = channel.unary_stream(path)
        return lambda: list(stream(body, metadata=metadata, timeout=10))
    unary = channel.unary_unary(path)
    return lambda: [unary(body, metadata=metadata, timeout=10)]


def test_raw_bytes_fuzz(
    fuzz_server: ServerThread, fuzz_api: Api, seeds: dict[str, list[bytes]]
) -> None:
    ran = 0

    @settings(FUZZ, max_examples=scaled(fuzz_server, RAW_EXAMPLES))
    @given(
        data=st.data(),
        method=st.sampled_from(sorted(METHODS)),
        random_bytes=st.booleans(),
        metadata=auth_metadata,
    )
    def send(data: st.DataObject, method: str, random_bytes: bool, metadata: Metadata) -> None:
        nonlocal ran
        ran += 1
        if random_bytes:
            body = data.draw(st.binary(max_size=300), label="body")
        else:
            seed = data.draw(st.sampled_from(seeds[method]), label="seed")
            body = data.draw(mutations(seed), label="body")
        answer: Answer = answer_of(call_raw(fuzz_api.channel, method, body, metadata))
        check_clean(answer)
        if answer.code is Code.OK:
            _, _, response_type = METHODS[method]
            for message in answer.response:
                response_type.FromString(message)  # a client can read what it got

    send()
    assert ran >= scaled(fuzz_server, RAW_EXAMPLES)
    assert_healthy(fuzz_server, fuzz_api)
