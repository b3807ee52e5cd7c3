"""GetTask, WatchTask, CancelTask and RetryTask with ids of every shape.

Ids are well-formed or not, unknown or naming real tasks in each state;
since_version is anything an int64 holds. Each answer is checked against
what the contract says of that id and that state.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.fuzz import (
    FUZZ,
    SAFE_ID,
    TERMINAL,
    Answer,
    Code,
    answer_of,
    any_ids,
    assert_healthy,
    auth_metadata,
    check_clean,
    int64,
    scaled,
    wait_until,
)
from tests.support.raw_api import Api
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

READ_EXAMPLES = 2800
CHANGE_EXAMPLES = 1400

Metadata = tuple[tuple[str, str | bytes], ...]
HOUR = duration_pb2.Duration(seconds=3600)


@pytest.fixture(scope="module")
def pool(fuzz_server: ServerThread, fuzz_api: Api) -> Iterator[dict[str, task_pb2.Task]]:
    """One task in each state, left alone while the read fuzz runs."""
    api = fuzz_api
    succeeded = api.submit("echo", {"n": 1})
    failed = api.submit("fail_permanently", {})
    cancelled = api.submit("echo", {}, delay=HOUR)
    api.stub.CancelTask(pb.CancelTaskRequest(id=cancelled.id), timeout=10)
    pending = api.submit("echo", {}, delay=HOUR)
    running = api.submit("wait_for_cancel", {"seconds": 3600})
    api.wait(succeeded.id)
    api.wait(failed.id)
    # Once its handler reported progress, the running task changes no more.
    wait_until(lambda: api.get(running.id).progress.percent == 10, 20, "reporting progress")
    tasks = {task.id: api.get(task.id) for task in (succeeded, failed, cancelled, pending, running)}
    yield tasks
    for task_id in (pending.id, running.id):
        api.stub.CancelTask(pb.CancelTaskRequest(id=task_id), timeout=10)


def check_bad_id(answer: Answer) -> None:
    assert answer.code is Code.INVALID_ARGUMENT, answer
    assert answer.fields == {"id"}, answer


def watch(api: Api, request: pb.WatchTaskRequest, metadata: Metadata, first_only: bool) -> Answer:
    """The snapshots of a watch; with `first_only`, the first one, after
    which the client hangs up."""
    stream = api.stub.WatchTask(request, metadata=metadata, timeout=10)

    def read() -> list[task_pb2.Task]:
        if not first_only:
            return [message.task for message in stream]
        first = next(stream).task
        stream.cancel()
        return [first]

    return answer_of(read)


def test_get_and_watch_fuzz(
    fuzz_server: ServerThread, fuzz_api: Api, pool: dict[str, task_pb2.Task]
) -> None:
    ids = st.one_of(any_ids, st.sampled_from(sorted(pool)))
    sinces = st.one_of(st.integers(-2, 6), st.integers(-2, 6), int64)
    ran = 0

    @settings(FUZZ, max_examples=scaled(fuzz_server, READ_EXAMPLES))
    @given(task_id=ids, since=sinces, use_watch=st.booleans(), metadata=auth_metadata)
    def read(task_id: str, since: int, use_watch: bool, metadata: Metadata) -> None:
        nonlocal ran
        ran += 1
        known = pool.get(task_id)
        if not use_watch:
            answer = answer_of(
                lambda: fuzz_api.stub.GetTask(
                    pb.GetTaskRequest(id=task_id), metadata=metadata, timeout=10
                )
            )
            check_clean(answer)
            if SAFE_ID.fullmatch(task_id) is None:
                check_bad_id(answer)
            elif known is None:
                assert answer.code is Code.NOT_FOUND, answer
            else:
                assert answer.code is Code.OK, answer
                assert answer.response.task.id == task_id
                assert answer.response.task.state == known.state
                assert answer.response.task.version == known.version
            return

        request = pb.WatchTaskRequest(id=task_id, since_version=since)
        stays_open = known is not None and known.state not in TERMINAL and since >= 0
        if stays_open and since > known.version:  # type: ignore[union-attr]
            # Ahead of an unfinished task: nothing would ever be sent.
            stream = fuzz_api.stub.WatchTask(request, metadata=metadata, timeout=10)
            answer = answer_of(lambda: list(stream))
            check_clean(answer, frozenset({Code.OUT_OF_RANGE}))
            return
        if stays_open and since == known.version:  # type: ignore[union-attr]
            # Nothing newer to send until the task changes: an open, silent
            # stream, which the client gives up on.
            stream = fuzz_api.stub.WatchTask(request, metadata=metadata, timeout=0.02)
            answer = answer_of(lambda: list(stream))
            assert answer.code is Code.DEADLINE_EXCEEDED, answer
            return
        first_only = stays_open
        answer = watch(fuzz_api, request, metadata, first_only)
        if first_only:
            check_clean(answer, frozenset({Code.OK}))
        else:
            check_clean(answer)
        if SAFE_ID.fullmatch(task_id) is None:
            check_bad_id(answer)
        elif since < 0:
            assert answer.code is Code.INVALID_ARGUMENT, answer
            assert answer.fields == {"since_version"}, answer
        elif known is None:
            assert answer.code is Code.NOT_FOUND, answer
        else:
            assert answer.code is Code.OK, answer
            versions = [task.version for task in answer.response]
            if first_only or since < known.version:
                assert versions == [known.version], answer
            else:
                assert versions == [], answer

    read()
    assert ran >= scaled(fuzz_server, READ_EXAMPLES)
    assert_healthy(fuzz_server, fuzz_api)


def test_cancel_and_retry_fuzz(fuzz_server: ServerThread, fuzz_api: Api) -> None:
    api = fuzz_api
    targets = [api.submit("echo", {"n": n}).id for n in range(3)]
    targets += [api.submit("fail_permanently", {}).id for _ in range(3)]
    targets += [api.submit("echo", {}, delay=HOUR).id for _ in range(3)]
    for task_id in targets[:6]:
        api.wait(task_id)
    known = set(targets)
    ids = st.one_of(any_ids, st.sampled_from(targets), st.sampled_from(targets))
    ran = 0

    @settings(FUZZ, max_examples=scaled(fuzz_server, CHANGE_EXAMPLES))
    @given(task_id=ids, retry=st.booleans(), metadata=auth_metadata)
    def change(task_id: str, retry: bool, metadata: Metadata) -> None:
        nonlocal ran
        ran += 1
        if retry:
            request = pb.RetryTaskRequest(id=task_id)
            answer = answer_of(lambda: api.stub.RetryTask(request, metadata=metadata, timeout=10))
        else:
            request = pb.CancelTaskRequest(id=task_id)  # type: ignore[assignment]
            answer = answer_of(lambda: api.stub.CancelTask(request, metadata=metadata, timeout=10))
        check_clean(answer)
        if SAFE_ID.fullmatch(task_id) is None:
            check_bad_id(answer)
            return
        if task_id not in known:
            assert answer.code is Code.NOT_FOUND, answer
            return
        assert answer.code in (Code.OK, Code.FAILED_PRECONDITION), answer
        if answer.code is Code.OK:
            task = answer.response.task
            if retry:
                assert task.state == task_pb2.TASK_STATE_PENDING, task
            else:
                assert task.state == task_pb2.TASK_STATE_CANCELLED or task.cancel_requested, task
        elif not retry:
            # Only a finished task refuses a cancel, and only a retry could
            # change it since.
            state = api.get(task_id).state
            assert state in (task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED), state

    change()
    assert ran >= scaled(fuzz_server, CHANGE_EXAMPLES)
    for task_id in targets:
        answer = answer_of(
            lambda task_id=task_id: api.stub.CancelTask(
                pb.CancelTaskRequest(id=task_id), timeout=10
            )
        )
        assert answer.code in (Code.OK, Code.FAILED_PRECONDITION), answer
    assert_healthy(fuzz_server, fuzz_api)
