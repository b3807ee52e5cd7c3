"""The backlog gauges on the metrics endpoint: the store's unfinished tasks
per task type and tenant, every process's, which autoscalers (KEDA, an HPA
through prometheus-adapter) size workers on.

They are read from the store when Prometheus scrapes, on the HTTP server's
thread, by running `TaskStore.backlog` on the event loop; one read serves
every scrape within `BACKLOG_CACHE_SECONDS`, so that many scrapers (each
replica's Prometheus, KEDA's own) cost the store one read a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from conveyor_server.stores import BacklogGauge, TaskStore

logger = logging.getLogger(__name__)

BACKLOG_CACHE_SECONDS = 1.0
# A scrape waits this long for the store, then goes without the gauges.
BACKLOG_READ_TIMEOUT_SECONDS = 5.0
BACKLOG_LABELS = ["type", "tenant"]


class BacklogGauges:
    """Reads the store's backlog for scrapes, at most once per cache period."""

    def __init__(
        self,
        store: TaskStore,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._loop = loop
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._gauges: list[BacklogGauge] = []

    def read(self) -> tuple[float, list[BacklogGauge]]:
        """The backlog and when it was read: the cached one if fresh, else
        read now (concurrent scrapes wait for one read). Call from a thread
        other than the event loop's."""
        if _running_loop() is self._loop:
            raise RuntimeError("the backlog is read off the event loop, which it would block")
        with self._lock:
            now = self._clock()
            if self._read_at is None or not 0 <= now - self._read_at < BACKLOG_CACHE_SECONDS:
                future = asyncio.run_coroutine_threadsafe(self._store.backlog(now), self._loop)
                self._gauges = future.result(BACKLOG_READ_TIMEOUT_SECONDS)
                self._read_at = now
            return self._read_at, self._gauges

    def families(self) -> Iterator[Metric]:
        """The four gauge families; none when the store cannot be read (the
        runner reports an unreachable store), so that an autoscaler sees
        the series missing rather than a false zero."""
        try:
            read_at, gauges = self.read()
        except Exception:
            logger.debug("could not read the backlog", exc_info=True)
            return
        families = (
            GaugeMetricFamily(
                "conveyor_backlog_pending",
                "PENDING tasks in the store, delayed and waiting for dependencies "
                "included, by task type and tenant.",
                labels=BACKLOG_LABELS,
            ),
            GaugeMetricFamily(
                "conveyor_backlog_due",
                "PENDING tasks that are due now (a worker could start them but for "
                "the type's limits), by task type and tenant.",
                labels=BACKLOG_LABELS,
            ),
            GaugeMetricFamily(
                "conveyor_backlog_running",
                "RUNNING tasks in the store, every process's, by task type and tenant.",
                labels=BACKLOG_LABELS,
            ),
            GaugeMetricFamily(
                "conveyor_backlog_oldest_due_age_seconds",
                "How long the longest-waiting due task has been due, by task type and "
                "tenant (0 when none is due).",
                labels=BACKLOG_LABELS,
            ),
        )
        pending, due, running, age = families
        for gauge in gauges:
            labels = [gauge.type, gauge.tenant]
            pending.add_metric(labels, gauge.pending)
            due.add_metric(labels, gauge.due)
            running.add_metric(labels, gauge.running)
            oldest = gauge.oldest_due_time
            age.add_metric(labels, 0.0 if oldest is None else max(0.0, read_at - oldest))
        yield from families


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
