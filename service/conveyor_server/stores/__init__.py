"""Where tasks live: the `TaskStore` protocol, its vocabulary and its three stores.

A store is chosen by URL with `open_store`:

- `memory://` (`MemoryStore`): the default; fast, lost on restart;
- `sqlite:///path` (`SqliteStore`): one node, durable;
- `redis://host:port/db` (`RedisStore`): shared by server replicas and
  worker processes.

Everything else in the server touches tasks only through the protocol and
the record types exported here.
"""

from conveyor_server.stores._errors import (
    IdempotencyConflict,
    InvalidTransition,
    QueueFull,
    ScheduleExists,
    StoreError,
    StoreUnavailable,
    UnknownDependency,
)
from conveyor_server.stores._feed import FeedChange, FeedFilter, FeedReader
from conveyor_server.stores._logs import LogBatch, LogCursor, LogEntry, LogPage
from conveyor_server.stores._open import open_store
from conveyor_server.stores._protocol import StoreListener, TaskStore, TaskSubscription
from conveyor_server.stores._records import (
    BacklogGauge,
    Cancellation,
    CancelOutcome,
    ErrorCode,
    ListQuery,
    NewTask,
    Outcome,
    PendingExplanation,
    PendingReason,
    Progress,
    ScheduleRecord,
    State,
    TaskFailure,
    TaskRecord,
    TypeCounts,
    TypeLimits,
    TypeSettings,
)
from conveyor_server.stores._workers import TaskTypeInfo, WorkerInfo
from conveyor_server.stores.memory import MemoryStore
from conveyor_server.stores.redis import RedisStore
from conveyor_server.stores.sqlite import SqliteStore

__all__ = [
    "BacklogGauge",
    "CancelOutcome",
    "Cancellation",
    "ErrorCode",
    "FeedChange",
    "FeedFilter",
    "FeedReader",
    "IdempotencyConflict",
    "InvalidTransition",
    "ListQuery",
    "LogBatch",
    "LogCursor",
    "LogEntry",
    "LogPage",
    "MemoryStore",
    "NewTask",
    "Outcome",
    "PendingExplanation",
    "PendingReason",
    "Progress",
    "QueueFull",
    "RedisStore",
    "ScheduleExists",
    "ScheduleRecord",
    "SqliteStore",
    "State",
    "StoreError",
    "StoreListener",
    "StoreUnavailable",
    "TaskFailure",
    "TaskRecord",
    "TaskStore",
    "TaskSubscription",
    "TaskTypeInfo",
    "TypeCounts",
    "TypeLimits",
    "TypeSettings",
    "UnknownDependency",
    "WorkerInfo",
    "open_store",
]
