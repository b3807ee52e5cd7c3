"""The per-tenant queue quota of the in-memory store."""

from __future__ import annotations

from collections.abc import Iterable

from conveyor_server.stores._errors import QueueFull


class TenantDepths:
    """Unfinished tasks per tenant, counted only when there is a quota."""

    __slots__ = ("_depth", "quota")

    def __init__(self, quota: int | None) -> None:
        self.quota = quota
        self._depth: dict[str, int] = {}

    def check(self, tenants: Iterable[str]) -> None:
        """Raise QueueFull when one more task of each of `tenants` would
        take its tenant past the quota."""
        if self.quota is None:
            return
        wanted: dict[str, int] = {}
        for tenant in tenants:
            wanted[tenant] = wanted.get(tenant, 0) + 1
        for tenant, count in wanted.items():
            depth = self._depth.get(tenant, 0)
            if depth + count > self.quota:
                raise QueueFull(depth, self.quota, tenant)

    def count(self, tenant: str, delta: int) -> None:
        if self.quota is None:
            return
        depth = self._depth.get(tenant, 0) + delta
        if depth:
            self._depth[tenant] = depth
        else:
            self._depth.pop(tenant, None)
