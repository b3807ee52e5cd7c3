"""The listing indexes of the in-memory store: each tenant's records by
creation, by type, by label and by state, so that the first page of a filter
costs the same with ten tasks held or two million.

A ListTasks query reads the narrowest index its filter names, newest first,
and checks the rest of the filter on each record it reads. Type and labels
never change after creation, so their indexes are append-only creation
orders; a state changes, so each state keeps its records in buckets of
consecutive creation numbers.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections.abc import Collection, Iterator, Mapping
from typing import TypeVar

from conveyor_server.stores._order import CreationOrder
from conveyor_server.stores._records import ListQuery, State, TaskRecord

__all__ = ["ListIndex", "StateOrder"]

_Key = TypeVar("_Key")

# Creation numbers per bucket of a state's index: a page sorts one bucket.
_BUCKET_BITS = 10


class StateOrder:
    """The records in one state, newest first on demand: a dict per bucket of
    2**_BUCKET_BITS consecutive creation numbers, and the sorted list of
    buckets that hold any. Adding and removing cost O(1) but for a bucket
    that appears or empties."""

    __slots__ = ("_buckets", "_ids", "count")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[int, TaskRecord]] = {}
        self._ids: list[int] = []
        self.count = 0

    def add(self, record: TaskRecord) -> None:
        bucket_id = record.seq >> _BUCKET_BITS
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = {}
            insort(self._ids, bucket_id)
        bucket[record.seq] = record
        self.count += 1

    def remove(self, record: TaskRecord) -> None:
        bucket_id = record.seq >> _BUCKET_BITS
        bucket = self._buckets[bucket_id]
        del bucket[record.seq]
        self.count -= 1
        if not bucket:
            del self._buckets[bucket_id]
            del self._ids[bisect_left(self._ids, bucket_id)]

    def records(self) -> Iterator[TaskRecord]:
        """The records, in no order."""
        for bucket in list(self._buckets.values()):
            yield from list(bucket.values())

    def newest_first(self, before: int | None) -> Iterator[TaskRecord]:
        """The records created before seq `before` (all when None), newest
        first. Changes while iterating are not seen by buckets already read."""
        ids = self._ids
        end = len(ids) if before is None else bisect_right(ids, (before - 1) >> _BUCKET_BITS)
        for i in range(end - 1, -1, -1):
            if i >= len(ids):  # buckets emptied since the last page
                continue
            bucket = self._buckets.get(ids[i])
            if bucket is None:
                continue
            for seq in sorted(bucket, reverse=True):
                if before is not None and seq >= before:
                    continue
                record = bucket.get(seq)
                if record is not None:
                    yield record


def _merged(orders: list[StateOrder], before: int | None) -> Iterator[TaskRecord]:
    if len(orders) == 1:
        return orders[0].newest_first(before)
    return heapq.merge(
        *(order.newest_first(before) for order in orders), key=lambda r: r.seq, reverse=True
    )


class ListIndex:
    """Every record a store holds, per tenant: by creation, by type, by
    label and by state."""

    __slots__ = ("_labels", "_states", "_tenants", "_types")

    def __init__(self) -> None:
        self._tenants: dict[str, CreationOrder] = {}
        self._types: dict[tuple[str, str], CreationOrder] = {}
        self._labels: dict[tuple[str, str, str], CreationOrder] = {}
        self._states: dict[tuple[str, State], StateOrder] = {}

    def add(self, record: TaskRecord) -> None:
        """A record newer than every other, in its current state."""
        tenant = record.tenant
        _order(self._tenants, tenant).append(record)
        _order(self._types, (tenant, record.type)).append(record)
        if record.labels:
            for key, value in record.labels.items():
                _order(self._labels, (tenant, key, value)).append(record)
        self._state(tenant, record.state).add(record)

    def move(self, record: TaskRecord, state: State) -> None:
        """Call before the record's state changes to `state`."""
        if record.state is state:
            return
        self._states[(record.tenant, record.state)].remove(record)
        self._state(record.tenant, state).add(record)

    def drop(self, record: TaskRecord, live: Mapping[str, TaskRecord]) -> None:
        """Call once the record has left `live`."""
        tenant = record.tenant
        _dropped(self._tenants, tenant, live)
        _dropped(self._types, (tenant, record.type), live)
        if record.labels:
            for key, value in record.labels.items():
                _dropped(self._labels, (tenant, key, value), live)
        slot = (tenant, record.state)
        order = self._states[slot]
        order.remove(record)
        if not order.count:
            del self._states[slot]

    def in_states(self, states: Collection[State]) -> Iterator[TaskRecord]:
        """Every record in one of `states`, of every tenant, in no order."""
        for (_, state), order in list(self._states.items()):
            if state in states:
                yield from order.records()

    def _state(self, tenant: str, state: State) -> StateOrder:
        order = self._states.get((tenant, state))
        if order is None:
            order = self._states[(tenant, state)] = StateOrder()
        return order

    def candidates(self, query: ListQuery, live: Mapping[str, TaskRecord]) -> Iterator[TaskRecord]:
        """Records of the query's tenant, newest first, created before its
        cursor, from the narrowest index the query names: every record that
        matches is among them, but not every one of them matches."""
        tenant, before = query.tenant, query.before_seq
        sizes: list[tuple[int, int]] = []  # (size, choice)
        by_creation: list[CreationOrder] = []
        whole = self._tenants.get(tenant)
        if whole is None:
            return iter(())
        by_creation.append(whole)
        sizes.append((whole.live, 0))
        if query.type:
            typed = self._types.get((tenant, query.type))
            if typed is None:
                return iter(())
            by_creation.append(typed)
            sizes.append((typed.live, len(by_creation) - 1))
        for key, value in query.labels:
            labelled = self._labels.get((tenant, key, value))
            if labelled is None:
                return iter(())
            by_creation.append(labelled)
            sizes.append((labelled.live, len(by_creation) - 1))
        if query.states:
            orders = [
                order
                for state in set(query.states)
                if (order := self._states.get((tenant, state))) is not None
            ]
            if not orders:
                return iter(())
            if sum(order.count for order in orders) < min(sizes)[0]:
                return _merged(orders, before)
        return by_creation[min(sizes)[1]].newest_first(before, live)


def _order(index: dict[_Key, CreationOrder], key: _Key) -> CreationOrder:
    order = index.get(key)
    if order is None:
        order = index[key] = CreationOrder()
    return order


def _dropped(index: dict[_Key, CreationOrder], key: _Key, live: Mapping[str, TaskRecord]) -> None:
    order = index[key]
    order.dropped(live)
    if not order.live:
        del index[key]
