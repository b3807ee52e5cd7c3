"""conveyor.testing: a real server for a test, queued work run to the end,
and a clock the test moves."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from conveyor import AsyncClient, Client, TaskState
from conveyor.testing import AsyncConveyorTestServer, ConveyorTestServer, TestClock
from conveyor_server import HandlerRegistry, ServerConfig, TaskContext

registry = HandlerRegistry()
# Where the fan-out handler submits its children: the running test's server.
children_target: dict[str, str] = {}


@registry.task("double")
def double(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return {"value": 2 * payload["value"]}


@registry.task("fan_out")
def fan_out(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Submits one `double` per value: work that makes more work."""
    with Client(children_target["address"]) as client:
        ids = [client.submit("double", {"value": value}).id for value in payload["values"]]
    return {"children": ids}


@registry.task("flaky")
def flaky(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    if ctx.attempt == 1:
        raise ConnectionError("the mail server hung up")
    return {"attempt": ctx.attempt}


@registry.task("broken")
def broken(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    raise ValueError(f"no such customer: {payload['customer']}")


@registry.task("wait_for_stop")
def wait_for_stop(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    ctx.wait(60)
    return None


@pytest.fixture
def conveyor() -> Any:
    with ConveyorTestServer(registry) as server:
        children_target["address"] = server.address
        yield server


def test_run_until_idle_runs_a_chain_of_dependent_tasks(conveyor: ConveyorTestServer) -> None:
    client = conveyor.client
    first = client.submit("double", {"value": 1})
    second = client.submit("double", {"value": 2}, depends_on=[first])
    third = client.submit("double", {"value": 3}, depends_on=[second])

    conveyor.run_until_idle()

    for handle, value in ((first, 2), (second, 4), (third, 6)):
        task = handle.get()
        assert task.state is TaskState.SUCCEEDED
        assert task.result == {"value": value}


def test_run_until_idle_waits_for_the_work_tasks_submit(conveyor: ConveyorTestServer) -> None:
    parent = conveyor.client.submit("fan_out", {"values": [1, 2, 3]})

    conveyor.run_until_idle()

    result = parent.get().result
    assert isinstance(result, dict)
    children = [conveyor.client.get(child) for child in result["children"]]
    assert [child.state for child in children] == [TaskState.SUCCEEDED] * 3
    assert [child.result for child in children] == [{"value": 2}, {"value": 4}, {"value": 6}]


def test_a_delayed_task_waits_for_the_clock(conveyor: ConveyorTestServer) -> None:
    handle = conveyor.client.submit("double", {"value": 5}, delay=3600)

    conveyor.run_until_idle()
    assert handle.get().state is TaskState.PENDING

    conveyor.advance(3599)
    conveyor.run_until_idle()
    assert handle.get().state is TaskState.PENDING

    conveyor.advance(1)
    conveyor.run_until_idle()
    task = handle.get()
    assert task.state is TaskState.SUCCEEDED
    assert task.result == {"value": 10}


def test_advance_makes_a_retry_due_after_its_backoff() -> None:
    config = ServerConfig(retry_backoff_seconds=60.0, retry_backoff_max_seconds=60.0)
    with ConveyorTestServer(registry, config=config) as conveyor:
        handle = conveyor.client.submit("flaky", max_attempts=2)

        conveyor.run_until_idle()
        waiting = handle.get()
        assert waiting.state is TaskState.PENDING
        assert waiting.attempt == 1
        # Equal jitter: the backoff is between half and all of 60 s.
        conveyor.advance(29)
        conveyor.run_until_idle()
        assert handle.get().state is TaskState.PENDING

        conveyor.advance(31)
        conveyor.run_until_idle()
        task = handle.get()
        assert task.state is TaskState.SUCCEEDED
        assert task.result == {"attempt": 2}


def test_a_failing_handler_shows_its_error(conveyor: ConveyorTestServer) -> None:
    handle = conveyor.client.submit("broken", {"customer": "c-42"})

    conveyor.run_until_idle()

    task = handle.get()
    assert task.state is TaskState.FAILED
    assert task.error is not None
    assert "no such customer: c-42" in task.error.message


def test_run_until_idle_says_what_to_do_when_work_never_ends(
    conveyor: ConveyorTestServer,
) -> None:
    conveyor.client.submit("wait_for_stop")

    with pytest.raises(TimeoutError, match=r"still had work after 0\.2s"):
        conveyor.run_until_idle(timeout=0.2)


def test_task_times_are_on_the_test_clock(conveyor: ConveyorTestServer) -> None:
    conveyor.advance(86_400)
    handle = conveyor.client.submit("double", {"value": 1})
    conveyor.run_until_idle()

    task = handle.get()
    assert task.create_time is not None
    assert task.create_time.timestamp() == pytest.approx(conveyor.clock(), abs=0.001)


def test_the_clock_moves_only_forward() -> None:
    clock = TestClock(start=100.0)
    assert clock.advance(5) == 105.0
    assert clock() == 105.0
    with pytest.raises(ValueError, match="forward only"):
        clock.advance(-1)


def test_the_sync_server_hands_out_async_clients(conveyor: ConveyorTestServer) -> None:
    import asyncio

    async def submit() -> str:
        async with conveyor.async_client() as client:
            assert isinstance(client, AsyncClient)
            return (await client.submit("double", {"value": 4})).id

    task_id = asyncio.run(submit())
    conveyor.run_until_idle()
    assert conveyor.client.get(task_id).result == {"value": 8}


async def test_the_async_form_runs_work_and_steps_time() -> None:
    async with AsyncConveyorTestServer(registry) as conveyor:
        handle = await conveyor.client.submit("double", {"value": 21}, delay=60)
        await conveyor.run_until_idle()
        assert (await handle.get()).state is TaskState.PENDING

        await conveyor.advance(60)
        await conveyor.run_until_idle()

        assert (await handle.get()).result == {"value": 42}
        assert conveyor.sync_client.get(handle.id).state is TaskState.SUCCEEDED


def test_a_server_is_stopped_when_its_block_ends() -> None:
    with ConveyorTestServer(registry) as conveyor:
        server_threads = {t for t in threading.enumerate() if t.name == "conveyor-test-server"}
        assert server_threads
    with pytest.raises(RuntimeError, match="enter its `with` block first"):
        _ = conveyor.client
    assert not any(thread.is_alive() for thread in server_threads)


def test_advance_fires_a_schedule_that_falls_due(conveyor: ConveyorTestServer) -> None:
    client = conveyor.client
    client.create_schedule("hourly", "double", {"value": 7}, interval=3600)
    conveyor.run_until_idle()
    assert list(client.list(type="double")) == []

    conveyor.advance(3600)
    conveyor.run_until_idle()

    fired = list(client.list(type="double"))
    assert [(task.state, task.result) for task in fired] == [(TaskState.SUCCEEDED, {"value": 14})]
