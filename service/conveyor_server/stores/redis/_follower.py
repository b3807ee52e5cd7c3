"""How a RedisStore hears what other processes ask of its runner: its
pub/sub channels for cancel requests and new work. (Changes of tasks come
through the change feed stream, `_feed_stream`.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from conveyor_server.stores._protocol import StoreListener
from conveyor_server.stores.redis._connection import DOWN

logger = logging.getLogger("conveyor_server.stores.redis.store")

_DOWN = DOWN


class ChangeFollower:
    """Follows the channels `P:cancel` and `P:work` for as long as its store
    is open: tells the store's listener of cancel requests and of work
    other processes made. Reconnects with backoff, and after each
    (re)connect catches up on what it may have missed."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        where: str,
        owner: bytes,
        cancels_told: set[str],
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._where = where
        self._owner_bytes = owner
        # Cancel requests this process made and already told its listener
        # of; their echo on the cancel channel is not passed on again.
        self._cancels_told = cancels_told
        self._cancel_channel = f"{prefix}:cancel".encode()
        self._work_channel = f"{prefix}:work".encode()
        self.listener: StoreListener | None = None
        self._listening: asyncio.Task[None] | None = None
        self._closed = False

    async def close(self, wait_seconds: float) -> None:
        self._closed = True
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.wait([self._listening], timeout=wait_seconds)
        self._listening = None

    def start(self) -> None:
        if self._closed or (self._listening is not None and not self._listening.done()):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first call on a loop
        self._listening = asyncio.create_task(self._listen(), name="conveyor-redis-listener")

    async def _listen(self) -> None:
        """Follow the channels for as long as the store is open, reconnecting
        with backoff; after each (re)connect, catch up on what may have been
        missed meanwhile."""
        channels = (self._cancel_channel, self._work_channel)
        delay = 0.0
        outage = False
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(*channels)
                confirmed = 0
                while confirmed < len(channels):
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                    else:
                        self._on_message(message)
                if outage:
                    logger.info("%s is reachable again; following its changes", self._where)
                outage = False
                delay = 0.0
                # Everything published while not subscribed is lost: look
                # for work.
                if self.listener is not None:
                    self.listener.work_available()
                self._cancels_told.clear()
                # Blocking reads: a read with a timeout can swallow a cancel
                # that arrives as it times out. A dead Redis closes the
                # socket; a vanished host is found by TCP keepalive.
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None:
                        self._on_message(message)
                return
            except asyncio.CancelledError:
                raise
            except (*_DOWN, RedisError) as exc:
                if not outage:
                    logger.warning(
                        "lost %s pub/sub (%s); reconnecting, meanwhile workers poll for work",
                        self._where,
                        exc,
                    )
                outage = True
            except Exception:
                logger.exception("store listener failed; restarting it")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            delay = min(max(delay * 2, 0.1), 5.0)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _on_message(self, message: Mapping[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"]
        data: bytes = message["data"]
        if channel == self._cancel_channel:
            task_id = data.decode()
            if task_id in self._cancels_told:
                self._cancels_told.discard(task_id)
            elif self.listener is not None:
                self.listener.cancel_requested(task_id)
        elif (
            channel == self._work_channel
            and self.listener is not None
            # Work this process made was announced to its runner already.
            and data != self._owner_bytes
        ):
            self.listener.work_available()
