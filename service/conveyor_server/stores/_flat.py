"""The flat fields of a task: the one list that the SQLite columns and the
Redis hash fields both follow.

A TaskRecord nests: `error` holds a TaskFailure, `progress` a Progress and
`labels` a dict. Stored, a task is flat: one value per entry of `FIELDS`, in
that order. A group (`error`, `progress`) becomes one field per attribute of
its class, all None when the record holds None.

`flatten` and `unflatten` use plain Python values: str, bytes, int, float or
None, with `state` as its number, `cancel_requested` as 0 or 1 and `labels`
as compact JSON text. SQLite stores these as they are. A store that spells
values otherwise (in Redis every value is bytes) builds its own converters
with `flattener` and `unflattener`, from an expression per `Kind`.

Adding a task field takes a `TaskRecord` slot, an entry in `FIELDS` (at the
end, where a migration's ALTER TABLE puts the column), a column in
`sqlite/schema.sql` with a new schema version and its migration in
`sqlite/schema.py`, and, in Redis, the Lua scripts that write it
(`lua/create.lua` at least, or a default for hashes without it, as
`claim` has in `lua/common.lua`).

The converters are generated once, at import, as straight-line functions
(the way `dataclasses` writes `__init__`): they run for every change and
every reply, and a loop that dispatched on each field's kind would cost
several times as much.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, overload

from conveyor_server.stores._records import Progress, State, TaskFailure, TaskRecord


class Kind(enum.Enum):
    """What a flat value is, so that each store knows how to spell it."""

    TEXT = enum.auto()
    BLOB = enum.auto()
    INT = enum.auto()
    REAL = enum.auto()
    STATE = enum.auto()  # a State, stored as its number
    FLAG = enum.auto()  # a bool, stored as 0 or 1
    JSON = enum.auto()  # a dict of str, stored as JSON text
    IDS = enum.auto()  # a tuple of ids, stored as one text, space-separated


@dataclass(frozen=True, slots=True)
class FlatField:
    # The SQLite column; the Redis hash field unless redis/scripts.py renames it.
    name: str
    kind: Kind
    # The TaskRecord attribute that holds the value.
    attr: str
    # For a group: the attribute of the object that `attr` holds.
    part: str | None = None
    # Whether the value may be None (a NULL column, an absent hash field).
    optional: bool = False


# The classes of the grouped attributes; their fields are the parts.
GROUPS: Mapping[str, type[Any]] = {"error": TaskFailure, "progress": Progress}


def _field(name: str, kind: Kind, *, optional: bool = False) -> FlatField:
    return FlatField(name, kind, name, optional=optional)


def _group(attr: str, *kinds: Kind) -> tuple[FlatField, ...]:
    parts = [f.name for f in fields(GROUPS[attr])]
    assert len(parts) == len(kinds), f"{attr}: a kind for each of {parts}"
    return tuple(
        FlatField(f"{attr}_{part}", kind, attr, part, optional=True)
        for part, kind in zip(parts, kinds, strict=True)
    )


# In the column order of the `tasks` table.
FIELDS: tuple[FlatField, ...] = (
    _field("id", Kind.TEXT),
    _field("seq", Kind.INT),
    _field("tenant", Kind.TEXT),
    _field("type", Kind.TEXT),
    _field("state", Kind.STATE),
    _field("payload", Kind.BLOB),
    _field("result", Kind.BLOB, optional=True),
    *_group("error", Kind.TEXT, Kind.TEXT, Kind.TEXT),
    *_group("progress", Kind.REAL, Kind.TEXT, Kind.INT, Kind.INT),
    _field("attempt", Kind.INT),
    _field("max_attempts", Kind.INT),
    _field("priority", Kind.INT),
    _field("labels", Kind.JSON, optional=True),
    _field("create_time", Kind.REAL),
    _field("start_time", Kind.REAL, optional=True),
    _field("end_time", Kind.REAL, optional=True),
    _field("update_time", Kind.REAL),
    _field("scheduled_time", Kind.REAL),
    _field("timeout", Kind.REAL, optional=True),
    _field("idempotency_key", Kind.TEXT, optional=True),
    _field("fingerprint", Kind.BLOB, optional=True),
    _field("cancel_requested", Kind.FLAG),
    _field("version", Kind.INT),
    # Last, in the order schema versions added them, by ALTER TABLE, which
    # appends: 2 the claim number, 3 the reply_to, 5 the concurrency key
    # and dependencies, 6 the trace context.
    _field("claim", Kind.INT),
    _field("reply_to", Kind.TEXT, optional=True),
    _field("concurrency_key", Kind.TEXT, optional=True),
    _field("depends_on", Kind.IDS, optional=True),
    _field("waiting", Kind.INT),
    _field("run_on_dependency_failure", Kind.FLAG),
    _field("traceparent", Kind.TEXT, optional=True),
)

NAMES = tuple(f.name for f in FIELDS)

# A TaskRecord attribute left out here would be lost on the way to a store.
if set(TaskRecord.__slots__) != {f.attr for f in FIELDS}:
    raise TypeError("every TaskRecord attribute needs flat fields, and only those")

# Per kind, a Python expression of `{}` (a value that is not None) that
# converts it; a kind not named passes as it is.
Spelling = Mapping[Kind, str]

PYTHON_ENCODE: Spelling = {
    Kind.STATE: "int({})",
    Kind.FLAG: "int({})",
    Kind.JSON: "_to_json({})",
    Kind.IDS: "' '.join({})",
}
PYTHON_DECODE: Spelling = {
    Kind.STATE: "_state[{}]",
    Kind.FLAG: "bool({})",
    Kind.JSON: "_from_json({})",
    Kind.IDS: "tuple({}.split())",
}

_GLOBALS: dict[str, Any] = {
    "_new": TaskRecord.__new__,
    "_TaskRecord": TaskRecord,
    **{f"_{cls.__name__}": cls for cls in GROUPS.values()},
    "_state": {int(s): s for s in State},
    # What json.dumps(value, separators=(",", ":")) gives, without building
    # an encoder per call.
    "_to_json": json.JSONEncoder(separators=(",", ":")).encode,
    "_from_json": json.loads,
}


def _compile(source: str, name: str, names: Mapping[str, Any] | None) -> Any:
    namespace = {**_GLOBALS, **(names or {})}
    exec(compile(source, f"<flat fields: {name}>", "exec"), namespace)
    return namespace[name]


def _convert(spelling: Spelling, kind: Kind, value: str, optional: bool) -> str:
    expression = spelling.get(kind)
    if expression is None:
        return value
    if optional:
        return f"None if {value} is None else {expression.format(value)}"
    return expression.format(value)


def flattener(
    encode: Spelling,
    names: Mapping[str, Any] | None = None,
    *,
    snapshot: Sequence[str] | None = None,
) -> Callable[[Any], tuple[Any, ...]]:
    """A function from a record to its flat values, each spelled by `encode`
    (whose expressions may use `names`). With `snapshot`, the function takes
    instead a tuple of the record's attributes in that order."""

    def read(attr: str) -> str:
        return f"record.{attr}" if snapshot is None else f"record[{snapshot.index(attr)}]"

    lines = ["def flatten(record):"]
    lines += [f"    {attr} = {read(attr)}" for attr in GROUPS]
    values = []
    for f in FIELDS:
        if f.part is not None:
            part = _convert(encode, f.kind, f"{f.attr}.{f.part}", optional=False)
            values.append(f"None if {f.attr} is None else {part}")
        elif f.optional and f.kind in encode:
            lines.append(f"    {f.attr} = {read(f.attr)}")
            values.append(_convert(encode, f.kind, f.attr, optional=True))
        else:
            values.append(_convert(encode, f.kind, read(f.attr), optional=False))
    lines.append("    return (\n" + "".join(f"        {v},\n" for v in values) + "    )")
    function: Callable[[Any], tuple[Any, ...]] = _compile("\n".join(lines), "flatten", names)
    return function


@overload
def unflattener(
    decode: Spelling,
    names: Mapping[str, Any] | None = ...,
    *,
    trailing: bool = ...,
    none_without_id: Literal[False] = ...,
) -> Callable[[Sequence[Any]], TaskRecord]: ...
@overload
def unflattener(
    decode: Spelling,
    names: Mapping[str, Any] | None = ...,
    *,
    trailing: bool = ...,
    none_without_id: Literal[True],
) -> Callable[[Sequence[Any]], TaskRecord | None]: ...
def unflattener(
    decode: Spelling,
    names: Mapping[str, Any] | None = None,
    *,
    trailing: bool = False,
    none_without_id: bool = False,
) -> Callable[[Sequence[Any]], TaskRecord | None]:
    """A function from flat values, each spelled as `decode` reads it (its
    expressions may use `names`), to a new record. With `trailing`, the
    values may go on past `FIELDS`; the rest are ignored. With
    `none_without_id`, an id of None (a task that is gone) gives None."""
    local = {f.name: f"v_{f.name}" for f in FIELDS}
    rest = ", *_" if trailing else ""
    lines = [
        "def unflatten(values):",
        f"    ({', '.join(local.values())}{rest}) = values",
    ]
    if none_without_id:
        lines.append(f"    if {local['id']} is None: return None")
    lines.append("    record = _new(_TaskRecord)")
    for f in FIELDS:
        if f.part is None:
            value = _convert(decode, f.kind, local[f.name], f.optional)
            lines.append(f"    record.{f.attr} = {value}")
    for attr, cls in GROUPS.items():
        parts = [f for f in FIELDS if f.attr == attr]
        # Positional, in the order of the class's fields (as `_group` took
        # them): keywords would cost a sixth of the whole conversion.
        arguments = ", ".join(
            _convert(decode, f.kind, local[f.name], optional=False) for f in parts
        )
        lines.append(
            f"    record.{attr} = None if {local[parts[0].name]} is None"
            f" else _{cls.__name__}({arguments})"
        )
    lines.append("    return record")
    function: Callable[[Sequence[Any]], TaskRecord] = _compile("\n".join(lines), "unflatten", names)
    return function


flatten = flattener(PYTHON_ENCODE)
flatten.__doc__ = "A record's flat values, in `FIELDS` order, as Python values."

unflatten = unflattener(PYTHON_DECODE)
unflatten.__doc__ = "A new record from its flat values, in `FIELDS` order, as Python values."
