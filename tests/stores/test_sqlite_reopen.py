"""What a `sqlite:///path` file keeps beyond its tasks: across versions of
the server (a file of an older schema version is migrated when opened), and
across restarts of one (the key that signs list page tokens)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc

import conveyor
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc
from conveyor_server.stores import (
    ListQuery,
    NewTask,
    Outcome,
    ScheduleRecord,
    SqliteStore,
    State,
    TaskRecord,
    _flat,
)
from conveyor_server.stores.sqlite import schema
from tests.support.server import ServerThread, test_config
from tests.support.stores import BOOM, TYPES, new_task, value_bytes

T0 = 1_700_000_000.0

# The tables as schema version 1 wrote them: no claim number, no reply_to.
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL,
    state INTEGER NOT NULL, payload BLOB NOT NULL, result BLOB, error_code TEXT,
    error_message TEXT, error_exception_type TEXT, progress_percent REAL,
    progress_message TEXT, progress_current INTEGER, progress_total INTEGER,
    attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL, priority INTEGER NOT NULL,
    labels TEXT, create_time REAL NOT NULL, start_time REAL, end_time REAL,
    update_time REAL NOT NULL, scheduled_time REAL NOT NULL, timeout REAL,
    idempotency_key TEXT, fingerprint BLOB, cancel_requested INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX tasks_by_seq ON tasks (seq);
"""
# The columns versions 5 and 6 added.
V5_COLUMNS = (
    "concurrency_key",
    "depends_on",
    "waiting",
    "run_on_dependency_failure",
    "traceparent",
)
# The columns each older version has, of today's.
COLUMNS = {
    1: [name for name in schema.COLUMNS if name not in ("claim", "reply_to", *V5_COLUMNS)],
    2: [name for name in schema.COLUMNS if name not in ("reply_to", *V5_COLUMNS)],
    4: [name for name in schema.COLUMNS if name not in V5_COLUMNS],
}


# Version 2 added the claim number; its rows were keyed by the task id.
SCHEMA_V2 = SCHEMA_V1.replace(
    "version INTEGER NOT NULL\n);", "version INTEGER NOT NULL,\n    claim INTEGER NOT NULL\n);"
)

# Version 4: rows keyed by seq, with the claim number and the reply_to.
SCHEMA_V4 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id TEXT NOT NULL, seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, type TEXT NOT NULL,
    state INTEGER NOT NULL, payload BLOB NOT NULL, result BLOB, error_code TEXT,
    error_message TEXT, error_exception_type TEXT, progress_percent REAL,
    progress_message TEXT, progress_current INTEGER, progress_total INTEGER,
    attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL, priority INTEGER NOT NULL,
    labels TEXT, create_time REAL NOT NULL, start_time REAL, end_time REAL,
    update_time REAL NOT NULL, scheduled_time REAL NOT NULL, timeout REAL,
    idempotency_key TEXT, fingerprint BLOB, cancel_requested INTEGER NOT NULL,
    version INTEGER NOT NULL, claim INTEGER NOT NULL, reply_to TEXT
);
"""


def record(new: NewTask, task_id: str, seq: int, state: State, attempt: int) -> TaskRecord:
    task = new.record(task_id, T0, T0, seq)
    task.state, task.attempt, task.version = state, attempt, 2 + attempt
    if state is State.FAILED:
        task.error, task.end_time = BOOM, T0 + 1
    return task


def write_old_file(path: Path, version: int, tasks: list[TaskRecord]) -> None:
    """A file as schema `version` (1, 2 or 4) wrote it, holding `tasks`."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executescript({1: SCHEMA_V1, 2: SCHEMA_V2, 4: SCHEMA_V4}[version])
        connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        connection.execute("INSERT INTO meta VALUES ('last_seq', ?)", (str(len(tasks)),))
        columns = COLUMNS[version]
        for task in tasks:
            values = dict(zip(_flat.NAMES, _flat.flatten(task), strict=True))
            connection.execute(
                f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [values[name] for name in columns],
            )


async def test_a_version_1_file_is_migrated_and_keeps_fencing(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    running = record(new_task(max_attempts=3), "running", 1, State.RUNNING, 2)
    failed = record(new_task(max_attempts=1), "failed", 2, State.FAILED, 1)
    write_old_file(path, 1, [running, failed])

    store = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        # The interrupted attempt counts, as ever; its claim number is the
        # attempt it was fenced on.
        recovered = await store.get("running")
        assert recovered is not None
        assert (recovered.state, recovered.attempt, recovered.claim) == (State.PENDING, 2, 2)
        [claimed] = await store.claim(1, T0 + 2, TYPES)
        assert (claimed.id, claimed.attempt, claimed.claim) == ("running", 3, 3)

        await store.retry("failed", T0 + 3)
        [again] = await store.claim(1, T0 + 4, TYPES)
        assert (again.id, again.attempt, again.claim) == ("failed", 1, 2)
        late = Outcome("failed", 1, result=value_bytes("stale"))
        assert await store.complete([late], T0 + 5) == []
        [done] = await store.complete([Outcome("failed", 2, result=b"")], T0 + 5)
        assert done.state is State.SUCCEEDED
    finally:
        await store.close()

    with contextlib.closing(sqlite3.connect(path)) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(schema.SCHEMA_VERSION),)
        rows = dict(connection.execute("SELECT id, claim FROM tasks"))
    assert rows == {"running": 3, "failed": 2}


async def test_a_version_2_file_is_rekeyed_by_creation_and_keeps_its_tasks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.db"
    tasks = [
        record(new_task(labels={"n": str(seq)}), f"task-{seq}", seq, state, attempt)
        for seq, state, attempt in [
            (1, State.FAILED, 1),
            (2, State.PENDING, 0),
            (3, State.RUNNING, 1),
            (4, State.PENDING, 0),
        ]
    ]
    tasks[2].max_attempts = 2
    for task in tasks:
        task.claim = task.attempt
    write_old_file(path, 2, tasks)

    store = SqliteStore(str(path), max_queue=100, retention_count=1)
    try:
        page, _ = await store.list_page(ListQuery(page_size=10))
        assert [r.id for r in page] == ["task-4", "task-3", "task-2", "task-1"]
        interrupted = await store.get("task-3")
        assert interrupted is not None and interrupted.state is State.PENDING
        claimed = await store.claim(3, T0 + 1, TYPES)
        assert sorted(r.id for r in claimed) == ["task-2", "task-3", "task-4"]
        await store.complete(
            [Outcome(r.id, r.claim, result=value_bytes("ok")) for r in claimed], T0 + 2
        )
        [new] = await store.create([new_task()], T0 + 3)
        assert new.seq == 5
    finally:
        await store.close()

    with contextlib.closing(sqlite3.connect(path)) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(schema.SCHEMA_VERSION),)
        # Keyed by seq: the rowid is the creation number, and only the
        # newest finished task (retention_count=1) and the new one are left.
        rows = connection.execute("SELECT rowid, seq, id, state FROM tasks ORDER BY rowid")
        assert rows.fetchall() == [(4, 4, "task-4", State.SUCCEEDED), (5, 5, new.id, State.PENDING)]
        indexes = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        assert [name for (name,) in indexes if "tasks" in name] == []


async def test_a_version_2_file_is_migrated_its_tasks_without_a_reply_to(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    done = record(new_task(), "done", 1, State.FAILED, 1)
    done.claim = 1
    waiting = record(new_task(key="k"), "waiting", 2, State.PENDING, 0)
    write_old_file(path, 2, [done, waiting])

    store = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        loaded = [await store.get(task_id) for task_id in ("done", "waiting")]
        assert [(r.id, r.claim, r.reply_to) for r in loaded if r is not None] == [
            ("done", 1, None),
            ("waiting", 0, None),
        ]
        # New tasks keep theirs, in the migrated file as in a new one.
        [fresh] = await store.create([new_task(reply_to="client-7")], T0 + 1)
        # The stored request's key still meets a repeat of it.
        [again] = await store.create([new_task(key="k")], T0 + 1)
        assert again.id == "waiting"
    finally:
        await store.close()

    reopened = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        kept = await reopened.get(fresh.id)
        assert kept is not None and kept.reply_to == "client-7"
    finally:
        await reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(schema.SCHEMA_VERSION),)
        rows = dict(connection.execute("SELECT id, reply_to FROM tasks"))
    assert rows == {"done": None, "waiting": None, fresh.id: "client-7"}


async def test_a_version_4_file_is_migrated_and_keeps_type_settings_and_schedules(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.db"
    done = record(new_task(), "done", 1, State.FAILED, 1)
    waiting = record(new_task(), "waiting", 2, State.PENDING, 0)
    write_old_file(path, 4, [done, waiting])

    store = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        loaded = await store.get("waiting")
        assert loaded is not None
        assert (loaded.concurrency_key, loaded.depends_on, loaded.waiting) == (None, None, 0)
        assert not loaded.run_on_dependency_failure
        [claimed] = await store.claim(5, T0 + 1, TYPES)
        assert claimed.id == "waiting"
        await store.update_type("echo", T0 + 2, limits={"max_running": 3}, paused=True)
        await store.create_schedule(ScheduleRecord("nightly", "", b"spec", False, T0, T0, T0 + 60))
    finally:
        await store.close()

    reopened = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        settings = (await reopened.type_settings())["echo"]
        assert (settings.limits.max_running, settings.paused) == (3, True)
        assert [s.id for s in await reopened.list_schedules("")] == ["nightly"]
    finally:
        await reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(schema.SCHEMA_VERSION),)


def test_a_page_token_survives_a_server_restart(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    url = f"sqlite:///{tmp_path}/tasks.db"
    # Stopped here rather than by make_server, which stops its servers at
    # the end of the test.
    first = ServerThread(test_config(store=url)).start()
    try:
        with conveyor.Client(first.address, timeout=5.0) as client:
            ids = [client.submit("echo", {"n": n}, delay=3600).id for n in range(3)]
        page = list_page(first.address, task_service_pb2.ListTasksRequest(page_size=2))
        assert [task.id for task in page.tasks] == ids[:0:-1]
    finally:
        first.stop()

    second = make_server(store=url)
    request = task_service_pb2.ListTasksRequest(page_size=2, page_token=page.next_page_token)
    rest = list_page(second.address, request)
    assert ([task.id for task in rest.tasks], rest.next_page_token) == ([ids[0]], "")


def list_page(
    address: str, request: task_service_pb2.ListTasksRequest
) -> task_service_pb2.ListTasksResponse:
    """A raw ListTasks call: the SDK pages for its callers, and keeps its
    tokens to itself."""
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        response: task_service_pb2.ListTasksResponse = stub.ListTasks(request, timeout=5.0)
        return response
