"""What the fuzz tests share: settings, strategies, the request rules as the
contract states them, and the checks every answer must pass."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api, violations
from tests.support.server import ServerThread

# Deterministic, so CI runs the same cases every time and a failure can be
# rerun as is; no example database, so nothing is written to the tree.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

SERVICE = "conveyor.v1.TaskService"
Code = grpc.StatusCode
# Every refusal the contract names; INTERNAL and UNKNOWN are never among them.
CLEAN_CODES = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.ALREADY_EXISTS,
        Code.RESOURCE_EXHAUSTED,
    }
)
TERMINAL = frozenset(
    {task_pb2.TASK_STATE_SUCCEEDED, task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED}
)

# The request rules, as the proto comments and the error messages state them.
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_ATTEMPTS = 100
PRIORITY_RANGE = (-1000, 1000)
TIMEOUT_RANGE = (0.001, 24 * 3600)
DELAY_RANGE = (0, 30 * 24 * 3600)
MAX_PAYLOAD_BYTES = 256 * 1024
# A Python client parses messages at most 100 levels deep; a payload whose
# values nest 32 containers deep is 99 levels down in a GetTaskResponse (and
# an `echo` result of it 100), so that is as deep as a payload can be and
# still be read back.
MAX_PAYLOAD_DEPTH = 32
MAX_BATCH = 1000

# Task types of the test registry that finish at once, whatever the payload.
QUICK_TYPES = ("echo", "fail", "fail_permanently", "flaky", "not_json")
# Built-in types whose payload is checked at submit; a `sleep` that passes
# may run long, so the tests cancel it.
VALIDATED_TYPES = ("sleep", "csv_stats")


# -- answers ----------------------------------------------------------------


@dataclass
class Answer:
    """How a call ended: its code, message, field violations and response(s)."""

    code: grpc.StatusCode
    message: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    response: Any = None

    @property
    def fields(self) -> set[str]:
        """The violated fields, without indexes or paths: `requests[2].labels['x']`
        becomes `requests[2].labels`, `states[0]` becomes `states`,
        `payload.a[1]` becomes `payload`."""
        return {normalize_field(name) for name, _ in self.violations}


def normalize_field(name: str) -> str:
    prefix = re.match(r"(requests\[\d+\]\.)?", name).group()  # type: ignore[union-attr]
    return prefix + re.split(r"[.\[]", name[len(prefix) :], maxsplit=1)[0]


def answer_of(call: Callable[[], Any]) -> Answer:
    try:
        response = call()
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "", violations(error))  # type: ignore[attr-defined]
    return Answer(Code.OK, response=response)


def check_clean(answer: Answer, allowed: frozenset[grpc.StatusCode] = CLEAN_CODES) -> None:
    """No INTERNAL or UNKNOWN, only codes the contract names, and every
    refusal says what is wrong."""
    assert answer.code not in (Code.INTERNAL, Code.UNKNOWN), answer
    assert answer.code in allowed, answer
    if answer.code is not Code.OK:
        assert answer.message.strip(), f"{answer.code} without a message"
    if answer.code is Code.INVALID_ARGUMENT:
        assert answer.violations, f"INVALID_ARGUMENT without field violations: {answer}"


# -- strategies ---------------------------------------------------------------

int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)

# Legal HTTP/2 header values: a value outside these is refused by the
# client library itself and never reaches the server.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
auth_metadata = st.one_of(
    st.just(()),
    st.tuples(st.tuples(st.just("authorization"), header_text)),
    st.tuples(st.tuples(st.just("authorization"), header_text.map(lambda t: "Bearer " + t))),
    st.tuples(st.tuples(st.just("authorization"), st.just("Bearer "))),
    st.tuples(st.tuples(st.just("authorization-bin"), st.binary(max_size=64))),
    st.tuples(
        st.tuples(st.just("authorization"), header_text),
        st.tuples(st.text("abcz09_.-", min_size=1, max_size=12).map("x-".__add__), header_text),
    ),
)

# Ids and keys: well-formed ones, near misses, anything at all, and too long.
# Built from plain text draws: regex strategies cost many draws per string.
SAFE_CHARS = "ABCXYZabcxyz0189._:-"
safe_ids = st.one_of(
    st.text(SAFE_CHARS, min_size=1, max_size=30),
    st.integers(120, 128).map(lambda n: "k" * n),
)
any_ids = st.one_of(
    safe_ids,
    st.text(max_size=40),
    st.text(st.characters(codec="ascii"), min_size=1, max_size=12),
    st.integers(129, 300).map(lambda n: "i" * n),
    st.sampled_from(["", " ", "a b", "../../etc", "%00", "id\n", "\u00e9t\u00e9", "x" * 128]),
)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70).map(float),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, float("nan"), float("inf")]),
)
json_leaves = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def struct_of(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


@st.composite
def deep_payloads(draw: st.DrawFn) -> struct_pb2.Struct:
    """A chain of structs and lists around the limit of nesting."""
    depth = draw(st.integers(20, 40))
    shape = draw(st.integers(0, 2**40 - 1))  # bit i set: level i is a struct
    struct = struct_pb2.Struct()
    value = struct.fields[draw(st.sampled_from(["", "k", "\u263a"]))]
    for level in range(depth):
        if shape >> level & 1:
            value = value.struct_value.fields[("", "a", "\u263a")[level % 3]]
        else:
            value = value.list_value.values.add()
    leaf = draw(st.sampled_from(["null", "number", "empty_struct", "empty_list", "text"]))
    if leaf == "null":
        value.null_value = struct_pb2.NULL_VALUE
    elif leaf == "number":
        value.number_value = draw(numbers)
    elif leaf == "empty_struct":
        value.struct_value.SetInParent()
    elif leaf == "empty_list":
        value.list_value.SetInParent()
    else:
        value.string_value = draw(st.text(max_size=5))
    return struct


@st.composite
def sized_payloads(draw: st.DrawFn) -> struct_pb2.Struct:
    """A payload within a few bytes of the size limit, either side."""
    target = MAX_PAYLOAD_BYTES + draw(st.integers(-40, 40))
    filler = draw(st.sampled_from(["x", "\u00e9", "\u20ac", "\U0001d11e"]))
    struct = struct_of({"blob": ""})
    overhead = len(struct.SerializeToString()) + 6  # length prefixes grow to 3 bytes
    count = (target - overhead) // len(filler.encode())
    text = filler * count
    struct = struct_of({"blob": text})
    missing = target - len(struct.SerializeToString())
    if missing > 0:
        struct = struct_of({"blob": text + "x" * missing})
    return struct


def payload_depth(struct: struct_pb2.Struct) -> int:
    """How many containers deep the payload's values go (top-level values are 1)."""
    level: list[struct_pb2.Value] = list(struct.fields.values())
    depth = 0
    while level:
        depth += 1
        below: list[struct_pb2.Value] = []
        for value in level:
            kind = value.WhichOneof("kind")
            if kind == "struct_value":
                below.extend(value.struct_value.fields.values())
            elif kind == "list_value":
                below.extend(value.list_value.values)
        level = below
    return depth


def has_non_finite(struct: struct_pb2.Struct) -> bool:
    """Whether a NaN or an infinity sits anywhere in the payload."""
    values: list[struct_pb2.Value] = list(struct.fields.values())
    while values:
        value = values.pop()
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            return True
        if kind == "struct_value":
            values.extend(value.struct_value.fields.values())
        elif kind == "list_value":
            values.extend(value.list_value.values)
    return False


json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
plain_payloads = json_objects.map(struct_of)
payloads = st.one_of(
    plain_payloads,
    plain_payloads,
    plain_payloads,
    plain_payloads,
    plain_payloads,
    st.builds(
        lambda s: struct_of({"seconds": s}), st.one_of(numbers, st.text(max_size=5), st.booleans())
    ),
    st.builds(lambda s: struct_of({"csv": s}), st.text(max_size=80)),
    deep_payloads(),
    sized_payloads(),
)

type_names = st.one_of(
    st.sampled_from(QUICK_TYPES),
    st.sampled_from(QUICK_TYPES),
    st.sampled_from(VALIDATED_TYPES),
    st.sampled_from(["", "Echo", "echo ", " echo", "echo\x00", "sleep.", "x" * 200]),
    st.text(max_size=30),
)
label_keys = st.builds(
    str.__add__, st.sampled_from("aZ0"), st.text("aZ09_./-", max_size=8)
) | st.integers(62, 64).map(lambda n: "k" * n)
label_maps = st.one_of(
    st.just({}),
    st.dictionaries(label_keys, st.text(max_size=20), max_size=3),
    st.dictionaries(st.text(max_size=70), st.text(max_size=20), max_size=3),
    st.integers(63, 66).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    st.integers(255, 257).map(lambda n: {"k": "\u00e9" * n}),
)
idempotency_keys = st.one_of(
    st.just(""),
    st.just(""),
    st.sampled_from(["key-1", "key-2", "key-3"]),
    safe_ids,
    st.text(max_size=140),
)
durations = st.one_of(
    st.builds(
        duration_pb2.Duration,
        seconds=st.integers(-(10**12), 10**12),
        nanos=st.integers(-(2**31), 2**31 - 1),
    ),
    st.builds(
        duration_pb2.Duration,
        seconds=st.integers(-2, 3 * 24 * 3600),
        nanos=st.integers(-999_999_999, 999_999_999),
    ),
    st.builds(
        duration_pb2.Duration,
        seconds=st.sampled_from([0, 1, 86_400, 86_401, 2_592_000, 2_592_001, -1]),
        nanos=st.sampled_from([0, 1, 999_999, 1_000_000, 999_999_999, 1_000_000_000, -1]),
    ),
    st.builds(duration_pb2.Duration, seconds=int64, nanos=int32),
)
attempts = st.one_of(st.integers(-2, 102), int32)
priorities = st.one_of(st.integers(-1002, 1002), int32)


@st.composite
def submit_requests(draw: st.DrawFn) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest(
        type=draw(type_names),
        labels=draw(label_maps),
        idempotency_key=draw(idempotency_keys),
        max_attempts=draw(attempts),
        priority=draw(priorities),
    )
    request.payload.CopyFrom(draw(payloads))
    if draw(st.booleans()):
        request.timeout.CopyFrom(draw(durations))
    if draw(st.integers(0, 3)) == 0:
        request.delay.CopyFrom(draw(durations))
    return request


@st.composite
def valid_submit_requests(draw: st.DrawFn) -> pb.SubmitTaskRequest:
    """Requests that pass every check, so that batches are accepted too."""
    request = pb.SubmitTaskRequest(
        type=draw(st.sampled_from(QUICK_TYPES)),
        labels=draw(st.dictionaries(label_keys, st.text(max_size=20), max_size=3)),
        idempotency_key=draw(st.sampled_from(["", "", "", "batch-1", "batch-2"])),
        max_attempts=draw(st.integers(0, 3)),
        priority=draw(st.integers(-1000, 1000)),
    )
    request.payload.update(draw(json_objects))
    return request


# -- the submit rules ---------------------------------------------------------


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration_ok(duration: duration_pb2.Duration, low: float, high: float) -> bool:
    if not -999_999_999 <= duration.nanos <= 999_999_999:
        return False
    if duration.seconds * duration.nanos < 0:  # a Duration's parts share one sign
        return False
    return low <= _seconds(duration) <= high


@dataclass(frozen=True)
class Expected:
    """The fields a submit must be refused for, and those it may be."""

    required: frozenset[str]
    optional: frozenset[str] = frozenset()


def expected_submit(request: pb.SubmitTaskRequest, registered: frozenset[str]) -> Expected:
    required: set[str] = set()
    optional: set[str] = set()
    if request.type not in registered:
        required.add("type")
    payload = request.payload
    too_big = len(payload.SerializeToString()) > MAX_PAYLOAD_BYTES
    if too_big or payload_depth(payload) > MAX_PAYLOAD_DEPTH or has_non_finite(payload):
        required.add("payload")
    elif request.type in VALIDATED_TYPES:
        optional.add("payload")
    labels = dict(request.labels)
    if len(labels) > MAX_LABELS or any(
        LABEL_KEY.fullmatch(key) is None or len(value) > MAX_LABEL_VALUE
        for key, value in labels.items()
    ):
        required.add("labels")
    key = request.idempotency_key
    if key and SAFE_ID.fullmatch(key) is None:
        required.add("idempotency_key")
    if not 1 <= (request.max_attempts or 1) <= MAX_ATTEMPTS:
        required.add("max_attempts")
    if request.HasField("timeout") and not _duration_ok(request.timeout, *TIMEOUT_RANGE):
        required.add("timeout")
    if request.HasField("delay") and not _duration_ok(request.delay, *DELAY_RANGE):
        required.add("delay")
    low, high = PRIORITY_RANGE
    if not low <= request.priority <= high:
        required.add("priority")
    return Expected(frozenset(required), frozenset(optional))


def unparseable_allowed(requests: list[pb.SubmitTaskRequest]) -> bool:
    """Whether the server may refuse the whole message as not parseable:
    only a payload nested past the limit comes near the parser's depth limit."""
    return any(payload_depth(r.payload) > MAX_PAYLOAD_DEPTH for r in requests)


# -- health -------------------------------------------------------------------


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds, polled."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not eventually(condition, timeout):
        raise AssertionError(f"still not {what} after {timeout:g}s")


def assert_healthy(thread: ServerThread, api: Api) -> None:
    """The server answers health checks SERVING, runs a task end to end, and
    holds no watch stream open once its clients are gone."""
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    marker = f"alive-{time.monotonic_ns()}"
    task = api.submit("echo", {"marker": marker})
    done = api.wait(task.id, timeout=20)
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED, done
    assert done.result.struct_value.fields["marker"].string_value == marker
    servicer = thread.server.servicer  # type: ignore[union-attr]
    wait_until(lambda: servicer.watchers == 0, 20, "free of open watch streams")


def scaled(server: Any, examples: int) -> int:
    """How many of `examples` cases run against this fuzz server's store."""
    return max(1, int(examples * getattr(server, "fuzz_scale", 1.0)))
