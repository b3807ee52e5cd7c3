"""RedisStore beyond the shared contract: several processes on one Redis.

Two RedisStore instances on the same prefix stand for two processes. Each
test gets a prefix of its own (the `redis_url` fixture) and skips without a
local Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from conveyor import Client, TaskState
from conveyor_server.stores import (
    CancelOutcome,
    ErrorCode,
    FeedFilter,
    IdempotencyConflict,
    ListQuery,
    Outcome,
    Progress,
    QueueFull,
    RedisStore,
    State,
    StoreUnavailable,
    TaskFailure,
    TaskRecord,
)
from conveyor_server.stores.redis import _feed_stream
from tests.support.server import ServerThread, free_port
from tests.support.stores import (
    TYPES,
    RecordingListener,
    current,
    eventually,
    new_task,
    next_change,
)

NOW = 1_700_000_000.0


OpenStore = Callable[..., RedisStore]


@pytest.fixture
async def open_store(redis_url: str) -> AsyncIterator[OpenStore]:
    """Opens RedisStores on the test's prefix, as separate processes would;
    `options` are extra URL query options."""
    opened: list[RedisStore] = []

    def make(
        *,
        options: str = "",
        max_queue: int = 1000,
        retention_count: int = 1000,
        lease_seconds: float = 30.0,
        max_queue_per_tenant: int | None = None,
    ) -> RedisStore:
        url = f"{redis_url}&{options}" if options else redis_url
        store = RedisStore(
            url,
            max_queue=max_queue,
            retention_count=retention_count,
            lease_seconds=lease_seconds,
            max_queue_per_tenant=max_queue_per_tenant,
            # The tests pass NOW to every call; an attached store's own
            # lease upkeep keeps the same time.
            clock=lambda: NOW,
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


# -- two processes ------------------------------------------------------------


async def test_task_created_on_one_process_is_claimed_on_another(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    worker = RecordingListener()
    b.attach(worker)
    await eventually(lambda: worker.work > 0, "the listener is connected")
    told = worker.work

    [task] = await a.create([new_task()], NOW)
    await eventually(lambda: worker.work > told, "B hears of new work")
    [claimed] = await b.claim(10, NOW, TYPES)
    assert (claimed.id, claimed.state, claimed.attempt) == (task.id, State.RUNNING, 1)
    assert claimed.payload == task.payload
    assert await a.claim(10, NOW, TYPES) == []
    assert (await current(a, task.id)).state is State.RUNNING


async def test_subscription_sees_changes_made_by_another_process(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    [task] = await a.create([new_task()], NOW)
    subscription = a.subscribe(task.id)
    try:
        await b.claim(1, NOW, TYPES)
        assert (await next_change(subscription)).state is State.RUNNING
        await b.set_progress([(task.id, 1, Progress(40.0, "reading", 2, 5))], NOW + 1)
        seen = await next_change(subscription)
        assert seen.progress == Progress(40.0, "reading", 2, 5)
        await b.complete([Outcome(task.id, 1, result=b"\x1a\x00")], NOW + 2)
        seen = await next_change(subscription)
        assert (seen.state, seen.result) == (State.SUCCEEDED, b"\x1a\x00")
        assert seen.progress == Progress(100.0, "reading", 2, 5)
        assert seen.version == (await current(a, task.id)).version
    finally:
        subscription.close()


async def test_cancel_on_one_process_reaches_the_runner_of_another(
    open_store: OpenStore,
) -> None:
    a, b = open_store(), open_store()
    here, there = RecordingListener(), RecordingListener()
    a.attach(here)
    b.attach(there)
    await eventually(lambda: here.work > 0 and there.work > 0, "both listeners are connected")
    [task] = await a.create([new_task()], NOW)
    await b.claim(1, NOW, TYPES)

    cancelled = await a.cancel(task.id, NOW + 1)
    assert cancelled is not None and cancelled.outcome is CancelOutcome.REQUESTED
    assert (cancelled.record.state, cancelled.record.cancel_requested) == (State.RUNNING, True)
    await eventually(lambda: there.cancels == [task.id], "B's runner is asked to stop")
    # The requesting process is told once, not again by the echo.
    await asyncio.sleep(0.2)
    assert here.cancels == [task.id]

    report = await b.renew([(task.id, 1)], NOW + 2)
    assert report.cancel_requested == [task.id]
    [done] = await b.complete([Outcome(task.id, 1, cancelled=True)], NOW + 3)
    assert done.state is State.CANCELLED


async def test_report_of_a_stale_attempt_is_fenced(open_store: OpenStore) -> None:
    options = "lease_margin=0.1"
    a = open_store(options=options, lease_seconds=1.0)
    b = open_store(options=options, lease_seconds=1.0)
    [task] = await a.create([new_task(max_attempts=3)], NOW)
    await a.claim(1, NOW, TYPES)
    assert await b.reap(NOW + 2) == 1  # A stopped renewing: its process died, say
    [again] = await b.claim(1, NOW + 2, TYPES)
    assert again.attempt == 2

    assert await a.complete([Outcome(task.id, 1, result=b"late")], NOW + 3) == []
    await a.set_progress([(task.id, 1, Progress(99.0))], NOW + 3)
    assert await a.requeue(task.id, 1, NOW + 3) is None
    record = await current(a, task.id)
    assert (record.state, record.attempt, record.progress) == (State.RUNNING, 2, None)

    [done] = await b.complete([Outcome(task.id, 2, result=b"fresh")], NOW + 4)
    assert (done.state, done.result) == (State.SUCCEEDED, b"fresh")


async def test_renew_extends_held_leases_and_reports_lost_ones(open_store: OpenStore) -> None:
    options = "lease_margin=0.1"
    a = open_store(options=options, lease_seconds=1.0)
    b = open_store(options=options, lease_seconds=1.0)
    held, lapsed, finished = await a.create([new_task(max_attempts=2) for _ in range(3)], NOW)
    await a.claim(3, NOW, TYPES)
    await a.complete([Outcome(finished.id, 1, result=b"")], NOW + 0.5)

    report = await a.renew([(held.id, 1), (finished.id, 1), ("no-such-task", 1)], NOW + 0.9)
    assert sorted(report.lost) == sorted([finished.id, "no-such-task"])
    assert report.cancel_requested == []
    # Only the unrenewed lease lapsed.
    assert await b.reap(NOW + 1.5) == 1
    assert (await current(b, held.id)).state is State.RUNNING
    assert (await current(b, lapsed.id)).state is State.PENDING
    report = await a.renew([(held.id, 1), (lapsed.id, 1)], NOW + 1.6)
    assert report.lost == [lapsed.id]


async def test_reap_requeues_a_lapsed_lease_then_fails_when_attempts_run_out(
    open_store: OpenStore,
) -> None:
    options = "lease_margin=0.5"
    a = open_store(options=options, lease_seconds=1.0)
    b = open_store(options=options, lease_seconds=1.0)
    worker = RecordingListener()
    a.attach(worker)
    await eventually(lambda: worker.work > 0, "the listener is connected")
    [task] = await a.create([new_task(max_attempts=2)], NOW)
    await a.claim(1, NOW, TYPES)
    told = worker.work

    assert await b.reap(NOW + 1.4) == 0  # within the margin
    assert await b.reap(NOW + 1.6) == 1
    record = await current(b, task.id)
    assert (record.state, record.attempt) == (State.PENDING, 1)
    assert record.error == TaskFailure(
        ErrorCode.INTERRUPTED,
        "attempt 1 was interrupted: its worker stopped renewing its lease",
    )
    assert await b.depth() == 1
    # The reaper's own runner looks for work when reap returns; others hear.
    await eventually(lambda: worker.work > told, "A hears the task is due again")

    [second] = await b.claim(1, NOW + 2, TYPES)
    assert second.attempt == 2
    assert await a.reap(NOW + 4) == 1
    record = await current(a, task.id)
    assert (record.state, record.attempt) == (State.FAILED, 2)
    assert record.error is not None
    assert record.error.message == (
        "attempt 2 was interrupted: its worker stopped renewing its lease"
    )
    assert record.end_time == NOW + 4
    assert await a.depth() == 0
    assert await a.reap(NOW + 10) == 0


async def test_reap_of_a_task_asked_to_stop_cancels_it(open_store: OpenStore) -> None:
    store = open_store(options="lease_margin=0", lease_seconds=1.0)
    [task] = await store.create([new_task(max_attempts=3)], NOW)
    await store.claim(1, NOW, TYPES)
    await store.cancel(task.id, NOW + 0.5)
    assert await store.reap(NOW + 2) == 1
    assert (await current(store, task.id)).state is State.CANCELLED


async def test_next_due_time_follows_changes_right_after_a_claim(open_store: OpenStore) -> None:
    store = open_store()
    assert await store.claim(5, NOW, TYPES) == []
    [later] = await store.create([new_task(delay=30.0)], NOW)
    assert await store.next_due_time() == NOW + 30
    assert await store.claim(5, NOW, TYPES) == []
    assert await store.next_due_time() == NOW + 30
    [claimed] = await store.claim(5, NOW + 30, TYPES)
    assert claimed.id == later.id
    assert await store.next_due_time() is None


# -- batches and limits -----------------------------------------------------------


async def test_a_batch_with_a_conflict_creates_nothing(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    [earlier] = await a.create([new_task(key="k")], NOW)
    with pytest.raises(IdempotencyConflict) as raised:
        await b.create([new_task(), new_task(key="k", request="other")], NOW)
    assert (raised.value.key, raised.value.task_id) == ("k", earlier.id)
    with pytest.raises(IdempotencyConflict) as raised:
        await b.create([new_task(key="x"), new_task(key="x", request="other")], NOW)
    assert (raised.value.key, raised.value.task_id) == ("x", None)
    assert await b.depth() == 1
    page, _ = await b.list_page(ListQuery(page_size=10))
    assert [r.id for r in page] == [earlier.id]

    repeat, fresh, same = await b.create(
        [new_task(key="k"), new_task(key="y"), new_task(key="y")], NOW + 1
    )
    assert repeat.id == earlier.id
    assert same is fresh
    assert await a.depth() == 2


async def test_concurrent_creates_share_round_trips_but_not_fates(
    open_store: OpenStore,
) -> None:
    store = open_store(max_queue=6)
    [earlier] = await store.create([new_task(key="k")], NOW)
    calls = [
        store.create([new_task(), new_task()], NOW),
        store.create([new_task(), new_task(key="k", request="other")], NOW),  # conflict
        store.create([new_task(key="k")], NOW),  # a repeat
        store.create([new_task(), new_task()], NOW),
        store.create([new_task(), new_task()], NOW),  # over the cap by then
        store.get(earlier.id),
        store.get("no-such-task"),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    first, conflict, repeat, fourth, full, got, missing = results
    assert isinstance(first, list) and len(first) == 2
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(repeat, list) and repeat[0].id == earlier.id
    assert isinstance(fourth, list) and len(fourth) == 2
    assert isinstance(full, QueueFull)
    assert (full.depth, full.limit) == (5, 6)
    assert isinstance(got, TaskRecord) and got.id == earlier.id
    assert missing is None
    assert await store.depth() == 5


async def test_queue_cap_is_shared_and_counts_only_new_tasks(open_store: OpenStore) -> None:
    a, b = open_store(max_queue=3), open_store(max_queue=3)
    await a.create([new_task(key="one"), new_task()], NOW)
    with pytest.raises(QueueFull) as raised:
        await b.create([new_task(), new_task()], NOW)
    assert (raised.value.depth, raised.value.limit) == (2, 3)
    assert await b.depth() == 2  # all or nothing
    await b.create([new_task()], NOW)
    # A repeat is not a new task: accepted while the queue is full.
    [repeat] = await b.create([new_task(key="one")], NOW)
    assert repeat.idempotency_key == "one"
    with pytest.raises(QueueFull):
        await a.create([new_task()], NOW)


async def test_tenant_quota_is_shared_and_freed_by_finishing(
    open_store: OpenStore, redis_url: str
) -> None:
    a = open_store(max_queue_per_tenant=2)
    b = open_store(max_queue_per_tenant=2)
    mine = [new_task(), new_task()]
    for task in mine:
        task.tenant = "team-a"
    first, _ = await a.create(mine, NOW)
    with pytest.raises(QueueFull) as raised:
        await b.create([mine[0]], NOW)
    assert (raised.value.tenant, raised.value.depth, raised.value.limit) == ("team-a", 2, 2)
    await b.create([new_task(), new_task()], NOW)  # another tenant has a quota of its own

    await b.cancel(first.id, NOW, tenant="team-a")
    [again] = await a.create([mine[0]], NOW)
    with pytest.raises(QueueFull):
        await a.retry(first.id, NOW, tenant="team-a")
    # Every way out of the queue counts down; none leaves a count behind.
    for record in await a.claim(10, NOW, TYPES):
        await a.complete([Outcome(record.id, record.attempt, result=b"")], NOW)
    assert await a.depth() == 0
    prefix = redis_url.split("prefix=")[1]
    with redis.Redis.from_url(redis_url.split("?")[0]) as client:
        assert client.hgetall(f"{prefix}:tenant_depth") == {}
    assert again.tenant == "team-a"


async def test_every_process_signs_page_tokens_with_one_key(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    key = await a.signing_key()
    assert len(key) == 32
    assert await b.signing_key() == key


async def test_list_filters_span_more_tasks_than_one_scan(open_store: OpenStore) -> None:
    store = open_store(max_queue=5000)
    kept: list[str] = []
    for round_ in range(3):
        batch = [new_task() for _ in range(400)]
        batch[round_ * 7].labels = {"keep": "yes"}
        created = await store.create(batch, NOW + round_)
        kept.append(created[round_ * 7].id)
    query = ListQuery(page_size=2, labels=(("keep", "yes"),))
    page, cursor = await store.list_page(query)
    assert [r.id for r in page] == kept[:0:-1]
    assert cursor == page[-1].seq
    page, cursor = await store.list_page(ListQuery(2, labels=query.labels, before_seq=cursor))
    assert ([r.id for r in page], cursor) == ([kept[0]], None)


async def test_prefixes_keep_stores_apart(open_store: OpenStore, redis_url: str) -> None:
    store = open_store()
    other = RedisStore(
        redis_url.replace("prefix=", "prefix=other-"),
        max_queue=10,
        retention_count=10,
        lease_seconds=30.0,
    )
    try:
        [task] = await store.create([new_task()], NOW)
        assert await other.get(task.id) is None
        assert await other.claim(10, NOW, TYPES) == []
        assert await other.depth() == 0
    finally:
        await other.close()
        with redis.Redis.from_url(redis_url.split("?")[0]) as client:
            prefix = redis_url.split("prefix=")[1]
            keys = list(client.scan_iter(match=f"other-{prefix}:*"))
            if keys:
                client.delete(*keys)


def test_url_options_are_checked() -> None:
    with pytest.raises(ValueError, match="lease_margin"):
        RedisStore(
            "redis://127.0.0.1:6379/0?lease_margin=-1",
            max_queue=1,
            retention_count=1,
            lease_seconds=30.0,
        )
    with pytest.raises(ValueError, match="prefix"):
        RedisStore(
            "redis://127.0.0.1:6379/0?prefix=", max_queue=1, retention_count=1, lease_seconds=30.0
        )


# -- Redis away ---------------------------------------------------------------------


async def test_unreachable_redis_raises_store_unavailable_quickly() -> None:
    port = free_port()
    store = RedisStore(
        f"redis://127.0.0.1:{port}/0?prefix=nowhere",
        max_queue=10,
        retention_count=10,
        lease_seconds=30.0,
    )
    store.attach(RecordingListener())
    subscription = store.subscribe("some-task")
    calls: list[Callable[[], Any]] = [
        lambda: store.create([new_task()], NOW),
        lambda: store.get("some-task"),
        lambda: store.claim(5, NOW, TYPES),
        lambda: store.complete([Outcome("some-task", 1, result=b"")], NOW),
        lambda: store.cancel("some-task", NOW),
        lambda: store.list_page(ListQuery(page_size=5)),
        lambda: store.renew([("some-task", 1)], NOW),
        lambda: store.reap(NOW),
        lambda: store.next_due_time(),
        lambda: store.depth(),
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
                await call()
            assert time.monotonic() - started < 2.0
        # A watcher just keeps waiting.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(subscription.next(), 0.3)
    finally:
        subscription.close()
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < 2.0


def kill_connections(redis_url: str, kind: str) -> int:
    """Drop the connections of one kind ("pubsub" or "normal") of the test's
    stores, as a Redis restart or a network failure would."""
    name = "conveyor:" + redis_url.split("prefix=")[1]
    killed = 0
    with redis.Redis.from_url(redis_url.split("?")[0]) as client:
        for info in client.client_list(_type=kind):
            if info.get("name") == name:
                client.client_kill_filter(_id=info["id"])
                killed += 1
    return killed


async def test_a_dropped_connection_is_replaced_without_an_error(
    open_store: OpenStore, redis_url: str
) -> None:
    store = open_store()
    [task] = await store.create([new_task()], NOW)
    assert kill_connections(redis_url, "normal") >= 1
    assert (await current(store, task.id)).id == task.id


async def test_listener_reconnects_and_catches_up(open_store: OpenStore, redis_url: str) -> None:
    a, b = open_store(), open_store()
    [task] = await b.create([new_task()], NOW)
    worker = RecordingListener()
    a.attach(worker)
    subscription = a.subscribe(task.id)
    try:
        await eventually(lambda: worker.work > 0, "the listener is connected")
        told = worker.work
        assert kill_connections(redis_url, "pubsub") >= 1
        # Changes made while A's listener is away are not lost to A's watchers.
        await b.claim(1, NOW, TYPES)
        await b.complete([Outcome(task.id, 1, result=b"")], NOW + 1)
        seen = await next_change(subscription)
        if seen.state is not State.SUCCEEDED:
            seen = await next_change(subscription)
        assert seen.state is State.SUCCEEDED
        await eventually(lambda: worker.work > told, "A looks for work after reconnecting")

        # And it follows changes again afterwards.
        [second] = await b.create([new_task()], NOW + 2)
        later = a.subscribe(second.id)
        try:
            await b.cancel(second.id, NOW + 3)
            assert (await next_change(later)).state is State.CANCELLED
        finally:
            later.close()
    finally:
        subscription.close()


# -- through a server --------------------------------------------------------------

MakeServer = Callable[..., ServerThread]


@pytest.fixture
def api_and_worker(redis_url: str, make_server: MakeServer) -> Iterator[Client]:
    """An API-only replica and a worker-only process on one Redis; the client
    talks to the replica."""
    make_server(store=redis_url, workers=4, lease_seconds=3.0)
    api = make_server(store=redis_url, workers=0, lease_seconds=3.0)
    with Client(api.address, timeout=5.0) as client:
        yield client


def test_server_on_redis_runs_a_task_end_to_end(redis_url: str, make_server: MakeServer) -> None:
    server = make_server(store=redis_url)
    with Client(server.address, timeout=5.0) as client:
        handle = client.submit("echo", {"n": 1})
        assert handle.result(timeout=10) == {"n": 1}
        assert client.get(handle.id).state is TaskState.SUCCEEDED


def test_task_submitted_to_one_replica_runs_on_another(api_and_worker: Client) -> None:
    handle = api_and_worker.submit("progress_steps", {"steps": 3, "interval": 0.01})
    states = [task.state for task in handle.watch()]
    assert states[-1] is TaskState.SUCCEEDED
    assert handle.result(timeout=10) == 3
    task = api_and_worker.get(handle.id)
    assert (task.attempt, task.progress.percent) == (1, 100.0)


async def test_a_reader_joining_as_the_follower_goes_idle_is_still_served(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The follower of the change feed stops reading once nobody here
    # watches. A reader on its way in (the stream is followed, the reader
    # not yet in the feed) watches already: were the follower to stop in
    # that gap, the reader would wait for changes forever.

    here = RedisStore(redis_url, max_queue=100, retention_count=100, lease_seconds=30.0)
    there = RedisStore(redis_url, max_queue=100, retention_count=100, lease_seconds=30.0)
    try:
        first = await here.follow(FeedFilter())
        first.close()  # nobody watches now: the follower stops at its next read
        ready = _feed_stream.FeedStream.ready

        async def slow_ready(stream: _feed_stream.FeedStream) -> None:
            await ready(stream)
            # A change ends the follower's blocking read in the gap.
            await there.create([new_task()], time.time())
            await asyncio.sleep(0.3)

        monkeypatch.setattr(_feed_stream.FeedStream, "ready", slow_ready)
        reader = await here.follow(FeedFilter())
        try:
            [made] = await there.create([new_task()], time.time())
            change = await asyncio.wait_for(_last_of(reader, made.id), 5.0)
            assert change == made.id
        finally:
            reader.close()
    finally:
        await here.close()
        await there.close()


async def _last_of(reader: Any, task_id: str) -> str:
    while True:
        change = await reader.next()
        if change.record is not None and change.record.id == task_id:
            return str(change.record.id)
