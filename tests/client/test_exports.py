import conveyor


def test_exported_names_are_pinned() -> None:
    assert conveyor.__all__ == [
        "AlreadyExists",
        "AsyncClient",
        "AsyncTaskHandle",
        "BatchCancelResult",
        "BatchRetryResult",
        "Client",
        "ConveyorError",
        "DeadlineExceeded",
        "FailedPrecondition",
        "InvalidArgument",
        "JSONValue",
        "LogLine",
        "OverlapPolicy",
        "PendingReason",
        "PermissionDenied",
        "Progress",
        "ResourceExhausted",
        "Schedule",
        "ScheduleRun",
        "Task",
        "TaskChange",
        "TaskError",
        "TaskFailed",
        "TaskHandle",
        "TaskNotFound",
        "TaskSpec",
        "TaskState",
        "TaskType",
        "TaskTypeLimits",
        "TaskView",
        "Unauthenticated",
        "Unavailable",
        "WaitTimeout",
        "Worker",
        "tls",
    ]


def test_every_exported_name_exists() -> None:
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None


def test_error_hierarchy() -> None:
    rpc_errors = [
        conveyor.TaskNotFound,
        conveyor.InvalidArgument,
        conveyor.AlreadyExists,
        conveyor.FailedPrecondition,
        conveyor.ResourceExhausted,
        conveyor.Unavailable,
        conveyor.Unauthenticated,
        conveyor.PermissionDenied,
        conveyor.DeadlineExceeded,
    ]
    assert all(issubclass(cls, conveyor.ConveyorError) for cls in rpc_errors)
    # The outcome errors of a wait sit under the one root too.
    assert issubclass(conveyor.TaskFailed, conveyor.ConveyorError)
    assert issubclass(conveyor.WaitTimeout, conveyor.ConveyorError)
    assert issubclass(conveyor.WaitTimeout, TimeoutError)


def test_testing_exports_are_pinned() -> None:
    import conveyor.testing

    assert conveyor.testing.__all__ == [
        "AsyncConveyorTestServer",
        "ConveyorTestServer",
        "TestClock",
    ]
