"""Task types across processes, with in-process servers on the local Redis:
workers say which types they serve, API replicas accept those, payloads are
checked where the handler code is, and handlers see their tenant."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from conveyor import Client, InvalidArgument, TaskState
from conveyor_server import HandlerRegistry, InvalidPayload, TaskContext
from tests.support.server import ServerThread, test_config

render_registry = HandlerRegistry()


def _needs_frames(payload: Mapping[str, Any]) -> None:
    if not isinstance(payload.get("frames"), int):
        raise InvalidPayload('"frames" must be a whole number')


@render_registry.task("render_video", validate=_needs_frames, example={"frames": 24})
def render_video(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Renders a video.

    Longer notes that ListTaskTypes leaves out."""
    return {"frames": payload["frames"], "tenant": ctx.tenant}


@pytest.fixture
def started() -> Iterator[Callable[..., ServerThread]]:
    threads: list[ServerThread] = []

    def start(registry: HandlerRegistry | None = None, **overrides: Any) -> ServerThread:
        thread = ServerThread(test_config(**overrides), registry or HandlerRegistry()).start()
        threads.append(thread)
        return thread

    yield start
    for thread in reversed(threads):
        thread.stop()


def test_an_unserved_type_is_queued_with_the_flag_and_runs_once_a_worker_serves_it(
    redis_url: str, started: Callable[..., ServerThread]
) -> None:
    api = started(store=redis_url, workers=0, accept_unserved_types=True)
    with Client(api.address) as client:
        assert "render_video" not in {t.name for t in client.task_types()}
        # Nobody has the code: the payload check waits for the worker.
        handle = client.submit("render_video", {"frames": 3})
        bad = client.submit("render_video", {"frames": "many"}, max_attempts=3)
        waiting = client.get(handle.id)
        assert waiting.state is TaskState.PENDING
        # Such a task says why it waits, wherever it is read.
        why = "waiting for a worker: no live worker serves task type 'render_video'"
        assert handle.task.progress.message == why
        assert waiting.progress.message == why
        assert next(iter(client.watch(handle.id))).progress.message == why
        listed_waiting = {t.id: t for t in client.list(type="render_video")}
        assert listed_waiting[handle.id].progress.message == why

        worker = started(render_registry, store=redis_url, workers=2)
        done = client.wait(handle.id, timeout=20)
        refused = client.wait(bad.id, timeout=20)
        types = {t.name: t for t in client.task_types()}
        [listed] = client.workers()

    assert done.state is TaskState.SUCCEEDED
    assert done.result == {"frames": 3, "tenant": ""}
    assert "waiting for a worker" not in done.progress.message
    assert refused.state is TaskState.FAILED
    assert refused.error is not None and refused.error.code == "INVALID_PAYLOAD"
    assert refused.error.message == '"frames" must be a whole number'
    assert refused.attempt == 1
    # The API has no code for the type: what it tells comes from the worker.
    assert types["render_video"].description == "Renders a video."
    assert types["render_video"].example_payload == {"frames": 24}
    assert types["render_video"].workers == 1
    # The API replica's own handlers are served too, by no worker.
    assert types["sleep"].workers == 1  # the worker has the built-ins
    assert "render_video" in listed.task_types
    assert worker.server is not None and listed.id == worker.server.engine.presence.id  # type: ignore[union-attr]


def test_a_stopped_worker_no_longer_serves_its_types(
    redis_url: str, started: Callable[..., ServerThread]
) -> None:
    api = started(store=redis_url, workers=0)
    worker = ServerThread(test_config(store=redis_url, workers=1), render_registry).start()
    with Client(api.address) as client:
        try:
            client.submit("render_video", {"frames": 1}).wait(timeout=20)
        finally:
            worker.stop()
        assert client.workers() == []
        with pytest.raises(InvalidArgument) as refused:
            client.submit("render_video", {"frames": 1})
    assert "no live worker serves task type 'render_video'" in refused.value.message


def test_the_api_checks_payloads_of_the_types_it_has_code_for(
    redis_url: str, started: Callable[..., ServerThread]
) -> None:
    api = started(render_registry, store=redis_url, workers=0)
    with Client(api.address) as client, pytest.raises(InvalidArgument) as refused:
        client.submit("render_video", {"frames": "many"})
    assert '"frames" must be a whole number' in refused.value.message


def test_handlers_see_their_tenant(
    redis_url: str, started: Callable[..., ServerThread], tmp_path: Any
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("token-of-team-a-0123456789abcdef team-a\n")
    server = started(render_registry, store=redis_url, auth_tokens_file=str(tokens))
    with Client(server.address, token="token-of-team-a-0123456789abcdef") as client:
        task = client.submit("render_video", {"frames": 2}).wait(timeout=20)
    assert task.result == {"frames": 2, "tenant": "team-a"}
