"""SubmitTask and BatchSubmitTasks with requests of every shape.

Each answer is held to the contract, not only to "not INTERNAL": a request
that breaks a rule is refused naming that field, a valid one is accepted,
an idempotency key repeats or conflicts as the proto says, and an accepted
task reads back as it was given.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.fuzz import (
    FUZZ,
    MAX_BATCH,
    Answer,
    Code,
    Expected,
    answer_of,
    assert_healthy,
    auth_metadata,
    check_clean,
    expected_submit,
    payload_depth,
    scaled,
    struct_of,
    submit_requests,
    unparseable_allowed,
    valid_submit_requests,
)
from tests.support.raw_api import Api
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

SUBMIT_EXAMPLES = 2000
BATCH_EXAMPLES = 400

Metadata = tuple[tuple[str, str | bytes], ...]
# Per idempotency key: the request it was first accepted with, and its task.
KeyBook = dict[str, tuple[bytes, str]]


@pytest.fixture(scope="module")
def key_book(fuzz_server: ServerThread) -> KeyBook:
    """The keys the module's server has accepted, shared by its tests (a
    new book for each server)."""
    return {}


def fingerprint(request: pb.SubmitTaskRequest) -> bytes:
    return request.SerializeToString(deterministic=True)


def check_task(task: task_pb2.Task, request: pb.SubmitTaskRequest) -> None:
    """The task holds what was submitted."""
    assert task.type == request.type
    assert dict(task.labels) == dict(request.labels)
    assert task.priority == request.priority
    assert task.max_attempts == (request.max_attempts or 1)
    assert task.idempotency_key == request.idempotency_key
    assert task.payload.SerializeToString(deterministic=True) == (
        request.payload.SerializeToString(deterministic=True)
    )
    if request.HasField("timeout"):
        given_seconds = request.timeout.seconds + request.timeout.nanos / 1e9
        assert abs(task.timeout.ToNanoseconds() / 1e9 - given_seconds) < 1e-6


def check_refusal(answer: Answer, expected: Expected, requests: list[pb.SubmitTaskRequest]) -> None:
    """A refusal names exactly the fields at fault (plus, for a validated
    type, possibly its payload); a message too deep to parse is refused whole."""
    assert answer.code is Code.INVALID_ARGUMENT, answer
    if answer.fields == {"request"}:
        assert unparseable_allowed(requests), answer
        return
    assert expected.required <= answer.fields <= expected.required | expected.optional, answer


def worth_reading_back(request: pb.SubmitTaskRequest) -> bool:
    # The submit's own response already carries the task as deep as a
    # GetTaskResponse does; read back the payloads at the edges as well.
    payload = request.payload
    return payload_depth(payload) > 16 or payload.ByteSize() > 100_000


def test_submit_fuzz(fuzz_server: ServerThread, fuzz_api: Api, key_book: KeyBook) -> None:
    registered = frozenset(fuzz_server.server.registry.types())  # type: ignore[union-attr]
    last_keyed: list[pb.SubmitTaskRequest] = []
    ran = 0

    @settings(FUZZ, max_examples=scaled(fuzz_server, SUBMIT_EXAMPLES))
    @given(request=submit_requests(), metadata=auth_metadata, repeat=st.integers(0, 9))
    def submit(request: pb.SubmitTaskRequest, metadata: Metadata, repeat: int) -> None:
        nonlocal ran
        ran += 1
        if repeat == 0 and last_keyed:
            request = last_keyed[-1]  # the same request again: the same task back
        expected = expected_submit(request, registered)
        answer = answer_of(lambda: fuzz_api.stub.SubmitTask(request, metadata=metadata, timeout=10))
        check_clean(answer)
        if expected.required or answer.code is Code.INVALID_ARGUMENT:
            check_refusal(answer, expected, [request])
            return
        key = request.idempotency_key
        first = key_book.get(key) if key else None
        if first is not None and first[0] != fingerprint(request):
            assert answer.code is Code.ALREADY_EXISTS, answer
            return
        assert answer.code is Code.OK, answer
        task = answer.response.task
        check_task(task, request)
        if first is not None:
            assert task.id == first[1]
        else:
            assert task.state == task_pb2.TASK_STATE_PENDING
            if key:
                key_book[key] = (fingerprint(request), task.id)
                last_keyed.append(request)
        if worth_reading_back(request):
            read = answer_of(
                lambda: fuzz_api.stub.GetTask(pb.GetTaskRequest(id=task.id), timeout=10)
            )
            assert read.code is Code.OK, f"an accepted task cannot be read back: {read}"
            check_task(read.response.task, request)
        if request.type == "sleep" or request.HasField("delay"):
            # Long or delayed work would only pile up: stop it.
            cancel = answer_of(
                lambda: fuzz_api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
            )
            check_clean(cancel, frozenset({Code.OK, Code.FAILED_PRECONDITION}))

    submit()
    assert ran >= scaled(fuzz_server, SUBMIT_EXAMPLES)
    assert_healthy(fuzz_server, fuzz_api)


batch_items = st.one_of(
    valid_submit_requests(), valid_submit_requests(), valid_submit_requests(), submit_requests()
)
batches = st.one_of(
    st.lists(batch_items, max_size=4),
    st.lists(batch_items, max_size=4),
    st.lists(valid_submit_requests(), min_size=1, max_size=2).map(lambda items: items * 2),
    # Over the limit (exactly at it is tests/service's): refused before any
    # item is looked at.
    st.integers(MAX_BATCH + 1, MAX_BATCH + 3).map(
        lambda n: [pb.SubmitTaskRequest(type="echo")] * n
    ),
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def batch_bytes(items: list[pb.SubmitTaskRequest]) -> bytes:
    """BatchSubmitTasksRequest{requests: items}, written by hand: the client
    library refuses to nest a payload as deep as some of these in a batch,
    and the server must be asked anyway."""
    parts = (item.SerializeToString() for item in items)
    return b"".join(b"\x0a" + _varint(len(part)) + part for part in parts)


def expected_batch(items: list[pb.SubmitTaskRequest], registered: frozenset[str]) -> Expected:
    if not items or len(items) > MAX_BATCH:
        return Expected(frozenset({"requests"}))
    required: set[str] = set()
    optional: set[str] = set()
    for index, item in enumerate(items):
        one = expected_submit(item, registered)
        required.update(f"requests[{index}].{name}" for name in one.required)
        optional.update(f"requests[{index}].{name}" for name in one.optional)
    return Expected(frozenset(required), frozenset(optional))


def test_batch_submit_fuzz(fuzz_server: ServerThread, fuzz_api: Api, key_book: KeyBook) -> None:
    registered = frozenset(fuzz_server.server.registry.types())  # type: ignore[union-attr]
    batch_call = fuzz_api.channel.unary_unary(
        "/conveyor.v1.TaskService/BatchSubmitTasks",
        response_deserializer=pb.BatchSubmitTasksResponse.FromString,
    )
    ran = 0

    @settings(FUZZ, max_examples=scaled(fuzz_server, BATCH_EXAMPLES))
    @given(items=batches, metadata=auth_metadata)
    def batch(items: list[pb.SubmitTaskRequest], metadata: Metadata) -> None:
        nonlocal ran
        ran += 1
        expected = expected_batch(items, registered)
        raw = batch_bytes(items)
        answer = answer_of(lambda: batch_call(raw, metadata=metadata, timeout=20))
        check_clean(answer)
        if expected.required or answer.code is Code.INVALID_ARGUMENT:
            check_refusal(answer, expected, items)
            return
        # All or nothing: a key conflicts with an earlier request, in an
        # earlier call or earlier in this batch, or repeats it.
        seen = {key: first for key, (first, _) in key_book.items()}
        conflict = any(
            item.idempotency_key
            and seen.setdefault(item.idempotency_key, fingerprint(item)) != fingerprint(item)
            for item in items
        )
        if conflict:
            assert answer.code is Code.ALREADY_EXISTS, answer
            return
        assert answer.code is Code.OK, answer
        tasks = list(answer.response.tasks)
        assert len(tasks) == len(items)
        ids_by_key = {key: task_id for key, (_, task_id) in key_book.items()}
        unkeyed = []
        for item, task in zip(items, tasks, strict=True):
            check_task(task, item)
            key = item.idempotency_key
            if key:
                assert ids_by_key.setdefault(key, task.id) == task.id
                key_book.setdefault(key, (fingerprint(item), task.id))
            else:
                unkeyed.append(task.id)
        assert len(set(unkeyed)) == len(unkeyed), "two requests without a key got one task"

    batch()
    assert ran >= scaled(fuzz_server, BATCH_EXAMPLES)
    assert_healthy(fuzz_server, fuzz_api)


def test_batch_over_the_message_limit_is_refused_cleanly(
    fuzz_server: ServerThread, fuzz_api: Api
) -> None:
    # 70 payloads, each under its own limit, make a message over the 16 MiB
    # one: gRPC refuses it before the service sees it.
    blob = struct_of({"blob": "x" * (250 * 1024)})
    request = pb.BatchSubmitTasksRequest(
        requests=[pb.SubmitTaskRequest(type="echo", payload=blob) for _ in range(70)]
    )
    answer = answer_of(lambda: fuzz_api.stub.BatchSubmitTasks(request, timeout=30))
    check_clean(answer)
    assert answer.code is Code.RESOURCE_EXHAUSTED, answer
    assert_healthy(fuzz_server, fuzz_api)
