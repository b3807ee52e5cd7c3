"""Schedules through the real server and SDK, on every store: fires, catch-up,
overlap, pause and resume, triggers, and the exactly-once idempotency key.

Most tests drive time by hand: the server runs no ticker of its own
(schedule_tick_seconds=0), and the test moves a fake clock shared by the
schedule operations and a ticker it calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conveyor import (
    AlreadyExists,
    Client,
    InvalidArgument,
    OverlapPolicy,
    Task,
    TaskNotFound,
    TaskSpec,
    TaskState,
)
from conveyor_server._schedule_spec import fire_request, spec_of
from tests.support.procs import wait_until
from tests.support.server import ServerThread


class FakeClock:
    """The time of a server's schedule operations and of its ticker, moved
    by the test; `tick` runs the ticker once."""

    def __init__(self, thread: ServerThread) -> None:
        server = thread.server
        assert server is not None and server.ticker is not None and server.schedules is not None
        self._thread = thread
        self._ticker = server.ticker
        self.now = round(time.time())
        server.schedules.clock = self
        self._ticker.clock = self

    def __call__(self) -> float:
        return self.now

    def tick(self, at: float) -> None:
        self.now = at
        self._thread.call(self._ticker.tick)


@pytest.fixture
def hand(
    store_url: str, make_server: Callable[..., ServerThread]
) -> Iterator[tuple[Client, FakeClock]]:
    """A client of a server on each store whose schedules fire only when the
    test ticks, on a fake clock."""
    thread = make_server(store=store_url, schedule_tick_seconds=0)
    with Client(thread.address, timeout=5) as client:
        yield client, FakeClock(thread)


@pytest.fixture
def sdk(server: ServerThread) -> Iterator[Client]:
    with Client(server.address, timeout=5) as client:
        yield client


def runs(client: Client, schedule_id: str) -> list[Task]:
    """The schedule's tasks, oldest first."""
    return list(client.list(labels={"conveyor.schedule": schedule_id}))[::-1]


def fire_times(tasks: list[Task]) -> list[str]:
    return [task.labels["conveyor.fire_time"] for task in tasks]


def at(seconds: float) -> str:
    """A fire time as its label spells it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_a_schedule_fires_every_second_with_the_ticker_running(
    store_url: str, make_server: Callable[..., ServerThread]
) -> None:
    thread = make_server(store=store_url)
    with Client(thread.address, timeout=5) as client:
        client.create_schedule("each-second", "echo", {"n": 1}, interval=1, labels={"team": "a"})
        wait_until(lambda: len(runs(client, "each-second")) >= 2, 15, "two fires")
        tasks = runs(client, "each-second")
        keys = [task.idempotency_key for task in tasks]
        assert len(set(fire_times(tasks))) == len(tasks)
        for task in tasks:
            fired = datetime.fromisoformat(task.labels["conveyor.fire_time"])
            assert task.idempotency_key == f"sched:each-second:{round(fired.timestamp() * 1000)}"
            assert (task.type, task.payload, task.labels["team"]) == ("echo", {"n": 1}, "a")
        assert len(set(keys)) == len(keys)
        schedule = client.get_schedule("each-second")
        assert schedule.interval == timedelta(seconds=1)
        assert len(schedule.next_fire_times) == 5
        assert list(schedule.next_fire_times) == sorted(schedule.next_fire_times)
        assert schedule.recent_runs[0].fire_time == max(r.fire_time for r in schedule.recent_runs)
        assert schedule.last_fire_time is not None


def test_interval_fires_are_counted_from_the_creation(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    created = client.create_schedule("every-10s", "echo", interval=10, overlap=OverlapPolicy.ALLOW)
    assert created.create_time == datetime.fromtimestamp(start, UTC)
    assert created.next_fire_times[:2] == tuple(
        datetime.fromtimestamp(start + s, UTC) for s in (10, 20)
    )
    assert created.last_fire_time is None
    clock.tick(start + 9.999)
    assert runs(client, "every-10s") == []
    clock.tick(start + 35)
    assert fire_times(runs(client, "every-10s")) == [at(start + s) for s in (10, 20, 30)]
    schedule = client.get_schedule("every-10s")
    assert schedule.last_fire_time == datetime.fromtimestamp(start + 30, UTC)
    assert [run.fire_time for run in schedule.recent_runs] == [
        datetime.fromtimestamp(start + s, UTC) for s in (30, 20, 10)
    ]
    assert not any(run.triggered for run in schedule.recent_runs)


def test_a_tick_again_at_the_same_time_fires_nothing_more(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule("once", "echo", interval=5, overlap=OverlapPolicy.ALLOW)
    clock.tick(start + 11)
    clock.tick(start + 11)
    clock.tick(start + 12)
    assert fire_times(runs(client, "once")) == [at(start + 5), at(start + 10)]


def test_a_fire_already_submitted_elsewhere_makes_no_second_task(
    hand: tuple[Client, FakeClock],
) -> None:
    """Another process that submitted the same fire (and died before it
    recorded so) used the same key: the store keeps one task."""
    client, clock = hand
    start = clock.now
    schedule = client.create_schedule("shared", "echo", {"x": 1}, interval=10)
    request = fire_request("shared", spec_of(schedule.raw), (start + 10) * 1000)
    earlier = client.submit_batch(
        [
            TaskSpec(
                request.type,
                {"x": 1},
                labels=dict(request.labels),
                idempotency_key=request.idempotency_key,
            )
        ]
    )[0]
    clock.tick(start + 10)
    assert [task.id for task in runs(client, "shared")] == [earlier.id]


def test_fires_older_than_the_catch_up_window_are_skipped(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule(
        "late", "echo", interval=10, catch_up_window=25, overlap=OverlapPolicy.ALLOW
    )
    clock.tick(start + 100)
    assert fire_times(runs(client, "late")) == [at(start + s) for s in (80, 90, 100)]
    assert client.get_schedule("late").last_fire_time == datetime.fromtimestamp(start + 100, UTC)


def test_at_most_the_latest_100_missed_fires_are_caught_up(
    hand: tuple[Client, FakeClock],
) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule(
        "many", "echo", interval=1, catch_up_window=3600, overlap=OverlapPolicy.ALLOW
    )
    clock.tick(start + 250)
    fired = fire_times(runs(client, "many"))
    assert fired == [at(start + s) for s in range(151, 251)]


def test_overlap_skip_waits_for_the_last_task_to_finish(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule("slow", "wait_for_cancel", {"seconds": 30}, interval=10)
    clock.tick(start + 10)
    [first] = runs(client, "slow")
    clock.tick(start + 20)  # skipped: the first is unfinished
    assert [task.id for task in runs(client, "slow")] == [first.id]
    assert client.get_schedule("slow").last_fire_time == datetime.fromtimestamp(start + 20, UTC)
    client.cancel(first.id)
    client.wait(first.id, timeout=10)
    clock.tick(start + 30)
    assert fire_times(runs(client, "slow")) == [at(start + 10), at(start + 30)]


def test_overlap_allow_fires_beside_an_unfinished_task(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule(
        "parallel",
        "wait_for_cancel",
        {"seconds": 30},
        interval=10,
        overlap=OverlapPolicy.ALLOW,
    )
    clock.tick(start + 10)
    clock.tick(start + 20)
    tasks = runs(client, "parallel")
    assert fire_times(tasks) == [at(start + 10), at(start + 20)]
    for task in tasks:
        client.cancel(task.id)


def test_fires_while_paused_are_skipped(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule("nap", "echo", interval=10, overlap=OverlapPolicy.ALLOW)
    paused = client.pause_schedule("nap")
    assert paused.paused and paused.next_fire_times == ()
    clock.tick(start + 25)
    assert runs(client, "nap") == []
    clock.now = start + 35
    resumed = client.resume_schedule("nap")
    assert not resumed.paused
    assert resumed.next_fire_times[0] == datetime.fromtimestamp(start + 40, UTC)
    clock.tick(start + 45)
    assert fire_times(runs(client, "nap")) == [at(start + 40)]


def test_a_refused_fire_is_tried_again_on_the_next_tick(
    store_url: str, make_server: Callable[..., ServerThread]
) -> None:
    thread = make_server(store=store_url, schedule_tick_seconds=0, max_queue=1)
    clock = FakeClock(thread)
    start = clock.now
    with Client(thread.address, timeout=5) as client:
        client.create_schedule("full", "echo", interval=10)
        blocker = client.submit("wait_for_cancel", {"seconds": 30})
        clock.tick(start + 10)  # the queue is full: refused, not skipped
        assert runs(client, "full") == []
        client.cancel(blocker.id)
        client.wait(blocker.id, timeout=10)
        clock.tick(start + 11)
        assert fire_times(runs(client, "full")) == [at(start + 10)]


def test_trigger_submits_now_once_per_request_id(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    client.create_schedule("manual", "echo", {"k": "v"}, interval=3600)
    client.pause_schedule("manual")
    first = client.trigger_schedule("manual", request_id="deploy-42")
    clock.now += 5  # another fire time label: still the same request
    again = client.trigger_schedule("manual", request_id="deploy-42")
    other = client.trigger_schedule("manual")
    assert again.id == first.id != other.id
    assert first.payload == {"k": "v"}
    assert first.labels["conveyor.trigger"] == "deploy-42"
    assert client.wait(first.id, timeout=10).state is TaskState.SUCCEEDED
    recent = client.get_schedule("manual").recent_runs
    assert [run.task_id for run in recent] == [other.id, first.id]
    assert all(run.triggered for run in recent)


def test_a_cron_schedule_fires_at_its_times_in_its_time_zone(
    hand: tuple[Client, FakeClock],
) -> None:
    client, clock = hand
    paris = ZoneInfo("Europe/Paris")
    schedule = client.create_schedule(
        "nightly", "echo", cron="30 3 * * *", time_zone="Europe/Paris"
    )
    local = [moment.astimezone(paris) for moment in schedule.next_fire_times]
    assert [(m.hour, m.minute) for m in local] == [(3, 30)] * 5
    assert len({m.date() for m in local}) == 5
    first = schedule.next_fire_times[0].timestamp()
    clock.tick(first - 0.001)
    assert runs(client, "nightly") == []
    clock.tick(first + 1)
    assert fire_times(runs(client, "nightly")) == [at(first)]


def test_a_cron_with_seconds_fires_each_matching_second(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now - clock.now % 60  # a whole minute
    clock.now = start
    client.create_schedule("fifteen", "echo", cron="* * * * * */15", overlap=OverlapPolicy.ALLOW)
    clock.tick(start + 50)
    assert fire_times(runs(client, "fifteen")) == [at(start + s) for s in (15, 30, 45)]


def test_update_changes_the_times_and_the_template(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule("changing", "echo", {"v": 1}, interval=10)
    updated = client.update_schedule(
        "changing", interval=20, task=TaskSpec("echo", {"v": 2}), description="twice as slow"
    )
    assert updated.interval == timedelta(seconds=20)
    assert updated.description == "twice as slow"
    assert updated.next_fire_times[0] == datetime.fromtimestamp(start + 20, UTC)
    clock.tick(start + 20)
    assert [task.payload for task in runs(client, "changing")] == [{"v": 2}]
    to_cron = client.update_schedule("changing", cron="0 * * * *")
    assert (to_cron.cron, to_cron.interval) == ("0 * * * *", None)


def test_delete_keeps_the_tasks(hand: tuple[Client, FakeClock]) -> None:
    client, clock = hand
    start = clock.now
    client.create_schedule("gone", "echo", interval=10)
    clock.tick(start + 10)
    client.delete_schedule("gone")
    with pytest.raises(TaskNotFound, match="schedule 'gone' not found"):
        client.get_schedule("gone")
    with pytest.raises(TaskNotFound):
        client.delete_schedule("gone")
    clock.tick(start + 30)
    assert len(runs(client, "gone")) == 1


def test_list_pages_by_id(hand: tuple[Client, FakeClock]) -> None:
    client, _ = hand
    for name in ("c", "a", "b"):
        client.create_schedule(name, "echo", interval=60)
    assert [s.id for s in client.list_schedules(page_size=2)] == ["a", "b", "c"]
    with pytest.raises(AlreadyExists):
        client.create_schedule("a", "echo", interval=60)


def test_a_server_restarted_on_its_store_does_not_fire_again(
    tmp_path: Any, make_server: Callable[..., ServerThread]
) -> None:
    store = f"sqlite:///{tmp_path}/tasks.db"
    first = make_server(store=store, schedule_tick_seconds=0)
    clock = FakeClock(first)
    start = clock.now
    with Client(first.address, timeout=5) as client:
        client.create_schedule("durable", "echo", interval=10, overlap=OverlapPolicy.ALLOW)
        clock.tick(start + 25)
    first.stop()
    second = make_server(store=store, schedule_tick_seconds=0)
    again = FakeClock(second)
    again.tick(start + 25)
    again.tick(start + 31)
    with Client(second.address, timeout=5) as client:
        assert fire_times(runs(client, "durable")) == [at(start + s) for s in (10, 20, 30)]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"interval": 10, "cron": "* * * * *"}, "schedule.cron"),
        ({}, "schedule.interval"),
        ({"cron": "* * *"}, "schedule.cron"),
        ({"cron": "* * * * * * 2030"}, "schedule.cron"),
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": "@daily", "time_zone": "Mars/Olympus"}, "schedule.time_zone"),
        ({"interval": 10, "time_zone": "UTC"}, "schedule.time_zone"),
        ({"interval": 0.5}, "schedule.interval"),
        ({"interval": 10, "catch_up_window": 8 * 86400}, "schedule.catch_up_window"),
        ({"interval": 10, "type": "no_such_type"}, "schedule.task.type"),
        ({"interval": 10, "max_attempts": 1000}, "schedule.task.max_attempts"),
        ({"interval": 10, "labels": {"conveyor.schedule": "x"}}, "schedule.task.labels"),
    ],
)
def test_bad_schedules_name_the_field(sdk: Client, arguments: dict[str, Any], field: str) -> None:
    task_type = arguments.pop("type", "echo")
    with pytest.raises(InvalidArgument) as caught:
        sdk.create_schedule("bad", task_type, **arguments)
    assert any(name.startswith(field) for name, _ in caught.value.field_violations), (
        caught.value.field_violations
    )


def test_a_bad_id_and_an_unknown_schedule_are_refused(sdk: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        sdk.create_schedule("no spaces", "echo", interval=10)
    assert caught.value.field_violations[0][0] == "schedule.id"
    with pytest.raises(TaskNotFound):
        sdk.update_schedule("never-made", interval=10)


def test_ticks_between_fires_read_no_spec_until_the_schedule_changes(
    make_server: Callable[..., ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor_server import _schedule_ticker

    read: list[str] = []
    real = _schedule_ticker.read_spec

    def counted(record: Any) -> Any:
        read.append(record.id)
        return real(record)

    monkeypatch.setattr(_schedule_ticker, "read_spec", counted)
    thread = make_server(schedule_tick_seconds=0)
    clock = FakeClock(thread)
    start = clock.now
    with Client(thread.address, timeout=5) as client:
        client.create_schedule("hourly", "echo", interval=3600, overlap=OverlapPolicy.ALLOW)
        clock.tick(start + 1)
        assert read == ["hourly"]
        for later in range(2, 60):
            clock.tick(start + later)
        assert read == ["hourly"]  # its next fire is an hour away
        client.update_schedule("hourly", interval=30)
        clock.tick(start + 61)
        assert fire_times(runs(client, "hourly")) == [
            at(start + 30),
            at(start + 60),
        ]
        clock.tick(start + 89)
        clock.tick(start + 90)
        assert fire_times(runs(client, "hourly"))[-1] == at(start + 90)
