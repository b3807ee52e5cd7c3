"""Choosing a store by URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor_server._config import ServerConfig
from conveyor_server._memory_store import MemoryStore
from conveyor_server._store import TaskStore

SUPPORTED = ("memory://",)


def open_store(config: ServerConfig) -> TaskStore:
    scheme = urlsplit(config.store).scheme
    if scheme == "memory":
        return MemoryStore(max_queue=config.max_queue, retention_count=config.retention_count)
    raise ValueError(f"unsupported store URL {config.store!r}; supported: {', '.join(SUPPORTED)}")
