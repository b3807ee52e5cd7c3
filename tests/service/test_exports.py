import conveyor_server
from conveyor_server import stores


def test_server_exports_are_pinned() -> None:
    assert conveyor_server.__all__ == [
        "ConveyorServer",
        "ConveyorWorker",
        "Dependency",
        "HandlerRegistry",
        "InvalidPayload",
        "MemoryStore",
        "NonRetryableError",
        "ServerConfig",
        "TaskCancelled",
        "TaskContext",
        "TaskEngine",
        "TaskHandler",
        "TaskStore",
        "TaskSubscription",
        "default_registry",
        "grpc_server_options",
        "task",
    ]
    for name in conveyor_server.__all__:
        assert getattr(conveyor_server, name) is not None


def test_store_vocabulary_is_pinned() -> None:
    assert stores.__all__ == [
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
    for name in stores.__all__:
        assert getattr(stores, name) is not None
