"""The shared result stream's decisions (`conveyor._results.ResultBook`),
message by message: what each request asks for, when the stream reopens,
and which waiters an error fails. The real-server tests are in
test_results.py."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from conveyor import ConveyorError, Task, TaskNotFound, Unavailable
from conveyor._results import MAX_IDS, ResultBook, StreamUnsupported
from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb

TERMINAL = [
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
]


class Waiter:
    def __init__(self) -> None:
        self.task: Task | None = None
        self.error: ConveyorError | None = None

    def resolve(self, task: Task) -> None:
        self.task = task

    def fail(self, error: ConveyorError) -> None:
        self.error = error


def finished(task_id: str, cursor: str, *, current: bool = False) -> pb.WatchTasksResponse:
    task = task_pb2.Task(id=task_id, type="echo", state=task_pb2.TASK_STATE_SUCCEEDED, version=3)
    return pb.WatchTasksResponse(task=task, cursor=cursor, current=current)


def not_found(task_id: str) -> TaskNotFound:
    info = error_details_pb2.ResourceInfo(resource_type="conveyor.v1.Task", resource_name=task_id)
    return TaskNotFound(f"task {task_id} not found", code=grpc.StatusCode.NOT_FOUND, details=[info])


def test_the_first_stream_asks_for_every_snapshot_of_the_terminal_states() -> None:
    book: ResultBook[Waiter] = ResultBook()
    assert book.next_request() is None  # nobody waits: no stream
    for task_id in ("b", "a"):
        assert book.add(task_id, Waiter()) is False  # no stream open yet
    request = book.next_request()
    assert request is not None
    assert list(request.ids) == ["b", "a"]
    assert list(request.current_ids) == ["a", "b"]
    assert list(request.states) == TERMINAL
    assert request.cursor == ""


def test_ids_joining_an_open_stream_reopen_it_once_from_the_cursor() -> None:
    book: ResultBook[Waiter] = ResultBook()
    first = Waiter()
    book.add("a", first)
    book.next_request()
    assert book.received(pb.WatchTasksResponse(cursor="c1", task=task_pb2.Task(id="x"))) is False
    assert book.add("b", Waiter()) is True
    assert book.add("c", Waiter()) is False  # the reopen asked for covers it
    assert book.add("a", Waiter()) is False  # already covered
    assert book.failed(ConveyorError("cancelled", code=grpc.StatusCode.CANCELLED)) == 0.0
    request = book.next_request()
    assert request is not None
    assert (list(request.ids), request.cursor) == (["a", "b", "c"], "c1")
    # "a" was confirmed by the change after the snapshots.
    assert list(request.current_ids) == ["b", "c"]


def test_a_terminal_snapshot_resolves_every_waiter_and_an_empty_book_closes() -> None:
    book: ResultBook[Waiter] = ResultBook()
    waiters = [Waiter(), Waiter()]
    for waiter in waiters:
        book.add("a", waiter)
    book.next_request()
    assert book.received(finished("a", "c1", current=True)) is True
    assert [w.task.id if w.task else None for w in waiters] == ["a", "a"]
    assert book.next_request() is None
    # Waited on again, it is asked for again; with every id catching up
    # by its snapshot, replaying changes since the cursor would be waste.
    book.add("a", Waiter())
    request = book.next_request()
    assert request is not None
    assert (list(request.current_ids), request.cursor) == (["a"], "")


def test_a_reset_reopens_without_a_cursor_asking_for_every_snapshot() -> None:
    book: ResultBook[Waiter] = ResultBook()
    book.add("a", Waiter())
    book.add("b", Waiter())
    book.next_request()
    book.received(pb.WatchTasksResponse(cursor="c1", task=task_pb2.Task(id="x")))
    assert book.received(pb.WatchTasksResponse(cursor="c2", reset=True)) is True
    request = book.next_request()
    assert request is not None
    assert (request.cursor, list(request.current_ids)) == ("", ["a", "b"])


def test_ids_past_the_limit_join_once_there_is_room_for_them() -> None:
    book: ResultBook[Waiter] = ResultBook()
    ids = [f"t{i:04}" for i in range(MAX_IDS + 3)]
    for task_id in ids:
        book.add(task_id, Waiter())
    request = book.next_request()
    assert request is not None
    assert list(request.ids) == ids[:MAX_IDS]
    # Room frees, but snapshots are still coming: no reopen yet.
    assert book.received(finished(ids[0], "c1", current=True)) is False
    # Past them, the queued ids join once all three fit.
    assert book.received(finished(ids[1], "c2")) is False
    assert book.received(finished(ids[2], "c3")) is True
    request = book.next_request()
    assert request is not None
    assert request.cursor == "c3"
    assert list(request.ids) == ids[3:]
    assert list(request.current_ids) == ids[MAX_IDS:]


def test_queued_ids_join_when_every_snapshot_resolved_its_task() -> None:
    book: ResultBook[Waiter] = ResultBook()
    ids = [f"t{i:04}" for i in range(MAX_IDS + 1)]
    for task_id in ids:
        book.add(task_id, Waiter())
    book.next_request()
    # Every covered task had finished: snapshots only, no change comes.
    reopens = [book.received(finished(i, "c0", current=True)) for i in ids[:MAX_IDS]]
    assert reopens == [False] * (MAX_IDS - 1) + [True]
    request = book.next_request()
    assert request is not None
    assert (list(request.ids), list(request.current_ids)) == ([ids[-1]], [ids[-1]])


def test_not_found_fails_only_the_waiters_of_the_ids_it_names() -> None:
    book: ResultBook[Waiter] = ResultBook()
    known, missing = Waiter(), Waiter()
    book.add("known", known)
    book.add("missing", missing)
    book.next_request()
    assert book.failed(not_found("missing")) == 0.0
    assert isinstance(missing.error, TaskNotFound)
    assert "missing" in missing.error.message
    assert known.error is None
    request = book.next_request()
    assert request is not None
    assert (list(request.ids), list(request.current_ids)) == (["known"], ["known"])


def test_unavailable_reopens_with_a_capped_backoff_then_fails_everyone() -> None:
    book: ResultBook[Waiter] = ResultBook()
    waiter = Waiter()
    book.add("a", waiter)
    book.next_request()
    error = Unavailable("down", code=grpc.StatusCode.UNAVAILABLE)
    delays = []
    while (delay := book.failed(error)) is not None:
        delays.append(delay)
        book.next_request()
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6] + [2.0] * 9
    assert waiter.error is not None
    assert waiter.error.code is grpc.StatusCode.UNAVAILABLE
    assert book.next_request() is None


def test_other_errors_fail_every_waiter_at_once() -> None:
    book: ResultBook[Waiter] = ResultBook()
    waiters = [Waiter(), Waiter()]
    book.add("a", waiters[0])
    book.add("b", waiters[1])
    book.next_request()
    denied = ConveyorError("no", code=grpc.StatusCode.PERMISSION_DENIED)
    assert book.failed(denied) is None
    assert [w.error.code if w.error else None for w in waiters] == [
        grpc.StatusCode.PERMISSION_DENIED
    ] * 2
    assert waiters[0].error is not waiters[1].error


def test_a_service_without_watch_tasks_falls_back() -> None:
    book: ResultBook[Waiter] = ResultBook()
    waiter = Waiter()
    book.add("a", waiter)
    book.next_request()
    assert book.failed(ConveyorError("no", code=grpc.StatusCode.UNIMPLEMENTED)) is None
    assert isinstance(waiter.error, StreamUnsupported)
    assert book.unsupported


def test_close_fails_every_waiter_and_later_ones() -> None:
    book: ResultBook[Waiter] = ResultBook()
    before, after = Waiter(), Waiter()
    book.add("a", before)
    book.close()
    book.add("b", after)
    assert before.error is not None and after.error is not None
    assert before.error.code is grpc.StatusCode.CANCELLED
    assert book.next_request() is None
