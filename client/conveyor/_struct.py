"""google.protobuf.Struct and Value as plain Python.

Shared by the SDK and the server (which reads payloads for handlers), so
both sides agree on one conversion: JSON has a single number type, and whole
numbers that a double holds exactly come back as int.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

# Doubles beyond this cannot hold every integer exactly, so they stay floats.
_MAX_EXACT_INT = 2**53


def value_to_python(value: struct_pb2.Value) -> Any:
    """A `google.protobuf.Value` as plain Python; whole numbers come back as int."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    return None  # null_value, or no kind set


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: value_to_python(item) for key, item in struct.fields.items()}
