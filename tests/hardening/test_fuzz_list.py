"""ListTasks with filters, page sizes and page tokens of every shape.

Page tokens are random text, base64-looking text, real tokens replayed
with other filters, and real tokens with a byte changed, cut, padded or
extended. A token the server did not issue for these filters is refused; a
real one, or one that decodes to it, continues exactly where it left off.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.fuzz import (
    FUZZ,
    Code,
    answer_of,
    assert_healthy,
    auth_metadata,
    check_clean,
    int32,
    scaled,
)
from tests.support.raw_api import Api
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

LIST_EXAMPLES = 1400
STATES = range(1, 6)  # TASK_STATE_PENDING .. TASK_STATE_CANCELLED
Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class Filters:
    states: tuple[int, ...] = ()
    type: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def request(self, page_size: int, page_token: str) -> pb.ListTasksRequest:
        request = pb.ListTasksRequest(
            page_size=page_size, page_token=page_token, type=self.type, labels=dict(self.labels)
        )
        request.states.extend(self.states)  # raw ints, in range or not
        return request

    def same_query(self, other: Filters) -> bool:
        """Whether a token minted for `other` is good for these filters:
        the order and repeats of states and labels do not matter."""
        return (
            frozenset(self.states) == frozenset(other.states)
            and self.type == other.type
            and dict(self.labels) == dict(other.labels)
        )

    def matches(self, task: task_pb2.Task) -> bool:
        return (
            (not self.states or task.state in self.states)
            and (not self.type or task.type == self.type)
            and all(task.labels.get(key) == value for key, value in self.labels)
        )


@dataclass(frozen=True)
class Minted:
    """A real page token, the query it was minted for, and the page it leads to."""

    filters: Filters
    page_size: int
    token: str
    next_ids: tuple[str, ...]


FILTER_SAMPLES = (
    Filters(),
    Filters(labels=(("fuzz", "list"),)),
    Filters(states=(3,), labels=(("fuzz", "list"),)),
    Filters(states=(3, 4), type="echo"),
    Filters(type="fail_permanently", labels=(("n", "1"),)),
    Filters(states=(1,), labels=(("fuzz", "list"), ("n", "2"))),
)


@pytest.fixture(scope="module")
def minted(fuzz_server: ServerThread, fuzz_api: Api) -> Iterator[list[Minted]]:
    """Forty finished tasks and six delayed ones with labels, and the real
    tokens of their first pages under several filters and page sizes."""
    api = fuzz_api
    finished = []
    for n in range(40):
        kind = "echo" if n % 4 else "fail_permanently"
        finished.append(api.submit(kind, {"n": n}, labels={"fuzz": "list", "n": str(n % 3)}))
    delayed = [
        api.submit(
            "echo", {}, labels={"fuzz": "list", "n": "2"}, delay=duration_pb2.Duration(seconds=3600)
        )
        for _ in range(6)
    ]
    for task in finished:
        api.wait(task.id)
    tokens = []
    for filters in FILTER_SAMPLES:
        for size in (1, 2, 3, 7):
            first = api.stub.ListTasks(filters.request(size, ""), timeout=10)
            if not first.next_page_token:
                continue
            second = api.stub.ListTasks(filters.request(size, first.next_page_token), timeout=10)
            tokens.append(
                Minted(filters, size, first.next_page_token, tuple(t.id for t in second.tasks))
            )
    assert len(tokens) > 15
    yield tokens
    for task in delayed:
        api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)


filters_strategy = st.one_of(
    st.sampled_from(FILTER_SAMPLES),
    st.builds(
        Filters,
        states=st.lists(st.one_of(st.sampled_from(STATES), int32), max_size=4).map(tuple),
        type=st.one_of(
            st.sampled_from(["", "echo", "fail_permanently", "nope"]), st.text(max_size=20)
        ),
        labels=st.one_of(
            st.sampled_from([(), (("fuzz", "list"),), (("n", "1"),)]),
            st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3).map(
                lambda labels: tuple(sorted(labels.items()))
            ),
        ),
    ),
)
base64_text = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=80
)


@st.composite
def mutated(draw: st.DrawFn, token: str) -> str:
    """A real token with one edit of the kind a careless client or a forger makes."""
    index = draw(st.integers(0, len(token)))
    edit = draw(
        st.sampled_from(["replace", "delete", "insert", "cut", "pad", "extend", "case", "decoded"])
    )
    if edit == "replace" and index < len(token):
        return token[:index] + draw(st.characters()) + token[index + 1 :]
    if edit == "delete":
        return token[:index] + token[index + 1 :]
    if edit == "insert":
        return token[:index] + draw(st.text(min_size=1, max_size=3)) + token[index:]
    if edit == "cut":
        return token[:index]
    if edit == "pad":
        return token + "=" * draw(st.integers(1, 4))
    if edit == "extend":
        return token + draw(base64_text)
    if edit == "case":
        return token.swapcase()
    # The body decoded and re-encoded with a different cursor: no forger
    # knows the key, so the signature cannot match.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    body = raw[:-16].replace(b'"c":', b'"c":1', 1)
    return base64.urlsafe_b64encode(body + raw[-16:]).decode().rstrip("=")


def test_list_fuzz(fuzz_server: ServerThread, fuzz_api: Api, minted: list[Minted]) -> None:
    ran = 0

    @settings(FUZZ, max_examples=scaled(fuzz_server, LIST_EXAMPLES))
    @given(
        data=st.data(),
        token_kind=st.sampled_from(["none", "random", "base64", "real", "mutated", "mutated"]),
        source=st.sampled_from(minted),
        size=st.one_of(st.just(None), st.integers(-3, 60), int32),
        metadata=auth_metadata,
    )
    def list_tasks(
        data: st.DataObject,
        token_kind: str,
        source: Minted,
        size: int | None,
        metadata: Metadata,
    ) -> None:
        nonlocal ran
        ran += 1
        token = ""
        if token_kind == "random":
            token = data.draw(st.text(max_size=60), label="token")
        elif token_kind == "base64":
            token = data.draw(base64_text, label="token")
        elif token_kind == "real":
            token = source.token
        elif token_kind == "mutated":
            token = data.draw(mutated(source.token), label="token")
        # A real token goes back with its own filters most of the time.
        own = token_kind in ("real", "mutated") and data.draw(st.integers(0, 3), label="own") > 0
        filters = source.filters if own else data.draw(filters_strategy, label="filters")
        page_size = source.page_size if size is None else size
        request = filters.request(page_size, token)
        answer = answer_of(lambda: fuzz_api.stub.ListTasks(request, metadata=metadata, timeout=10))
        check_clean(answer)

        bad = set()
        if page_size < 0:
            bad.add("page_size")
        if any(state not in STATES for state in filters.states):
            bad.add("states")
        genuine = token == source.token and filters.same_query(source.filters)
        if token and not genuine:
            bad.add("page_token")  # unless a mutated token decodes to the real one
        if answer.code is Code.INVALID_ARGUMENT:
            assert answer.fields and answer.fields <= bad, answer
            return
        assert answer.code is Code.OK, answer
        assert not bad - {"page_token"}, answer
        tasks = list(answer.response.tasks)
        limit = 50 if page_size == 0 else min(page_size, 1000)
        assert len(tasks) <= limit
        assert all(filters.matches(task) for task in tasks), answer
        if token:
            # Only the real token, perhaps written differently, gets past the
            # signature: it must lead exactly where the real one leads.
            assert token_kind in ("real", "mutated"), answer
            assert filters.same_query(source.filters), answer
            ids = tuple(task.id for task in tasks)
            if page_size == source.page_size:
                assert ids == source.next_ids, answer
            else:  # the same listing, cut at another length
                common = min(len(ids), len(source.next_ids))
                assert ids[:common] == source.next_ids[:common], answer

    list_tasks()
    assert ran >= scaled(fuzz_server, LIST_EXAMPLES)
    assert_healthy(fuzz_server, fuzz_api)
