"""Prometheus metrics: a real server, a real client, the real HTTP endpoint."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import conveyor
from conveyor import Client, TaskState
from conveyor_server import ConveyorWorker
from conveyor_server._backlog_gauges import BacklogGauges
from conveyor_server.stores import BacklogGauge, NewTask, TaskStore, open_store
from tests.support.server import ServerThread, free_port, test_config, test_registry

pytestmark = pytest.mark.slow

TOKEN = "metrics-test-token-0123456789"
TENANT = "acme"
TASK_COUNTERS = ("submitted", "started", "succeeded", "failed", "cancelled", "retried")


def scrape(port: int) -> dict[str, Metric]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The value of one sample, 0 when the series does not exist (yet)."""
    family_name = sample
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in families:
            family_name = sample[: -len(suffix)]
    family = families.get(family_name)
    if family is None:
        raise AssertionError(f"no metric family {family_name}; have {sorted(families)}")
    for found in family.samples:
        if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
            return float(found.value)
    return 0.0


def eventually(
    port: int, check: Callable[[dict[str, Metric]], bool], timeout: float = 10
) -> dict[str, Metric]:
    deadline = time.monotonic() + timeout
    while True:
        families = scrape(port)
        if check(families):
            return families
        if time.monotonic() > deadline:
            raise AssertionError("the metrics never matched")
        time.sleep(0.05)


@pytest.fixture
def metrics_server(make_server: Callable[..., ServerThread]) -> tuple[ServerThread, int]:
    """A server with metrics on and one tenant, so the tenant label shows."""
    thread = make_server(metrics_port=free_port(), auth_tokens=f"{TOKEN}={TENANT}")
    assert thread.server is not None and thread.server.metrics_port is not None
    return thread, thread.server.metrics_port


@pytest.fixture
def client(metrics_server: tuple[ServerThread, int]) -> Iterator[Client]:
    with Client(metrics_server[0].address, token=TOKEN) as sdk:
        yield sdk


def test_task_outcomes_are_counted_by_type_and_tenant(
    metrics_server: tuple[ServerThread, int], client: Client
) -> None:
    _, port = metrics_server
    for i in range(3):
        assert client.submit("echo", {"i": i}).result(timeout=10) == {"i": i}
    failing = client.submit("fail", {}, max_attempts=2)
    assert failing.wait(timeout=10).state is TaskState.FAILED
    running = client.submit("wait_for_cancel", {"seconds": 30})
    while running.get().state is not TaskState.RUNNING:
        time.sleep(0.01)
    running.cancel()
    assert running.wait(timeout=10).state is TaskState.CANCELLED
    delayed = client.submit("echo", {}, delay=60)
    delayed.cancel()

    families = eventually(
        port,
        lambda f: value(f, "conveyor_tasks_cancelled_total", type="wait_for_cancel") == 1,
    )
    # submitted, started, succeeded, failed, cancelled, retried
    expected = {
        "echo": (4, 3, 3, 0, 1, 0),
        "fail": (1, 2, 0, 1, 0, 1),
        "wait_for_cancel": (1, 1, 0, 0, 1, 0),
    }
    for task_type, counts in expected.items():
        found = tuple(
            value(families, f"conveyor_tasks_{name}_total", type=task_type, tenant=TENANT)
            for name in TASK_COUNTERS
        )
        assert found == counts, task_type
    # One duration per attempt, one queue wait per start.
    for task_type, attempts in (("echo", 3), ("fail", 2), ("wait_for_cancel", 1)):
        for histogram in ("conveyor_task_duration_seconds", "conveyor_task_queue_wait_seconds"):
            assert value(families, histogram + "_count", type=task_type) == attempts
            assert value(families, histogram + "_bucket", type=task_type, le="+Inf") == attempts
    assert value(families, "conveyor_task_duration_seconds_sum", type="echo") < 3.0
    assert value(families, "conveyor_task_duration_seconds_sum", type="wait_for_cancel") > 0


def test_idempotent_repeats_are_not_counted_as_new_tasks(
    metrics_server: tuple[ServerThread, int], client: Client
) -> None:
    _, port = metrics_server
    first = client.submit("echo", {"n": 1}, idempotency_key="once")
    first.wait(timeout=10)
    again = client.submit("echo", {"n": 1}, idempotency_key="once")
    assert again.id == first.id
    client.submit_batch([conveyor.TaskSpec("echo", {"n": 2}, idempotency_key="twice")] * 3)
    families = scrape(port)
    assert value(families, "conveyor_tasks_submitted_total", type="echo", tenant=TENANT) == 2


def test_rpcs_are_counted_and_timed_by_method_and_code(
    metrics_server: tuple[ServerThread, int], client: Client
) -> None:
    _, port = metrics_server
    with pytest.raises(conveyor.TaskNotFound):
        client.get("no-such-task")
    with pytest.raises(conveyor.InvalidArgument):
        client.submit("no_such_type", {})
    handle = client.submit("echo", {})
    client.get(handle.id)
    client.get(handle.id)
    with pytest.raises(conveyor.TaskNotFound):
        client.cancel("no-such-task")

    families = scrape(port)
    rpcs = "conveyor_rpcs_handled_total"
    assert value(families, rpcs, method="GetTask", code="NOT_FOUND") == 1
    assert value(families, rpcs, method="GetTask", code="OK") == 2
    assert value(families, rpcs, method="SubmitTask", code="INVALID_ARGUMENT") == 1
    assert value(families, rpcs, method="SubmitTask", code="OK") == 1
    assert value(families, rpcs, method="CancelTask", code="NOT_FOUND") == 1
    latency = "conveyor_rpc_duration_seconds"
    assert value(families, latency + "_count", method="GetTask", code="OK") == 2
    assert value(families, latency + "_count", method="GetTask", code="NOT_FOUND") == 1
    # Buckets are cumulative and end at the count.
    buckets = [
        s.value
        for s in families[latency].samples
        if s.name == latency + "_bucket" and s.labels["method"] == "GetTask"
        if s.labels["code"] == "OK"
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 2
    assert 0 < value(families, latency + "_sum", method="GetTask", code="OK") < 2


def test_watch_streams_are_gauged_and_counted(
    metrics_server: tuple[ServerThread, int], client: Client
) -> None:
    _, port = metrics_server
    handle = client.submit("wait_for_cancel", {"seconds": 30})
    streams = [handle.watch(), handle.watch()]
    for stream in streams:
        next(stream)
    eventually(port, lambda f: value(f, "conveyor_watch_streams") == 2)
    eventually(port, lambda f: value(f, "conveyor_tasks_running") == 1)
    eventually(port, lambda f: value(f, "conveyor_queue_depth") == 1)

    handle.cancel()
    for stream in streams:
        assert [task.state for task in stream][-1] is TaskState.CANCELLED
    families = eventually(port, lambda f: value(f, "conveyor_watch_streams") == 0)
    assert value(families, "conveyor_rpcs_handled_total", method="WatchTask", code="OK") == 2
    eventually(port, lambda f: value(f, "conveyor_queue_depth") == 0)
    assert value(families, "conveyor_tasks_running") == 0

    with pytest.raises(conveyor.TaskNotFound):
        next(client.watch("no-such-task"))
    families = scrape(port)
    assert value(families, "conveyor_rpcs_handled_total", method="WatchTask", code="NOT_FOUND") == 1
    assert value(families, "conveyor_watch_streams") == 0


def test_each_server_has_its_own_numbers(make_server: Callable[..., ServerThread]) -> None:
    first = make_server(metrics_port=free_port())
    second = make_server(metrics_port=free_port())
    with Client(first.address) as sdk:
        sdk.submit("echo", {}).result(timeout=10)
    assert first.server is not None and second.server is not None
    assert first.server.metrics is not None and second.server.metrics is not None
    registries = (first.server.metrics.registry, second.server.metrics.registry)
    sample = "conveyor_tasks_succeeded_total"
    assert registries[0].get_sample_value(sample, {"type": "echo", "tenant": ""}) == 1
    assert registries[1].get_sample_value(sample, {"type": "echo", "tenant": ""}) is None
    # The standard process metrics come along.
    assert "process_cpu_seconds" in scrape(first.server.metrics_port or 0)


def test_metrics_are_off_by_default(server: ServerThread) -> None:
    assert server.server is not None
    assert server.server.metrics is None and server.server.metrics_port is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metrics_port": 70000}, "metrics_port must be 0-65535"),
        ({"log_format": "xml"}, "log_format must be text or json"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        test_config(**overrides)


def test_a_worker_process_serves_its_task_metrics(redis_url: str) -> None:
    port = free_port()
    worker = ConveyorWorker(
        test_config(metrics_port=port, workers=2, store=redis_url), registry=test_registry
    )

    async def run() -> None:
        await worker.start()
        try:
            # Tasks submitted elsewhere: another instance on the same Redis.
            producer = open_store(test_config(store=redis_url))
            new = NewTask("echo", b"", None, 1, 0, None, 0.0, None, None, tenant="beta")
            await producer.create([new, new], time.time())
            await producer.close()
            deadline = time.monotonic() + 10
            while True:
                families = await asyncio.to_thread(scrape, port)
                done = "conveyor_tasks_succeeded_total"
                if value(families, done, type="echo", tenant="beta") == 2:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert value(families, "conveyor_tasks_started_total", type="echo") == 2
            assert "conveyor_watch_streams" not in {
                s.name for family in families.values() for s in family.samples
            }
        finally:
            await worker.stop(0.5)

    asyncio.run(run())
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_calls_refused_by_authentication_are_counted(
    make_server: Callable[..., ServerThread], tmp_path: Any
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("a-token-of-team-a-0123456789 team-a\n")
    port = free_port()
    server = make_server(metrics_port=port, auth_tokens_file=str(tokens))
    with Client(server.address, token="not-a-token-of-anyone-000") as stranger:
        with pytest.raises(conveyor.Unauthenticated):
            stranger.get("some-task")
        with pytest.raises(conveyor.Unauthenticated):
            list(stranger.watch("some-task"))
    with Client(server.address, token="a-token-of-team-a-0123456789") as member:
        member.submit("echo", {})

    families = scrape(port)
    rpcs = "conveyor_rpcs_handled_total"
    assert value(families, rpcs, method="GetTask", code="UNAUTHENTICATED") == 1
    assert value(families, rpcs, method="WatchTask", code="UNAUTHENTICATED") == 1
    assert value(families, rpcs, method="SubmitTask", code="OK") == 1


# -- the backlog gauges, read from the store -----------------------------------


def backlog(families: dict[str, Metric], task_type: str) -> tuple[float, ...]:
    """pending, due, running and the oldest due age of one type of TENANT."""
    return tuple(
        value(families, f"conveyor_backlog_{name}", type=task_type, tenant=TENANT)
        for name in ("pending", "due", "running", "oldest_due_age_seconds")
    )


def test_backlog_gauges_come_from_the_store(
    make_server: Callable[..., ServerThread], store_url: str
) -> None:
    thread = make_server(
        metrics_port=free_port(), auth_tokens=f"{TOKEN}={TENANT}", workers=1, store=store_url
    )
    port = thread.server.metrics_port if thread.server is not None else None
    assert port is not None
    with Client(thread.address, token=TOKEN) as sdk:
        # The only worker thread runs the first; the second waits, due.
        first = sdk.submit("wait_for_cancel", {"seconds": 60})
        next(t for t in first.watch() if t.state is TaskState.RUNNING)
        second = sdk.submit("wait_for_cancel", {"seconds": 60})
        sdk.submit("echo", {}, delay=3600)
        families = eventually(port, lambda f: backlog(f, "echo")[0] == 1)
        pending, due, running, age = backlog(families, "wait_for_cancel")
        assert (pending, due, running) == (1, 1, 1)
        assert age >= 0
        assert backlog(families, "echo") == (1, 0, 0, 0)
        for handle in (second, first):
            handle.cancel()
        eventually(port, lambda f: backlog(f, "wait_for_cancel")[:3] == (0, 0, 0))


class _CountingStore:
    def __init__(self) -> None:
        self.reads = 0

    async def backlog(self, now: float) -> list[BacklogGauge]:
        self.reads += 1
        return [BacklogGauge("echo", "", 2, 1, 0, now - 5)]


def test_scrapes_within_a_second_share_one_read() -> None:
    store = _CountingStore()
    clock = [1000.0]
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        gauges = BacklogGauges(cast(TaskStore, store), loop, clock=lambda: clock[0])
        assert gauges.read() == (1000.0, [BacklogGauge("echo", "", 2, 1, 0, 995.0)])
        clock[0] += 0.9
        gauges.read()
        assert store.reads == 1
        clock[0] += 0.2
        ages = [m for m in gauges.families() if m.name.endswith("age_seconds")]
        assert store.reads == 2
        assert [s.value for s in ages[0].samples] == [5.0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
