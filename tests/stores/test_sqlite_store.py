"""What `sqlite:///path` adds to the store contract: it survives a restart.

A "restart" closes the store and opens a new one on the same file; the crash
test kills a real process instead. The contract suite (test_contract.py)
covers the rest of the behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import conveyor
import conveyor_server
from conveyor_server.stores import (
    ErrorCode,
    IdempotencyConflict,
    ListQuery,
    NewTask,
    Outcome,
    Progress,
    QueueFull,
    SqliteStore,
    State,
    StoreUnavailable,
    TaskFailure,
    TaskRecord,
    TaskStore,
)
from conveyor_server.stores.sqlite import schema as _sqlite_schema
from tests.support.server import ServerThread, test_config
from tests.support.stores import TYPES

T0 = 1_700_000_000.0


def new_task(
    *,
    key: str | None = None,
    request: str = "first",
    delay: float = 0.0,
    max_attempts: int = 3,
    tenant: str = "",
    labels: dict[str, str] | None = None,
    reply_to: str | None = None,
) -> NewTask:
    return NewTask(
        type="echo",
        payload=b"\x0a\x03\x0a\x01n\x12\x00",
        labels=labels,
        max_attempts=max_attempts,
        priority=0,
        timeout=None,
        delay=delay,
        idempotency_key=key,
        fingerprint=request.encode() if key else None,
        tenant=tenant,
        reply_to=reply_to,
    )


class Stores:
    """Opens stores on one database file and closes whatever is left open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[SqliteStore] = []

    def open(self, *, retention_count: int = 1000, **options: Any) -> SqliteStore:
        store = SqliteStore(
            str(self.path), max_queue=1000, retention_count=retention_count, **options
        )
        self.opened.append(store)
        return store

    async def reopen(self, store: SqliteStore, **options: Any) -> SqliteStore:
        await store.close()
        return self.open(**options)

    def rows(self) -> dict[str, tuple[Any, ...]]:
        """The tasks table as a plain reader sees it (every store closed)."""
        return read_rows(self.path)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    opened = Stores(tmp_path / "tasks.db")
    yield opened
    for store in opened.opened:
        await store.close()


def read_rows(path: Path) -> dict[str, tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return {row[0]: row for row in connection.execute("SELECT * FROM tasks")}


def copy_database(path: Path, copy: Path) -> None:
    """Copy the file and its WAL as they are, as a crash would leave them."""
    for suffix in ("", "-wal"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            Path(f"{copy}{suffix}").write_bytes(source.read_bytes())


def fields(record: TaskRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in TaskRecord.__slots__}


def test_every_task_field_has_a_column() -> None:
    stored = {
        "attempt", "cancel_requested", "claim", "concurrency_key", "create_time",
        "depends_on", "end_time", "error", "fingerprint", "id", "idempotency_key", "labels",
        "max_attempts", "payload", "priority", "progress", "reply_to", "result",
        "run_on_dependency_failure", "scheduled_time", "seq", "start_time", "state", "tenant",
        "timeout", "traceparent", "type", "update_time", "version", "waiting",
    }  # fmt: skip
    assert set(TaskRecord.__slots__) == stored, (
        "a new TaskRecord field needs a column in _sqlite_schema (and a schema version)"
    )


async def test_is_a_task_store(stores: Stores) -> None:
    store: TaskStore = stores.open()
    # A store of one process: no leases to renew or reap, no worker processes.
    assert store.shared is False
    assert not hasattr(store, "reap")


def test_synchronous_must_be_full_or_normal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be 'full' or 'normal'"):
        SqliteStore(str(tmp_path / "t.db"), max_queue=1, retention_count=1, synchronous="off")


@pytest.mark.parametrize("synchronous", ["full", "normal", "NORMAL"])
async def test_every_field_survives_a_restart(stores: Stores, synchronous: str) -> None:
    store = stores.open(synchronous=synchronous)
    [done, failed, waiting] = await store.create(
        [
            new_task(labels={"team": "data", "é": "ü"}, reply_to="client-1"),
            new_task(key="k"),
            new_task(delay=60),
        ],
        T0,
    )
    [claimed_done, claimed_failed] = await store.claim(2, T0 + 1, TYPES)
    await store.set_progress([(done.id, 1, Progress(40.0, "half", 4, 10))], T0 + 2)
    await store.complete(
        [
            Outcome(done.id, 1, result=b"\x1a\x02ok"),
            Outcome(
                failed.id,
                1,
                failure=TaskFailure(ErrorCode.HANDLER_ERROR, "boom", "RuntimeError"),
                retry_at=T0 + 30,
            ),
        ],
        T0 + 3,
    )
    before = {
        r.id: fields(r) for r in [await store.get(i) for i in (done.id, failed.id, waiting.id)] if r
    }

    store = await stores.reopen(store)
    after = {i: fields(r) for i in before if (r := await store.get(i)) is not None}
    assert after == before
    assert after[done.id]["result"] == b"\x1a\x02ok"
    assert after[done.id]["progress"] == Progress(100.0, "half", 4, 10)
    assert after[failed.id]["error"] == TaskFailure(ErrorCode.HANDLER_ERROR, "boom", "RuntimeError")
    assert after[done.id]["labels"] == {"team": "data", "é": "ü"}
    assert (after[done.id]["reply_to"], after[waiting.id]["reply_to"]) == ("client-1", None)
    assert {claimed_done.id, claimed_failed.id} == {done.id, failed.id}


async def test_a_task_is_on_disk_when_create_returns(stores: Stores) -> None:
    store = stores.open()
    [record] = await store.create([new_task()], T0)
    # Read a copy taken before close, which would flush anything pending.
    copy = stores.path.with_name("copy.db")
    copy_database(stores.path, copy)
    assert list(read_rows(copy)) == [record.id]


async def test_recovery_requeues_an_interrupted_attempt_with_attempts_left(
    stores: Stores,
) -> None:
    store = stores.open()
    [record] = await store.create([new_task(max_attempts=2)], T0)
    await store.claim(1, T0 + 1, TYPES)
    await store.set_progress([(record.id, 1, Progress(30.0, "working"))], T0 + 2)

    before = time.time()
    store = await stores.reopen(store)
    recovered = await store.get(record.id)
    assert recovered is not None
    assert recovered.state is State.PENDING
    assert recovered.attempt == 1
    assert recovered.error == TaskFailure(
        ErrorCode.INTERRUPTED, "attempt 1 was interrupted: the server stopped while it ran"
    )
    assert recovered.end_time is None
    assert before <= recovered.scheduled_time <= time.time()
    assert recovered.version == 4

    [again] = await store.claim(1, time.time(), TYPES)
    assert (again.id, again.attempt) == (record.id, 2)
    # The recovered state was written back: a second restart sees attempt 2.
    store = await stores.reopen(store)
    final = await store.get(record.id)
    assert final is not None
    assert (final.state, final.attempt) == (State.FAILED, 2)


async def test_recovery_fails_an_interrupted_last_attempt(stores: Stores) -> None:
    store = stores.open()
    [record] = await store.create([new_task(max_attempts=1)], T0)
    await store.claim(1, T0 + 1, TYPES)

    before = time.time()
    store = await stores.reopen(store)
    recovered = await store.get(record.id)
    assert recovered is not None
    assert recovered.state is State.FAILED
    assert recovered.error is not None
    assert recovered.error.code == ErrorCode.INTERRUPTED
    assert recovered.end_time is not None
    assert before <= recovered.end_time <= time.time()
    assert await store.depth() == 0
    assert await store.claim(1, time.time(), TYPES) == []


async def test_recovery_cancels_an_interrupted_attempt_asked_to_cancel(stores: Stores) -> None:
    store = stores.open()
    [record] = await store.create([new_task(max_attempts=3)], T0)
    await store.claim(1, T0 + 1, TYPES)
    await store.cancel(record.id, T0 + 2)

    store = await stores.reopen(store)
    recovered = await store.get(record.id)
    assert recovered is not None
    assert recovered.state is State.CANCELLED
    assert recovered.error is None
    assert recovered.end_time is not None


async def test_a_delayed_task_keeps_its_time(stores: Stores) -> None:
    store = stores.open()
    now = time.time()
    [record] = await store.create([new_task(delay=3600)], now)

    store = await stores.reopen(store)
    assert await store.next_due_time() == record.scheduled_time == now + 3600
    assert await store.claim(1, now + 3599, TYPES) == []
    [due] = await store.claim(1, now + 3600, TYPES)
    assert due.id == record.id


async def test_idempotency_keys_survive_per_tenant(stores: Stores) -> None:
    store = stores.open()
    [first] = await store.create([new_task(key="order-1")], T0)
    [other] = await store.create([new_task(key="order-1", tenant="acme")], T0)
    assert other.id != first.id

    store = await stores.reopen(store)
    [repeat] = await store.create([new_task(key="order-1")], T0 + 1)
    [repeat_acme] = await store.create([new_task(key="order-1", tenant="acme")], T0 + 1)
    assert (repeat.id, repeat_acme.id) == (first.id, other.id)
    with pytest.raises(IdempotencyConflict):
        await store.create([new_task(key="order-1", request="another")], T0 + 1)
    assert store.size == 2


async def test_listing_continues_across_a_restart(stores: Stores) -> None:
    store = stores.open(retention_count=1)
    old = await store.create([new_task() for _ in range(5)], T0)
    page, cursor = await store.list_page(ListQuery(page_size=2))
    assert [r.id for r in page] == [old[4].id, old[3].id]
    assert cursor is not None
    # The newest task finishes and is dropped: numbering must still go on
    # after it, or the next tasks would reuse its place in the order.
    await store.cancel(old[3].id, T0 + 1)
    await store.cancel(old[4].id, T0 + 2)

    store = await stores.reopen(store, retention_count=1)
    new = await store.create([new_task() for _ in range(2)], T0 + 3)
    assert min(r.seq for r in new) > old[4].seq
    # The cursor minted before the restart still leads to the older tasks.
    page, cursor = await store.list_page(ListQuery(page_size=2, before_seq=cursor))
    assert [r.id for r in page] == [old[2].id, old[1].id]
    page, cursor = await store.list_page(ListQuery(page_size=2, before_seq=cursor))
    assert ([r.id for r in page], cursor) == ([old[0].id], None)
    page, _ = await store.list_page(ListQuery(page_size=10))
    assert [r.id for r in page] == [
        new[1].id,
        new[0].id,
        old[4].id,
        old[2].id,
        old[1].id,
        old[0].id,
    ]


async def test_retention_deletes_rows(stores: Stores) -> None:
    store = stores.open(retention_count=2)
    records = await store.create([new_task() for _ in range(4)], T0)
    for offset, record in enumerate(records):
        await store.cancel(record.id, T0 + offset)
    assert store.size == 2
    # Dropped when the server was configured with a smaller count.
    store = await stores.reopen(store, retention_count=1)
    assert store.size == 1
    await store.close()
    assert set(stores.rows()) == {records[3].id}

    store = stores.open(retention_count=10)
    assert await store.purge(T0 + 10) == 1
    await store.close()
    assert stores.rows() == {}


async def test_watchers_see_only_committed_changes(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores.open()
    [record] = await store.create([new_task(max_attempts=1)], T0)
    subscription = store.subscribe(record.id)
    [claimed] = await store.claim(1, T0 + 1, TYPES)
    seen = await asyncio.wait_for(subscription.next(), 5)
    assert (seen.state, seen.version) == (State.RUNNING, 2)

    # The disk fails: SUCCEEDED is never committed, so nobody may see it.
    def broken(*args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(_sqlite_schema, "write_rows", broken)
    await store.complete([Outcome(record.id, 1, result=b"")], T0 + 2)
    assert claimed.state is State.SUCCEEDED  # in memory only
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        await store.get(record.id)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(subscription.next(), 0.2)
    with pytest.raises(StoreUnavailable):
        await store.create([new_task()], T0 + 3)
    monkeypatch.undo()

    # After the restart the attempt is found interrupted, as it was on disk.
    store = await stores.reopen(store)
    recovered = await store.get(record.id)
    assert recovered is not None
    assert (recovered.state, recovered.error and recovered.error.code) == (
        State.FAILED,
        ErrorCode.INTERRUPTED,
    )
    assert store.size == 1


async def test_a_failed_commit_fails_its_create(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores.open()

    def broken(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(_sqlite_schema, "write_rows", broken)
    with pytest.raises(StoreUnavailable, match="disk is full"):
        await store.create([new_task()], T0)
    monkeypatch.undo()
    store = await stores.reopen(store)
    assert store.size == 0


async def test_a_second_store_on_an_open_file_is_refused(stores: Stores) -> None:
    stores.open()
    with pytest.raises(StoreUnavailable, match="in use by another process"):
        stores.open()


async def test_a_newer_schema_is_refused(stores: Stores) -> None:
    await stores.open().close()
    with contextlib.closing(sqlite3.connect(stores.path)) as connection, connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        stores.open()


async def test_calls_after_close_are_refused(stores: Stores) -> None:
    store = stores.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.create([new_task()], T0)


CREATOR = """
import asyncio, sys, time
from conveyor_server.stores import NewTask
from conveyor_server.stores import SqliteStore

async def creator(store):
    while True:
        new = NewTask("echo", b"", None, 1, 0, None, 0.0, None, None)
        [record] = await store.create([new], time.time())
        print(record.id, flush=True)

async def main():
    store = SqliteStore(sys.argv[1], max_queue=10**6, retention_count=10**6)
    await asyncio.gather(*(creator(store) for _ in range(8)))

asyncio.run(main())
"""


def test_every_acknowledged_task_survives_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    roots = [str(Path(package.__file__).parents[1]) for package in (conveyor, conveyor_server)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(roots)}
    process = subprocess.Popen(
        [sys.executable, "-c", CREATOR, str(path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 300:
            line = process.stdout.readline()
            assert line, "the creating process ended early"
            acknowledged.append(line.strip())
    finally:
        process.send_signal(signal.SIGKILL)
        rest, _ = process.communicate(timeout=10)
    acknowledged.extend(rest.split())
    assert process.returncode == -signal.SIGKILL

    async def check() -> None:
        store = SqliteStore(str(path), max_queue=10**6, retention_count=10**6)
        try:
            missing = [i for i in acknowledged if await store.get(i) is None]
            assert missing == []
            assert store.size >= len(acknowledged)
        finally:
            await store.close()

    asyncio.run(check())


def test_a_server_restarts_on_its_database(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    # Stopped here rather than by make_server, which stops its servers at
    # the end of the test.
    first = ServerThread(test_config(store=url)).start()
    try:
        with conveyor.Client(first.address, timeout=5.0) as client:
            done = client.submit("echo", {"n": 1}, labels={"run": "a"})
            assert done.result(timeout=10) == {"n": 1}
            later = client.submit("echo", {"n": 2}, delay=3600, idempotency_key="later")
    finally:
        first.stop()

    second = make_server(store=url)
    with conveyor.Client(second.address, timeout=5.0) as client:
        task = client.get(done.id)
        assert task.state is conveyor.TaskState.SUCCEEDED
        assert task.result == {"n": 1}
        assert task.labels == {"run": "a"}
        waiting = client.get(later.id)
        assert waiting.state is conveyor.TaskState.PENDING
        again = client.submit("echo", {"n": 2}, delay=3600, idempotency_key="later")
        assert again.id == later.id
        assert [t.id for t in client.list()] == [later.id, done.id]


async def test_a_tenant_quota_counts_restored_tasks(stores: Stores) -> None:
    store = stores.open(max_queue_per_tenant=2)
    await store.create([new_task(tenant="a"), new_task(tenant="a")], T0)

    store = await stores.reopen(store, max_queue_per_tenant=2)
    with pytest.raises(QueueFull, match="tenant 'a'"):
        await store.create([new_task(tenant="a")], T0 + 1)
    await store.create([new_task(tenant="b")], T0 + 1)


@pytest.mark.parametrize("variables", [999, 32766])
def test_rows_are_written_and_deleted_in_padded_chunks(variables: int) -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as connection:
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        connection.executescript(_sqlite_schema.CREATE_SCHEMA)
        records = []
        for seq in range(1, 302):
            record = TaskRecord(
                id=f"task-{seq}",
                type="echo",
                payload=b"",
                labels=None,
                max_attempts=1,
                priority=0,
                timeout=None,
                idempotency_key=None,
                fingerprint=None,
                create_time=T0,
                scheduled_time=T0,
                seq=seq,
            )
            records.append(record)
        rows = [_sqlite_schema.row_from_snapshot(_sqlite_schema.snapshot(r)) for r in records]
        _sqlite_schema.write_rows(connection, rows)
        records[-1].version = 7
        _sqlite_schema.write_rows(
            connection, [_sqlite_schema.row_from_snapshot(_sqlite_schema.snapshot(records[-1]))]
        )
        loaded = [
            _sqlite_schema.record_from_row(row)
            for row in connection.execute(_sqlite_schema.SELECT_ALL)
        ]
        assert [fields(r) for r in loaded] == [fields(r) for r in records]

        _sqlite_schema.delete_rows(connection, [r.seq for r in records[:299]])
        assert [row[0] for row in connection.execute("SELECT id FROM tasks")] == [
            "task-300",
            "task-301",
        ]
