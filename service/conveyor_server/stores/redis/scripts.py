"""The Redis layout of `RedisStore`: its keys, its Lua scripts (read from
`lua/*.lua` at import), and how a task hash becomes a TaskRecord.

Every state change is one script, so it is atomic without locks or retries,
and a batch costs one round trip. Keys, under the prefix `P`:

    P:task:<id>        hash: one task, a field per TaskRecord attribute set,
                       plus its queue member (queued) and runner (owner)
    P:seq              counter: creation order, the list cursor
    P:ticket           counter: queue order and finishing order
    P:fair:<t>         zset: the priorities of type t with due tasks, score
                       -priority (t, and the tenant s below, are spelled with
                       their length first: "5:email")
    P:fair:<t>:<prio>  zset: the tenants with due tasks of type t at prio, in
                       rotation: score their turn (a ticket: when last served
                       or when they joined)
    P:fair:<t>:<prio>:<s>
                       zset: tenant s's concurrency keys with due tasks there
                       ("" for tasks without a key), in rotation by turn
    P:fair:<t>:<prio>:<s>:<key>
                       zset: the FIFO of one key group, score 0, member
                       <ticket hex><id> (equal scores sort by member, so by
                       queue order); see lua/fair.lua
    P:parked:<t>       set: the key groups (<s><key>) of type t out of turn
                       while at max_running_per_key; P:parked:<t>:<group> the
                       priorities they have due tasks at
    P:key_running:<t>  hash: key group -> its running tasks of type t
    P:type_tasks       hash: "r:<type>" / "p:<type>" -> running / pending tasks
                       of the type (the queue depth is their sum)
    P:types            set: the types with declared or run-time settings
    P:limits:<type>    hash: a type's settings: d:<limit> declared defaults,
                       o:<limit> run-time overrides, paused, update_time; and
                       its token bucket: tokens as of tokens_at
    P:token_due        zset: types with due tasks and an empty bucket, score
                       the time their next token arrives
    P:layout           string: "2" once the queues of the layout before fair
                       queues (P:ready:<type>, P:ready_types) were moved
    P:delayed          zset: waiting tasks; score due time, member <seq hex><id>
    P:running          zset: running tasks by lease expiry
    P:finished         zset: finished tasks by ticket (finishing order)
    P:tasks:<tenant>   zset: a tenant's tasks by seq, for listing
    P:list:<n>:<tenant>:type:<type>, P:list:<n>:<tenant>:label:<m>:<key>=<value>,
    P:list:<n>:<tenant>:state:<state>
                       zsets: a tenant's tasks of one type, label or state,
                       by seq (n and m: the tenant's and the label key's
                       length), for listing a filter without reading the
                       tasks that do not match it
    P:list_index       string: set once the list indexes hold every task
                       (tasks stored before they existed are added by a
                       build, see `_list_index`); P:list_index_build is the
                       lease of the process that builds them
    P:dependents:<id>  set: the tasks that wait for task <id> (PENDING, in no
                       queue, `waiting` > 0); read and deleted when it ends
    P:idempotency      hash: "<tenant>\\0<key>" -> task id
    P:tenant_depth     hash: tenant -> its unfinished tasks, for quotas
    P:logs:<id>        set: the attempts of task <id> with log lines; the
                       lines of each in the list P:logs:<id>:<attempt>,
                       the latest MAX_LINES_PER_ATTEMPT (see `_logs`),
                       dropped with the task
    P:signing_key      string: the secret that signs list page tokens
    P:workers          hash: worker id -> its registration (JSON)
    P:worker_expiry    zset: worker ids by the time their entry expires
    P:schedule:<n>:<tenant>:<id>
                       hash: one schedule (n: the tenant's length)
    P:schedules        zset: "<tenant>\\0<id>" of every schedule, all scored 0,
                       so that lexical order is (tenant, id)
    P:call:<owner>:<n> string: the answer of one call that must not act twice,
                       for CALL_MEMORY_SECONDS (see `RedisStore._run`)

    P:feed             stream: the change feed, one entry per script call that
                       changed tasks, field `c` = "id:version ..." of each
                       change in order, field `r` = "=reply_to ..." of each
                       change's task ("=" for none; entries written before
                       reply_to existed have no `r`); trimmed to about
                       FEED_LENGTH entries

Channels: `P:cancel` (a task id whose running attempt was
asked to stop) and `P:work` (due work appeared where nothing was in turn,
or a limit stopped holding due tasks back; the message names the process
that made it, whose runner knows already).

Every script takes the prefix as ARGV[1]. Batches travel as two arguments,
comma-separated lengths and the values end to end: a few large arguments
cost the client far less to send than thousands of small ones. Optional
values are "" for None and "=" + value otherwise, so an empty value stays
distinct from a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from conveyor_server.stores import _flat
from conveyor_server.stores._records import (
    LIMIT_NAMES,
    NewTask,
    Outcome,
    Progress,
    State,
    TaskRecord,
    TypeLimits,
    TypeSettings,
)

# Tasks a list script examines per call: bounds how long one call holds Redis.
LIST_SCAN = 500
# Finished tasks a purge script looks at per call, for the same reason.
PURGE_CHUNK = 500
# Tasks an index build adds to the list indexes per call, for the same reason.
INDEX_CHUNK = 500
# How long the answer of a call that must not act twice is kept for a
# repeat. The client repeats a call at once, on a fresh connection, when
# the first one dropped (a read that times out is not repeated): a minute
# covers the connect timeout many times over, and the answers of a minute
# of calls are all the memory it costs.
CALL_MEMORY_SECONDS = 60
# Entries (script calls that changed tasks) the change feed stream keeps,
# about: how far back a WatchTasks reader can resume. At a few hundred
# bytes an entry, tens of megabytes of Redis at most.
FEED_LENGTH = 100_000

# The hash field of each flat field of a task, in `_flat.FIELDS` order: the
# order scripts return them in (HMGET). One name differs from the SQLite
# column: the hash field of `error_exception_type` has always been
# `error_type`, and stored hashes keep it.
_HASH_FIELD = {"error_exception_type": "error_type"}
FIELDS = tuple(_HASH_FIELD.get(name, name) for name in _flat.NAMES)

# The fields scripts read and write besides those: the member a pending
# task has in its queue, and the process that runs it.
STORE_FIELDS = (*FIELDS, "queued", "owner")


def _script(name: str) -> str:
    """The text of `lua/<name>.lua` without its leading comment block: the
    comments document the script for its readers, Redis needs only the code."""
    text = (resources.files("conveyor_server.stores.redis") / "lua" / f"{name}.lua").read_text(
        encoding="utf-8"
    )
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("--"):
        start += 1
    return "".join(lines[start:])


# Every script is COMMON followed by its own body.
COMMON = (
    _script("common")
    .replace("FAIR_QUEUES", _script("fair"))
    .replace("FIELD_NAMES", ", ".join(f"'{name}'" for name in STORE_FIELDS))
    .replace("CALL_MEMORY_MS", str(CALL_MEMORY_SECONDS * 1000))
    .replace("FEED_LENGTH", str(FEED_LENGTH))
)
CREATE = _script("create")
# The parts of a runner's round, each a function a script's body calls.
_CLAIMING = _script("claiming")
_COMPLETING = _script("completing")
CLAIM = _CLAIMING + _script("claim")
SET_PROGRESS = _script("set_progress")
COMPLETE = _COMPLETING + _script("complete")
SETTLE = _COMPLETING + _CLAIMING + _script("settle")
REQUEUE = _script("requeue")
CANCEL = _script("cancel")
RETRY = _script("retry")
RENEW = _script("renew")
REAP = _script("reap")
PURGE = _script("purge").replace("PURGE_CHUNK", str(PURGE_CHUNK))
DEPTH = _script("depth")
BACKLOG = _script("backlog")
WORK = _CLAIMING + _script("work")
REASON = _script("reason")
DECLARE = _script("declare")
UPDATE_TYPE = _script("update_type")
SIGNING_KEY = _script("signing_key")
LIST = _script("list").replace("LIST_SCAN", str(LIST_SCAN))
FETCH = _script("fetch")
INDEX = _script("index").replace("INDEX_CHUNK", str(INDEX_CHUNK))
WORKERS = _script("workers")
SCHEDULES = _script("schedules")
APPEND_LOGS = _script("append_logs")
READ_LOGS = _script("read_logs")


# -- values in and out ---------------------------------------------------------


def pack(values: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The two arguments that carry a batch: lengths, and values end to end."""
    return ",".join([str(len(v)) for v in values]).encode(), b"".join(values)


def opt(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return b"=" + (value.encode() if isinstance(value, str) else value)


def number(value: float) -> bytes:
    """A number as Python reads it back exactly."""
    return repr(value).encode()


def progress_values(progress: Progress | None) -> tuple[bytes, bytes, bytes, bytes]:
    if progress is None:
        return b"", b"", b"0", b"0"
    return (
        repr(float(progress.percent)).encode(),
        progress.message.encode(),
        str(progress.current).encode(),
        str(progress.total).encode(),
    )


# How a task hash spells each kind of value: everything is bytes, and an
# optional value that is None is an absent field (HMGET gives None).
_DECODE: _flat.Spelling = {
    _flat.Kind.TEXT: "{}.decode()",
    _flat.Kind.INT: "int({})",
    _flat.Kind.REAL: "float({})",
    _flat.Kind.STATE: "_states[{}]",
    _flat.Kind.FLAG: "{} == b'1'",
    _flat.Kind.JSON: "_from_json({})",
    _flat.Kind.IDS: "tuple({}.decode().split())",
}
# A TaskRecord from the STORE_FIELDS of a task hash (the values past FIELDS
# are those only scripts use); None for a task that is gone.
record_from = _flat.unflattener(
    _DECODE,
    {"_states": {str(int(s)).encode(): s for s in State}},
    trailing=True,
    none_without_id=True,
)


def create_values(new: NewTask, task_id: str, due: float, now: float) -> tuple[bytes, ...]:
    """One task of a CREATE batch, in the order the script reads them."""
    labels = None if new.labels is None else json.dumps(new.labels, separators=(",", ":"))
    return (
        task_id.encode(),
        new.type.encode(),
        new.payload,
        opt(labels),
        str(new.max_attempts).encode(),
        str(new.priority).encode(),
        b"" if new.timeout is None else b"=" + number(new.timeout),
        opt(new.idempotency_key),
        opt(new.fingerprint),
        number(due),
        new.tenant.encode(),
        b"1" if due > now else b"0",
        opt(new.reply_to),
        opt(new.concurrency_key),
        " ".join(new.depends_on).encode(),
        " ".join(str(index) for index in new.depends_on_requests).encode(),
        b"1" if new.run_on_dependency_failure else b"0",
        opt(new.traceparent),
    )


def outcome_values(outcome: Outcome) -> tuple[bytes, ...]:
    """One outcome of a COMPLETE batch, in the order the script reads them."""
    failure = outcome.failure
    if failure is None:
        error: tuple[bytes, bytes, bytes] = (b"", b"", b"")
    else:
        error = (opt(failure.code), failure.message.encode(), failure.exception_type.encode())
    return (
        outcome.task_id.encode(),
        str(outcome.claim).encode(),
        b"1" if outcome.cancelled else b"0",
        opt(outcome.result),
        *error,
        b"" if outcome.retry_at is None else number(outcome.retry_at),
        *progress_values(outcome.progress),
    )


def limit_text(name: str, value: float) -> bytes:
    """A limit as type settings hashes spell it: whole numbers but the rate."""
    if name == "max_starts_per_second":
        return number(float(value))
    return str(int(value)).encode()


def limits_values(limits: TypeLimits) -> tuple[bytes, ...]:
    """The four limits of a declaration, in LIMIT_NAMES order."""
    return tuple(limit_text(name, getattr(limits, name)) for name in LIMIT_NAMES)


def type_settings_from(task_type: str, flat: Sequence[bytes]) -> TypeSettings:
    """A type's TypeSettings from its settings hash, as HGETALL gives it."""
    fields = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    declared = {name: float(fields.get(f"d:{name}", b"0")) for name in LIMIT_NAMES}
    return TypeSettings(
        type=task_type,
        defaults=TypeLimits(
            max_running=int(declared["max_running"]),
            max_running_per_key=int(declared["max_running_per_key"]),
            max_starts_per_second=declared["max_starts_per_second"],
            burst=int(declared["burst"]),
        ),
        overrides=tuple(
            (name, float(fields[f"o:{name}"]))
            for name in sorted(LIMIT_NAMES)
            if f"o:{name}" in fields
        ),
        paused=fields.get("paused") == b"1",
        update_time=float(fields.get("update_time", b"0")),
    )


def existing_record(values: Sequence[Any]) -> TaskRecord:
    """A TaskRecord from a script that read it in the same call."""
    record = record_from(values)
    assert record is not None
    return record
