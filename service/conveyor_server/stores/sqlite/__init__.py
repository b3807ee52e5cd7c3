"""`sqlite:///path`: one node, durable (see `store`)."""

from conveyor_server.stores.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
