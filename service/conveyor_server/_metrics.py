"""Prometheus metrics of one server or worker process, on an HTTP endpoint.

Counts and histograms are kept as plain dicts and lists, updated on the
event loop's thread without locks, and turned into metric families only when
Prometheus scrapes (from the HTTP server's thread, which copies each dict in
one step under the GIL). prometheus_client's own Counter and Histogram take
a lock per update: about 1.5 µs and 2.5 µs here, several times a task, where
these cost a few hundred nanoseconds.

Each `ServerMetrics` has its own `CollectorRegistry`, so several servers in
one process keep separate numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from conveyor_server._backlog_gauges import BacklogGauges
from conveyor_server.stores import State, TaskRecord, TaskStore

logger = logging.getLogger(__name__)

DEPTH_REFRESH_SECONDS = 1.0
# Tasks run from milliseconds to hours, and wait about as long.
TASK_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)
# A call is served in about a millisecond; the default buckets start at 5 ms.
RPC_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)

TASK_LABELS = ["type", "tenant"]
RPC_LABELS = ["method", "code"]
HTTP_LABELS = ["route", "status"]

# name (without _total), meaning
TASK_COUNTERS = (
    ("conveyor_tasks_submitted", "Tasks created by SubmitTask and BatchSubmitTasks."),
    ("conveyor_tasks_started", "Attempts started: tasks claimed to run in this process."),
    ("conveyor_tasks_succeeded", "Tasks that ended SUCCEEDED."),
    ("conveyor_tasks_failed", "Tasks that ended FAILED, with no attempt left or not retryable."),
    ("conveyor_tasks_cancelled", "Tasks that ended CANCELLED."),
    ("conveyor_tasks_retried", "Failed attempts (timeouts included) whose task waits for a retry."),
)


Key = tuple[str, ...]


class _Histogram:
    """Bucket counts and a sum per label set; cumulated at scrape time."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # Per label set: one count per bucket, then +Inf's, then the sum.
        self.series: dict[Key, list[float]] = {}

    def observe(self, key: Key, value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self, name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=labels)
        edges = [repr(float(bound)) for bound in self.bounds] + ["+Inf"]
        for key, counts in list(self.series.items()):
            counts = list(counts)
            buckets = []
            total = 0.0
            for edge, count in zip(edges, counts, strict=False):
                total += count
                buckets.append((edge, total))
            family.add_metric(list(key), buckets, counts[-1])
        return family


def _bump(counts: dict[Key, int], key: Key) -> None:
    counts[key] = counts.get(key, 0) + 1


def _counter(name: str, documentation: str, labels: list[str], counts: dict[Key, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in list(counts.items()):
        family.add_metric(list(key), value)
    return family


def _gauge(name: str, documentation: str, value: float | None) -> Metric:
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


def bind_host(host: str) -> str:
    """`[::]` as a socket address: without the brackets of a URL."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class ServerMetrics:
    """The metrics of one server or worker: a `TaskObserver` for the runner
    and the servicer, a collector for Prometheus, and its HTTP endpoint.

    >>> metrics = ServerMetrics()
    >>> port = await metrics.start("127.0.0.1", 9464, store, running=lambda: 0)
    >>> metrics.registry.get_sample_value("conveyor_tasks_running")
    """

    def __init__(self) -> None:
        # One dict per counter of TASK_COUNTERS, keyed by (type, tenant).
        self._task_counts: tuple[dict[Key, int], ...] = tuple({} for _ in TASK_COUNTERS)
        (
            self._submitted,
            self._started,
            self._succeeded,
            self._failed,
            self._cancelled,
            self._retried,
        ) = self._task_counts
        self._ended = {
            State.SUCCEEDED: self._succeeded,
            State.FAILED: self._failed,
            State.CANCELLED: self._cancelled,
            State.PENDING: self._retried,
        }
        self._task_seconds = _Histogram(TASK_BUCKETS)
        self._wait_seconds = _Histogram(TASK_BUCKETS)
        self._rpc_counts: dict[Key, int] = {}
        self._rpc_seconds = _Histogram(RPC_BUCKETS)
        self._http_counts: dict[Key, int] = {}
        self._http_seconds = _Histogram(RPC_BUCKETS)
        self._depth: int | None = None
        self._running: Callable[[], int] | None = None
        self._watchers: Callable[[], int] | None = None
        self._backlog: BacklogGauges | None = None
        self._http: WSGIServer | None = None
        self._http_thread: Thread | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)
        # process_* (CPU, memory, open files), python_gc_* and python_info,
        # each in this registry rather than the global one.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    # -- TaskObserver: called on the event loop -------------------------

    def tasks_submitted(self, records: Sequence[TaskRecord], now: float) -> None:
        seen: set[str] = set()
        for record in records:
            # A repeat of an idempotent submit returns the record an earlier
            # call created: older than `now` (stores keep it to a millisecond).
            if now - record.create_time > 0.001 or record.id in seen:
                continue
            seen.add(record.id)
            _bump(self._submitted, (record.type, record.tenant))

    def tasks_started(self, records: Sequence[TaskRecord], now: float) -> None:
        for record in records:
            _bump(self._started, (record.type, record.tenant))
            self._wait_seconds.observe((record.type,), max(0.0, now - record.scheduled_time))

    def attempts_ended(self, records: Sequence[TaskRecord], now: float) -> None:
        for record in records:
            counts = self._ended.get(record.state)
            if counts is None:
                continue
            _bump(counts, (record.type, record.tenant))
            if record.start_time is not None:
                self._task_seconds.observe((record.type,), max(0.0, now - record.start_time))

    def task_cancelled(self, record: TaskRecord) -> None:
        _bump(self._cancelled, (record.type, record.tenant))

    def rpc_handled(self, method: str, code: str, seconds: float | None) -> None:
        key = (method, code)
        _bump(self._rpc_counts, key)
        if seconds is not None:
            self._rpc_seconds.observe(key, seconds)

    def http_handled(self, route: str, status: int, seconds: float | None) -> None:
        key = (route, str(status))
        _bump(self._http_counts, key)
        if seconds is not None:
            self._http_seconds.observe(key, seconds)

    # -- Prometheus: called on the HTTP server's thread ---------------

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        for (name, documentation), counts in zip(TASK_COUNTERS, self._task_counts, strict=True):
            yield _counter(name, documentation, TASK_LABELS, counts)
        yield self._task_seconds.family(
            "conveyor_task_duration_seconds",
            "Time from the start to the end of an attempt, by task type.",
            ["type"],
        )
        yield self._wait_seconds.family(
            "conveyor_task_queue_wait_seconds",
            "Time from when a task was due (created, delay or retry backoff over) "
            "to the start of its attempt, by task type.",
            ["type"],
        )
        yield _gauge(
            "conveyor_queue_depth",
            "Unfinished (pending and running) tasks in the store, every process's; "
            f"refreshed every {DEPTH_REFRESH_SECONDS:g}s.",
            self._depth,
        )
        yield _gauge(
            "conveyor_tasks_running",
            "Attempts running in this process.",
            self._running() if self._running is not None else None,
        )
        yield _counter(
            "conveyor_rpcs_handled",
            "TaskService calls that ended, by method and gRPC status code.",
            RPC_LABELS,
            self._rpc_counts,
        )
        yield self._rpc_seconds.family(
            "conveyor_rpc_duration_seconds",
            "Time to serve a unary TaskService call, by method and gRPC status code.",
            RPC_LABELS,
        )
        yield _counter(
            "conveyor_http_requests_handled",
            "HTTP/JSON API requests that ended, by route and HTTP status.",
            HTTP_LABELS,
            self._http_counts,
        )
        yield self._http_seconds.family(
            "conveyor_http_request_duration_seconds",
            "Time to serve an HTTP/JSON API request (event streams excepted), "
            "by route and HTTP status.",
            HTTP_LABELS,
        )
        yield _gauge(
            "conveyor_watch_streams",
            "Open WatchTask and WatchTasks streams, gRPC and HTTP event streams alike.",
            self._watchers() if self._watchers is not None else None,
        )
        if self._backlog is not None:
            yield from self._backlog.families()

    # -- the endpoint ---------------------------------------------------

    async def start(
        self,
        host: str,
        port: int,
        store: TaskStore,
        *,
        running: Callable[[], int],
        watchers: Callable[[], int] | None = None,
    ) -> int:
        """Serve /metrics over HTTP on `host:port`; returns the bound port.

        `running` and `watchers` are read at each scrape, from the HTTP
        server's thread: they must only read a number.
        """
        self._running = running
        self._watchers = watchers
        self._backlog = BacklogGauges(store, asyncio.get_running_loop())
        try:
            self._http, self._http_thread = start_http_server(
                port, addr=bind_host(host), registry=self.registry
            )
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; stop what "
                "holds the port, or give another --metrics-port (CONVEYOR_METRICS_PORT)"
            ) from exc
        self._refresher = asyncio.create_task(
            self._refresh_depth(store), name="conveyor-metrics-depth"
        )
        bound = int(self._http.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    async def _refresh_depth(self, store: TaskStore) -> None:
        while True:
            try:
                self._depth = await store.depth()
            except Exception:
                # The runner reports an unreachable store; the gauge keeps its
                # last value.
                logger.debug("could not read the queue depth", exc_info=True)
            await asyncio.sleep(DEPTH_REFRESH_SECONDS)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._http is not None:
            http, self._http = self._http, None
            # shutdown() waits for the serving loop's next poll, up to 0.5 s.
            await asyncio.to_thread(http.shutdown)
            http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(1.0)
