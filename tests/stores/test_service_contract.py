"""The same flows through a real server and the SDK, once per store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from conveyor import AlreadyExists, Client, TaskFailed, TaskSpec, TaskState
from tests.support.server import ServerThread

MakeServer = Callable[..., ServerThread]


@pytest.fixture
def client(store_url: str, make_server: MakeServer) -> Iterator[Client]:
    """A client of a fresh server on an empty store of each kind."""
    server = make_server(store=store_url)
    with Client(server.address, timeout=5.0) as client:
        yield client


@pytest.fixture
def run_label() -> dict[str, str]:
    return {"run": uuid.uuid4().hex}


def test_submit_and_wait_for_the_result(client: Client) -> None:
    handle = client.submit("echo", {"n": 3, "words": ["a", "b"]}, labels={"team": "data"})
    assert handle.task.state is TaskState.PENDING
    assert handle.result(timeout=10) == {"n": 3, "words": ["a", "b"]}
    done = client.get(handle.id)
    assert (done.state, done.attempt) == (TaskState.SUCCEEDED, 1)
    assert done.labels == {"team": "data"}
    assert done.progress.percent == 100.0
    assert done.end_time is not None


def test_watch_sees_progress_then_success(client: Client) -> None:
    handle = client.submit("progress_steps", {"steps": 4, "interval": 0.1})
    seen = list(handle.watch())
    versions = [task.version for task in seen]
    assert versions == sorted(set(versions))
    partial = [
        task.progress.percent
        for task in seen
        if task.state is TaskState.RUNNING and 0 < task.progress.percent < 100
    ]
    assert partial, f"no progress between 0 and 100 in {[t.progress for t in seen]}"
    assert partial == sorted(partial)
    final = seen[-1]
    assert final.state is TaskState.SUCCEEDED
    assert final.result == 4
    assert final.progress.percent == 100.0


def test_cancel_stops_the_running_handler(store_url: str, make_server: MakeServer) -> None:
    # A long stop grace: a CANCELLED well within it means the handler itself returned.
    server = make_server(store=store_url, stop_grace_seconds=20.0)
    with Client(server.address, timeout=5.0) as client:
        handle = client.submit("wait_for_cancel", {"seconds": 60}, max_attempts=3)
        for task in handle.watch():
            if task.state is TaskState.RUNNING:
                break
        flagged = handle.cancel()
        assert flagged.state is TaskState.RUNNING and flagged.cancel_requested
        final = handle.wait(timeout=5)
        assert final.state is TaskState.CANCELLED
        assert final.attempt == 1


def test_retry_runs_a_failed_task_again(client: Client) -> None:
    handle = client.submit("fail", {"message": "disk full"})
    with pytest.raises(TaskFailed) as caught:
        handle.result(timeout=10)
    failed = caught.value.task
    assert (failed.state, failed.attempt) == (TaskState.FAILED, 1)
    assert failed.error is not None and failed.error.message == "disk full"

    retried = handle.retry()
    assert retried.id == handle.id
    assert retried.version > failed.version
    again = handle.wait(timeout=10)
    assert (again.state, again.attempt) == (TaskState.FAILED, 1)
    assert again.version > retried.version

    delayed = client.submit("echo", {"v": 1}, delay=60)
    assert delayed.cancel().state is TaskState.CANCELLED
    assert delayed.retry().state is TaskState.PENDING
    assert delayed.result(timeout=10) == {"v": 1}


def test_list_with_filters(client: Client, run_label: dict[str, str]) -> None:
    first = client.submit("echo", {"i": 1}, labels={**run_label, "kind": "a"})
    second = client.submit("echo", {"i": 2}, labels={**run_label, "kind": "b"})
    later = client.submit("echo", {"i": 3}, labels={**run_label, "kind": "a"}, delay=60)
    for handle in (first, second):
        handle.wait(timeout=10)

    everything = [task.id for task in client.list(labels=run_label, page_size=1)]
    assert everything == [later.id, second.id, first.id]
    assert [task.id for task in client.list(labels={**run_label, "kind": "a"})] == [
        later.id,
        first.id,
    ]
    pending = client.list(states=[TaskState.PENDING], labels=run_label)
    assert [task.id for task in pending] == [later.id]
    done = client.list(states=[TaskState.SUCCEEDED], type="echo", labels=run_label)
    assert [task.id for task in done] == [second.id, first.id]
    assert list(client.list(type="sleep", labels=run_label)) == []


def test_idempotent_submit(client: Client) -> None:
    first = client.submit("echo", {"n": 1}, idempotency_key="order-1")
    again = client.submit("echo", {"n": 1}, idempotency_key="order-1")
    assert again.id == first.id
    with pytest.raises(AlreadyExists):
        client.submit("echo", {"n": 2}, idempotency_key="order-1")
    assert first.result(timeout=10) == {"n": 1}
    assert client.submit("echo", {"n": 1}, idempotency_key="order-1").id == first.id


def test_batch_submit_is_all_or_nothing(client: Client, run_label: dict[str, str]) -> None:
    handles = client.submit_batch(
        [TaskSpec("echo", {"i": i}, labels=run_label, priority=i) for i in range(3)]
    )
    assert len({handle.id for handle in handles}) == 3
    assert [handle.result(timeout=10) for handle in handles] == [{"i": i} for i in range(3)]

    refused = {"run": uuid.uuid4().hex}
    with pytest.raises(AlreadyExists):
        client.submit_batch(
            [
                TaskSpec("echo", {"i": 1}, labels=refused, idempotency_key="twice"),
                TaskSpec("echo", {"i": 2}, labels=refused),
                TaskSpec("echo", {"i": 3}, labels=refused, idempotency_key="twice"),
            ]
        )
    assert list(client.list(labels=refused)) == []


def test_flaky_task_is_retried_to_success(client: Client) -> None:
    handle = client.submit("flaky", {"succeed_on": 3}, max_attempts=5)
    done = handle.wait(timeout=10)
    assert done.state is TaskState.SUCCEEDED
    assert done.attempt == 3
    assert done.result == {"attempt": 3}
    assert done.error is None
