"""The contract's messages as JSON, the way grpcurl prints them, and
google.rpc.Status errors with their HTTP status."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._errors import ServiceError, invalid_argument

M = TypeVar("M", bound=Message)

# The mapping of google.rpc.Code to HTTP of AIP-193 and grpc-gateway.
# FAILED_PRECONDITION is 400 as there: the request cannot succeed until the
# client changes something, which 412's "If-Match" meaning does not cover.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def to_json(message: Message) -> dict[str, Any]:
    """A message as grpcurl prints it: proto field names, enum names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def status_json(error: ServiceError) -> dict[str, Any]:
    """The google.rpc.Status of an error: code, message, details."""
    return to_json(error.status())


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_body(text: str, message: M) -> M:
    """`message` filled from a JSON body; INVALID_ARGUMENT saying what is wrong."""
    try:
        return json_format.Parse(text or "{}", message)
    except json_format.ParseError as exc:
        raise invalid_argument(
            [("body", f"is not a valid {message.DESCRIPTOR.full_name} in JSON: {exc}")]
        ) from None


_LIST_SINGLE = ("type", "page_size", "page_token", "view", "created_after", "created_before")
LIST_PARAMETERS = ("states", "labels", *_LIST_SINGLE)
_LOGS_SINGLE = ("attempt", "page_size", "page_token")
_WATCH_SINGLE = ("type", "cursor", "include_current", "reply_to")
WATCH_PARAMETERS = ("states", "labels", "ids", *_WATCH_SINGLE)


def update_type_request(text: str, name: str) -> pb.UpdateTaskTypeRequest:
    """An UpdateTaskTypeRequest from a PATCH body, for the task type `name`
    of the path. Its update_mask may name the limits as the contract does
    ("max_running,burst") as well as in the JSON mapping's camelCase
    ("maxRunning,burst"), or be written as the message ({"paths": [...]}),
    as grpcurl takes it."""
    try:
        body = json.loads(text or "{}")
    except ValueError:
        body = None  # parse_body says what is wrong
    if isinstance(body, dict):
        mask = body.get("update_mask")
        if isinstance(mask, dict) and isinstance(mask.get("paths"), list):
            mask = ",".join(str(path) for path in mask["paths"])
        if isinstance(mask, str):
            body["update_mask"] = ",".join(_camel_case(path) for path in mask.split(","))
        given = body.get("name")
        if given not in (None, "", name):
            raise invalid_argument(
                [("name", f"is {str(given)[:128]!r} in the body but {name[:128]!r} in the path")]
            )
        text = json.dumps(body)
    request = parse_body(text, pb.UpdateTaskTypeRequest())
    request.name = name
    return request


def _camel_case(path: str) -> str:
    head, *rest = path.strip().split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def list_request(query: Mapping[str, str], multi: Mapping[str, list[str]]) -> pb.ListTasksRequest:
    """A ListTasksRequest from query parameters: `states` and `labels`
    (`key=value`) repeat, the others are given once."""
    request = pb.ListTasksRequest()
    _from_query(request, "GET /v1/tasks", _LIST_SINGLE, ("states",), query, multi)
    return request


def list_schedules_request(
    query: Mapping[str, str], multi: Mapping[str, list[str]]
) -> spb.ListSchedulesRequest:
    """A ListSchedulesRequest from query parameters, each given once."""
    request = spb.ListSchedulesRequest()
    _from_query(request, "GET /v1/schedules", ("page_size", "page_token"), (), query, multi)
    return request


def logs_request(
    task_id: str, query: Mapping[str, str], multi: Mapping[str, list[str]]
) -> pb.GetTaskLogsRequest:
    """A GetTaskLogsRequest for the task of the path, from query parameters
    `attempt`, `page_size` and `page_token`, each given once."""
    request = pb.GetTaskLogsRequest()
    _from_query(request, "GET /v1/tasks/{id}/logs", _LOGS_SINGLE, (), query, multi)
    request.id = task_id
    return request


def watch_tasks_request(
    query: Mapping[str, str], multi: Mapping[str, list[str]]
) -> pb.WatchTasksRequest:
    """A WatchTasksRequest from query parameters: `states`, `ids`,
    `current_ids` and `labels` (`key=value`) repeat, the others are given once."""
    request = pb.WatchTasksRequest()
    repeated = ("states", "ids", "current_ids")
    _from_query(request, "GET /v1/tasks:watch", _WATCH_SINGLE, repeated, query, multi)
    return request


def _from_query(
    request: Message,
    route: str,
    single: tuple[str, ...],
    repeated: tuple[str, ...],
    query: Mapping[str, str],
    multi: Mapping[str, list[str]],
) -> None:
    """Fill `request` from query parameters; every problem names its
    parameter, and all of them are told at once."""
    filters = ("labels",) if "labels" in request.DESCRIPTOR.fields_by_name else ()
    allowed = (*repeated, *filters, *single)
    problems: list[tuple[str, str]] = []
    fields: dict[str, Any] = {}
    for name, values in multi.items():
        if name not in allowed:
            problems.append((name, f"is not a parameter of {route}; use {', '.join(allowed)}"))
        elif name in single and len(values) > 1:
            problems.append((name, "is given more than once"))
    for name in single:
        if name in query:
            fields[name] = query[name]
    for name in repeated:
        if name in multi:
            fields[name] = multi[name]
    labels: dict[str, str] = {}
    for index, item in enumerate(multi.get("labels", ())):
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append((f"labels[{index}]", f"{item!r} must read key=value"))
        labels[key] = value
    if labels:
        fields["labels"] = labels
    for name, value in fields.items():
        # One field at a time, so that each problem names its parameter.
        try:
            request.MergeFrom(json_format.ParseDict({name: value}, type(request)()))
        except json_format.ParseError as exc:
            problems.append((name, str(exc)))
    if problems:
        raise invalid_argument(problems)


def integer_parameter(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise invalid_argument([(name, f"{text[:64]!r} is not an integer")]) from None
