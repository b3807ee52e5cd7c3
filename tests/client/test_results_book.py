"""The shared result stream's decisions (`conveyor._results.ResultBook`),
message by message: what each request asks for, when the stream reopens,
and which waiters an error fails. The real-server tests are in
test_results.py."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from conveyor import ConveyorError, Task, TaskNotFound, Unavailable
from conveyor import _results as results
from conveyor._core import task_from_proto
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
    book: ResultBook[Waiter] = ResultBook("r")
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
    book: ResultBook[Waiter] = ResultBook("r")
    first = Waiter()
    book.add("a", first)
    book.next_request()
    assert book.following("c0", 1.0) is False  # the headers came
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
    book: ResultBook[Waiter] = ResultBook("r")
    waiters = [Waiter(), Waiter()]
    for waiter in waiters:
        book.add("a", waiter)
    book.next_request()
    # The stream stays open; the driver closes it after a while.
    assert book.received(finished("a", "c1", current=True)) is False
    assert [w.task.id if w.task else None for w in waiters] == ["a", "a"]
    assert book.next_request(keep=True) is not None  # still kept open
    assert book.next_request() is None
    # Waited on again, it is asked for again; with every id catching up
    # by its snapshot, replaying changes since the cursor would be waste.
    book.add("a", Waiter())
    request = book.next_request()
    assert request is not None
    assert (list(request.current_ids), request.cursor) == (["a"], "")


def test_a_reset_reopens_without_a_cursor_asking_for_every_snapshot() -> None:
    book: ResultBook[Waiter] = ResultBook("r")
    book.add("a", Waiter())
    book.add("b", Waiter())
    book.next_request()
    book.received(pb.WatchTasksResponse(cursor="c1", task=task_pb2.Task(id="x")))
    assert book.received(pb.WatchTasksResponse(cursor="c2", reset=True)) is True
    request = book.next_request()
    assert request is not None
    assert (request.cursor, list(request.current_ids)) == ("", ["a", "b"])


def test_ids_past_the_limit_join_once_there_is_room_for_them() -> None:
    book: ResultBook[Waiter] = ResultBook("r")
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
    book: ResultBook[Waiter] = ResultBook("r")
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
    book: ResultBook[Waiter] = ResultBook("r")
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
    book: ResultBook[Waiter] = ResultBook("r")
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
    book: ResultBook[Waiter] = ResultBook("r")
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
    book: ResultBook[Waiter] = ResultBook("r")
    waiter = Waiter()
    book.add("a", waiter)
    book.next_request()
    assert book.failed(ConveyorError("no", code=grpc.StatusCode.UNIMPLEMENTED)) is None
    assert isinstance(waiter.error, StreamUnsupported)
    assert book.unsupported


def test_close_fails_every_waiter_and_later_ones() -> None:
    book: ResultBook[Waiter] = ResultBook("r")
    before, after = Waiter(), Waiter()
    book.add("a", before)
    book.close()
    book.add("b", after)
    assert before.error is not None and after.error is not None
    assert before.error.code is grpc.StatusCode.CANCELLED
    assert book.next_request() is None


# --- tasks the client submitted, followed by their reply_to ---------------------------


class Handle:
    """What the book uses of a TaskHandle."""

    def __init__(self, task_id: str, reply_to: str = "r") -> None:
        raw = task_pb2.Task(id=task_id, type="echo", state=task_pb2.TASK_STATE_PENDING)
        raw.reply_to = reply_to
        self.task = task_from_proto(raw)
        self._submitted_at = float("-inf")
        self._final: Task | None = None


def following_book() -> ResultBook[Waiter]:
    """A book whose stream follows every change since time 10."""
    book: ResultBook[Waiter] = ResultBook("r")
    book.add("other", Waiter())
    book.next_request()
    assert book.following("c0", 10.0) is False
    return book


def test_a_task_submitted_while_the_stream_follows_needs_no_reopen() -> None:
    book = following_book()
    handle = Handle("mine")
    book.submitting()
    book.submitted([handle], 11.0)
    assert book.add("mine", Waiter()) is False
    request = book.next_request()
    assert request is not None
    assert request.reply_to == "r"
    assert "mine" not in request.ids


def test_a_task_submitted_before_the_stream_followed_is_listed_with_its_snapshot() -> None:
    book = following_book()
    handle = Handle("early")
    book.submitting()
    book.submitted([handle], 9.0)
    assert book.add("early", Waiter()) is True
    request = book.next_request()
    assert request is not None
    assert "early" in request.ids and "early" in request.current_ids


def test_a_reopen_catches_up_on_unwaited_tasks_the_stream_does_not_follow() -> None:
    book: ResultBook[Waiter] = ResultBook("r")
    handles = [Handle(f"h{i}") for i in range(3)]
    book.submitting()
    book.submitted(handles, 1.0)
    book.add("h0", Waiter())
    request = book.next_request()
    assert request is not None
    assert sorted(request.current_ids) == ["h0", "h1", "h2"]
    # An end nobody waits on is left on the handle, for its wait.
    book.received(finished("h2", "c1", current=True))
    assert handles[2]._final is not None and handles[2]._final.id == "h2"


def test_an_end_that_comes_before_its_submit_returns_reaches_the_handle() -> None:
    book = following_book()
    book.submitting()
    message = finished("fast", "c1")
    message.task.reply_to = "r"
    book.received(message)
    handle = Handle("fast")
    book.submitted([handle], 11.0)
    assert handle._final is not None and handle._final.id == "fast"


def test_a_dropped_early_end_makes_the_stream_list_the_tasks_submitted_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(results, "_MAX_ORPHANS", 1)
    book = following_book()
    book.submitting()
    for task_id in ("x1", "x2"):  # the second drops the first
        message = finished(task_id, "c1")
        message.task.reply_to = "r"
        book.received(message)
    handle = Handle("x1")
    book.submitted([handle], 11.0)
    # Its end may be the one dropped: it is listed with its snapshot.
    assert handle._final is None
    assert book.add("x1", Waiter()) is True


def test_a_task_of_another_reply_to_is_listed() -> None:
    book = following_book()
    handle = Handle("theirs", reply_to="someone-else")
    book.submitting()
    book.submitted([handle], 11.0)
    assert book.add("theirs", Waiter()) is True


def test_waiters_that_come_while_the_stream_opens_reopen_it_from_the_header_cursor() -> None:
    book: ResultBook[Waiter] = ResultBook("r")
    book.add("a", Waiter())
    book.next_request()
    assert book.add("b", Waiter()) is False  # not yet following: no cancel now
    assert book.following("c7", 5.0) is True  # then reopen, from the headers' cursor
    assert book.failed(ConveyorError("cancelled", code=grpc.StatusCode.CANCELLED)) == 0.0
    request = book.next_request()
    assert request is not None
    assert (request.cursor, list(request.ids)) == ("c7", ["a", "b"])


def test_queued_ids_join_after_a_late_change_of_a_task_already_resolved() -> None:
    book: ResultBook[Waiter] = ResultBook("r")
    ids = [f"t{i:04}" for i in range(MAX_IDS + 1)]
    for task_id in ids:
        book.add(task_id, Waiter())
    book.next_request()
    # Every listed task but the first had finished; the first finishes
    # between the follow and the snapshots: its snapshot, then its change.
    for task_id in ids[1:MAX_IDS]:
        assert book.received(finished(task_id, "c0", current=True)) is False
    assert book.received(finished(ids[0], "c0", current=True)) is True
    # Had the reader not reopened then, the duplicate change must still ask.
    assert book.received(finished(ids[0], "c1")) is True


def ended(task_id: str, cursor: str, state: int, version: int) -> pb.WatchTasksResponse:
    task = task_pb2.Task(id=task_id, type="echo", state=state, version=version, reply_to="r")  # type: ignore[arg-type]
    return pb.WatchTasksResponse(task=task, cursor=cursor)


def test_an_end_from_before_a_retry_reaches_neither_the_handle_nor_a_waiter() -> None:
    # Cancelled (version 2), then retried (version 3): the CANCELLED change
    # may still be on its way when the retry returns. It is not the end of
    # the new attempts.
    book = following_book()
    handle = Handle("mine")
    book.submitting()
    book.submitted([handle], 11.0)
    book.retried("mine", 3)
    waiter = Waiter()
    book.add("mine", waiter)
    book.received(ended("mine", "c1", task_pb2.TASK_STATE_CANCELLED, 2))
    assert handle._final is None and waiter.task is None
    book.received(ended("mine", "c2", task_pb2.TASK_STATE_SUCCEEDED, 5))
    assert waiter.task is not None and waiter.task.state.name == "SUCCEEDED"
    assert handle._final is not None and handle._final.version == 5
