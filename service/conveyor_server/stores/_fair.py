"""The due tasks of one task type in a store of one process, in fair turns.

Highest priority first. Within a priority, tenants take turns (the one
served least recently first; one that had nothing due joins at the back),
within a tenant its concurrency keys take turns (tasks without a key form a
key of their own), and within a key tasks go in the order they became due.

Each turn is a deque of groups with something due, served from the front
and sent to the back: O(1) per task whatever the number of tenants and
keys. A key at its limit of running tasks is parked, out of its tenant's
turn, so that claims do not look at it again until one of its tasks ends.
"""

from __future__ import annotations

import heapq
from collections import deque

from conveyor_server.stores._limits import KeySlot, TypeGate
from conveyor_server.stores._records import State, TaskRecord

# (ticket, version, record): the ticket numbers entries in the order they
# became due, across types; an entry whose version no longer matches its
# record's is stale (the task was cancelled or queued again since) and is
# skipped when reached.
ReadyEntry = tuple[int, int, TaskRecord]


def _live(entry: ReadyEntry) -> bool:
    return entry[2].state is State.PENDING and entry[2].version == entry[1]


class _Key:
    """The due tasks of one key of one tenant, in order."""

    __slots__ = ("fifo", "key", "parked", "queued")

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.fifo: deque[ReadyEntry] = deque()
        # In its tenant's turn; a parked key is not, until unparked.
        self.queued = False
        self.parked = False


class _Tenant:
    """The keys of one tenant at one priority."""

    __slots__ = ("keys", "name", "queued", "turn")

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: dict[str | None, _Key] = {}
        self.turn: deque[_Key] = deque()
        self.queued = False


class _Level:
    """The tenants with due tasks of one priority."""

    __slots__ = ("priority", "queued", "tenants", "turn")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.tenants: dict[str, _Tenant] = {}
        self.turn: deque[_Tenant] = deque()
        # In the heap of priorities.
        self.queued = False


class FairQueue:
    """The due tasks of one type; `gate` holds the type's limits.

    A group leaves its turn, and its container, when found empty at the
    front (groups are never searched for), so a push or a pop costs a few
    dict and deque operations.
    """

    __slots__ = ("gate", "levels", "parked", "priorities")

    def __init__(self, gate: TypeGate) -> None:
        self.gate = gate
        self.levels: dict[int, _Level] = {}
        # Negated priorities of the levels in turn, highest first.
        self.priorities: list[int] = []
        self.parked: dict[KeySlot, list[tuple[_Level, _Tenant, _Key]]] = {}

    def push(self, entry: ReadyEntry) -> None:
        record = entry[2]
        level = self.levels.get(record.priority)
        if level is None:
            level = self.levels[record.priority] = _Level(record.priority)
        tenant = level.tenants.get(record.tenant)
        if tenant is None:
            tenant = level.tenants[record.tenant] = _Tenant(record.tenant)
        group = tenant.keys.get(record.concurrency_key)
        if group is None:
            group = tenant.keys[record.concurrency_key] = _Key(record.concurrency_key)
        group.fifo.append(entry)
        if not group.queued and not group.parked:
            self._enter(level, tenant, group)

    def head(self) -> tuple[int, int] | None:
        """(-priority, ticket) of the task whose turn it is, dropping stale
        entries and emptied groups, and parking keys at their limit."""
        priorities, levels = self.priorities, self.levels
        while priorities:
            level = levels[-priorities[0]]
            tenants = level.turn
            while tenants:
                tenant = tenants[0]
                keys = tenant.turn
                while keys:
                    group = keys[0]
                    fifo = group.fifo
                    while fifo and not _live(fifo[0]):
                        fifo.popleft()
                    if not fifo:
                        keys.popleft()
                        group.queued = False
                        del tenant.keys[group.key]
                    elif group.key is not None and self.gate.key_full(tenant.name, group.key):
                        keys.popleft()
                        group.queued = False
                        group.parked = True
                        slot = (tenant.name, group.key)
                        self.parked.setdefault(slot, []).append((level, tenant, group))
                    else:
                        return priorities[0], fifo[0][0]
                tenants.popleft()
                tenant.queued = False
                if not tenant.keys:
                    del level.tenants[tenant.name]
            heapq.heappop(priorities)
            level.queued = False
            if not level.tenants:
                del levels[level.priority]
        return None

    def pop(self) -> TaskRecord:
        """The record of the entry `head` found; its key and its tenant go
        to the back of their turns."""
        level = self.levels[-self.priorities[0]]
        tenants = level.turn
        keys = tenants[0].turn
        record = keys[0].fifo.popleft()[2]
        if len(keys) > 1:
            keys.rotate(-1)
        if len(tenants) > 1:
            tenants.rotate(-1)
        return record

    def has_due(self) -> bool:
        """Whether a task is due and its key not at its limit."""
        return self.head() is not None

    def unpark(self, slot: KeySlot) -> bool:
        """Put the parked groups of (tenant, key) back in turn; whether
        there were any."""
        parked = self.parked.pop(slot, None)
        if parked is None:
            return False
        for level, tenant, group in parked:
            group.parked = False
            self._enter(level, tenant, group)
        return True

    def unpark_all(self) -> None:
        for slot in list(self.parked):
            self.unpark(slot)

    def _enter(self, level: _Level, tenant: _Tenant, group: _Key) -> None:
        """Put a group at the back of its tenant's turn, and the tenant and
        the level in theirs if out."""
        group.queued = True
        tenant.turn.append(group)
        if not tenant.queued:
            tenant.queued = True
            level.turn.append(tenant)
            if not level.queued:
                level.queued = True
                heapq.heappush(self.priorities, -level.priority)
