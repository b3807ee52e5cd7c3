"""The open watch streams of a server, against --max-watchers and the
per-tenant quota: WatchTask and WatchTasks streams (gRPC or HTTP) count
alike."""

from __future__ import annotations

import grpc

from conveyor_server._errors import ServiceError


class WatcherSlots:
    """Counts open streams; `take` refuses one over a limit with
    RESOURCE_EXHAUSTED and a message that says what to do."""

    def __init__(self, max_watchers: int, max_per_tenant: int | None = None) -> None:
        self.max_watchers = max_watchers
        self.max_per_tenant = max_per_tenant
        self.open = 0
        # Open streams per tenant, kept only when there is a quota.
        self._tenants: dict[str, int] = {}

    def take(self, tenant: str, instead: str) -> None:
        """Count one more stream of `tenant`, or refuse it; `instead` names
        what the client can do rather than watch (e.g. "poll with GetTask")."""
        self.check(tenant, instead)
        if self.max_per_tenant is not None:
            self._tenants[tenant] = self._tenants.get(tenant, 0) + 1
        self.open += 1

    def check(self, tenant: str, instead: str) -> None:
        """Refuse, as `take` would, a stream there is no room for."""
        if self.open >= self.max_watchers:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many open watch streams ({self.max_watchers}); "
                f"close some, {instead}, or raise --max-watchers",
            )
        quota = self.max_per_tenant
        if quota is not None and self._tenants.get(tenant, 0) >= quota:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"tenant {tenant!r} has {quota} open watch streams, its quota on this "
                f"server; close some, {instead}, or raise --max-watchers-per-tenant",
            )

    def give_back(self, tenant: str) -> None:
        self.open -= 1
        if self.max_per_tenant is not None:
            left = self._tenants[tenant] - 1
            if left:
                self._tenants[tenant] = left
            else:
                del self._tenants[tenant]
